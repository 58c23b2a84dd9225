/**
 * `sluice perf`: spdk_nvme_perf for sluice, on sluice's own NVMe/TCP host
 * (src/nvmf_tcp/host.ts) and workload engine (src/perf). One reactor on
 * this thread drives every I/O queue; each queue runs its own job of `-q`
 * I/Os. Data buffers live in WASM memory, so digests run on them in place.
 *
 *   sluice perf -r 'trtype:TCP traddr:127.0.0.1 trsvcid:4420 subnqn:NQN' \
 *     -q 128 -o 4096 -w randread -t 10 [-c 2] [--verify]
 *   sluice perf -r 'trtype:vhost-user path:/var/run/vhost.0.sock' -q 128 -o 4096 -w randread -t 10
 *
 * In vhost-user mode sluice is the guest: it shares memory with the
 * back-end, lays out virtqueues and drives virtio-blk requests on them
 * (src/perf/vhost_user_perf.ts), polling the used rings on the reactor.
 * Diagnostics (stderr): SLUICE_PERF_STATS=1 prints kicks sent and skipped
 * per queue, and the stalls (1 ms with nothing completed, after which a kick
 * is sent again: a busy or descheduled back-end, or a lost notification); SLUICE_PERF_NO_EVENT_IDX=1 leaves VIRTIO_F_EVENT_IDX out of the
 * negotiation (kicks then follow VIRTQ_USED_F_NO_NOTIFY).
 *
 * The last line of stdout is always the `Total:` line; the exit status is
 * 1 when any I/O failed or read back wrong, 2 for a usage error.
 * @module
 */
import { NvmeCommandError, NvmeTcpController } from "../src/nvmf_tcp/host.ts";
import { NVME_FABRICS_OPCODE, NvmfFabricsType } from "../src/nvme/opcodes.ts";
import { NvmfPropertySqe } from "../src/nvme/fabrics.ts";
import { NvmeReg } from "../src/nvme/registers.ts";
import { NvmeTcpPerfDevice } from "../src/perf/nvme_tcp_device.ts";
import { PerfJob, type PerfResult, summaryLine, totalLine } from "../src/perf/perf.ts";
import {
  parsePerfArgs,
  PERF_USAGE,
  type PerfOptions,
  PerfUsageError,
} from "../src/perf/perf_args.ts";
import { Reactor } from "../src/reactor/mod.ts";
import { openVhostPerf, type VhostPerfSession } from "../src/perf/vhost_user_perf.ts";
import { VhostUserFrontendError } from "../src/vhost_user/frontend.ts";
import { initWasmMemory, wasmAlloc, wasmMemoryStats } from "../wasm/mod.ts";

export { PERF_USAGE };

/** How long bringing the controller up may take. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How long I/Os may take to drain after the run before their connections are cut. */
const DRAIN_TIMEOUT_MS = 10_000;
const BUFFER_ALIGN = 4096;
/** WASM heap besides the I/O buffers (digest scratch). */
const HEAP_HEADROOM_BYTES = 4 * 1024 * 1024;

/** Runs `sluice perf <args>`; returns the exit status. */
export async function perf(args: readonly string[]): Promise<number> {
  let o: PerfOptions | null;
  try {
    o = parsePerfArgs(args);
  } catch (e) {
    if (!(e instanceof PerfUsageError)) throw e;
    console.error(`sluice perf: ${e.message}\nRun 'sluice perf --help' for usage.`);
    return 2;
  }
  if (o === null) {
    console.log(PERF_USAGE);
    return 0;
  }
  if (o.trid.trtype === "VHOST-USER") return await runVhost(o);
  return await runTcp(o);
}

class PerfRunError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

async function runTcp(o: PerfOptions): Promise<number> {
  const { trid, workload: w } = o;
  const host = trid.traddr ?? "";
  const port = Number(trid.trsvcid);
  const subnqn = trid.subnqn ?? "";
  const stride = Math.ceil(w.ioSize / BUFFER_ALIGN) * BUFFER_ALIGN;
  const bufferBytes = o.queues * w.depth * stride;
  if (wasmMemoryStats().heapCapacityBytes === 0) {
    initWasmMemory(bufferBytes + HEAP_HEADROOM_BYTES);
  }

  const reactor = new Reactor();
  const running = reactor.run();
  let ctrl: NvmeTcpController | null = null;
  const stopSignal = () => {
    console.error("sluice perf: SIGINT: stopping; I/Os in flight drain, then the figures");
    for (const j of jobs) j.stop();
  };
  const jobs: PerfJob[] = [];
  let signalHooked = false;
  try {
    const where = `${host}:${port}`;
    const base = {
      host,
      port,
      subnqn,
      hostnqn: trid.hostnqn,
      nsid: o.nsid,
      ioQueues: o.queues,
      hdgst: trid.hdgst,
      ddgst: trid.ddgst,
    };
    ctrl = await withTimeout(
      connectFitting(reactor, base, w.depth),
      CONNECT_TIMEOUT_MS,
      `${where} did not bring the controller up within ${CONNECT_TIMEOUT_MS / 1000} s`,
    );
    const info = ctrl.info;
    const bs = info.blockSize;
    if (info.numBlocks === 0) {
      throw new PerfRunError(
        `${subnqn} has no active namespace ${o.nsid} (Identify Namespace is empty)`,
      );
    }
    if (w.ioSize % bs !== 0) {
      throw new PerfRunError(
        `-o ${w.ioSize} is not a multiple of namespace ${o.nsid}'s block size (${bs} B)`,
        2,
      );
    }
    if (w.ioSize > info.maxTransfer) {
      throw new PerfRunError(
        `-o ${w.ioSize} is above the controller's largest transfer (MDTS: ${info.maxTransfer} B)`,
        2,
      );
    }
    const bpi = w.ioSize / bs;
    // --verify: every queue checks what it wrote, so queues must not write each other's blocks.
    const slice = w.verify ? Math.floor(info.numBlocks / o.queues / bpi) * bpi : info.numBlocks;
    if (slice < bpi) {
      throw new PerfRunError(
        `namespace ${o.nsid} (${info.numBlocks} blocks of ${bs} B) is smaller than ` +
          (w.verify ? `one ${w.ioSize}-byte I/O per queue` : `one ${w.ioSize}-byte I/O`),
        2,
      );
    }
    const cmdSlots = ctrl.ioQueues[0]?.depth ?? w.depth;
    console.log(
      `sluice perf: ${subnqn} at ${where}: cntlid ${info.cntlid}, "${info.modelNumber}", ` +
        `namespace ${o.nsid}: ${info.numBlocks} x ${bs} B` +
        `${trid.hdgst ? ", header digest" : ""}${trid.ddgst ? ", data digest" : ""}`,
    );
    console.log(
      `sluice perf: ${o.queues} queue(s) x QD ${w.depth}, -o ${w.ioSize}, -w ${w.pattern}` +
        `${w.pattern.endsWith("rw") ? ` -M ${w.readPercent}` : ""}, -t ${w.seconds}` +
        `${w.verify ? ", verify" : ""}` +
        (cmdSlots < w.depth
          ? ` (the target's queues hold ${cmdSlots} commands: the rest wait in the host)`
          : ""),
    );

    const devices: NvmeTcpPerfDevice[] = [];
    let lost: string | null = null;
    const alloc = (bytes: number) => wasmAlloc(bytes, BUFFER_ALIGN);
    for (const [i, queue] of ctrl.ioQueues.entries()) {
      const dev = new NvmeTcpPerfDevice({
        queue,
        reactor,
        nsid: o.nsid,
        blockSize: bs,
        numBlocks: slice,
        firstLba: w.verify ? i * slice : 0,
        jobDepth: w.depth,
      });
      const job = new PerfJob(dev, w, alloc, i + 1);
      dev.onDone = job.onDone;
      dev.onLost = (reason) => {
        lost ??= `queue ${i + 1}: connection lost: ${reason}`;
        for (const j of jobs) j.stop();
      };
      devices.push(dev);
      jobs.push(job);
    }

    Deno.addSignalListener("SIGINT", stopSignal);
    signalHooked = true;
    const results = await runJobs(jobs, w.seconds, {
      // A target that stops answering: cutting its connections ends every I/O in flight
      // with an error.
      action: "closing the connections",
      giveUp: () => {
        for (const q of ctrl?.ioQueues ?? []) q.close();
      },
    });

    for (const [i, r] of results.entries()) {
      console.log(summaryLine(`queue ${i + 1}`, [r]));
      const dev = devices[i];
      if (dev !== undefined && dev.failedIos > 0) {
        console.error(
          `sluice perf: queue ${i + 1}: ${dev.failedIos} I/O(s) failed (first status 0x${
            dev.firstFailStatus.toString(16)
          }${dev.firstFailStatus === 0xffff ? ": connection gone" : ""})`,
        );
      }
      if (r.verifyErrors > 0) {
        console.error(
          `sluice perf: queue ${i + 1}: ${r.verifyErrors} read(s) did not return what was written`,
        );
      }
    }
    return finishRun(results, lost);
  } catch (e) {
    if (e instanceof NvmeCommandError && e.message.startsWith("Connect (queue 0)")) {
      console.error(
        `sluice perf: the target refused the admin queue's Connect: ${e.message}. ` +
          `Is ${subnqn} exported there, and does it allow this host (hostnqn)?`,
      );
      return 1;
    }
    if (e instanceof PerfRunError) {
      console.error(`sluice perf: ${e.message}`);
      return e.exitCode;
    }
    console.error(`sluice perf: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  } finally {
    if (signalHooked) Deno.removeSignalListener("SIGINT", stopSignal);
    if (ctrl !== null) {
      const c = ctrl;
      await withTimeout(c.close(), 2000, "").catch(() => {
        for (const q of c.ioQueues) q.close();
        c.admin.close();
      });
    }
    await reactor.stop();
    await running;
    reactor.close();
  }
}

interface ConnectBase {
  host: string;
  port: number;
  subnqn: string;
  hostnqn?: string;
  nsid: number;
  ioQueues: number;
  hdgst: boolean;
  ddgst: boolean;
}

/**
 * Connects with I/O queues of `depth` commands; a target whose queues are
 * smaller refuses the I/O queue's Connect, and then the queues are made as
 * large as its CAP.MQES allows (the rest of `-q` waits in the host).
 */
async function connectFitting(
  reactor: Reactor,
  base: ConnectBase,
  depth: number,
): Promise<NvmeTcpController> {
  try {
    return await NvmeTcpController.connect(reactor, { ...base, depth });
  } catch (e) {
    if (!(e instanceof NvmeCommandError) || !/^Connect \(queue [1-9]/.test(e.message)) {
      throw e;
    }
    const mqes = await readMqes(reactor, base);
    if (mqes < 1 || mqes >= depth) throw e;
    return await NvmeTcpController.connect(reactor, { ...base, depth: mqes });
  }
}

/** CAP.MQES (largest queue entry index) of the target, through a short-lived controller. */
async function readMqes(reactor: Reactor, base: ConnectBase): Promise<number> {
  const probe = await NvmeTcpController.connect(reactor, { ...base, ioQueues: 1, depth: 1 });
  try {
    const r = await probe.admin.command((v) => {
      v.setUint8(0, NVME_FABRICS_OPCODE);
      v.setUint8(4, NvmfFabricsType.PropertyGet);
      v.setUint8(NvmfPropertySqe.ATTRIB, 1); // 8 bytes: CAP is a 64-bit property
      v.setUint32(NvmfPropertySqe.OFST, NvmeReg.CAP, true);
    });
    if (r.status !== 0) throw new NvmeCommandError("Property Get CAP", r.status);
    return r.dw0 & 0xffff;
  } finally {
    await probe.close();
  }
}

/** What {@link runJobs} does besides running the jobs. */
interface RunHooks {
  /** Called once every job has started. */
  started?: () => void;
  /** Said when the watchdog fires: what it does about the I/Os left. */
  action: string;
  /** Ends the I/Os left in flight. */
  giveUp: () => void;
}

/**
 * Runs every job to its end. A back-end that stops answering must not hang
 * the run: DRAIN_TIMEOUT_MS after the last second, the watchdog says how
 * many I/Os are still in flight and calls `giveUp`.
 */
async function runJobs(jobs: PerfJob[], seconds: number, h: RunHooks): Promise<PerfResult[]> {
  const runs = Promise.all(jobs.map((j) => j.run()));
  h.started?.();
  const watchdog = setTimeout(() => {
    const left = jobs.reduce((n, j) => n + j.inFlight, 0);
    console.error(
      `sluice perf: ${left} I/O(s) still in flight ${DRAIN_TIMEOUT_MS / 1000} s after the ` +
        `run: ${h.action}`,
    );
    h.giveUp();
  }, seconds * 1000 + DRAIN_TIMEOUT_MS);
  try {
    return await runs;
  } finally {
    clearTimeout(watchdog);
  }
}

/** Prints why the run was cut short (if it was) and the Total line; the exit code. */
function finishRun(results: PerfResult[], lost: string | null): number {
  if (lost !== null) console.error(`sluice perf: ${lost}`);
  console.log(totalLine(results));
  const errors = results.reduce((n, r) => n + r.errors + r.verifyErrors, 0);
  return errors > 0 || lost !== null ? 1 : 0;
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PerfRunError(message)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * How long the reactor keeps polling with I/Os in flight before it parks:
 * the used rings are polled, not signalled, so a parked reactor would only
 * notice completions at its park timeout. A benchmark client spins anyway.
 */
const VHOST_INFLIGHT_SPIN_US = 5_000_000;

async function runVhost(o: PerfOptions): Promise<number> {
  const { trid, workload: w } = o;
  const path = trid.path ?? "";
  const reactor = new Reactor({ inflightSpinUs: VHOST_INFLIGHT_SPIN_US });
  const running = reactor.run();
  const jobs: PerfJob[] = [];
  const stopSignal = () => {
    console.error("sluice perf: SIGINT: stopping; I/Os in flight drain, then the figures");
    for (const j of jobs) j.stop();
  };
  let signalHooked = false;
  let session: VhostPerfSession | null = null;
  const pollers: string[] = [];
  try {
    session = await withTimeout(
      openVhostPerf({
        path,
        queues: o.queues,
        depth: w.depth,
        ioSize: w.ioSize,
        verify: w.verify,
        writes: w.pattern !== "read" && w.pattern !== "randread",
        reactor,
        eventIdx: Deno.env.get("SLUICE_PERF_NO_EVENT_IDX") !== "1",
      }),
      CONNECT_TIMEOUT_MS,
      `${path} did not set the device up within ${CONNECT_TIMEOUT_MS / 1000} s`,
    );
    const info = session.info;
    console.log(
      `sluice perf: vhost-user-blk at ${path}: ${info.capacityBytes / info.blockSize} x ` +
        `${info.blockSize} B, ${info.deviceQueues} queue(s)${
          info.readOnly ? ", read-only" : ""
        }; ` +
        `rings of ${info.queueSize}${info.indirect ? " (indirect)" : ""}` +
        `${info.eventIdx ? ", EVENT_IDX" : ""}`,
    );
    console.log(
      `sluice perf: ${o.queues} queue(s) x QD ${w.depth}, -o ${w.ioSize}, -w ${w.pattern}` +
        `${w.pattern.endsWith("rw") ? ` -M ${w.readPercent}` : ""}, -t ${w.seconds}` +
        `${w.verify ? ", verify" : ""}`,
    );
    let lost: string | null = null;
    const s = session;
    for (const [i, dev] of s.devices.entries()) {
      const bufs = s.buffers[i] ?? [];
      let next = 0;
      const alloc = (bytes: number) => {
        const b = bufs[next++];
        if (b === undefined || b.byteLength !== bytes) throw new Error("buffer layout mismatch");
        return b;
      };
      const job = new PerfJob(dev, w, alloc, i + 1);
      dev.onDone = job.onDone;
      dev.onLost = (reason) => {
        lost ??= `queue ${i + 1}: ${reason}`;
        for (const j of jobs) j.stop();
      };
      jobs.push(job);
      const name = `perf-vhost-q${i}`;
      reactor.addPoller(name, dev.poll);
      pollers.push(name);
    }

    // A back-end that goes away ends the run at once: its I/Os will never complete.
    s.lost.then((reason) => {
      if (reason === null) return;
      for (const d of s.devices) d.abandon(reason);
    });
    Deno.addSignalListener("SIGINT", stopSignal);
    signalHooked = true;
    const results = await runJobs(jobs, w.seconds, {
      // The reactor had nothing to do during the set-up and may be parked in the kernel: no
      // CQE will end that park (completions are polled), so wake it now, or the first I/Os
      // wait for its park timeout (1 s).
      started: () => reactor.wake(),
      action: "giving up on them",
      giveUp: () => {
        for (const d of s.devices) d.abandon("the back-end stopped completing requests");
      },
    });
    for (const [i, r] of results.entries()) {
      console.log(summaryLine(`queue ${i + 1}`, [r]));
      const dev = s.devices[i];
      if (dev !== undefined && dev.failedIos > 0) {
        console.error(
          `sluice perf: queue ${i + 1}: ${dev.failedIos} I/O(s) failed (first status ${
            dev.firstFailStatus < 0
              ? "none: the back-end went away"
              : dev.firstFailStatus === 0xff
              ? "never written by the back-end"
              : dev.firstFailStatus
          })`,
        );
      }
      if (r.verifyErrors > 0) {
        console.error(
          `sluice perf: queue ${i + 1}: ${r.verifyErrors} read(s) did not return what was written`,
        );
      }
      if (dev !== undefined && dev.lostNotifications > 0) {
        console.error(
          `sluice perf: queue ${i + 1}: the back-end missed ${dev.lostNotifications} ` +
            "notification(s): it asked for a kick (avail_event) at an index this run published " +
            "without one, and went quiet until the next kick, sent after 1 ms without progress",
        );
      }
      if (dev !== undefined && Deno.env.get("SLUICE_PERF_STATS") === "1") {
        console.error(
          `sluice perf: queue ${i + 1}: kicks ${dev.kicks}, skipped ${dev.kicksSkipped}, ` +
            `stall kicks ${dev.stallKicks} (lost notifications among them: ${dev.lostNotifications})`,
        );
      }
    }
    return finishRun(results, lost);
  } catch (e) {
    if (e instanceof PerfRunError) {
      console.error(`sluice perf: ${e.message}`);
      return e.exitCode;
    }
    if (e instanceof VhostUserFrontendError) {
      console.error(`sluice perf: ${e.message}`);
      return 1;
    }
    console.error(`sluice perf: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  } finally {
    if (signalHooked) Deno.removeSignalListener("SIGINT", stopSignal);
    for (const p of pollers) reactor.removePoller(p);
    if (session !== null) {
      // Stop the rings cleanly; a back-end that went away cannot answer, which is fine here.
      await session.close().catch(() => []);
    }
    await reactor.stop();
    await running;
    reactor.close();
  }
}

/**
 * `deno task bench:nvmf [--seconds N]`: NVMe/TCP end to end, 4 KiB random
 * reads and writes at QD1 and QD128, `sluice serve` (RAM namespace, 1 GiB
 * malloc bdev) on CPU 0 driven by `sluice perf` on CPU 1, each figure beside
 * what bounds it, measured in the same run with the same pinning:
 *
 * - the TCP limit for the same bytes: a request/response load on sluice's
 *   own io_uring TCP connections (src/net), server on CPU 0 and client on
 *   CPU 1, with exactly NVMe/TCP's message sizes (read: 72-byte command,
 *   4120-byte C2HData; write: 4168-byte command with in-capsule data,
 *   24-byte response) and no NVMe work at all. fio's net engine runs too
 *   and is printed beside it; it is not the bound here (one syscall per
 *   4 KiB message, so sluice's coalesced sends beat it);
 * - the same bdev in-process (bench/bdev_perf.ts measureBdev, pinned to CPU 0): what
 *   the bdev layer does with no network;
 * - SPDK's nvmf_tgt with spdk_nvme_perf, same pinning, when installed;
 *   otherwise the reference figures of the issue, labelled as such.
 *
 * Nothing is asserted: a benchmark is not a test. Every process started
 * here is ended here, on error and on Ctrl-C too.
 *
 * Before measuring, both RAM disks are written once end to end: a malloc
 * bdev's pages fault in on first write (randwrite QD128 ran at ~90-110k
 * IOPS on fresh memory, ~380k once written), and SPDK's malloc bdev sits in
 * hugepages that are all there from the start.
 *
 * The same file runs its helpers as child processes: `--tcp-server`,
 * `--tcp-client --port P --req B --resp B --depth D --seconds S` and
 * `--bdev-child --rw RW --depth D --seconds S`.
 * @module
 */
import { rpcCall } from "../src/rpc/server.ts";
import { Reactor } from "../src/reactor/mod.ts";
import { connectTcp, TcpConnection, TcpListener } from "../src/net/mod.ts";
import { LatencyHistogram } from "../src/perf/perf.ts";
import { BdevRegistry, runIo } from "../src/bdev/mod.ts";
import { createMallocBdev } from "../src/bdev_modules/malloc/malloc.ts";
import { measureBdev } from "./bdev_perf.ts";
import {
  benchChildren,
  type Children,
  f1,
  k,
  kill,
  ratio,
  rssAnonBytes,
  table,
  warnIfBusy,
  which,
} from "./common.ts";
import { sleep } from "../src/testing/wait.ts";
import { mallocBdevConfig, nvmfExportConfig } from "../src/testing/config.ts";
import { freePort } from "../src/testing/net.ts";

const MAIN = new URL("../appliance/main.ts", import.meta.url).pathname;
const SELF = new URL(import.meta.url).pathname;
const TARGET_CPU = 0;
const CLIENT_CPU = 1;
const NQN = "nqn.2026-11.dev.sluice:bench";
const MALLOC_MIB = 1024;
const IO_BYTES = 4096;

/** NVMe/TCP bytes on the wire per 4 KiB I/O, no digests, PDA 0. */
const WIRE = {
  /** CapsuleCmd (8 + 64) -> C2HData (24 + data) with SUCCESS: no CapsuleResp. */
  randread: { req: 72, resp: 24 + IO_BYTES },
  /** CapsuleCmd with in-capsule data -> CapsuleResp (8 + 16). */
  randwrite: { req: 72 + IO_BYTES, resp: 24 },
} as const;

/**
 * SPDK's figures as the issue quotes them, for when SPDK is not installed:
 * nvmf_tgt on one core of one of these 2-core machines, RAM bdev, median of runs.
 */
const SPDK_REFERENCE: Record<string, { iops: number; avgUs?: number }> = {
  // The issue gives one QD1 figure without saying read or write: both rows use it.
  "randread QD1": { iops: 51_000, avgUs: 19.6 },
  "randwrite QD1": { iops: 51_000, avgUs: 19.6 },
  "randread QD128": { iops: 307_000 },
  "randwrite QD128": { iops: 412_000 },
  "randread QD128 hdgst+ddgst": { iops: 306_000 },
};
const SPDK_REFERENCE_TEXT =
  "SPDK is not installed (no nvmf_tgt/spdk_nvme_perf on PATH): the SPDK column quotes the issue's " +
  "reference figures from one of these 2-core machines: nvmf_tgt on one core, RAM bdev, no digests, " +
  "median 307k IOPS 4 KiB randread QD128, 412k randwrite QD128, 51k QD1 (19.6 us mean); ~306k " +
  "with digests.";

type Rw = "randread" | "randwrite";

/** One workload of the table. */
interface Row {
  rw: Rw;
  qd: number;
  digests: boolean;
}

const ROWS: Row[] = [
  { rw: "randread", qd: 1, digests: false },
  { rw: "randwrite", qd: 1, digests: false },
  { rw: "randread", qd: 128, digests: false },
  { rw: "randwrite", qd: 128, digests: false },
  { rw: "randread", qd: 128, digests: true },
];

const rowName = (r: Row) => `${r.rw} QD${r.qd}${r.digests ? " hdgst+ddgst" : ""}`;

/** Figures of one measurement. */
interface Figures {
  iops: number;
  avgUs: number;
  p50Us: number;
  p99Us: number;
}

// ---------------------------------------------------------------------------
// Child processes (tracked and ended: ./common.ts Children).

/** Reads a child's stdout until a line matches; the rest keeps draining. */
async function waitForLine(
  child: Deno.ChildProcess,
  re: RegExp,
  what: string,
  timeoutMs: number,
): Promise<RegExpExecArray> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const timer = setTimeout(() => kill(child, "SIGKILL"), timeoutMs);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        throw new Error(`${what} ended before it was ready (its stderr is above):\n${seen}`);
      }
      seen += value;
      const m = re.exec(seen);
      if (m !== null) {
        (async () => {
          while (!(await reader.read()).done) { /* keep the pipe drained */ }
        })().catch(() => {});
        return m;
      }
    }
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// sluice: the target and sluice perf.

function targetConfig(port: number): unknown {
  return {
    subsystems: [
      mallocBdevConfig("Malloc0", (MALLOC_MIB * 2 ** 20) / 512),
      nvmfExportConfig({
        nqn: NQN,
        serialNumber: "SLUICEBENCH1",
        bdevName: "Malloc0",
        port,
        // QD128 on the wire: SPDK's and sluice's default queue holds 127 commands.
        transport: { max_queue_depth: 256 },
      }),
    ],
  };
}

const TOTAL_RE =
  /^Total: IOPS=(\d+) MiB\/s=[\d.]+ avg_us=([\d.]+) p50_us=([\d.]+) p99_us=([\d.]+) p999_us=[\d.]+ errors=(\d+)$/m;

async function sluicePerf(
  kids: Children,
  port: number,
  row: Row,
  seconds: number,
): Promise<Figures> {
  const trid = `trtype:TCP traddr:127.0.0.1 trsvcid:${port} subnqn:${NQN}` +
    (row.digests ? " hdgst:1 ddgst:1" : "");
  const args = ["run", "-A", MAIN, "perf", "-r", trid, "-q", String(row.qd), "-o"];
  args.push(String(IO_BYTES), "-w", row.rw, "-t", String(seconds));
  const out = await kids.run(CLIENT_CPU, Deno.execPath(), args, (seconds + 30) * 1000);
  const m = TOTAL_RE.exec(out.stdout);
  if (m === null || out.code !== 0) {
    throw new Error(`sluice perf failed (exit ${out.code}):\n${out.stdout}${out.stderr}`);
  }
  return { iops: Number(m[1]), avgUs: Number(m[2]), p50Us: Number(m[3]), p99Us: Number(m[4]) };
}

/**
 * Writes the namespace sequentially until the target holds all of it: a
 * malloc bdev's pages fault in on first write (measured here: randwrite
 * QD128 at 90-110k IOPS on fresh memory, ~380k once written), and SPDK's
 * malloc bdev lives in hugepages that are all there from the start.
 */
async function preconditionTarget(kids: Children, port: number, pid: number): Promise<void> {
  const trid = `trtype:TCP traddr:127.0.0.1 trsvcid:${port} subnqn:${NQN}`;
  const want = MALLOC_MIB * 2 ** 20;
  for (let i = 0; i < 5; i++) {
    const args = ["run", "-A", MAIN, "perf", "-r", trid, "-q", "8", "-o", "131072"];
    args.push("-w", "write", "-t", "2");
    const out = await kids.run(CLIENT_CPU, Deno.execPath(), args, 60_000);
    if (out.code !== 0) throw new Error(`precondition write failed:\n${out.stdout}${out.stderr}`);
    const rss = await rssAnonBytes(pid);
    if (rss >= want) {
      console.log(`  namespace written once (target RSS ${(rss / 2 ** 20).toFixed(0)} MiB)`);
      return;
    }
  }
  console.log("  (the namespace may not be fully written: the target's RSS stayed below 1 GiB)");
}

type ReactorCounters = Record<string, number>;

async function reactorCounters(sock: string): Promise<ReactorCounters> {
  const s = (await rpcCall(sock, "sluice_get_status")) as { reactor: ReactorCounters };
  return s.reactor;
}

// ---------------------------------------------------------------------------
// The TCP limit: request/response on sluice's TCP, NVMe/TCP's byte counts.

/** Child mode: answers every `req`-byte request with `resp` bytes; the first 8 bytes say both. */
async function tcpServer(): Promise<void> {
  const reactor = new Reactor();
  const running = reactor.run();
  const answer = new Uint8Array(64 * 1024).fill(0x5a); // read-only, queued by reference
  const conns: TcpConnection[] = [];
  const listener = new TcpListener(reactor, {
    host: "127.0.0.1",
    port: 0,
    onConnection(fd, peer) {
      let req = 0, resp = 0, have = 0;
      const hello = new Uint8Array(8);
      const helloView = new DataView(hello.buffer);
      const conn: TcpConnection = new TcpConnection(reactor, fd, {
        peer,
        receiveBufferBytes: 256 * 1024,
        sendQueueEntries: 4096,
        sendQueueBytes: 64 * 1024 * 1024,
        onData(buf, len) {
          let off = 0;
          if (req === 0) {
            if (len < 8) return 0;
            hello.set(buf.subarray(0, 8));
            req = helloView.getUint32(0, true);
            resp = helloView.getUint32(4, true);
            off = 8;
          }
          have += len - off;
          while (have >= req) {
            have -= req;
            conn.sendRange(answer, 0, resp);
          }
          return len;
        },
      });
      conns.push(conn);
    },
  });
  console.log(`listening ${listener.port}`);
  await new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGTERM", () => resolve());
    Deno.addSignalListener("SIGINT", () => resolve());
  });
  for (const c of conns) c.close();
  await listener.close();
  await reactor.stop();
  await running;
  reactor.close();
}

/** Child mode: keeps `depth` requests outstanding for `seconds` (after 0.2 s warm-up); prints JSON figures. */
async function tcpClient(
  port: number,
  req: number,
  resp: number,
  depth: number,
  seconds: number,
): Promise<void> {
  const reactor = new Reactor();
  const running = reactor.run();
  const request = new Uint8Array(req).fill(0x33);
  const startMs = new Float64Array(depth);
  const hist = new LatencyHistogram();
  const n = new Float64Array(4); // sent, done, counted, bytes toward the current response
  let measuring = false, stopping = false;
  let drained: () => void = () => {};
  const allBack = new Promise<void>((r) => (drained = r));
  const conn = await connectTcp(reactor, "127.0.0.1", port, {
    receiveBufferBytes: 256 * 1024,
    sendQueueEntries: depth * 2 + 16,
    sendQueueBytes: depth * req * 2 + 65536,
    onData(_buf, len) {
      let got = (n[3] as number) + len;
      while (got >= resp) {
        got -= resp;
        const now = performance.now();
        const done = n[1] as number;
        if (measuring) {
          hist.record((now - (startMs[done % depth] as number)) * 1e6);
          n[2] = (n[2] as number) + 1;
        }
        n[1] = done + 1;
        if (!stopping) {
          const sent = n[0] as number;
          startMs[sent % depth] = now;
          conn.send(request);
          n[0] = sent + 1;
        } else if (n[1] === n[0]) drained();
      }
      n[3] = got;
      return len;
    },
  });
  const hello = new Uint8Array(8);
  new DataView(hello.buffer).setUint32(0, req, true);
  new DataView(hello.buffer).setUint32(4, resp, true);
  conn.send(hello);
  reactor.ioInFlight++; // an initiator with requests outstanding: poll, do not park
  const t0 = performance.now();
  for (let i = 0; i < depth; i++) {
    startMs[i] = t0;
    conn.send(request);
  }
  n[0] = depth;
  await sleep(200);
  measuring = true;
  const m0 = performance.now();
  await sleep(seconds * 1000);
  measuring = false;
  const m1 = performance.now();
  stopping = true;
  if (n[1] !== n[0]) await allBack;
  reactor.ioInFlight--;
  conn.close();
  await conn.whenClosed;
  await reactor.stop();
  await running;
  reactor.close();
  const us = (ns: number) => Math.round(ns / 100) / 10;
  const f: Figures = {
    iops: Math.round((n[2] as number) / ((m1 - m0) / 1000)),
    avgUs: us(hist.total > 0 ? hist.sumNs / hist.total : 0),
    p50Us: us(hist.quantileNs(0.5)),
    p99Us: us(hist.quantileNs(0.99)),
  };
  console.log(JSON.stringify(f));
}

async function tcpLimit(
  kids: Children,
  serverPort: number,
  rw: Rw,
  qd: number,
  seconds: number,
): Promise<Figures> {
  const { req, resp } = WIRE[rw];
  const args = ["run", "-A", SELF, "--tcp-client", "--port", String(serverPort)];
  args.push("--req", String(req), "--resp", String(resp), "--depth", String(qd));
  args.push("--seconds", String(seconds));
  const out = await kids.run(CLIENT_CPU, Deno.execPath(), args, (seconds + 30) * 1000);
  const line = out.stdout.trim().split("\n").pop() ?? "";
  if (out.code !== 0 || !line.startsWith("{")) {
    throw new Error(`TCP client failed (exit ${out.code}):\n${out.stdout}${out.stderr}`);
  }
  return JSON.parse(line) as Figures;
}

// ---------------------------------------------------------------------------
// fio's net engine, for reference.

interface FioNet {
  /** Messages (stream) or round trips (pingpong) per second. */
  rate: number;
  avgUs: number;
  p50Us: number;
  p99Us: number;
}

async function fioNet(kids: Children, pingpong: boolean, seconds: number): Promise<FioNet> {
  const port = freePort();
  const common = [
    "--ioengine=net",
    "--protocol=tcp",
    `--port=${port}`,
    `--bs=${IO_BYTES}`,
    "--size=1000G",
    "--time_based",
    `--runtime=${seconds}`,
    "--nodelay=1",
    `--pingpong=${pingpong ? 1 : 0}`,
    "--output-format=json",
  ];
  // Engine options (--listen, --hostname) are known only after --ioengine.
  const listener = kids.spawn(TARGET_CPU, "fio", [
    "--name=recv",
    "--rw=read",
    ...common,
    "--listen",
  ]);
  const listenerOut = listener.output();
  await sleep(500); // fio prints nothing when it listens
  const sender = await kids.run(
    CLIENT_CPU,
    "fio",
    ["--name=send", "--rw=write", ...common, "--hostname=127.0.0.1"],
    (seconds + 30) * 1000,
  );
  await listenerOut.catch(() => {});
  if (sender.code !== 0) throw new Error(`fio net failed: ${sender.stdout}${sender.stderr}`);
  const text = sender.stdout;
  const doc = JSON.parse(text.slice(text.indexOf("{"))) as {
    jobs: {
      error: number;
      write: {
        iops: number;
        clat_ns: { mean: number; percentile?: Record<string, number> };
      };
    }[];
  };
  const job = doc.jobs[0];
  if (job === undefined || job.error !== 0) throw new Error(`fio net: job error ${job?.error}`);
  const pct = job.write.clat_ns.percentile ?? {};
  return {
    rate: job.write.iops,
    avgUs: job.write.clat_ns.mean / 1000,
    p50Us: (pct["50.000000"] ?? 0) / 1000,
    p99Us: (pct["99.000000"] ?? 0) / 1000,
  };
}

// ---------------------------------------------------------------------------
// The bdev in-process.

async function bdevInProcess(
  kids: Children,
  rw: Rw,
  qd: number,
  seconds: number,
): Promise<Figures> {
  const args = ["run", "-A", SELF, "--bdev-child", "--rw", rw, "--depth", String(qd)];
  args.push("--seconds", String(seconds));
  const out = await kids.run(TARGET_CPU, Deno.execPath(), args, (seconds + 60) * 1000);
  const line = out.stdout.trim().split("\n").pop() ?? "";
  if (out.code !== 0 || !line.startsWith("{")) {
    throw new Error(`in-process bdev run failed (exit ${out.code}):\n${out.stdout}${out.stderr}`);
  }
  return JSON.parse(line) as Figures;
}

/**
 * Child mode: bench/bdev_perf.ts's measureBdev on a 1 GiB malloc bdev, as
 * its measureMallocBdev does, after writing every block once: a RAM disk's
 * pages fault in on first write (~4x slower), and the target is measured
 * after the same fill. Prints JSON figures.
 */
async function bdevChild(rw: Rw, depth: number, seconds: number): Promise<void> {
  const registry = new BdevRegistry({ ioPoolSize: Math.max(64, depth) });
  const reactor = new Reactor();
  const running = reactor.run();
  try {
    const numBlocks = (MALLOC_MIB * 2 ** 20) / 512;
    createMallocBdev(registry, { name: "perf", numBlocks, blockSize: 512 });
    const desc = registry.open("perf", true);
    const ch = desc.getIoChannel(reactor);
    const fill = new Uint8Array(1 << 20).fill(0x5a);
    try {
      for (let lba = 0; lba < numBlocks; lba += fill.byteLength / 512) {
        await runIo(ch, (io) => ch.write(io, fill, lba, fill.byteLength / 512));
      }
    } finally {
      ch.close();
      desc.close();
    }
    const r = await measureBdev({ registry, name: "perf", thread: reactor, seconds, depth, rw });
    if (r.errors > 0) throw new Error(`${r.errors} I/O errors`);
    const f: Figures = {
      iops: r.iops,
      avgUs: r.latencyUsMean,
      p50Us: r.latencyUsP50,
      p99Us: r.latencyUsP99,
    };
    console.log(JSON.stringify(f));
  } finally {
    if (registry.has("perf")) await registry.unregister("perf");
    await reactor.stop();
    await running;
    reactor.close();
  }
}

// ---------------------------------------------------------------------------
// SPDK, when installed.

async function spdkRuns(
  kids: Children,
  seconds: number,
): Promise<Map<string, Figures> | string> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-spdk-" });
  const sock = `${dir}/spdk.sock`;
  const port = freePort();
  try {
    const tgt = kids.spawn(
      TARGET_CPU,
      "nvmf_tgt",
      ["-m", `0x${1 << TARGET_CPU}`, "-r", sock],
      "null",
    );
    const stderr = new Response(tgt.stderr).text();
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      await sleep(100);
      try {
        await rpcCall(sock, "spdk_get_version");
        up = true;
      } catch { /* not yet */ }
    }
    if (!up) {
      kill(tgt, "SIGTERM");
      return `nvmf_tgt did not start (hugepages set up?): ${(await stderr).trim().slice(-400)}`;
    }
    await rpcCall(sock, "nvmf_create_transport", { trtype: "TCP", max_queue_depth: 256 });
    await rpcCall(sock, "bdev_malloc_create", {
      name: "Malloc0",
      num_blocks: (MALLOC_MIB * 2 ** 20) / 512,
      block_size: 512,
    });
    await rpcCall(sock, "nvmf_create_subsystem", {
      nqn: NQN,
      allow_any_host: true,
      serial_number: "SPDKBENCH1",
    });
    await rpcCall(sock, "nvmf_subsystem_add_ns", { nqn: NQN, namespace: { bdev_name: "Malloc0" } });
    await rpcCall(sock, "nvmf_subsystem_add_listener", {
      nqn: NQN,
      listen_address: { trtype: "TCP", adrfam: "IPv4", traddr: "127.0.0.1", trsvcid: String(port) },
    });
    const out = new Map<string, Figures>();
    for (const row of ROWS) {
      const args = [
        "-r",
        `trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:${port} subnqn:${NQN}`,
        "-q",
        String(row.qd),
        "-o",
        String(IO_BYTES),
        "-w",
        row.rw,
        "-t",
        String(seconds),
        "-c",
        `0x${1 << CLIENT_CPU}`,
        "-L",
        ...(row.digests ? ["-H", "-I"] : []),
      ];
      const r = await kids.run(CLIENT_CPU, "spdk_nvme_perf", args, (seconds + 30) * 1000);
      const f = parseSpdkPerf(r.stdout);
      if (r.code !== 0 || f === null) {
        return `spdk_nvme_perf failed (exit ${r.code}): ${
          (r.stdout + r.stderr).trim().slice(-400)
        }`;
      }
      out.set(rowName(row), f);
    }
    kill(tgt, "SIGTERM");
    await tgt.status;
    return out;
  } catch (e) {
    return `SPDK run failed: ${e instanceof Error ? e.message : String(e)}`;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** spdk_nvme_perf's "Total : IOPS MiB/s Average min max" and, with -L, its percentiles. */
function parseSpdkPerf(text: string): Figures | null {
  const m = /^Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)/m.exec(text);
  if (m === null) return null;
  const pct = (p: string) => {
    const r = new RegExp(`^\\s*${p.replace(".", "\\.")}%\\s*:\\s*([\\d.]+)us`, "m").exec(text);
    return r === null ? 0 : Number(r[1]);
  };
  return {
    iops: Number(m[1]),
    avgUs: Number(m[3]),
    p50Us: pct("50.00000"),
    p99Us: pct("99.00000"),
  };
}

// ---------------------------------------------------------------------------

async function bench(seconds: number): Promise<void> {
  const { pin, kids, release } = await benchChildren("bench:nvmf");
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-nvmf-" });
  try {
    console.log(
      `bench:nvmf: 4 KiB random I/O over NVMe/TCP on 127.0.0.1, ${seconds} s per run; ` +
        (pin
          ? `target and servers on CPU ${TARGET_CPU}, clients on CPU ${CLIENT_CPU} (taskset)`
          : "NOT pinned (taskset missing or one CPU): figures are not comparable to pinned runs") +
        `; ${navigator.hardwareConcurrency} CPUs, 2-core VMs see 20-50% noise between runs\n`,
    );

    await warnIfBusy(1000);

    // sluice: one target for every row (digests are per connection).
    const port = freePort();
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(targetConfig(port)));
    const target = kids.spawn(
      TARGET_CPU,
      Deno.execPath(),
      ["run", "-A", MAIN, "serve", "--state-dir", dir],
      "piped",
      "inherit",
    );
    await waitForLine(target, /ready/, "sluice serve", 30_000);
    const sock = `${dir}/sluice.sock`;
    await preconditionTarget(kids, port, target.pid);
    const ours = new Map<string, Figures>();
    const counters = new Map<string, ReactorCounters>();
    for (const row of ROWS) {
      const before = await reactorCounters(sock);
      const f = await sluicePerf(kids, port, row, seconds);
      const after = await reactorCounters(sock);
      const d: ReactorCounters = {};
      for (const [key, v] of Object.entries(after)) d[key] = v - (before[key] ?? 0);
      ours.set(rowName(row), f);
      counters.set(rowName(row), d);
      console.log(`  sluice ${rowName(row)}: ${k(f.iops)} IOPS, avg ${f1(f.avgUs)} us`);
    }
    kill(target, "SIGTERM");
    await target.status;

    // The TCP limit: the same bytes on sluice's TCP, no NVMe work.
    const server = kids.spawn(
      TARGET_CPU,
      Deno.execPath(),
      ["run", "-A", SELF, "--tcp-server"],
      "piped",
      "inherit",
    );
    const sp = Number((await waitForLine(server, /listening (\d+)/, "TCP server", 30_000))[1]);
    const tcp = new Map<string, Figures>();
    for (const rw of ["randread", "randwrite"] as Rw[]) {
      for (const qd of [1, 128]) {
        const f = await tcpLimit(kids, sp, rw, qd, seconds);
        tcp.set(`${rw} QD${qd}`, f);
        console.log(`  TCP ${rw} pattern QD${qd}: ${k(f.iops)} round trips/s`);
      }
    }
    kill(server, "SIGTERM");
    await server.status;

    let fio: { pingpong: FioNet; stream: FioNet } | string;
    if (await which("fio")) {
      try {
        fio = {
          pingpong: await fioNet(kids, true, seconds),
          stream: await fioNet(kids, false, seconds),
        };
        console.log(
          `  fio net: pingpong ${k(fio.pingpong.rate)}/s, stream ${k(fio.stream.rate)}/s`,
        );
      } catch (e) {
        fio = `fio net failed: ${e instanceof Error ? e.message : String(e)}`;
      }
    } else fio = "fio is not installed (apt-get install fio)";

    // The bdev in-process.
    const bdev = new Map<string, Figures>();
    for (const rw of ["randread", "randwrite"] as Rw[]) {
      for (const qd of [1, 128]) {
        const f = await bdevInProcess(kids, rw, qd, seconds);
        bdev.set(`${rw} QD${qd}`, f);
        console.log(`  bdev in-process ${rw} QD${qd}: ${k(f.iops)} IOPS`);
      }
    }

    // SPDK.
    let spdk: Map<string, Figures> | null = null;
    let spdkNote: string;
    if ((await which("nvmf_tgt")) && (await which("spdk_nvme_perf"))) {
      const r = await spdkRuns(kids, seconds);
      if (typeof r === "string") spdkNote = `SPDK is installed but its run failed: ${r}`;
      else {
        spdk = r;
        spdkNote = "SPDK: nvmf_tgt and spdk_nvme_perf measured in this run, same pinning.";
      }
    } else spdkNote = SPDK_REFERENCE_TEXT;

    console.log();
    table(
      [
        "4 KiB workload",
        "sluice IOPS",
        "avg us",
        "p50 us",
        "p99 us",
        "TCP limit",
        "sluice/TCP",
        "bdev in-proc",
        "sluice/bdev",
        spdk ? "SPDK IOPS" : "SPDK (ref)",
        "sluice/SPDK",
      ],
      ROWS.map((row) => {
        const name = rowName(row);
        const base = `${row.rw} QD${row.qd}`;
        const o = ours.get(name) as Figures;
        const t = tcp.get(base);
        const b = bdev.get(base);
        const s = spdk ? spdk.get(name)?.iops : SPDK_REFERENCE[name]?.iops;
        return [
          name,
          k(o.iops),
          f1(o.avgUs),
          f1(o.p50Us),
          f1(o.p99Us),
          t ? k(t.iops) : "-",
          t ? ratio(o.iops, t.iops) : "-",
          b ? k(b.iops) : "-",
          b ? ratio(o.iops, b.iops) : "-",
          s !== undefined ? k(s) : "-",
          s !== undefined ? ratio(o.iops, s) : "-",
        ];
      }),
    );
    console.log(
      "\nTCP limit: round trips/s of a request/response load on sluice's own TCP (src/net), server " +
        `on CPU ${TARGET_CPU}, client on CPU ${CLIENT_CPU}, NVMe/TCP's bytes per I/O (read ` +
        `${WIRE.randread.req} B -> ${WIRE.randread.resp} B, write ${WIRE.randwrite.req} B -> ` +
        `${WIRE.randwrite.resp} B), no NVMe work; the digest row is held to the plain read's limit ` +
        "(8 more bytes). bdev in-proc: bench/bdev_perf.ts's measureBdev on a 1 GiB malloc bdev, " +
        `pinned to CPU ${TARGET_CPU}, no network. Both RAM disks are written once before they are ` +
        "measured (first-touch page faults otherwise dominate writes).",
    );
    console.log(spdkNote);

    console.log("\nThe TCP limit measured two ways (same pinning):");
    const tcpRows: string[][] = [];
    for (const rw of ["randread", "randwrite"] as Rw[]) {
      for (const qd of [1, 128]) {
        const t = tcp.get(`${rw} QD${qd}`);
        if (t === undefined) continue;
        tcpRows.push([
          `sluice TCP, ${rw} bytes (${WIRE[rw].req} -> ${WIRE[rw].resp} B), ${qd} in flight`,
          k(t.iops),
          f1(t.avgUs),
          f1(t.p50Us),
          f1(t.p99Us),
        ]);
      }
    }
    if (typeof fio !== "string") {
      const pp = fio.pingpong, st = fio.stream;
      tcpRows.push([
        "fio net pingpong, 4 KiB each way, 1 in flight",
        k(pp.rate),
        f1(pp.avgUs),
        f1(pp.p50Us),
        f1(pp.p99Us),
      ]);
      tcpRows.push([
        "fio net stream, 4 KiB one way (no answer)",
        k(st.rate),
        f1(st.avgUs),
        f1(st.p50Us),
        f1(st.p99Us),
      ]);
    }
    table(["load", "round trips/s", "avg us", "p50 us", "p99 us"], tcpRows);
    if (typeof fio === "string") console.log(fio);

    console.log(
      "\nsluice target's reactor per I/O (from sluice_get_status, differences over each run):",
    );
    table(
      [
        "4 KiB workload",
        "passes/IO",
        "idle passes/IO",
        "CQEs/IO",
        "SQEs/IO",
        "submits/IO",
        "parks",
        "yields",
      ],
      ROWS.map((row) => {
        const name = rowName(row);
        const d = counters.get(name) ?? {};
        const ios = (ours.get(name)?.iops ?? 0) * seconds;
        const per = (key: string) => (ios > 0 ? ((d[key] ?? 0) / ios).toFixed(2) : "-");
        return [
          name,
          per("busyIterations"),
          per("idleIterations"),
          per("cqesReaped"),
          per("sqesSubmitted"),
          per("submitCalls"),
          String(d.idleParks ?? 0),
          String((d.yields ?? 0) + (d.deepYields ?? 0)),
        ];
      }),
    );
  } finally {
    await release();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function argValue(name: string): string | undefined {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

function numberArg(name: string, dflt: number, min: number, max: number): number {
  const v = argValue(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) {
    console.error(`bench:nvmf: --${name} must be a number from ${min} to ${max}, got '${v}'`);
    Deno.exit(2);
  }
  return n;
}

if (import.meta.main) {
  if (Deno.args.includes("--tcp-server")) await tcpServer();
  else if (Deno.args.includes("--bdev-child")) {
    const rw = argValue("rw");
    if (rw !== "randread" && rw !== "randwrite") throw new Error("--rw is randread or randwrite");
    await bdevChild(rw, numberArg("depth", 1, 1, 4096), numberArg("seconds", 5, 0.1, 3600));
  } else if (Deno.args.includes("--tcp-client")) {
    await tcpClient(
      numberArg("port", 0, 1, 65535),
      numberArg("req", 72, 1, 1 << 20),
      numberArg("resp", 24, 1, 1 << 16),
      numberArg("depth", 1, 1, 4096),
      numberArg("seconds", 5, 0.1, 3600),
    );
  } else if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log("Usage: deno task bench:nvmf [--seconds N]  (default 5 s per run, ~16 runs)");
  } else {
    await bench(numberArg("seconds", 5, 0.5, 600));
  }
}

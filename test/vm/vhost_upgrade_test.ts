/**
 * Hot upgrade and crash recovery of the vhost-user-blk backend with the real
 * Linux virtio-blk driver: a QEMU guest (chardev `reconnect=1`) runs fio with
 * verify on a disk served by `sluice serve` from a file bdev; in the middle
 * of the run the test kills sluice (SIGKILL: a crash) or stops it (SIGTERM:
 * the upgrade path) and starts it again from the same state directory. fio
 * must finish with no error, every block must verify, and the guest's kernel
 * must log no I/O error. Run with `deno task test:vm vhost-upgrade`.
 *
 * The controller's two queues are spread over two reactors: queue 0 on a
 * data-path worker, queue 1 on the main thread's (src/vhost_user/sharded.ts).
 *
 * To be sure requests really are in flight inside sluice when it goes away,
 * the disk is an error bdev (EE_File0) over the file bdev and, just before
 * the kill, every I/O is delayed on it: requests sluice has taken from the
 * rings then sit on the bdev. After a SIGKILL the new sluice must resubmit
 * them from the inflight area (its log says how many); after a SIGTERM the
 * old one must have completed them before exiting (nothing to resubmit).
 */
import assert from "node:assert/strict";
import { outputTail, runGuest } from "./guest.ts";
import { freePort } from "../../src/testing/net.ts";
import { type Daemon, startDaemon } from "../../src/testing/daemon.ts";
import { rpcCall } from "../../src/rpc/server.ts";
import { sleep } from "../../src/testing/wait.ts";

const FIO_SIZE_MIB = 96; // per job, 4 jobs: 20-30 s of writes and verify under TCG
const DISK_MIB = 448;
const NUM_BLOCKS = DISK_MIB * 2048;
const NUM_QUEUES = 2;
const SCRIPT = new URL("./guest/vhost_upgrade.sh", import.meta.url);
/** Guest I/Os completed before the backend goes away: early in fio's write phase. */
const DISTURB_AFTER_IOS = 2000;
/** Every I/O on the bdev is held this long from just before the backend goes away. */
const HOLD_US = 1_500_000;

interface Report {
  fioRc: number;
  fioErr: number;
  ioErrors: number;
  writeIos: number;
  readIos: number;
}

function config(disk: string, socket: string): unknown {
  return {
    subsystems: [
      {
        subsystem: "bdev",
        config: [
          {
            method: "bdev_file_create",
            params: { name: "File0", filename: disk, block_size: 512 },
          },
          { method: "bdev_error_create", params: { base_name: "File0" } },
        ],
      },
      {
        subsystem: "vhost_blk",
        config: [{
          method: "vhost_create_blk_controller",
          // Spread: queue 0 on a data-path worker, queue 1 on the main reactor (serve
          // --cpumask 0x3), so the inflight area, the drain and the resubmission are shared
          // between two threads' backends.
          params: {
            ctrlr: "vhost.0",
            dev_name: "EE_File0",
            socket,
            num_queues: NUM_QUEUES,
            cpumask: "0x3",
          },
        }],
      },
    ],
  };
}

/** What the daemon printed, kept for assertions. */
class Log {
  text = "";
  add = (t: string): void => {
    this.text += t;
  };
}

async function start(dir: string, log: Log, withConfig: unknown | undefined): Promise<Daemon> {
  const d = await startDaemon(dir, {
    config: withConfig,
    args: ["--nvmf-listen", `127.0.0.1:${freePort()}`, "--cpumask", "0x3"],
    echo: true,
    onOutput: log.add,
  });
  log.add(d.log.join("\n") + "\n");
  return d;
}

/** Resubmission counts the daemon logged, summed over queues. */
function resubmitted(text: string): number {
  let n = 0;
  for (const m of text.matchAll(/resubmitting (\d+) in-flight request/g)) n += Number(m[1]);
  return n;
}

for (const mode of ["SIGKILL", "SIGTERM"] as const) {
  Deno.test(`vhost-upgrade: fio with verify survives sluice ${mode} and restart`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-vm-upgrade-" });
    const socket = `${dir}/vhost.0.sock`;
    assert.ok(socket.length < 108, `socket path too long for a unix socket: ${socket}`);
    const disk = `${dir}/disk.img`;
    await Deno.writeFile(disk, new Uint8Array(0));
    await Deno.truncate(disk, DISK_MIB << 20);

    const first = new Log();
    const second = new Log();
    let sluice: Daemon | null = await start(dir, first, config(disk, socket));
    let restarted: Daemon | null = null;
    let disturbed: Promise<void> | null = null;
    let disturbError: unknown = null;
    let phase: "before" | "away" | "back" = "before";
    /** Writes the guest had outstanding, per console line, while sluice was away. */
    const writesWhileAway: number[] = [];
    const abort = new AbortController();

    // Runs once the guest says fio is running: hold I/O on the bdev, take sluice away, start it
    // again from the same state directory (same config, same sockets).
    const disturb = async (): Promise<void> => {
      const old = sluice as Daemon;
      await rpcCall(old.socket, "bdev_error_inject_error", {
        name: "EE_File0",
        io_type: "all",
        error_type: "delay",
        num: 1_000_000,
        delay_us: HOLD_US,
      });
      await sleep(500); // let requests pile up on the bdev
      phase = "away";
      old.child.kill(mode);
      const { code, signal } = await old.child.status;
      if (mode === "SIGKILL") assert.equal(signal, "SIGKILL");
      else assert.equal(code, 0, `sluice exited with ${code} after SIGTERM`);
      await sleep(1000); // the guest keeps issuing I/O into a ring nobody serves
      restarted = await start(dir, second, undefined);
      phase = "back";
    };

    try {
      const r = await runGuest({
        name: `vhost-upgrade-${mode}`,
        modules: ["virtio_pci", "virtio_blk"],
        sharedMem: true,
        smp: 2,
        timeoutSec: 900,
        signal: abort.signal,
        qemuArgs: [
          ...["-chardev", `socket,id=vhost0,path=${socket},reconnect=1`],
          ...["-device", `vhost-user-blk-pci,chardev=vhost0,num-queues=${NUM_QUEUES}`],
        ],
        script: SCRIPT,
        env: { NUM_BLOCKS: String(NUM_BLOCKS), FIO_SIZE_MIB: String(FIO_SIZE_MIB) },
        onLine: (line) => {
          const m = /INFLIGHT\s+(\d+)\s+(\d+)\s+done\s+(\d+)/.exec(line);
          if (m === null) return;
          const writes = Number(m[2]);
          // Go while fio is writing: requests sluice took then are writes the guest waits for.
          if (disturbed === null && writes > 0 && Number(m[3]) >= DISTURB_AFTER_IOS) {
            disturbed = disturb().catch((e) => {
              disturbError = e;
              abort.abort();
            });
          }
          if (phase === "away") writesWhileAway.push(writes);
        },
      });
      assert.ok(disturbed !== null, `the guest never started fio:\n${outputTail(r.output, 40)}`);
      await disturbed;
      if (disturbError !== null) throw disturbError;
      const report = JSON.parse(r.report) as Report;
      assert.equal(r.exitCode, 0, outputTail(r.output, 60));
      assert.equal(report.fioRc, 0);
      assert.equal(report.fioErr, 0);
      assert.equal(report.ioErrors, 0, "the guest kernel logged I/O errors");
      // fio was still writing when sluice went away: the guest had writes outstanding while
      // no backend served them.
      assert.ok(
        writesWhileAway.some((n) => n > 0),
        `no outstanding guest writes seen while sluice was away: ${writesWhileAway.join(",")}`,
      );
      const back = resubmitted(second.text);
      if (mode === "SIGKILL") {
        // Requests sluice had taken from the rings and not completed came back from the
        // inflight area; without them the guest would wait for ever. The worker's queue too.
        assert.ok(back > 0, `the restarted sluice resubmitted nothing:\n${second.text}`);
        assert.match(second.text, /queue 0: resubmitting [1-9]\d* .*\[queue\(s\) 0 on reactor 1\]/);
      } else {
        // A graceful stop completes what it took before it lets go: nothing to resubmit.
        assert.equal(back, 0, `a graceful stop left requests in flight:\n${second.text}`);
        assert.match(first.text, /drained \d+ request/);
      }
      assert.doesNotMatch(second.text, /bad inflight area/);
      for (const log of [first.text, second.text]) {
        assert.match(log, /\(2 queue\(s\), queues on reactors 1,0\)/);
      }
    } catch (e) {
      await disturbed;
      throw disturbError ?? e;
    } finally {
      await (sluice as Daemon | null)?.stop();
      sluice = null;
      await (restarted as Daemon | null)?.stop();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

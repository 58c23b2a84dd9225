/**
 * Live migration of a VM whose disk sluice serves over vhost-user-blk: one
 * `sluice serve` exports one RAM bdev through two controllers, one socket for
 * the source QEMU and one for the destination QEMU (`-incoming defer`). The
 * source guest runs fio with verify (random 4k writes, 3 jobs, QD32, reads
 * checked as it goes) and a reader that reads a 48 MiB pattern back again and
 * again; the test migrates it through QMP while they run; fio ends on the
 * destination with no error, every verify passes and the pattern always reads
 * back right. Sluice must have logged its writes into the source QEMU's dirty
 * log meanwhile (VHOST_F_LOG_ALL, LOG_SHMFD): with marking switched off by
 * hand, the reader's checksum failed in each of the runs tried (the
 * destination got a buffer the migration had sent before sluice wrote it).
 *
 * Run with `deno task test:vm "live migration"`. About 70 s on a 2-core
 * machine (fio runs FIO_RUNTIME_SEC seconds; the migration itself takes 1-3 s).
 */
import assert from "node:assert/strict";
import { GuestError, type GuestResult, outputTail, runGuest } from "./guest.ts";
import { migrate, type MigrationInfo, quitQemu } from "./migration.ts";
import { freePort } from "../../src/testing/net.ts";
import { collectLines, type Daemon, startDaemon } from "../../src/testing/daemon.ts";
import { mallocBdevConfig, vhostBlkConfig } from "../../src/testing/config.ts";

const NUM_BLOCKS = 262144; // 128 MiB of 512-byte blocks
const NUM_QUEUES = 2;
const FIO_JOBS = 3;
const FIO_SIZE_MIB = 16;
const PATTERN_MIB = 64; // 48 MiB, past the fio regions (3 x 16 MiB)
/** Long enough for the guest to reach the destination with fio still running. */
const FIO_RUNTIME_SEC = 40;
const SCRIPT = new URL("./guest/vhost_migration.sh", import.meta.url);

interface Report {
  fioErr: number;
  rereads: number;
  writeIos: number;
  verifyIos: number;
}

/** The daemon with Malloc0 behind one controller per socket; its output lines go to `lines`. */
async function startSluice(dir: string, sockets: string[], lines: string[]): Promise<Daemon> {
  const config = {
    subsystems: [
      mallocBdevConfig("Malloc0", NUM_BLOCKS),
      // Two controllers on the same bdev: bdevs take several writers (each controller opens
      // its own descriptor per connection).
      vhostBlkConfig(
        sockets.map((socket, i) => ({
          ctrlr: `vhost.${i}`,
          devName: "Malloc0",
          socket,
          numQueues: NUM_QUEUES,
          // Spread over two reactors: both backends log their writes into the dirty log.
          cpumask: "0x3",
        })),
      ),
    ],
  };
  return await startDaemon(dir, {
    config,
    args: ["--nvmf-listen", `127.0.0.1:${freePort()}`, "--cpumask", "0x3"],
    echo: true,
    onOutput: collectLines(lines),
  });
}

/** Waits for a daemon log line (a guard, not a timing threshold). */
async function logLine(lines: string[], re: RegExp, what: string): Promise<string> {
  for (let i = 0; i < 600; i++) {
    const l = lines.find((x) => re.test(x));
    if (l !== undefined) return l;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sluice never logged ${what}:\n${lines.slice(-40).join("\n")}`);
}

Deno.test("vhost-user-blk: live migration between two QEMUs while fio verify runs (dirty logging)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vm-mig-" });
  const srcSock = `${dir}/src.sock`;
  const dstSock = `${dir}/dst.sock`;
  const srcQmp = `${dir}/src.qmp`;
  const dstQmp = `${dir}/dst.qmp`;
  const migSock = `${dir}/mig.sock`;
  assert.ok(migSock.length < 100, `socket paths too long: ${migSock}`);
  const sluiceLines: string[] = [];
  const sluice = await startSluice(dir, [srcSock, dstSock], sluiceLines);
  const aborter = new AbortController();
  const guests: Promise<unknown>[] = [];
  try {
    // Identical machines but for the vhost-user socket: migration needs the same devices.
    const common = (socket: string) => ({
      script: SCRIPT,
      modules: ["virtio_pci", "virtio_blk"],
      sharedMem: true,
      smp: 2,
      memMiB: 512,
      qemuArgs: [
        ...["-chardev", `socket,id=vhost0,path=${socket}`],
        ...["-device", `vhost-user-blk-pci,chardev=vhost0,num-queues=${NUM_QUEUES}`],
      ],
      env: {
        NUM_BLOCKS: String(NUM_BLOCKS),
        PATTERN_MIB: String(PATTERN_MIB),
        FIO_JOBS: String(FIO_JOBS),
        FIO_SIZE_MIB: String(FIO_SIZE_MIB),
        FIO_RUNTIME: String(FIO_RUNTIME_SEC),
      },
      timeoutSec: 600,
      signal: aborter.signal,
    });

    // The source console, line by line: the test migrates once fio is running there.
    const srcLines: string[] = [];
    let fioRunning: () => void = () => {};
    const fioRunningSeen = new Promise<void>((r) => (fioRunning = r));
    const source = runGuest({
      ...common(srcSock),
      name: "vhost-migrate-src",
      qmp: srcQmp,
      onLine: (l) => {
        srcLines.push(l);
        if (l.includes("FIO_RUNNING")) fioRunning();
      },
    });
    const destination = runGuest({
      ...common(dstSock),
      name: "vhost-migrate-dst",
      qmp: dstQmp,
      incoming: "defer",
    });
    guests.push(source, destination);
    // If either guest fails early, stop waiting for the other.
    const sourceSettled = source.then(
      (r) => ({ ok: true as const, r }),
      (e: unknown) => ({ ok: false as const, e }),
    );
    const early = Promise.race([
      sourceSettled.then((s) => {
        throw new Error(
          `the source guest ended before the migration: ${
            s.ok ? `exit ${s.r.exitCode}\n${outputTail(s.r.output, 40)}` : String(s.e)
          }`,
        );
      }),
      destination.then(
        () => {
          throw new Error("the destination ended before the migration");
        },
        (e: unknown) => {
          throw e;
        },
      ),
    ]);
    early.catch(() => {}); // raced below

    await Promise.race([fioRunningSeen, early]);
    let startedAt = 0;
    const info: MigrationInfo = await Promise.race([
      migrate(srcQmp, dstQmp, `unix:${migSock}`, { onStarted: () => (startedAt = Date.now()) }),
      early,
    ]);
    const srcConsoleAtSwitch = srcLines.join("\n");
    console.log(
      `migration completed in ${info["total-time"]} ms (downtime ${info.downtime} ms, ` +
        `${info.ram?.transferred} bytes of RAM sent, ${
          info.ram?.["dirty-sync-count"]
        } dirty syncs), ` +
        `${Date.now() - startedAt} ms after the migrate command`,
    );
    // fio was running when the guest left: it had started and not ended on the source.
    assert.ok(srcConsoleAtSwitch.includes("FIO_RUNNING"));
    assert.ok(
      !srcConsoleAtSwitch.includes("FIO_DONE"),
      `fio ended on the source before the migration completed; raise FIO_RUNTIME_SEC:\n${
        outputTail(srcConsoleAtSwitch, 20)
      }`,
    );

    // The source QEMU stays paused after migrating away: quit it. Its guest never reported an
    // exit code (that happens on the destination).
    await quitQemu(srcQmp);
    const src = await sourceSettled;
    assert.ok(!src.ok, "the source QEMU reported a guest exit after the guest had left");
    assert.ok(src.e instanceof GuestError && src.e.failure === "no-exit", String(src.e));
    assert.ok(!src.e.output.includes("FIO_DONE"));

    const r: GuestResult = await destination;
    assert.equal(r.exitCode, 0, outputTail(r.output, 60));
    // The destination console starts where the source's stopped: fio's end is there.
    for (const step of ["fio", "reread"]) {
      assert.ok(
        r.output.includes(`STEP ${step} OK`),
        `step ${step} missing:\n${outputTail(r.output, 40)}`,
      );
    }
    assert.ok(r.output.includes("FIO_DONE rc=0"), outputTail(r.output, 40));
    assert.ok(!r.output.includes("FIO_RUNNING"), "the destination console shows the guest's start");
    const report = JSON.parse(r.report) as Report;
    assert.equal(report.fioErr, 0);
    assert.ok(report.writeIos > 0 && report.verifyIos > 0, JSON.stringify(report));
    console.log(`guest: ${JSON.stringify(report)}`);

    // Sluice logged the source's writes: QEMU mapped a log, turned logging on, and pages were
    // marked, none of them out of the log's range. The counts come when the source connection
    // closes.
    await logLine(sluiceLines, /dirty log of \d+ bytes mapped/, "a dirty log mapped");
    await logLine(sluiceLines, /dirty logging on/, "dirty logging turned on");
    const close = await logLine(
      sluiceLines,
      /dirty log at close: \d+ writes, \d+ pages marked/,
      "its dirty log counts",
    );
    const pages = Number(/(\d+) pages marked/.exec(close)?.[1]);
    assert.ok(pages > 0, close);
    assert.ok(!close.includes("NOT"), close);
    assert.ok(
      !sluiceLines.some((l) => l.includes("dirty log: a write to guest")),
      "an unlogged write",
    );
    console.log(close.trim());
  } finally {
    aborter.abort(); // QEMUs still running after a failure
    await Promise.allSettled(guests);
    await sluice.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

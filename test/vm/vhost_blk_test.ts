/**
 * vhost-user-blk against the real Linux virtio-blk driver: `sluice serve` on
 * the host serves a vhost-user-blk controller over a RAM bdev on a unix
 * socket; a QEMU guest (RAM in a shared memfd) gets it as a
 * vhost-user-blk-pci device and runs dd and fio on /dev/vda. A second guest
 * then reads the pattern back through a new connection to the same
 * controller. Run with `deno task test:vm vhost-user-blk`.
 */
import assert from "node:assert/strict";
import { outputTail, runGuest } from "./guest.ts";
import { freePort } from "../../src/testing/net.ts";
import { type Daemon, startDaemon } from "../../src/testing/daemon.ts";
import { mallocBdevConfig, vhostBlkConfig } from "../../src/testing/config.ts";

const NUM_BLOCKS = 262144; // 128 MiB of 512-byte blocks
const PATTERN_MIB = 96; // the 4 MiB pattern, past fio's two 16 MiB regions
const FIO_SIZE_MIB = 16;
const ZERO_MIB = 36; // past fio's two 16 MiB regions
const FS_MIB = 48; // 40 MiB of ext4, before the pattern at 96 MiB
const SCRIPT = new URL("./guest/vhost_blk.sh", import.meta.url);

/** What the guest script writes to /dev/report. */
interface Report {
  sizeBlocks: number;
  queues: number;
  patternSha256: string;
  fsSha256: string;
  fioErr?: number;
}

/**
 * The daemon with a config that creates Malloc0 and controller vhost.0 on `socket`; `output`
 * collects what it prints after "ready" (echoed to stdout as well).
 */
async function startSluice(
  dir: string,
  socket: string,
  numQueues: number,
  nvmfPort: number,
  output: string[],
): Promise<Daemon> {
  // The multiqueue device is spread over two reactors (serve --cpumask 0x3, controller cpumask
  // 0x3): queues 0 and 2 on a data-path worker (its own thread, reactor and replica of Malloc0),
  // 1 and 3 on the main reactor, one socket; the single-queue one stays on the main reactor.
  const worker = numQueues > 1;
  const config = {
    subsystems: [
      mallocBdevConfig("Malloc0", NUM_BLOCKS),
      vhostBlkConfig([{
        ctrlr: "vhost.0",
        devName: "Malloc0",
        socket,
        numQueues,
        ...(worker ? { cpumask: "0x3" } : {}),
      }]),
    ],
  };
  return await startDaemon(dir, {
    config,
    args: [
      "--nvmf-listen",
      `127.0.0.1:${nvmfPort}`,
      ...(worker ? ["--cpumask", "0x3"] : []),
    ],
    echo: true,
    onOutput: (text) => output.push(text),
  });
}

function parseReport(report: string, output: string): Report {
  try {
    return JSON.parse(report) as Report;
  } catch {
    throw new Error(`guest report is not JSON: ${report.slice(0, 500)}\n${outputTail(output, 40)}`);
  }
}

function assertSteps(output: string, steps: string[]): void {
  for (const step of steps) {
    assert.ok(
      output.includes(`STEP ${step} OK`),
      `step ${step} missing:\n${outputTail(output, 40)}`,
    );
  }
}

for (const numQueues of [1, 4]) {
  Deno.test(`vhost-user-blk: Linux virtio-blk, dd and fio against sluice (${numQueues} queue${numQueues === 1 ? "" : "s"})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-vm-vhost-" });
    const socket = `${dir}/vhost.0.sock`;
    // sun_path holds 108 bytes including the NUL; QEMU and the daemon would both fail.
    assert.ok(socket.length < 108, `socket path too long for a unix socket: ${socket}`);
    const output: string[] = [];
    const sluice = await startSluice(dir, socket, numQueues, freePort(), output);
    try {
      const info = await Deno.lstat(socket);
      assert.ok(info.isSocket, `${socket} is not a socket after "ready"`);

      // QEMU's vhost-user-blk-pci defaults num-queues to the vCPU count: give it the
      // controller's count, since asking for more than the backend offers fails at realize.
      const qemuArgs = [
        ...["-chardev", `socket,id=vhost0,path=${socket}`],
        ...["-device", `vhost-user-blk-pci,chardev=vhost0,num-queues=${numQueues}`],
      ];
      const common = {
        modules: ["virtio_pci", "virtio_blk", "loop", "ext4"],
        sharedMem: true, // memory-backend-memfd,share=on + -numa node,memdev=
        // Linux makes min(num-queues, vCPUs) queues: as many vCPUs as queues.
        smp: Math.max(2, numQueues),
        qemuArgs,
        timeoutSec: 300, // TCG: about 8 s against qemu-storage-daemon
      };
      const env = {
        NUM_BLOCKS: String(NUM_BLOCKS),
        NUM_QUEUES: String(numQueues),
        PATTERN_MIB: String(PATTERN_MIB),
        FIO_SIZE_MIB: String(FIO_SIZE_MIB),
        ZERO_MIB: String(ZERO_MIB),
        FS_MIB: String(FS_MIB),
      };

      const r = await runGuest({
        ...common,
        name: `vhost-blk-q${numQueues}`,
        script: SCRIPT,
        env: { ...env, MODE: "write", EXPECT_SHA: "" },
      });
      assert.equal(r.exitCode, 0, outputTail(r.output, 60));
      assertSteps(r.output, [
        "device",
        "size",
        "queues",
        "pattern",
        "fio",
        "after-fio",
        "zeroes",
        "cache",
        "filesystem",
      ]);
      if (numQueues > 1) {
        assert.ok(
          sluice.log.some((l) => l.includes("(4 queue(s), queues on reactors 1,0,1,0)")),
          `controller not spread over the worker and the main reactor:\n${sluice.log.join("\n")}`,
        );
      }
      // QEMU forwarded the guest's cache-mode switch (SET_CONFIG) and sluice applied it.
      assert.ok(
        output.join("").includes("cache mode write through"),
        "no cache mode change in sluice's log",
      );
      const report = parseReport(r.report, r.output);
      assert.equal(report.sizeBlocks, NUM_BLOCKS);
      assert.equal(report.queues, numQueues);
      assert.equal(report.fioErr, 0);
      assert.match(report.patternSha256, /^[0-9a-f]{64}$/);
      assert.match(report.fsSha256, /^[0-9a-f]{64}$/);

      // A second QEMU on the same controller (the first one's connection is gone): the data is
      // in Malloc0, not in anything tied to the first connection.
      const r2 = await runGuest({
        ...common,
        name: `vhost-blk-q${numQueues}-reread`,
        tools: false, // dd and sha256sum are busybox's
        script: SCRIPT,
        env: { ...env, MODE: "reread", EXPECT_SHA: report.patternSha256 },
      });
      assert.equal(r2.exitCode, 0, outputTail(r2.output, 60));
      assertSteps(r2.output, ["device", "size", "queues", "reread", "refs"]);
      const report2 = parseReport(r2.report, r2.output);
      assert.equal(report2.patternSha256, report.patternSha256);
      assert.equal(report2.fsSha256, report.fsSha256, "the files on ext4 changed between guests");
    } finally {
      await sluice.stop();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

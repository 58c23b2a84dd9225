/**
 * Data-path workers as an operator runs them: `sluice serve --cpumask 0x3`
 * (the main reactor and one worker), one vhost-user-blk controller on each
 * and one spread over both, and two `sluice perf --verify` clients at once. Then the hot-upgrade path
 * for the worker's controller: SIGKILL and restart with the same state, and
 * the data written before is read back through the restarted worker.
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { perfTotal, sluice } from "../../src/testing/cli.ts";
import { mallocBdevConfig, vhostBlkConfig } from "../../src/testing/config.ts";
import { startDaemon } from "../../src/testing/daemon.ts";

const dec = new TextDecoder();

async function perf(socket: string, extra: string[]): Promise<string> {
  const run = await sluice([
    "perf",
    "-r",
    `trtype:vhost-user path:${socket}`,
    "-o",
    "4096",
    ...extra,
  ]);
  const out = dec.decode(run.stdout);
  assertEquals(run.code, 0, `${out}\n${dec.decode(run.stderr)}`);
  const m = perfTotal(out);
  assert(m !== null && Number(m[1]) > 0 && m[7] === "0", out);
  return out;
}

async function rpc(sock: string, method: string, ...args: string[]): Promise<unknown> {
  const r = await sluice(["rpc", method, "-s", sock, ...args]);
  assertEquals(r.code, 0, dec.decode(r.stderr));
  return JSON.parse(dec.decode(r.stdout));
}

Deno.test("workers: serve --cpumask 0x3 places controllers on the main reactor and a worker; both serve verified I/O at once; a worker-placed disk survives SIGKILL and restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-workers-e2e-" });
  const main = `${dir}/main.sock`, work = `${dir}/work.sock`, spread = `${dir}/spread.sock`;
  const config = {
    subsystems: [
      {
        subsystem: "bdev",
        config: [
          ...mallocBdevConfig("M0", 32768).config,
          {
            method: "bdev_file_create",
            params: { name: "F1", filename: `${dir}/disk1.img` },
          },
          ...mallocBdevConfig("M2", 32768).config,
        ],
      },
      vhostBlkConfig([
        { ctrlr: "on-main", devName: "M0", socket: main, numQueues: 2, cpumask: "0x1" },
        { ctrlr: "on-worker", devName: "F1", socket: work, numQueues: 2, cpumask: "0x2" },
        { ctrlr: "spread", devName: "M2", socket: spread, numQueues: 2, cpumask: "0x3" },
      ]),
    ],
  };
  await Deno.writeFile(`${dir}/disk1.img`, new Uint8Array(16 << 20));
  let d = await startDaemon(dir, { config, args: ["--cpumask", "0x3"] });
  try {
    assert(d.log.some((l) => l.includes("data-path workers on the others")), d.log.join("\n"));
    const ctrls = await rpc(d.socket, "vhost_get_controllers") as {
      ctrlr: string;
      reactor: number;
      cpumask: string;
      queue_reactors: number[];
    }[];
    assertEquals(ctrls.map((c) => [c.ctrlr, c.reactor, c.cpumask, c.queue_reactors]), [
      ["on-main", 0, "0x1", [0, 0]],
      ["on-worker", 1, "0x2", [1, 1]],
      // Two queues on each reactor so far: the worker first on the tie, then the main one.
      ["spread", 0, "0x3", [1, 0]],
    ]);
    // Both reactors at once, each client verifying every read of what it wrote.
    const [a, b] = await Promise.all([
      perf(main, ["-q", "32", "-w", "randrw", "-M", "50", "-c", "2", "-t", "2", "--verify"]),
      perf(work, ["-q", "32", "-w", "randrw", "-M", "50", "-c", "2", "-t", "2", "--verify"]),
    ]);
    assert(a.includes("2 queue(s)") && b.includes("2 queue(s)"), `${a}\n${b}`);
    // One VM's queues on two reactors: each queue verifies its own half.
    const c = await perf(spread, [
      ...["-q", "32", "-w", "randrw", "-M", "50", "-c", "2", "-t", "1", "--verify"],
    ]);
    assertEquals(
      c.split("\n").filter((l) => /^queue [12]: IOPS=\d+ .* errors=0$/.test(l)).length,
      2,
      c,
    );
    // The worker's reactor did the work and reports it; the file bdev counts its I/O.
    const stats = await rpc(d.socket, "sluice_get_stats") as {
      reactors: { id: number; core: number; stats: Record<string, number> }[];
      bdevs: { name: string; write_ops: number }[];
    };
    assertEquals(stats.reactors.map((r) => [r.id, r.core]), [[0, 0], [1, 1]]);
    assert((stats.reactors[1]?.stats["busyIterations"] ?? 0) > 0, JSON.stringify(stats.reactors));
    assert((stats.bdevs.find((x) => x.name === "F1")?.write_ops ?? 0) > 0);

    // Stamp the whole worker disk with a verified sequential write; then kill -9 and restart:
    // the same config places the controller on the worker again and the data is there.
    await perf(work, ["-q", "16", "-w", "write", "-t", "1"]);
    const before = await Deno.readFile(`${dir}/disk1.img`);
    d.child.kill("SIGKILL");
    await d.child.status;
    d = await startDaemon(dir, { args: ["--cpumask", "0x3"] });
    const again = await rpc(d.socket, "vhost_get_controllers") as { reactor: number }[];
    assertEquals(again.map((c) => c.reactor), [0, 1, 0]);
    await perf(work, ["-q", "32", "-w", "randread", "-t", "1"]);
    await perf(spread, ["-q", "8", "-w", "randwrite", "-c", "2", "-t", "1", "--verify"]);
    assertEquals(await Deno.readFile(`${dir}/disk1.img`), before, "reads changed nothing");

    // A mask naming no reactor of this appliance is refused with the reason.
    const bad = await sluice([
      "rpc",
      "vhost_create_blk_controller",
      "-s",
      d.socket,
      "--ctrlr",
      "x",
      "--dev_name",
      "M0",
      "--socket",
      `${dir}/x.sock`,
      "--cpumask",
      "0x4",
    ]);
    assertEquals(bad.code, 1);
    assert(dec.decode(bad.stderr).includes("names no core with a reactor"));
    assertEquals(await d.stop(), 0);
  } finally {
    try {
      d.child.kill("SIGKILL");
    } catch {
      // already stopped
    }
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * `sluice perf` in vhost-user mode as an operator runs it: `sluice serve`
 * with a RAM bdev behind a vhost-user-blk controller, and `sluice perf -r
 * 'trtype:vhost-user path:...'` as the guest, both subprocesses. Verified
 * write and read workloads end with a clean Total line; a socket nobody
 * serves is a clear error. No figure is asserted beyond "I/O was done":
 * speed belongs to bench/vhost_bench.ts.
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { perfTotal, sluice, SLUICE_MAIN } from "../../src/testing/cli.ts";
import { mallocBdevConfig, vhostBlkConfig } from "../../src/testing/config.ts";
import { type Daemon, startDaemon } from "../../src/testing/daemon.ts";

const dec = new TextDecoder();

/** `sluice serve` with a 32 MiB malloc bdev on a 2-queue vhost-user-blk controller at `socket`. */
async function startBackend(dir: string, socket: string): Promise<Daemon> {
  return await startDaemon(dir, {
    config: {
      subsystems: [
        mallocBdevConfig("Malloc0", 65536),
        vhostBlkConfig([{ ctrlr: "vhost.0", devName: "Malloc0", socket, numQueues: 2 }]),
      ],
    },
  });
}

/** Runs perf; checks exit 0, a Total line with I/O done and no errors; returns stdout. */
async function perfOk(trid: string, extra: string[]): Promise<string> {
  const run = await sluice(["perf", "-r", trid, "-o", "4096", "-t", "1", ...extra]);
  const out = dec.decode(run.stdout);
  const err = dec.decode(run.stderr);
  assertEquals(run.code, 0, `${extra.join(" ")}\n${out}\n${err}`);
  const m = perfTotal(out);
  assert(m !== null, `no Total line at the end:\n${out}`);
  assert(Number(m[1]) > 0, out);
  assertEquals(m[7], "0", out);
  return out;
}

Deno.test("vhost perf: verified writes, reads and a mix over vhost-user against sluice serve; a bad socket is a clear error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vhost-perf-" });
  const socket = `${dir}/vhost.0.sock`;
  const backend = await startBackend(dir, socket);
  const trid = `trtype:vhost-user path:${socket}`;
  try {
    // Verified sequential writes (each block stamped), then a verified mix: every read of a
    // block the run wrote is checked, every byte.
    const w = await perfOk(trid, ["-q", "32", "-w", "write", "--verify"]);
    assert(w.includes("vhost-user-blk at"), w);
    assert(w.includes("65536 x 512 B, 2 queue(s)"), w);
    // A verified mix on both queues, deep enough for indirect descriptors (3 x 512 > 1024).
    const mix = await perfOk(trid, [
      "-q",
      "512",
      "-w",
      "randrw",
      "-M",
      "50",
      "-c",
      "2",
      "--verify",
    ]);
    assert(mix.includes("(indirect)"), mix);
    assertEquals(
      mix.split("\n").filter((l) => /^queue [12]: IOPS=\d+ .* errors=0$/.test(l)).length,
      2,
    );
    await perfOk(trid, ["-q", "1", "-w", "randwrite", "--verify"]);
    await perfOk(trid, ["-q", "128", "-w", "randread"]);

    // Nothing listens there: exit 1 and a message naming the socket and why.
    const missing = `${dir}/none.sock`;
    const bad = await sluice(
      ["perf", "-r", `trtype:vhost-user path:${missing}`, "-q", "1", "-o", "4096", "-w", "read"]
        .concat(["-t", "1"]),
    );
    assertEquals(bad.code, 1);
    const err = dec.decode(bad.stderr);
    assert(err.includes(`cannot connect to the vhost-user socket ${missing}`), err);
    assert(err.includes("ENOENT"), err);
    // More queues than the controller has: refused before any I/O.
    const tooMany = await sluice(
      ["perf", "-r", trid, "-q", "1", "-o", "4096", "-w", "read", "-t", "1", "-c", "3"],
    );
    assertEquals(tooMany.code, 1);
    assert(dec.decode(tooMany.stderr).includes("more queues than the device has (2)"));
  } finally {
    assertEquals(await backend.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vhost perf: the back-end going away mid-run ends the run at once with errors and says why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vhost-perf-" });
  const socket = `${dir}/vhost.0.sock`;
  const backend = await startBackend(dir, socket);
  let stopped = false;
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SLUICE_MAIN, "perf", "-r", `trtype:vhost-user path:${socket}`, "-q", "16"]
        .concat(["-o", "4096", "-w", "randrw", "-t", "120"]),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = child.output();
    // Let I/O start, then take the back-end away.
    await new Promise((r) => setTimeout(r, 1500));
    assertEquals(await backend.stop(), 0);
    stopped = true;
    const run = await out;
    const stdout = dec.decode(run.stdout);
    const stderr = dec.decode(run.stderr);
    assertEquals(run.code, 1, `${stdout}\n${stderr}`);
    assert(stderr.includes("the back-end closed the connection"), stderr);
    const m = perfTotal(stdout);
    assert(m !== null, stdout);
    assert(Number(m[1]) > 0, stdout);
  } finally {
    if (!stopped) await backend.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * `sluice perf` as an operator runs it: against `sluice serve` exporting a
 * RAM namespace over NVMe/TCP, both as subprocesses; a verified mixed
 * workload on two queues ends with a clean Total line, and bad input exits
 * 2 with a message that says what is wrong. No figure is asserted beyond
 * "some I/O was done": speed belongs to bench/nvmf_bench.ts.
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { perfTotal, sluice } from "../../src/testing/cli.ts";
import { mallocBdevConfig, nvmfExportConfig } from "../../src/testing/config.ts";
import { type Daemon, startDaemon } from "../../src/testing/daemon.ts";
import { freePort } from "../../src/testing/net.ts";

const NQN = "nqn.2026-11.dev.sluice:perftest";
const dec = new TextDecoder();

/** `sluice serve` with a config exporting a 64 MiB malloc bdev as namespace 1 of NQN on `port`. */
async function startTarget(dir: string, port: number): Promise<Daemon> {
  const config = {
    subsystems: [
      mallocBdevConfig("Malloc0", 131072),
      nvmfExportConfig({ nqn: NQN, serialNumber: "SLUICEPERF1", bdevName: "Malloc0", port }),
    ],
  };
  return await startDaemon(dir, { config });
}

Deno.test("perf: verified randrw on two NVMe/TCP queues against sluice serve; bad input exits 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-perf-" });
  const port = freePort();
  const target = await startTarget(dir, port);
  const trid = `trtype:TCP traddr:127.0.0.1 trsvcid:${port} subnqn:${NQN}`;
  try {
    const run = await sluice(
      ["perf", "-r", trid, "-q", "16", "-o", "4096", "-w", "randrw", "-M", "50", "-t", "2"]
        .concat(["--verify", "-c", "2"]),
    );
    const out = dec.decode(run.stdout);
    const err = dec.decode(run.stderr);
    assertEquals(run.code, 0, `${out}\n${err}`);
    const m = perfTotal(out);
    assert(m !== null, `no Total line at the end:\n${out}`);
    assertEquals(m[7], "0", out);
    assert(Number(m[1]) > 0, out);
    assertEquals(
      out.trim().split("\n").filter((l) => /^queue [12]: IOPS=\d+ .* errors=0$/.test(l)).length,
      2,
      out,
    );

    // A transport ID without a port: a usage error naming what is missing.
    const badTrid = await sluice(
      ["perf", "-r", `trtype:TCP traddr:127.0.0.1 subnqn:${NQN}`, "-q", "1", "-o", "4096"]
        .concat(["-w", "read", "-t", "1"]),
    );
    assertEquals(badTrid.code, 2);
    assert(dec.decode(badTrid.stderr).includes("-r: trtype:TCP needs trsvcid"));
    const garbage = await sluice(["perf", "-r", "nonsense", "-q", "1", "-o", "4096"]);
    assertEquals(garbage.code, 2);
    assert(dec.decode(garbage.stderr).includes('-r: "nonsense" is not key:value'));
    const vhost = await sluice(
      ["perf", "-r", "trtype:vhost-user path:/tmp/none.sock", "-q", "1", "-o", "4096"]
        .concat(["-w", "read", "-t", "1"]),
    );
    // vhost-user mode runs (test/integration/vhost_perf_test.ts); no socket there: exit 1.
    assertEquals(vhost.code, 1);
    assert(dec.decode(vhost.stderr).includes("cannot connect to the vhost-user socket"));

    // A subsystem the target does not export: an operating error, exit 1, said plainly.
    const noSub = await sluice(
      ["perf", "-r", `trtype:TCP traddr:127.0.0.1 trsvcid:${port} subnqn:${NQN}x`, "-q", "1"]
        .concat(["-o", "4096", "-w", "read", "-t", "1"]),
    );
    assertEquals(noSub.code, 1);
    assert(dec.decode(noSub.stderr).includes("refused the admin queue's Connect"));

    const help = await sluice(["perf", "--help"]);
    assertEquals(help.code, 0);
    assert(dec.decode(help.stdout).includes("Usage: sluice perf -r TRID"));
  } finally {
    assertEquals(await target.stop(), 0);
    await Deno.remove(dir, { recursive: true });
  }
});

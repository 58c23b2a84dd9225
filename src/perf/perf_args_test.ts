import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { parsePerfArgs, PerfUsageError } from "./perf_args.ts";

const R = "trtype:TCP traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-11.dev.sluice:default";
const base = ["-r", R, "-q", "16", "-o", "4096", "-w", "randrw", "-t", "2"];

Deno.test("perf args: spdk_nvme_perf's flags, getopt forms, defaults", () => {
  const o = parsePerfArgs([...base, "-M", "70", "--verify", "-c", "2"]);
  assert(o !== null);
  assertEquals(o.workload, {
    pattern: "randrw",
    readPercent: 70,
    ioSize: 4096,
    depth: 16,
    seconds: 2,
    verify: true,
  });
  assertEquals([o.queues, o.nsid, o.trid.trsvcid], [2, 1, "4420"]);
  const p = parsePerfArgs(["-r", `${R} ns:3 hdgst:1`, "-q128", "-o4k", "-wrandread", "-t0.5"]);
  assert(p !== null);
  assertEquals([p.workload.depth, p.workload.ioSize, p.workload.seconds], [128, 4096, 0.5]);
  assertEquals([p.nsid, p.queues, p.workload.readPercent, p.trid.hdgst], [3, 1, 0, true]);
  const m = parsePerfArgs([...base]);
  assertEquals(m?.workload.readPercent, 50);
  assertEquals(parsePerfArgs([...base, "--help"]), null);
  assertEquals(parsePerfArgs(["-h"]), null);
});

Deno.test("perf args: every bad flag gets a message that names it", () => {
  const bad: [string[], string][] = [
    [base.filter((_, i) => i > 1), "-r (a transport ID) is required"],
    [["-r", "trtype:TCP traddr:1.2.3.4", ...base.slice(2)], "needs trsvcid"],
    [["-r", "nonsense", ...base.slice(2)], '"nonsense" is not key:value'],
    [
      [...base.slice(0, 2), "-o", "4096", "-w", "read", "-t", "1"],
      "-q (a queue depth) is required",
    ],
    [[...base, "-q", "2"], "-q given twice"],
    [["-r", R, "-q", "0", "-o", "4096", "-w", "read", "-t", "1"], "-q must be from 1 to 1024"],
    [["-r", R, "-q", "1", "-o", "4x", "-w", "read", "-t", "1"], "-o must be a size in bytes"],
    [["-r", R, "-q", "1", "-o", "4096", "-w", "trim", "-t", "1"], "-w must be one of"],
    [["-r", R, "-q", "1", "-o", "4096", "-w", "read", "-t", "0"], "-t must be a number"],
    [["-r", R, "-q", "1", "-o", "4096", "-w", "read", "-t", "1", "-M", "50"], "-M applies to"],
    [[...base, "-M", "101"], "-M must be from 0 to 100"],
    [[...base, "-c", "0x3"], "core mask does not apply"],
    [[...base, "-c", "65"], "-c must be from 1 to 64"],
    [[...base, "-x", "1"], "unknown option -x"],
    [[...base, "--bogus"], "unknown option --bogus"],
    [[...base, "stray"], "unexpected argument 'stray'"],
    [[...base, "-n"], "-n needs a namespace ID"],
    [[...base, "-n", "-q"], "-n needs a namespace ID"],
    [["-r", `${R} ns:2`, ...base.slice(2), "-n", "3"], "disagrees with ns:2"],
    [["-r", R, "-q", "1024", "-o", "1m", "-w", "read", "-t", "1", "-c", "2"], "MiB of buffers"],
  ];
  for (const [args, want] of bad) assertThrows(() => parsePerfArgs(args), PerfUsageError, want);
});

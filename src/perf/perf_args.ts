/**
 * The command line of `sluice perf`: spdk_nvme_perf's flags (`-r -q -o -w
 * -M -t`, `--verify`), with `-c` counting I/O queues (spdk_nvme_perf's `-P`;
 * its `-c` is a core mask, which means nothing to a one-thread tool, so a
 * mask is refused rather than misread) and `-n` for the namespace.
 * @module
 */
import type { PerfWorkload } from "./perf.ts";
import { parseTransportId, type TransportId } from "./transport_id.ts";

/** A command-line mistake: the CLI prints it with a hint and exits with status 2. */
export class PerfUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PerfUsageError";
  }
}

/** Most I/Os in flight per queue (the host keeps a slot number in 10 bits of the CID). */
export const PERF_MAX_DEPTH = 1024;
/** Most I/O queues (connections) one run opens. */
export const PERF_MAX_QUEUES = 64;
/** Largest -o: the host's default largest transfer. */
export const PERF_MAX_IO_BYTES = 1 << 20;
/** Most bytes of I/O buffers one run reserves (-c x -q x -o, each rounded up to 4 KiB). */
export const PERF_MAX_BUFFER_BYTES = 1 << 30;
/** Longest -t: a day. */
export const PERF_MAX_SECONDS = 86_400;

/** What `sluice perf` was asked to do. */
export interface PerfOptions {
  trid: TransportId;
  workload: PerfWorkload;
  /** -c: I/O queues, one TCP connection each, each running `workload.depth` I/Os. */
  queues: number;
  /** -n (or `ns:` in -r): the namespace. */
  nsid: number;
}

/** The help text of `sluice perf`. */
export const PERF_USAGE =
  `Usage: sluice perf -r TRID -q DEPTH -o BYTES -w PATTERN -t SECONDS [options]

Drives an NVMe-oF target (or a vhost-user-blk back-end) as SPDK's spdk_nvme_perf
does (same flags, same figures):
one line per I/O queue, then the line
  Total: IOPS=<n> MiB/s=<n> avg_us=<n> p50_us=<n> p99_us=<n> p999_us=<n> errors=<n>

Options:
  -r TRID       Transport ID, e.g.
                'trtype:TCP traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-11.dev.sluice:default'
                with optional hostnqn:NQN, hdgst:1 (header digest), ddgst:1 (data digest).
                or 'trtype:vhost-user path:SOCKET': sluice plays the guest of a
                vhost-user-blk back-end (shared memory, virtqueues, virtio-blk requests).
  -q DEPTH      I/Os in flight per queue, 1-${PERF_MAX_DEPTH}. When the target's queues are
                smaller, the rest wait in the host, as spdk_nvme_perf's do.
  -o BYTES      Bytes per I/O, a multiple of the block size (e.g. 4096)
  -w PATTERN    read, write, randread, randwrite, rw or randrw
  -M PERCENT    Share of reads for rw and randrw, 0-100 (default 50)
  -t SECONDS    How long to run (I/Os in flight then drain)
  -c QUEUES     I/O queues, one TCP connection (or one virtqueue) each, 1-${PERF_MAX_QUEUES}
                (default 1); each runs DEPTH I/Os (spdk_nvme_perf's -P; its -c core mask does
                not apply: one thread)
  -n NSID       Namespace ID (default 1, or ns: in -r); NVMe/TCP only
  --verify      Write a pattern and check every read of what this run wrote, every byte;
                each queue then works in its own slice of the namespace
  -h, --help    Show this help

Exit status: 0 when every I/O succeeded, 1 when any failed or read back wrong (or the
target could not be reached), 2 for a usage error.

Example:
  sluice perf -r 'trtype:TCP traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-11.dev.sluice:default' \\
    -q 128 -o 4096 -w randread -t 10`;

const PATTERNS: readonly PerfWorkload["pattern"][] = [
  "read",
  "write",
  "randread",
  "randwrite",
  "rw",
  "randrw",
];

/** Flags that take a value, and what their value is called in messages. */
const VALUE_FLAGS: Record<string, string> = {
  r: "a transport ID",
  q: "a queue depth",
  o: "a size in bytes",
  w: "an I/O pattern",
  M: "a read percentage",
  t: "a number of seconds",
  c: "a number of I/O queues",
  n: "a namespace ID",
};

/**
 * Parses the arguments after `perf`; `null` means help was asked for.
 * Throws {@link PerfUsageError} naming the bad flag.
 */
export function parsePerfArgs(args: readonly string[]): PerfOptions | null {
  const values = new Map<string, string>();
  let verify = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "-h" || a === "--help") return null;
    if (a === "--verify") {
      verify = true;
      continue;
    }
    if (!a.startsWith("-") || a.length < 2 || a.startsWith("--")) {
      throw new PerfUsageError(
        a.startsWith("--") ? `unknown option ${a}` : `unexpected argument '${a}'`,
      );
    }
    const flag = a.slice(1, 2);
    const what = VALUE_FLAGS[flag];
    if (what === undefined) throw new PerfUsageError(`unknown option -${flag}`);
    // getopt style: "-q16" and "-q 16" both work.
    let v: string | undefined = a.length > 2 ? a.slice(2) : args[++i];
    if (v === undefined || (a.length === 2 && /^-[a-zA-Z-]/.test(v))) {
      throw new PerfUsageError(`-${flag} needs ${what}`);
    }
    v = v.trim();
    if (values.has(flag)) throw new PerfUsageError(`-${flag} given twice`);
    values.set(flag, v);
  }

  const need = (flag: string): string => {
    const v = values.get(flag);
    if (v === undefined) throw new PerfUsageError(`-${flag} (${VALUE_FLAGS[flag]}) is required`);
    return v;
  };
  const int = (flag: string, min: number, max: number, dflt?: number): number => {
    const v = dflt === undefined ? need(flag) : values.get(flag);
    if (v === undefined) return dflt as number;
    if (!/^\d+$/.test(v)) {
      const hint = flag === "c"
        ? " (-c counts I/O queues here; spdk_nvme_perf's core mask does not apply)"
        : "";
      throw new PerfUsageError(`-${flag} must be a whole number, got '${v}'${hint}`);
    }
    const n = Number(v);
    if (n < min || n > max) {
      throw new PerfUsageError(`-${flag} must be from ${min} to ${max}, got ${n}`);
    }
    return n;
  };

  let trid: TransportId;
  try {
    trid = parseTransportId(need("r"));
  } catch (e) {
    if (e instanceof RangeError) throw new PerfUsageError(e.message);
    throw e;
  }
  const depth = int("q", 1, PERF_MAX_DEPTH);
  const ioSize = parseBytes(need("o"));
  const pattern = need("w") as PerfWorkload["pattern"];
  if (!PATTERNS.includes(pattern)) {
    throw new PerfUsageError(`-w must be one of ${PATTERNS.join(", ")}, got '${pattern}'`);
  }
  const mixed = pattern === "rw" || pattern === "randrw";
  if (!mixed && values.has("M")) {
    throw new PerfUsageError(`-M applies to rw and randrw only, not to ${pattern}`);
  }
  const readPercent = int("M", 0, 100, 50);
  const secondsText = need("t");
  const seconds = Number(secondsText);
  if (!/^\d+(\.\d+)?$/.test(secondsText) || !(seconds > 0) || seconds > PERF_MAX_SECONDS) {
    throw new PerfUsageError(
      `-t must be a number of seconds above 0, at most ${PERF_MAX_SECONDS}, got '${secondsText}'`,
    );
  }
  const queues = int("c", 1, PERF_MAX_QUEUES, 1);
  const nsFromTrid = trid.ns;
  const nsid = int("n", 1, 0xfffffffe, nsFromTrid ?? 1);
  if (nsFromTrid !== undefined && values.has("n") && nsid !== nsFromTrid) {
    throw new PerfUsageError(`-n ${nsid} disagrees with ns:${nsFromTrid} in -r`);
  }
  const bufferBytes = queues * depth * Math.ceil(ioSize / 4096) * 4096;
  if (bufferBytes > PERF_MAX_BUFFER_BYTES) {
    throw new PerfUsageError(
      `-c ${queues} x -q ${depth} x -o ${ioSize} needs ${bufferBytes / 2 ** 20} MiB of buffers; ` +
        `at most ${PERF_MAX_BUFFER_BYTES / 2 ** 20} MiB`,
    );
  }
  return {
    trid,
    workload: { pattern, readPercent: mixed ? readPercent : 0, ioSize, depth, seconds, verify },
    queues,
    nsid,
  };
}

/** -o: bytes, with an optional k/K (KiB) or m/M (MiB) suffix as spdk_nvme_perf takes none but people type them. */
function parseBytes(v: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(v);
  if (m === null) throw new PerfUsageError(`-o must be a size in bytes, e.g. 4096, got '${v}'`);
  const unit = (m[2] ?? "").toLowerCase();
  const n = Number(m[1]) * (unit === "k" ? 1024 : unit === "m" ? 1 << 20 : 1);
  if (n < 1 || n > PERF_MAX_IO_BYTES) {
    throw new PerfUsageError(`-o must be from 1 to ${PERF_MAX_IO_BYTES} bytes, got ${n}`);
  }
  return n;
}

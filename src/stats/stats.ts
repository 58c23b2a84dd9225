/**
 * Appliance statistics for operators: one snapshot of the counters the
 * engine keeps anyway (bdev channels, the reactor, the NVMe/TCP transport),
 * served as the `sluice_get_stats` RPC and rendered in the Prometheus text
 * exposition format for `GET /metrics`. Reading them is control-path work:
 * the data path only increments plain number fields and allocates nothing.
 * @module
 */
import { BdevIoStats, LATENCY_BUCKETS, LATENCY_SAMPLE_EVERY } from "../bdev/bdev.ts";
import { nvmfTcpTransport } from "../nvmf_tcp/nvmf_rpc.ts";
import type { AppContext } from "../rpc/context.ts";
import type { RpcTable } from "../rpc/rpc.ts";
import process from "node:process";

/** Counters of one bdev, totals since it was registered. */
export interface BdevStatsView {
  name: string;
  module: string;
  read_ops: number;
  read_bytes: number;
  write_ops: number;
  write_bytes: number;
  unmap_ops: number;
  flush_ops: number;
  write_zeroes_ops: number;
  errors: number;
  /** I/Os that waited because the channel's pool was full. */
  queued: number;
  /** Latency of sampled I/Os (one in `sample_every`), submit to the module's completion. */
  latency: LatencyView;
}

/** A latency histogram and the quantiles read from it. */
export interface LatencyView {
  sample_every: number;
  samples: number;
  sum_ms: number;
  /** Per bucket: its upper bound in microseconds (null: no bound) and its own count. */
  buckets: [number | null, number][];
  /** Upper bound of the bucket holding the median / 99th percentile (us); null without samples. */
  p50_us: number | null;
  p99_us: number | null;
}

/** The upper bound (us) of latency bucket `i`; null for the last (unbounded) one. */
function bucketBoundUs(i: number): number | null {
  return i < LATENCY_BUCKETS - 1 ? 2 ** i : null;
}

function quantileUs(buckets: Float64Array, total: number, q: number): number | null {
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i < LATENCY_BUCKETS; i++) {
    seen += buckets[i] as number;
    if (seen >= q * total) return bucketBoundUs(i) ?? 2 ** (LATENCY_BUCKETS - 2);
  }
  return 2 ** (LATENCY_BUCKETS - 2);
}

function latencyView(s: BdevIoStats): LatencyView {
  return {
    sample_every: LATENCY_SAMPLE_EVERY,
    samples: s.latencySamples,
    sum_ms: s.latencySumMs,
    buckets: [...s.latencyBuckets].map((n, i): [number | null, number] => [bucketBoundUs(i), n]),
    p50_us: quantileUs(s.latencyBuckets, s.latencySamples, 0.5),
    p99_us: quantileUs(s.latencyBuckets, s.latencySamples, 0.99),
  };
}

/** The reply of `sluice_get_stats`. */
export interface StatsSnapshot {
  version: string;
  uptime_s: number;
  /** Milliseconds on a monotonic clock when taken (rates are differences over this). */
  taken_ms: number;
  bdevs: BdevStatsView[];
  /** The data-path reactors: 0 the main thread's, then each worker's (about a second old). */
  reactors: { id: number; core: number; running_ms: number; stats: Record<string, number> }[];
  /** The whole process: CPU time used (user + system) and resident memory. */
  process: { cpu_user_s: number; cpu_system_s: number; rss_bytes: number; start_time_s: number };
  nvmf_tcp: {
    connections_opened: number;
    connections_closed: number;
    connections_open: number;
    protocol_errors: number;
    digest_errors: number;
  } | null;
  vhost_controllers: number;
  /** NVMe/TCP hosts connected now: one entry per controller. */
  nvmf_hosts: { nqn: string; hostnqn: string; cntlid: number; io_queues: number }[];
}

/** Takes a snapshot of every counter. */
export async function collectStats(
  table: RpcTable<AppContext>,
  ctx: AppContext,
): Promise<StatsSnapshot> {
  const bdevs = ctx.bdevs.list().map((b): BdevStatsView => {
    const s = new BdevIoStats();
    b.addStatsTo(s);
    return {
      name: b.name,
      module: b.module,
      read_ops: s.readOps,
      read_bytes: s.readBytes,
      write_ops: s.writeOps,
      write_bytes: s.writeBytes,
      unmap_ops: s.unmapOps,
      flush_ops: s.flushOps,
      write_zeroes_ops: s.writeZeroesOps,
      errors: s.errors,
      queued: s.queued,
      latency: latencyView(s),
    };
  });
  const tr = nvmfTcpTransport(ctx);
  const cpu = process.cpuUsage();
  // The vhost module keeps its controllers private: ask it through its own method.
  const vhost = await table.call("vhost_get_controllers", undefined, ctx) as unknown[];
  const hosts: StatsSnapshot["nvmf_hosts"] = [];
  if (tr !== undefined) {
    // Through the nvmf methods, which own the target (no target is made when there is none).
    const subs = await table.call("nvmf_get_subsystems", undefined, ctx) as {
      nqn: string;
      subtype: string;
    }[];
    for (const sub of subs) {
      if (sub.subtype !== "NVMe") continue;
      const ctrlrs = await table.call("nvmf_subsystem_get_controllers", { nqn: sub.nqn }, ctx) as {
        cntlid: number;
        hostnqn: string;
        num_io_qpairs: number;
      }[];
      for (const c of ctrlrs) {
        hosts.push({
          nqn: sub.nqn,
          hostnqn: c.hostnqn,
          cntlid: c.cntlid,
          io_queues: c.num_io_qpairs,
        });
      }
    }
  }
  return {
    version: ctx.version,
    uptime_s: Math.round((Date.now() - ctx.startedAtMs) / 1000),
    taken_ms: Math.round(performance.now()),
    bdevs,
    reactors: [
      {
        id: 0,
        core: ctx.reactorCores[0] ?? 0,
        running_ms: ctx.reactor.runningMs,
        stats: { ...ctx.reactor.stats },
      },
      ...ctx.workers.map((w) => ({
        id: w.index,
        core: w.core,
        running_ms: w.runningMs,
        stats: { ...w.reactorStats },
      })),
    ],
    process: {
      cpu_user_s: cpu.user / 1e6,
      cpu_system_s: cpu.system / 1e6,
      rss_bytes: Deno.memoryUsage().rss,
      start_time_s: ctx.startedAtMs / 1000,
    },
    nvmf_tcp: tr === undefined ? null : {
      connections_opened: tr.stats.connections,
      connections_closed: tr.stats.connectionsClosed,
      connections_open: tr.stats.connections - tr.stats.connectionsClosed,
      protocol_errors: tr.stats.protocolErrors,
      digest_errors: tr.stats.digestErrors,
    },
    vhost_controllers: vhost.length,
    nvmf_hosts: hosts,
  };
}

/** Registers `sluice_get_stats` (the web admin, `/metrics` and `sluice top` read it). */
export function registerStatsRpcs(table: RpcTable<AppContext>): void {
  table.register("sluice_get_stats", {
    help: "Counters of every bdev, the data-path reactor and the NVMe/TCP transport",
  }, (p, ctx) => {
    p.done();
    return collectStats(table, ctx);
  });
}

/** Escapes a label value: backslash, double quote and line feed (exposition format). */
function labelValue(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** Reactor counters exported, with the metric's help text. Keys of ReactorStats. */
const REACTOR_COUNTERS: [string, string][] = [
  ["busyIterations", "Reactor loop iterations in which a poller did work"],
  ["idleIterations", "Reactor loop iterations in which no poller did work"],
  ["idleParks", "Times the reactor parked in the kernel"],
  ["cqesReaped", "io_uring completions reaped"],
  ["sqesSubmitted", "io_uring submissions handed to the kernel"],
  ["wakeEvents", "Wake-ups of a parked reactor"],
];

function snake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/**
 * Renders a snapshot in the Prometheus text exposition format (version
 * 0.0.4): `# HELP` and `# TYPE` once per family, then its samples; counters
 * end in `_total`.
 */
export function formatPrometheus(s: StatsSnapshot): string {
  const out: string[] = [];
  const family = (
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: [Record<string, string>, number][],
  ) => {
    out.push(`# HELP ${name} ${help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n")}`);
    out.push(`# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) {
      const l = Object.entries(labels).map(([k, x]) => `${k}="${labelValue(x)}"`).join(",");
      out.push(`${name}${l === "" ? "" : `{${l}}`} ${Number.isFinite(v) ? String(v) : "NaN"}`);
    }
  };
  family("sluice_up", "gauge", "1 while the appliance serves", [[{ version: s.version }, 1]]);
  family("sluice_uptime_seconds", "gauge", "Seconds since the appliance started", [[
    {},
    s.uptime_s,
  ]]);
  const per = (f: (b: BdevStatsView) => number) =>
    s.bdevs.map((
      b,
    ): [Record<string, string>, number] => [{ bdev: b.name, module: b.module }, f(b)]);
  const perType = (ops: (b: BdevStatsView) => [string, number][]) =>
    s.bdevs.flatMap((b) =>
      ops(b).map(([type, v]): [Record<string, string>, number] => [
        { bdev: b.name, module: b.module, type },
        v,
      ])
    );
  family(
    "sluice_bdev_io_ops_total",
    "counter",
    "Completed I/Os per bdev and type",
    perType((b) => [
      ["read", b.read_ops],
      ["write", b.write_ops],
      ["unmap", b.unmap_ops],
      ["flush", b.flush_ops],
      ["write_zeroes", b.write_zeroes_ops],
    ]),
  );
  family(
    "sluice_bdev_io_bytes_total",
    "counter",
    "Bytes read and written per bdev",
    perType((b) => [["read", b.read_bytes], ["write", b.write_bytes]]),
  );
  family(
    "sluice_bdev_io_errors_total",
    "counter",
    "I/Os that ended in an error",
    per((b) => b.errors),
  );
  // A histogram family: cumulative _bucket{le}, then _sum and _count, per bdev.
  out.push(
    "# HELP sluice_bdev_io_latency_seconds Latency of sampled I/Os (one in " +
      `${LATENCY_SAMPLE_EVERY}), submit to completion by the module`,
  );
  out.push("# TYPE sluice_bdev_io_latency_seconds histogram");
  for (const b of s.bdevs) {
    const l = `bdev="${labelValue(b.name)}",module="${labelValue(b.module)}"`;
    let cum = 0;
    for (const [boundUs, n] of b.latency.buckets) {
      cum += n;
      const le = boundUs === null ? "+Inf" : String(boundUs / 1e6);
      out.push(`sluice_bdev_io_latency_seconds_bucket{${l},le="${le}"} ${cum}`);
    }
    out.push(`sluice_bdev_io_latency_seconds_sum{${l}} ${b.latency.sum_ms / 1000}`);
    out.push(`sluice_bdev_io_latency_seconds_count{${l}} ${b.latency.samples}`);
  }
  family(
    "sluice_bdev_io_queued_total",
    "counter",
    "I/Os that waited for a free slot in the channel's pool",
    per((b) => b.queued),
  );
  for (const [key, help] of REACTOR_COUNTERS) {
    family(
      `sluice_reactor_${snake(key)}_total`,
      "counter",
      help,
      s.reactors.map((r) => [{ reactor: String(r.id) }, r.stats[key] ?? 0]),
    );
  }
  family(
    "sluice_reactor_parked_seconds_total",
    "counter",
    "Time the reactor spent parked in the kernel (idle, no CPU used)",
    s.reactors.map((r) => [{ reactor: String(r.id) }, (r.stats["parkedMs"] ?? 0) / 1000]),
  );
  family(
    "sluice_reactor_running_seconds_total",
    "counter",
    "Time the reactor's loop has been running, parked time included",
    s.reactors.map((r) => [{ reactor: String(r.id) }, r.running_ms / 1000]),
  );
  // The standard process metrics (names of the Prometheus client libraries).
  family("process_cpu_seconds_total", "counter", "User and system CPU time used", [[
    {},
    s.process.cpu_user_s + s.process.cpu_system_s,
  ]]);
  family("process_resident_memory_bytes", "gauge", "Resident memory size", [[
    {},
    s.process.rss_bytes,
  ]]);
  family("process_start_time_seconds", "gauge", "Start time of the process since the epoch", [[
    {},
    s.process.start_time_s,
  ]]);
  const n = s.nvmf_tcp;
  family("sluice_nvmf_tcp_connections", "gauge", "Open NVMe/TCP connections", [[
    {},
    n?.connections_open ?? 0,
  ]]);
  family("sluice_nvmf_tcp_connections_opened_total", "counter", "NVMe/TCP connections accepted", [[
    {},
    n?.connections_opened ?? 0,
  ]]);
  family(
    "sluice_nvmf_tcp_protocol_errors_total",
    "counter",
    "NVMe/TCP connections ended by a protocol or digest error",
    [[{ kind: "protocol" }, n?.protocol_errors ?? 0], [{ kind: "digest" }, n?.digest_errors ?? 0]],
  );
  family(
    "sluice_nvmf_host_io_queues",
    "gauge",
    "I/O queues of each connected NVMe/TCP host's controller",
    s.nvmf_hosts.map((h) => [
      { nqn: h.nqn, hostnqn: h.hostnqn, cntlid: String(h.cntlid) },
      h.io_queues,
    ]),
  );
  family("sluice_vhost_controllers", "gauge", "vhost-user-blk controllers served", [[
    {},
    s.vhost_controllers,
  ]]);
  return out.join("\n") + "\n";
}

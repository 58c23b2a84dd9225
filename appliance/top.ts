/**
 * `sluice top`: a terminal view of a running appliance, like spdk_top, fed
 * by `sluice_get_stats` over the RPC socket (the same snapshot the web
 * dashboard and /metrics use). Rates are differences between two snapshots.
 * @module
 */
import { rpcCall, RpcClientError } from "../src/rpc/server.ts";
import type { LatencyView, StatsSnapshot } from "../src/stats/stats.ts";

export const TOP_USAGE = `Usage: sluice top [options]

Shows per-volume IOPS and throughput, the data-path reactor's busy share
and the NVMe/TCP connections of a running appliance, refreshed every
interval. Quit with Ctrl-C.

Options:
  -s, --rpc-socket P  Socket of the appliance (default ./var/sluice.sock)
  -d, --delay S       Seconds between refreshes (default 1; 0.1 to 60)
  -n, --iterations N  Stop after N refreshes (default: run until Ctrl-C)
  -h, --help          Show this help

The screen is cleared between refreshes only when stdout is a terminal;
otherwise each refresh is printed after the previous one.`;

const MIB = 1024 * 1024;

/**
 * p50 and p99 of the I/Os sampled since `prev` (all of them without one), as
 * the upper bounds of their histogram buckets; "-" without samples.
 */
function quantiles(cur: LatencyView, prev: LatencyView | undefined): [string, string] {
  const d = cur.buckets.map(([, n], i) => n - (prev?.buckets[i]?.[1] ?? 0));
  const total = d.reduce((a, x) => a + x, 0);
  const q = (f: number): string => {
    if (total === 0) return "-";
    let seen = 0;
    for (let i = 0; i < d.length; i++) {
      seen += d[i] as number;
      if (seen >= f * total) return String(cur.buckets[i]?.[0] ?? "slow");
    }
    return "-";
  };
  return [q(0.5), q(0.99)];
}

/** One screen: `cur` against `prev` (rates), or totals when there is no `prev`. */
export function renderTop(cur: StatsSnapshot, prev: StatsSnapshot | null): string {
  const dt = prev === null ? 0 : (cur.taken_ms - prev.taken_ms) / 1000;
  const lines: string[] = [];
  // Busy: the share of the interval each reactor was not parked in the kernel (it used a core).
  const busy = cur.reactors.map((r1) => {
    const r0 = prev?.reactors.find((r) => r.id === r1.id);
    const ran = r1.running_ms - (r0?.running_ms ?? 0);
    const parked = (r1.stats["parkedMs"] ?? 0) - (r0?.stats["parkedMs"] ?? 0);
    return `${ran > 0 ? Math.max(0, 100 * (1 - parked / ran)).toFixed(1) : "0.0"}%`;
  });
  lines.push(
    `sluice ${cur.version}  up ${cur.uptime_s} s  reactor${busy.length > 1 ? "s" : ""} busy ${
      busy.join(" ")
    }  ` +
      `NVMe/TCP connections ${
        cur.nvmf_tcp?.connections_open ?? 0
      }  vhost controllers ${cur.vhost_controllers}`,
  );
  lines.push(
    prev === null
      ? "(totals since start; rates from the next refresh)"
      : `(rates over the last ${dt.toFixed(1)} s)`,
  );
  lines.push("");
  const head = [
    "VOLUME",
    "MODULE",
    "READ IOPS",
    "WRITE IOPS",
    "READ MiB/s",
    "WRITE MiB/s",
    "P50 <us",
    "P99 <us",
    "ERRORS",
  ];
  const rows: string[][] = [head];
  for (const b of cur.bdevs) {
    const p = prev?.bdevs.find((x) => x.name === b.name);
    const rate = (v: number, pv: number | undefined) =>
      prev === null ? v : p === undefined || dt <= 0 ? 0 : (v - (pv ?? 0)) / dt;
    rows.push([
      b.name,
      b.module,
      Math.round(rate(b.read_ops, p?.read_ops)).toString(),
      Math.round(rate(b.write_ops, p?.write_ops)).toString(),
      (rate(b.read_bytes, p?.read_bytes) / MIB).toFixed(1),
      (rate(b.write_bytes, p?.write_bytes) / MIB).toFixed(1),
      ...quantiles(b.latency, prev === null ? undefined : p?.latency),
      String(b.errors),
    ]);
  }
  const widths = head.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const r of rows) {
    lines.push(
      r.map((c, i) => (i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  "),
    );
  }
  return lines.join("\n");
}

/** Runs `sluice top <args>`; returns the exit status. */
export async function top(args: readonly string[]): Promise<number> {
  let socket = "./var/sluice.sock";
  let delayS = 1;
  let iterations = Infinity;
  try {
    for (let i = 0; i < args.length; i++) {
      const a = args[i] as string;
      const val = () => {
        const v = args[++i];
        if (v === undefined) throw new TopUsageError(`${a} needs a value`);
        return v;
      };
      if (a === "-h" || a === "--help") {
        console.log(TOP_USAGE);
        return 0;
      } else if (a === "-s" || a === "--rpc-socket") socket = val();
      else if (a === "-d" || a === "--delay") {
        delayS = Number(val());
        if (!(delayS >= 0.1 && delayS <= 60)) {
          console.error("sluice top: --delay must be from 0.1 to 60 seconds");
          return 2;
        }
      } else if (a === "-n" || a === "--iterations") {
        iterations = Number(val());
        if (!Number.isInteger(iterations) || iterations < 1) {
          console.error("sluice top: --iterations must be a positive integer");
          return 2;
        }
      } else throw new TopUsageError(`unknown argument '${a}'`);
    }
  } catch (e) {
    if (!(e instanceof TopUsageError)) throw e;
    console.error(`sluice top: ${e.message}\nRun 'sluice top --help' for usage.`);
    return 2;
  }
  const tty = Deno.stdout.isTerminal();
  let stop = false;
  const onInt = () => {
    stop = true;
  };
  Deno.addSignalListener("SIGINT", onInt);
  try {
    let prev: StatsSnapshot | null = null;
    for (let n = 0; n < iterations && !stop; n++) {
      let cur: StatsSnapshot;
      try {
        cur = await rpcCall(socket, "sluice_get_stats") as StatsSnapshot;
      } catch (e) {
        if (!(e instanceof RpcClientError)) throw e;
        console.error(`sluice top: ${e.message}`);
        return 1;
      }
      const screen = renderTop(cur, prev);
      console.log(tty ? `\x1b[H\x1b[2J${screen}` : `${screen}\n`);
      prev = cur;
      if (n + 1 < iterations) {
        const { promise, resolve } = Promise.withResolvers<void>();
        const t = setTimeout(resolve, delayS * 1000);
        const wake = () => resolve();
        Deno.addSignalListener("SIGINT", wake);
        await promise;
        clearTimeout(t);
        Deno.removeSignalListener("SIGINT", wake);
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
  }
  return 0;
}

class TopUsageError extends Error {}

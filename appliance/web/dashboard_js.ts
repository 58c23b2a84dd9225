/**
 * Pure helpers of the dashboard's script. They are real functions so unit
 * tests call them; APP_JS embeds their source (`fn.toString()`, types
 * already stripped by the TypeScript compiler), so the browser runs the
 * same code the tests check. They must stay self-contained: no imports,
 * no closures over module values.
 * @module
 */

/** One latency bucket as sluice_get_stats sends it: [upper bound in µs or null, count]. */
export type Bucket = [number | null, number];

/**
 * The `q` quantile (0..1) of the I/Os sampled between two snapshots, as the
 * upper bound (µs) of the bucket it falls in: the histograms are cumulative
 * counters, so the interval's histogram is their difference. Null when no
 * I/O was sampled in the interval; Infinity when it falls in the unbounded
 * last bucket.
 */
export function intervalQuantileUs(prev: Bucket[], now: Bucket[], q: number): number | null {
  const d = now.map((b, i) => Math.max(0, b[1] - ((prev[i] || [0, 0])[1] || 0)));
  const n = d.reduce((a, x) => a + x, 0);
  if (n === 0) return null;
  let seen = 0;
  for (let i = 0; i < d.length; i++) {
    seen += d[i] as number;
    if (seen >= q * n) {
      const bound = (now[i] as Bucket)[0];
      return bound === null ? Infinity : bound;
    }
  }
  return null;
}

/** How the table shows a quantile from {@link intervalQuantileUs}. */
export function latencyText(us: number | null): string {
  if (us === null) return "-";
  if (us === Infinity) return "slow";
  return us >= 1000 ? "< " + us / 1000 + " ms" : "< " + us + " \u00b5s";
}

/** One connected NVMe/TCP host as sluice_get_stats lists it (nvmf_hosts). */
export interface HostEntry {
  nqn: string;
  hostnqn: string;
  cntlid: number;
  io_queues: number;
}

/** The dashboard's line for each connected NVMe/TCP host (same words as the page renders). */
export function hostLines(hosts: HostEntry[]): string[] {
  return hosts.map((h) =>
    "NVMe/TCP " + h.hostnqn + " on " + h.nqn + " (controller " + h.cntlid + ", " + h.io_queues +
    " I/O queue(s))"
  );
}

/** One served vhost-user controller, as vhost_get_controllers lists it. */
export interface VmEntry {
  ctrlr: string;
  socket: string;
  connected?: boolean;
  backend_specific: { block: { bdev: string } };
}

/** The dashboard's line for each vhost-user socket served to VMs. */
export function vmLines(vms: VmEntry[]): string[] {
  return vms.map((v) =>
    "vhost-user " + v.ctrlr + " serves " + v.backend_specific.block.bdev + " on " + v.socket +
    (v.connected ? " (VM connected)" : "")
  );
}

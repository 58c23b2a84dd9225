/**
 * The `sluice` CLI as a subprocess for end-to-end tests: one run with its
 * output captured, and the Total line `sluice perf` ends with.
 * (`sluice serve` as a long-running child: ./daemon.ts.)
 * @module
 */

/** appliance/main.ts: the `sluice` command. */
export const SLUICE_MAIN = new URL("../../appliance/main.ts", import.meta.url).pathname;

/** Runs `sluice ...args` to the end (stdin closed, stdout and stderr captured). */
export function sluice(args: string[]): Promise<Deno.CommandOutput> {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SLUICE_MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
}

/** The summary `sluice perf` prints last; groups: IOPS, MiB/s, avg, p50, p99, p99.9 (µs), errors. */
export const PERF_TOTAL =
  /^Total: IOPS=(\d+) MiB\/s=([\d.]+) avg_us=([\d.]+) p50_us=([\d.]+) p99_us=([\d.]+) p999_us=([\d.]+) errors=(\d+)$/;

/** {@link PERF_TOTAL} matched against the last line of `sluice perf`'s stdout; null: it is not one. */
export function perfTotal(stdout: string): RegExpExecArray | null {
  const lines = stdout.trim().split("\n");
  return PERF_TOTAL.exec(lines[lines.length - 1] ?? "");
}

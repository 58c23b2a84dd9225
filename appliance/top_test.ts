import { assert, assertEquals } from "../src/testing/assert.ts";
import type { StatsSnapshot } from "../src/stats/stats.ts";
import { renderTop } from "./top.ts";

function snap(
  takenMs: number,
  readOps: number,
  parkedMs: number,
  buckets: [number | null, number][] = [[1, 0], [2, 0], [4, 0], [null, 0]],
): StatsSnapshot {
  return {
    version: "0.1.0",
    uptime_s: 5,
    taken_ms: takenMs,
    bdevs: [{
      name: "Malloc0",
      module: "malloc",
      read_ops: readOps,
      read_bytes: readOps * 4096,
      write_ops: 0,
      write_bytes: 0,
      unmap_ops: 0,
      flush_ops: 0,
      write_zeroes_ops: 0,
      errors: 0,
      queued: 0,
      latency: { sample_every: 8, samples: 0, sum_ms: 0, buckets, p50_us: null, p99_us: null },
    }],
    reactors: [{
      id: 0,
      core: 0,
      running_ms: takenMs,
      stats: { parkedMs },
    }],
    process: { cpu_user_s: 0, cpu_system_s: 0, rss_bytes: 0, start_time_s: 0 },
    nvmf_tcp: null,
    vhost_controllers: 0,
    nvmf_hosts: [],
  };
}

Deno.test("top: rates are differences over the interval; the first screen shows totals", () => {
  const first = renderTop(snap(1000, 500, 10), null);
  assert(first.includes("totals since start"), first);
  const row0 = first.split("\n").find((l) => l.startsWith("Malloc0")) as string;
  assertEquals(row0.split(/\s+/).slice(0, 4), ["Malloc0", "malloc", "500", "0"]);
  assertEquals(row0.split(/\s+/).slice(6, 8), ["-", "-"], "no samples: no quantiles");

  // In the interval: 98 samples under 2 us, 2 slower than 4 us (the unbounded bucket).
  const screen = renderTop(
    snap(3000, 2500, 70, [[1, 5], [2, 103], [4, 0], [null, 3]]),
    snap(1000, 500, 10, [[1, 5], [2, 5], [4, 0], [null, 1]]),
  );
  const lines = screen.split("\n");
  // 2000 ms running, 60 ms more parked (70 - 10): busy 97.0%.
  assert(lines[0]?.includes("reactor busy 97.0%"), lines[0]);
  const row = lines.find((l) => l.startsWith("Malloc0")) as string;
  // 2000 reads in 2 s: 1000 IOPS, 1000 * 4 KiB/s = 3.9 MiB/s.
  assertEquals(row.split(/\s+/), [
    "Malloc0",
    "malloc",
    "1000",
    "0",
    "3.9",
    "0.0",
    "2",
    "slow",
    "0",
  ]);
  // Columns line up under the header.
  const head = lines.find((l) => l.startsWith("VOLUME")) as string;
  assertEquals(head.length, row.length);
});

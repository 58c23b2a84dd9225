import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { App } from "../app.ts";
import { LATENCY_BUCKETS, LATENCY_SAMPLE_EVERY, runIo } from "../bdev/mod.ts";
import { formatPrometheus, type StatsSnapshot } from "./stats.ts";
import { parsePrometheusText, PromParseError } from "./prometheus_parse.ts";
import { traceGc } from "../testing/gc_trace.ts";

async function withApp(fn: (app: App) => Promise<void>): Promise<void> {
  const app = new App();
  app.start();
  try {
    await fn(app);
  } finally {
    await app.shutdown();
  }
}

function sample(
  fams: ReturnType<typeof parsePrometheusText>,
  name: string,
  labels: Record<string, string>,
): number | undefined {
  const f = fams.get(name);
  return f?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    ?.value;
}

Deno.test("stats: live channel counters reach sluice_get_stats, bdev_get_iostat and /metrics text", async () => {
  await withApp(async (app) => {
    await app.call("bdev_malloc_create", { name: "M0", num_blocks: 64, block_size: 512 });
    const desc = app.bdevs.open("M0", true);
    const ch = desc.getIoChannel(app.reactor);
    const buf = new Uint8Array(4096);
    try {
      for (let i = 0; i < 3; i++) await runIo(ch, (io) => ch.write(io, buf, i * 8, 8));
      await runIo(ch, (io) => ch.read(io, buf.subarray(0, 1024), 0, 2));
      // The channel is still open: the counters must be seen live, not only after close.
      const s = await app.call("sluice_get_stats") as StatsSnapshot;
      const m0 = s.bdevs.find((b) => b.name === "M0");
      assertEquals(m0?.write_ops, 3);
      assertEquals(m0?.write_bytes, 3 * 4096);
      assertEquals(m0?.read_ops, 1);
      assertEquals(m0?.read_bytes, 1024);
      const io = await app.call("bdev_get_iostat", { name: "M0" }) as {
        bdevs: { num_write_ops: number }[];
      };
      assertEquals(io.bdevs[0]?.num_write_ops, 3);

      const fams = parsePrometheusText(formatPrometheus(s));
      assertEquals(fams.get("sluice_bdev_io_ops_total")?.type, "counter");
      assertEquals(sample(fams, "sluice_bdev_io_ops_total", { bdev: "M0", type: "write" }), 3);
      assertEquals(sample(fams, "sluice_bdev_io_bytes_total", { bdev: "M0", type: "read" }), 1024);
      assert(fams.has("sluice_reactor_busy_iterations_total"));
      assert((sample(fams, "sluice_reactor_busy_iterations_total", { reactor: "0" }) ?? 0) > 0);
      assertEquals(sample(fams, "sluice_nvmf_tcp_connections", {}), 0);
      const running = sample(fams, "sluice_reactor_running_seconds_total", { reactor: "0" }) ?? 0;
      const parked = sample(fams, "sluice_reactor_parked_seconds_total", { reactor: "0" }) ?? -1;
      assert(
        running > 0 && parked >= 0 && parked <= running,
        `running ${running} parked ${parked}`,
      );
      assert((sample(fams, "process_cpu_seconds_total", {}) ?? 0) > 0);
      assert((sample(fams, "process_resident_memory_bytes", {}) ?? 0) > 1024 * 1024);
      // Label values are escaped and read back exactly (names with " and \\ cannot be
      // registered today; the format must not depend on that).
      const odd = {
        ...s,
        bdevs: [{ ...(m0 as StatsSnapshot["bdevs"][0]), name: 'we"ird\\na\nme' }],
      };
      const oddFams = parsePrometheusText(formatPrometheus(odd));
      assertEquals(
        sample(oddFams, "sluice_bdev_io_ops_total", { bdev: 'we"ird\\na\nme', type: "write" }),
        3,
      );
      // Latency: one I/O in LATENCY_SAMPLE_EVERY is timed; 4 + 2N - 4 I/Os give 2 samples.
      const more = 2 * LATENCY_SAMPLE_EVERY - 4;
      for (let i = 0; i < more; i++) await runIo(ch, (io) => ch.read(io, buf, 0, 8));
      const l = (await app.call("sluice_get_stats") as StatsSnapshot).bdevs[0]?.latency;
      assertEquals(l?.samples, 2);
      assertEquals(l?.buckets.reduce((a, [, n]) => a + n, 0), l?.samples);
      assert(l !== undefined && l.p50_us !== null && l.p99_us !== null && l.p50_us <= l.p99_us);
      const text = formatPrometheus(await app.call("sluice_get_stats") as StatsSnapshot);
      const hist = parsePrometheusText(text).get("sluice_bdev_io_latency_seconds");
      assertEquals(hist?.type, "histogram");
      const buckets = hist?.samples.filter((x) => x.name.endsWith("_bucket")) ?? [];
      assertEquals(buckets.length, LATENCY_BUCKETS);
      for (let i = 1; i < buckets.length; i++) {
        assert((buckets[i]?.value ?? 0) >= (buckets[i - 1]?.value ?? 0), "cumulative buckets");
      }
      assertEquals(buckets.at(-1)?.labels["le"], "+Inf");
      const count = hist?.samples.find((x) => x.name.endsWith("_count"))?.value;
      assertEquals(buckets.at(-1)?.value, count);
      assertEquals(count, 2);
    } finally {
      ch.close();
      desc.close();
    }
    // Closed channels keep counting in the totals.
    const after = await app.call("sluice_get_stats") as StatsSnapshot;
    assertEquals(after.bdevs.find((b) => b.name === "M0")?.write_ops, 3);
  });
});

Deno.test("prometheus parser: accepts the documented format and refuses its violations", () => {
  const ok = [
    "# A comment",
    "# HELP http_requests_total The total number of HTTP requests.",
    "# TYPE http_requests_total counter",
    'http_requests_total{method="post",code="200"} 1027 1395066363000',
    'http_requests_total{method="post",code="400",} 3 1395066363000',
    "",
    'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9',
    "# TYPE rpc_duration_seconds histogram",
    'rpc_duration_seconds_bucket{le="+Inf"} 2',
    "rpc_duration_seconds_sum 1.5",
    "rpc_duration_seconds_count 2",
    "metric_without_timestamp_and_labels 12.47",
    'something_weird{problem="division by zero"} +Inf -3982045',
    "",
  ].join("\n");
  const f = parsePrometheusText(ok);
  assertEquals(f.get("http_requests_total")?.samples.length, 2);
  assertEquals(
    f.get("msdos_file_access_time_seconds")?.samples[0]?.labels["error"],
    'Cannot find file:\n"FILE.TXT"',
  );
  assertEquals(f.get("rpc_duration_seconds")?.samples.length, 3);
  const bad = [
    "1metric 1\n",
    "m{l=1} 1\n",
    'm{l="x\\q"} 1\n',
    "m 1x\n",
    "m\n",
    "# TYPE m counter\n# TYPE m counter\n",
    "m 1\n# TYPE m gauge\n",
    "a 1\nb 1\na 2\n",
    'm{l="1"} 1\nm{l="1"} 2\n',
    "# TYPE c counter\nc -1\n",
    "m 1",
  ];
  for (const t of bad) assertThrows(() => parsePrometheusText(t), PromParseError, undefined);
});

Deno.test("stats: counting and latency sampling on a bdev channel allocate nothing per I/O (V8 GC trace)", async () => {
  const script = new URL("./testdata/bdev_alloc.ts", import.meta.url).pathname;
  const control = (await traceGc(script, ["copy"])).events;
  assert(control >= 5, `the control should show allocation (got ${control} GC events)`);
  const steady = await traceGc(script, ["steady"]);
  assert(steady.events <= 1, `${steady.events} GC events in 1M I/Os (control: ${control})`);
  assert(steady.after.some((l) => /^samples [1-9]/.test(l)), steady.after.join("\n"));
});

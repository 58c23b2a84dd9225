import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { LatencyHistogram, type PerfDevice, PerfJob, totalLine } from "./perf.ts";
import { parseTransportId } from "./transport_id.ts";

/** A RAM device that completes on a timer tick, and can corrupt one read. */
class RamDevice implements PerfDevice {
  readonly blockSize = 512;
  readonly numBlocks: number;
  readonly data: Uint8Array;
  corruptNextRead = false;
  /** Blocks written since the corruption was armed: only those are checked by the job. */
  readonly writtenSinceArmed = new Set<number>();
  onDone: (slot: number, ok: boolean) => void = () => {};
  constructor(blocks: number) {
    this.numBlocks = blocks;
    this.data = new Uint8Array(blocks * 512);
  }
  submit(slot: number, write: boolean, lba: number, n: number, buf: Uint8Array): void {
    const off = lba * 512;
    if (write) {
      this.data.set(buf, off);
      if (this.corruptNextRead) this.writtenSinceArmed.add(lba);
    } else {
      buf.set(this.data.subarray(off, off + n * 512));
      if (this.corruptNextRead && this.writtenSinceArmed.has(lba) && buf[20] !== undefined) {
        buf[20] ^= 1;
        this.corruptNextRead = false;
      }
    }
    setTimeout(() => this.onDone(slot, true), 0);
  }
}

Deno.test("perf: a mixed verify workload on a RAM device finds no errors, and counts a corruption", async () => {
  const dev = new RamDevice(256);
  const job = new PerfJob(
    dev,
    {
      pattern: "randrw",
      readPercent: 50,
      ioSize: 4096,
      depth: 8,
      seconds: 0.3,
      verify: true,
    },
    (n) => new Uint8Array(n),
    7,
  );
  dev.onDone = job.onDone;
  const r = await job.run();
  assert(r.ios > 100, `only ${r.ios} I/Os`);
  assertEquals(r.errors, 0);
  assertEquals(r.verifyErrors, 0);
  assertEquals(r.latency.total, r.ios);

  const job2 = new PerfJob(
    dev,
    {
      pattern: "randrw",
      readPercent: 50,
      ioSize: 4096,
      depth: 4,
      seconds: 0.3,
      verify: true,
    },
    (n) => new Uint8Array(n),
    9,
  );
  dev.onDone = job2.onDone;
  // Corrupt the first read of a block this job wrote after the corruption was armed.
  dev.corruptNextRead = true;
  const r2 = await job2.run();
  assert(r2.verifyErrors >= 1, "a corrupted read must be counted");
  const line = totalLine([r2]);
  assert(
    /^Total: IOPS=\d+ MiB\/s=[\d.]+ avg_us=[\d.]+ p50_us=[\d.]+ p99_us=[\d.]+ p999_us=[\d.]+ errors=[1-9]\d*$/
      .test(line),
    line,
  );
});

Deno.test("perf: latency histogram quantiles are within a bucket", () => {
  const h = new LatencyHistogram();
  for (let i = 1; i <= 10000; i++) h.record(i * 1000); // 1 us .. 10 ms
  const p50 = h.quantileNs(0.5), p99 = h.quantileNs(0.99);
  assert(Math.abs(p50 - 5e6) / 5e6 < 0.07, `p50 ${p50}`);
  assert(Math.abs(p99 - 9.9e6) / 9.9e6 < 0.07, `p99 ${p99}`);
  assertEquals(h.quantileNs(1), 10_000_000);
});

Deno.test("perf: -r transport IDs parse like spdk_nvme_perf's and bad ones say why", () => {
  const t = parseTransportId(
    "trtype:TCP traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-11.dev.sluice:default hdgst:1",
  );
  assertEquals([t.trtype, t.traddr, t.trsvcid, t.subnqn, t.hdgst, t.ddgst], [
    "TCP",
    "127.0.0.1",
    "4420",
    "nqn.2026-11.dev.sluice:default",
    true,
    false,
  ]);
  assertEquals(parseTransportId("trtype:vhost-user path:/tmp/v.sock").path, "/tmp/v.sock");
  assertThrows(() => parseTransportId("trtype:TCP traddr:1.2.3.4"), RangeError, "needs trsvcid");
  assertThrows(() => parseTransportId("trtype:RDMA"), RangeError, "trtype must be");
  assertThrows(() => parseTransportId("trtype:TCP bogus:1"), RangeError, 'unknown key "bogus"');
  assertThrows(
    () => parseTransportId("trtype:TCP traddr:a trsvcid:99999 subnqn:x"),
    RangeError,
    "trsvcid must be a TCP port",
  );
});

Deno.test("perf: histogram buckets match the log-linear definition (edges, fractions, overflow)", () => {
  // The definition: 16 buckets per power of two, ns below 16 one bucket each.
  const reference = (ns: number): number => {
    const v = ns < 1 ? 1 : ns;
    if (v < 16) return Math.floor(v);
    const octave = Math.floor(Math.log2(v));
    const b = (octave - 3) * 16 + Math.floor((v / 2 ** octave - 1) * 16);
    return Math.min(b, 32 * 16 - 1);
  };
  const samples = [0, 0.4, 1, 15.99, 16, 16.5, 17, 31.9, 32, 33, 1000, 4095, 4096, 4097, 123456.7];
  for (let e = 4; e < 32; e++) samples.push(2 ** e - 1, 2 ** e, 2 ** e + 0.5, 2 ** e * 1.5 + 1);
  samples.push(2 ** 32 - 1, 2 ** 32, 2 ** 40);
  for (const ns of samples) {
    const h = new LatencyHistogram();
    h.record(ns);
    assertEquals(h.counts.indexOf(1), reference(ns), `${ns} ns`);
  }
});

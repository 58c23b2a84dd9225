/**
 * Helper for nvme_tcp_device_test.ts: a PerfJob driving an NvmeTcpPerfDevice
 * over a fake queue that completes synchronously from a ring, under
 * `--v8-flags=--trace-gc`, the measured stretch bracketed by markers on
 * glibc's stdout (the stream V8's GC trace uses, so the order is exact).
 *
 * Arguments: the pattern (randread, randrw, ...), then "steady" (the data
 * path as is), "verify" (with --verify) or "copy" (a control that copies
 * each buffer with `slice`, proving the trace sees per-I/O allocation).
 * @module
 */
import type { IoDone } from "../../nvmf_tcp/host.ts";
import { NvmeTcpPerfDevice, type PerfQueue } from "../nvme_tcp_device.ts";
import { PerfJob, type PerfWorkload } from "../perf.ts";
import { gcMarker } from "../../testing/gc_trace.ts";

const { mark } = gcMarker();

const pattern = (Deno.args[0] ?? "randrw") as PerfWorkload["pattern"];
const mode = Deno.args[1] ?? "steady";
const WARMUP = 300_000;
const MEASURED = 1_000_000;
const DEPTH = 64;

const BLOCKS = 1 << 14; // 8 MiB of 512-byte blocks, 2048 positions of 4 KiB

/**
 * Command slots complete in order from a ring, which the driver loop below
 * runs; data goes to RAM through views made once per 4 KiB position.
 */
class RingQueue implements PerfQueue {
  readonly depth = 32; // fewer than the job's slots: the host-side wait FIFO is exercised too
  readonly open = true;
  onIoDone: IoDone = () => {};
  onClose: (reason: string) => void = () => {};
  readonly ring = new Int32Array(1024);
  readonly ram = new Uint8Array(BLOCKS * 512);
  readonly views: Uint8Array[] = [];
  head = 0;
  count = 0;
  constructor() {
    for (let p = 0; p < BLOCKS / 8; p++) {
      this.views.push(this.ram.subarray(p * 4096, p * 4096 + 4096));
    }
  }
  submitIo(
    slot: number,
    write: boolean,
    _nsid: number,
    slba: number,
    _nlb: number,
    buf: Uint8Array,
  ) {
    const v = this.views[slba >>> 3] as Uint8Array;
    if (write) v.set(buf);
    else buf.set(v);
    this.ring[(this.head + this.count++) & 1023] = slot;
  }
  completeOne(): void {
    const s = this.ring[this.head] as number;
    this.head = (this.head + 1) & 1023;
    this.count--;
    this.onIoDone(s, 0, 0);
  }
}

const q = new RingQueue();
const dev = new NvmeTcpPerfDevice({
  queue: q,
  reactor: { ioInFlight: 0 },
  nsid: 1,
  blockSize: 512,
  numBlocks: BLOCKS,
  jobDepth: DEPTH,
});
const job = new PerfJob(dev, {
  pattern,
  readPercent: 50,
  ioSize: 4096,
  depth: DEPTH,
  seconds: 3600,
  verify: mode === "verify",
}, (n) => new Uint8Array(n));
const kept: Uint8Array[] = [];
dev.onDone = mode === "copy"
  ? (slot, ok) => {
    kept[slot & 7] = new Uint8Array(64).slice(0, 32);
    job.onDone(slot, ok);
  }
  : job.onDone;
const run = job.run();
for (let i = 0; i < WARMUP; i++) q.completeOne();
mark("MEASURE-BEGIN");
for (let i = 0; i < MEASURED; i++) q.completeOne();
mark("MEASURE-END");
job.stop();
while (q.count > 0) q.completeOne();
const r = await run;
if (r.errors + r.verifyErrors > 0 || r.ios < WARMUP + MEASURED) {
  throw new Error(`bad run: ${JSON.stringify({ ...r, latency: undefined })}`);
}

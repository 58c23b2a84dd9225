/**
 * Helper for vhost_user_device_test.ts: a PerfJob driving a
 * VhostUserPerfDevice over real shared memory, with a minimal device played
 * here (it pops the available ring, writes the status byte, pushes the used
 * ring, and moves avail_event), under `--v8-flags=--trace-gc`; the measured
 * stretch is bracketed by markers on glibc's stdout (the stream V8's GC
 * trace uses, so the order is exact).
 *
 * Arguments: the pattern (randread, randrw, ...), then "steady", "indirect"
 * (-q deep enough for indirect chains) or "copy" (a control that allocates
 * per I/O, proving the trace sees it).
 * @module
 */
import { close, eventfd } from "../../../ffi/libc.ts";
import { FrontendMemory, splitRingBytes, splitRingLayout } from "../../vhost_user/frontend.ts";
import { PerfJob, type PerfWorkload } from "../perf.ts";
import { VhostUserPerfDevice } from "../vhost_user_device.ts";
import { gcMarker } from "../../testing/gc_trace.ts";

const { mark } = gcMarker();

const pattern = (Deno.args[0] ?? "randrw") as PerfWorkload["pattern"];
const mode = Deno.args[1] ?? "steady";
const WARMUP = 200_000;
const MEASURED = 1_000_000;
const DEPTH = mode === "indirect" ? 512 : 64;
const indirect = mode === "indirect";
const size = VhostUserPerfDevice.queueSize(DEPTH, indirect);
const ring = splitRingBytes(size);
const scratch = Math.ceil(VhostUserPerfDevice.scratchBytes(DEPTH) / 4096) * 4096;
const mem = FrontendMemory.create(ring + scratch + DEPTH * 4096);
const layout = splitRingLayout(0, size);
const kick = eventfd();
const reactor = { ioInFlight: 0 };
const dev = new VhostUserPerfDevice({
  memory: mem,
  layout,
  scratchGpa: ring,
  kickFd: kick,
  eventIdx: true,
  indirect,
  blockSize: 512,
  numBlocks: 1 << 14,
  jobDepth: DEPTH,
  reactor,
});
let next = 0;
const job = new PerfJob(dev, {
  pattern,
  readPercent: 50,
  ioSize: 4096,
  depth: DEPTH,
  seconds: 3600,
  verify: false,
}, (n) => mem.bytes.subarray(ring + scratch + 4096 * next, ring + scratch + 4096 * next++ + n));
const kept: Uint8Array[] = [];
dev.onDone = mode === "copy"
  ? (slot, ok) => {
    kept[slot & 7] = new Uint8Array(64).slice(0, 32);
    job.onDone(slot, ok);
  }
  : job.onDone;

// The device side, by hand: no allocation, so the trace shows the driver's.
const v = mem.view;
let lastAvail = 0;
let usedIdx = 0;
let passes = 0;
function serve(): number {
  const avail = v.getUint16(layout.availAddr + 2, true);
  let n = 0;
  while (lastAvail !== avail) {
    const head = v.getUint16(layout.availAddr + 4 + 2 * (lastAvail % size), true);
    lastAvail = (lastAvail + 1) & 0xffff;
    // The status descriptor is the third of the chain (or of the indirect table).
    const table = indirect ? v.getUint32(layout.descAddr + 16 * head, true) : layout.descAddr;
    const first = indirect ? 0 : head;
    const status = v.getUint32(table + 16 * (first + 2), true);
    mem.bytes[status] = 0;
    const e = layout.usedAddr + 4 + 8 * (usedIdx % size);
    v.setUint32(e, head, true);
    v.setUint32(e + 4, 1, true);
    usedIdx = (usedIdx + 1) & 0xffff;
    v.setUint16(layout.usedAddr + 2, usedIdx, true);
    n++;
  }
  // Every other pass, ask for a kick at the next buffer (as a device about to sleep would);
  // otherwise leave avail_event behind (as a busy, polling device does): kicks are skipped.
  if ((++passes & 1) === 0) v.setUint16(layout.usedAddr + 4 + 8 * size, lastAvail, true);
  return n;
}

const run = job.run();
let done = 0;
while (done < WARMUP) {
  serve();
  done += dev.poll();
}
mark("MEASURE-BEGIN");
done = 0;
while (done < MEASURED) {
  serve();
  done += dev.poll();
}
mark("MEASURE-END");
job.stop();
while (dev.outstanding > 0) {
  serve();
  dev.poll();
}
const r = await run;
close(kick);
mem.close();
if (r.errors + r.verifyErrors > 0 || r.ios < WARMUP + MEASURED || reactor.ioInFlight !== 0) {
  throw new Error(`bad run: ${JSON.stringify({ ...r, latency: undefined })}`);
}
if (dev.kicks === 0 || dev.kicksSkipped === 0) {
  throw new Error(`kicks ${dev.kicks}, skipped ${dev.kicksSkipped}: both paths should run`);
}

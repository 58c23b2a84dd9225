/**
 * Helper for dirty_log_test.ts: marks guest ranges in a DirtyLog and pushes
 * used elements of a ring whose used-ring writes are logged, under
 * `--v8-flags=--trace-gc`, the measured stretch bracketed by markers on
 * glibc's stdout (the stream V8's GC trace uses, so the order is exact).
 *
 * Argument: "steady", or "copy" (a control that allocates per write,
 * proving the trace sees per-write allocation).
 * @module
 */
import { memfdCreate } from "../../../ffi/memory.ts";
import { DirtyLog } from "../dirty_log.ts";
import { VirtioDriver } from "../../testing/virtio_driver.ts";
import { gcMarker } from "../../testing/gc_trace.ts";

const { mark: say } = gcMarker();

const mode = Deno.args[0] ?? "steady";
const WARMUP = 200_000;
const MEASURED = 1_000_000;
const LOG_BYTES = 4096; // 128 MiB of guest memory
const SIZE = 128;

const log = new DirtyLog("alloc", say);
log.setBase(memfdCreate("dirty-log", LOG_BYTES), BigInt(LOG_BYTES), 0n);
const d = new VirtioDriver({ queueSize: SIZE });
const q = d.queue();
q.logUsedRing(log, d.usedAddr);
const kept: number[][] = [];

function round(i: number): void {
  // Ranges of 1 byte to 64 KiB at addresses all over the log, some across page boundaries.
  const gpa = ((i * 2654435761) % (LOG_BYTES * 8 * 4096 - 0x10000)) + (i & 0xfff);
  log.mark(gpa, 1 + ((i * 7919) & 0xffff));
  q.pushUsed(i & (SIZE - 1), 512);
  if (mode === "copy") kept[i & 1023] = [gpa, i];
}

for (let i = 0; i < WARMUP; i++) round(i);
say("MEASURE-BEGIN");
for (let i = 0; i < MEASURED; i++) round(i);
say("MEASURE-END");
say(`pages ${log.stats.pages} unlogged ${log.stats.unlogged} kept ${kept.length}`);
log.close();

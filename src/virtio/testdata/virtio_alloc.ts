/**
 * Helper for alloc_test.ts: pops, walks and parses virtio-blk requests and
 * returns them to the used ring, under `--v8-flags=--trace-gc`, the measured
 * stretch bracketed by markers on glibc's stdout (the stream V8's GC trace
 * uses, so the order is exact). The chains are built once; the driver side
 * only republishes heads (DataView writes), so any allocation seen is the
 * device side's.
 *
 * Argument: "steady", or "copy" (a control that allocates per request,
 * proving the trace sees per-request allocation).
 * @module
 */
import { VirtioDriver } from "../../testing/virtio_driver.ts";
import { BlkRequest, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from "../blk.ts";
import { gcMarker } from "../../testing/gc_trace.ts";

const { mark } = gcMarker();

const mode = Deno.args[0] ?? "steady";
const WARMUP = 200_000;
const MEASURED = 1_000_000;
const SIZE = 128;
const CHAINS = 32;

const d = new VirtioDriver({ queueSize: SIZE, eventIdx: true, indirectDesc: true });
const q = d.queue();
const req = new BlkRequest(SIZE, 4);
const limits = {
  capacitySectors: 1 << 20,
  readOnly: false,
  flush: true,
  discard: true,
  writeZeroes: true,
  maxDiscardSectors: 1 << 16,
  maxDiscardSeg: 4,
  maxWriteZeroesSectors: 1 << 16,
  maxWriteZeroesSeg: 4,
};
const heads = new Int32Array(CHAINS);
for (let i = 0; i < CHAINS; i++) {
  const r = d.addBlkRequest({
    type: i % 2 === 0 ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT,
    sector: i * 8,
    indirect: i % 4 < 2,
    splitHeader: i % 3 === 0,
    data: [
      { len: 2048, writable: i % 2 === 0 },
      { len: 2048, writable: i % 2 === 0 },
    ],
  });
  heads[i] = r.head;
}
// Consume the initial publication.
for (let i = 0; i < CHAINS; i++) q.popAvail();
for (let i = 0; i < CHAINS; i++) q.pushUsed(heads[i] ?? 0, 0);

const kept: Uint8Array[] = [];
let bad = 0;
function serve(n: number): void {
  for (let i = 0; i < n; i++) {
    d.publish(heads[i % CHAINS] ?? 0);
    const head = q.popAvail();
    q.walkChain(head);
    const status = req.parse(q, limits);
    if (status !== VIRTIO_BLK_S_OK || req.dataBytes !== 4096) bad++;
    if (mode === "copy") kept[i & 7] = new Uint8Array(64).slice(0, 32);
    req.writeStatus(q.memory, status);
    d.setUsedEvent(q.usedIdx); // the driver wants a notification for this very element
    q.pushUsed(head, req.usedLength(status));
    if (!q.needsNotification()) bad++;
    q.setAvailEvent(q.lastAvailIdx);
  }
}
serve(WARMUP);
mark("MEASURE-BEGIN");
serve(MEASURED);
mark("MEASURE-END");
if (bad !== 0) throw new Error(`${bad} requests went wrong`);

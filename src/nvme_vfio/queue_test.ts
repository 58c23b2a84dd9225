import { assertEquals } from "../testing/assert.ts";
import { doorbellOffset, NvmeQueuePair } from "./queue.ts";
import type { NvmeMmio } from "./mmio.ts";

class RecordingMmio implements NvmeMmio {
  writes: [number, number][] = [];
  read32(): number {
    return 0;
  }
  write32(off: number, v: number): void {
    this.writes.push([off, v]);
  }
}

/** Posts a CQE as a controller would. */
function post(cq: Uint8Array, index: number, cid: number, sqhd: number, phase: number, status = 0) {
  const v = new DataView(cq.buffer, cq.byteOffset + index * 16, 16);
  v.setUint32(0, 0xabc, true);
  v.setUint16(8, sqhd, true);
  v.setUint16(12, cid, true);
  v.setUint16(14, (status << 1) | phase, true);
}

Deno.test("doorbells: 1000h + (2y + n) * (4 << DSTRD)", () => {
  assertEquals(doorbellOffset(0, false, 0), 0x1000);
  assertEquals(doorbellOffset(0, true, 0), 0x1004);
  assertEquals(doorbellOffset(1, false, 0), 0x1008);
  assertEquals(doorbellOffset(1, true, 0), 0x100c);
  assertEquals(doorbellOffset(1, false, 2), 0x1000 + 2 * 16);
  assertEquals(doorbellOffset(3, true, 1), 0x1000 + 7 * 8);
});

Deno.test("queue pair: SQ tail doorbell per submit, full at depth - 1, CQ reaped by phase and wrapping flips it", () => {
  const depth = 4;
  const m = new RecordingMmio();
  const sq = { bytes: new Uint8Array(depth * 64), iova: 0x1000 };
  const cq = { bytes: new Uint8Array(depth * 16), iova: 0x2000 };
  const q = new NvmeQueuePair(m, 1, depth, sq, cq, 0);
  for (let i = 0; i < 3; i++) {
    const e = q.nextSqe();
    e.setUint16(2, i, true);
    q.submit();
  }
  assertEquals(q.sqFull, true);
  assertEquals(m.writes, [[0x1008, 1], [0x1008, 2], [0x1008, 3]]);
  assertEquals(new DataView(sq.bytes.buffer).getUint16(64 * 2 + 2, true), 2);
  // Nothing posted: nothing reaped, no doorbell.
  const seen: number[] = [];
  assertEquals(q.reap((cid) => seen.push(cid)), 0);
  // Two completions with phase 1; SQ head moves to 2.
  post(cq.bytes, 0, 0, 1, 1);
  post(cq.bytes, 1, 1, 2, 1);
  assertEquals(q.reap((cid) => seen.push(cid)), 2);
  assertEquals(seen, [0, 1]);
  assertEquals(m.writes.at(-1), [0x100c, 2]);
  assertEquals(q.sqFull, false);
  assertEquals(q.sqUsed, 1);
  // Fill the last two CQ entries, wrap, and the next pass expects phase 0.
  post(cq.bytes, 2, 2, 3, 1);
  post(cq.bytes, 3, 7, 3, 1, 0x2);
  const statuses: number[] = [];
  assertEquals(q.reap((cid, st) => statuses.push(cid, st)), 2);
  assertEquals(statuses, [2, 0, 7, 2]);
  assertEquals(m.writes.at(-1), [0x100c, 0]);
  // Entry 0 still holds phase 1 from the previous pass: not new.
  assertEquals(q.cqPending, false);
  post(cq.bytes, 0, 9, 3, 0);
  assertEquals(q.cqPending, true);
  assertEquals(q.reap(() => {}), 1);
});

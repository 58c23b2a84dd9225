/**
 * Seeded fuzzing of the chain walker and the virtio-blk parser: random rings
 * with random descriptors, indirect tables and avail indices. The walker must
 * return a valid chain or throw a VirtqueueError, nothing else; the parser
 * must return a status and never throw. Any read outside a region's mapping
 * would throw a RangeError from its DataView and fail the test.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import { VirtioDriver } from "../testing/virtio_driver.ts";
import {
  BLK_NO_STATUS,
  BlkRequest,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
} from "./blk.ts";
import { VirtqueueError } from "./error.ts";
import { GuestAddress } from "./guest_memory.ts";
import {
  VIRTQ_DESC_BYTES,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "./virtqueue.ts";

/** xorshift32: small, seeded, reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

const ITERATIONS = 2000;

Deno.test("fuzz: random descriptor chains walk to a valid chain or a VirtqueueError", () => {
  const next = rng(0x5eed_1234);
  const pick = (n: number) => next() % n;
  const kinds = new Map<string, number>();
  let valid = 0;
  const limits = {
    capacitySectors: 4096,
    readOnly: false,
    flush: true,
    discard: true,
    writeZeroes: true,
    maxDiscardSectors: 1024,
    maxDiscardSeg: 4,
    maxWriteZeroesSectors: 1024,
    maxWriteZeroesSeg: 4,
  };
  const memBytes = 1 << 18;
  for (let iter = 0; iter < ITERATIONS; iter++) {
    const size = 1 << pick(7);
    const d = new VirtioDriver({
      queueSize: size,
      memoryBytes: memBytes,
      eventIdx: pick(2) === 1,
      indirectDesc: pick(4) !== 0,
    });
    const q = d.queue();
    const req = new BlkRequest(size, 4);
    const lo = d.gpaBase, hi = d.gpaBase + memBytes;
    const randAddr = (): number | bigint => {
      switch (pick(8)) {
        case 0:
          return 0;
        case 1:
          return hi - pick(64);
        case 2:
          return BigInt(next()) << 32n | BigInt(next());
        case 3:
          return lo - 1 - pick(16);
        default:
          return lo + pick(memBytes);
      }
    };
    const randLen = (): number => {
      switch (pick(6)) {
        case 0:
          return 0;
        case 1:
          return next();
        case 2:
          return 16 * (1 + pick(2 * size));
        default:
          return 1 + pick(2048);
      }
    };
    const randFlags = (): number => {
      let f = 0;
      if (pick(3) !== 0) f |= VIRTQ_DESC_F_NEXT;
      if (pick(3) === 0) f |= VIRTQ_DESC_F_WRITE;
      if (pick(6) === 0) f |= VIRTQ_DESC_F_INDIRECT;
      if (pick(16) === 0) f |= next() & 0xfff8;
      return f;
    };
    // Some indirect tables in the heap.
    const tables: { gpa: number; len: number }[] = [];
    for (let t = 0; t < 1 + pick(3); t++) {
      const n = 1 + pick(size + 2);
      const gpa = d.alloc(n * VIRTQ_DESC_BYTES);
      for (let i = 0; i < n; i++) {
        d.writeDescAt(gpa + i * VIRTQ_DESC_BYTES, {
          addr: randAddr(),
          len: randLen(),
          flags: randFlags(),
          next: pick(n + 2),
        });
      }
      tables.push({ gpa, len: n * VIRTQ_DESC_BYTES });
    }
    for (let i = 0; i < size; i++) {
      const t = tables[pick(tables.length)];
      if (t !== undefined && pick(4) === 0) {
        d.writeDesc(i, {
          addr: t.gpa,
          len: pick(8) === 0 ? randLen() : t.len,
          flags: VIRTQ_DESC_F_INDIRECT | (pick(8) === 0 ? VIRTQ_DESC_F_NEXT : 0),
          next: pick(size + 2),
        });
      } else {
        d.writeDesc(i, {
          addr: randAddr(),
          len: randLen(),
          flags: randFlags(),
          next: pick(size + 2),
        });
      }
      // Sometimes a plausible blk header.
      if (pick(3) === 0) {
        const h = new Uint8Array(16);
        const v = new DataView(h.buffer);
        v.setUint32(0, [0, 1, 4, 8, 11, 13, next()][pick(7)] ?? 0, true);
        v.setUint32(8, pick(5000), true);
        const gpa = lo + pick(memBytes - 16);
        d.write(gpa, h);
      }
    }
    const heads = 1 + pick(2 * size);
    for (let i = 0; i < heads; i++) d.publish(pick(8) === 0 ? next() & 0xffff : pick(size));
    if (pick(10) === 0) d.setAvailIdx(next());
    const at = new GuestAddress();
    for (let i = 0; i < heads + 1; i++) {
      try {
        const head = q.popAvail();
        if (head < 0) break;
        q.walkChain(head);
      } catch (e) {
        if (!(e instanceof VirtqueueError)) throw e;
        assert(e.message.length > 0 && /^[A-Z]/.test(e.message), e.message);
        kinds.set(e.kind, (kinds.get(e.kind) ?? 0) + 1);
        if (e.kind === "avail-idx") break;
        continue;
      }
      valid++;
      // The chain is valid: every segment inside one region, readable before writable.
      assert(q.segCount >= 1 && q.segCount <= size);
      let seenWritable = false, readable = 0, writable = 0;
      for (let s = 0; s < q.segCount; s++) {
        const len = q.segLen[s] ?? 0;
        assert(d.memory.translate(q.segGpa[s] ?? -1, len, at));
        assertEquals([at.region, at.offset], [q.segRegion[s], q.segOffset[s]]);
        if (q.segWritable[s] === 1) {
          seenWritable = true;
          writable += len;
        } else {
          assert(!seenWritable, "order");
          readable += len;
        }
      }
      assertEquals([readable, writable], [q.readableBytes, q.writableBytes]);
      const status = req.parse(q, limits);
      assert(
        [VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, BLK_NO_STATUS].includes(status),
      );
      for (let s = 0; s < req.dataCount; s++) {
        const end = (req.dataOffset[s] ?? 0) + (req.dataLen[s] ?? 0);
        assert(end <= d.memory.regionSize(req.dataRegion[s] ?? -1));
      }
      req.writeStatus(q.memory, status);
      q.pushUsed(q.head, req.usedLength(status));
    }
  }
  // The generator reaches the walker's success path and most error kinds.
  assert(valid > 100, `only ${valid} valid chains`);
  for (
    const k of [
      "desc-index",
      "desc-address",
      "chain-loop",
      "indirect-nested",
      "indirect-size",
      "indirect-next",
      "order",
    ]
  ) {
    assert((kinds.get(k) ?? 0) > 0, `kind ${k} never seen: ${JSON.stringify([...kinds])}`);
  }
});

Deno.test("fuzz: mutated virtio-blk requests parse to a status, never throw", () => {
  const next = rng(0xb1c0_0001);
  const pick = (n: number) => next() % n;
  const limits = {
    capacitySectors: 2048,
    readOnly: false,
    flush: true,
    discard: true,
    writeZeroes: true,
    maxDiscardSectors: 256,
    maxDiscardSeg: 2,
    maxWriteZeroesSectors: 256,
    maxWriteZeroesSeg: 2,
  };
  const seen = new Map<number, number>();
  for (let iter = 0; iter < ITERATIONS; iter++) {
    const d = new VirtioDriver({ queueSize: 16, memoryBytes: 1 << 17, indirectDesc: true });
    const q = d.queue();
    const req = new BlkRequest(16, 2);
    const type = [0, 1, 4, 8, 11, 13, 10, 14, next()][pick(9)] ?? 0;
    const data = Array.from({ length: pick(5) }, () => {
      const len = [0, 1, 15, 16, 20, 32, 512, 1024, 511][pick(9)] ?? 0;
      const bytes = new Uint8Array(len);
      for (let i = 0; i < len; i += 4) bytes[i] = pick(4) === 0 ? next() & 0xff : pick(3);
      return { len, writable: pick(2) === 0, data: bytes };
    });
    // The driver keeps readable before writable, as the walker requires.
    data.sort((a, b) => Number(a.writable) - Number(b.writable));
    d.addBlkRequest({
      type,
      sector: pick(8) === 0 ? BigInt(next()) << 32n : pick(2100),
      data,
      indirect: pick(2) === 0,
      splitHeader: pick(2) === 0,
      noStatus: pick(8) === 0,
      writableHeader: pick(16) === 0,
    });
    try {
      q.walkChain(q.popAvail());
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      continue;
    }
    const status = req.parse(q, limits);
    seen.set(status, (seen.get(status) ?? 0) + 1);
    if (status === VIRTIO_BLK_S_OK) {
      if (req.type === 0 || req.type === 1) {
        assertEquals(req.dataBytes % 512, 0);
        assert(req.sector + req.dataBytes / 512 <= limits.capacitySectors);
      }
      for (let i = 0; i < req.rangeCount; i++) {
        assert((req.rangeSector[i] ?? 0) + (req.rangeSectors[i] ?? 0) <= limits.capacitySectors);
        assert((req.rangeSectors[i] ?? 0) <= 256);
      }
    } else {
      assert(req.reason.length > 0);
      assertEquals([req.dataCount, req.rangeCount], [0, 0]);
    }
    req.writeStatus(q.memory, status);
  }
  for (const s of [VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, BLK_NO_STATUS]) {
    assert((seen.get(s) ?? 0) > 0, `status ${s} never seen: ${JSON.stringify([...seen])}`);
  }
});

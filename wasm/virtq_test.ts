import { assert, assertEquals } from "../src/testing/assert.ts";
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from "../src/virtio/blk.ts";
import { CAPACITY_SECTORS, tsWalkParse, virtqPair, wasmWalkParse } from "./virtq_fixture.ts";

/** Small deterministic PRNG (xorshift32) so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
}

Deno.test("virtq wasm walker: agrees with the TypeScript walker on valid reads and writes", () => {
  const p = virtqPair(64);
  const heads: number[] = [];
  for (const indirect of [false, true]) {
    for (const type of [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT]) {
      const data = [{ len: 4096, writable: type === VIRTIO_BLK_T_IN }, {
        len: 512,
        writable: type === VIRTIO_BLK_T_IN,
      }];
      heads.push(p.driver.addBlkRequest({ type, sector: 8, data, indirect }).head);
    }
  }
  heads.push(p.driver.addBlkRequest({ type: VIRTIO_BLK_T_IN, sector: 1, splitHeader: true }).head);
  p.sync();
  for (const head of heads) {
    assert(tsWalkParse(p, head), `TS refused head ${head}`);
    assert(wasmWalkParse(p, head), `WASM refused head ${head}: ${p.wasm.walk(head)}`);
    assertEquals(p.wasm.walk(head), p.ts.segCount);
    for (let i = 0; i < p.ts.segCount; i++) {
      assertEquals(p.wasm.segGpa(i), p.ts.segGpa[i]);
      assertEquals(p.wasm.segLen(i), p.ts.segLen[i]);
      assertEquals(p.wasm.segWritable(i), p.ts.segWritable[i] === 1);
    }
    assertEquals(p.wasm.blkType, p.req.type);
    assertEquals(p.wasm.sector, p.req.sector);
    assertEquals(p.wasm.dataBytes, p.req.dataBytes);
  }
});

Deno.test("virtq wasm walker: refuses what the TypeScript walker refuses (hostile chains)", () => {
  const cases: [string, (p: ReturnType<typeof virtqPair>) => number][] = [
    ["loop", (p) => p.driver.addLoop(3)],
    ["out of range", (p) => p.driver.addOutOfRange()],
    ["huge length", (p) => p.driver.addHugeLength()],
    ["nested indirect", (p) => p.driver.addNestedIndirect()],
    ["no status", (p) => p.driver.addBlkRequest({ type: 0, sector: 0, noStatus: true }).head],
    [
      "writable header",
      (p) => p.driver.addBlkRequest({ type: 0, sector: 0, writableHeader: true }).head,
    ],
    ["past capacity", (p) =>
      p.driver.addBlkRequest({
        type: VIRTIO_BLK_T_OUT,
        sector: CAPACITY_SECTORS,
        data: [{ len: 512, writable: false }],
      }).head],
    ["wrong direction", (p) =>
      p.driver.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: 0,
        data: [{ len: 512, writable: false }],
      }).head],
  ];
  for (const [name, build] of cases) {
    const p = virtqPair(16);
    const head = build(p);
    p.sync();
    assertEquals(tsWalkParse(p, head), false, `${name}: TS accepted it`);
    const rc = p.wasm.walk(head);
    assert(!wasmWalkParse(p, head), `${name}: WASM accepted it (${rc})`);
  }
});

Deno.test("virtq wasm walker: agrees with the TypeScript walker on 3000 mutated chains", () => {
  const rand = rng(0x5eed);
  const p = virtqPair(32);
  let accepted = 0;
  for (let trial = 0; trial < 3000; trial++) {
    p.driver.bytes.fill(0);
    p.driver.resetHeap();
    const type = rand() < 0.5 ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    const n = 1 + Math.floor(rand() * 4);
    const data = Array.from({ length: n }, () => ({
      len: 512 * (1 + Math.floor(rand() * 8)),
      writable: type === VIRTIO_BLK_T_IN,
    }));
    const r = p.driver.addBlkRequest({
      type,
      sector: Math.floor(rand() * 64),
      data,
      indirect: rand() < 0.5,
    });
    // Flip one byte among the descriptors, the indirect table or the header.
    const targets = [p.driver.descAddr, r.header, r.header - 512];
    const area = targets[Math.floor(rand() * targets.length)] as number;
    const at = area - p.driver.gpaBase + Math.floor(rand() * 96);
    if (at >= 0 && at < p.driver.bytes.byteLength && rand() < 0.8) {
      p.driver.bytes[at] = Math.floor(rand() * 256);
    }
    p.sync();
    const ts = tsWalkParse(p, r.head);
    const wasm = wasmWalkParse(p, r.head);
    assertEquals(wasm, ts, `trial ${trial}: TS ${ts}, WASM ${wasm} (code ${p.wasm.walk(r.head)})`);
    if (ts) {
      accepted++;
      assertEquals(p.wasm.walk(r.head), p.ts.segCount, `trial ${trial}: segment count`);
      assertEquals(p.wasm.sector, p.req.sector, `trial ${trial}: sector`);
      assertEquals(p.wasm.dataBytes, p.req.dataBytes, `trial ${trial}: data bytes`);
    }
  }
  // Both outcomes must be exercised for the agreement to mean something.
  assert(accepted > 300 && accepted < 2900, `accepted ${accepted} of 3000`);
});

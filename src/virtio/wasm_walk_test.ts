import { assert, assertEquals } from "../testing/assert.ts";
import { BlkRequest, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from "./blk.ts";
import { parseBlkWithWasm } from "./wasm_walk.ts";
import { tsWalkParse, virtqPair } from "../../wasm/virtq_fixture.ts";

Deno.test("parseBlkWithWasm: fills the request exactly as BlkRequest.parse does", () => {
  const p = virtqPair(64);
  const heads: number[] = [];
  for (const indirect of [false, true]) {
    for (const type of [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT]) {
      const w = type === VIRTIO_BLK_T_IN;
      const data = [{ len: 4096, writable: w }, { len: 1024, writable: w }, {
        len: 512,
        writable: w,
      }];
      heads.push(p.driver.addBlkRequest({ type, sector: 24, data, indirect }).head);
    }
  }
  p.sync();
  const fast = new BlkRequest(64, 1);
  for (const head of heads) {
    assert(tsWalkParse(p, head));
    assert(parseBlkWithWasm(p.wasm, head, fast), `head ${head} left the fast path`);
    for (
      const k of [
        "type",
        "sector",
        "dataBytes",
        "dataCount",
        "statusRegion",
        "statusOffset",
      ] as const
    ) {
      assertEquals(fast[k], p.req[k], `head ${head}: ${k}`);
    }
    for (let i = 0; i < fast.dataCount; i++) {
      assertEquals(fast.dataRegion[i], p.req.dataRegion[i]);
      assertEquals(fast.dataOffset[i], p.req.dataOffset[i]);
      assertEquals(fast.dataLen[i], p.req.dataLen[i]);
    }
    assertEquals(fast.usedLength(0), p.req.usedLength(0));
  }
});

Deno.test("parseBlkWithWasm: other layouts and refused chains go to the TypeScript path", () => {
  const cases: [string, (p: ReturnType<typeof virtqPair>) => number][] = [
    ["split header", (p) =>
      p.driver.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: 0,
        splitHeader: true,
        data: [{ len: 512, writable: true }],
      }).head],
    ["flush", (p) => p.driver.addBlkRequest({ type: 4, sector: 0 }).head],
    ["loop", (p) => p.driver.addLoop(2)],
    ["status in the data buffer", (p) =>
      p.driver.addChain([
        { len: 16, writable: false, data: new Uint8Array(16) },
        { len: 513, writable: true },
      ]).head],
  ];
  for (const [name, build] of cases) {
    const p = virtqPair(16);
    const head = build(p);
    p.sync();
    assertEquals(parseBlkWithWasm(p.wasm, head, new BlkRequest(16, 1)), false, name);
  }
});

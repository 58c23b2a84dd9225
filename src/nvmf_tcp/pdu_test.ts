import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { crc32c, initWasmMemory, wasmAlloc, wasmMemoryStats } from "../../wasm/mod.ts";
import {
  crc32cMatches,
  crc32cRange,
  crc32cUpdate,
  dataDigest,
  encodeC2HData,
  encodeCapsuleCmd,
  encodeCapsuleResp,
  encodeH2CData,
  encodeICReq,
  encodeICResp,
  encodeR2T,
  encodeTermReq,
  Fes,
  getLe16,
  getLe32,
  pduDataOffset,
  PduField,
  PduFlag,
  PduHlen,
  pduLength,
  type PduTxParams,
  PduType,
  storeCrc32c,
  storeDataDigest,
  TERM_REQ_MAX_PLEN,
  writeDigest,
} from "./pdu.ts";

const plain: PduTxParams = { hdgst: false, ddgst: false, txpda: 0 };
const digests: PduTxParams = { hdgst: true, ddgst: true, txpda: 0 };

function hdgstOk(b: Uint8Array, off: number, hlen: number): boolean {
  return getLe32(b, off + hlen) === crc32c(b.subarray(off, off + hlen));
}

Deno.test("pdu: constants are the specification's", () => {
  assertEquals(
    [
      PduType.ICReq,
      PduType.ICResp,
      PduType.H2CTermReq,
      PduType.C2HTermReq,
      PduType.CapsuleCmd,
      PduType.CapsuleResp,
      PduType.H2CData,
      PduType.C2HData,
      PduType.R2T,
    ],
    [0, 1, 2, 3, 4, 5, 6, 7, 9],
  );
  assertEquals([PduFlag.HDGSTF, PduFlag.DDGSTF, PduFlag.LAST_PDU, PduFlag.SUCCESS], [1, 2, 4, 8]);
  assertEquals(
    [
      Fes.InvalidHeaderField,
      Fes.PduSequenceError,
      Fes.HeaderDigestError,
      Fes.DataTransferOutOfRange,
      Fes.DataTransferLimitExceeded,
      Fes.UnsupportedParameter,
    ],
    [1, 2, 3, 4, 5, 6],
  );
  assertEquals(PduHlen, {
    ICReq: 128,
    ICResp: 128,
    TermReq: 24,
    CapsuleCmd: 72,
    CapsuleResp: 24,
    H2CData: 24,
    C2HData: 24,
    R2T: 24,
  });
  assertEquals(PduField.FEI, 10, "FEI is at byte 10, not dword aligned");
});

Deno.test("pdu: ICReq and ICResp layout", () => {
  const b = new Uint8Array(130).fill(0xee);
  assertEquals(encodeICReq(b, 1, { hpda: 3, hdgst: true, ddgst: true, maxr2t: 0x01020304 }), 128);
  assertEquals([...b.subarray(1, 9)], [0, 0, 128, 0, 128, 0, 0, 0]);
  assertEquals(getLe16(b, 1 + 8), 0, "PFV");
  assertEquals(b[1 + 10], 3, "HPDA");
  assertEquals(b[1 + 11], 3, "DGST");
  assertEquals(getLe32(b, 1 + 12), 0x01020304, "MAXR2T");
  assert(b.subarray(1 + 16, 1 + 128).every((x) => x === 0), "reserved bytes zero");
  assertEquals(b[0], 0xee);
  assertEquals(b[129], 0xee, "nothing written past the PDU");

  const r = new Uint8Array(128);
  encodeICResp(r, 0, { cpda: 1, hdgst: false, ddgst: true, maxh2cdata: 131072 });
  assertEquals([...r.subarray(0, 8)], [1, 0, 128, 0, 128, 0, 0, 0]);
  assertEquals([r[10], r[11], getLe32(r, 12)], [1, 2, 131072]);
  assertThrows(
    () => encodeICResp(r, 0, { cpda: 0, hdgst: false, ddgst: false, maxh2cdata: 4094 }),
    RangeError,
    "MAXH2CDATA",
  );
  assertThrows(
    () => encodeICReq(r, 0, { hpda: 32, hdgst: false, ddgst: false, maxr2t: 0 }),
    RangeError,
    "HPDA",
  );
  assertThrows(
    () => encodeICReq(r, 1, { hpda: 0, hdgst: false, ddgst: false, maxr2t: 0 }),
    RangeError,
    "does not fit",
  );
});

Deno.test("pdu: CapsuleCmd without and with in-capsule data, digests and padding", () => {
  const sqe = new Uint8Array(64).map((_, i) => i + 1);
  const b = new Uint8Array(200).fill(0xaa);
  assertEquals(encodeCapsuleCmd(b, 0, plain, sqe, 0), 72);
  assertEquals([b[0], b[1], b[2], b[3], getLe32(b, 4)], [4, 0, 72, 0, 72]);
  assertEquals([...b.subarray(8, 72)], [...sqe]);

  assertEquals(encodeCapsuleCmd(b, 0, { ...plain, hdgst: true }, sqe, 0), 76);
  assertEquals([b[1], b[3], getLe32(b, 4)], [PduFlag.HDGSTF, 0, 76], "no data: PDO 0, no DDGSTF");
  assert(hdgstOk(b, 0, 72), "HDGST over the 72 header bytes");

  // 100 bytes of data, digests, CPDA 7 (32-byte alignment): PDO 96 (76 rounded up).
  const n = encodeCapsuleCmd(b, 0, { ...digests, txpda: 7 }, sqe, 100);
  assertEquals(n, 96);
  assertEquals([b[1], b[3], getLe32(b, 4)], [3, 96, 96 + 100 + 4]);
  assert(hdgstOk(b, 0, 72));
  assert(b.subarray(76, 96).every((x) => x === 0), "padding zeroed");
  assertEquals(pduLength(72, { ...digests, txpda: 7 }, 100), 200);
  assertEquals(pduDataOffset(72, false, 0), 72);
  assertEquals(pduDataOffset(72, true, 0), 76);
  assertEquals(pduDataOffset(24, true, 31), 128);
  assertThrows(() => encodeCapsuleCmd(b, 0, plain, new Uint8Array(63), 0), RangeError, "64 bytes");
});

Deno.test("pdu: CapsuleResp, H2CData, C2HData and R2T layout", () => {
  const cqe = new Uint8Array(16).map((_, i) => 0xf0 + i);
  const b = new Uint8Array(64);
  assertEquals(encodeCapsuleResp(b, 0, digests, cqe), 28);
  assertEquals([b[0], b[1], b[2], b[3], getLe32(b, 4)], [5, 1, 24, 0, 28]);
  assertEquals([...b.subarray(8, 24)], [...cqe]);
  assert(hdgstOk(b, 0, 24));

  assertEquals(encodeH2CData(b, 0, digests, 0x1234, 0x5678, 8192, 4096, true), 28);
  assertEquals([b[0], b[1], b[2], b[3], getLe32(b, 4)], [6, 1 | 2 | 4, 24, 28, 28 + 4096 + 4]);
  assertEquals([getLe16(b, 8), getLe16(b, 10), getLe32(b, 12), getLe32(b, 16)], [
    0x1234,
    0x5678,
    8192,
    4096,
  ]);
  assert(hdgstOk(b, 0, 24));
  assertEquals(encodeH2CData(b, 0, plain, 1, 2, 0, 10, false), 24);
  assertEquals([b[1], b[3], getLe32(b, 4)], [0, 24, 34]);
  assertThrows(() => encodeH2CData(b, 0, plain, 1, 2, 0, 0, false), RangeError, "at least one");

  assertEquals(encodeC2HData(b, 0, { ...plain, txpda: 3 }, 7, 512, 100, true, true), 32);
  assertEquals([b[0], b[1], b[3], getLe32(b, 4), getLe16(b, 10)], [7, 12, 32, 132, 0]);
  assertThrows(() => encodeC2HData(b, 0, plain, 7, 0, 1, false, true), RangeError, "LAST_PDU");

  assertEquals(encodeR2T(b, 0, plain, 9, 10, 4096, 65536), 24);
  assertEquals([b[0], b[1], b[3], getLe32(b, 4)], [9, 0, 0, 24]);
  assertEquals([getLe16(b, 8), getLe16(b, 10), getLe32(b, 12), getLe32(b, 16)], [
    9,
    10,
    4096,
    65536,
  ]);
  assertThrows(() => encodeR2T(b, 0, plain, 9, 10, 0, 0), RangeError, "at least one");
});

Deno.test("pdu: TermReq carries FES, FEI at byte 10 and at most 128 header bytes", () => {
  const b = new Uint8Array(200);
  const offending = new Uint8Array(72).map((_, i) => i);
  assertEquals(encodeTermReq(b, 0, "target", Fes.HeaderDigestError, 0xdeadbeef, offending), 96);
  assertEquals([b[0], b[1], b[2], b[3], getLe32(b, 4)], [3, 0, 24, 0, 96]);
  assertEquals(getLe16(b, 8), 3);
  assertEquals(getLe32(b, 10), 0xdeadbeef);
  assert(b.subarray(14, 24).every((x) => x === 0), "reserved");
  assertEquals([...b.subarray(24, 96)], [...offending]);
  assertEquals(encodeTermReq(b, 0, "host", Fes.InvalidHeaderField, 2, new Uint8Array(300)), 152);
  assertEquals([b[0], getLe32(b, 4)], [2, TERM_REQ_MAX_PLEN]);
  assertEquals(encodeTermReq(b, 0, "host", Fes.PduSequenceError, 0), 24);
});

Deno.test("pdu: crc32cRange agrees with crc32c on the JS heap and in wasm memory", () => {
  if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(4 << 20);
  const heap = new Uint8Array(5000).map((_, i) => (i * 7 + 3) & 0xff);
  const inWasm = wasmAlloc(5000, 64);
  inWasm.set(heap);
  for (const [s, e] of [[0, 0], [3, 4], [5, 77], [1, 255], [0, 256], [7, 4999], [0, 5000]]) {
    const want = crc32c(heap.subarray(s, e));
    assertEquals(crc32cRange(heap, s as number, e as number), want, `heap ${s}-${e}`);
    assertEquals(crc32cRange(inWasm, s as number, e as number), want, `wasm ${s}-${e}`);
  }
  // Chaining.
  const a = crc32cRange(inWasm, 0, 1000);
  assertEquals(crc32cRange(heap, 1000, 5000, a), crc32c(heap));
});

Deno.test("pdu: dataDigest chains over an iov list from an offset", () => {
  const whole = new Uint8Array(10000).map((_, i) => (i * 13) & 0xff);
  const iovs = [whole.subarray(0, 100), whole.subarray(100, 100), whole.subarray(100, 5000)];
  iovs.push(whole.subarray(5000));
  assertEquals(dataDigest(iovs, 4, 0, 10000), crc32c(whole));
  assertEquals(dataDigest(iovs, 4, 50, 6000), crc32c(whole.subarray(50, 6050)));
  assertEquals(dataDigest(iovs, 3, 4990, 10), crc32c(whole.subarray(4990, 5000)));
  assertThrows(() => dataDigest(iovs, 3, 4990, 11), RangeError, "outside");
  assertThrows(() => dataDigest(iovs, 5, 0, 1), RangeError, "iovcnt");
  const d = new Uint8Array(4);
  writeDigest(d, 0, 0x11223344);
  assertEquals([...d], [0x44, 0x33, 0x22, 0x11], "digests are little-endian");
});

Deno.test("pdu: allocation-free digest helpers store, match and chain CRC32C", () => {
  // RFC 3720 B.4: 32 zero bytes have CRC32C 0x8a9136aa, sent as aa 36 91 8a.
  const zeros = new Uint8Array(40);
  const out = new Uint8Array(8);
  storeCrc32c(out, 2, zeros, 4, 36);
  assertEquals([...out.subarray(2, 6)], [0xaa, 0x36, 0x91, 0x8a]);
  assert(crc32cMatches(out, 2, zeros, 4, 36));
  out[5] = 0x8b;
  assert(!crc32cMatches(out, 2, zeros, 4, 36));

  if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(4 << 20);
  const heap = new Uint8Array(3000).map((_, i) => (i * 5 + 1) & 0xff);
  const inWasm = wasmAlloc(3000, 64);
  inWasm.set(heap);
  const state = new Uint32Array(3);
  for (const [a, b] of [[0, 7], [7, 300], [300, 2999], [2999, 3000]]) {
    crc32cUpdate(state, 1, heap, a as number, b as number);
    crc32cUpdate(state, 2, inWasm, a as number, b as number);
  }
  assertEquals(state[1], crc32c(heap));
  assertEquals(state[2], crc32c(heap));
  assertEquals(state[0], 0, "other slots untouched");

  const iovs = [inWasm.subarray(0, 1000), heap.subarray(1000)];
  const d = new Uint8Array(6);
  assertEquals(storeDataDigest(d, 1, iovs, 2, 10, 2500), 4);
  assertEquals(getLe32(d, 1), crc32c(heap.subarray(10, 2510)));
  assertEquals(dataDigest(iovs, 2, 10, 2500), getLe32(d, 1));
});

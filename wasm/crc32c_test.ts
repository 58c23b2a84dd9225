import { assertEquals, assertThrows } from "../src/testing/assert.ts";
import { crc32c, crc32cScalar, crc32cSimd, crc32cStrict } from "./crc32c.ts";
import { crc32cTs } from "./crc32c_ts.ts";
import { initWasmMemory, kernels, wasmAlloc, wasmMemoryBytes } from "./kernels.ts";

// One heap per test module (deno test runs each module in its own isolate).
initWasmMemory(8 * 1024 * 1024);

type Crc = (data: Uint8Array, seed?: number) => number;
const IMPLS: Record<string, Crc> = {
  "crc32c": crc32c,
  "wasm simd": crc32cSimd,
  "wasm simd strict": crc32cStrict,
  "wasm scalar": crc32cScalar,
  "ts slicing-by-8": crc32cTs,
};

/** Bit-at-a-time CRC32C: the textbook definition, slow and obviously right. */
function crc32cBitwise(data: Uint8Array, seed = 0): number {
  let crc = ~seed >>> 0;
  for (const b of data) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}

/** xorshift32: reproducible random bytes and sizes. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function randomBytes(n: number, next: () => number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = next() & 0xff;
  return out;
}

/** The same bytes at `offset` inside a wasm-memory buffer (read in place). */
const inWasm = wasmAlloc(256 * 1024, 64);
function copyToWasm(data: Uint8Array, offset: number): Uint8Array {
  const view = inWasm.subarray(offset, offset + data.byteLength);
  view.set(data);
  return view;
}

Deno.test("crc32c: known answer '123456789' = 0xe3069283 in every implementation", () => {
  const data = new TextEncoder().encode("123456789");
  assertEquals(crc32cBitwise(data), 0xe3069283);
  for (const [name, f] of Object.entries(IMPLS)) {
    assertEquals(f(data), 0xe3069283, name);
    assertEquals(f(copyToWasm(data, 3)), 0xe3069283, `${name} in wasm memory`);
  }
});

Deno.test("crc32c: empty input gives 0, or the seed unchanged", () => {
  for (const [name, f] of Object.entries(IMPLS)) {
    assertEquals(f(new Uint8Array(0)), 0, name);
    assertEquals(f(new Uint8Array(0), 0x12345678), 0x12345678, name);
    assertEquals(f(inWasm.subarray(5, 5)), 0, `${name} in wasm memory`);
  }
});

Deno.test("crc32c: iSCSI test vectors (RFC 3720 B.4)", () => {
  const ascending = Uint8Array.from({ length: 32 }, (_, i) => i);
  const descending = Uint8Array.from({ length: 32 }, (_, i) => 31 - i);
  // An iSCSI SCSI Read (10) command PDU.
  const readPdu = new Uint8Array(48);
  readPdu.set([0x01, 0xc0], 0);
  readPdu[16] = 0x14;
  readPdu[22] = 0x04;
  readPdu[27] = 0x14;
  readPdu[31] = 0x18;
  readPdu[32] = 0x28;
  readPdu[40] = 0x02;
  const vectors: [string, Uint8Array, number][] = [
    ["32 zeros", new Uint8Array(32), 0x8a9136aa],
    ["32 x 0xff", new Uint8Array(32).fill(0xff), 0x62a8ab43],
    ["ascending 0..31", ascending, 0x46dd794e],
    ["descending 31..0", descending, 0x113fdb5c],
    ["iSCSI read PDU", readPdu, 0xd9963a56],
  ];
  for (const [what, data, want] of vectors) {
    assertEquals(crc32cBitwise(data), want, `bitwise ${what}`);
    for (const [name, f] of Object.entries(IMPLS)) {
      assertEquals(f(data), want, `${name} ${what}`);
      assertEquals(f(copyToWasm(data, 1)), want, `${name} ${what} in wasm memory`);
    }
  }
});

Deno.test("crc32c: the TS reference matches the bitwise definition", () => {
  const next = rng(7);
  for (let n = 0; n < 300; n++) {
    const data = randomBytes(n, next);
    const seed = next();
    assertEquals(crc32cTs(data, seed), crc32cBitwise(data, seed), `length ${n}`);
  }
});

Deno.test("crc32c: kernels agree on every length near the block edges", () => {
  const next = rng(11);
  const big = randomBytes(70_100, next);
  const edges = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 63, 64, 255, 256, 257, 511, 512, 513];
  for (const e of [4096, 8192, 65536]) edges.push(e - 257, e - 256, e - 1, e, e + 1, e + 255);
  edges.push(65537 + 4096, 70_000);
  for (const n of edges) {
    for (const off of [0, 1, 5, 16]) {
      const data = big.subarray(off, off + n);
      const want = crc32cTs(data);
      assertEquals(crc32c(data), want, `crc32c n=${n} off=${off}`);
      assertEquals(crc32cSimd(data), want, `simd n=${n} off=${off}`);
      assertEquals(crc32cStrict(data), want, `strict n=${n} off=${off}`);
      assertEquals(crc32cScalar(data), want, `scalar n=${n} off=${off}`);
      assertEquals(crc32cSimd(copyToWasm(data, off)), want, `simd in wasm n=${n} off=${off}`);
    }
  }
});

Deno.test("crc32c: random lengths 0..70000 at random offsets, inside and outside wasm memory", () => {
  const seed = Date.now() >>> 0;
  const next = rng(seed);
  const pool = randomBytes(140_000, next);
  for (let i = 0; i < 200; i++) {
    // Half short inputs (tails, small blocks), half anywhere up to 70000.
    const n = i % 2 === 0 ? next() % 1200 : next() % 70_001;
    const off = next() % 64;
    const crcSeed = i % 3 === 0 ? next() : 0;
    const data = pool.subarray(off, off + n);
    const want = crc32cTs(data, crcSeed);
    const ctx = `rng seed ${seed}, case ${i}: n=${n} off=${off} seed=${crcSeed}`;
    assertEquals(crc32c(data, crcSeed), want, `crc32c ${ctx}`);
    assertEquals(crc32cSimd(data, crcSeed), want, `simd ${ctx}`);
    assertEquals(crc32cStrict(data, crcSeed), want, `strict ${ctx}`);
    assertEquals(crc32cScalar(data, crcSeed), want, `scalar ${ctx}`);
    const wasmOff = next() % 4096;
    const inside = copyToWasm(data, wasmOff);
    assertEquals(crc32cSimd(inside, crcSeed), want, `simd in wasm at ${wasmOff} ${ctx}`);
    assertEquals(crc32c(inside, crcSeed), want, `crc32c in wasm at ${wasmOff} ${ctx}`);
  }
});

Deno.test("crc32c: chaining, crc32c(b, crc32c(a)) === crc32c(a ++ b)", () => {
  const next = rng(23);
  const data = randomBytes(20_000, next);
  const whole = crc32cTs(data);
  const cuts = [0, 1, 3, 255, 256, 4095, 4096, 4097, 10_000, 19_999, 20_000];
  for (let i = 0; i < 20; i++) cuts.push(next() % 20_001);
  for (const cut of cuts) {
    const a = data.subarray(0, cut);
    const b = data.subarray(cut);
    for (const [name, f] of Object.entries(IMPLS)) {
      assertEquals(f(b, f(a)), whole, `${name} cut at ${cut}`);
    }
    assertEquals(crc32cSimd(copyToWasm(b, 7), crc32cSimd(a)), whole, `mixed cut at ${cut}`);
  }
  // Many small pieces, as a stream parser would feed them.
  let crc = 0;
  for (let off = 0; off < data.length; off += 37) crc = crc32c(data.subarray(off, off + 37), crc);
  assertEquals(crc, whole);
});

Deno.test("crc32c: inputs larger than the scratch area are staged in pieces", () => {
  const data = randomBytes(3 * 65536 + 1234, rng(5));
  assertEquals(crc32c(data), crc32cTs(data));
  assertEquals(crc32cStrict(data), crc32cTs(data));
  assertEquals(crc32cScalar(data), crc32cTs(data));
});

Deno.test("crc32c: a buffer in wasm memory is read in place, not copied", () => {
  const scratch = () =>
    wasmMemoryBytes().subarray(kernels.scratch_ptr(), kernels.scratch_ptr() + 64).slice();
  const outside = randomBytes(64, rng(3));
  crc32cSimd(outside); // stages `outside` in the scratch area
  assertEquals(scratch(), outside);
  const inside = copyToWasm(randomBytes(4096, rng(4)), 128);
  assertEquals(crc32cSimd(inside), crc32cTs(inside));
  assertEquals(crc32c(inside), crc32cTs(inside));
  assertEquals(scratch(), outside, "the scratch area was not touched");
});

Deno.test("crc32c: a seed outside [0, 2^32) is a programmer error", () => {
  const data = new Uint8Array(4);
  for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) {
    for (const f of Object.values(IMPLS)) assertThrows(() => f(data, bad), RangeError, "seed");
  }
});

Deno.test("crc32c: a view of a detached buffer throws instead of hashing nothing", () => {
  const buffer = new ArrayBuffer(16);
  const view = new Uint8Array(buffer);
  buffer.transfer(); // detaches `buffer`; `view` now reads as empty
  for (const f of Object.values(IMPLS).slice(0, 4)) {
    assertThrows(() => f(view), TypeError, "detached");
  }
});

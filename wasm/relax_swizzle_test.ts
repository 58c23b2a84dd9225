import { assert, assertEquals, assertThrows } from "../src/testing/assert.ts";
import { KERNELS_WASM_URL } from "./kernels.ts";
import { relaxSwizzles, WasmRewriteError } from "./relax_swizzle.ts";

const I32 = 0x7f;
const SWIZZLE = [0xfd, 14];
const RELAXED_SWIZZLE = [0xfd, 0x80, 0x02];

function section(id: number, body: number[]): number[] {
  return [id, body.length, ...body]; // bodies here stay under 128 bytes
}

function name(s: string): number[] {
  return [s.length, ...new TextEncoder().encode(s)];
}

/** Body of `(a: i32, b: i32) -> i32` = lane 0 of `i8x16.swizzle(splat(a), splat(b))`. */
// deno-fmt-ignore
const SWIZZLE_BODY = [
  0x20, 0, 0xfd, 17, // local.get 0, i32x4.splat
  0x20, 1, 0xfd, 17, // local.get 1, i32x4.splat
  ...SWIZZLE,
  0xfd, 27, 0, // i32x4.extract_lane 0
  0x0b, // end
];

function module(exports: [string, number][], bodies: number[][]): Uint8Array {
  const code = bodies.flatMap((b) => [b.length + 1, 0, ...b]); // size, no locals, code
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 2, I32, I32, 1, I32]),
    ...section(3, [bodies.length, ...bodies.map(() => 0)]),
    ...section(7, [exports.length, ...exports.flatMap(([n, i]) => [...name(n), 0, i])]),
    ...section(10, [bodies.length, ...code]),
  ]);
}

function instantiate(bytes: Uint8Array): Record<string, (a: number, b: number) => number> {
  const copy = new Uint8Array(bytes); // an ArrayBuffer-backed copy for the BufferSource type
  const exports = new WebAssembly.Instance(new WebAssembly.Module(copy)).exports;
  const out: Record<string, (a: number, b: number) => number> = {};
  for (const [k, v] of Object.entries(exports)) {
    if (typeof v === "function") out[k] = v as (a: number, b: number) => number;
  }
  return out;
}

function count(bytes: Uint8Array, seq: number[]): number {
  let n = 0;
  for (let i = 0; i + seq.length <= bytes.length; i++) {
    if (seq.every((b, k) => bytes[i + k] === b)) n++;
  }
  return n;
}

Deno.test("relaxSwizzles: rewrites only the listed export, which keeps computing the same", () => {
  const input = module([["fast", 0], ["strict", 1]], [SWIZZLE_BODY, SWIZZLE_BODY]);
  const { bytes, rewritten } = relaxSwizzles(input, ["fast"]);
  assertEquals(rewritten, { fast: 1 });
  assertEquals(count(bytes, RELAXED_SWIZZLE), 1);
  assertEquals(bytes.length, input.length + 1);
  const before = instantiate(input);
  const after = instantiate(bytes);
  // In-range indices: identical results (table bytes 11 22 33 44, indices 3 2 1 0).
  for (const f of [before.fast, before.strict, after.fast, after.strict]) {
    assert(f !== undefined);
    assertEquals(f(0x44332211, 0x00010203) >>> 0, 0x11223344);
  }
  // Index 16 (byte 0; the other index bytes are 0) is why the rewrite is
  // opt-in: strict gives 0, relaxed may give table[16 % 16] instead.
  assertEquals((after.strict?.(0x44332211, 16) ?? -1) & 0xff, 0);
  const relaxed = (after.fast?.(0x44332211, 16) ?? -1) & 0xff;
  assert(relaxed === 0 || relaxed === 0x11, `relaxed index 16 gave ${relaxed}`);
});

Deno.test("relaxSwizzles: refuses a function exported under a listed and an unlisted name", () => {
  const input = module([["a", 0], ["b", 0]], [SWIZZLE_BODY]);
  assertThrows(() => relaxSwizzles(input, ["a"]), WasmRewriteError, "shares its function");
  assertEquals(relaxSwizzles(input, ["a", "b"]).rewritten, { a: 1, b: 1 });
});

Deno.test("relaxSwizzles: rejects unknown exports, opcodes and non-modules", () => {
  const input = module([["f", 0]], [SWIZZLE_BODY]);
  assertThrows(() => relaxSwizzles(input, ["g"]), WasmRewriteError, "No exported function");
  const withTry = module([["f", 0]], [[0x06, 0x40, 0x0b, 0x41, 0, 0x0b]]); // try ... end
  assertThrows(() => relaxSwizzles(withTry, ["f"]), WasmRewriteError, "Unknown opcode");
  assertThrows(() => relaxSwizzles(new Uint8Array(8), ["f"]), WasmRewriteError, "Not a");
});

Deno.test("relaxSwizzles: walks the real kernels module and round-trips it byte for byte", () => {
  const dist = Deno.readFileSync(KERNELS_WASM_URL);
  const { bytes } = relaxSwizzles(dist, []);
  assertEquals(bytes, dist);
  // The committed module is already rewritten: crc32c has none left.
  assertEquals(relaxSwizzles(dist, ["crc32c"]).rewritten, { crc32c: 0 });
  assert(count(dist, RELAXED_SWIZZLE) > 0);
});

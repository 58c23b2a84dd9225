/**
 * CRC32C (Castagnoli; reflected polynomial 0x82F63B78, initial value and
 * final xor 0xFFFFFFFF) on the wasm kernels, the digest of iSCSI and
 * NVMe/TCP.
 *
 * Cost model: a `Uint8Array` that is a view of the wasm memory (see
 * {@linkcode wasmAlloc}) is read in place, no copy. Any other array is first
 * copied into a 64 KiB scratch area inside the wasm memory, one piece at a
 * time; the copy runs at memcpy speed (~16 GB/s for 4 KiB) and makes a CRC
 * ~15% slower than on an in-place buffer, at 4 KiB as at 128 KiB
 * (docs/wasm.md has the figures). Data-path buffers should therefore come
 * from `wasmAlloc`.
 *
 * @module
 */

import { crc32cTs } from "./crc32c_ts.ts";
import { kernels, wasmMemoryBytes } from "./kernels.ts";

type Kernel = (seed: number, ptr: number, len: number) => number;

/**
 * Below this many bytes `crc32c` stays in TypeScript: a call into wasm
 * costs ~50 ns, more than slicing-by-8 spends on a short header digest
 * (measured crossover ~100-128 bytes, docs/wasm.md).
 */
const TS_BELOW_BYTES = 128;

const scratchPtr = kernels.scratch_ptr() >>> 0;
const scratchBytes = kernels.scratch_bytes() >>> 0;

function checkSeed(seed: number): void {
  if ((seed >>> 0) !== seed) {
    throw new RangeError(`CRC32C seed must be an integer in [0, 2^32), got ${seed}.`);
  }
}

function run(kernel: Kernel, data: Uint8Array, seed: number): number {
  checkSeed(seed);
  const n = data.byteLength;
  if (data.buffer === kernels.memory.buffer) return kernel(seed, data.byteOffset, n) >>> 0;
  if (n === 0) {
    // A view of a detached buffer (for example of the wasm memory before
    // initWasmMemory grew it) reads as empty; refuse instead of a wrong CRC.
    const buffer = data.buffer;
    if (buffer instanceof ArrayBuffer && buffer.detached) {
      throw new TypeError("CRC32C input is a view of a detached ArrayBuffer.");
    }
    return seed;
  }
  const mem = wasmMemoryBytes();
  if (n <= scratchBytes) {
    mem.set(data, scratchPtr);
    return kernel(seed, scratchPtr, n) >>> 0;
  }
  let crc = seed;
  for (let off = 0; off < n; off += scratchBytes) {
    const piece = data.subarray(off, Math.min(off + scratchBytes, n));
    mem.set(piece, scratchPtr);
    crc = kernel(crc, scratchPtr, piece.byteLength) >>> 0;
  }
  return crc;
}

/**
 * CRC32C of `data`, continuing from `seed` (the CRC of the bytes before it;
 * 0 to start), so `crc32c(b, crc32c(a)) === crc32c(a ++ b)`. Returns an
 * unsigned 32-bit number. Inputs under 128 bytes are hashed in TypeScript
 * (cheaper than a call into wasm), longer ones by the wasm kernels: SIMD
 * from 256 bytes, scalar slicing-by-8 for shorter tails.
 *
 * @throws {RangeError} when `seed` is not an integer in [0, 2^32).
 * @throws {TypeError} when `data` is a view of a detached buffer.
 *
 * @example
 * ```ts
 * import { crc32c } from "./crc32c.ts";
 * const text = new TextEncoder().encode("123456789");
 * console.assert(crc32c(text) === 0xe3069283);
 * ```
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  const n = data.byteLength;
  if (n > 0 && n < TS_BELOW_BYTES) return crc32cTs(data, seed);
  return run(kernels.crc32c, data, seed);
}

/**
 * As {@linkcode crc32c}, always on the wasm SIMD kernel (relaxed swizzles),
 * whatever the length: for benchmarks and cross-checks.
 */
export function crc32cSimd(data: Uint8Array, seed = 0): number {
  return run(kernels.crc32c, data, seed);
}

/** As {@linkcode crc32c} on the scalar slicing-by-8 wasm kernel (reference). */
export function crc32cScalar(data: Uint8Array, seed = 0): number {
  return run(kernels.crc32c_scalar, data, seed);
}

/**
 * As {@linkcode crc32c} on the same SIMD kernel with strict `i8x16.swizzle`
 * (not rewritten to relaxed): for benchmarks and cross-checks only.
 */
export function crc32cStrict(data: Uint8Array, seed = 0): number {
  return run(kernels.crc32c_strict, data, seed);
}

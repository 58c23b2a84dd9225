/**
 * CRC32C in plain TypeScript, slicing-by-8: the peer the wasm kernels are
 * measured against and an independent reference for their tests.
 *
 * @module
 */

const POLY = 0x82f63b78;

/** `TABLES[k * 256 + i]`: the register after feeding byte `i` and then `k` zero bytes. */
const TABLES: Uint32Array = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let r = i;
    for (let bit = 0; bit < 8; bit++) r = r & 1 ? (r >>> 1) ^ POLY : r >>> 1;
    t[i] = r;
  }
  for (let k = 1; k < 8; k++) {
    for (let i = 0; i < 256; i++) {
      const prev = t[(k - 1) * 256 + i] as number;
      t[k * 256 + i] = (prev >>> 8) ^ (t[prev & 0xff] as number);
    }
  }
  return t;
})();

/**
 * CRC32C of `data` continuing from `seed` (0 to start), as an unsigned
 * 32-bit number; same contract as `crc32c` in crc32c.ts.
 *
 * @throws {RangeError} when `seed` is not an integer in [0, 2^32).
 *
 * @example
 * ```ts
 * import { crc32cTs } from "./crc32c_ts.ts";
 * console.assert(crc32cTs(new TextEncoder().encode("123456789")) === 0xe3069283);
 * ```
 */
export function crc32cTs(data: Uint8Array, seed = 0): number {
  if ((seed >>> 0) !== seed) {
    throw new RangeError(`CRC32C seed must be an integer in [0, 2^32), got ${seed}.`);
  }
  const t = TABLES;
  const n = data.length;
  let crc = ~seed;
  let i = 0;
  // `as number`: indices are in range by the loop bounds (noUncheckedIndexedAccess).
  for (const end8 = n - 7; i < end8; i += 8) {
    const lo = ((data[i] as number) | ((data[i + 1] as number) << 8) |
      ((data[i + 2] as number) << 16) | ((data[i + 3] as number) << 24)) ^ crc;
    crc = (t[0x700 + (lo & 0xff)] as number) ^
      (t[0x600 + ((lo >>> 8) & 0xff)] as number) ^
      (t[0x500 + ((lo >>> 16) & 0xff)] as number) ^
      (t[0x400 + (lo >>> 24)] as number) ^
      (t[0x300 + (data[i + 4] as number)] as number) ^
      (t[0x200 + (data[i + 5] as number)] as number) ^
      (t[0x100 + (data[i + 6] as number)] as number) ^
      (t[data[i + 7] as number] as number);
  }
  for (; i < n; i++) crc = (crc >>> 8) ^ (t[(crc ^ (data[i] as number)) & 0xff] as number);
  return ~crc >>> 0;
}

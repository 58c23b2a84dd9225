/**
 * The AES-256-XTS engine interface (IEEE 1619). Two engines implement it:
 * WASM SIMD (wasm/, src/crypto/wasm_xts.ts) and OpenSSL's libcrypto through
 * FFI (src/crypto/native_xts.ts); src/crypto/engines.ts picks one
 * (`wasm`, `native`, `auto`). Both must agree bit for bit.
 *
 * Terms: a data unit is the piece of data encrypted with one tweak (512 or
 * 4096 bytes, or the block size); the tweak of data unit `n` is `n` as a
 * 128-bit little-endian number (for the crypto bdev: the LBA of the first
 * block of the unit, in units of the data-unit size).
 * @module
 */

/** Data-unit sizes the engines accept: powers of two from 16 bytes to 1 MiB... */
export const XTS_DATA_UNIT_MIN = 16;
/** ...in practice 512 and 4096 (IEEE 1619 allows any size of 16 bytes or more). */
export const XTS_DATA_UNIT_MAX = 1024 * 1024;

/** A key loaded into an engine: its expanded schedules live in the engine's memory. */
export interface XtsKey {
  /**
   * Encrypts `src` into `dst` (same length, a multiple of `dataUnitSize`;
   * `dst` may be `src` for in place). Data unit `i` of the buffer uses the
   * tweak `firstDataUnit + i`. No allocation per call.
   */
  encrypt(src: Uint8Array, dst: Uint8Array, dataUnitSize: number, firstDataUnit: number): void;
  /** The inverse of {@link encrypt}. */
  decrypt(src: Uint8Array, dst: Uint8Array, dataUnitSize: number, firstDataUnit: number): void;
  /** Zeroes the key material and schedules; the key cannot be used afterwards. */
  destroy(): void;
}

/** One implementation of AES-256-XTS. */
export interface XtsEngine {
  readonly name: "wasm" | "native";
  /**
   * Loads a 64-byte XTS key (key1 || key2, 32 bytes each). The caller keeps
   * ownership of `key` (and zeroes it); the engine copies what it needs.
   * @throws {RangeError} when `key` is not 64 bytes or its halves are equal
   */
  createKey(key: Uint8Array): XtsKey;
}

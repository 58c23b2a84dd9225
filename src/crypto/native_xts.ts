/**
 * The native AES-256-XTS engine: OpenSSL's EVP aes-256-xts through FFI
 * (ffi/libcrypto.ts). One encrypt and one decrypt context per key hold the
 * expanded key schedules in OpenSSL's memory; `EVP_CIPHER_CTX_free`
 * cleanses them.
 *
 * Per data unit: the tweak goes into a preallocated 16-byte IV, then one
 * `Init` (IV only) and one `Update`. A buffer of several data units needs a
 * view per unit (FFI takes a typed array, not an offset): two short-lived
 * objects per unit, none when the buffer is one unit (the crypto bdev
 * passes one unit at a time from its bounce buffers' prebuilt views).
 * @module
 */
import { type Libcrypto, loadLibcrypto, opensslErrors } from "../../ffi/libcrypto.ts";
import { XTS_DATA_UNIT_MAX, XTS_DATA_UNIT_MIN, type XtsEngine, type XtsKey } from "./xts.ts";

/** Checks a data-unit size and a buffer pair against it; throws RangeError. */
export function checkXtsArgs(
  src: Uint8Array,
  dst: Uint8Array,
  dataUnitSize: number,
  firstDataUnit: number,
): void {
  if (
    !Number.isInteger(dataUnitSize) || dataUnitSize < XTS_DATA_UNIT_MIN ||
    dataUnitSize > XTS_DATA_UNIT_MAX || (dataUnitSize & (dataUnitSize - 1)) !== 0
  ) {
    throw new RangeError(
      `XTS data unit must be a power of two from 16 to 1 MiB, got ${dataUnitSize}`,
    );
  }
  if (src.byteLength !== dst.byteLength || src.byteLength % dataUnitSize !== 0) {
    throw new RangeError(
      `XTS buffers must be the same length, a multiple of ${dataUnitSize}: got ${src.byteLength} and ${dst.byteLength}`,
    );
  }
  if (!Number.isSafeInteger(firstDataUnit) || firstDataUnit < 0) {
    throw new RangeError(
      `XTS data-unit number must be a non-negative integer, got ${firstDataUnit}`,
    );
  }
}

/** Checks a 64-byte XTS key (key1 || key2, halves different); throws RangeError. */
export function checkXtsKey(key: Uint8Array): void {
  if (key.byteLength !== 64) {
    throw new RangeError(
      `an AES-256-XTS key is 64 bytes (two 32-byte keys), got ${key.byteLength}`,
    );
  }
  let diff = 0;
  for (let i = 0; i < 32; i++) diff |= (key[i] as number) ^ (key[i + 32] as number);
  if (diff === 0) {
    throw new RangeError("the two halves of an XTS key must differ (IEEE 1619 / FIPS 140-3)");
  }
}

class NativeXtsKey implements XtsKey {
  readonly #lib: Libcrypto;
  #enc: Deno.PointerValue;
  #dec: Deno.PointerValue;
  readonly #iv = new Uint8Array(16);
  readonly #ivView = new DataView(this.#iv.buffer);
  readonly #outl = new Int32Array(1);

  constructor(lib: Libcrypto, key: Uint8Array) {
    this.#lib = lib;
    const s = lib.symbols;
    const cipher = s.EVP_aes_256_xts();
    this.#enc = s.EVP_CIPHER_CTX_new();
    this.#dec = s.EVP_CIPHER_CTX_new();
    if (
      this.#enc === null || this.#dec === null ||
      s.EVP_EncryptInit_ex(this.#enc, cipher, null, key, this.#iv) !== 1 ||
      s.EVP_DecryptInit_ex(this.#dec, cipher, null, key, this.#iv) !== 1
    ) {
      const why = opensslErrors(lib);
      this.destroy();
      throw new Error(`OpenSSL refused the AES-256-XTS key: ${why}`);
    }
  }

  #setTweak(n: number): void {
    // The tweak is the data-unit number as a 128-bit little-endian integer.
    const v = this.#ivView;
    v.setUint32(0, n >>> 0, true);
    v.setUint32(4, Math.floor(n / 0x1_0000_0000), true);
  }

  encrypt(src: Uint8Array, dst: Uint8Array, dataUnitSize: number, firstDataUnit: number): void {
    this.#run(true, src, dst, dataUnitSize, firstDataUnit);
  }

  decrypt(src: Uint8Array, dst: Uint8Array, dataUnitSize: number, firstDataUnit: number): void {
    this.#run(false, src, dst, dataUnitSize, firstDataUnit);
  }

  #run(enc: boolean, src: Uint8Array, dst: Uint8Array, du: number, first: number): void {
    const ctx = enc ? this.#enc : this.#dec;
    if (ctx === null) throw new Error("AES-XTS key used after destroy()");
    checkXtsArgs(src, dst, du, first);
    const s = this.#lib.symbols;
    const init = enc ? s.EVP_EncryptInit_ex : s.EVP_DecryptInit_ex;
    const update = enc ? s.EVP_EncryptUpdate : s.EVP_DecryptUpdate;
    const units = src.byteLength / du;
    for (let i = 0; i < units; i++) {
      this.#setTweak(first + i);
      let ok = init(ctx, null, null, null, this.#iv);
      if (units === 1) ok &= update(ctx, dst, this.#outl, src, du);
      else {
        const off = i * du;
        ok &= update(ctx, dst.subarray(off, off + du), this.#outl, src.subarray(off, off + du), du);
      }
      if (ok !== 1) {
        throw new Error(
          `OpenSSL AES-XTS ${enc ? "encrypt" : "decrypt"} failed: ${opensslErrors(this.#lib)}`,
        );
      }
    }
  }

  destroy(): void {
    // EVP_CIPHER_CTX_free cleanses the key schedules before freeing them.
    if (this.#enc !== null) this.#lib.symbols.EVP_CIPHER_CTX_free(this.#enc);
    if (this.#dec !== null) this.#lib.symbols.EVP_CIPHER_CTX_free(this.#dec);
    this.#enc = this.#dec = null;
    this.#iv.fill(0);
  }
}

class NativeXtsEngine implements XtsEngine {
  readonly name = "native" as const;
  constructor(readonly lib: Libcrypto) {}

  createKey(key: Uint8Array): XtsKey {
    checkXtsKey(key);
    return new NativeXtsKey(this.lib, key);
  }
}

/** The OpenSSL engine, or null when libcrypto.so.3 cannot be loaded. */
export function createNativeXtsEngine(): XtsEngine | null {
  const lib = loadLibcrypto();
  return lib === null ? null : new NativeXtsEngine(lib);
}

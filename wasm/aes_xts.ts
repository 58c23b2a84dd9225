/**
 * AES-256-XTS on the wasm kernels (wasm/kernels/src/aes_xts.rs): key slots
 * in wasm memory, and encrypt/decrypt of whole data units.
 *
 * Key slots: a key's expanded schedules (key1 for both directions, key2 for
 * the tweaks) live in a 1 KiB slot of the wasm memory. Slots come from a
 * pool: 32 static slots that exist from instantiation, then slots taken
 * from the heap with `wasmAlloc` (wasm memory is never freed, so a
 * destroyed key's slot is zeroed and reused, never dropped). The raw key is
 * copied into the slot, expanded by the kernel, and zeroed by it.
 *
 * Buffers: a `Uint8Array` that is a view of the wasm memory is read and
 * written in place; any other array is staged through the 64 KiB scratch
 * area in whole data units (so data units larger than 64 KiB need buffers
 * from `wasmAlloc`).
 *
 * @module
 */

import { isInWasmMemory, kernels, wasmAlloc, wasmMemoryBytes } from "./kernels.ts";

/** Bytes of one key slot. */
export const XTS_SLOT_BYTES: number = kernels.xts_slot_bytes() >>> 0;
/** Where the raw 64-byte key goes inside a slot before `xts_key_init`. */
const RAW_OFFSET = 768;
/** Where a call's first data-unit number goes (16 bytes, little endian). */
const UNIT_OFFSET = 832;

const scratchPtr = kernels.scratch_ptr() >>> 0;
const scratchBytes = kernels.scratch_bytes() >>> 0;

const freeSlots: number[] = [];
{
  const base = kernels.xts_static_slots_ptr() >>> 0;
  const n = kernels.xts_static_slots() >>> 0;
  for (let i = n - 1; i >= 0; i--) freeSlots.push(base + i * XTS_SLOT_BYTES);
}
let slotsInUse = 0;

/** Key slots handed out and free (for tests and metrics). */
export function xtsSlotStats(): { inUse: number; free: number } {
  return { inUse: slotsInUse, free: freeSlots.length };
}

/**
 * Expands a 64-byte XTS key (key1 || key2) into a fresh slot and returns
 * the slot's offset. The caller keeps (and zeroes) `key`.
 * @throws {RangeError} when `key` is not 64 bytes or its halves are equal
 */
export function xtsKeyLoad(key: Uint8Array): number {
  if (key.byteLength !== 64) {
    throw new RangeError(`An AES-256-XTS key is 64 bytes (key1 || key2), got ${key.byteLength}.`);
  }
  let slot = freeSlots.pop();
  // Beyond the static slots: one more from the heap (throws before initWasmMemory).
  if (slot === undefined) slot = wasmAlloc(XTS_SLOT_BYTES, 64).byteOffset;
  const mem = wasmMemoryBytes();
  mem.set(key, slot + RAW_OFFSET);
  const rc = kernels.xts_key_init(slot); // zeroes the raw copy in every case
  if (rc !== 0) {
    kernels.xts_key_wipe(slot);
    freeSlots.push(slot);
    throw new RangeError("The two halves of an XTS key must differ (IEEE 1619).");
  }
  slotsInUse++;
  return slot;
}

/** Zeroes a slot from {@linkcode xtsKeyLoad} and returns it to the pool. */
export function xtsKeyWipe(slot: number): void {
  kernels.xts_key_wipe(slot);
  freeSlots.push(slot);
  slotsInUse--;
}

/** Which kernel: relaxed swizzles (the default) or strict (cross-check, bench). */
export type XtsVariant = "relaxed" | "strict";

const KERNELS = {
  relaxed: { encrypt: kernels.xts_encrypt, decrypt: kernels.xts_decrypt },
  strict: { encrypt: kernels.xts_encrypt_strict, decrypt: kernels.xts_decrypt_strict },
};

function checkArgs(
  src: Uint8Array,
  dst: Uint8Array,
  du: number,
  first: number | Uint8Array,
): void {
  if (src.byteLength !== dst.byteLength) {
    throw new RangeError(
      `XTS source and destination differ in length (${src.byteLength}, ${dst.byteLength}).`,
    );
  }
  if (!Number.isSafeInteger(du) || du < 16 || du % 16 !== 0 || du > 1024 * 1024) {
    throw new RangeError(`XTS data-unit size must be a multiple of 16 in [16, 1 MiB], got ${du}.`);
  }
  if (src.byteLength % du !== 0) {
    throw new RangeError(
      `XTS length ${src.byteLength} is not a whole number of ${du}-byte data units ` +
        "(ciphertext stealing is not supported).",
    );
  }
  if (typeof first === "number" ? !Number.isSafeInteger(first) || first < 0 : first.length !== 16) {
    throw new RangeError(
      "XTS data-unit number must be a safe non-negative integer or 16 little-endian bytes.",
    );
  }
}

/**
 * Encrypts (`decrypt` false) or decrypts `src` into `dst` with the key in
 * `slot`, data units of `du` bytes numbered from `first` (a safe integer,
 * or a 16-byte little-endian number for the full 128-bit range).
 * @throws {RangeError} on mismatched lengths, a bad data-unit size, a length
 * that is not a whole number of data units, or a bad unit number.
 */
export function xtsRun(
  slot: number,
  decrypt: boolean,
  src: Uint8Array,
  dst: Uint8Array,
  du: number,
  first: number | Uint8Array,
  variant: XtsVariant = "relaxed",
): void {
  checkArgs(src, dst, du, first);
  const kernel = decrypt ? KERNELS[variant].decrypt : KERNELS[variant].encrypt;
  const n = src.byteLength;
  if (n === 0) return;
  const mem = wasmMemoryBytes();
  if (isInWasmMemory(src) && isInWasmMemory(dst)) {
    // The data path (buffers from wasmAlloc): in place, no allocation.
    runKernel(kernel, mem, slot, src.byteOffset, dst.byteOffset, n, du, first, 0);
    return;
  }
  if (du > scratchBytes) {
    throw new RangeError(
      `XTS data units over ${scratchBytes} bytes need src and dst in wasm memory (wasmAlloc).`,
    );
  }
  const piece = scratchBytes - (scratchBytes % du);
  for (let off = 0; off < n; off += piece) {
    const len = Math.min(piece, n - off);
    if (isInWasmMemory(src)) {
      runKernel(kernel, mem, slot, src.byteOffset + off, scratchPtr, len, du, first, off / du);
    } else {
      mem.set(src.subarray(off, off + len), scratchPtr);
      runKernel(kernel, mem, slot, scratchPtr, scratchPtr, len, du, first, off / du);
    }
    dst.set(mem.subarray(scratchPtr, scratchPtr + len), off);
  }
  // Plaintext or ciphertext must not linger in the scratch area.
  mem.fill(0, scratchPtr, scratchPtr + Math.min(piece, n));
}

type Kernel = typeof kernels.xts_encrypt;

/** One kernel call: writes the first unit number into the slot, checks the result. */
function runKernel(
  kernel: Kernel,
  mem: Uint8Array,
  slot: number,
  from: number,
  to: number,
  len: number,
  du: number,
  first: number | Uint8Array,
  unitsBefore: number,
): void {
  const unitPtr = slot + UNIT_OFFSET;
  writeUnit(mem, unitPtr, first, unitsBefore);
  const rc = kernel(slot, from, to, len, du, unitPtr);
  if (rc !== 0) throw new Error(`xts kernel refused its arguments (code ${rc}).`);
}

const unitBytes = new Uint8Array(16);

/** Writes `first + add` as a 128-bit little-endian number at `ptr`. */
function writeUnit(mem: Uint8Array, ptr: number, first: number | Uint8Array, add: number): void {
  let digits = first;
  if (typeof first === "number") {
    let v = first;
    for (let i = 0; i < 16; i++) {
      unitBytes[i] = v % 256;
      v = Math.floor(v / 256);
    }
    digits = unitBytes;
  }
  let carry = add;
  for (let i = 0; i < 16; i++) {
    const v = ((digits as Uint8Array)[i] ?? 0) + (carry % 256);
    carry = Math.floor(carry / 256) + (v >> 8);
    mem[ptr + i] = v & 0xff;
  }
}

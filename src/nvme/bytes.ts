/**
 * Byte-level helpers the structure builders share: little-endian 64-bit
 * values as safe integers, NVMe ASCII (space padded) and UTF-8 (NUL padded)
 * string fields, UUID and hex conversions.
 * @module
 */

/** A DataView over exactly `buf`'s bytes. */
export function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Writes a little-endian 64-bit value given as a safe integer. */
export function setU64(v: DataView, off: number, value: number): void {
  v.setUint32(off, value >>> 0, true);
  v.setUint32(off + 4, Math.floor(value / 0x1_0000_0000) >>> 0, true);
}

/** Reads a little-endian 64-bit value as a Number (exact below 2^53). */
export function getU64(v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * 0x1_0000_0000;
}

/** Writes an ASCII field padded with spaces (NVMe "ASCII string"). Non-ASCII becomes '?'. */
export function putAscii(out: Uint8Array, off: number, len: number, s: string): void {
  for (let i = 0; i < len; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 0x20;
    out[off + i] = c >= 0x20 && c <= 0x7e ? c : 0x3f;
  }
}

/** Reads a space or NUL padded ASCII/UTF-8 field, trimmed. */
export function getString(buf: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && buf[end] !== 0) end++;
  return new TextDecoder().decode(buf.subarray(off, end)).trimEnd();
}

/** Writes a UTF-8 field, NUL padded; truncated to `len - 1` bytes so it stays terminated. */
export function putUtf8(out: Uint8Array, off: number, len: number, s: string): void {
  out.fill(0, off, off + len);
  const bytes = new TextEncoder().encode(s);
  out.set(bytes.subarray(0, len - 1), off);
}

/** The 16 bytes of an RFC 4122 UUID string, in its textual order. */
export function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replaceAll("-", "");
  return hexBytes(hex);
}

/** Bytes from a hex string of even length. */
export function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Upper-case hex of bytes (SPDK prints NGUID and EUI-64 this way). */
export function bytesHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s.toUpperCase();
}

/** A UUID string from 16 bytes. */
export function uuidString(b: Uint8Array): string {
  const h = bytesHex(b).toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Is every byte zero? */
export function allZero(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

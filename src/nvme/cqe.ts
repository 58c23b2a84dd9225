/**
 * Completion Queue Entry fields (NVMe Base 2.0, "Common Completion Queue
 * Entry Layout"): 16 bytes, little-endian.
 *
 * | bytes | field                                                |
 * | ----- | ---------------------------------------------------- |
 * | 0-3   | DW0 (command specific)                               |
 * | 4-7   | DW1 (command specific)                               |
 * | 8-9   | SQHD: SQ head pointer                                |
 * | 10-11 | SQID                                                 |
 * | 12-13 | CID                                                  |
 * | 14-15 | P (bit 0), Status Field (bits 15:1, see `status.ts`) |
 *
 * Writers and readers take the entry's DataView and allocate nothing. Over
 * Fabrics the Phase Tag is not used and is left 0.
 * @module
 */

/** Bytes in a completion queue entry. */
export const NVME_CQE_BYTES = 16;

/** Sets DW0. */
export function cqeSetDw0(v: DataView, value: number): void {
  v.setUint32(0, value >>> 0, true);
}

/** Sets DW1. */
export function cqeSetDw1(v: DataView, value: number): void {
  v.setUint32(4, value >>> 0, true);
}

/** Sets the SQ Head Pointer. */
export function cqeSetSqhd(v: DataView, sqhd: number): void {
  v.setUint16(8, sqhd, true);
}

/** Sets the SQ Identifier. */
export function cqeSetSqid(v: DataView, sqid: number): void {
  v.setUint16(10, sqid, true);
}

/** Sets the Command Identifier. */
export function cqeSetCid(v: DataView, cid: number): void {
  v.setUint16(12, cid, true);
}

/** Sets the status field (a `status.ts` value) and the Phase Tag. */
export function cqeSetStatus(v: DataView, status: number, phase = 0): void {
  v.setUint16(14, ((status & 0x7fff) << 1) | (phase & 1), true);
}

/** DW0. */
export function cqeDw0(v: DataView): number {
  return v.getUint32(0, true);
}

/** DW1. */
export function cqeDw1(v: DataView): number {
  return v.getUint32(4, true);
}

/** SQ Head Pointer. */
export function cqeSqhd(v: DataView): number {
  return v.getUint16(8, true);
}

/** SQ Identifier. */
export function cqeSqid(v: DataView): number {
  return v.getUint16(10, true);
}

/** Command Identifier. */
export function cqeCid(v: DataView): number {
  return v.getUint16(12, true);
}

/** The status field value (`status.ts` layout). */
export function cqeStatus(v: DataView): number {
  return v.getUint16(14, true) >> 1;
}

/** The Phase Tag. */
export function cqePhase(v: DataView): number {
  return v.getUint16(14, true) & 1;
}

/**
 * Submission Queue Entry fields (NVMe Base 2.0, "Common Command Format"):
 * 64 bytes, little-endian. Readers take the entry's DataView and allocate
 * nothing, so the data path can call them per command; writers build
 * entries (the host side, tests).
 *
 * | bytes | field                                              |
 * | ----- | -------------------------------------------------- |
 * | 0     | OPC                                                |
 * | 1     | FUSE (1:0), PSDT (7:6)                             |
 * | 2-3   | CID                                                |
 * | 4-7   | NSID                                               |
 * | 8-15  | CDW2, CDW3                                         |
 * | 16-23 | MPTR                                               |
 * | 24-39 | DPTR: SGL1 address (24-31), length (32-35), id (39)|
 * | 40-63 | CDW10-CDW15                                        |
 * @module
 */

/** Bytes in a submission queue entry. */
export const NVME_SQE_BYTES = 64;
/** NSID meaning every namespace. */
export const NVME_NSID_ALL = 0xffffffff;

/** PSDT values (byte 1 bits 7:6): how DPTR is read. */
export const NvmePsdt = {
  Prp: 0,
  SglMptrContiguous: 1,
  SglMptrSgl: 2,
} as const;

/** SGL descriptor types (bits 7:4 of the SGL identifier). */
export const NvmeSglType = {
  DataBlock: 0x0,
  BitBucket: 0x1,
  Segment: 0x2,
  LastSegment: 0x3,
  KeyedDataBlock: 0x4,
  TransportDataBlock: 0x5,
  VendorSpecific: 0xf,
} as const;

/** SGL descriptor subtypes (bits 3:0 of the SGL identifier). */
export const NvmeSglSubtype = {
  Address: 0x0,
  /** In-capsule data: the address is an offset into the capsule's data. */
  Offset: 0x1,
  TransportSpecific: 0xa,
} as const;

/** Opcode (byte 0). */
export function sqeOpcode(v: DataView): number {
  return v.getUint8(0);
}

/** Fused operation (byte 1 bits 1:0). */
export function sqeFuse(v: DataView): number {
  return v.getUint8(1) & 3;
}

/** PRP or SGL for Data Transfer (byte 1 bits 7:6). */
export function sqePsdt(v: DataView): number {
  return v.getUint8(1) >> 6;
}

/** Command Identifier (bytes 2-3). */
export function sqeCid(v: DataView): number {
  return v.getUint16(2, true);
}

/** Namespace Identifier (bytes 4-7). */
export function sqeNsid(v: DataView): number {
  return v.getUint32(4, true);
}

/** Command Dword `n` (0-15) as an unsigned 32-bit number. */
export function sqeCdw(v: DataView, n: number): number {
  return v.getUint32(n * 4, true);
}

/** CDW10. */
export function sqeCdw10(v: DataView): number {
  return v.getUint32(40, true);
}

/** CDW11. */
export function sqeCdw11(v: DataView): number {
  return v.getUint32(44, true);
}

/** CDW12. */
export function sqeCdw12(v: DataView): number {
  return v.getUint32(48, true);
}

/** CDW13. */
export function sqeCdw13(v: DataView): number {
  return v.getUint32(52, true);
}

/** CDW14. */
export function sqeCdw14(v: DataView): number {
  return v.getUint32(56, true);
}

/** CDW15. */
export function sqeCdw15(v: DataView): number {
  return v.getUint32(60, true);
}

/** SGL1 descriptor type (byte 39 bits 7:4). */
export function sqeSgl1Type(v: DataView): number {
  return v.getUint8(39) >> 4;
}

/** SGL1 descriptor subtype (byte 39 bits 3:0). */
export function sqeSgl1Subtype(v: DataView): number {
  return v.getUint8(39) & 0xf;
}

/** SGL1 length in bytes (bytes 32-35; data block and segment descriptors). */
export function sqeSgl1Length(v: DataView): number {
  return v.getUint32(32, true);
}

/**
 * SGL1 address (bytes 24-31) as a Number. Exact below 2^53, which covers
 * in-capsule offsets and transport addresses; use {@link sqeSgl1AddressBig}
 * for a full 64-bit host address.
 */
export function sqeSgl1Address(v: DataView): number {
  return v.getUint32(24, true) + v.getUint32(28, true) * 0x1_0000_0000;
}

/** SGL1 address as a BigInt (allocates; control path). */
export function sqeSgl1AddressBig(v: DataView): bigint {
  return v.getBigUint64(24, true);
}

/** Starting LBA of NVM I/O commands (CDW11:CDW10) as a Number; -1 when beyond 2^53. */
export function sqeSlba(v: DataView): number {
  const hi = v.getUint32(44, true);
  if (hi >= 0x20_0000) return -1;
  return v.getUint32(40, true) + hi * 0x1_0000_0000;
}

/** Number of Logical Blocks of Read/Write/Write Zeroes (CDW12 bits 15:0, 0's based) plus one. */
export function sqeNlb(v: DataView): number {
  return (v.getUint16(48, true)) + 1;
}

/** Writers, for building entries (hosts, tests). */
export function sqeSetOpcode(v: DataView, opc: number): void {
  v.setUint8(0, opc);
}

/** Sets FUSE and PSDT (byte 1). */
export function sqeSetFlags(v: DataView, fuse: number, psdt: number): void {
  v.setUint8(1, (fuse & 3) | ((psdt & 3) << 6));
}

/** Sets the CID. */
export function sqeSetCid(v: DataView, cid: number): void {
  v.setUint16(2, cid, true);
}

/** Sets the NSID. */
export function sqeSetNsid(v: DataView, nsid: number): void {
  v.setUint32(4, nsid, true);
}

/** Sets Command Dword `n`. */
export function sqeSetCdw(v: DataView, n: number, value: number): void {
  v.setUint32(n * 4, value >>> 0, true);
}

/** Sets SGL1 as one descriptor: type, subtype, address and length. */
export function sqeSetSgl1(
  v: DataView,
  type: number,
  subtype: number,
  address: number,
  length: number,
): void {
  v.setUint32(24, address >>> 0, true);
  v.setUint32(28, Math.floor(address / 0x1_0000_0000) >>> 0, true);
  v.setUint32(32, length >>> 0, true);
  v.setUint8(36, 0);
  v.setUint8(37, 0);
  v.setUint8(38, 0);
  v.setUint8(39, ((type & 0xf) << 4) | (subtype & 0xf));
}

/** Sets the Starting LBA (CDW10/CDW11). */
export function sqeSetSlba(v: DataView, slba: number): void {
  v.setUint32(40, slba >>> 0, true);
  v.setUint32(44, Math.floor(slba / 0x1_0000_0000) >>> 0, true);
}

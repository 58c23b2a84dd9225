/**
 * The NVMe/TCP PDU wire format (NVM Express TCP Transport Specification
 * 1.0a/1.1, section 3.6): PDU types, flags, header lengths, field offsets,
 * the Fatal Error Status codes of the termination requests, header encoders
 * that write into a caller-provided buffer, and the CRC32C digests.
 *
 * Every PDU starts with the 8-byte common header (CH): PDU-type, FLAGS,
 * HLEN (CH plus PDU-specific header), PDO (offset of the PDU data from the
 * start of the PDU, 0 when there is none) and PLEN (the whole PDU on the
 * wire, digests and padding included). Then come the PDU-specific header,
 * the header digest (HDGST, when negotiated), padding up to PDO, the data and
 * the data digest (DDGST, when negotiated and the PDU has data):
 *
 * ```
 * | CH (8) | PSH (HLEN-8) | HDGST (4)? | PAD | DATA | DDGST (4)? |
 * 0                        HLEN                PDO                PLEN
 * ```
 *
 * Multi-byte fields are little-endian. Both digests are CRC32C (the iSCSI
 * polynomial), stored little-endian; HDGST covers bytes [0, HLEN), DDGST the
 * data bytes only (not the padding).
 *
 * The encoders write a PDU header (and the padding up to PDO) into `buf` at
 * `off` and return how many bytes they wrote: the data and the data digest
 * go out after it from the caller's own buffers (writev), so sending a PDU
 * copies no data. Nothing here allocates.
 *
 * @module
 */
import { crc32c, kernels } from "../../wasm/mod.ts";

/** Which end of the connection a reader or writer is. */
export type PduRole = "target" | "host";

/** PDU-type values (CH byte 0). Even types go host to controller, odd types back. */
export const PduType = {
  ICReq: 0x00,
  ICResp: 0x01,
  H2CTermReq: 0x02,
  C2HTermReq: 0x03,
  CapsuleCmd: 0x04,
  CapsuleResp: 0x05,
  H2CData: 0x06,
  C2HData: 0x07,
  R2T: 0x09,
} as const;
/** A value of {@link PduType}. */
export type PduType = typeof PduType[keyof typeof PduType];

/** Names of the PDU types, for messages. */
export const pduTypeName: Readonly<Record<number, string>> = {
  [PduType.ICReq]: "ICReq",
  [PduType.ICResp]: "ICResp",
  [PduType.H2CTermReq]: "H2CTermReq",
  [PduType.C2HTermReq]: "C2HTermReq",
  [PduType.CapsuleCmd]: "CapsuleCmd",
  [PduType.CapsuleResp]: "CapsuleResp",
  [PduType.H2CData]: "H2CData",
  [PduType.C2HData]: "C2HData",
  [PduType.R2T]: "R2T",
};

/** Bits of the CH FLAGS field. LAST_PDU and SUCCESS exist only in data PDUs. */
export const PduFlag = {
  /** The PDU carries a header digest. */
  HDGSTF: 0x01,
  /** The PDU carries a data digest. */
  DDGSTF: 0x02,
  /** H2CData/C2HData: the last data PDU of the transfer. */
  LAST_PDU: 0x04,
  /** C2HData: the command completed successfully; no CapsuleResp follows (needs LAST_PDU). */
  SUCCESS: 0x08,
} as const;

/** Bits of the DGST field of ICReq and ICResp. */
export const DigestEnable = {
  /** Header digests requested (ICReq) or enabled (ICResp). */
  HDGST: 0x01,
  /** Data digests requested (ICReq) or enabled (ICResp). */
  DDGST: 0x02,
} as const;

/** HLEN of each PDU type: the CH plus the PDU-specific header. */
export const PduHlen = {
  ICReq: 128,
  ICResp: 128,
  TermReq: 24,
  CapsuleCmd: 72,
  CapsuleResp: 24,
  H2CData: 24,
  C2HData: 24,
  R2T: 24,
} as const;

/** Size of the common header. */
export const COMMON_HEADER_BYTES = 8;
/** Size of HDGST and DDGST. */
export const DIGEST_BYTES = 4;
/** The longest PDU header (ICReq/ICResp); HDGST comes on top for the others. */
export const MAX_HLEN = 128;
/** A TermReq is at most 152 bytes: its 24-byte header and up to 128 bytes of the offending header. */
export const TERM_REQ_MAX_PLEN = 152;
/** Most bytes of the offending PDU header a TermReq carries. */
export const TERM_REQ_MAX_DATA = 128;
/** HPDA and CPDA are 0's based dword counts up to 31 (128-byte alignment). */
export const PDA_MAX = 31;
/** The smallest MAXH2CDATA a controller may advertise (it is also a multiple of 4). */
export const MAXH2CDATA_MIN = 4096;
/** The only PDU Format Version defined (PFV of ICReq/ICResp). */
export const PFV_1_0 = 0;
/** Size of a submission queue entry (the CapsuleCmd's PSH). */
export const SQE_BYTES = 64;
/** Size of a completion queue entry (the CapsuleResp's PSH). */
export const CQE_BYTES = 16;

/** Fatal Error Status of H2CTermReq / C2HTermReq (FES field). */
export const Fes = {
  /** FEI: byte offset of the invalid field in the PDU header. */
  InvalidHeaderField: 0x01,
  /** A PDU that is not allowed in the connection's current state. FEI reserved. */
  PduSequenceError: 0x02,
  /** FEI: the header digest that was received (and did not match). */
  HeaderDigestError: 0x03,
  /** Data outside the command's data buffer. FEI reserved. */
  DataTransferOutOfRange: 0x04,
  /** More data in one PDU than the receiver accepts (H2CData above MAXH2CDATA). FEI reserved. */
  DataTransferLimitExceeded: 0x05,
  /** A valid value the receiver does not support (PFV). FEI: byte offset of the field. */
  UnsupportedParameter: 0x06,
} as const;
/** A value of {@link Fes}. */
export type Fes = typeof Fes[keyof typeof Fes];

/** Names of the FES values, for messages. */
export const fesName: Readonly<Record<number, string>> = {
  [Fes.InvalidHeaderField]: "Invalid PDU Header Field",
  [Fes.PduSequenceError]: "PDU Sequence Error",
  [Fes.HeaderDigestError]: "Header Digest Error",
  [Fes.DataTransferOutOfRange]: "Data Transfer Out of Range",
  [Fes.DataTransferLimitExceeded]: "Data Transfer Limit Exceeded",
  [Fes.UnsupportedParameter]: "Unsupported Parameter",
};

/**
 * Byte offsets of the header fields from the start of the PDU: the FEI of an
 * Invalid PDU Header Field error is one of these.
 */
export const PduField = {
  PDU_TYPE: 0,
  FLAGS: 1,
  HLEN: 2,
  PDO: 3,
  PLEN: 4,
  /** ICReq/ICResp: PDU Format Version (16 bits). */
  PFV: 8,
  /** ICReq: HPDA; ICResp: CPDA (8 bits). */
  PDA: 10,
  /** ICReq/ICResp: digest bits, {@link DigestEnable} (8 bits). */
  DGST: 11,
  /** ICReq: MAXR2T, 0's based (32 bits). */
  MAXR2T: 12,
  /** ICResp: MAXH2CDATA in bytes (32 bits). */
  MAXH2CDATA: 12,
  /** TermReq: Fatal Error Status (16 bits). */
  FES: 8,
  /** TermReq: Fatal Error Information (32 bits, not naturally aligned). */
  FEI: 10,
  /** CapsuleCmd: the 64-byte SQE. */
  SQE: 8,
  /** CapsuleResp: the 16-byte CQE. */
  CQE: 8,
  /** H2CData/C2HData/R2T: Command Capsule CID (16 bits). */
  CCCID: 8,
  /** H2CData/R2T: Transfer Tag (16 bits); reserved in C2HData. */
  TTAG: 10,
  /** H2CData/C2HData: offset of the data in the command's buffer (32 bits). */
  DATAO: 12,
  /** H2CData/C2HData: data bytes in this PDU (32 bits). */
  DATAL: 16,
  /** R2T: offset the controller asks for (32 bits). */
  R2TO: 12,
  /** R2T: length the controller asks for (32 bits). */
  R2TL: 16,
} as const;

/** Connection-scoped parameters of the PDUs one side sends, fixed after the IC exchange. */
export interface PduTxParams {
  /** Header digests negotiated. */
  hdgst: boolean;
  /** Data digests negotiated. */
  ddgst: boolean;
  /**
   * The alignment the receiving side asked for, 0's based dwords: the
   * target's CPDA for PDUs a host sends, the host's HPDA for PDUs a target
   * sends.
   */
  txpda: number;
}

/** Reads a little-endian u16. */
export function getLe16(b: Uint8Array, o: number): number {
  return (b[o] as number) | ((b[o + 1] as number) << 8);
}

/** Reads a little-endian u32 (an unsigned number). */
export function getLe32(b: Uint8Array, o: number): number {
  return ((b[o] as number) | ((b[o + 1] as number) << 8) | ((b[o + 2] as number) << 16) |
    ((b[o + 3] as number) << 24)) >>> 0;
}

/** Writes a little-endian u16. */
export function setLe16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}

/** Writes a little-endian u32. */
export function setLe32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}

/** Bytes of alignment a PDA value (HPDA/CPDA, 0's based dwords) asks for. */
export function pdaBytes(pda: number): number {
  return (pda + 1) * 4;
}

/**
 * PDO of a PDU with data: the header and its digest rounded up to the
 * receiver's alignment.
 */
export function pduDataOffset(hlen: number, hdgst: boolean, pda: number): number {
  const a = pdaBytes(pda);
  const full = hlen + (hdgst ? DIGEST_BYTES : 0);
  return Math.ceil(full / a) * a;
}

/** PLEN of a PDU with `dataLength` bytes of data sent with `tx`. */
export function pduLength(hlen: number, tx: PduTxParams, dataLength: number): number {
  if (dataLength === 0) return hlen + (tx.hdgst ? DIGEST_BYTES : 0);
  return pduDataOffset(hlen, tx.hdgst, tx.txpda) + dataLength + (tx.ddgst ? DIGEST_BYTES : 0);
}

// ---------------------------------------------------------------------------
// CRC32C over a byte range without making a view of it.

/** Reflected CRC32C table for the byte-at-a-time path (short JS-heap ranges). */
const CRC_TABLE: Int32Array = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** Below this many bytes a JS-heap range is hashed byte by byte rather than copied into wasm. */
const CRC_BYTEWISE_BELOW = 256;

/*
 * Why the digest helpers below pass CRCs through a Uint32Array or store them
 * straight into a buffer: three quarters of all CRC values are above 2^30,
 * and V8 boxes such a number in a fresh HeapNumber whenever it crosses a
 * JS call that was not inlined (as an argument or a return value). That is
 * one allocation per PDU on the data path; typed-array slots and byte
 * stores never box. (pdu_reader_test.ts counts GC events to keep it so.)
 */

/**
 * Continues the CRC32C in `state[idx]` over `bytes[start, end)`: the
 * allocation-free form of {@linkcode crc32cRange} for chained digests
 * (start with `state[idx] = 0`).
 *
 * Bytes that live in the wasm memory (see `wasmAlloc`) are hashed in place
 * by the SIMD kernel. Other bytes are hashed in TypeScript when short, else
 * through `crc32c` on a subarray (which allocates that view and copies the
 * bytes into the wasm scratch area).
 */
export function crc32cUpdate(
  state: Uint32Array,
  idx: number,
  bytes: Uint8Array,
  start: number,
  end: number,
): void {
  const n = end - start;
  if (n <= 0) return;
  // The native engine takes a whole view (FFI has no offset argument, and a subarray would be
  // an allocation per call): chunk-pool buffers, which are most data digests of reads.
  if (nativeCrc !== null && start === 0 && end === bytes.byteLength && n >= NATIVE_CRC_MIN_BYTES) {
    state[idx] = ~nativeCrc(bytes, n, ~(state[idx] as number) >>> 0);
    return;
  }
  if (bytes.buffer === kernels.memory.buffer) {
    state[idx] = kernels.crc32c(state[idx] as number, bytes.byteOffset + start, n);
    return;
  }
  if (n >= CRC_BYTEWISE_BELOW) {
    state[idx] = crc32c(bytes.subarray(start, end), state[idx] as number);
    return;
  }
  let c = ~(state[idx] as number);
  for (let i = start; i < end; i++) {
    c = (CRC_TABLE[(c ^ (bytes[i] as number)) & 0xff] as number) ^ (c >>> 8);
  }
  state[idx] = ~c;
}

/** The native CRC32C register function (ISA-L), when the native engine is chosen. */
let nativeCrc: ((buf: Uint8Array, len: number, reg: number) => number) | null = null;
/** Below this a native call (~70 ns of FFI) costs more than the WASM kernel. */
const NATIVE_CRC_MIN_BYTES = 512;

/**
 * Chooses the digest engine: a native `crc32_iscsi`-style register function
 * (src/nvmf_tcp/crc_engine.ts loads ISA-L's) for whole views of 512 bytes
 * or more, or null for the WASM kernel everywhere.
 */
export function setNativeCrc32c(
  f: ((buf: Uint8Array, len: number, reg: number) => number) | null,
): void {
  nativeCrc = f;
}

/** Scratch for the digest helpers (single-threaded: no re-entrancy). */
const scratch = new Uint32Array(1);

/**
 * Stores the CRC32C of `src[start, end)` little-endian at `dst[at, at+4)`:
 * a header digest (or the digest of one-piece data) without the CRC ever
 * becoming a JS number.
 */
export function storeCrc32c(
  dst: Uint8Array,
  at: number,
  src: Uint8Array,
  start: number,
  end: number,
): void {
  scratch[0] = 0;
  crc32cUpdate(scratch, 0, src, start, end);
  const c = scratch[0] as number;
  dst[at] = c & 0xff;
  dst[at + 1] = (c >>> 8) & 0xff;
  dst[at + 2] = (c >>> 16) & 0xff;
  dst[at + 3] = (c >>> 24) & 0xff;
}

/**
 * True when `b[at, at+4)` holds the little-endian CRC32C of
 * `src[start, end)`: a header digest check that allocates nothing.
 */
export function crc32cMatches(
  b: Uint8Array,
  at: number,
  src: Uint8Array,
  start: number,
  end: number,
): boolean {
  scratch[0] = 0;
  crc32cUpdate(scratch, 0, src, start, end);
  const c = scratch[0] as number;
  return (b[at] as number) === (c & 0xff) && (b[at + 1] as number) === ((c >>> 8) & 0xff) &&
    (b[at + 2] as number) === ((c >>> 16) & 0xff) && (b[at + 3] as number) === (c >>> 24);
}

/**
 * CRC32C of `bytes[start, end)` continuing from `seed` (the CRC of what came
 * before, 0 to start), with the contract of `crc32c` in wasm/crc32c.ts but
 * without making a view of wasm-resident bytes. On the data path prefer
 * {@linkcode crc32cUpdate}, {@linkcode storeCrc32c} and
 * {@linkcode crc32cMatches}: a CRC returned as a number may be boxed.
 *
 * @example
 * ```ts
 * import { crc32cRange } from "./pdu.ts";
 * const b = new TextEncoder().encode("xx123456789yy");
 * console.assert(crc32cRange(b, 2, 11) === 0xe3069283);
 * ```
 */
export function crc32cRange(bytes: Uint8Array, start: number, end: number, seed = 0): number {
  scratch[0] = seed;
  crc32cUpdate(scratch, 0, bytes, start, end);
  return scratch[0] as number;
}

/** Running digest state of {@link dataDigest} and {@link storeDataDigest}. */
const ddState = new Uint32Array(1);

function digestIovs(
  iovs: readonly Uint8Array[],
  iovcnt: number,
  offset: number,
  length: number,
): void {
  if (iovcnt > iovs.length) throw new RangeError(`iovcnt ${iovcnt} exceeds ${iovs.length} iovs.`);
  ddState[0] = 0;
  let skip = offset;
  let left = length;
  for (let i = 0; i < iovcnt && left > 0; i++) {
    const iov = iovs[i] as Uint8Array;
    const n = iov.byteLength;
    if (skip >= n) {
      skip -= n;
      continue;
    }
    const take = n - skip < left ? n - skip : left;
    crc32cUpdate(ddState, 0, iov, skip, skip + take);
    left -= take;
    skip = 0;
  }
  if (left > 0 || offset < 0) {
    throw new RangeError(`Data range ${offset}+${length} is outside the iovs.`);
  }
}

/**
 * The data digest of `length` bytes starting `offset` bytes into the
 * concatenation of `iovs[0..iovcnt)`: the CRC32C chained over the pieces.
 *
 * @throws {RangeError} when the range is not inside the iovs.
 *
 * @example
 * ```ts
 * import { dataDigest } from "./pdu.ts";
 * import { crc32c } from "../../wasm/mod.ts";
 * const a = new Uint8Array([1, 2, 3]), b = new Uint8Array([4, 5]);
 * console.assert(dataDigest([a, b], 2, 1, 3) === crc32c(new Uint8Array([2, 3, 4])));
 * ```
 */
export function dataDigest(
  iovs: readonly Uint8Array[],
  iovcnt: number,
  offset: number,
  length: number,
): number {
  digestIovs(iovs, iovcnt, offset, length);
  return ddState[0] as number;
}

/**
 * Computes the data digest as {@link dataDigest} does and stores it
 * little-endian at `dst[at, at+4)` (the DDGST a sender puts after the
 * data), allocating nothing. Returns 4.
 */
export function storeDataDigest(
  dst: Uint8Array,
  at: number,
  iovs: readonly Uint8Array[],
  iovcnt: number,
  offset: number,
  length: number,
): number {
  digestIovs(iovs, iovcnt, offset, length);
  const c = ddState[0] as number;
  dst[at] = c & 0xff;
  dst[at + 1] = (c >>> 8) & 0xff;
  dst[at + 2] = (c >>> 16) & 0xff;
  dst[at + 3] = (c >>> 24) & 0xff;
  return DIGEST_BYTES;
}

/** Writes a digest (HDGST or DDGST) little-endian at `off`; returns 4. */
export function writeDigest(buf: Uint8Array, off: number, crc: number): number {
  setLe32(buf, off, crc);
  return DIGEST_BYTES;
}

// ---------------------------------------------------------------------------
// Encoders.

function checkRoom(buf: Uint8Array, off: number, n: number): void {
  if (!Number.isInteger(off) || off < 0 || off + n > buf.byteLength) {
    throw new RangeError(
      `A ${n}-byte PDU header does not fit at ${off} in ${buf.byteLength} bytes.`,
    );
  }
}

function checkUint(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`${name} must be an integer in [0, ${max}], got ${v}.`);
  }
}

function checkPda(name: string, v: number): void {
  checkUint(name, v, PDA_MAX);
}

/** Writes the common header and zeroes the PSH (the caller fills it, then the digest). */
function writeCommon(
  buf: Uint8Array,
  off: number,
  type: number,
  flags: number,
  hlen: number,
  pdo: number,
  plen: number,
): void {
  buf[off] = type;
  buf[off + 1] = flags;
  buf[off + 2] = hlen;
  buf[off + 3] = pdo;
  setLe32(buf, off + 4, plen);
  buf.fill(0, off + COMMON_HEADER_BYTES, off + hlen);
}

/** Computes and stores HDGST, zeroes the padding up to `end`; returns bytes written. */
function finishHeader(
  buf: Uint8Array,
  off: number,
  hlen: number,
  hdgst: boolean,
  end: number,
): number {
  let p = hlen;
  if (hdgst) {
    storeCrc32c(buf, off + p, buf, off, off + hlen);
    p += DIGEST_BYTES;
  }
  if (end > p) buf.fill(0, off + p, off + end);
  return end > p ? end : p;
}

/** Parameters of {@link encodeICReq}. */
export interface ICReqParams {
  /** Host PDU Data Alignment the host wants for C2HData, 0's based dwords (0-31). */
  hpda: number;
  /** Request header digests. */
  hdgst: boolean;
  /** Request data digests. */
  ddgst: boolean;
  /** Maximum outstanding R2Ts per command, 0's based (0 means one). */
  maxr2t: number;
}

/**
 * Writes an ICReq (128 bytes: PFV 0, HPDA, DGST, MAXR2T; never digests).
 * @returns 128.
 *
 * @example
 * ```ts
 * import { encodeICReq, PduType } from "./pdu.ts";
 * const b = new Uint8Array(128);
 * encodeICReq(b, 0, { hpda: 0, hdgst: true, ddgst: false, maxr2t: 0 });
 * console.assert(b[0] === PduType.ICReq && b[2] === 128 && b[11] === 1);
 * ```
 */
export function encodeICReq(buf: Uint8Array, off: number, p: ICReqParams): number {
  checkRoom(buf, off, PduHlen.ICReq);
  checkPda("HPDA", p.hpda);
  checkUint("MAXR2T", p.maxr2t, 0xffffffff);
  writeCommon(buf, off, PduType.ICReq, 0, PduHlen.ICReq, 0, PduHlen.ICReq);
  setLe16(buf, off + PduField.PFV, PFV_1_0);
  buf[off + PduField.PDA] = p.hpda;
  buf[off + PduField.DGST] = (p.hdgst ? DigestEnable.HDGST : 0) |
    (p.ddgst ? DigestEnable.DDGST : 0);
  setLe32(buf, off + PduField.MAXR2T, p.maxr2t);
  return PduHlen.ICReq;
}

/** Parameters of {@link encodeICResp}. */
export interface ICRespParams {
  /** Controller PDU Data Alignment the target wants for CapsuleCmd/H2CData, 0's based dwords. */
  cpda: number;
  /** Header digests enabled. */
  hdgst: boolean;
  /** Data digests enabled. */
  ddgst: boolean;
  /** Most data bytes per H2CData PDU; at least 4096 and a multiple of 4 (not 0's based). */
  maxh2cdata: number;
}

/**
 * Writes an ICResp (128 bytes: PFV 0, CPDA, DGST, MAXH2CDATA; never digests).
 * @returns 128.
 */
export function encodeICResp(buf: Uint8Array, off: number, p: ICRespParams): number {
  checkRoom(buf, off, PduHlen.ICResp);
  checkPda("CPDA", p.cpda);
  checkUint("MAXH2CDATA", p.maxh2cdata, 0xffffffff);
  if (p.maxh2cdata < MAXH2CDATA_MIN || p.maxh2cdata % 4 !== 0) {
    throw new RangeError(
      `MAXH2CDATA must be a multiple of 4 of at least 4096, got ${p.maxh2cdata}.`,
    );
  }
  writeCommon(buf, off, PduType.ICResp, 0, PduHlen.ICResp, 0, PduHlen.ICResp);
  setLe16(buf, off + PduField.PFV, PFV_1_0);
  buf[off + PduField.PDA] = p.cpda;
  buf[off + PduField.DGST] = (p.hdgst ? DigestEnable.HDGST : 0) |
    (p.ddgst ? DigestEnable.DDGST : 0);
  setLe32(buf, off + PduField.MAXH2CDATA, p.maxh2cdata);
  return PduHlen.ICResp;
}

/**
 * Writes a whole termination request: H2CTermReq when the host sends it,
 * C2HTermReq when the target does. Its data is the header of the PDU in
 * error, cut to 128 bytes; TermReqs never carry digests.
 *
 * @param sender the side sending the TermReq.
 * @param header the offending PDU's header bytes (for example `PduError.header`).
 * @returns PLEN (24 + the header bytes copied).
 */
export function encodeTermReq(
  buf: Uint8Array,
  off: number,
  sender: PduRole,
  fes: number,
  fei: number,
  header: Uint8Array = new Uint8Array(0),
): number {
  checkUint("FES", fes, 0xffff);
  checkUint("FEI", fei, 0xffffffff);
  const n = Math.min(header.byteLength, TERM_REQ_MAX_DATA);
  const plen = PduHlen.TermReq + n;
  checkRoom(buf, off, plen);
  const type = sender === "host" ? PduType.H2CTermReq : PduType.C2HTermReq;
  writeCommon(buf, off, type, 0, PduHlen.TermReq, 0, plen);
  setLe16(buf, off + PduField.FES, fes);
  setLe32(buf, off + PduField.FEI, fei);
  for (let i = 0; i < n; i++) buf[off + PduHlen.TermReq + i] = header[i] as number;
  return plen;
}

/**
 * Writes a CapsuleCmd header: CH, the 64-byte SQE, HDGST and the padding up
 * to PDO when `dataLength` bytes of in-capsule data follow (aligned to the
 * target's CPDA, `tx.txpda`). The data and its DDGST (see
 * {@link storeDataDigest}) are sent after the returned bytes.
 *
 * @returns the bytes written: PDO when there is data, else HLEN + HDGST.
 */
export function encodeCapsuleCmd(
  buf: Uint8Array,
  off: number,
  tx: PduTxParams,
  sqe: Uint8Array,
  dataLength: number,
): number {
  if (sqe.byteLength !== SQE_BYTES) {
    throw new RangeError(`An SQE is 64 bytes, got ${sqe.byteLength}.`);
  }
  return encodeDataHeader(buf, off, tx, PduType.CapsuleCmd, PduHlen.CapsuleCmd, 0, dataLength, sqe);
}

/**
 * Writes a CapsuleResp (CH, the 16-byte CQE, HDGST).
 * @returns 24, or 28 with a header digest.
 */
export function encodeCapsuleResp(
  buf: Uint8Array,
  off: number,
  tx: PduTxParams,
  cqe: Uint8Array,
): number {
  if (cqe.byteLength !== CQE_BYTES) {
    throw new RangeError(`A CQE is 16 bytes, got ${cqe.byteLength}.`);
  }
  const hlen = PduHlen.CapsuleResp;
  const full = hlen + (tx.hdgst ? DIGEST_BYTES : 0);
  checkRoom(buf, off, full);
  writeCommon(buf, off, PduType.CapsuleResp, tx.hdgst ? PduFlag.HDGSTF : 0, hlen, 0, full);
  buf.set(cqe, off + PduField.CQE);
  return finishHeader(buf, off, hlen, tx.hdgst, full);
}

/**
 * Writes an H2CData header for `datal` bytes at offset `datao` of command
 * `cccid`, answering the R2T with transfer tag `ttag`; data aligned to the
 * target's CPDA. The data and DDGST follow the returned bytes.
 *
 * @returns PDO (header, HDGST and padding).
 */
export function encodeH2CData(
  buf: Uint8Array,
  off: number,
  tx: PduTxParams,
  cccid: number,
  ttag: number,
  datao: number,
  datal: number,
  last: boolean,
): number {
  checkUint("CCCID", cccid, 0xffff);
  checkUint("TTAG", ttag, 0xffff);
  checkUint("DATAO", datao, 0xffffffff);
  if (datal === 0) throw new RangeError("An H2CData PDU carries at least one byte of data.");
  const n = encodeDataHeader(
    buf,
    off,
    tx,
    PduType.H2CData,
    PduHlen.H2CData,
    last ? PduFlag.LAST_PDU : 0,
    datal,
    null,
  );
  setDataFields(buf, off, tx, cccid, ttag, datao, datal);
  return n;
}

/**
 * Writes a C2HData header for `datal` bytes at offset `datao` of command
 * `cccid`; data aligned to the host's HPDA. SUCCESS (no CapsuleResp will
 * follow) requires `last`.
 *
 * @returns PDO (header, HDGST and padding).
 */
export function encodeC2HData(
  buf: Uint8Array,
  off: number,
  tx: PduTxParams,
  cccid: number,
  datao: number,
  datal: number,
  last: boolean,
  success: boolean,
): number {
  checkUint("CCCID", cccid, 0xffff);
  checkUint("DATAO", datao, 0xffffffff);
  if (datal === 0) throw new RangeError("A C2HData PDU carries at least one byte of data.");
  if (success && !last) throw new RangeError("C2HData SUCCESS requires LAST_PDU.");
  const flags = (last ? PduFlag.LAST_PDU : 0) | (success ? PduFlag.SUCCESS : 0);
  const n = encodeDataHeader(buf, off, tx, PduType.C2HData, PduHlen.C2HData, flags, datal, null);
  setDataFields(buf, off, tx, cccid, 0, datao, datal);
  return n;
}

/**
 * Writes an R2T asking for `r2tl` bytes at offset `r2to` of command `cccid`,
 * under transfer tag `ttag`.
 * @returns 24, or 28 with a header digest.
 */
export function encodeR2T(
  buf: Uint8Array,
  off: number,
  tx: PduTxParams,
  cccid: number,
  ttag: number,
  r2to: number,
  r2tl: number,
): number {
  checkUint("CCCID", cccid, 0xffff);
  checkUint("TTAG", ttag, 0xffff);
  checkUint("R2TO", r2to, 0xffffffff);
  checkUint("R2TL", r2tl, 0xffffffff);
  if (r2tl === 0) throw new RangeError("An R2T asks for at least one byte.");
  const hlen = PduHlen.R2T;
  const full = hlen + (tx.hdgst ? DIGEST_BYTES : 0);
  checkRoom(buf, off, full);
  writeCommon(buf, off, PduType.R2T, tx.hdgst ? PduFlag.HDGSTF : 0, hlen, 0, full);
  setLe16(buf, off + PduField.CCCID, cccid);
  setLe16(buf, off + PduField.TTAG, ttag);
  setLe32(buf, off + PduField.R2TO, r2to);
  setLe32(buf, off + PduField.R2TL, r2tl);
  return finishHeader(buf, off, hlen, tx.hdgst, full);
}

/** CH, optional SQE, padding; HDGST is computed by the caller's finishing step. */
function encodeDataHeader(
  buf: Uint8Array,
  off: number,
  tx: PduTxParams,
  type: number,
  hlen: number,
  extraFlags: number,
  dataLength: number,
  sqe: Uint8Array | null,
): number {
  checkUint("data length", dataLength, 0xffffffff);
  checkPda("PDA", tx.txpda);
  const full = hlen + (tx.hdgst ? DIGEST_BYTES : 0);
  const pdo = dataLength > 0 ? pduDataOffset(hlen, tx.hdgst, tx.txpda) : 0;
  const headerBytes = dataLength > 0 ? pdo : full;
  const plen = headerBytes + dataLength + (dataLength > 0 && tx.ddgst ? DIGEST_BYTES : 0);
  checkUint("PLEN", plen, 0xffffffff);
  checkRoom(buf, off, headerBytes);
  let flags = extraFlags;
  if (tx.hdgst) flags |= PduFlag.HDGSTF;
  if (tx.ddgst && dataLength > 0) flags |= PduFlag.DDGSTF;
  writeCommon(buf, off, type, flags, hlen, pdo, plen);
  if (sqe !== null) {
    buf.set(sqe, off + PduField.SQE);
    return finishHeader(buf, off, hlen, tx.hdgst, headerBytes);
  }
  // Data PDUs: the PSH fields are written next by setDataFields, then the digest.
  if (headerBytes > hlen) buf.fill(0, off + hlen, off + headerBytes);
  return headerBytes;
}

function setDataFields(
  buf: Uint8Array,
  off: number,
  tx: PduTxParams,
  cccid: number,
  ttag: number,
  datao: number,
  datal: number,
): void {
  setLe16(buf, off + PduField.CCCID, cccid);
  setLe16(buf, off + PduField.TTAG, ttag);
  setLe32(buf, off + PduField.DATAO, datao);
  setLe32(buf, off + PduField.DATAL, datal);
  if (tx.hdgst) storeCrc32c(buf, off + PduHlen.H2CData, buf, off, off + PduHlen.H2CData);
}

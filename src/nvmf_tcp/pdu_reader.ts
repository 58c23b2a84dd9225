/**
 * The NVMe/TCP receive state machine: a cursor over the bytes a connection
 * reads, turning them into PDU events for a handler, for both ends of the
 * connection (the target and "sluice perf" as a host).
 *
 * How bytes flow (the house rules of DESIGN.md: a cursor over one buffer,
 * views instead of copies, copy only what straddles two reads):
 *
 * - `consume(buf, start, end)` takes whatever one read returned, any number
 *   of PDUs and pieces of PDUs, and returns after handling all of it. The
 *   reader keeps no view of `buf` once it returns, so the caller may reuse
 *   its read buffer for the next read.
 * - A header that lies whole in `buf` is handed to the handler in place
 *   ({@linkcode PduHeader} points at `buf`). A header split across two reads
 *   is assembled in a 256-byte buffer the reader owns: the only copy of
 *   header bytes.
 * - Data is never buffered by the reader. In the header callback the handler
 *   either names a destination with {@linkcode PduReader.receiveInto} (the
 *   request's iovs: the bytes are copied once, from the read buffer into
 *   them, as they arrive) or lets the pieces come to
 *   {@linkcode PduHandlerBase.onData} as ranges of the read buffer.
 * - The data digest is chained over the pieces as they pass.
 *
 * Validation follows the order of the fields, so the first bad field is the
 * one reported (as FreeBSD's NVMe/TCP receiver does): PDU type for the role
 * and the connection state, FLAGS (reserved bits, digest flags against what
 * was negotiated, SUCCESS without LAST_PDU), HLEN, PDO (alignment, bounds),
 * PLEN, the per-PDU data limit, then the header digest, then the PDU-specific
 * fields. Every error goes to `onError` as the FES/FEI to put into the
 * TermReq, with the offending header; the reader then stops.
 *
 * A data digest mismatch does not stop the reader: the framing is intact,
 * so it is reported in `onDataEnd` through `ddgstOk` and the transport
 * fails the one command (SPDK's target completes it with Transient
 * Transport Error, the Linux host with a data transfer error). A transport
 * that prefers to drop the connection, as Linux's target does, calls
 * {@linkcode PduReader.fail} from `onDataEnd`.
 *
 * Allocation: none per PDU in steady state when the read buffer and the
 * data destinations live in the wasm memory (`wasmAlloc`): headers are read
 * in place through one reused {@linkcode PduHeader}, data is copied with
 * `copyWithin` on one view of the shared memory, digests run on the wasm
 * kernel by address. pdu_reader_test.ts checks this with V8's GC trace.
 * Otherwise a data copy or a long digest between two JS buffers makes one
 * short-lived subarray view per piece.
 *
 * @example
 * ```ts
 * import { PduReader, type TargetPduHandler } from "./pdu_reader.ts";
 * import { encodeICReq } from "./pdu.ts";
 * let sawIcReq = false;
 * const handler: TargetPduHandler = {
 *   onICReq(h) { sawIcReq = h.pfv === 0; reader.setDigests(false, false); },
 *   onCapsuleCmd() {}, onH2CData() {}, onTermReq() {},
 *   onData() {}, onDataEnd() {}, onError(e) { throw new Error(e.message); },
 * };
 * const reader = new PduReader({ role: "target" }, handler);
 * const wire = new Uint8Array(128);
 * encodeICReq(wire, 0, { hpda: 0, hdgst: false, ddgst: false, maxr2t: 0 });
 * for (let i = 0; i < wire.length; i++) reader.consume(wire, i, i + 1); // byte by byte
 * console.assert(sawIcReq);
 * ```
 *
 * @module
 */
import {
  COMMON_HEADER_BYTES,
  crc32cMatches,
  crc32cRange,
  crc32cUpdate,
  DIGEST_BYTES,
  Fes,
  fesName,
  getLe16,
  getLe32,
  MAX_HLEN,
  MAXH2CDATA_MIN,
  PDA_MAX,
  pdaBytes,
  PduField,
  PduFlag,
  PduHlen,
  type PduRole,
  PduType,
  pduTypeName,
  PFV_1_0,
  setLe16,
  setLe32,
  TERM_REQ_MAX_DATA,
  TERM_REQ_MAX_PLEN,
} from "./pdu.ts";

export type { PduRole } from "./pdu.ts";

/** A fatal protocol error: what to put into the TermReq before closing. */
export interface PduError {
  /** Fatal Error Status ({@link Fes}). */
  fes: number;
  /**
   * Fatal Error Information: the byte offset of the bad field for Invalid
   * PDU Header Field and Unsupported Parameter, the received header digest
   * for Header Digest Error, 0 otherwise.
   */
  fei: number;
  /** What was wrong, for the log. */
  message: string;
  /**
   * The offending PDU's header as received (at most 128 bytes: the common
   * header alone when the error was found there), for the TermReq's data.
   * Owned by the reader; stays valid because the reader has stopped.
   */
  header: Uint8Array;
  /**
   * False when no TermReq may be sent back: the PDU in error is itself a
   * TermReq (the specification wants the connection closed at once).
   */
  sendTermReq: boolean;
  /** Stream offset of the offending PDU's first byte. */
  streamOffset: number;
}

/**
 * The header of the PDU being received: one object per reader, reused for
 * every PDU.
 *
 * The parsed numeric fields stay valid until the next PDU's header arrives,
 * so they can be read in `onData` and `onDataEnd` too. `bytes`/`offset`
 * (the raw header, for the SQE, the CQE and the ICReq/ICResp fields) are
 * valid only during the PDU's header callback: they point into the caller's
 * read buffer or the reader's assembly buffer. Copy what must outlive the
 * callback.
 */
export class PduHeader {
  /** The buffer that holds the raw header (valid in the header callback only). */
  bytes: Uint8Array;
  /** Where the header starts in `bytes`. */
  offset = 0;
  /** CH fields. */
  type = 0;
  flags = 0;
  hlen = 0;
  pdo = 0;
  plen = 0;
  /** Bytes of PDU data (without padding and digest); 0 for a PDU without data. */
  dataLength = 0;
  /** Offset of this PDU's first byte in the stream. */
  streamOffset = 0;
  /** ICReq/ICResp: PDU Format Version. */
  pfv = 0;
  /** ICReq: HPDA; ICResp: CPDA. */
  pda = 0;
  /** ICReq/ICResp: DGST bits ({@link DigestEnable}). */
  dgst = 0;
  /** ICReq: MAXR2T (0's based); ICResp: MAXH2CDATA. */
  maxr2t = 0;
  maxh2cdata = 0;
  /** TermReq: Fatal Error Status and Information. */
  fes = 0;
  fei = 0;
  /**
   * H2CData/C2HData/R2T: CCCID. CapsuleCmd: the SQE's CID; CapsuleResp: the
   * CQE's CID (for convenience, same field).
   */
  cccid = 0;
  /** H2CData/R2T: transfer tag. */
  ttag = 0;
  /** H2CData/C2HData: DATAO and DATAL. */
  datao = 0;
  datal = 0;
  /** R2T: R2TO and R2TL. */
  r2to = 0;
  r2tl = 0;
  /** In `onDataEnd`: the data digest matched (true when none was negotiated). */
  ddgstOk = true;
  /** In `onDataEnd`: the DDGST received and the one computed over the data. */
  ddgstReceived = 0;
  ddgstComputed = 0;

  #dvBytes: Uint8Array | null = null;
  #dv: DataView | null = null;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  /** HDGSTF is set. */
  get hdgst(): boolean {
    return (this.flags & PduFlag.HDGSTF) !== 0;
  }
  /** DDGSTF is set. */
  get ddgst(): boolean {
    return (this.flags & PduFlag.DDGSTF) !== 0;
  }
  /** Data PDUs: LAST_PDU is set. */
  get lastPdu(): boolean {
    return (this.flags & PduFlag.LAST_PDU) !== 0;
  }
  /** C2HData: SUCCESS is set. */
  get success(): boolean {
    return (this.flags & PduFlag.SUCCESS) !== 0;
  }

  /**
   * A DataView over `bytes` (add `offset` to field offsets). Made once per
   * distinct buffer, so it costs nothing while the caller reuses its read
   * buffer. Header callback only.
   */
  get dataView(): DataView {
    if (this.#dvBytes !== this.bytes || this.#dv === null) {
      this.#dvBytes = this.bytes;
      this.#dv = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    }
    return this.#dv;
  }

  /** CapsuleCmd: copies the 64-byte SQE into `dst` at `at`. Header callback only. */
  copySqe(dst: Uint8Array, at = 0): void {
    copySmall(this.bytes, this.offset + PduField.SQE, dst, at, 64);
  }

  /** CapsuleResp: copies the 16-byte CQE into `dst` at `at`. Header callback only. */
  copyCqe(dst: Uint8Array, at = 0): void {
    copySmall(this.bytes, this.offset + PduField.CQE, dst, at, 16);
  }

  /**
   * TermReq: where its data (the header of the PDU the peer rejected) starts
   * in `bytes`; it runs to `offset + plen`. Header callback only.
   */
  get termDataOffset(): number {
    return this.offset + PduHlen.TermReq;
  }
}

function copySmall(src: Uint8Array, s: number, dst: Uint8Array, d: number, n: number): void {
  if (d < 0 || d + n > dst.byteLength) {
    throw new RangeError(`No room for ${n} bytes at ${d} in ${dst.byteLength}.`);
  }
  for (let i = 0; i < n; i++) dst[d + i] = src[s + i] as number;
}

/** Events every handler receives. */
export interface PduHandlerBase {
  /**
   * A termination request arrived (H2CTermReq at a target, C2HTermReq at a
   * host): `fes`/`fei` are parsed; its data, the header of the PDU the peer
   * rejected, is `bytes[termDataOffset, offset + plen)`. The reader stops
   * after it; close the connection without answering.
   */
  onTermReq(h: PduHeader): void;
  /**
   * A piece of the current PDU's data, `bytes[start, end)`, when the header
   * callback named no destination. The range is valid during this call only.
   */
  onData(h: PduHeader, bytes: Uint8Array, start: number, end: number): void;
  /**
   * All data of the current PDU has arrived (into the destination or through
   * `onData`) and its digest was checked: see `h.ddgstOk`. Not called for
   * PDUs without data.
   */
  onDataEnd(h: PduHeader): void;
  /** A fatal protocol error; the reader has stopped. Send a TermReq (if allowed) and close. */
  onError(e: PduError): void;
}

/** What a target receives. */
export interface TargetPduHandler extends PduHandlerBase {
  /** The ICReq (validated: PFV 0, HPDA, DGST). Call `setDigests` here, after choosing them. */
  onICReq(h: PduHeader): void;
  /** A command capsule; with in-capsule data (`h.dataLength > 0`) name its destination here. */
  onCapsuleCmd(h: PduHeader): void;
  /** Host-to-controller data for an R2T: check CCCID/TTAG/DATAO and name the destination here. */
  onH2CData(h: PduHeader): void;
}

/** What a host receives. */
export interface HostPduHandler extends PduHandlerBase {
  /** The ICResp (validated: PFV 0, CPDA, DGST, MAXH2CDATA). Call `setDigests` here. */
  onICResp(h: PduHeader): void;
  /** A response capsule: copy the CQE. */
  onCapsuleResp(h: PduHeader): void;
  /** Controller-to-host data: check CCCID/DATAO and name the destination here. */
  onC2HData(h: PduHeader): void;
  /** A ready-to-transfer: send H2CData for `r2to`/`r2tl` of command `cccid`, tag `ttag`. */
  onR2T(h: PduHeader): void;
}

/** Either handler. */
export type PduHandler = TargetPduHandler | HostPduHandler;

interface ReaderOptionsBase {
  /**
   * The PDU data alignment this side asked for, 0's based dwords (0-31):
   * the CPDA of the target's ICResp, the HPDA of the host's ICReq. PDO of
   * received data PDUs must be a multiple of it. Default 0 (dwords).
   */
  rxpda?: number;
}

/** Options of a target's reader. */
export interface TargetPduReaderOptions extends ReaderOptionsBase {
  role: "target";
  /** Most in-capsule data bytes per CapsuleCmd. Default 8192 (the admin queue's). */
  maxInCapsuleData?: number;
  /** MAXH2CDATA this target advertised: most data bytes per H2CData. Default 131072. */
  maxH2CData?: number;
}

/** Options of a host's reader. */
export interface HostPduReaderOptions extends ReaderOptionsBase {
  role: "host";
  /** Most data bytes per C2HData PDU (a sanity bound; the data is never buffered). Default 16 MiB. */
  maxC2HData?: number;
}

/** Options of {@link PduReader}. */
export type PduReaderOptions = TargetPduReaderOptions | HostPduReaderOptions;

/** Reader states; exported for tests and diagnostics. */
export const PduReaderState = {
  /** At a PDU boundary, nothing buffered. */
  Idle: 0,
  /** Assembling a common header that straddles reads. */
  CommonHeader: 1,
  /** Assembling the rest of a header that straddles reads. */
  Header: 2,
  /** Skipping the padding between the header and PDO. */
  Padding: 3,
  /** Receiving data. */
  Data: 4,
  /** Receiving the data digest. */
  DataDigest: 5,
  /** Stopped after an error. */
  Failed: 6,
  /** Stopped after a TermReq from the peer. */
  Terminated: 7,
} as const;
/** A value of {@link PduReaderState}. */
export type PduReaderState = typeof PduReaderState[keyof typeof PduReaderState];

// Kinds of PDU, per role; the index into SPEC.
const K_ILLEGAL = -1;
const K_IC = 0;
const K_TERM = 1;
const K_CMD = 2;
const K_RESP = 3;
const K_H2C = 4;
const K_C2H = 5;
const K_R2T = 6;

const DATA_NONE = 0;
const DATA_OPTIONAL = 1;
const DATA_REQUIRED = 2;

interface KindSpec {
  hlen: number;
  /** FLAGS bits allowed at all. */
  flags: number;
  /** Carries HDGST/DDGST when negotiated. */
  digests: boolean;
  data: number;
}

const SPEC: readonly KindSpec[] = [
  { hlen: PduHlen.ICReq, flags: 0, digests: false, data: DATA_NONE }, // K_IC
  { hlen: PduHlen.TermReq, flags: 0, digests: false, data: DATA_NONE }, // K_TERM
  { hlen: PduHlen.CapsuleCmd, flags: 0x03, digests: true, data: DATA_OPTIONAL }, // K_CMD
  { hlen: PduHlen.CapsuleResp, flags: 0x01, digests: true, data: DATA_NONE }, // K_RESP
  { hlen: PduHlen.H2CData, flags: 0x07, digests: true, data: DATA_REQUIRED }, // K_H2C
  { hlen: PduHlen.C2HData, flags: 0x0f, digests: true, data: DATA_REQUIRED }, // K_C2H
  { hlen: PduHlen.R2T, flags: 0x01, digests: true, data: DATA_NONE }, // K_R2T
];

function kindTable(role: PduRole): Int8Array {
  const t = new Int8Array(256).fill(K_ILLEGAL);
  if (role === "target") {
    t[PduType.ICReq] = K_IC;
    t[PduType.H2CTermReq] = K_TERM;
    t[PduType.CapsuleCmd] = K_CMD;
    t[PduType.H2CData] = K_H2C;
  } else {
    t[PduType.ICResp] = K_IC;
    t[PduType.C2HTermReq] = K_TERM;
    t[PduType.CapsuleResp] = K_RESP;
    t[PduType.C2HData] = K_C2H;
    t[PduType.R2T] = K_R2T;
  }
  return t;
}

/** Room for the longest header that can straddle reads: a whole TermReq (152 bytes). */
const HDR_BUF_BYTES = 256;

function hex2(v: number): string {
  return `0x${v.toString(16).padStart(2, "0")}`;
}

function checkLimit(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`${name} must be an integer in [0, 2^32), got ${v}.`);
  }
  return v;
}

/**
 * The receive state machine of one connection. See the module
 * documentation for the flow of bytes and the events.
 */
export class PduReader {
  /** Which end of the connection this reader serves. */
  readonly role: PduRole;
  /** The one header object passed to every callback. */
  readonly header: PduHeader;

  readonly #kinds: Int8Array;
  readonly #target: TargetPduHandler | null;
  readonly #host: HostPduHandler | null;
  readonly #base: PduHandlerBase;
  readonly #rxAlign: number;
  /** Data limit per kind (bytes); 0 where a kind carries no data. */
  readonly #maxData: Float64Array;

  readonly #hdrBuf = new Uint8Array(HDR_BUF_BYTES);
  #hdrLen = 0;
  readonly #errHdr = new Uint8Array(TERM_REQ_MAX_DATA);

  #state: PduReaderState = PduReaderState.Idle;
  #hdgst = false;
  #ddgst = false;
  #icDone = false;
  #inConsume = false;
  #inHeaderCallback = false;

  // The PDU being received.
  #kind = K_ILLEGAL;
  #need = 0; // header bytes to gather (HLEN+HDGST, or PLEN for a TermReq)
  #padLeft = 0;
  #dataLeft = 0;
  /** [0]: data digest computed so far; [1]: DDGST received (see pdu.ts on boxing). */
  readonly #digest = new Uint32Array(2);
  #ddgstGot = 0;

  // Destination named by receiveInto.
  #dest: readonly Uint8Array[] | null = null;
  #destIdx = 0;
  #destOff = 0;

  // One whole-buffer view for copyWithin between views of the same memory.
  #wholeOf: ArrayBufferLike | null = null;
  #whole: Uint8Array = new Uint8Array(0);

  // Counters.
  #streamPos = 0;
  #pdus = 0;
  #assembled = 0;

  /** A target's reader. */
  constructor(options: TargetPduReaderOptions, handler: TargetPduHandler);
  /** A host's reader. */
  constructor(options: HostPduReaderOptions, handler: HostPduHandler);
  constructor(options: PduReaderOptions, handler: PduHandler) {
    const role: unknown = options.role;
    if (role !== "target" && role !== "host") {
      throw new TypeError(`role must be "target" or "host", got ${String(role)}.`);
    }
    this.role = role;
    const rxpda = options.rxpda ?? 0;
    if (!Number.isInteger(rxpda) || rxpda < 0 || rxpda > PDA_MAX) {
      throw new RangeError(`rxpda must be an integer in [0, 31], got ${rxpda}.`);
    }
    this.#rxAlign = pdaBytes(rxpda);
    this.#kinds = kindTable(options.role);
    this.#maxData = new Float64Array(SPEC.length);
    const need: string[] = ["onTermReq", "onData", "onDataEnd", "onError"];
    if (options.role === "target") {
      this.#target = handler as TargetPduHandler;
      this.#host = null;
      this.#maxData[K_CMD] = checkLimit("maxInCapsuleData", options.maxInCapsuleData ?? 8192);
      this.#maxData[K_H2C] = checkLimit("maxH2CData", options.maxH2CData ?? 131072);
      need.push("onICReq", "onCapsuleCmd", "onH2CData");
    } else {
      this.#host = handler as HostPduHandler;
      this.#target = null;
      this.#maxData[K_C2H] = checkLimit("maxC2HData", options.maxC2HData ?? 16 * 1024 * 1024);
      need.push("onICResp", "onCapsuleResp", "onC2HData", "onR2T");
    }
    const h = handler as unknown as Record<string, unknown>;
    for (const name of need) {
      if (typeof h[name] !== "function") {
        throw new TypeError(`A ${options.role} PDU handler needs a ${name} method.`);
      }
    }
    this.#base = handler;
    this.header = new PduHeader(this.#hdrBuf);
  }

  /** The current state ({@link PduReaderState}). */
  get state(): PduReaderState {
    return this.#state;
  }
  /** True once the reader has stopped (error or TermReq): it consumes nothing more. */
  get stopped(): boolean {
    return this.#state === PduReaderState.Failed || this.#state === PduReaderState.Terminated;
  }
  /** True once the ICReq (target) or ICResp (host) has been received. */
  get icDone(): boolean {
    return this.#icDone;
  }
  /** Header digests expected on received PDUs. */
  get hdgstEnabled(): boolean {
    return this.#hdgst;
  }
  /** Data digests expected on received PDUs with data. */
  get ddgstEnabled(): boolean {
    return this.#ddgst;
  }
  /** PDUs received completely. */
  get pdusReceived(): number {
    return this.#pdus;
  }
  /** Bytes consumed since creation. */
  get bytesConsumed(): number {
    return this.#streamPos;
  }
  /** Headers that straddled two reads and were assembled in the reader's buffer. */
  get headersAssembled(): number {
    return this.#assembled;
  }

  /**
   * Switches digests on or off for the PDUs that follow (after the IC
   * exchange; typically called from `onICReq`/`onICResp`, which makes it
   * apply to the very next PDU even within the same read).
   */
  setDigests(header: boolean, data: boolean): void {
    this.#hdgst = header;
    this.#ddgst = data;
  }

  /**
   * Names where the current PDU's data goes: `h.dataLength` bytes copied
   * into the concatenation of `iovs[0..iovcnt)` starting `byteOffset` bytes
   * in (for H2CData/C2HData usually `h.datao` minus the start of the
   * buffer). Call it from the header callback of a PDU with data; otherwise
   * the data goes to `onData`.
   *
   * When the iovs cannot hold the data there, the reader reports Data
   * Transfer Out of Range (the peer sent more than the command's buffer)
   * and stops.
   *
   * @throws {Error} outside a header callback or for a PDU without data
   * (a programming error).
   */
  receiveInto(iovs: readonly Uint8Array[], iovcnt: number, byteOffset: number): void {
    if (!this.#inHeaderCallback) {
      throw new Error("receiveInto() belongs in the header callback of a PDU with data.");
    }
    const h = this.header;
    if (h.dataLength === 0) throw new Error(`The ${pduTypeName[h.type]} PDU carries no data.`);
    if (!Number.isInteger(iovcnt) || iovcnt < 0 || iovcnt > iovs.length) {
      throw new RangeError(`iovcnt must be an integer in [0, ${iovs.length}], got ${iovcnt}.`);
    }
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0) {
      throw new RangeError(`byteOffset must be a non-negative integer, got ${byteOffset}.`);
    }
    let room = 0;
    for (let i = 0; i < iovcnt; i++) room += (iovs[i] as Uint8Array).byteLength;
    if (byteOffset + h.dataLength > room) {
      this.#failHere(
        Fes.DataTransferOutOfRange,
        0,
        `${pduTypeName[h.type]} data ${byteOffset}+${h.dataLength} is outside the ` +
          `command's ${room}-byte buffer`,
      );
      return;
    }
    let idx = 0;
    let off = byteOffset;
    while (idx < iovcnt && off >= (iovs[idx] as Uint8Array).byteLength) {
      off -= (iovs[idx] as Uint8Array).byteLength;
      idx++;
    }
    this.#dest = iovs;
    this.#destIdx = idx;
    this.#destOff = off;
  }

  /**
   * Reports a protocol error found by the handler (unknown CCCID or TTAG,
   * DATAO not where the transfer stands, ...) exactly as the reader reports
   * its own: `onError` with the current PDU's header, then the reader stops.
   * The first error wins; later calls do nothing.
   */
  fail(fes: number, fei: number, message: string): void {
    this.#failHere(fes, fei, message);
  }

  /**
   * Consumes `bytes[start, end)`: everything one read returned. Calls the
   * handler for every PDU event in it and returns the bytes consumed, which
   * is all of them unless the reader stopped (error or TermReq) on the way.
   * The reader keeps no reference to `bytes` after it returns.
   *
   * @throws {RangeError} for a bad range; {@link Error} when called from a
   * callback of this reader.
   */
  consume(bytes: Uint8Array, start = 0, end: number = bytes.byteLength): number {
    if (
      !(start >= 0 && start <= end && end <= bytes.byteLength && Number.isInteger(start) &&
        Number.isInteger(end))
    ) {
      throw new RangeError(`Bad range [${start}, ${end}) of ${bytes.byteLength} bytes.`);
    }
    if (this.#inConsume) throw new Error("PduReader.consume() is not re-entrant.");
    if (this.stopped) return 0;
    this.#inConsume = true;
    let pos = start;
    try {
      while (pos < end) {
        switch (this.#state) {
          case PduReaderState.Idle:
            pos = this.#startPdu(bytes, pos, end, start);
            break;
          case PduReaderState.CommonHeader:
            pos = this.#gatherCommon(bytes, pos, end);
            break;
          case PduReaderState.Header:
            pos = this.#gatherHeader(bytes, pos, end);
            break;
          case PduReaderState.Padding: {
            const n = Math.min(this.#padLeft, end - pos);
            pos += n;
            this.#padLeft -= n;
            if (this.#padLeft === 0) this.#state = PduReaderState.Data;
            break;
          }
          case PduReaderState.Data:
            pos = this.#data(bytes, pos, end);
            break;
          case PduReaderState.DataDigest:
            pos = this.#dataDigest(bytes, pos, end);
            break;
          default:
            // Failed or Terminated: stop where we are.
            this.#streamPos += pos - start;
            return pos - start;
        }
      }
    } finally {
      this.#inConsume = false;
      // Keep no reference to the caller's buffer (it may be a stopped reader's last header).
      this.header.bytes = this.#hdrBuf;
      this.header.offset = 0;
    }
    this.#streamPos += pos - start;
    return pos - start;
  }

  // -------------------------------------------------------------------------
  // Headers.

  /** At a PDU boundary: parse in place when the whole header is here, else start assembling. */
  #startPdu(b: Uint8Array, pos: number, end: number, start: number): number {
    this.header.streamOffset = this.#streamPos + (pos - start);
    const avail = end - pos;
    if (avail < COMMON_HEADER_BYTES) {
      this.#copyIn(b, pos, avail);
      this.#hdrLen = avail;
      this.#state = PduReaderState.CommonHeader;
      return end;
    }
    if (!this.#checkCommon(b, pos)) return pos;
    if (avail >= this.#need) {
      this.#onHeader(b, pos);
      return pos + this.#need;
    }
    this.#copyIn(b, pos, avail);
    this.#hdrLen = avail;
    this.#state = PduReaderState.Header;
    return end;
  }

  #gatherCommon(b: Uint8Array, pos: number, end: number): number {
    const n = Math.min(COMMON_HEADER_BYTES - this.#hdrLen, end - pos);
    this.#append(b, pos, n);
    pos += n;
    if (this.#hdrLen < COMMON_HEADER_BYTES) return pos;
    if (!this.#checkCommon(this.#hdrBuf, 0)) return pos;
    this.#state = PduReaderState.Header;
    return pos;
  }

  #gatherHeader(b: Uint8Array, pos: number, end: number): number {
    const n = Math.min(this.#need - this.#hdrLen, end - pos);
    this.#append(b, pos, n);
    pos += n;
    if (this.#hdrLen === this.#need) {
      this.#assembled++;
      this.#onHeader(this.#hdrBuf, 0);
    }
    return pos;
  }

  #copyIn(b: Uint8Array, pos: number, n: number): void {
    const d = this.#hdrBuf;
    for (let i = 0; i < n; i++) d[i] = b[pos + i] as number;
  }

  #append(b: Uint8Array, pos: number, n: number): void {
    const d = this.#hdrBuf;
    const at = this.#hdrLen;
    for (let i = 0; i < n; i++) d[at + i] = b[pos + i] as number;
    this.#hdrLen = at + n;
  }

  /**
   * Validates the common header at `b[o..o+8)` against the role, the
   * connection state and the negotiated digests, and works out the header
   * length, padding and data length. Reports the first bad field.
   */
  #checkCommon(b: Uint8Array, o: number): boolean {
    const h = this.header;
    const type = b[o] as number;
    const flags = b[o + 1] as number;
    const hlen = b[o + 2] as number;
    const pdo = b[o + 3] as number;
    const plen = getLe32(b, o + 4);
    h.type = type;
    h.flags = flags;
    h.hlen = hlen;
    h.pdo = pdo;
    h.plen = plen;
    h.dataLength = 0;
    const kind = this.#kinds[type] as number;
    this.#kind = kind;
    const name = pduTypeName[type] ?? hex2(type);
    const F = PduField;

    // PDU-type: known, right direction, right moment.
    if (kind === K_ILLEGAL) {
      const why = pduTypeName[type] === undefined
        ? `unknown PDU type ${name}`
        : `a ${this.role} does not receive ${name} PDUs`;
      return this.#badField(b, o, F.PDU_TYPE, why);
    }
    if (kind === K_IC ? this.#icDone : kind !== K_TERM && !this.#icDone) {
      const why = kind === K_IC
        ? `a second ${name}`
        : `${name} before the ${this.role === "target" ? "ICReq" : "ICResp"}`;
      return this.#failCommon(b, o, Fes.PduSequenceError, 0, why);
    }
    const spec = SPEC[kind] as KindSpec;

    // FLAGS: reserved bits, digests as negotiated, SUCCESS only with LAST_PDU.
    if ((flags & ~spec.flags) !== 0) {
      return this.#badField(b, o, F.FLAGS, `${name} with reserved flags ${hex2(flags)}`);
    }
    const hd = spec.digests && this.#hdgst ? DIGEST_BYTES : 0;
    if (spec.digests) {
      if (((flags & PduFlag.HDGSTF) !== 0) !== this.#hdgst) {
        const why = `${name} ${this.#hdgst ? "without" : "with"} a header digest`;
        return this.#badField(b, o, F.FLAGS, `${why}, contrary to the IC exchange`);
      }
      const hasData = spec.data !== DATA_NONE && plen > spec.hlen + hd;
      if (((flags & PduFlag.DDGSTF) !== 0) !== (this.#ddgst && hasData)) {
        const why = !this.#ddgst
          ? "with a data digest, which the IC exchange did not enable"
          : hasData
          ? "with data but no data digest"
          : "flags a data digest but carries no data";
        return this.#badField(b, o, F.FLAGS, `${name} ${why}`);
      }
    }
    if (kind === K_C2H && (flags & (PduFlag.LAST_PDU | PduFlag.SUCCESS)) === PduFlag.SUCCESS) {
      return this.#badField(b, o, F.FLAGS, "C2HData with SUCCESS but not LAST_PDU");
    }

    // HLEN.
    if (hlen !== spec.hlen) {
      return this.#badField(b, o, F.HLEN, `${name} with HLEN ${hlen}, expected ${spec.hlen}`);
    }
    const full = hlen + hd;
    this.#padLeft = 0;

    // PDO and PLEN of PDUs without data (a TermReq's data is read as part of its header).
    if (spec.data === DATA_NONE) {
      if (pdo !== 0) return this.#badField(b, o, F.PDO, `${name} with PDO ${pdo}; it has no data`);
      if (kind === K_TERM) {
        if (plen < hlen || plen > TERM_REQ_MAX_PLEN) {
          return this.#badField(b, o, F.PLEN, `${name} with PLEN ${plen}, outside [24, 152]`);
        }
        this.#need = plen;
        return true;
      }
      if (plen !== full) {
        return this.#badField(b, o, F.PLEN, `${name} with PLEN ${plen}, expected ${full}`);
      }
      this.#need = full;
      return true;
    }

    // PDO and PLEN of PDUs that may or must carry data.
    this.#need = full;
    if (plen <= full) {
      if (pdo !== 0 && pdo !== full) {
        return this.#badField(b, o, F.PDO, `${name} with PDO ${pdo} but no data`);
      }
      if (spec.data === DATA_REQUIRED) {
        return this.#badField(b, o, F.PLEN, `${name} with PLEN ${plen}: no data`);
      }
      if (plen !== full) {
        return this.#badField(b, o, F.PLEN, `${name} with PLEN ${plen}, below ${full}`);
      }
      return true;
    }
    const dd = (flags & PduFlag.DDGSTF) !== 0 ? DIGEST_BYTES : 0;
    if (pdo < full) {
      return this.#badField(b, o, F.PDO, `${name} with PDO ${pdo}, inside its ${full}-byte header`);
    }
    if (pdo % this.#rxAlign !== 0) {
      const why = `${name} with PDO ${pdo}, not a multiple of the ${this.#rxAlign}-byte alignment`;
      return this.#badField(b, o, F.PDO, why);
    }
    if (pdo + dd >= plen) {
      return this.#badField(b, o, F.PDO, `${name} with PDO ${pdo}, past its data (PLEN ${plen})`);
    }
    const dataLength = plen - pdo - dd;
    const max = this.#maxData[kind] as number;
    if (dataLength > max) {
      const why = `${name} with ${dataLength} bytes of data; the limit is ${max}`;
      return this.#failCommon(b, o, Fes.DataTransferLimitExceeded, 0, why);
    }
    h.dataLength = dataLength;
    this.#padLeft = pdo - full;
    return true;
  }

  /** The whole header is at `b[o..o+need)`: check HDGST and the PSH, then call the handler. */
  #onHeader(b: Uint8Array, o: number): void {
    const h = this.header;
    const F = PduField;
    h.bytes = b;
    h.offset = o;
    const hlen = h.hlen;
    const name = pduTypeName[h.type] as string;
    if ((h.flags & PduFlag.HDGSTF) !== 0 && !crc32cMatches(b, o + hlen, b, o, o + hlen)) {
      const got = getLe32(b, o + hlen);
      const why = `${name} header digest ${hex8(got)}, computed ${
        hex8(crc32cRange(b, o, o + hlen))
      }`;
      return this.#failAt(b, o, hlen, Fes.HeaderDigestError, got, why);
    }
    switch (this.#kind) {
      case K_IC: {
        h.pfv = getLe16(b, o + F.PFV);
        h.pda = b[o + F.PDA] as number;
        h.dgst = b[o + F.DGST] as number;
        const param = getLe32(b, o + F.MAXR2T);
        const isReq = h.type === PduType.ICReq;
        h.maxr2t = isReq ? param : 0;
        h.maxh2cdata = isReq ? 0 : param;
        if (h.pfv !== PFV_1_0) {
          const why = `${name} with PDU format version ${h.pfv}; only 0 is supported`;
          return this.#failAt(b, o, hlen, Fes.UnsupportedParameter, F.PFV, why);
        }
        if (h.pda > PDA_MAX) {
          return this.#badHeader(b, o, F.PDA, `${name} with ${isReq ? "H" : "C"}PDA ${h.pda} > 31`);
        }
        if ((h.dgst & ~0x03) !== 0) {
          return this.#badHeader(b, o, F.DGST, `${name} with reserved DGST bits ${hex2(h.dgst)}`);
        }
        if (!isReq && (h.maxh2cdata < MAXH2CDATA_MIN || h.maxh2cdata % 4 !== 0)) {
          const why =
            `ICResp with MAXH2CDATA ${h.maxh2cdata}: not a multiple of 4 of at least 4096`;
          return this.#badHeader(b, o, F.MAXH2CDATA, why);
        }
        this.#icDone = true;
        this.#callHeader();
        break;
      }
      case K_TERM:
        h.fes = getLe16(b, o + F.FES);
        h.fei = getLe32(b, o + F.FEI);
        this.#callHeader();
        if (this.#state !== PduReaderState.Failed) this.#state = PduReaderState.Terminated;
        this.#pdus++;
        return;
      case K_CMD:
        h.cccid = getLe16(b, o + F.SQE + 2);
        this.#callHeader();
        break;
      case K_RESP:
        h.cccid = getLe16(b, o + F.CQE + 12);
        this.#callHeader();
        break;
      case K_H2C:
      case K_C2H:
        h.cccid = getLe16(b, o + F.CCCID);
        h.ttag = getLe16(b, o + F.TTAG);
        h.datao = getLe32(b, o + F.DATAO);
        h.datal = getLe32(b, o + F.DATAL);
        if (h.datal !== h.dataLength) {
          const why = `${name} with DATAL ${h.datal} but ${h.dataLength} bytes of data`;
          return this.#badHeader(b, o, F.DATAL, why);
        }
        this.#callHeader();
        break;
      case K_R2T:
        h.cccid = getLe16(b, o + F.CCCID);
        h.ttag = getLe16(b, o + F.TTAG);
        h.r2to = getLe32(b, o + F.R2TO);
        h.r2tl = getLe32(b, o + F.R2TL);
        if (h.r2tl === 0) return this.#badHeader(b, o, F.R2TL, "R2T asking for 0 bytes");
        this.#callHeader();
        break;
    }
    if (this.#state === PduReaderState.Failed) return;
    // The header bytes may belong to the caller's read buffer: forget them.
    h.bytes = this.#hdrBuf;
    h.offset = 0;
    if (h.dataLength > 0) {
      this.#dataLeft = h.dataLength;
      this.#digest[0] = 0;
      this.#state = this.#padLeft > 0 ? PduReaderState.Padding : PduReaderState.Data;
    } else {
      this.#pdus++;
      this.#state = PduReaderState.Idle;
    }
  }

  #callHeader(): void {
    const h = this.header;
    this.#dest = null;
    this.#inHeaderCallback = true;
    try {
      switch (h.type) {
        case PduType.ICReq:
          this.#target?.onICReq(h);
          break;
        case PduType.ICResp:
          this.#host?.onICResp(h);
          break;
        case PduType.H2CTermReq:
        case PduType.C2HTermReq:
          this.#base.onTermReq(h);
          break;
        case PduType.CapsuleCmd:
          this.#target?.onCapsuleCmd(h);
          break;
        case PduType.CapsuleResp:
          this.#host?.onCapsuleResp(h);
          break;
        case PduType.H2CData:
          this.#target?.onH2CData(h);
          break;
        case PduType.C2HData:
          this.#host?.onC2HData(h);
          break;
        case PduType.R2T:
          this.#host?.onR2T(h);
          break;
      }
    } finally {
      this.#inHeaderCallback = false;
    }
  }

  // -------------------------------------------------------------------------
  // Data.

  #data(b: Uint8Array, pos: number, end: number): number {
    const h = this.header;
    const avail = end - pos;
    const n = avail < this.#dataLeft ? avail : this.#dataLeft;
    const stop = pos + n;
    if ((h.flags & PduFlag.DDGSTF) !== 0) crc32cUpdate(this.#digest, 0, b, pos, stop);
    const dest = this.#dest;
    if (dest === null) {
      this.#base.onData(h, b, pos, stop);
      if (this.#state === PduReaderState.Failed) return stop;
    } else {
      let s = pos;
      while (s < stop) {
        const iov = dest[this.#destIdx] as Uint8Array;
        const room = iov.byteLength - this.#destOff;
        if (room === 0) {
          this.#destIdx++;
          this.#destOff = 0;
          continue;
        }
        const k = stop - s < room ? stop - s : room;
        this.#copy(b, s, s + k, iov, this.#destOff);
        s += k;
        this.#destOff += k;
      }
    }
    this.#dataLeft -= n;
    if (this.#dataLeft === 0) {
      if ((h.flags & PduFlag.DDGSTF) !== 0) {
        this.#ddgstGot = 0;
        this.#digest[1] = 0;
        this.#state = PduReaderState.DataDigest;
      } else {
        h.ddgstOk = true;
        h.ddgstReceived = 0;
        h.ddgstComputed = 0;
        this.#endData();
      }
    }
    return stop;
  }

  #dataDigest(b: Uint8Array, pos: number, end: number): number {
    const d = this.#digest;
    if (this.#ddgstGot === 0 && end - pos >= DIGEST_BYTES) {
      d[1] = (b[pos] as number) | ((b[pos + 1] as number) << 8) |
        ((b[pos + 2] as number) << 16) | ((b[pos + 3] as number) << 24);
      pos += DIGEST_BYTES;
      this.#ddgstGot = DIGEST_BYTES;
    } else {
      while (pos < end && this.#ddgstGot < DIGEST_BYTES) {
        d[1] = (d[1] as number) | ((b[pos] as number) << (8 * this.#ddgstGot));
        this.#ddgstGot++;
        pos++;
      }
    }
    if (this.#ddgstGot === DIGEST_BYTES) {
      const h = this.header;
      h.ddgstOk = d[0] === d[1];
      h.ddgstReceived = d[1] as number;
      h.ddgstComputed = d[0] as number;
      this.#endData();
    }
    return pos;
  }

  #endData(): void {
    this.#dest = null;
    this.#state = PduReaderState.Idle;
    this.#pdus++;
    this.#base.onDataEnd(this.header);
  }

  /** Copies `src[s, e)` to `dst[d...)`: one memmove when both views share a buffer. */
  #copy(src: Uint8Array, s: number, e: number, dst: Uint8Array, d: number): void {
    const buf = src.buffer;
    if (buf === dst.buffer) {
      if (this.#wholeOf !== buf) {
        this.#wholeOf = buf;
        this.#whole = new Uint8Array(buf);
      }
      const so = src.byteOffset;
      this.#whole.copyWithin(dst.byteOffset + d, so + s, so + e);
      return;
    }
    if (e - s <= 32) {
      for (let i = s; i < e; i++) dst[d + i - s] = src[i] as number;
      return;
    }
    dst.set(src.subarray(s, e), d);
  }

  // -------------------------------------------------------------------------
  // Errors.

  #failCommon(b: Uint8Array, o: number, fes: number, fei: number, message: string): boolean {
    this.#failAt(b, o, COMMON_HEADER_BYTES, fes, fei, message);
    return false;
  }

  /** Invalid PDU Header Field in the whole header at `b[o..o+HLEN)`. */
  #badHeader(b: Uint8Array, o: number, fei: number, message: string): void {
    this.#failAt(b, o, this.header.hlen, Fes.InvalidHeaderField, fei, message);
  }

  /** Invalid PDU Header Field in the common header at `b[o..o+8)`. */
  #badField(b: Uint8Array, o: number, fei: number, message: string): boolean {
    return this.#failCommon(b, o, Fes.InvalidHeaderField, fei, message);
  }

  /** Error with the offending header at `b[o..o+n)`. */
  #failAt(b: Uint8Array, o: number, n: number, fes: number, fei: number, message: string): void {
    const len = Math.min(n, TERM_REQ_MAX_DATA);
    copySmall(b, o, this.#errHdr, 0, len);
    this.#report(fes, fei, message, len);
  }

  /** Error raised outside header parsing (by the handler or receiveInto). */
  #failHere(fes: number, fei: number, message: string): void {
    if (this.stopped) return;
    const h = this.header;
    let len: number;
    if (this.#inHeaderCallback) {
      len = Math.min(h.hlen, TERM_REQ_MAX_DATA, MAX_HLEN);
      copySmall(h.bytes, h.offset, this.#errHdr, 0, len);
    } else {
      // The raw header is gone: rebuild the common header and the data PDU fields.
      const e = this.#errHdr;
      e.fill(0);
      e[0] = h.type;
      e[1] = h.flags;
      e[2] = h.hlen;
      e[3] = h.pdo;
      setLe32(e, 4, h.plen);
      len = COMMON_HEADER_BYTES;
      if (h.type === PduType.H2CData || h.type === PduType.C2HData) {
        setLe16(e, PduField.CCCID, h.cccid);
        setLe16(e, PduField.TTAG, h.ttag);
        setLe32(e, PduField.DATAO, h.datao);
        setLe32(e, PduField.DATAL, h.datal);
        len = PduHlen.H2CData;
      }
    }
    this.#report(fes, fei, message, len);
  }

  #report(fes: number, fei: number, message: string, headerBytes: number): void {
    if (this.stopped) return;
    this.#state = PduReaderState.Failed;
    const h = this.header;
    const e: PduError = {
      fes,
      fei: fei >>> 0,
      message: `${fesName[fes] ?? `FES ${fes}`}: ${message}`,
      header: this.#errHdr.subarray(0, headerBytes),
      sendTermReq: this.#kind !== K_TERM,
      streamOffset: h.streamOffset,
    };
    this.#base.onError(e);
  }
}

function hex8(v: number): string {
  return `0x${(v >>> 0).toString(16).padStart(8, "0")}`;
}

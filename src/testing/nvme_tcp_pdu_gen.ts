/**
 * NVMe/TCP PDU streams for tests: a seeded PRNG, valid mixed streams as one
 * side would send them (with the PDUs a receiver should see), and mutators
 * that break them in the ways a fuzzer wants. Used by the PDU reader's tests
 * and meant for a live-target fuzz test (feed `generateStream(...).bytes`
 * with `receiver: "target"`, mutated, into a socket).
 *
 * Everything here is deterministic for a given seed.
 * @module
 */
import {
  CQE_BYTES,
  DIGEST_BYTES,
  encodeC2HData,
  encodeCapsuleCmd,
  encodeCapsuleResp,
  encodeH2CData,
  encodeICReq,
  encodeICResp,
  encodeR2T,
  encodeTermReq,
  Fes,
  pduLength,
  type PduRole,
  type PduTxParams,
  PduType,
  SQE_BYTES,
  writeDigest,
} from "../nvmf_tcp/pdu.ts";
import { crc32c } from "../../wasm/mod.ts";

/** A small, fast, seeded PRNG (mulberry32): deterministic streams for tests. */
export class Prng {
  #s: number;

  constructor(seed: number) {
    this.#s = seed >>> 0;
  }

  /** The next 32-bit unsigned value. */
  u32(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  bool(p = 0.5): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  /** One element of `a` (which must not be empty). */
  pick<T>(a: readonly T[]): T {
    const v = a[this.int(a.length)];
    if (v === undefined) throw new RangeError("pick() from an empty array.");
    return v;
  }

  /** Fills `b` with random bytes and returns it. */
  fill(b: Uint8Array): Uint8Array {
    for (let i = 0; i < b.length; i += 4) {
      const v = this.u32();
      for (let k = 0; k < 4 && i + k < b.length; k++) b[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return b;
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    return this.fill(new Uint8Array(n));
  }
}

/** One PDU of a generated stream, with the fields a receiver should see. */
export interface GenPdu {
  type: number;
  flags: number;
  /** Where the PDU starts in the stream, and its PLEN. */
  offset: number;
  plen: number;
  /** H2CData/C2HData/R2T CCCID; CapsuleCmd/CapsuleResp: the CID in the SQE/CQE. */
  cccid: number;
  ttag: number;
  datao: number;
  datal: number;
  r2to: number;
  r2tl: number;
  fes: number;
  fei: number;
  /** ICReq/ICResp fields. */
  pda: number;
  dgst: number;
  maxr2t: number;
  maxh2cdata: number;
  /** CapsuleCmd: the SQE; CapsuleResp: the CQE. */
  qe: Uint8Array | null;
  /** The PDU data: in-capsule data, H2C/C2H data, or the TermReq's offending header. */
  data: Uint8Array | null;
}

/** A PDU of `type` with every field zero, for a test to fill in. */
export function blank(type: number): GenPdu {
  return {
    type,
    flags: 0,
    offset: 0,
    plen: 0,
    cccid: 0,
    ttag: 0,
    datao: 0,
    datal: 0,
    r2to: 0,
    r2tl: 0,
    fes: 0,
    fei: 0,
    pda: 0,
    dgst: 0,
    maxr2t: 0,
    maxh2cdata: 0,
    qe: null,
    data: null,
  };
}

/** What {@link generateStream} makes. */
export interface StreamOptions {
  /** The side that RECEIVES the stream: "target" gets a host's PDUs, "host" a target's. */
  receiver: PduRole;
  /** Header/data digests after the IC exchange (the IC PDU requests/enables exactly these). */
  hdgst: boolean;
  ddgst: boolean;
  /** The receiver's PDA (CPDA of a target, HPDA of a host), 0-31. Default 0. */
  pda?: number;
  /** Start with the ICReq (receiver target) or ICResp (receiver host). Default true. */
  ic?: boolean;
  /** Operations after the IC PDU (a multi-PDU transfer counts as one). */
  count: number;
  /** Largest data of one PDU. Default 16384. */
  maxData?: number;
  /** Largest in-capsule data (receiver target). Default 8192. */
  maxInCapsule?: number;
  /** End with a TermReq. Default false. */
  termReq?: boolean;
}

/** A generated stream: its bytes and the PDUs in it, in order. */
export interface GeneratedStream {
  bytes: Uint8Array;
  pdus: GenPdu[];
}

/**
 * Encodes one PDU described by `p` (type, flags LAST_PDU/SUCCESS, fields,
 * qe, data) with the connection parameters `tx`; fills in `p.flags` and
 * `p.plen` as sent. IC PDUs and TermReqs ignore `tx`.
 */
export function encodeGenPdu(p: GenPdu, tx: PduTxParams): Uint8Array {
  const dataLength = p.data?.length ?? 0;
  let out: Uint8Array;
  let n: number;
  switch (p.type) {
    case PduType.ICReq:
      out = new Uint8Array(128);
      n = encodeICReq(out, 0, {
        hpda: p.pda,
        hdgst: (p.dgst & 1) !== 0,
        ddgst: (p.dgst & 2) !== 0,
        maxr2t: p.maxr2t,
      });
      break;
    case PduType.ICResp:
      out = new Uint8Array(128);
      n = encodeICResp(out, 0, {
        cpda: p.pda,
        hdgst: (p.dgst & 1) !== 0,
        ddgst: (p.dgst & 2) !== 0,
        maxh2cdata: p.maxh2cdata,
      });
      break;
    case PduType.H2CTermReq:
    case PduType.C2HTermReq: {
      out = new Uint8Array(24 + dataLength);
      const sender = p.type === PduType.H2CTermReq ? "host" : "target";
      n = encodeTermReq(out, 0, sender, p.fes, p.fei, p.data ?? undefined);
      break;
    }
    case PduType.CapsuleCmd:
      out = new Uint8Array(pduLength(72, tx, dataLength));
      n = encodeCapsuleCmd(out, 0, tx, p.qe ?? new Uint8Array(SQE_BYTES), dataLength);
      break;
    case PduType.CapsuleResp:
      out = new Uint8Array(pduLength(24, tx, 0));
      n = encodeCapsuleResp(out, 0, tx, p.qe ?? new Uint8Array(CQE_BYTES));
      break;
    case PduType.H2CData:
      out = new Uint8Array(pduLength(24, tx, dataLength));
      n = encodeH2CData(out, 0, tx, p.cccid, p.ttag, p.datao, dataLength, (p.flags & 4) !== 0);
      break;
    case PduType.C2HData:
      out = new Uint8Array(pduLength(24, tx, dataLength));
      n = encodeC2HData(
        out,
        0,
        tx,
        p.cccid,
        p.datao,
        dataLength,
        (p.flags & 4) !== 0,
        (p.flags & 8) !== 0,
      );
      break;
    case PduType.R2T:
      out = new Uint8Array(pduLength(24, tx, 0));
      n = encodeR2T(out, 0, tx, p.cccid, p.ttag, p.r2to, p.r2tl);
      break;
    default:
      throw new RangeError(`Cannot encode PDU type ${p.type}.`);
  }
  const isTerm = p.type === PduType.H2CTermReq || p.type === PduType.C2HTermReq;
  if (p.data !== null && dataLength > 0 && !isTerm) {
    // n is PDO: the data, then its digest, fill the rest of the PDU.
    out.set(p.data, n);
    if (tx.ddgst) writeDigest(out, n + dataLength, crc32c(p.data));
  } else if (n !== out.length) {
    throw new Error(`Encoded ${n} of ${out.length} bytes of a PDU without data.`);
  }
  p.flags = out[1] as number;
  p.plen = out.length;
  p.datal = p.type === PduType.H2CData || p.type === PduType.C2HData ? dataLength : p.datal;
  return out;
}

function sqeFor(prng: Prng, cid: number, opcode: number): Uint8Array {
  const sqe = prng.bytes(SQE_BYTES);
  sqe[0] = opcode;
  sqe[2] = cid & 0xff;
  sqe[3] = cid >>> 8;
  return sqe;
}

function cqeFor(prng: Prng, cid: number): Uint8Array {
  const cqe = prng.bytes(CQE_BYTES);
  cqe[12] = cid & 0xff;
  cqe[13] = cid >>> 8;
  return cqe;
}

/**
 * A valid stream as the receiver's peer would send it: the IC PDU, then
 * `count` operations (commands with and without in-capsule data and
 * multi-PDU H2CData transfers for a target; responses, multi-PDU C2HData
 * transfers and R2Ts for a host), then optionally a TermReq.
 */
export function generateStream(prng: Prng, o: StreamOptions): GeneratedStream {
  const pda = o.pda ?? 0;
  const maxData = o.maxData ?? 16384;
  const maxIcd = Math.min(o.maxInCapsule ?? 8192, maxData);
  const tx: PduTxParams = { hdgst: o.hdgst, ddgst: o.ddgst, txpda: pda };
  const dgst = (o.hdgst ? 1 : 0) | (o.ddgst ? 2 : 0);
  const pdus: GenPdu[] = [];
  const parts: Uint8Array[] = [];
  let offset = 0;
  const add = (p: GenPdu, asTx: PduTxParams) => {
    const bytes = encodeGenPdu(p, asTx);
    p.offset = offset;
    offset += bytes.length;
    parts.push(bytes);
    pdus.push(p);
  };
  const noDigests: PduTxParams = { hdgst: false, ddgst: false, txpda: 0 };
  if (o.ic ?? true) {
    if (o.receiver === "target") {
      const p = blank(PduType.ICReq);
      p.pda = prng.int(32);
      p.dgst = dgst;
      p.maxr2t = prng.int(4);
      add(p, noDigests);
    } else {
      const p = blank(PduType.ICResp);
      p.pda = pda;
      p.dgst = dgst;
      p.maxh2cdata = 4096 * prng.range(1, 64);
      add(p, noDigests);
    }
  }
  let cid = prng.int(0x10000);
  for (let i = 0; i < o.count; i++) {
    cid = (cid + 1) & 0xffff;
    const op = prng.int(3);
    if (o.receiver === "target") {
      if (op === 0) {
        const p = blank(PduType.CapsuleCmd);
        p.cccid = cid;
        p.qe = sqeFor(prng, cid, 0x02);
        add(p, tx);
      } else if (op === 1) {
        const p = blank(PduType.CapsuleCmd);
        p.cccid = cid;
        p.qe = sqeFor(prng, cid, 0x01);
        p.data = prng.bytes(prng.range(1, maxIcd));
        add(p, tx);
      } else {
        // A write answered by R2T: several H2CData PDUs for one command and tag.
        const total = prng.range(1, 3 * maxData);
        const ttag = prng.int(0x10000);
        let done = 0;
        while (done < total) {
          const n = Math.min(total - done, prng.range(1, maxData));
          const p = blank(PduType.H2CData);
          p.cccid = cid;
          p.ttag = ttag;
          p.datao = done;
          p.data = prng.bytes(n);
          done += n;
          if (done === total) p.flags = 0x04;
          add(p, tx);
        }
      }
    } else {
      if (op === 0) {
        const p = blank(PduType.CapsuleResp);
        p.cccid = cid;
        p.qe = cqeFor(prng, cid);
        add(p, tx);
      } else if (op === 1) {
        const p = blank(PduType.R2T);
        p.cccid = cid;
        p.ttag = prng.int(0x10000);
        p.r2to = prng.int(1 << 20);
        p.r2tl = prng.range(1, 1 << 20);
        add(p, tx);
      } else {
        const total = prng.range(1, 3 * maxData);
        const success = prng.bool();
        let done = 0;
        while (done < total) {
          const n = Math.min(total - done, prng.range(1, maxData));
          const p = blank(PduType.C2HData);
          p.cccid = cid;
          p.datao = done;
          p.data = prng.bytes(n);
          done += n;
          if (done === total) p.flags = success ? 0x0c : 0x04;
          add(p, tx);
        }
      }
    }
  }
  if (o.termReq ?? false) {
    const p = blank(o.receiver === "target" ? PduType.H2CTermReq : PduType.C2HTermReq);
    p.fes = prng.range(Fes.InvalidHeaderField, Fes.UnsupportedParameter);
    p.fei = prng.int(64);
    p.data = prng.bytes(prng.range(0, 128));
    add(p, tx);
  }
  return { bytes: concat(parts), pdus };
}

/** Concatenates byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Values that often break parsers, for field overwrites. */
const INTERESTING = [
  0,
  1,
  2,
  3,
  4,
  7,
  8,
  0x17,
  0x18,
  0x1c,
  0x48,
  0x4c,
  0x7f,
  0x80,
  0x81,
  0xfe,
  0xff,
];

/**
 * Returns a mutated copy of `bytes`: `count` mutations among bit flips,
 * random or interesting byte values (often in a PDU header), truncation,
 * inserted random bytes, duplicated and deleted slices, and PLEN rewrites.
 * `pduOffsets`, when given, aims header mutations at PDU starts.
 */
export function mutate(
  prng: Prng,
  bytes: Uint8Array,
  count = 1,
  pduOffsets: readonly number[] = [],
): Uint8Array {
  let b: Uint8Array = bytes.slice();
  for (let m = 0; m < count; m++) {
    if (b.length === 0) {
      b = prng.bytes(prng.range(1, 64));
      continue;
    }
    const at = pduOffsets.length > 0 && prng.bool(0.6)
      ? Math.min(b.length - 1, prng.pick(pduOffsets) + prng.int(24))
      : prng.int(b.length);
    switch (prng.int(8)) {
      case 0:
        b[at] = (b[at] as number) ^ (1 << prng.int(8));
        break;
      case 1:
        b[at] = prng.int(256);
        break;
      case 2:
        b[at] = prng.pick(INTERESTING);
        break;
      case 3:
        b = b.slice(0, prng.int(b.length));
        break;
      case 4: {
        const ins = prng.bytes(prng.range(1, 32));
        b = concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 5: {
        const len = Math.min(prng.range(1, 64), b.length - at);
        b = concat([b.subarray(0, at), b.subarray(at, at + len), b.subarray(at)]);
        break;
      }
      case 6: {
        const len = Math.min(prng.range(1, 64), b.length - at);
        b = concat([b.subarray(0, at), b.subarray(at + len)]);
        break;
      }
      default: {
        // Rewrite a PLEN (or any 32-bit field) with a nearby or wild value.
        if (at + 4 <= b.length) {
          const v = prng.bool() ? prng.u32() : prng.range(0, 300);
          b[at] = v & 0xff;
          b[at + 1] = (v >>> 8) & 0xff;
          b[at + 2] = (v >>> 16) & 0xff;
          b[at + 3] = (v >>> 24) & 0xff;
        }
      }
    }
  }
  return b;
}

/**
 * A PDU-shaped random byte string: a plausible or random common header
 * (type from the receiver's set or any, HLEN/PDO/PLEN near valid values)
 * followed by random bytes.
 */
export function randomPdu(prng: Prng, receiver: PduRole): Uint8Array {
  const types = receiver === "target" ? [0x00, 0x02, 0x04, 0x06] : [0x01, 0x03, 0x05, 0x07, 0x09];
  const type = prng.bool(0.8) ? prng.pick(types) : prng.int(256);
  const hlen = prng.bool(0.7) ? prng.pick([24, 72, 128]) : prng.int(256);
  const hd = prng.bool() ? DIGEST_BYTES : 0;
  const dataLen = prng.bool() ? 0 : prng.range(1, 300);
  const pdo = dataLen > 0 && prng.bool(0.7) ? hlen + hd : prng.int(256);
  const plen = prng.bool(0.7) ? (dataLen > 0 ? pdo : hlen + hd) + dataLen : prng.u32();
  const tail = Math.min(plen >>> 0, 512);
  const b = prng.bytes(Math.max(8, tail));
  b[0] = type;
  b[1] = prng.bool(0.7) ? prng.int(16) : prng.int(256);
  b[2] = hlen & 0xff;
  b[3] = pdo & 0xff;
  b[4] = plen & 0xff;
  b[5] = (plen >>> 8) & 0xff;
  b[6] = (plen >>> 16) & 0xff;
  b[7] = (plen >>> 24) & 0xff;
  return b;
}

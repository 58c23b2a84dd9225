/**
 * A raw NVMe/TCP host connection for tests that must send exactly the bytes
 * they build (bad digests, hostile PDUs, fuzzing): it records everything
 * the target sends and never gives up on its own (its reader records a parse
 * error instead of closing), so a close always means the target closed.
 * Used by test/integration/nvmf_fuzz_test.ts and nvmf_robustness_test.ts.
 * @module
 */
import { connectTcp, type TcpCloseReason, type TcpConnection } from "../net/tcp.ts";
import type { Reactor } from "../reactor/mod.ts";
import {
  type HostPduHandler,
  type PduError,
  type PduHeader,
  PduReader,
} from "../nvmf_tcp/pdu_reader.ts";
import {
  encodeCapsuleCmd,
  encodeH2CData,
  encodeICReq,
  PduFlag,
  pduLength,
  type PduTxParams,
  PduType,
  writeDigest,
} from "../nvmf_tcp/pdu.ts";
import { crc32c } from "../../wasm/mod.ts";
import {
  NVME_FABRICS_OPCODE,
  NVMF_CONNECT_DATA_BYTES,
  NvmfConnectData,
  NvmfConnectSqe,
  NvmfFabricsType,
} from "../nvme/mod.ts";
import { guard } from "./wait.ts";

/** SGL descriptor types of the SQE byte 39: in-capsule data, transport (R2T) data. */
export const SGL_IN_CAPSULE = 0x01;
export const SGL_TRANSPORT = 0x5a;

/** A command's completion: its status (CLOSED if the connection ended first) and DW0. */
export interface Completion {
  status: number;
  dw0: number;
}

/** One R2T the target sent. */
export interface R2tInfo {
  cccid: number;
  ttag: number;
  r2to: number;
  r2tl: number;
}

/** NVMe status of a command that never completed because the connection closed. */
export const CLOSED = -1;

export class RawConn implements HostPduHandler {
  readonly tx: PduTxParams = { hdgst: false, ddgst: false, txpda: 0 };
  readonly reader: PduReader = new PduReader({ role: "host" }, this);
  icResp = false;
  /** Status of every CapsuleResp, in arrival order. */
  readonly statuses: number[] = [];
  readonly r2ts: R2tInfo[] = [];
  termReqs = 0;
  termFes = -1;
  /** The target sent something this side's reader rejects: a target bug. */
  parseError: string | null = null;
  closeReason: TcpCloseReason | null = null;
  readonly whenClosed: Promise<TcpCloseReason>;
  #conn: TcpConnection | null = null;
  #resolveClosed: (r: TcpCloseReason) => void = () => {};
  readonly #pending = new Map<number, (c: Completion) => void>();
  readonly #icWaiters: (() => void)[] = [];
  readonly #r2tWaiters: ((r: R2tInfo | null) => void)[] = [];
  readonly #sentWaiters = new Map<number, () => void>();
  #tag = 0;
  #cid = 0;
  readonly #cqe = new Uint8Array(16);
  readonly #cqeView = new DataView(this.#cqe.buffer);

  private constructor() {
    this.whenClosed = new Promise((r) => (this.#resolveClosed = r));
  }

  static async open(reactor: Reactor, port: number): Promise<RawConn> {
    const rc = new RawConn();
    rc.#conn = await connectTcp(reactor, "127.0.0.1", port, {
      onData: (buf, len) => rc.#feed(buf, len),
      onClose: (r) => rc.#closed(r),
      onSent: (tag) => rc.#sent(tag),
      receiveBufferBytes: 64 * 1024,
      sendQueueEntries: 8192,
      sendQueueBytes: 16 << 20,
    });
    return rc;
  }

  get conn(): TcpConnection {
    if (this.#conn === null) throw new Error("not connected");
    return this.#conn;
  }

  /** Waits for the connection to close (the target closing it, in the classes that use it). */
  untilClosed(): Promise<TcpCloseReason> {
    return guard(this.whenClosed, "the target closing the connection");
  }

  /** Did the target end the connection (not this side)? */
  get closedByTarget(): boolean {
    return this.closeReason !== null && this.closeReason.kind !== "local";
  }

  /** Error statuses received. */
  get errorStatuses(): number {
    return this.statuses.filter((s) => s !== 0).length;
  }

  #feed(buf: Uint8Array, len: number): number {
    // Always consume: after a parse error or a TermReq the rest is dropped, so a
    // full receive buffer never closes this side.
    if (!this.reader.stopped) this.reader.consume(buf, 0, len);
    return len;
  }

  #closed(r: TcpCloseReason): void {
    this.closeReason = r;
    for (const w of this.#pending.values()) w({ status: CLOSED, dw0: 0 });
    this.#pending.clear();
    for (const w of this.#icWaiters.splice(0)) w();
    for (const w of this.#r2tWaiters.splice(0)) w(null);
    for (const w of this.#sentWaiters.values()) w();
    this.#sentWaiters.clear();
    this.#resolveClosed(r);
  }

  #sent(tag: number): void {
    const w = this.#sentWaiters.get(tag);
    if (w === undefined) return;
    this.#sentWaiters.delete(tag);
    w();
  }

  // ---- PDU events ----

  onICResp(h: PduHeader): void {
    this.icResp = true;
    this.tx.txpda = h.pda;
    this.reader.setDigests(this.tx.hdgst, this.tx.ddgst);
    for (const w of this.#icWaiters.splice(0)) w();
  }

  onCapsuleResp(h: PduHeader): void {
    h.copyCqe(this.#cqe);
    const status = this.#cqeView.getUint16(14, true) >> 1;
    this.statuses.push(status);
    this.#complete(this.#cqeView.getUint16(12, true), status, this.#cqeView.getUint32(0, true));
  }

  onC2HData(_h: PduHeader): void {
    // No destination: the data goes to onData and is dropped.
  }

  onR2T(h: PduHeader): void {
    const r = { cccid: h.cccid, ttag: h.ttag, r2to: h.r2to, r2tl: h.r2tl };
    this.r2ts.push(r);
    this.#r2tWaiters.shift()?.(r);
  }

  onData(): void {}

  onDataEnd(h: PduHeader): void {
    // C2HData with SUCCESS: the command completed without a CapsuleResp.
    const done = PduFlag.LAST_PDU | PduFlag.SUCCESS;
    if (h.type === PduType.C2HData && (h.flags & done) === done) {
      this.statuses.push(0);
      this.#complete(h.cccid, 0, 0);
    }
  }

  onTermReq(h: PduHeader): void {
    this.termReqs++;
    this.termFes = h.fes;
  }

  onError(e: PduError): void {
    this.parseError = e.message;
  }

  #complete(cid: number, status: number, dw0: number): void {
    const w = this.#pending.get(cid);
    if (w === undefined) return;
    this.#pending.delete(cid);
    w({ status, dw0 });
  }

  // ---- sending ----

  /** Queues bytes (nothing when the connection is closing). */
  send(bytes: Uint8Array): void {
    this.conn.send(bytes);
  }

  /** Sends bytes and resolves once they are in the kernel (or the connection closed). */
  flush(bytes: Uint8Array): Promise<void> {
    if (this.closeReason !== null) return Promise.resolve();
    const tag = ++this.#tag;
    const p = new Promise<void>((r) => this.#sentWaiters.set(tag, r));
    if (!this.conn.send(bytes, tag)) {
      this.#sentWaiters.delete(tag);
      return Promise.resolve();
    }
    return p;
  }

  close(): void {
    this.#conn?.close();
  }

  /** The ICReq asking for these digests; the ICResp then turns them on. */
  icReq(o: { hdgst?: boolean; ddgst?: boolean; hpda?: number } = {}): Uint8Array {
    this.tx.hdgst = o.hdgst ?? false;
    this.tx.ddgst = o.ddgst ?? false;
    const b = new Uint8Array(128);
    encodeICReq(b, 0, { hpda: o.hpda ?? 0, hdgst: this.tx.hdgst, ddgst: this.tx.ddgst, maxr2t: 0 });
    return b;
  }

  /** ICReq and ICResp; throws if the target closes instead. */
  async ic(o: { hdgst?: boolean; ddgst?: boolean; hpda?: number } = {}): Promise<void> {
    const done = new Promise<void>((r) => this.#icWaiters.push(r));
    this.send(this.icReq(o));
    await guard(done, "ICResp");
    if (!this.icResp) throw new Error(`no ICResp: ${this.closeReason?.message}`);
  }

  /**
   * A CapsuleCmd PDU: `fill` writes the SQE (after the defaults: in-capsule
   * SGL for `data`), the CID is stamped last. `corruptDigest` flips a bit
   * of the data digest. Returns the bytes and the CID.
   */
  capsule(
    fill: (v: DataView, sqe: Uint8Array) => void,
    data: Uint8Array | null = null,
    corruptDigest = false,
  ): { bytes: Uint8Array; cid: number } {
    const sqe = new Uint8Array(64);
    const v = new DataView(sqe.buffer);
    const len = data?.byteLength ?? 0;
    if (len > 0) {
      sqe[39] = SGL_IN_CAPSULE;
      v.setUint32(32, len, true);
    }
    fill(v, sqe);
    const cid = this.#cid = (this.#cid + 1) & 0xffff;
    v.setUint16(2, cid, true);
    const bytes = new Uint8Array(pduLength(72, this.tx, len));
    const n = encodeCapsuleCmd(bytes, 0, this.tx, sqe, len);
    if (data !== null && len > 0) {
      bytes.set(data, n);
      if (this.tx.ddgst) writeDigest(bytes, n + len, crc32c(data) ^ (corruptDigest ? 1 : 0));
    }
    return { bytes, cid };
  }

  /** Sends a command and resolves with its completion (status CLOSED if the connection ends). */
  command(
    fill: (v: DataView, sqe: Uint8Array) => void,
    data: Uint8Array | null = null,
  ): Promise<Completion> {
    const { bytes, cid } = this.capsule(fill, data);
    const p = this.expect(cid);
    this.send(bytes);
    return p;
  }

  /** The completion of `cid`, sent by other means. */
  expect(cid: number): Promise<Completion> {
    if (this.closeReason !== null) return Promise.resolve({ status: CLOSED, dw0: 0 });
    return guard(
      new Promise<Completion>((r) => this.#pending.set(cid, r)),
      `completion of CID ${cid}`,
    );
  }

  /** The next R2T (null if the connection closes first). */
  nextR2T(): Promise<R2tInfo | null> {
    if (this.closeReason !== null) return Promise.resolve(null);
    return guard(new Promise((r) => this.#r2tWaiters.push(r)), "R2T");
  }

  /** An H2CData PDU with its data (and a digest, flipped when `corruptDigest`). */
  h2cData(
    cccid: number,
    ttag: number,
    datao: number,
    data: Uint8Array,
    last: boolean,
    corruptDigest = false,
  ): Uint8Array {
    const bytes = new Uint8Array(pduLength(24, this.tx, data.byteLength));
    const n = encodeH2CData(bytes, 0, this.tx, cccid, ttag, datao, data.byteLength, last);
    bytes.set(data, n);
    if (this.tx.ddgst) {
      writeDigest(bytes, n + data.byteLength, crc32c(data) ^ (corruptDigest ? 1 : 0));
    }
    return bytes;
  }
}

// ---- SQE builders ----

/** Connect of queue `qid` with `sqsize` (0's based) and a keep-alive in ms. */

export function connectSqe(qid: number, sqsize: number, katoMs = 0): (v: DataView) => void {
  return (v) => {
    v.setUint8(0, NVME_FABRICS_OPCODE);
    v.setUint8(4, NvmfFabricsType.Connect);
    v.setUint16(NvmfConnectSqe.QID, qid, true);
    v.setUint16(NvmfConnectSqe.SQSIZE, sqsize, true);
    v.setUint32(NvmfConnectSqe.KATO, katoMs, true);
  };
}

export function connectData(subnqn: string, hostnqn: string, cntlid: number): Uint8Array {
  const data = new Uint8Array(NVMF_CONNECT_DATA_BYTES);
  for (let i = 0; i < 16; i++) data[NvmfConnectData.HOSTID + i] = 0xa0 + i;
  new DataView(data.buffer).setUint16(NvmfConnectData.CNTLID, cntlid, true);
  const enc = new TextEncoder();
  data.set(enc.encode(subnqn).subarray(0, 255), NvmfConnectData.SUBNQN);
  data.set(enc.encode(hostnqn).subarray(0, 255), NvmfConnectData.HOSTNQN);
  return data;
}

export function propertySet(offset: number, value: number): (v: DataView) => void {
  return (v) => {
    v.setUint8(0, NVME_FABRICS_OPCODE);
    v.setUint8(4, NvmfFabricsType.PropertySet);
    v.setUint32(44, offset, true);
    v.setUint32(48, value, true);
  };
}

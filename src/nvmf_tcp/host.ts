/**
 * An NVMe/TCP host (initiator) on the same PDU code as the target: used by
 * `sluice perf`, the benchmarks and the tests that need a host that can
 * misbehave on purpose. It does what Linux's nvme-tcp host does to bring a
 * controller up: ICReq, Fabrics Connect, enable through CC, Identify, Set
 * Features (Number of Queues), then one connection per I/O queue.
 *
 * The I/O path (`NvmeTcpQueue.submitIo`) allocates nothing per command:
 * slots, SQEs, PDU headers are made when the queue connects.
 * @module
 */
import type { Reactor } from "../reactor/reactor.ts";
import { connectTcp, type TcpConnection } from "../net/tcp.ts";
import {
  encodeCapsuleCmd,
  encodeH2CData,
  encodeICReq,
  PduFlag,
  type PduTxParams,
  storeDataDigest,
} from "./pdu.ts";
import { type HostPduHandler, type PduError, type PduHeader, PduReader } from "./pdu_reader.ts";
import {
  NVME_FABRICS_OPCODE,
  NvmeAdminOpcode,
  NvmeIoOpcode,
  NvmfFabricsType,
} from "../nvme/opcodes.ts";
import { NVMF_CONNECT_DATA_BYTES, NvmfConnectData } from "../nvme/fabrics.ts";
import { NvmeReg } from "../nvme/registers.ts";
import { nvmeStatusText } from "../nvme/status.ts";

/** SGL descriptor types in SQE byte 39 (type << 4 | subtype). */
const SGL_DATA_BLOCK_OFFSET = 0x01;
const SGL_TRANSPORT_DATA_BLOCK = 0x5a;
const HDR_BYTES = 256;

/** A failed command, with its NVMe status. */
export class NvmeCommandError extends Error {
  readonly status: number;
  constructor(what: string, status: number) {
    super(`${what}: ${nvmeStatusText(status)} (status 0x${status.toString(16)})`);
    this.name = "NvmeCommandError";
    this.status = status;
  }
}

/** Options of one queue's connection. */
export interface NvmeTcpQueueOptions {
  host: string;
  port: number;
  /** Command slots (at most the queue size minus one). */
  depth: number;
  hdgst?: boolean;
  ddgst?: boolean;
  /** Largest data transfer a slot can take, in bytes. */
  maxTransfer?: number;
}

/** Called when an I/O submitted with submitIo ends. */
export type IoDone = (slot: number, status: number, dw0: number) => void;

/** One TCP connection: an admin or I/O queue. */
export class NvmeTcpQueue implements HostPduHandler {
  readonly depth: number;
  /** Bytes a capsule may carry in-line (set from Identify's IOCCSZ; 0 until known). */
  inCapsuleBytes = 0;
  /** MAXH2CDATA the target announced. */
  maxH2CData = 0;
  /** Called for every I/O completion of submitIo slots. */
  onIoDone: IoDone = () => {};
  /** Called once if the connection ends. */
  onClose: (reason: string) => void = () => {};
  readonly #conn: TcpConnection;
  readonly #reader: PduReader;
  readonly #tx: PduTxParams;
  readonly #sqe: Uint8Array[] = [];
  readonly #sqeView: DataView[] = [];
  readonly #hdr: Uint8Array[] = [];
  readonly #buf: Uint8Array[] = [];
  readonly #iov: Uint8Array[][] = [];
  readonly #len: Int32Array;
  readonly #busy: Uint8Array;
  readonly #cid: Uint16Array;
  /** Control-path completions by slot. */
  readonly #waiters: (((status: number, dw0: number) => void) | null)[] = [];
  #icResolve: (() => void) | null = null;
  #closed = false;
  #cidSeq = 0;

  private constructor(conn: TcpConnection, o: NvmeTcpQueueOptions) {
    this.depth = o.depth;
    this.#conn = conn;
    this.#tx = { hdgst: o.hdgst ?? false, ddgst: o.ddgst ?? false, txpda: 0 };
    this.#reader = new PduReader({ role: "host", maxC2HData: o.maxTransfer ?? 1 << 20 }, this);
    for (let i = 0; i < o.depth; i++) {
      const sqe = new Uint8Array(64);
      this.#sqe.push(sqe);
      this.#sqeView.push(new DataView(sqe.buffer));
      this.#hdr.push(new Uint8Array(HDR_BYTES));
      this.#buf.push(EMPTY);
      this.#iov.push([EMPTY]);
      this.#waiters.push(null);
    }
    this.#len = new Int32Array(o.depth);
    this.#busy = new Uint8Array(o.depth);
    this.#cid = new Uint16Array(o.depth);
  }

  /** Connects and does the ICReq/ICResp exchange. */
  static async connect(reactor: Reactor, o: NvmeTcpQueueOptions): Promise<NvmeTcpQueue> {
    let q: NvmeTcpQueue | null = null;
    const conn = await connectTcp(reactor, o.host, o.port, {
      onData: (buf, len) => (q === null ? 0 : q.#reader.consume(buf, 0, len)),
      onClose: (r) => {
        if (q !== null) q.#closedBy(r.message);
      },
      receiveBufferBytes: 256 * 1024,
      sendQueueEntries: o.depth * 8 + 16,
      sendQueueBytes: o.depth * ((o.maxTransfer ?? 1 << 20) + HDR_BYTES) + 65536,
    });
    q = new NvmeTcpQueue(conn, o);
    const ic = new Uint8Array(128);
    const n = encodeICReq(ic, 0, { hpda: 0, hdgst: q.#tx.hdgst, ddgst: q.#tx.ddgst, maxr2t: 0 });
    const queue = q;
    const ready = new Promise<void>((resolve, reject) => {
      queue.#icResolve = resolve;
      queue.onClose = (why) => reject(new Error(`connection closed during ICReq: ${why}`));
    });
    conn.send(ic.subarray(0, n));
    await ready;
    q.onClose = () => {};
    return q;
  }

  #closedBy(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (let i = 0; i < this.depth; i++) {
      const w = this.#waiters[i];
      if (w) {
        this.#waiters[i] = null;
        w(0xffff, 0);
      } else if (this.#busy[i] === 1) this.onIoDone(i, 0xffff, 0);
      this.#busy[i] = 0;
    }
    this.onClose(reason);
  }

  /** Is the connection still up? */
  get open(): boolean {
    return !this.#closed;
  }

  /** Closes the connection. */
  close(): void {
    this.#conn.close();
  }

  // ---- commands ----

  /**
   * Starts a Read or Write of `buf` at `slba` (`nlb` blocks) on `nsid` in
   * `slot`; `onIoDone(slot, status, dw0)` reports the end. No allocation.
   */
  submitIo(
    slot: number,
    write: boolean,
    nsid: number,
    slba: number,
    nlb: number,
    buf: Uint8Array,
  ): void {
    const v = this.#sqeView[slot] as DataView;
    const sqe = this.#sqe[slot] as Uint8Array;
    sqe.fill(0);
    v.setUint8(0, write ? NvmeIoOpcode.Write : NvmeIoOpcode.Read);
    v.setUint32(4, nsid, true);
    v.setUint32(40, slba % 0x100000000, true);
    v.setUint32(44, Math.floor(slba / 0x100000000), true);
    v.setUint16(48, nlb - 1, true);
    this.#send(slot, write ? 1 : 2, buf);
  }

  /** A control-path command: `fill` writes the SQE; resolves with status and DW0. */
  command(
    fill: (v: DataView) => void,
    data: Uint8Array | null = null,
    dir: 0 | 1 | 2 = 0,
  ): Promise<{ status: number; dw0: number }> {
    // Control commands use the highest free slot, away from I/O slots counting up.
    let slot = -1;
    for (let i = this.depth - 1; i >= 0; i--) {
      if (this.#busy[i] === 0) {
        slot = i;
        break;
      }
    }
    if (slot < 0) return Promise.reject(new Error("no free command slot"));
    if (this.#closed) return Promise.reject(new Error("connection closed"));
    const sqe = this.#sqe[slot] as Uint8Array;
    sqe.fill(0);
    fill(this.#sqeView[slot] as DataView);
    return new Promise((resolve) => {
      this.#waiters[slot] = (status, dw0) => resolve({ status, dw0 });
      this.#send(slot, dir, data ?? EMPTY);
    });
  }

  /** Sends the capsule of `slot`: in-capsule data when it fits, else announced for R2T. */
  #send(slot: number, dir: number, buf: Uint8Array): void {
    const v = this.#sqeView[slot] as DataView;
    const sqe = this.#sqe[slot] as Uint8Array;
    const cid = this.#cidSeq = (this.#cidSeq + 1) & 0xffff;
    this.#cid[slot] = cid;
    // CID: slot in the low bits would do, but a changing CID catches stale responses.
    v.setUint16(2, (cid & ~0x3ff) | slot, true);
    this.#busy[slot] = 1;
    this.#buf[slot] = buf;
    (this.#iov[slot] as Uint8Array[])[0] = buf;
    this.#len[slot] = buf.byteLength;
    const len = dir === 0 ? 0 : buf.byteLength;
    const inCapsule = dir === 1 && len > 0 && len <= this.inCapsuleBytes;
    if (len > 0) {
      sqe[39] = inCapsule ? SGL_DATA_BLOCK_OFFSET : SGL_TRANSPORT_DATA_BLOCK;
      v.setUint32(32, len, true);
    }
    const hdr = this.#hdr[slot] as Uint8Array;
    const n = encodeCapsuleCmd(hdr, 0, this.#tx, sqe, inCapsule ? len : 0);
    if (!inCapsule) {
      this.#conn.sendRange(hdr, 0, n, 0);
      return;
    }
    this.#conn.sendRange(hdr, 0, n, 0);
    this.#conn.send(buf, 0);
    if (this.#tx.ddgst) {
      storeDataDigest(hdr, 200, this.#iov[slot] as Uint8Array[], 1, 0, len);
      this.#conn.sendRange(hdr, 200, 4, 0);
    }
  }

  #slotOf(cid: number): number {
    const slot = cid & 0x3ff;
    if (slot >= this.depth || this.#busy[slot] !== 1) return -1;
    return slot;
  }

  // ---- PDU events ----

  onICResp(h: PduHeader): void {
    this.#tx.txpda = h.pda;
    this.maxH2CData = h.maxh2cdata;
    this.#reader.setDigests(this.#tx.hdgst, this.#tx.ddgst);
    this.#icResolve?.();
    this.#icResolve = null;
  }

  onCapsuleResp(h: PduHeader): void {
    const cqe = this.#cqe;
    h.copyCqe(cqe);
    const v = this.#cqeView;
    const slot = this.#slotOf(v.getUint16(12, true));
    if (slot < 0) {
      this.#reader.fail(1, 0, `response for unknown CID ${v.getUint16(12, true)}`);
      return;
    }
    this.#finish(slot, v.getUint16(14, true) >> 1, v.getUint32(0, true));
  }

  readonly #cqe = new Uint8Array(16);
  readonly #cqeView = new DataView(this.#cqe.buffer);
  #c2hSlot = -1;

  onC2HData(h: PduHeader): void {
    const slot = this.#slotOf(h.cccid);
    if (slot < 0) {
      this.#reader.fail(1, 8, `C2HData for unknown CID ${h.cccid}`);
      return;
    }
    this.#c2hSlot = slot;
    this.#reader.receiveInto(this.#iov[slot] as Uint8Array[], 1, h.datao);
  }

  onR2T(h: PduHeader): void {
    const slot = this.#slotOf(h.cccid);
    if (slot < 0) {
      this.#reader.fail(1, 8, `R2T for unknown CID ${h.cccid}`);
      return;
    }
    // Answer with H2CData PDUs of at most MAXH2CDATA bytes each.
    const buf = this.#buf[slot] as Uint8Array;
    const hdr = this.#hdr[slot] as Uint8Array;
    const max = this.maxH2CData > 0 ? this.maxH2CData : h.r2tl;
    let off = h.r2to;
    const end = h.r2to + h.r2tl;
    while (off < end) {
      const n = Math.min(max, end - off);
      const last = off + n === end;
      // The header area holds one H2CData header at a time at offset 64; a
      // second one (r2tl > MAXH2CDATA) gets a fresh header buffer: rare.
      const hb = off === h.r2to ? hdr : new Uint8Array(128);
      const at = off === h.r2to ? 64 : 0;
      const hn = encodeH2CData(hb, at, this.#tx, h.cccid, h.ttag, off, n, last);
      this.#conn.sendRange(hb, at, hn, 0);
      this.#conn.sendRange(buf, off, n, 0);
      if (this.#tx.ddgst) {
        const dig = off === h.r2to ? hdr : new Uint8Array(4);
        const dat = off === h.r2to ? 208 : 0;
        storeDataDigest(dig, dat, [buf.subarray(off, off + n)], 1, 0, n);
        this.#conn.sendRange(dig, dat, 4, 0);
      }
      off += n;
    }
  }

  onData(): void {}

  onDataEnd(h: PduHeader): void {
    if (h.type !== 0x07) return;
    const slot = this.#c2hSlot;
    this.#c2hSlot = -1;
    if (slot < 0) return;
    if (this.#tx.ddgst && !h.ddgstOk) {
      this.#finish(slot, 0x0004 | 0x4000, 0); // Data Transfer Error, DNR
      return;
    }
    if ((h.flags & PduFlag.SUCCESS) !== 0 && (h.flags & PduFlag.LAST_PDU) !== 0) {
      this.#finish(slot, 0, 0);
    }
  }

  onTermReq(h: PduHeader): void {
    this.#closedBy(`target sent C2HTermReq (FES ${h.fes})`);
    this.#conn.close();
  }

  onError(e: PduError): void {
    this.#closedBy(`protocol error: ${e.message}`);
    this.#conn.close();
  }

  #finish(slot: number, status: number, dw0: number): void {
    this.#busy[slot] = 0;
    const w = this.#waiters[slot];
    if (w) {
      this.#waiters[slot] = null;
      w(status, dw0);
      return;
    }
    this.onIoDone(slot, status, dw0);
  }

  /** Raw bytes onto the connection: for tests that must break the protocol. */
  sendRaw(bytes: Uint8Array): void {
    this.#conn.send(bytes);
  }
}

/** What a connected controller looks like to its host. */
export interface NvmeTcpControllerInfo {
  cntlid: number;
  /** Namespace geometry of `nsid`. */
  blockSize: number;
  numBlocks: number;
  /** MDTS in bytes (0: no limit). */
  maxTransfer: number;
  serialNumber: string;
  modelNumber: string;
  subnqn: string;
}

/** Options for {@link NvmeTcpController.connect}. */
export interface NvmeTcpControllerOptions {
  host: string;
  port: number;
  subnqn: string;
  hostnqn?: string;
  nsid?: number;
  ioQueues?: number;
  depth?: number;
  hdgst?: boolean;
  ddgst?: boolean;
  /** Keep Alive Timeout to ask for, ms (0: none). */
  katoMs?: number;
}

/** A controller brought up like Linux does it, with I/O queues. */
export class NvmeTcpController {
  readonly admin: NvmeTcpQueue;
  readonly ioQueues: NvmeTcpQueue[];
  readonly info: NvmeTcpControllerInfo;

  private constructor(admin: NvmeTcpQueue, io: NvmeTcpQueue[], info: NvmeTcpControllerInfo) {
    this.admin = admin;
    this.ioQueues = io;
    this.info = info;
  }

  static async connect(reactor: Reactor, o: NvmeTcpControllerOptions): Promise<NvmeTcpController> {
    const hostnqn = o.hostnqn ??
      "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";
    const depth = o.depth ?? 32;
    const qopts = { host: o.host, port: o.port, hdgst: o.hdgst, ddgst: o.ddgst };
    const admin = await NvmeTcpQueue.connect(reactor, { ...qopts, depth: 32, maxTransfer: 8192 });
    admin.inCapsuleBytes = 4096;
    // Queues connected so far: all of them are closed if a later step fails.
    const io: NvmeTcpQueue[] = [];
    try {
      const c = await fabricsConnect(admin, o.subnqn, hostnqn, 0, 31, 0xffff, o.katoMs ?? 0);
      const cntlid = c & 0xffff;
      await ok(admin, "Property Set CC", (v) => propertySet(v, NvmeReg.CC, CC_ENABLE));
      for (let i = 0; i < 100; i++) {
        const r = await ok(admin, "Property Get CSTS", (v) => propertyGet(v, NvmeReg.CSTS));
        if ((r.dw0 & 1) === 1) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      const idc = new Uint8Array(4096);
      await ok(admin, "Identify Controller", (v) => identifyCmd(v, 1, 0), idc, 2);
      const dv = new DataView(idc.buffer);
      const mdts = idc[77] as number;
      const ioccsz = dv.getUint32(1792, true);
      const nsid = o.nsid ?? 1;
      const idn = new Uint8Array(4096);
      await ok(admin, "Identify Namespace", (v) => identifyCmd(v, 0, nsid), idn, 2);
      const nv = new DataView(idn.buffer);
      const nsze = Number(nv.getBigUint64(0, true));
      const flbas = (idn[26] as number) & 0xf;
      const lbads = idn[128 + 4 * flbas + 2] as number;
      const n = o.ioQueues ?? 1;
      await ok(admin, "Set Features Number of Queues", (v) => {
        v.setUint8(0, NvmeAdminOpcode.SetFeatures);
        v.setUint32(40, 0x07, true);
        v.setUint32(44, ((n - 1) << 16) | (n - 1), true);
      });
      const maxTransfer = mdts === 0 ? 1 << 20 : 4096 * 2 ** mdts;
      for (let q = 1; q <= n; q++) {
        const ioq = await NvmeTcpQueue.connect(reactor, { ...qopts, depth, maxTransfer });
        io.push(ioq);
        ioq.inCapsuleBytes = ioccsz > 4 ? ioccsz * 16 - 64 : 0;
        await fabricsConnect(ioq, o.subnqn, hostnqn, q, depth, cntlid, 0);
      }
      return new NvmeTcpController(admin, io, {
        cntlid,
        blockSize: 2 ** lbads,
        numBlocks: nsze,
        maxTransfer,
        serialNumber: ascii(idc, 4, 20),
        modelNumber: ascii(idc, 24, 40),
        subnqn: ascii(idc, 768, 256),
      });
    } catch (e) {
      for (const q of io) q.close();
      admin.close();
      throw e;
    }
  }

  /** Sends a Keep Alive on the admin queue. */
  async keepAlive(): Promise<void> {
    await ok(this.admin, "Keep Alive", (v) => v.setUint8(0, NvmeAdminOpcode.KeepAlive));
  }

  /** Shuts the controller down (CC.SHN normal) and closes every connection. */
  async close(): Promise<void> {
    if (this.admin.open) {
      try {
        await this.admin.command((v) => propertySet(v, NvmeReg.CC, CC_ENABLE | (1 << 14)));
      } catch { /* going away anyway */ }
    }
    for (const q of this.ioQueues) q.close();
    this.admin.close();
  }
}

const CC_ENABLE = 1 | (6 << 16) | (4 << 20); // EN, IOSQES 64 B, IOCQES 16 B

async function ok(
  q: NvmeTcpQueue,
  what: string,
  fill: (v: DataView) => void,
  data: Uint8Array | null = null,
  dir: 0 | 1 | 2 = 0,
): Promise<{ status: number; dw0: number }> {
  const r = await q.command(fill, data, dir);
  if (r.status !== 0) throw new NvmeCommandError(what, r.status);
  return r;
}

function propertySet(v: DataView, offset: number, value: number): void {
  v.setUint8(0, NVME_FABRICS_OPCODE);
  v.setUint8(4, NvmfFabricsType.PropertySet);
  v.setUint32(44, offset, true);
  v.setUint32(48, value, true);
}

function propertyGet(v: DataView, offset: number): void {
  v.setUint8(0, NVME_FABRICS_OPCODE);
  v.setUint8(4, NvmfFabricsType.PropertyGet);
  v.setUint32(44, offset, true);
}

function identifyCmd(v: DataView, cns: number, nsid: number): void {
  v.setUint8(0, NvmeAdminOpcode.Identify);
  v.setUint32(4, nsid, true);
  v.setUint32(40, cns, true);
}

/** Fabrics Connect; returns DW0 (the CNTLID for an admin queue). */
async function fabricsConnect(
  q: NvmeTcpQueue,
  subnqn: string,
  hostnqn: string,
  qid: number,
  sqsize: number,
  cntlid: number,
  katoMs: number,
): Promise<number> {
  const data = new Uint8Array(NVMF_CONNECT_DATA_BYTES);
  const dv = new DataView(data.buffer);
  for (let i = 0; i < 16; i++) data[NvmfConnectData.HOSTID + i] = i + 1;
  dv.setUint16(NvmfConnectData.CNTLID, cntlid, true);
  const enc = new TextEncoder();
  data.set(enc.encode(subnqn).subarray(0, 255), NvmfConnectData.SUBNQN);
  data.set(enc.encode(hostnqn).subarray(0, 255), NvmfConnectData.HOSTNQN);
  const saved = q.inCapsuleBytes;
  q.inCapsuleBytes = Math.max(saved, NVMF_CONNECT_DATA_BYTES);
  try {
    const r = await q.command(
      (v) => {
        v.setUint8(0, NVME_FABRICS_OPCODE);
        v.setUint8(4, NvmfFabricsType.Connect);
        v.setUint16(42, qid, true);
        v.setUint16(44, sqsize, true);
        v.setUint32(48, katoMs, true);
      },
      data,
      1,
    );
    if (r.status !== 0) throw new NvmeCommandError(`Connect (queue ${qid})`, r.status);
    return r.dw0;
  } finally {
    q.inCapsuleBytes = saved;
  }
}

function ascii(b: Uint8Array, off: number, len: number): string {
  return new TextDecoder().decode(b.subarray(off, off + len)).replace(/[\0 ]+$/, "");
}

const EMPTY = new Uint8Array(0);

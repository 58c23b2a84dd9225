/**
 * The NVMe/TCP transport of the target: listeners, one queue pair per TCP
 * connection, PDUs in and out, and data movement (in-capsule data, R2T and
 * H2CData for writes, C2HData for reads), around the transport-independent
 * core in target.ts (see request.ts for the contract).
 *
 * Per connection everything is allocated at the ICReq/ICResp exchange: the
 * request slots, their PDU header areas and in-capsule buffers. Data
 * buffers come from the process-wide chunk pool. Nothing is allocated per
 * command in steady state.
 * @module
 */
import { sqeSgl1Length } from "../nvme/sqe.ts";
import { cqeSetStatus } from "../nvme/cqe.ts";
import { genericStatus, NvmeGenericSc } from "../nvme/status.ts";
import { NVME_FABRICS_OPCODE, nvmeDataDirection, NvmfFabricsType } from "../nvme/opcodes.ts";
import { localAddress } from "../../ffi/tcp_socket.ts";
import { ReceiveBufferPool, type TcpCloseReason, TcpConnection, TcpListener } from "../net/tcp.ts";
import type { Reactor } from "../reactor/reactor.ts";
import { wasmAlloc } from "../../wasm/mod.ts";
import { CHUNK_BYTES, type ChunkPool, sharedChunkPool } from "./buffer_pool.ts";
import {
  encodeC2HData,
  encodeCapsuleResp,
  encodeICResp,
  encodeR2T,
  encodeTermReq,
  Fes,
  PduFlag,
  type PduTxParams,
  PduType,
  storeDataDigest,
} from "./pdu.ts";
import { type PduError, type PduHeader, PduReader, type TargetPduHandler } from "./pdu_reader.ts";
import { NvmeDataDir, type NvmfQpair, NvmfRequest } from "./request.ts";
import type { NvmfListener, NvmfTarget } from "./target.ts";

/** Request states; `state` on NvmfRequest. */
const RS = {
  Free: 0,
  /** Waiting for data chunks from the pool. */
  NeedBuffer: 1,
  /** R2T sent; H2CData arriving. */
  H2C: 2,
  /** In the core (bdev I/O may be in flight on its buffers). */
  Executing: 3,
  /** Response (and data) queued on the socket. */
  Sending: 4,
} as const;

/**
 * Per-request header area, one fixed region per PDU so a queued PDU is
 * never overwritten by the next: R2T or C2HData header at 0 (up to 128
 * bytes with the host's PDA padding), the data digest at 128, the
 * CapsuleResp at 160.
 */
const HDR_AREA = 192;
const DDGST_AT = 128;
const RESP_AT = 160;
const SGL_TYPE_TRANSPORT = 0x5a; // Transport SGL Data Block, subtype Transport Specific (0xA)
const S_SGL_LENGTH = genericStatus(NvmeGenericSc.DataSglLengthInvalid);
const S_SEQUENCE = genericStatus(NvmeGenericSc.CommandSequenceError);

/** Options of the TCP transport beyond SPDK's (which live in the target's transport options). */
export interface NvmfTcpTransportOptions {
  /** Deadline for the data of an R2T, ms (default 10 000). */
  h2cTimeoutMs?: number;
  /** Deadline from accept to a completed Fabrics Connect, ms (default 10 000). */
  connectTimeoutMs?: number;
}

/** Counters of the transport, for status and tests. */
export class NvmfTcpStats {
  connections = 0;
  connectionsClosed = 0;
  capsules = 0;
  r2ts = 0;
  c2hData = 0;
  /** Commands that waited for data buffers. */
  bufferWaits = 0;
  /** Connections ended by a protocol error (TermReq sent). */
  protocolErrors = 0;
  /** Connections ended by a data digest mismatch. */
  digestErrors = 0;
}

/** The TCP transport of one target on one reactor. */
export class NvmfTcpTransport {
  readonly target: NvmfTarget;
  readonly reactor: Reactor;
  readonly stats: NvmfTcpStats = new NvmfTcpStats();
  readonly pool: ChunkPool;
  readonly #listeners = new Map<string, TcpListener>();
  readonly #qpairs = new Set<TcpQpair>();
  readonly #receiveBuffers = new ReceiveBufferPool(receiveBuffer, 64, 256);
  readonly #unhook: (() => void)[] = [];
  /** Qpairs with commands waiting for chunks, in order. */
  readonly #bufferWaiters: TcpQpair[] = [];
  readonly log: (msg: string) => void;
  #closed = false;

  /**
   * Most chunks one connection may hold at once: an eighth of the pool, so
   * one host (or a few) cannot take every buffer and stall the others.
   */
  readonly chunkQuota: number;
  /** A host must send the data of an R2T within this many ms, or its connection is dropped. */
  readonly h2cTimeoutMs: number;
  /**
   * A connection must finish ICReq and Fabrics Connect within this many ms,
   * or it is dropped: until then it holds its command slots for nothing.
   */
  readonly connectTimeoutMs: number;
  /** The R2T deadline check: a timer, so it also runs while the reactor is parked. */
  readonly #deadlineTimer: ReturnType<typeof setInterval>;

  constructor(
    target: NvmfTarget,
    reactor: Reactor,
    log: (msg: string) => void = () => {},
    opts: NvmfTcpTransportOptions = {},
  ) {
    this.target = target;
    this.reactor = reactor;
    this.log = log;
    const o = target.transportOptions;
    this.pool = sharedChunkPool(o.ioUnitSize * o.numSharedBuffers);
    const perCommand = Math.ceil(o.maxIoSize / CHUNK_BYTES);
    this.chunkQuota = Math.max(perCommand, Math.floor(this.pool.chunks / 8));
    this.h2cTimeoutMs = opts.h2cTimeoutMs ?? 10_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    this.#deadlineTimer = setInterval(
      this.#deadlineCheck,
      Math.min(1000, this.h2cTimeoutMs / 2, this.connectTimeoutMs / 2),
    );
    // Deno's timer ids are numbers (Node's type definitions, pulled in by node: imports, say otherwise).
    Deno.unrefTimer(Number(this.#deadlineTimer));
    this.#unhook.push(target.onListenerAdded((l) => this.#listen(l)));
    this.#unhook.push(target.onListenerRemoved((l) => this.#unlisten(l)));
    for (const l of target.listeners()) this.#listen(l);
  }

  /** The port a listener really got (for port 0 in tests). */
  listenerPort(l: { traddr: string; trsvcid: string }): number | undefined {
    return this.#listeners.get(`${l.traddr}:${l.trsvcid}`)?.port;
  }

  #listen(l: NvmfListener): void {
    const key = `${l.traddr}:${l.trsvcid}`;
    if (this.#listeners.has(key)) return;
    const listener = new TcpListener(this.reactor, {
      host: l.traddr,
      port: Number(l.trsvcid),
      maxConnections: 1024,
      onConnection: (fd, peer) => this.#accept(fd, peer, l),
      onAcceptError: (errno, message) =>
        this.log(`nvmf_tcp: accept on ${key}: ${message} (${errno})`),
    });
    this.#listeners.set(key, listener);
    this.log(`nvmf_tcp: listening on ${l.traddr}:${listener.port}`);
  }

  async #unlisten(l: NvmfListener): Promise<void> {
    const key = `${l.traddr}:${l.trsvcid}`;
    const listener = this.#listeners.get(key);
    if (listener === undefined) return;
    this.#listeners.delete(key);
    await listener.close();
  }

  #accept(fd: number, peer: string, l: NvmfListener): void {
    if (this.#closed) return;
    const q = new TcpQpair(this, fd, peer, { traddr: l.traddr, trsvcid: l.trsvcid });
    this.#qpairs.add(q);
    this.stats.connections++;
  }

  /** @internal Receive buffers of connections, in WASM memory, recycled. */
  get receiveBuffers(): ReceiveBufferPool {
    return this.#receiveBuffers;
  }

  /** @internal A qpair's commands wait for chunks. */
  waitForBuffers(q: TcpQpair): void {
    if (!this.#bufferWaiters.includes(q)) this.#bufferWaiters.push(q);
  }

  /**
   * @internal Chunks came back: let waiting qpairs try again, oldest first.
   * A qpair held back by its own quota does not block the ones behind it.
   */
  buffersFreed(): void {
    for (let i = 0; i < this.#bufferWaiters.length && this.pool.available > 0;) {
      const q = this.#bufferWaiters[i] as TcpQpair;
      if (q.retryBufferWaits()) this.#bufferWaiters.splice(i, 1);
      else i++;
    }
  }

  /** Drops connections sitting on an R2T without sending its data. */
  readonly #deadlineCheck = (): void => {
    const now = performance.now();
    for (const q of this.#qpairs) {
      q.checkConnectDeadline(now - this.connectTimeoutMs);
      q.checkH2CDeadline(now - this.h2cTimeoutMs);
    }
  };

  /** @internal */
  qpairGone(q: TcpQpair): void {
    this.#qpairs.delete(q);
    const i = this.#bufferWaiters.indexOf(q);
    if (i >= 0) this.#bufferWaiters.splice(i, 1);
    this.stats.connectionsClosed++;
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#qpairs.size;
  }

  /** Closes listeners and connections; resolves when every connection is gone. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const u of this.#unhook) u();
    clearInterval(this.#deadlineTimer);
    await Promise.all([...this.#listeners.values()].map((l) => l.close()));
    this.#listeners.clear();
    const gone = [...this.#qpairs].map((q) => q.whenGone);
    for (const q of this.#qpairs) q.disconnect("transport shutting down");
    await Promise.all(gone);
  }
}

/** One NVMe/TCP connection: an admin or I/O queue pair. */
class TcpQpair implements NvmfQpair, TargetPduHandler {
  qid = 0;
  sqSize = 0;
  ctrlr: unknown = null;
  readonly peer: string;
  readonly local: { traddr: string; trsvcid: string };
  readonly #t: NvmfTcpTransport;
  readonly #conn: TcpConnection;
  readonly #reader: PduReader;
  readonly #tx: PduTxParams = { hdgst: false, ddgst: false, txpda: 0 };
  readonly #depth: number;
  readonly #icd: number;
  readonly #maxIo: number;
  readonly #maxChunks: number;
  #reqs: NvmfRequest[] = [];
  /** Per request: PDU header area (R2T, C2HData + DDGST, CapsuleResp), in-capsule buffer, chunk ids. */
  #hdr: Uint8Array[] = [];
  #icdBuf: Uint8Array[] = [];
  #chunks: Int32Array[] = [];
  #chunkCount: Int32Array = new Int32Array(0);
  /** Bytes of H2C data received so far per request. */
  #h2cDone: Int32Array = new Int32Array(0);
  #free: number[] = [];
  /** Commands waiting for chunks, in arrival order. */
  #bufferWait: NvmfRequest[] = [];
  #icDone = false;
  #closing = false;
  #connClosed = false;
  #inCore = 0;
  #gone = false;
  #goneResolve!: () => void;
  readonly whenGone: Promise<void> = new Promise((r) => (this.#goneResolve = r));
  /** The request whose H2CData is arriving (set in onH2CData). */
  #h2cReq: NvmfRequest | null = null;
  /** The request whose in-capsule data is arriving (set in onCapsuleCmd). */
  #capsuleReq: NvmfRequest | null = null;
  /** Which requests are inside the core. */
  #inCoreFlag: Uint8Array = new Uint8Array(0);
  #loggedBadCommand = false;
  readonly #acceptedAtMs = performance.now();
  /** Chunks this connection holds now (bounded by the transport's quota). */
  #chunksHeld = 0;
  /** When each slot's R2T went out (performance.now ms). */
  #r2tAtMs: Float64Array = new Float64Array(0);
  /** Where in-capsule data of a rejected command goes. */
  #discard: Uint8Array[] = [];

  constructor(
    t: NvmfTcpTransport,
    fd: number,
    peer: string,
    local: { traddr: string; trsvcid: string },
  ) {
    this.#t = t;
    this.peer = peer;
    let localAddr = local;
    try {
      const a = localAddress(fd);
      const i = a.lastIndexOf(":");
      localAddr = { traddr: a.slice(0, i).replace(/^\[|\]$/g, ""), trsvcid: a.slice(i + 1) };
    } catch { /* keep the listener's address */ }
    this.local = localAddr;
    const o = t.target.transportOptions;
    this.#depth = Math.max(o.maxQueueDepth, o.maxAqDepth);
    this.#icd = o.inCapsuleDataSize;
    this.#maxIo = o.maxIoSize;
    this.#maxChunks = Math.ceil(o.maxIoSize / CHUNK_BYTES);
    this.#reader = new PduReader({
      role: "target",
      maxInCapsuleData: Math.max(this.#icd, 1024),
      maxH2CData: o.maxIoSize,
    }, this);
    const perCmdEntries = this.#maxChunks + 4;
    this.#conn = new TcpConnection(t.reactor, fd, {
      peer,
      receiveBufferBytes: 64 * 1024,
      receiveBuffers: t.receiveBuffers,
      sendQueueEntries: this.#depth * perCmdEntries,
      sendQueueBytes: this.#depth * (o.maxIoSize + HDR_AREA) + 65536,
      onData: (buf, len) => this.#reader.consume(buf, 0, len),
      onSent: this.#onSent,
      onClose: (r) => this.#onConnClosed(r),
    });
  }

  // ---- PDU events ----

  onICReq(h: PduHeader): void {
    // Parameters the host wants: digests and the alignment of the PDUs we send it.
    this.#tx.hdgst = (h.dgst & 1) !== 0;
    this.#tx.ddgst = (h.dgst & 2) !== 0;
    this.#tx.txpda = h.pda;
    this.#allocate();
    const resp = new Uint8Array(128);
    const n = encodeICResp(resp, 0, {
      cpda: 0,
      hdgst: this.#tx.hdgst,
      ddgst: this.#tx.ddgst,
      maxh2cdata: this.#maxIo,
    });
    this.#conn.send(resp.subarray(0, n));
    this.#reader.setDigests(this.#tx.hdgst, this.#tx.ddgst);
    this.#icDone = true;
  }

  /** Slots, header areas and in-capsule buffers: once per connection. */
  #allocate(): void {
    const icdBytes = Math.max(this.#icd, 1024);
    const icdBlock = new Uint8Array(this.#depth * icdBytes);
    const hdrBlock = new Uint8Array(this.#depth * HDR_AREA);
    for (let i = 0; i < this.#depth; i++) {
      const req = new NvmfRequest(this, i);
      req.iovs = new Array<Uint8Array>(this.#maxChunks).fill(EMPTY);
      req.bdevIo.ctx = req;
      this.#reqs.push(req);
      this.#hdr.push(hdrBlock.subarray(i * HDR_AREA, (i + 1) * HDR_AREA));
      this.#icdBuf.push(icdBlock.subarray(i * icdBytes, (i + 1) * icdBytes));
      this.#chunks.push(new Int32Array(this.#maxChunks));
    }
    this.#chunkCount = new Int32Array(this.#depth);
    this.#r2tAtMs = new Float64Array(this.#depth);
    this.#inCoreFlag = new Uint8Array(this.#depth);
    this.#discard = [new Uint8Array(icdBytes)];
    this.#h2cDone = new Int32Array(this.#depth);
    for (let i = this.#depth - 1; i >= 0; i--) this.#free.push(i);
  }

  onCapsuleCmd(h: PduHeader): void {
    const idx = this.#free.pop();
    if (idx === undefined) {
      // More commands outstanding than the queue has entries: the host broke the protocol.
      this.#reader.fail(Fes.PduSequenceError, 0, `more than ${this.#depth} commands outstanding`);
      return;
    }
    const req = this.#reqs[idx] as NvmfRequest;
    this.#t.stats.capsules++;
    h.copySqe(req.sqe);
    req.iovcnt = 0;
    req.length = sqeSgl1Length(req.sqeView);
    req.dir = nvmeDataDirection(req.sqe) as NvmeDataDir;
    this.#chunkCount[idx] = 0;
    this.#h2cDone[idx] = 0;
    if (req.dir === NvmeDataDir.None || req.length === 0) {
      req.length = 0;
      req.dir = NvmeDataDir.None;
    }
    if (h.dataLength > 0) {
      // In-capsule data: only for host-to-controller commands, all of it, within ICDOFF/IOCCSZ.
      if (req.dir !== NvmeDataDir.HostToController || h.dataLength !== req.length) {
        this.#reqFail(req, S_SGL_LENGTH, "in-capsule data does not match the command's SGL");
        // The data still arrives: into the discard buffer.
        this.#capsuleReq = null;
        this.#reader.receiveInto(this.#discard, 1, 0);
        return;
      }
      const buf = this.#icdBuf[idx] as Uint8Array;
      req.iovs[0] = buf.byteLength === req.length ? buf : buf.subarray(0, req.length);
      req.iovcnt = 1;
      this.#capsuleReq = req; // data lands now; execute at onDataEnd
      this.#reader.receiveInto(req.iovs, 1, 0);
      return;
    }
    if (this.ctrlr === null && !isConnect(req.sqe)) {
      // Before Connect the core refuses everything but Connect (Command
      // Sequence Error). Refuse it here, before taking chunks or sending an
      // R2T: a host that never connects must not hold the shared buffers.
      this.#reqFail(req, S_SEQUENCE, "command before Connect");
      return;
    }
    if (req.length > this.#maxIo) {
      this.#reqFail(req, S_SGL_LENGTH, `transfer of ${req.length} bytes exceeds MDTS`);
      return;
    }
    if (req.dir === NvmeDataDir.HostToController && req.sqe[24 + 15] !== SGL_TYPE_TRANSPORT) {
      // Data neither in the capsule nor announced for R2T.
      this.#reqFail(req, S_SGL_LENGTH, "write without in-capsule data or a transport SGL");
      return;
    }
    this.#startData(req);
  }

  /** Gets chunks for the transfer (or queues), then R2T or execute. */
  #startData(req: NvmfRequest): void {
    if (req.length > 0) {
      const ids = this.#chunks[req.index] as Int32Array;
      const want = Math.ceil(req.length / CHUNK_BYTES);
      const n = this.#chunksHeld + want > this.#t.chunkQuota
        ? -1
        : this.#t.pool.take(req.length, ids, req.iovs);
      if (n < 0) {
        req.state = RS.NeedBuffer;
        this.#bufferWait.push(req);
        this.#t.stats.bufferWaits++;
        this.#t.waitForBuffers(this);
        return;
      }
      this.#chunkCount[req.index] = n;
      this.#chunksHeld += n;
      req.iovcnt = n;
    }
    if (req.dir === NvmeDataDir.HostToController && req.length > 0) {
      req.state = RS.H2C;
      this.#r2tAtMs[req.index] = performance.now();
      const hdr = this.#hdr[req.index] as Uint8Array;
      const n = encodeR2T(hdr, 0, this.#tx, req.cid, req.index, 0, req.length);
      this.#t.stats.r2ts++;
      this.#conn.sendRange(hdr, 0, n, 0);
      return;
    }
    this.#execute(req);
  }

  /** @internal The pool has chunks again; false while this qpair still waits. */
  retryBufferWaits(): boolean {
    while (this.#bufferWait.length > 0) {
      const req = this.#bufferWait[0] as NvmfRequest;
      if (this.#closing) {
        this.#bufferWait.shift();
        this.#release(req);
        continue;
      }
      const want = Math.ceil(req.length / CHUNK_BYTES);
      if (this.#t.pool.available < want || this.#chunksHeld + want > this.#t.chunkQuota) {
        return false;
      }
      this.#bufferWait.shift();
      this.#startData(req);
    }
    return true;
  }

  onH2CData(h: PduHeader): void {
    const req = h.ttag < this.#reqs.length ? this.#reqs[h.ttag] : undefined;
    if (req === undefined || req.state !== RS.H2C || req.cid !== h.cccid) {
      this.#reader.fail(
        Fes.InvalidHeaderField,
        10,
        `H2CData for unknown TTAG ${h.ttag} / CCCID ${h.cccid}`,
      );
      return;
    }
    if (h.datao !== (this.#h2cDone[req.index] as number)) {
      this.#reader.fail(
        Fes.DataTransferOutOfRange,
        0,
        `H2CData at offset ${h.datao}, expected ${this.#h2cDone[req.index]}`,
      );
      return;
    }
    this.#h2cReq = req;
    this.#reader.receiveInto(req.iovs, req.iovcnt, h.datao);
  }

  onData(): void {
    // All data goes straight into request buffers (receiveInto); nothing arrives here.
  }

  onDataEnd(h: PduHeader): void {
    if (this.#tx.ddgst && !h.ddgstOk) {
      // A data digest mismatch: the data cannot be trusted and neither can the stream.
      this.#t.stats.digestErrors++;
      this.disconnect("data digest error");
      return;
    }
    if (h.type === PduType.CapsuleCmd) {
      const req = this.#capsuleReq;
      this.#capsuleReq = null;
      if (req !== null) this.#execute(req);
      return;
    }
    const req = this.#h2cReq;
    if (req === null) return;
    const done = (this.#h2cDone[req.index] as number) + h.dataLength;
    this.#h2cDone[req.index] = done;
    if ((h.flags & PduFlag.LAST_PDU) !== 0 || done >= req.length) {
      this.#h2cReq = null;
      if (done !== req.length) {
        this.#reader.fail(Fes.DataTransferOutOfRange, 0, `H2C data ${done} of ${req.length} bytes`);
        return;
      }
      this.#execute(req);
    }
  }

  onTermReq(h: PduHeader): void {
    this.disconnect(`host sent H2CTermReq (FES ${h.fes}, FEI ${h.fei})`);
  }

  onError(e: PduError): void {
    this.#t.stats.protocolErrors++;
    if (e.sendTermReq && !this.#connClosed) {
      const buf = new Uint8Array(256);
      const n = encodeTermReq(buf, 0, "target", e.fes, e.fei, e.header);
      this.#conn.send(buf.subarray(0, n));
      this.#conn.end();
    }
    this.disconnect(`${e.message} (FES ${e.fes})`);
  }

  // ---- execution and completion ----

  #execute(req: NvmfRequest): void {
    req.state = RS.Executing;
    this.#inCoreFlag[req.index] = 1;
    this.#inCore++;
    this.#t.target.execute(req);
  }

  /** The core finished `req` (maybe inside execute). */
  complete(req: NvmfRequest): void {
    if (this.#inCoreFlag[req.index] === 1) {
      this.#inCoreFlag[req.index] = 0;
      this.#inCore--;
    }
    if (this.#closing) {
      // The connection is gone: the buffers are free once the bdev let go of them, which is now.
      this.#release(req);
      return;
    }
    req.state = RS.Sending;
    const hdr = this.#hdr[req.index] as Uint8Array;
    const status = req.cqeView.getUint16(14, true) >> 1;
    const tag = req.index + 1;
    if (req.dir === NvmeDataDir.ControllerToHost && req.length > 0 && status === 0) {
      const o = this.#t.target.transportOptions;
      const success = o.c2hSuccess;
      const n = encodeC2HData(hdr, 0, this.#tx, req.cid, 0, req.length, true, success);
      this.#t.stats.c2hData++;
      if (this.#tx.ddgst) {
        storeDataDigest(hdr, DDGST_AT, req.iovs, req.iovcnt, 0, req.length);
        this.#conn.sendRange(hdr, 0, n, 0);
        this.#conn.sendv(req.iovs, req.iovcnt, 0);
        if (success) {
          this.#conn.sendRange(hdr, DDGST_AT, 4, tag);
          return;
        }
        this.#conn.sendRange(hdr, DDGST_AT, 4, 0);
      } else {
        this.#conn.sendRange(hdr, 0, n, 0);
        this.#conn.sendv(req.iovs, req.iovcnt, success ? tag : 0);
        if (success) return;
      }
    }
    const n = encodeCapsuleResp(hdr, RESP_AT, this.#tx, req.cqe);
    this.#conn.sendRange(hdr, RESP_AT, n, tag);
  }

  readonly #onSent = (tag: number): void => {
    if (tag === 0) return;
    const req = this.#reqs[tag - 1];
    if (req === undefined || req.state !== RS.Sending) return;
    this.#release(req);
  };

  /** Returns the slot and its chunks. */
  #release(req: NvmfRequest): void {
    const n = this.#chunkCount[req.index] as number;
    if (n > 0) {
      this.#t.pool.give(this.#chunks[req.index] as Int32Array, n);
      this.#chunkCount[req.index] = 0;
      this.#chunksHeld -= n;
    }
    req.state = RS.Free;
    req.iovcnt = 0;
    this.#free.push(req.index);
    if (n > 0) this.#t.buffersFreed();
    this.#maybeGone();
  }

  /** Completes `req` with `status` without running it. */
  #reqFail(req: NvmfRequest, status: number, why: string): void {
    // Logged once per connection: a misbehaving host must not flood the log.
    if (!this.#loggedBadCommand) {
      this.#loggedBadCommand = true;
      this.#t.log(
        `nvmf_tcp: ${this.peer}: command ${req.cid} refused: ${why} (further ones not logged)`,
      );
    }
    req.resetCqe();
    cqeSetStatus(req.cqeView, status);
    this.#inCoreFlag[req.index] = 0;
    this.complete(req);
  }

  /** @internal Drops the connection if it has not completed Connect since `before`. */
  checkConnectDeadline(before: number): void {
    if (this.#closing || this.ctrlr !== null || this.#acceptedAtMs >= before) return;
    this.disconnect(
      `no Fabrics Connect within ${this.#t.connectTimeoutMs} ms of accepting the connection`,
    );
  }

  /** @internal Drops the connection if an R2T older than `before` still waits for its data. */
  checkH2CDeadline(before: number): void {
    if (this.#closing) return;
    for (const req of this.#reqs) {
      if (req.state === RS.H2C && (this.#r2tAtMs[req.index] as number) < before) {
        this.disconnect(
          `no data for the R2T of command ${req.cid} within ${this.#t.h2cTimeoutMs} ms`,
        );
        return;
      }
    }
  }

  // ---- teardown ----

  disconnect(reason: string): void {
    if (this.#closing) {
      // Asked again (shutdown, keep-alive) while a C2HTermReq drains: close now.
      if (!this.#connClosed) this.#conn.close();
      return;
    }
    this.#closing = true;
    if (reason !== PEER_CLOSED) this.#t.log(`nvmf_tcp: ${this.peer}: disconnected: ${reason}`);
    // After a protocol error the connection is ending (onError): it closes once
    // the C2HTermReq is in the kernel. close() now would drop it unsent.
    if (!this.#connClosed && this.#conn.open) this.#conn.close();
    this.#t.target.qpairDisconnected(this);
    // Requests waiting for data or buffers are free now. Requests being sent
    // are released only when the connection has closed: until then a SENDMSG
    // in the kernel may still read their chunks, and a chunk handed to another
    // connection meanwhile would leak its data to this host. Requests in the
    // core come back through complete().
    for (const req of this.#reqs) {
      if (req.state === RS.H2C || req.state === RS.NeedBuffer) this.#release(req);
    }
    this.#bufferWait.length = 0;
    this.#maybeGone();
  }

  #onConnClosed(r: TcpCloseReason): void {
    this.#connClosed = true;
    if (!this.#closing) this.disconnect(r.kind === "peer" ? PEER_CLOSED : r.message);
    // Every operation is back from the kernel now: sends dropped at close
    // never report onSent, and their chunks are safe to reuse.
    for (const req of this.#reqs) if (req.state === RS.Sending) this.#release(req);
    this.#maybeGone();
  }

  #maybeGone(): void {
    // Once only: releases and the close itself each call this, and a second
    // qpairGone would count the connection closed twice.
    if (this.#gone || !this.#closing || !this.#connClosed || this.#inCore > 0) return;
    for (const req of this.#reqs) if (req.state !== RS.Free) return;
    this.#gone = true;
    this.#t.qpairGone(this);
    this.#goneResolve();
  }
}

const EMPTY = new Uint8Array(0);

/** Is the SQE a Fabrics Connect? */
function isConnect(sqe: Uint8Array): boolean {
  return sqe[0] === NVME_FABRICS_OPCODE && sqe[4] === NvmfFabricsType.Connect;
}

/** The reason given when the host closed the connection: normal, not logged. */
const PEER_CLOSED = "closed by the host";

/** A receive buffer in WASM memory (header digests in place), or plain memory once that is full. */
function receiveBuffer(bytes: number, align: number): Uint8Array {
  try {
    return wasmAlloc(bytes, align);
  } catch {
    return new Uint8Array(bytes);
  }
}

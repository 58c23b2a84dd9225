/**
 * The NVMe-oF target core: subsystems (and the discovery subsystem),
 * listeners as data, the transport options, and `execute`, the one entry
 * point through which a transport hands over every command of every queue
 * pair. Independent of TCP: the transport owns sockets, PDUs and data
 * movement (see `request.ts` for the contract).
 *
 * @example
 * ```ts
 * const target = new NvmfTarget({ bdevs: registry, thread: reactor });
 * target.onListenerAdded((l) => transport.listen(l.traddr, l.trsvcid));
 * target.onListenerRemoved((l) => transport.stopListening(l.traddr, l.trsvcid));
 * target.createTransport({});
 * target.createSubsystem({ nqn: "nqn.2016-06.io.spdk:cnode1", allowAnyHost: true });
 * await target.addListener("nqn.2016-06.io.spdk:cnode1", {
 *   trtype: "TCP", adrfam: "IPv4", traddr: "127.0.0.1", trsvcid: "4420",
 * });
 * // For each command the transport received on a queue pair:
 * target.execute(req); // req.qpair.complete(req) follows, now or later
 * // When a connection ends:
 * target.qpairDisconnected(qpair);
 * ```
 * @module
 */
import { type BdevRegistry, type IoThread, pollerName } from "../bdev/mod.ts";
import {
  commandSpecificStatus,
  connectInvalidParameterDw0,
  connectSuccessDw0,
  genericStatus,
  NVME_CNTLID_DYNAMIC,
  NVME_DISCOVERY_NQN,
  NVME_FABRICS_OPCODE,
  NvmeGenericSc,
  NVMF_CATTR_DISABLE_SQ_FLOW_CONTROL,
  NVMF_CONNECT_DATA_BYTES,
  NVMF_NQN_FIELD_BYTES,
  NvmfConnectData,
  NvmfConnectSqe,
  NvmfFabricsSc,
  NvmfFabricsType,
} from "../nvme/mod.ts";
import { completeRequest, copyFromIovs, NvmfController, NvmfQueue } from "./ctrlr.ts";
import { buildDiscoveryLog } from "./discovery.ts";
import type { NvmfQpair, NvmfRequest } from "./request.ts";
import { listenerMatches, NvmfSubsystem, type NvmfSubsystemOptions } from "./subsystem.ts";

/** Most subsystems a target holds (the discovery subsystem not counted). */
export const NVMF_MAX_SUBSYSTEMS = 1024;
/** Most controllers (host associations) of a target, discovery ones included. */
export const NVMF_MAX_CONTROLLERS = 4096;
/** Most distinct listen addresses of a target. */
export const NVMF_MAX_LISTENERS = 64;
/** Most listen addresses of one subsystem. */
export const NVMF_MAX_LISTENERS_PER_SUBSYSTEM = 16;
/** How often the keep-alive poller looks at the clock. */
const KEEP_ALIVE_CHECK_INTERVAL_MS = 10;

/** An operating error of the target; `errno` is positive, `code` the RPC error (-errno). */
export class NvmfError extends Error {
  readonly errno: number;
  readonly code: number;
  constructor(message: string, errno: number) {
    super(message);
    this.name = "NvmfError";
    this.errno = errno;
    this.code = -errno;
  }
}

/** Options of `nvmf_create_transport` (SPDK's, camelCase). The core uses the first five. */
export interface NvmfTransportOptions {
  trtype: "TCP";
  /** Most entries of an I/O queue (CAP.MQES + 1, MAXCMD). */
  maxQueueDepth: number;
  /** Most I/O queues per controller. */
  maxIoQpairsPerCtrlr: number;
  /** Bytes of data a command capsule may carry (IOCCSZ). */
  inCapsuleDataSize: number;
  /** Largest transfer (MDTS); a power of two of at least 4096. */
  maxIoSize: number;
  /** Most entries of an admin queue (the discovery log's ASQSZ). */
  maxAqDepth: number;
  /** Keep Alive granularity in 100 ms units (Identify KAS). */
  kas: number;
  /** Shortest Keep Alive Timeout granted, in ms. */
  minKato: number;
  ioUnitSize: number;
  numSharedBuffers: number;
  bufCacheSize: number;
  difInsertOrStrip: boolean;
  c2hSuccess: boolean;
  sockPriority: number;
  abortTimeoutSec: number;
  zcopy: boolean;
  controlMsgNum: number;
}

/** Defaults of the TCP transport (SPDK's where it has them; KAS 1 s, KATO at least 1 s). */
export const DEFAULT_TCP_TRANSPORT_OPTIONS: Readonly<NvmfTransportOptions> = Object.freeze({
  trtype: "TCP",
  maxQueueDepth: 128,
  maxIoQpairsPerCtrlr: 127,
  inCapsuleDataSize: 4096,
  maxIoSize: 131072,
  maxAqDepth: 128,
  kas: 10,
  minKato: 1000,
  ioUnitSize: 131072,
  numSharedBuffers: 511,
  bufCacheSize: 32,
  difInsertOrStrip: false,
  c2hSuccess: true,
  sockPriority: 0,
  abortTimeoutSec: 1,
  zcopy: false,
  controlMsgNum: 32,
});

/** Where hosts connect: SPDK's listen_address object. */
export interface NvmfListenAddress {
  trtype: "TCP";
  adrfam: "IPv4" | "IPv6";
  traddr: string;
  /** The TCP port, as text. */
  trsvcid: string;
}

/** A listen address of the target, shared by every subsystem that uses it. */
export interface NvmfListener extends NvmfListenAddress {
  /** Port ID in discovery log entries. */
  readonly portid: number;
}

/** Called when the first subsystem starts (or the last stops) using an address. */
export type NvmfListenerHook = (listener: NvmfListener) => void | Promise<void>;

/** What a target is built from. */
export interface NvmfTargetOptions {
  bdevs: BdevRegistry;
  /** The thread namespaces' bdev channels and the keep-alive poller run on. */
  thread: IoThread;
  /** Firmware revision reported to hosts (8 ASCII characters at most). */
  firmwareRevision?: string;
  maxSubsystems?: number;
}

const S_SEQUENCE = genericStatus(NvmeGenericSc.CommandSequenceError);
const S_INVALID_OPCODE = genericStatus(NvmeGenericSc.InvalidOpcode);
const S_SGL_LENGTH = genericStatus(NvmeGenericSc.DataSglLengthInvalid);
const S_INVALID_PARAM = commandSpecificStatus(NvmfFabricsSc.ConnectInvalidParameters);
const S_INVALID_HOST = commandSpecificStatus(NvmfFabricsSc.ConnectInvalidHost);
const S_INCOMPATIBLE_FORMAT = commandSpecificStatus(NvmfFabricsSc.IncompatibleFormat);
const S_CONTROLLER_BUSY = commandSpecificStatus(NvmfFabricsSc.ControllerBusy);

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6_RE = /^[0-9a-fA-F:.]{2,45}$/;

interface ListenerEntry {
  listener: NvmfListener;
  users: Set<NvmfSubsystem>;
}

/** The target: every subsystem and controller of this appliance. */
export class NvmfTarget {
  /** The discovery subsystem (`nqn.2014-08.org.nvmexpress.discovery`). */
  readonly discovery: NvmfSubsystem;
  readonly firmwareRevision: string;
  readonly maxSubsystems: number;
  readonly startedAtMs: number = Date.now();
  readonly #bdevs: BdevRegistry;
  readonly #thread: IoThread;
  readonly #subsystems = new Map<string, NvmfSubsystem>();
  readonly #listeners: ListenerEntry[] = [];
  readonly #added: NvmfListenerHook[] = [];
  readonly #removed: NvmfListenerHook[] = [];
  readonly #controllers: NvmfController[] = [];
  #transport: NvmfTransportOptions | null = null;
  #genctr = 0;
  #nextKeepAliveCheckMs = 0;
  readonly #poller: string;
  readonly #connectData = new Uint8Array(NVMF_CONNECT_DATA_BYTES);
  #closed = false;

  constructor(opts: NvmfTargetOptions) {
    this.#bdevs = opts.bdevs;
    this.#thread = opts.thread;
    this.firmwareRevision = (opts.firmwareRevision ?? "sluice").slice(0, 8);
    this.maxSubsystems = opts.maxSubsystems ?? NVMF_MAX_SUBSYSTEMS;
    this.discovery = new NvmfSubsystem(this, {
      nqn: NVME_DISCOVERY_NQN,
      serialNumber: "sluice-discovery",
      modelNumber: "sluice Discovery Controller",
    }, true);
    this.#poller = pollerName("nvmf:keep-alive");
    this.#thread.addPoller(this.#poller, this.#keepAlivePoll);
  }

  // ---- transport ----

  /** The transport's options (the defaults until {@link createTransport}). */
  get transportOptions(): Readonly<NvmfTransportOptions> {
    return this.#transport ?? DEFAULT_TCP_TRANSPORT_OPTIONS;
  }

  /** Has `nvmf_create_transport` run? */
  get transportCreated(): boolean {
    return this.#transport !== null;
  }

  /** Creates the TCP transport (once); options are validated and stored. */
  createTransport(opts: Partial<NvmfTransportOptions>): NvmfTransportOptions {
    if (this.#transport !== null) throw new NvmfError("transport TCP already exists", 17);
    const t: NvmfTransportOptions = { ...DEFAULT_TCP_TRANSPORT_OPTIONS, ...opts };
    const int = (name: string, v: number, min: number, max: number) => {
      if (!Number.isInteger(v) || v < min || v > max) {
        throw new NvmfError(`${name} must be an integer from ${min} to ${max}, got ${v}`, 22);
      }
    };
    int("max_queue_depth", t.maxQueueDepth, 2, 65536);
    int("max_aq_depth", t.maxAqDepth, 2, 4096);
    int("max_io_qpairs_per_ctrlr", t.maxIoQpairsPerCtrlr, 1, 65534);
    int("in_capsule_data_size", t.inCapsuleDataSize, 0, 131072);
    if (t.inCapsuleDataSize % 16 !== 0) {
      throw new NvmfError("in_capsule_data_size must be a multiple of 16", 22);
    }
    int("max_io_size", t.maxIoSize, 4096, 1 << 30);
    if ((t.maxIoSize & (t.maxIoSize - 1)) !== 0) {
      throw new NvmfError("max_io_size must be a power of two", 22);
    }
    int("io_unit_size", t.ioUnitSize, 512, 1 << 30);
    int("kas", t.kas, 1, 0xffff);
    int("min_kato", t.minKato, 1, 0xffffffff);
    this.#transport = t;
    return t;
  }

  /** KATO as granted: rounded up to the KAS granularity and to at least min_kato; 0 stays off. */
  roundKato(ms: number): number {
    if (ms === 0) return 0;
    const t = this.transportOptions;
    const unit = t.kas * 100;
    const up = (x: number) => Math.ceil(x / unit) * unit;
    return Math.max(up(ms), up(t.minKato));
  }

  // ---- subsystems ----

  /** Creates an NVM subsystem. */
  createSubsystem(opts: NvmfSubsystemOptions): NvmfSubsystem {
    if (opts.nqn === NVME_DISCOVERY_NQN || this.#subsystems.has(opts.nqn)) {
      throw new NvmfError(`subsystem "${opts.nqn}" already exists`, 17);
    }
    if (this.#subsystems.size >= this.maxSubsystems) {
      throw new NvmfError(`the target has the most subsystems (${this.maxSubsystems})`, 28);
    }
    const sub = new NvmfSubsystem(this, opts);
    this.#subsystems.set(sub.nqn, sub);
    this.discoveryChanged();
    return sub;
  }

  /** The NVM subsystem called `nqn` (the discovery NQN gives the discovery subsystem). */
  subsystem(nqn: string): NvmfSubsystem {
    if (nqn === NVME_DISCOVERY_NQN) return this.discovery;
    const sub = this.#subsystems.get(nqn);
    if (sub === undefined) throw new NvmfError(`no subsystem with NQN "${nqn}"`, 19);
    return sub;
  }

  /** NVM subsystems in creation order. */
  subsystems(): NvmfSubsystem[] {
    return [...this.#subsystems.values()];
  }

  /**
   * Deletes a subsystem: disconnects its hosts, drops its listeners, and
   * closes its namespaces once their in-flight I/O is done.
   */
  async deleteSubsystem(nqn: string): Promise<void> {
    const sub = this.subsystem(nqn);
    if (sub.isDiscovery) throw new NvmfError("the discovery subsystem cannot be deleted", 1);
    this.#subsystems.delete(nqn);
    for (const c of [...sub.controllers.values()]) c.destroy("subsystem deleted");
    for (const l of [...sub.listeners]) await this.#dropListener(sub, l);
    for (const ns of sub.namespaces()) await sub.removeNamespace(this.#bdevs, ns.nsid);
    this.discoveryChanged();
  }

  /** Adds a namespace (see {@link NvmfSubsystem.addNamespace}); returns its NSID. */
  addNamespace(nqn: string, opts: Parameters<NvmfSubsystem["addNamespace"]>[2]): number {
    return this.subsystem(nqn).addNamespace(this.#bdevs, this.#thread, opts);
  }

  /** Removes a namespace once its I/O drained. */
  removeNamespace(nqn: string, nsid: number): Promise<void> {
    return this.subsystem(nqn).removeNamespace(this.#bdevs, nsid);
  }

  // ---- listeners ----

  /**
   * Calls `hook` when an address gets its first user; the transport opens
   * its socket there. A hook that throws (address in use) fails the
   * `addListener` that caused it. Returns a function that unsubscribes.
   */
  onListenerAdded(hook: NvmfListenerHook): () => void {
    this.#added.push(hook);
    return () => remove(this.#added, hook);
  }

  /** Calls `hook` when an address loses its last user; the transport closes it. */
  onListenerRemoved(hook: NvmfListenerHook): () => void {
    this.#removed.push(hook);
    return () => remove(this.#removed, hook);
  }

  /** Every listen address in use, with its port ID. */
  listeners(): NvmfListener[] {
    return this.#listeners.map((e) => e.listener);
  }

  /** Makes subsystem `nqn` reachable at `addr` (opening the address if new). */
  async addListener(nqn: string, addr: NvmfListenAddress): Promise<NvmfListener> {
    const sub = this.subsystem(nqn);
    if (this.#transport === null) {
      throw new NvmfError("no TCP transport: call nvmf_create_transport first", 19);
    }
    validateListenAddress(addr);
    if (sub.listeners.some((l) => sameAddress(l, addr))) {
      throw new NvmfError(
        `"${nqn}" already listens on ${addr.traddr} port ${addr.trsvcid}`,
        17,
      );
    }
    if (sub.listeners.length >= NVMF_MAX_LISTENERS_PER_SUBSYSTEM) {
      throw new NvmfError(`"${nqn}" has the most listeners`, 28);
    }
    let entry = this.#listeners.find((e) => sameAddress(e.listener, addr));
    if (entry === undefined) {
      if (this.#listeners.length >= NVMF_MAX_LISTENERS) {
        throw new NvmfError(`the target has the most listen addresses (${NVMF_MAX_LISTENERS})`, 28);
      }
      const listener: NvmfListener = Object.freeze({
        trtype: addr.trtype,
        adrfam: addr.adrfam,
        traddr: addr.traddr,
        trsvcid: addr.trsvcid,
        portid: this.#freePortId(),
      });
      for (const hook of this.#added) await hook(listener);
      entry = { listener, users: new Set() };
      this.#listeners.push(entry);
    }
    entry.users.add(sub);
    sub.listeners.push(entry.listener);
    this.discoveryChanged();
    return entry.listener;
  }

  /** Stops subsystem `nqn` listening at `addr`; its hosts connected there are disconnected. */
  async removeListener(nqn: string, addr: NvmfListenAddress): Promise<void> {
    const sub = this.subsystem(nqn);
    const l = sub.listeners.find((x) => sameAddress(x, addr));
    if (l === undefined) {
      throw new NvmfError(`"${nqn}" does not listen on ${addr.traddr} port ${addr.trsvcid}`, 2);
    }
    await this.#dropListener(sub, l);
    this.discoveryChanged();
  }

  async #dropListener(sub: NvmfSubsystem, l: NvmfListener): Promise<void> {
    sub.listeners.splice(sub.listeners.indexOf(l), 1);
    // Queues that came in through this address and no other of the subsystem's go.
    for (const c of [...sub.controllers.values()]) {
      for (const q of [...c.queues]) {
        if (q === undefined || !q.alive) continue;
        if (!listenerMatches(l, q.qpair.local) || sub.listenerAllowed(q.qpair.local)) continue;
        if (q.qid === 0) c.destroy("listener removed");
        else {
          c.removeQueue(q);
          q.qpair.disconnect("listener removed");
        }
      }
    }
    const i = this.#listeners.findIndex((e) => e.listener === l);
    const entry = this.#listeners[i];
    if (entry === undefined) return;
    entry.users.delete(sub);
    if (entry.users.size === 0) {
      this.#listeners.splice(i, 1);
      for (const hook of this.#removed) await hook(l);
    }
  }

  #freePortId(): number {
    for (let id = 0;; id++) {
      if (!this.#listeners.some((e) => e.listener.portid === id)) return id;
    }
  }

  // ---- discovery ----

  /** Discovery log generation counter. */
  get genctr(): number {
    return this.#genctr;
  }

  /** Something the discovery log shows changed: bump GENCTR, tell discovery hosts. */
  discoveryChanged(): void {
    this.#genctr++;
    for (const c of this.#controllers) if (c.isDiscovery) c.discoveryLogChanged();
  }

  /** The discovery log page as `hostnqn` sees it. */
  discoveryLog(hostnqn: string, localTraddr: string): Uint8Array {
    return buildDiscoveryLog(this.#subsystems.values(), hostnqn, localTraddr, {
      genctr: this.#genctr,
      asqsz: this.transportOptions.maxAqDepth,
    });
  }

  // ---- commands ----

  /**
   * Runs one command. The transport has filled `req.sqe`, pointed
   * `req.iovs/iovcnt/length` at the data (host-to-controller data already
   * received) and set `req.dir`. The core completes the request exactly
   * once through `req.qpair.complete(req)`, inside this call or later.
   * For Read/Write, the first `iovcnt` vectors must add up to exactly
   * `req.length` bytes. Never throws for anything a host can send.
   */
  execute(req: NvmfRequest): void {
    const q = req.qpair.ctrlr;
    if (req.sqe[0] === NVME_FABRICS_OPCODE) {
      this.#fabrics(req, q);
      return;
    }
    if (!(q instanceof NvmfQueue) || !q.alive) {
      completeRequest(req, S_SEQUENCE);
      return;
    }
    const c = q.ctrlr;
    c.seen = true;
    if (q.qid === 0) c.executeAdmin(req);
    else c.executeIo(req);
  }

  /**
   * The transport's connection for `qpair` is gone. The queue leaves its
   * controller; the admin queue takes the controller with it (and the
   * controller's other queues are told to disconnect). Requests still in
   * flight on the bdevs are completed later through `qpair.complete`; the
   * transport must then release them without sending.
   */
  qpairDisconnected(qpair: NvmfQpair): void {
    const q = qpair.ctrlr;
    if (!(q instanceof NvmfQueue) || !q.alive) return;
    q.ctrlr.removeQueue(q);
  }

  #fabrics(req: NvmfRequest, q: unknown): void {
    const fctype = req.sqe[4] as number;
    if (fctype === NvmfFabricsType.Connect) {
      if (q instanceof NvmfQueue) completeRequest(req, S_SEQUENCE);
      else this.#connect(req);
      return;
    }
    if (!(q instanceof NvmfQueue) || !q.alive) {
      completeRequest(req, S_SEQUENCE);
      return;
    }
    const c = q.ctrlr;
    c.seen = true;
    if (fctype === NvmfFabricsType.Disconnect) {
      c.disconnectQueue(q, req);
      return;
    }
    if (q.qid !== 0) {
      completeRequest(req, S_INVALID_OPCODE);
      return;
    }
    switch (fctype) {
      case NvmfFabricsType.PropertyGet:
        c.propertyGet(req);
        return;
      case NvmfFabricsType.PropertySet:
        c.propertySet(req);
        return;
    }
    // Authentication Send/Receive: no DH-HMAC-CHAP here (Connect never asks for it).
    completeRequest(req, S_INVALID_OPCODE);
  }

  #connect(req: NvmfRequest): void {
    const qpair = req.qpair;
    const v = req.sqeView;
    const data = this.#connectData;
    if (
      req.length !== NVMF_CONNECT_DATA_BYTES ||
      copyFromIovs(req.iovs, req.iovcnt, data) !== NVMF_CONNECT_DATA_BYTES
    ) {
      completeRequest(req, S_SGL_LENGTH);
      return;
    }
    const invalidData = (offset: number) =>
      completeRequest(req, S_INVALID_PARAM, connectInvalidParameterDw0(true, offset));
    const invalidSqe = (offset: number) =>
      completeRequest(req, S_INVALID_PARAM, connectInvalidParameterDw0(false, offset));
    const subnqn = nqnField(data, NvmfConnectData.SUBNQN);
    const hostnqn = nqnField(data, NvmfConnectData.HOSTNQN);
    if (subnqn === null) return invalidData(NvmfConnectData.SUBNQN);
    if (hostnqn === null) return invalidData(NvmfConnectData.HOSTNQN);
    const sub = subnqn === NVME_DISCOVERY_NQN ? this.discovery : this.#subsystems.get(subnqn);
    if (sub === undefined) return invalidData(NvmfConnectData.SUBNQN);
    if (v.getUint16(NvmfConnectSqe.RECFMT, true) !== 0) {
      completeRequest(req, S_INCOMPATIBLE_FORMAT);
      return;
    }
    // The discovery service answers on every address the target listens on.
    const reachable = sub.isDiscovery
      ? sub.listenerAllowed(qpair.local) ||
        this.#listeners.some((e) => listenerMatches(e.listener, qpair.local)) ||
        this.#listeners.length === 0
      : sub.listenerAllowed(qpair.local);
    if (!sub.hostAllowed(hostnqn) || !reachable) {
      completeRequest(req, S_INVALID_HOST);
      return;
    }
    const qid = v.getUint16(NvmfConnectSqe.QID, true);
    const sqsize = v.getUint16(NvmfConnectSqe.SQSIZE, true);
    const cattr = v.getUint8(NvmfConnectSqe.CATTR);
    const cntlid = new DataView(data.buffer).getUint16(NvmfConnectData.CNTLID, true);
    const t = this.transportOptions;
    if (sqsize === 0) return invalidSqe(NvmfConnectSqe.SQSIZE);
    const flow = (cattr & NVMF_CATTR_DISABLE_SQ_FLOW_CONTROL) === 0;
    if (qid === 0) {
      if (sqsize + 1 > t.maxAqDepth) return invalidSqe(NvmfConnectSqe.SQSIZE);
      if (cntlid !== NVME_CNTLID_DYNAMIC) return invalidData(NvmfConnectData.CNTLID);
      const id = this.#controllers.length < NVMF_MAX_CONTROLLERS ? sub.allocateCntlid() : -1;
      if (id < 0) {
        completeRequest(req, S_CONTROLLER_BUSY);
        return;
      }
      const c = new NvmfController({
        target: this,
        subsystem: sub,
        cntlid: id,
        hostnqn,
        hostid: data.slice(NvmfConnectData.HOSTID, NvmfConnectData.HOSTID + 16),
        katoMs: this.roundKato(v.getUint32(NvmfConnectSqe.KATO, true)),
      });
      sub.controllerAdded(c);
      this.#controllers.push(c);
      qpair.qid = 0;
      qpair.sqSize = sqsize + 1;
      c.addQueue(new NvmfQueue(c, qpair, 0, sqsize + 1, flow));
      completeRequest(req, 0, connectSuccessDw0(id));
      return;
    }
    const c = sub.controllers.get(cntlid);
    if (c === undefined || c.destroyed) return invalidData(NvmfConnectData.CNTLID);
    if (c.hostnqn !== hostnqn) return invalidData(NvmfConnectData.HOSTNQN);
    if (c.isDiscovery || !c.ready || qid > c.maxIoQid || c.queues[qid] !== undefined) {
      return invalidSqe(NvmfConnectSqe.QID);
    }
    if (sqsize + 1 > t.maxQueueDepth) return invalidSqe(NvmfConnectSqe.SQSIZE);
    qpair.qid = qid;
    qpair.sqSize = sqsize + 1;
    c.addQueue(new NvmfQueue(c, qpair, qid, sqsize + 1, flow));
    c.seen = true;
    completeRequest(req, 0, connectSuccessDw0(c.cntlid));
  }

  // ---- controllers and keep alive ----

  /** Live controllers of every subsystem (discovery ones included). */
  controllers(): readonly NvmfController[] {
    return this.#controllers;
  }

  /** @internal A controller ended. */
  controllerGone(c: NvmfController): void {
    const i = this.#controllers.indexOf(c);
    if (i >= 0) this.#controllers.splice(i, 1);
  }

  /**
   * Ends controllers that saw no command for their KATO (any command
   * counts: Traffic Based Keep Alive). Looks at the clock at most every
   * 10 ms; a parked reactor checks when it wakes (at least every second).
   */
  readonly #keepAlivePoll = (): number => {
    if (this.#controllers.length === 0) return 0;
    const now = performance.now();
    if (now < this.#nextKeepAliveCheckMs) return 0;
    this.#nextKeepAliveCheckMs = now + KEEP_ALIVE_CHECK_INTERVAL_MS;
    let expired = 0;
    for (let i = this.#controllers.length - 1; i >= 0; i--) {
      const c = this.#controllers[i];
      if (c === undefined || c.katoMs === 0) continue;
      if (c.seen) {
        c.seen = false;
        c.lastSeenMs = now;
      } else if (now - c.lastSeenMs > c.katoMs) {
        c.destroy(`keep alive timeout (${c.katoMs} ms without a command)`);
        expired++;
      }
    }
    return expired;
  };

  /** Disconnects every host, deletes every subsystem and stops the poller. */
  async shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of [...this.#controllers]) c.destroy("target shutting down");
    for (const sub of this.subsystems()) await this.deleteSubsystem(sub.nqn);
    for (const l of [...this.discovery.listeners]) await this.#dropListener(this.discovery, l);
    this.#thread.removePoller(this.#poller);
  }
}

/** Reads a NUL-terminated NQN field of the Connect data; null when not terminated. */
function nqnField(data: Uint8Array, off: number): string | null {
  const field = data.subarray(off, off + NVMF_NQN_FIELD_BYTES);
  const end = field.indexOf(0);
  if (end < 0) return null;
  return new TextDecoder().decode(field.subarray(0, end));
}

function sameAddress(a: NvmfListenAddress, b: NvmfListenAddress): boolean {
  return a.trtype === b.trtype && a.adrfam === b.adrfam && a.traddr === b.traddr &&
    a.trsvcid === b.trsvcid;
}

/** Checks a listen address; throws {@link NvmfError} (EINVAL). */
export function validateListenAddress(a: NvmfListenAddress): void {
  if (a.trtype !== "TCP") throw new NvmfError(`trtype must be TCP, got "${a.trtype}"`, 22);
  if (a.adrfam === "IPv4" ? !IPV4_RE.test(a.traddr) : !IPV6_RE.test(a.traddr)) {
    throw new NvmfError(`traddr "${a.traddr}" is not an ${a.adrfam} address`, 22);
  }
  const port = Number(a.trsvcid);
  if (!/^\d{1,5}$/.test(a.trsvcid) || port < 1 || port > 65535) {
    throw new NvmfError(`trsvcid must be a TCP port 1-65535, got "${a.trsvcid}"`, 22);
  }
}

function remove<T>(list: T[], item: T): void {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
}

/**
 * One NVMe-oF controller: the state of one host association (created by a
 * Connect on an admin queue, joined by I/O queues) and the execution of
 * its commands: properties (CAP, VS, CC, CSTS), the admin commands
 * (Identify, Get Log Page, Set/Get Features, Asynchronous Event Request,
 * Keep Alive, Abort) and the NVM I/O commands (Read, Write, Flush, Write
 * Zeroes, Dataset Management) through the bdev layer. SPDK's
 * lib/nvmf/ctrlr.c is the model for the split.
 *
 * The I/O path allocates nothing per command: a request's embedded
 * `BdevIo` carries the I/O, completions go through one shared function,
 * and the per-request state of multi-step commands (Dataset Management
 * ranges, a flush after a FUA write) is created once per request object.
 * @module
 */
import { type BdevIo, BdevIoStatus, BdevIoType } from "../bdev/mod.ts";
import {
  asyncEventDw0,
  buildActiveNamespaceList,
  buildCap,
  buildChangedNamespaceList,
  buildEffectsLog,
  buildFirmwareSlotLog,
  buildIdentifyController,
  buildIdentifyIndependentNamespace,
  buildIdentifyNamespace,
  buildIdentifyNvmController,
  buildIdentifyNvmNamespace,
  buildNamespaceIdDescriptorList,
  buildSmartLog,
  ccAms,
  ccCss,
  ccEn,
  ccIocqes,
  ccIosqes,
  ccMps,
  ccShn,
  commandSpecificStatus,
  cqeSetSqhd,
  cqeSetSqid,
  cqeSetStatus,
  featureFid,
  featureSave,
  featureSel,
  genericStatus,
  mediaStatus,
  numberOfQueuesDw,
  NVME_CHANGED_NS_LIST_BYTES,
  NVME_CHANGED_NS_LIST_MAX,
  NVME_CQES_LOG2,
  NVME_EFFECTS_LOG_BYTES,
  NVME_ERROR_LOG_ENTRY_BYTES,
  NVME_FIRMWARE_SLOT_LOG_BYTES,
  NVME_HOST_ID_EXHID,
  NVME_IDENTIFY_BYTES,
  NVME_NSID_ALL,
  NVME_SMART_LOG_BYTES,
  NVME_SQES_LOG2,
  NvmeAdminOpcode,
  NvmeAec,
  NvmeAsyncEventType,
  NvmeAsyncNotice,
  NvmeCapCss,
  NvmeCcCss,
  NvmeCmic,
  NvmeCns,
  NvmeCommandSpecificSc,
  NvmeControllerType,
  NvmeCsi,
  NvmeCsts,
  NvmeCtratt,
  NvmeDlfeat,
  NvmeEffects,
  NvmeFeatureCapability,
  NvmeFeatureSel,
  NvmeFid,
  NvmeGenericSc,
  NvmeIoOpcode,
  NvmeLid,
  NvmeLpa,
  NvmeMediaSc,
  NvmeOaes,
  NvmeOncs,
  NvmeReg,
  NvmeSgls,
  NvmeShn,
  NvmeShst,
  nvmeVersion,
  NvmeVwc,
  NvmfFabricsSc,
  NvmfPropertySqe,
  NvmfTrtype,
  parseGetLogPage,
  propertySize,
  smartDataUnits,
  uuidString,
  viewOf,
  writeErrorLogEntry,
} from "../nvme/mod.ts";
import type { NvmfQpair, NvmfRequest } from "./request.ts";
import type { NvmfNamespace, NvmfSubsystem } from "./subsystem.ts";
import type { NvmfTarget } from "./target.ts";

/** The NVMe version this target reports (VS and Identify Controller VER). */
export const NVMF_VERSION = nvmeVersion(2, 0, 0);
/** Outstanding Asynchronous Event Requests per controller (AERL + 1). */
export const NVMF_MAX_ASYNC_EVENTS = 4;
/** Abort Command Limit + 1. */
export const NVMF_ABORT_COMMAND_LIMIT = 4;
/** Error Information log entries kept per controller (ELPE + 1). */
export const NVMF_ERROR_LOG_ENTRIES = 16;
/** Events waiting for an Asynchronous Event Request, per controller. */
const MAX_PENDING_EVENTS = 16;
/** Composite temperature reported in SMART (K): a virtual controller has no sensor. */
const SMART_TEMPERATURE_K = 311;
/** Default over-temperature threshold (K) of the Temperature Threshold feature. */
const DEFAULT_OVER_TEMP_K = 343;

// Status values used on the data path, computed once.
const S_SUCCESS = 0;
const S_INVALID_OPCODE = genericStatus(NvmeGenericSc.InvalidOpcode);
const S_INVALID_FIELD = genericStatus(NvmeGenericSc.InvalidField);
const S_INVALID_NS = genericStatus(NvmeGenericSc.InvalidNamespaceOrFormat);
const S_SEQUENCE = genericStatus(NvmeGenericSc.CommandSequenceError);
const S_SGL_LENGTH = genericStatus(NvmeGenericSc.DataSglLengthInvalid);
const S_LBA_RANGE = genericStatus(NvmeGenericSc.LbaOutOfRange);
const S_WRITE_PROTECTED = genericStatus(NvmeGenericSc.NamespaceWriteProtected);
const S_INTERNAL = genericStatus(NvmeGenericSc.InternalError, false);
const S_INTERNAL_DNR = genericStatus(NvmeGenericSc.InternalError, true);
const S_ABORTED_SQ = genericStatus(NvmeGenericSc.AbortedSqDeletion, false);
const S_READ_ERROR = mediaStatus(NvmeMediaSc.UnrecoveredReadError);
const S_WRITE_FAULT = mediaStatus(NvmeMediaSc.WriteFault);
const S_AER_LIMIT = commandSpecificStatus(NvmeCommandSpecificSc.AsyncEventRequestLimitExceeded);
const S_NOT_SAVEABLE = commandSpecificStatus(NvmeCommandSpecificSc.FeatureIdentifierNotSaveable);
const S_NOT_NS_SPECIFIC = commandSpecificStatus(
  NvmeCommandSpecificSc.FeatureNotNamespaceSpecific,
);
const S_INVALID_QUEUE_TYPE = commandSpecificStatus(NvmfFabricsSc.InvalidQueueType);

/** Bit 30 of CDW12 of Read/Write/Write Zeroes: Force Unit Access. */
const CDW12_FUA = 1 << 30;
/** Bit 25 of CDW12 of Write Zeroes: deallocate. */
const CDW12_DEAC = 1 << 25;
/** Bit 2 of CDW11 of Dataset Management: Attribute - Deallocate. */
const DSM_AD = 1 << 2;

const ADMIN_EFFECTS = new Map<number, number>([
  [NvmeAdminOpcode.GetLogPage, NvmeEffects.Csupp],
  [NvmeAdminOpcode.Identify, NvmeEffects.Csupp],
  [NvmeAdminOpcode.Abort, NvmeEffects.Csupp],
  [NvmeAdminOpcode.SetFeatures, NvmeEffects.Csupp],
  [NvmeAdminOpcode.GetFeatures, NvmeEffects.Csupp],
  [NvmeAdminOpcode.AsyncEventRequest, NvmeEffects.Csupp],
  [NvmeAdminOpcode.KeepAlive, NvmeEffects.Csupp],
]);
const IO_EFFECTS = new Map<number, number>([
  [NvmeIoOpcode.Flush, NvmeEffects.Csupp],
  [NvmeIoOpcode.Write, NvmeEffects.Csupp | NvmeEffects.Lbcc],
  [NvmeIoOpcode.Read, NvmeEffects.Csupp],
  [NvmeIoOpcode.WriteZeroes, NvmeEffects.Csupp | NvmeEffects.Lbcc],
  [NvmeIoOpcode.DatasetManagement, NvmeEffects.Csupp | NvmeEffects.Lbcc],
]);

/**
 * The core's state of one connected queue pair. It is what the core puts
 * in `qpair.ctrlr` (opaque to the transport) at Connect.
 */
export class NvmfQueue {
  /** False once the queue left its controller (reset, timeout, Disconnect). */
  alive = true;
  /** SQ head as reported in completions (advanced per completion, as Linux's target does). */
  sqhd = 0;

  constructor(
    readonly ctrlr: NvmfController,
    readonly qpair: NvmfQpair,
    readonly qid: number,
    /** Entries in the SQ (Connect SQSIZE + 1). */
    readonly sqSize: number,
    /** False when the host disabled SQ flow control (CATTR bit 2): SQHD is then FFFFh. */
    readonly sqFlowControl: boolean,
  ) {}
}

/**
 * Fills the CQE of `req` (DW0/1, SQ head and ID, status) and hands it to
 * its queue pair. Every completion of the core goes through here, exactly
 * once per request. Allocation-free.
 */
export function completeRequest(req: NvmfRequest, status: number, dw0 = 0, dw1 = 0): void {
  const qpair = req.qpair;
  const q = qpair.ctrlr;
  req.resetCqe();
  const v = req.cqeView;
  v.setUint32(0, dw0 >>> 0, true);
  v.setUint32(4, dw1 >>> 0, true);
  let sqhd = 0;
  if (q instanceof NvmfQueue) {
    if (q.sqFlowControl) {
      q.sqhd = q.sqhd + 1 >= q.sqSize ? 0 : q.sqhd + 1;
      sqhd = q.sqhd;
    } else {
      sqhd = 0xffff;
    }
    if (status !== S_SUCCESS) q.ctrlr.recordError(q.qid, req, status);
  }
  cqeSetSqhd(v, sqhd);
  cqeSetSqid(v, qpair.qid);
  cqeSetStatus(v, status);
  qpair.complete(req);
}

// ---- data buffers of a request ----

/**
 * Copies `src` into the first `iovcnt` vectors starting at byte `offset`
 * of the data; returns the bytes copied.
 */
export function copyToIovs(
  iovs: readonly Uint8Array[],
  iovcnt: number,
  src: Uint8Array,
  offset = 0,
): number {
  let pos = 0, done = 0;
  for (let i = 0; i < iovcnt && done < src.byteLength; i++) {
    const iov = iovs[i] as Uint8Array;
    const end = pos + iov.byteLength;
    if (end > offset) {
      const at = Math.max(offset - pos, 0);
      const n = Math.min(iov.byteLength - at, src.byteLength - done);
      iov.set(src.subarray(done, done + n), at);
      done += n;
    }
    pos = end;
  }
  return done;
}

/** Copies data bytes from `offset` into `dst`; returns the bytes copied. */
export function copyFromIovs(
  iovs: readonly Uint8Array[],
  iovcnt: number,
  dst: Uint8Array,
  offset = 0,
): number {
  let pos = 0, done = 0;
  for (let i = 0; i < iovcnt && done < dst.byteLength; i++) {
    const iov = iovs[i] as Uint8Array;
    const end = pos + iov.byteLength;
    if (end > offset) {
      const at = Math.max(offset - pos, 0);
      const n = Math.min(iov.byteLength - at, dst.byteLength - done);
      dst.set(iov.subarray(at, at + n), done);
      done += n;
    }
    pos = end;
  }
  return done;
}

/** Zeroes data bytes [from, to) of the vectors. */
function zeroIovs(iovs: readonly Uint8Array[], iovcnt: number, from: number, to: number): void {
  let pos = 0;
  for (let i = 0; i < iovcnt && pos < to; i++) {
    const iov = iovs[i] as Uint8Array;
    const end = pos + iov.byteLength;
    if (end > from) iov.fill(0, Math.max(from - pos, 0), Math.min(iov.byteLength, to - pos));
    pos = end;
  }
}

/** One data byte at `pos`; allocation-free (Dataset Management ranges). */
function iovByte(iovs: readonly Uint8Array[], iovcnt: number, pos: number): number {
  for (let i = 0; i < iovcnt; i++) {
    const iov = iovs[i] as Uint8Array;
    if (pos < iov.byteLength) return iov[pos] as number;
    pos -= iov.byteLength;
  }
  return 0;
}

/** Little-endian 32-bit value of the data at `pos`. */
function iovU32(iovs: readonly Uint8Array[], iovcnt: number, pos: number): number {
  const first = iovs[0];
  if (iovcnt > 0 && first !== undefined && pos + 4 <= first.byteLength) {
    return ((first[pos] as number) | (first[pos + 1] as number) << 8 |
      (first[pos + 2] as number) << 16 | (first[pos + 3] as number) << 24) >>> 0;
  }
  return (iovByte(iovs, iovcnt, pos) | iovByte(iovs, iovcnt, pos + 1) << 8 |
    iovByte(iovs, iovcnt, pos + 2) << 16 | iovByte(iovs, iovcnt, pos + 3) << 24) >>> 0;
}

// ---- per-request state of multi-step I/O commands ----
//
// A Write with FUA (or with the cache turned off) is a write then a flush;
// a Dataset Management command is one unmap per range. Their step state
// lives in the CQE the core owns until it completes the request (and
// clears it): byte 0 is "flush pending", DW1 holds the next range index
// (bytes 4-5) and the range count (6-7). The namespace is kept in a
// WeakMap entry made once per request object, not per command.

/** CQE byte 0 while a flush must follow the write. */
const STEP_FLUSH_PENDING = 1;

const stepNamespace = new WeakMap<NvmfRequest, { ns: NvmfNamespace }>();

function setStepNamespace(req: NvmfRequest, ns: NvmfNamespace): void {
  const e = stepNamespace.get(req);
  if (e === undefined) stepNamespace.set(req, { ns });
  else e.ns = ns;
}

/** Maps a bdev I/O outcome to an NVMe status. */
export function bdevStatusToNvme(io: BdevIo): number {
  switch (io.status) {
    case BdevIoStatus.Success:
      return S_SUCCESS;
    case BdevIoStatus.Failed:
      if (io.type === BdevIoType.Read) return S_READ_ERROR;
      if (io.type === BdevIoType.Write || io.type === BdevIoType.WriteZeroes) return S_WRITE_FAULT;
      return S_INTERNAL;
    case BdevIoStatus.OutOfRange:
      return S_LBA_RANGE;
    case BdevIoStatus.NotSupported:
      return S_INVALID_OPCODE;
    case BdevIoStatus.ReadOnly:
      return S_WRITE_PROTECTED;
    case BdevIoStatus.Aborted:
      return S_ABORTED_SQ;
    default:
      // InvalidParam: the data vectors do not add up to the transfer (a transport bug).
      return S_INTERNAL_DNR;
  }
}

/** The completion of every bdev I/O the core starts (set once as `bdevIo.onComplete`). */
function onIoComplete(io: BdevIo): void {
  const req = io.ctx as NvmfRequest;
  if (io.status !== BdevIoStatus.Success) {
    completeRequest(req, bdevStatusToNvme(io));
    return;
  }
  const opc = req.sqe[0] as number;
  if (req.cqe[0] === STEP_FLUSH_PENDING) {
    // Durable before completion: a FUA write, or the host turned the cache off.
    req.cqe[0] = 0;
    const ns = stepNamespace.get(req)?.ns;
    if (ns === undefined || ns.removed) completeRequest(req, S_ABORTED_SQ);
    else ns.channel.flush(io);
    return;
  }
  if (opc === NvmeIoOpcode.DatasetManagement) {
    const v = req.cqeView;
    if (v.getUint16(4, true) < v.getUint16(6, true)) {
      const ns = stepNamespace.get(req)?.ns;
      if (ns === undefined || ns.removed) completeRequest(req, S_ABORTED_SQ);
      else submitNextRange(req, ns);
      return;
    }
  }
  completeRequest(req, S_SUCCESS);
}

/** Starts the unmap of the next non-empty Dataset Management range, or completes. */
function submitNextRange(req: NvmfRequest, ns: NvmfNamespace): void {
  const v = req.cqeView;
  const count = v.getUint16(6, true);
  for (let next = v.getUint16(4, true); next < count; next++) {
    const at = next * 16;
    const nlb = iovU32(req.iovs, req.iovcnt, at + 4);
    if (nlb === 0) continue;
    const slba = iovU32(req.iovs, req.iovcnt, at + 8) +
      iovU32(req.iovs, req.iovcnt, at + 12) * 0x1_0000_0000;
    v.setUint16(4, next + 1, true);
    ns.channel.unmap(req.bdevIo, slba, nlb);
    return;
  }
  completeRequest(req, S_SUCCESS);
}

/** Feature values of one controller (none are saveable). */
interface FeatureState {
  arbitration: number;
  powerManagement: number;
  errorRecovery: number;
  /** Temperature thresholds by (TMPSEL << 2 | THSEL). */
  temperature: Map<number, number>;
}

/** What a controller is created with. */
export interface NvmfControllerInit {
  target: NvmfTarget;
  subsystem: NvmfSubsystem;
  cntlid: number;
  hostnqn: string;
  hostid: Uint8Array;
  /** Keep Alive Timeout in ms from Connect, already rounded to the granularity; 0: off. */
  katoMs: number;
}

/** One controller: the host's view of a subsystem through one association. */
export class NvmfController {
  readonly target: NvmfTarget;
  readonly subsystem: NvmfSubsystem;
  readonly cntlid: number;
  readonly hostnqn: string;
  readonly hostid: Uint8Array;
  readonly isDiscovery: boolean;
  /** Keep Alive Timeout in ms (0: disabled). */
  katoMs: number;
  /** Set by every command; the keep-alive poller turns it into {@link lastSeenMs}. */
  seen = true;
  lastSeenMs: number;
  /** The host's queues by QID; index 0 is the admin queue. */
  readonly queues: (NvmfQueue | undefined)[];
  destroyed = false;
  /** Volatile Write Cache Enable (Feature 06h). */
  volatileWriteCache = true;

  #cc = 0;
  #csts = 0;
  readonly #capLo: number;
  readonly #capHi: number;
  /** I/O queues granted by Set Features Number of Queues; 0 until set. */
  #ioQueuesGranted = 0;
  #aec = 0;
  readonly #aers: NvmfRequest[] = [];
  readonly #pendingEvents: number[] = [];
  /** Event kinds reported and not yet cleared by reading their log page. */
  #nsEventMasked = false;
  #discEventMasked = false;
  readonly #changedNs: number[] = [];
  #changedNsOverflow = false;
  readonly #errorLog = new Uint8Array(NVMF_ERROR_LOG_ENTRIES * NVME_ERROR_LOG_ENTRY_BYTES);
  readonly #errorView = viewOf(this.#errorLog);
  #errorCount = 0;
  readonly #features: FeatureState = {
    arbitration: 0,
    powerManagement: 0,
    errorRecovery: 0,
    temperature: new Map(),
  };
  /** Scratch for 4096-byte structures; admin commands run one at a time per controller. */
  readonly #scratch = new Uint8Array(NVME_IDENTIFY_BYTES);

  constructor(init: NvmfControllerInit) {
    this.target = init.target;
    this.subsystem = init.subsystem;
    this.cntlid = init.cntlid;
    this.hostnqn = init.hostnqn;
    this.hostid = init.hostid;
    this.isDiscovery = init.subsystem.isDiscovery;
    this.katoMs = init.katoMs;
    this.lastSeenMs = performance.now();
    const t = init.target.transportOptions;
    this.queues = new Array(t.maxIoQpairsPerCtrlr + 1);
    const cap = buildCap({
      mqes: t.maxQueueDepth - 1,
      cqr: true,
      ams: 0,
      to: 15,
      dstrd: 0,
      nssrs: false,
      css: NvmeCapCss.Nvm,
      bps: false,
      mpsmin: 0,
      mpsmax: 4,
      crms: 0,
    });
    this.#capLo = Number(cap & 0xffffffffn);
    this.#capHi = Number(cap >> 32n);
  }

  /** CC, as the host last wrote it. */
  get cc(): number {
    return this.#cc;
  }

  /** CSTS. */
  get csts(): number {
    return this.#csts;
  }

  /** Connected I/O queues. */
  get ioQueueCount(): number {
    let n = 0;
    for (let i = 1; i < this.queues.length; i++) if (this.queues[i]?.alive) n++;
    return n;
  }

  /** Highest I/O queue ID the host may connect now. */
  get maxIoQid(): number {
    return this.#ioQueuesGranted > 0
      ? this.#ioQueuesGranted
      : this.target.transportOptions.maxIoQpairsPerCtrlr;
  }

  /** Is CC.EN set and the controller ready? */
  get ready(): boolean {
    return (this.#csts & NvmeCsts.RDY) !== 0;
  }

  /** Attaches a connected queue. */
  addQueue(q: NvmfQueue): void {
    this.queues[q.qid] = q;
    q.qpair.ctrlr = q;
  }

  // ---- Fabrics: properties and Disconnect ----

  /** Property Get (Fabrics 04h). */
  propertyGet(req: NvmfRequest): void {
    const v = req.sqeView;
    const size = propertySize(v.getUint8(NvmfPropertySqe.ATTRIB));
    const ofst = v.getUint32(NvmfPropertySqe.OFST, true);
    if (size === 8 && ofst === NvmeReg.CAP) {
      completeRequest(req, S_SUCCESS, this.#capLo, this.#capHi);
      return;
    }
    if (size !== 4) {
      completeRequest(req, S_INVALID_FIELD);
      return;
    }
    switch (ofst) {
      case NvmeReg.VS:
        completeRequest(req, S_SUCCESS, NVMF_VERSION);
        return;
      case NvmeReg.CC:
        completeRequest(req, S_SUCCESS, this.#cc);
        return;
      case NvmeReg.CSTS:
        completeRequest(req, S_SUCCESS, this.#csts);
        return;
      default:
        completeRequest(req, S_INVALID_FIELD);
    }
  }

  /** Property Set (Fabrics 00h): only CC is writable. */
  propertySet(req: NvmfRequest): void {
    const v = req.sqeView;
    const size = propertySize(v.getUint8(NvmfPropertySqe.ATTRIB));
    const ofst = v.getUint32(NvmfPropertySqe.OFST, true);
    if (size !== 4 || ofst !== NvmeReg.CC) {
      completeRequest(req, S_INVALID_FIELD);
      return;
    }
    this.#writeCc(v.getUint32(NvmfPropertySqe.VALUE, true));
    completeRequest(req, S_SUCCESS);
  }

  #writeCc(cc: number): void {
    const old = this.#cc;
    this.#cc = cc;
    if (!ccEn(old) && ccEn(cc)) {
      // Enable: check what the host chose against CAP and what we serve.
      const badEntrySizes = !this.isDiscovery &&
        (ccIosqes(cc) !== NVME_SQES_LOG2 || ccIocqes(cc) !== NVME_CQES_LOG2);
      if (badEntrySizes || ccCss(cc) !== NvmeCcCss.Nvm || ccMps(cc) > 4 || ccAms(cc) !== 0) {
        this.#csts = NvmeCsts.CFS;
        return;
      }
      this.#csts = NvmeCsts.RDY;
    } else if (ccEn(old) && !ccEn(cc)) {
      // Controller reset: the I/O queues go, the association (admin queue) stays.
      this.#reset("controller reset (CC.EN cleared)");
      this.#csts = 0;
      return;
    }
    if (ccShn(cc) !== NvmeShn.None && ccShn(old) === NvmeShn.None) {
      // Nothing is buffered above the bdevs, so a shutdown is complete at once.
      this.#csts = (this.#csts & ~NvmeCsts.SHST_MASK) | (NvmeShst.Complete << NvmeCsts.SHST_SHIFT);
    } else if (ccShn(cc) === NvmeShn.None) {
      this.#csts &= ~NvmeCsts.SHST_MASK;
    }
  }

  #reset(reason: string): void {
    for (let qid = 1; qid < this.queues.length; qid++) {
      const q = this.queues[qid];
      if (q === undefined) continue;
      this.queues[qid] = undefined;
      q.alive = false;
      q.qpair.disconnect(reason);
    }
    this.#abortAers();
    this.#pendingEvents.length = 0;
  }

  /** Disconnect (Fabrics 08h): deletes the I/O queue it arrives on. */
  disconnectQueue(q: NvmfQueue, req: NvmfRequest): void {
    if (q.qid === 0) {
      completeRequest(req, S_INVALID_QUEUE_TYPE);
      return;
    }
    completeRequest(req, S_SUCCESS);
    this.removeQueue(q);
  }

  /** Detaches a queue (its connection closed, or Disconnect). The admin queue takes the controller. */
  removeQueue(q: NvmfQueue): void {
    if (this.queues[q.qid] === q) this.queues[q.qid] = undefined;
    q.alive = false;
    if (q.qid === 0) this.destroy("admin queue disconnected");
  }

  /**
   * Ends the association: completes held AERs, disconnects every queue,
   * and leaves the subsystem. Idempotent.
   */
  destroy(reason: string): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.#abortAers();
    for (let qid = 0; qid < this.queues.length; qid++) {
      const q = this.queues[qid];
      if (q === undefined) continue;
      this.queues[qid] = undefined;
      const wasAlive = q.alive;
      q.alive = false;
      if (wasAlive) q.qpair.disconnect(reason);
    }
    this.subsystem.controllerGone(this);
    this.target.controllerGone(this);
  }

  #abortAers(): void {
    const aers = this.#aers.splice(0);
    for (const r of aers) completeRequest(r, S_ABORTED_SQ);
  }

  // ---- errors ----

  /** Records a failed command in the Error Information log (allocation-free). */
  recordError(qid: number, req: NvmfRequest, status: number): void {
    this.#errorCount++;
    const slot = (this.#errorCount - 1) % NVMF_ERROR_LOG_ENTRIES;
    const v = req.sqeView;
    const opc = req.sqe[0] as number;
    const isIo = qid !== 0 && opc !== 0x7f;
    const rw = isIo && (opc === NvmeIoOpcode.Read || opc === NvmeIoOpcode.Write ||
      opc === NvmeIoOpcode.WriteZeroes);
    writeErrorLogEntry(this.#errorView, slot * NVME_ERROR_LOG_ENTRY_BYTES, {
      errorCount: this.#errorCount,
      sqid: qid,
      cid: req.cid,
      status,
      parameterErrorLocation: 0xffff,
      lba: rw ? Math.max(v.getUint32(40, true) + v.getUint32(44, true) * 0x1_0000_0000, 0) : 0,
      nsid: opc === 0x7f ? 0 : v.getUint32(4, true),
      trtype: NvmfTrtype.Tcp,
    });
  }

  // ---- asynchronous events ----

  /** A namespace was added or removed: note it in the Changed Namespace List and tell the host. */
  namespaceChanged(nsid: number): void {
    if (this.isDiscovery || this.destroyed) return;
    if (!this.#changedNsOverflow && !this.#changedNs.includes(nsid)) {
      if (this.#changedNs.length === NVME_CHANGED_NS_LIST_MAX) {
        this.#changedNsOverflow = true;
        this.#changedNs.length = 0;
      } else {
        this.#changedNs.push(nsid);
      }
    }
    if ((this.#aec & NvmeAec.NamespaceAttribute) === 0 || this.#nsEventMasked) return;
    this.#queueEvent(
      asyncEventDw0(
        NvmeAsyncEventType.Notice,
        NvmeAsyncNotice.NamespaceAttributeChanged,
        NvmeLid.ChangedNamespaceList,
      ),
    );
  }

  /** The discovery log changed (subsystems, hosts or listeners): tell a discovery host. */
  discoveryLogChanged(): void {
    if (!this.isDiscovery || this.destroyed) return;
    if ((this.#aec & NvmeAec.DiscoveryLogChange) === 0 || this.#discEventMasked) return;
    this.#queueEvent(
      asyncEventDw0(
        NvmeAsyncEventType.Notice,
        NvmeAsyncNotice.DiscoveryLogPageChange,
        NvmeLid.Discovery,
      ),
    );
  }

  #queueEvent(dw0: number): void {
    if (this.#pendingEvents.includes(dw0)) return;
    if (this.#pendingEvents.length >= MAX_PENDING_EVENTS) return;
    this.#pendingEvents.push(dw0);
    this.#deliverEvents();
  }

  #deliverEvents(): void {
    while (this.#aers.length > 0 && this.#pendingEvents.length > 0) {
      const req = this.#aers.shift() as NvmfRequest;
      const dw0 = this.#pendingEvents.shift() as number;
      // No more events of this kind until the host reads the log page (RAE clear).
      if ((dw0 >> 16 & 0xff) === NvmeLid.Discovery) this.#discEventMasked = true;
      else this.#nsEventMasked = true;
      completeRequest(req, S_SUCCESS, dw0);
    }
  }

  // ---- admin commands ----

  /** Runs one command of the admin queue. */
  executeAdmin(req: NvmfRequest): void {
    if (!this.ready) {
      completeRequest(req, S_SEQUENCE);
      return;
    }
    const opc = req.sqe[0] as number;
    switch (opc) {
      case NvmeAdminOpcode.Identify:
        this.#identify(req);
        return;
      case NvmeAdminOpcode.GetLogPage:
        this.#getLogPage(req);
        return;
      case NvmeAdminOpcode.SetFeatures:
        this.#setFeatures(req);
        return;
      case NvmeAdminOpcode.GetFeatures:
        this.#getFeatures(req);
        return;
      case NvmeAdminOpcode.AsyncEventRequest:
        if (this.#aers.length >= NVMF_MAX_ASYNC_EVENTS) {
          completeRequest(req, S_AER_LIMIT);
          return;
        }
        this.#aers.push(req);
        this.#deliverEvents();
        return;
      case NvmeAdminOpcode.KeepAlive:
        completeRequest(req, S_SUCCESS);
        return;
      case NvmeAdminOpcode.Abort:
        if (this.isDiscovery) break;
        // A bdev I/O cannot be called back: DW0 bit 0 set means "not aborted".
        completeRequest(req, S_SUCCESS, 1);
        return;
    }
    completeRequest(req, S_INVALID_OPCODE);
  }

  /**
   * Sends `len` bytes of `data` as the command's data and completes it;
   * the rest of the host's buffer is zeroed so no stale bytes leave.
   */
  #sendData(req: NvmfRequest, data: Uint8Array, len: number, dw0 = 0): void {
    if (req.length < len) {
      completeRequest(req, S_SGL_LENGTH);
      return;
    }
    const n = copyToIovs(req.iovs, req.iovcnt, data.subarray(0, len));
    zeroIovs(req.iovs, req.iovcnt, n, req.length);
    completeRequest(req, S_SUCCESS, dw0);
  }

  #identify(req: NvmfRequest): void {
    const v = req.sqeView;
    const cns = v.getUint32(40, true) & 0xff;
    const csi = v.getUint32(44, true) >>> 24;
    const nsid = v.getUint32(4, true);
    const out = this.#scratch;
    const sub = this.subsystem;
    if (this.isDiscovery && cns !== NvmeCns.Controller) {
      completeRequest(req, S_INVALID_FIELD);
      return;
    }
    switch (cns) {
      case NvmeCns.Namespace:
      case NvmeCns.IoCsNamespace:
      case NvmeCns.IoCsIndependentNamespace: {
        if (cns === NvmeCns.IoCsNamespace && csi !== NvmeCsi.Nvm) {
          completeRequest(req, S_INVALID_FIELD);
          return;
        }
        if (nsid === 0 || nsid > sub.maxNamespaces) {
          completeRequest(req, S_INVALID_NS);
          return;
        }
        const ns = sub.nsById[nsid];
        if (ns === undefined) out.fill(0); // an inactive NSID: a zero-filled structure
        else if (cns === NvmeCns.Namespace) this.#buildNamespace(out, ns);
        else if (cns === NvmeCns.IoCsNamespace) buildIdentifyNvmNamespace(out);
        else {
          buildIdentifyIndependentNamespace(out, {
            nmic: 1,
            nsattr: ns.readOnly ? 1 : 0,
            nstat: 1,
          });
        }
        break;
      }
      case NvmeCns.Controller:
        this.#buildController(out);
        break;
      case NvmeCns.ActiveNamespaceList:
      case NvmeCns.IoCsActiveNamespaceList:
        if (nsid >= 0xfffffffe) {
          completeRequest(req, S_INVALID_NS);
          return;
        }
        if (cns === NvmeCns.IoCsActiveNamespaceList && csi !== NvmeCsi.Nvm) {
          completeRequest(req, S_INVALID_FIELD);
          return;
        }
        buildActiveNamespaceList(out, sub.activeNsids(), nsid);
        break;
      case NvmeCns.NamespaceIdDescriptorList: {
        const ns = nsid <= sub.maxNamespaces ? sub.nsById[nsid] : undefined;
        if (ns === undefined) {
          completeRequest(req, S_INVALID_NS);
          return;
        }
        buildNamespaceIdDescriptorList(out, {
          eui64: ns.eui64 ?? undefined,
          nguid: ns.nguid,
          uuid: ns.uuidBytes,
          csi: NvmeCsi.Nvm,
        });
        break;
      }
      case NvmeCns.IoCsController:
        if (csi !== NvmeCsi.Nvm) {
          completeRequest(req, S_INVALID_FIELD);
          return;
        }
        buildIdentifyNvmController(out);
        break;
      default:
        // Includes 1Ch (I/O Command Set data structure): CAP.CSS bit 6 is clear,
        // so the controller has no I/O Command Set profiles to report.
        completeRequest(req, S_INVALID_FIELD);
        return;
    }
    this.#sendData(req, out, NVME_IDENTIFY_BYTES);
  }

  #buildController(out: Uint8Array): void {
    const t = this.target.transportOptions;
    const sub = this.subsystem;
    const disc = this.isDiscovery;
    buildIdentifyController(out, {
      serialNumber: sub.serialNumber,
      modelNumber: sub.modelNumber,
      firmwareRevision: this.target.firmwareRevision,
      rab: 6,
      cmic: disc ? 0 : NvmeCmic.MultiPort | NvmeCmic.MultiController,
      mdts: Math.log2(t.maxIoSize / 4096),
      cntlid: this.cntlid,
      ver: NVMF_VERSION,
      oaes: disc ? NvmeOaes.DiscoveryLogChange : NvmeOaes.NamespaceAttribute,
      ctratt: disc ? 0 : NvmeCtratt.HostId128Bit | NvmeCtratt.TrafficBasedKeepAlive,
      cntrltype: disc ? NvmeControllerType.Discovery : NvmeControllerType.Io,
      acl: NVMF_ABORT_COMMAND_LIMIT - 1,
      aerl: NVMF_MAX_ASYNC_EVENTS - 1,
      // Slot 1 read-only, one slot.
      frmw: disc ? 0 : 0x03,
      lpa: disc ? NvmeLpa.ExtendedData : NvmeLpa.SmartPerNamespace |
        NvmeLpa.CommandsSupportedAndEffects | NvmeLpa.ExtendedData,
      elpe: NVMF_ERROR_LOG_ENTRIES - 1,
      kas: t.kas,
      sqes: disc ? 0 : NVME_SQES_LOG2 << 4 | NVME_SQES_LOG2,
      cqes: disc ? 0 : NVME_CQES_LOG2 << 4 | NVME_CQES_LOG2,
      maxcmd: t.maxQueueDepth,
      nn: disc ? 0 : sub.maxNamespaces,
      oncs: disc ? 0 : NvmeOncs.DatasetManagement | NvmeOncs.WriteZeroes,
      vwc: disc ? 0 : NvmeVwc.Present | NvmeVwc.FlushBroadcastNotSupported,
      icsvscc: disc ? 0 : 1,
      sgls: NvmeSgls.Supported | (t.inCapsuleDataSize > 0 ? NvmeSgls.Offset : 0),
      mnan: disc ? 0 : sub.maxNamespaces,
      subnqn: sub.nqn,
      fabrics: {
        ioccsz: (64 + t.inCapsuleDataSize) / 16,
        iorcsz: 1,
        icdoff: 0,
        fcatt: 0,
        msdbd: 1,
      },
    });
  }

  #buildNamespace(out: Uint8Array, ns: NvmfNamespace): void {
    const canDeallocate = ns.bdev.ioTypeSupported(BdevIoType.Unmap);
    buildIdentifyNamespace(out, {
      nsze: ns.bdev.numBlocks,
      ncap: ns.bdev.numBlocks,
      nuse: ns.bdev.numBlocks,
      nmic: 1,
      dlfeat: canDeallocate ? NvmeDlfeat.ReadsZeroes | NvmeDlfeat.WriteZeroesDeallocate : 0,
      nvmcapBytes: ns.bdev.sizeBytes,
      nsattr: ns.readOnly ? 1 : 0,
      nguid: ns.nguid,
      eui64: ns.eui64 ?? undefined,
      lbaf0Lbads: Math.log2(ns.bdev.blockSize),
    });
  }

  #getLogPage(req: NvmfRequest): void {
    const v = req.sqeView;
    const f = parseGetLogPage(v);
    if ((f.offset & 3) !== 0 || f.ot) {
      completeRequest(req, S_INVALID_FIELD);
      return;
    }
    if (req.length < f.bytes) {
      completeRequest(req, S_SGL_LENGTH);
      return;
    }
    let log: Uint8Array;
    if (this.isDiscovery) {
      if (f.lid !== NvmeLid.Discovery) {
        completeRequest(req, S_INVALID_FIELD);
        return;
      }
      log = this.target.discoveryLog(this.hostnqn, req.qpair.local.traddr);
      if (!f.rae) this.#discEventMasked = false;
    } else {
      const nsid = v.getUint32(4, true);
      switch (f.lid) {
        case NvmeLid.ErrorInformation:
          log = this.#errorLogPage();
          break;
        case NvmeLid.SmartHealth: {
          const built = this.#smartLog(nsid);
          if (built === null) {
            completeRequest(req, S_INVALID_NS);
            return;
          }
          log = built;
          break;
        }
        case NvmeLid.FirmwareSlot:
          log = new Uint8Array(NVME_FIRMWARE_SLOT_LOG_BYTES);
          buildFirmwareSlotLog(log, 1, [this.target.firmwareRevision]);
          break;
        case NvmeLid.ChangedNamespaceList:
          log = new Uint8Array(NVME_CHANGED_NS_LIST_BYTES);
          buildChangedNamespaceList(
            log,
            this.#changedNsOverflow ? new Array(NVME_CHANGED_NS_LIST_MAX + 1) : this.#changedNs,
          );
          // Reading the log clears it; RAE clear also re-arms the notice.
          this.#changedNs.length = 0;
          this.#changedNsOverflow = false;
          if (!f.rae) this.#nsEventMasked = false;
          break;
        case NvmeLid.CommandsSupportedAndEffects:
          if (f.csi !== NvmeCsi.Nvm) {
            completeRequest(req, S_INVALID_FIELD);
            return;
          }
          log = new Uint8Array(NVME_EFFECTS_LOG_BYTES);
          buildEffectsLog(log, ADMIN_EFFECTS, IO_EFFECTS);
          break;
        default:
          completeRequest(req, S_INVALID_FIELD);
          return;
      }
    }
    if (f.offset > log.byteLength) {
      completeRequest(req, S_INVALID_FIELD);
      return;
    }
    const n = copyToIovs(
      req.iovs,
      req.iovcnt,
      log.subarray(f.offset, Math.min(log.byteLength, f.offset + f.bytes)),
    );
    zeroIovs(req.iovs, req.iovcnt, n, req.length);
    completeRequest(req, S_SUCCESS);
  }

  #errorLogPage(): Uint8Array {
    // Newest entry first; unused entries are zero.
    const out = new Uint8Array(NVMF_ERROR_LOG_ENTRIES * NVME_ERROR_LOG_ENTRY_BYTES);
    const n = Math.min(this.#errorCount, NVMF_ERROR_LOG_ENTRIES);
    for (let i = 0; i < n; i++) {
      const slot = (this.#errorCount - 1 - i) % NVMF_ERROR_LOG_ENTRIES;
      const at = slot * NVME_ERROR_LOG_ENTRY_BYTES;
      out.set(this.#errorLog.subarray(at, at + NVME_ERROR_LOG_ENTRY_BYTES), i * 64);
    }
    return out;
  }

  #smartLog(nsid: number): Uint8Array | null {
    const sub = this.subsystem;
    let namespaces: NvmfNamespace[];
    if (nsid === 0 || nsid === NVME_NSID_ALL) namespaces = sub.namespaces();
    else {
      const ns = nsid <= sub.maxNamespaces ? sub.nsById[nsid] : undefined;
      if (ns === undefined) return null;
      namespaces = [ns];
    }
    let readBytes = 0, writeBytes = 0, reads = 0, writes = 0;
    for (const ns of namespaces) {
      const s = ns.channel.stats;
      readBytes += s.readBytes;
      writeBytes += s.writeBytes;
      reads += s.readOps;
      writes += s.writeOps;
    }
    const out = new Uint8Array(NVME_SMART_LOG_BYTES);
    buildSmartLog(out, {
      temperatureK: SMART_TEMPERATURE_K,
      availableSparePct: 100,
      availableSpareThresholdPct: 10,
      percentageUsed: 0,
      dataUnitsRead: smartDataUnits(readBytes),
      dataUnitsWritten: smartDataUnits(writeBytes),
      hostReadCommands: reads,
      hostWriteCommands: writes,
      powerCycles: 1,
      powerOnHours: Math.floor((Date.now() - this.target.startedAtMs) / 3_600_000),
      errorLogEntries: this.#errorCount,
    });
    return out;
  }

  // ---- features ----

  #setFeatures(req: NvmfRequest): void {
    const v = req.sqeView;
    const cdw10 = v.getUint32(40, true), cdw11 = v.getUint32(44, true);
    const fid = featureFid(cdw10);
    const nsid = v.getUint32(4, true);
    if (!this.#featureSupported(fid)) {
      completeRequest(req, S_INVALID_FIELD);
      return;
    }
    if (featureSave(cdw10)) {
      completeRequest(req, S_NOT_SAVEABLE);
      return;
    }
    if (nsid !== 0 && nsid !== NVME_NSID_ALL) {
      completeRequest(req, S_NOT_NS_SPECIFIC);
      return;
    }
    const t = this.target.transportOptions;
    switch (fid) {
      case NvmeFid.Arbitration:
        this.#features.arbitration = cdw11;
        break;
      case NvmeFid.PowerManagement:
        if ((cdw11 & 0x1f) !== 0) {
          completeRequest(req, S_INVALID_FIELD); // one power state (NPSS 0)
          return;
        }
        this.#features.powerManagement = cdw11;
        break;
      case NvmeFid.TemperatureThreshold: {
        const tmpsel = (cdw11 >> 16) & 0xf, thsel = (cdw11 >> 20) & 3;
        if ((tmpsel > 8 && tmpsel !== 0xf) || thsel > 1) {
          completeRequest(req, S_INVALID_FIELD);
          return;
        }
        this.#features.temperature.set(tmpsel << 2 | thsel, cdw11 & 0xffff);
        break;
      }
      case NvmeFid.ErrorRecovery:
        if ((cdw11 & (1 << 16)) !== 0) {
          completeRequest(req, S_INVALID_FIELD); // DULBE: no deallocated-block errors
          return;
        }
        this.#features.errorRecovery = cdw11 & 0xffff;
        break;
      case NvmeFid.VolatileWriteCache:
        this.volatileWriteCache = (cdw11 & 1) !== 0;
        break;
      case NvmeFid.NumberOfQueues: {
        const nsqr = cdw11 & 0xffff, ncqr = cdw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) {
          completeRequest(req, S_INVALID_FIELD);
          return;
        }
        if (this.ioQueueCount > 0) {
          completeRequest(req, S_SEQUENCE);
          return;
        }
        const max = t.maxIoQpairsPerCtrlr;
        const nsqa = Math.min(nsqr + 1, max), ncqa = Math.min(ncqr + 1, max);
        this.#ioQueuesGranted = Math.min(nsqa, ncqa);
        completeRequest(req, S_SUCCESS, numberOfQueuesDw(nsqa - 1, ncqa - 1));
        return;
      }
      case NvmeFid.AsyncEventConfiguration:
        this.#aec = cdw11 & (this.isDiscovery ? NvmeAec.DiscoveryLogChange : (
          NvmeAec.SmartCriticalWarnings | NvmeAec.NamespaceAttribute
        ));
        break;
      case NvmeFid.KeepAliveTimer:
        this.katoMs = this.target.roundKato(cdw11);
        this.lastSeenMs = performance.now();
        break;
      case NvmeFid.HostIdentifier:
        // Over Fabrics the host identifier comes with Connect.
        completeRequest(req, S_SEQUENCE);
        return;
    }
    completeRequest(req, S_SUCCESS);
  }

  #featureSupported(fid: number): boolean {
    if (this.isDiscovery) {
      return fid === NvmeFid.KeepAliveTimer || fid === NvmeFid.AsyncEventConfiguration;
    }
    switch (fid) {
      case NvmeFid.Arbitration:
      case NvmeFid.PowerManagement:
      case NvmeFid.TemperatureThreshold:
      case NvmeFid.ErrorRecovery:
      case NvmeFid.VolatileWriteCache:
      case NvmeFid.NumberOfQueues:
      case NvmeFid.AsyncEventConfiguration:
      case NvmeFid.KeepAliveTimer:
      case NvmeFid.HostIdentifier:
        return true;
      default:
        return false;
    }
  }

  #getFeatures(req: NvmfRequest): void {
    const v = req.sqeView;
    const cdw10 = v.getUint32(40, true), cdw11 = v.getUint32(44, true);
    const fid = featureFid(cdw10), sel = featureSel(cdw10);
    if (!this.#featureSupported(fid) || sel > NvmeFeatureSel.SupportedCapabilities) {
      completeRequest(req, S_INVALID_FIELD);
      return;
    }
    if (sel === NvmeFeatureSel.SupportedCapabilities) {
      completeRequest(
        req,
        S_SUCCESS,
        fid === NvmeFid.HostIdentifier ? 0 : NvmeFeatureCapability.Changeable,
      );
      return;
    }
    const current = sel === NvmeFeatureSel.Current;
    const t = this.target.transportOptions;
    let dw0 = 0;
    switch (fid) {
      case NvmeFid.Arbitration:
        dw0 = current ? this.#features.arbitration : 0;
        break;
      case NvmeFid.PowerManagement:
        dw0 = current ? this.#features.powerManagement : 0;
        break;
      case NvmeFid.TemperatureThreshold: {
        const tmpsel = (cdw11 >> 16) & 0xf, thsel = (cdw11 >> 20) & 3;
        if ((tmpsel > 8 && tmpsel !== 0xf) || thsel > 1) {
          completeRequest(req, S_INVALID_FIELD);
          return;
        }
        const dflt = thsel === 0 ? DEFAULT_OVER_TEMP_K : 0;
        dw0 = current ? this.#features.temperature.get(tmpsel << 2 | thsel) ?? dflt : dflt;
        break;
      }
      case NvmeFid.ErrorRecovery:
        dw0 = current ? this.#features.errorRecovery : 0;
        break;
      case NvmeFid.VolatileWriteCache:
        dw0 = !current || this.volatileWriteCache ? 1 : 0;
        break;
      case NvmeFid.NumberOfQueues: {
        const n = current && this.#ioQueuesGranted > 0
          ? this.#ioQueuesGranted
          : t.maxIoQpairsPerCtrlr;
        dw0 = numberOfQueuesDw(n - 1, n - 1);
        break;
      }
      case NvmeFid.AsyncEventConfiguration:
        dw0 = current ? this.#aec : 0;
        break;
      case NvmeFid.KeepAliveTimer:
        dw0 = current ? this.katoMs : 0;
        break;
      case NvmeFid.HostIdentifier: {
        if ((cdw11 & NVME_HOST_ID_EXHID) === 0) {
          completeRequest(req, S_INVALID_FIELD); // only the 128-bit identifier exists
          return;
        }
        this.#sendData(req, this.hostid, 16);
        return;
      }
    }
    completeRequest(req, S_SUCCESS, dw0);
  }

  // ---- I/O commands ----

  /** Runs one command of an I/O queue. */
  executeIo(req: NvmfRequest): void {
    const v = req.sqeView;
    const opc = req.sqe[0] as number;
    const nsid = v.getUint32(4, true);
    const sub = this.subsystem;
    const ns = nsid < sub.nsById.length ? sub.nsById[nsid] : undefined;
    if (ns === undefined) {
      completeRequest(req, S_INVALID_NS);
      return;
    }
    const io = req.bdevIo;
    if (io.onComplete !== onIoComplete) io.onComplete = onIoComplete;
    // The CQE still holds the request's previous completion: clear the step flag.
    req.cqe[0] = 0;
    switch (opc) {
      case NvmeIoOpcode.Read:
      case NvmeIoOpcode.Write: {
        const hi = v.getUint32(44, true);
        const slba = v.getUint32(40, true) + hi * 0x1_0000_0000;
        const nlb = v.getUint16(48, true) + 1;
        if (hi >= 0x20_0000 || slba + nlb > ns.numBlocks) {
          completeRequest(req, S_LBA_RANGE);
          return;
        }
        if (nlb * ns.blockSize !== req.length) {
          completeRequest(req, S_SGL_LENGTH);
          return;
        }
        if (opc === NvmeIoOpcode.Read) {
          ns.channel.readv(io, req.iovs, req.iovcnt, slba, nlb);
          return;
        }
        if (ns.readOnly) {
          completeRequest(req, S_WRITE_PROTECTED);
          return;
        }
        this.#flushAfter(req, ns);
        ns.channel.writev(io, req.iovs, req.iovcnt, slba, nlb);
        return;
      }
      case NvmeIoOpcode.Flush:
        ns.channel.flush(io);
        return;
      case NvmeIoOpcode.WriteZeroes: {
        const hi = v.getUint32(44, true);
        const slba = v.getUint32(40, true) + hi * 0x1_0000_0000;
        const cdw12 = v.getUint32(48, true);
        const nlb = (cdw12 & 0xffff) + 1;
        if (hi >= 0x20_0000 || slba + nlb > ns.numBlocks) {
          completeRequest(req, S_LBA_RANGE);
          return;
        }
        if (ns.readOnly) {
          completeRequest(req, S_WRITE_PROTECTED);
          return;
        }
        this.#flushAfter(req, ns);
        if ((cdw12 & CDW12_DEAC) !== 0 && ns.bdev.ioTypeSupported(BdevIoType.Unmap)) {
          // Deallocated blocks read back as zeroes (DLFEAT), so this is a valid Write Zeroes.
          ns.channel.unmap(io, slba, nlb);
        } else {
          ns.channel.writeZeroes(io, slba, nlb);
        }
        return;
      }
      case NvmeIoOpcode.DatasetManagement:
        this.#datasetManagement(req, ns);
        return;
    }
    completeRequest(req, S_INVALID_OPCODE);
  }

  /** Marks a write for a flush after it when it must be durable and the bdev caches. */
  #flushAfter(req: NvmfRequest, ns: NvmfNamespace): void {
    if (!ns.bdev.writeCache) return;
    if (this.volatileWriteCache && (req.sqeView.getUint32(48, true) & CDW12_FUA) === 0) return;
    setStepNamespace(req, ns);
    req.cqe[0] = STEP_FLUSH_PENDING;
  }

  #datasetManagement(req: NvmfRequest, ns: NvmfNamespace): void {
    const v = req.sqeView;
    const count = (v.getUint32(40, true) & 0xff) + 1;
    const attributes = v.getUint32(44, true);
    if (req.length < count * 16) {
      completeRequest(req, S_SGL_LENGTH);
      return;
    }
    // Integral Dataset for Read/Write are hints; only Deallocate does anything.
    if ((attributes & DSM_AD) === 0) {
      completeRequest(req, S_SUCCESS);
      return;
    }
    if (ns.readOnly) {
      completeRequest(req, S_WRITE_PROTECTED);
      return;
    }
    for (let i = 0; i < count; i++) {
      const nlb = iovU32(req.iovs, req.iovcnt, i * 16 + 4);
      const hi = iovU32(req.iovs, req.iovcnt, i * 16 + 12);
      const slba = iovU32(req.iovs, req.iovcnt, i * 16 + 8) + hi * 0x1_0000_0000;
      if (hi >= 0x20_0000 || slba + nlb > ns.numBlocks) {
        completeRequest(req, S_LBA_RANGE);
        return;
      }
    }
    if (!ns.bdev.ioTypeSupported(BdevIoType.Unmap)) {
      // Deallocation is advisory; DLFEAT told the host reads are not zeroes.
      completeRequest(req, S_SUCCESS);
      return;
    }
    setStepNamespace(req, ns);
    req.cqeView.setUint16(4, 0, true);
    req.cqeView.setUint16(6, count, true);
    submitNextRange(req, ns);
  }

  /** The `nvmf_subsystem_get_controllers` view (SPDK's fields). */
  toJSON(): Record<string, unknown> {
    return {
      cntlid: this.cntlid,
      cntrltype: this.isDiscovery ? "discovery" : "io",
      hostnqn: this.hostnqn,
      hostid: uuidString(this.hostid),
      num_io_qpairs: this.ioQueueCount,
    };
  }
}

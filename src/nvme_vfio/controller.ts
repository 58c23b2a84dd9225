/**
 * The user-space NVMe controller driver: bring-up, admin commands, one I/O
 * queue pair, command timeouts, reset and shutdown (NVMe Base 2.0,
 * "Controller Initialization", "Controller Shutdown", "Command Timeout and
 * Abort"). The registers come through an {@link NvmeMmio} and DMA memory
 * through a {@link DmaSpace}, so the same code drives a VFIO device and the
 * in-memory controller of the unit tests.
 *
 * Polling, no interrupts: I/O completions are reaped by a reactor poller,
 * which also runs admin completions while any are outstanding. The poller
 * reports work while commands are outstanding (so the reactor keeps
 * polling: no interrupt would wake it) and none otherwise, so an idle
 * reactor parks and costs no CPU.
 *
 * Data goes through per-command bounce buffers in DMA memory, allocated at
 * attach with the rest; an I/O larger than one bounce buffer is carried out
 * as consecutive commands in the same slot.
 * @module
 */
import {
  cstsCfs,
  cstsRdy,
  cstsShst,
  NVME_CQE_BYTES,
  NVME_CQES_LOG2,
  NVME_SQE_BYTES,
  NVME_SQES_LOG2,
  NvmeAdminOpcode,
  type NvmeCap,
  NvmeCc,
  NvmeCns,
  NvmeCsts,
  NvmeFid,
  NvmeGenericSc,
  NvmeIoOpcode,
  NvmeOncs,
  NvmePsdt,
  NvmeReg,
  NvmeSglSubtype,
  NvmeSglType,
  NvmeShn,
  NvmeShst,
  nvmeStatusText,
  nvmeVersionText,
  parseCap,
  sqeSetSgl1,
  statusSc,
  statusSct,
} from "../nvme/mod.ts";
import { getString } from "../nvme/bytes.ts";
import { type DmaBuffer, DmaRegion, type DmaSpace } from "./dma.ts";
import { type NvmeMmio, read64, write64 } from "./mmio.ts";
import { NvmeQueuePair } from "./queue.ts";
import { setPrps } from "./prp.ts";

/** Errors of the driver's control path (bring-up, admin commands, reset). */
export class NvmeDriverError extends Error {
  /** NVMe status field when a command failed, else -1. */
  readonly status: number;
  constructor(message: string, status = -1) {
    super(message);
    this.name = "NvmeDriverError";
    this.status = status;
  }
}

/** Tuning of a controller; defaults in {@link NVME_DRIVER_DEFAULTS}. */
export interface NvmeDriverOptions {
  /** Entries of the I/O SQ and CQ (capped by CAP.MQES + 1); depth - 1 commands fly at once. */
  ioQueueDepth?: number;
  /** Bytes of one command's bounce buffer: the largest single NVMe transfer (capped by MDTS). */
  maxTransferBytes?: number;
  /** An I/O command outstanding this long is aborted; after as long again the controller is reset. */
  ioTimeoutMs?: number;
  /** Bound on each admin command. */
  adminTimeoutMs?: number;
  /** Bound on the shutdown notification (when RTD3E says nothing). */
  shutdownTimeoutMs?: number;
  /**
   * Describe data with one SGL Data Block descriptor when the controller supports SGLs
   * (Identify SGLS); else, or when false, with PRPs. Default true.
   */
  useSgl?: boolean;
  /**
   * Create the I/O CQ with interrupts enabled (MSI-X vector 0): the caller sleeps on them, so
   * the poller stops reporting work while commands are outstanding and the reactor may park.
   * Default false (pure polling).
   */
  interrupts?: boolean;
  /** Operational messages. */
  log?: (msg: string) => void;
}

/** Defaults of {@link NvmeDriverOptions}. */
export const NVME_DRIVER_DEFAULTS = {
  ioQueueDepth: 128,
  maxTransferBytes: 128 * 1024,
  ioTimeoutMs: 30_000,
  adminTimeoutMs: 30_000,
  shutdownTimeoutMs: 10_000,
  useSgl: true,
  interrupts: false,
} as const;

const PAGE = 4096;
const ADMIN_DEPTH = 32;
/** NLB is 16 bits: Write Zeroes and DSM ranges are chunked at this many blocks. */
const MAX_BLOCKS_PER_ZERO_CMD = 65536;

/** What Identify Controller told us. */
export interface NvmeControllerInfo {
  vid: number;
  serialNumber: string;
  modelNumber: string;
  firmwareRevision: string;
  cntlid: number;
  /** Maximum Data Transfer Size in bytes; 0 = no limit. */
  mdtsBytes: number;
  nn: number;
  oncs: number;
  vwc: number;
  sgls: number;
  subnqn: string;
  version: string;
}

/** One active namespace. */
export interface NvmeNamespaceInfo {
  nsid: number;
  blockSize: number;
  numBlocks: number;
  /** DLFEAT read behaviour: deallocated blocks read as zeroes. */
  deallocReadsZeroes: boolean;
  /** NGUID/EUI64 as hex ("" when zero). */
  nguid: string;
  eui64: string;
}

/** States of a controller. */
export type NvmeControllerState = "enabled" | "resetting" | "failed" | "removed" | "shutdown";

/** Operations of one command slot. */
export const NvmeIoOp = {
  Read: 1,
  Write: 2,
  Flush: 3,
  WriteZeroes: 4,
  Deallocate: 5,
  /** Write Zeroes by writing a zeroed bounce buffer (controllers without Write Zeroes). */
  ZeroByWrite: 6,
  /** Write Zeroes with DEAC: zeroes, and the controller may deallocate (bdev unmap). */
  WriteZeroesDeallocate: 7,
} as const;

/**
 * A user of the I/O queue: gets each slot's completion. Bdev channels
 * implement it. `status` is the NVMe status field (0 success); `errno` is
 * set for driver-made failures (timeout, reset, removal) with status -1.
 */
export interface NvmeSlotOwner {
  /** The command in `slot` finished. */
  onSlotDone(slot: number, status: number, errno: number): void;
  /** A slot became free: the owner may start a waiting I/O. Returns true when it took it. */
  onSlotFree?(): boolean;
}

interface AdminPending {
  resolve: (r: { status: number; dw0: number }) => void;
  reject: (e: Error) => void;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A controller driven from user space. {@link NvmeController.attach} brings
 * it up; {@link NvmeController.detach} shuts it down and frees its DMA memory.
 */
export class NvmeController {
  readonly name: string;
  readonly cap: NvmeCap;
  readonly version: number;
  info!: NvmeControllerInfo;
  namespaces: NvmeNamespaceInfo[] = [];
  state: NvmeControllerState = "enabled";
  /** Why the controller is failed or removed ("" otherwise). */
  failReason = "";
  /** Counters for bdev_nvme_get_controllers and tests. */
  readonly stats = {
    ioCommands: 0,
    ioErrors: 0,
    timeouts: 0,
    aborts: 0,
    resets: 0,
    staleCompletions: 0,
  };

  readonly mmio: NvmeMmio;
  readonly #dma: DmaSpace;
  readonly #log: (msg: string) => void;
  readonly #opts: Required<Omit<NvmeDriverOptions, "log">>;
  readonly #timeoutMs: number;
  readonly #pageSize = PAGE;

  #adminRegion: DmaRegion | null = null;
  #ioRegion: DmaRegion | null = null;
  #admin!: NvmeQueuePair;
  #identify!: DmaBuffer;
  #adminPending: (AdminPending | null)[] = new Array(ADMIN_DEPTH).fill(null);
  #adminOutstanding = 0;

  /** The I/O queue pair (qid 1) and its command slots. */
  #io: NvmeQueuePair | null = null;
  /** Commands that fit at once: depth - 1 (a full SQ has one empty entry). */
  slots = 0;
  /** Bytes of each slot's bounce buffer. */
  transferBytes = 0;
  /** Data pointers are SGLs (one Data Block descriptor) rather than PRPs. */
  sgl = false;

  /** The I/O CQ raises interrupts (see {@link NvmeDriverOptions.interrupts}). */
  get interrupts(): boolean {
    return this.#opts.interrupts;
  }
  bounce: Uint8Array<ArrayBuffer>[] = [];
  #bounceIova: number[] = [];
  #prpList: DataView[] = [];
  /** The first 16 bytes of each bounce buffer, for a Dataset Management range. */
  #rangeView: DataView[] = [];
  #prpIova: number[] = [];
  #owner: (NvmeSlotOwner | null)[] = [];
  #submittedAt: Float64Array = new Float64Array(0);
  /** 0 none, 1 abort sent, 2 reset requested. */
  #timeoutStage: Uint8Array = new Uint8Array(0);
  #free: Int32Array = new Int32Array(0);
  #freeCount = 0;
  outstanding = 0;
  #waiters: NvmeSlotOwner[] = [];
  #lastCheck = 0;
  #pollCount = 0;
  #resetting: Promise<void> | null = null;
  /** Set by the bdev module: called when a reset ended or the controller failed. */
  onStateChange: (() => void) | null = null;

  private constructor(name: string, mmio: NvmeMmio, dma: DmaSpace, opts: NvmeDriverOptions) {
    this.name = name;
    this.mmio = mmio;
    this.#dma = dma;
    this.#log = opts.log ?? (() => {});
    this.#opts = {
      ioQueueDepth: opts.ioQueueDepth ?? NVME_DRIVER_DEFAULTS.ioQueueDepth,
      maxTransferBytes: opts.maxTransferBytes ?? NVME_DRIVER_DEFAULTS.maxTransferBytes,
      ioTimeoutMs: opts.ioTimeoutMs ?? NVME_DRIVER_DEFAULTS.ioTimeoutMs,
      adminTimeoutMs: opts.adminTimeoutMs ?? NVME_DRIVER_DEFAULTS.adminTimeoutMs,
      shutdownTimeoutMs: opts.shutdownTimeoutMs ?? NVME_DRIVER_DEFAULTS.shutdownTimeoutMs,
      useSgl: opts.useSgl ?? NVME_DRIVER_DEFAULTS.useSgl,
      interrupts: opts.interrupts ?? NVME_DRIVER_DEFAULTS.interrupts,
    };
    this.#timeoutMs = this.#opts.ioTimeoutMs;
    const capRaw = read64(mmio, NvmeReg.CAP);
    if (capRaw === 0xffff_ffff_ffff_ffffn) {
      throw new NvmeDriverError(`${name}: the device does not respond (registers read all ones)`);
    }
    this.cap = parseCap(capRaw);
    this.version = mmio.read32(NvmeReg.VS);
  }

  /** The worst-case time to CSTS.RDY transitions: CAP.TO in 500 ms units. */
  get readyTimeoutMs(): number {
    return Math.max(1, this.cap.to) * 500;
  }

  /**
   * Brings the controller up (disable, admin queue, enable, Identify,
   * Number of Queues, I/O queue pair, namespaces).
   * @throws {NvmeDriverError} with the step that failed; DMA memory is freed then
   */
  static async attach(
    name: string,
    mmio: NvmeMmio,
    dma: DmaSpace,
    opts: NvmeDriverOptions = {},
  ): Promise<NvmeController> {
    const c = new NvmeController(name, mmio, dma, opts);
    try {
      await c.#bringUp();
      return c;
    } catch (e) {
      c.#freeMemory();
      throw e;
    }
  }

  async #bringUp(): Promise<void> {
    const cap = this.cap;
    if ((cap.css & 1) === 0) {
      throw new NvmeDriverError(
        `${this.name}: the controller does not support the NVM command set`,
      );
    }
    if (cap.mpsmin > 0) {
      throw new NvmeDriverError(
        `${this.name}: minimum memory page size ${
          1 << (12 + cap.mpsmin)
        } bytes; the driver uses 4096`,
      );
    }
    this.#adminRegion = new DmaRegion(
      this.#dma,
      2 * PAGE + ADMIN_DEPTH * (NVME_SQE_BYTES + NVME_CQE_BYTES) + PAGE,
    );
    const asq = this.#adminRegion.alloc(ADMIN_DEPTH * NVME_SQE_BYTES);
    const acq = this.#adminRegion.alloc(ADMIN_DEPTH * NVME_CQE_BYTES);
    this.#identify = this.#adminRegion.alloc(PAGE);
    this.#admin = new NvmeQueuePair(this.mmio, 0, ADMIN_DEPTH, asq, acq, cap.dstrd);
    await this.#enable();

    const id = await this.#identifyController();
    this.info = id;
    // SGLS bits 1:0 = 01b (any alignment) or 10b (dword aligned): the bounce buffers are page aligned.
    this.sgl = this.#opts.useSgl && (id.sgls & 3) !== 0;
    this.#log(
      `${this.name}: ${id.modelNumber} SN ${id.serialNumber} FR ${id.firmwareRevision} NVMe ${id.version}, NN ${id.nn}, SGLs ${
        (id.sgls & 3) !== 0 ? "yes" : "no"
      }`,
    );

    // The I/O queue pair: depth capped by CAP.MQES (0's based), slots by it.
    const depth = Math.max(2, Math.min(this.#opts.ioQueueDepth, cap.mqes + 1, 1024));
    this.slots = depth - 1;
    let xfer = Math.max(PAGE, Math.floor(this.#opts.maxTransferBytes / PAGE) * PAGE);
    if (id.mdtsBytes > 0) xfer = Math.min(xfer, id.mdtsBytes);
    // One PRP list page (512 entries) must cover a transfer.
    xfer = Math.min(xfer, (PAGE / 8) * PAGE);
    this.transferBytes = xfer;
    const ioBytes = depth * (NVME_SQE_BYTES + NVME_CQE_BYTES) + 2 * PAGE +
      this.slots * (xfer + PAGE);
    this.#ioRegion = new DmaRegion(this.#dma, ioBytes);
    const sq = this.#ioRegion.alloc(depth * NVME_SQE_BYTES);
    const cq = this.#ioRegion.alloc(depth * NVME_CQE_BYTES);
    this.#io = new NvmeQueuePair(this.mmio, 1, depth, sq, cq, cap.dstrd);
    this.#owner = new Array(this.slots).fill(null);
    this.#submittedAt = new Float64Array(this.slots);
    this.#timeoutStage = new Uint8Array(this.slots);
    this.#free = new Int32Array(this.slots);
    for (let i = 0; i < this.slots; i++) {
      const b = this.#ioRegion.alloc(xfer);
      this.bounce.push(b.bytes);
      this.#rangeView.push(new DataView(b.bytes.buffer, b.bytes.byteOffset, 16));
      this.#bounceIova.push(b.iova);
      const l = this.#ioRegion.alloc(PAGE);
      this.#prpList.push(new DataView(l.bytes.buffer, l.bytes.byteOffset, PAGE));
      this.#prpIova.push(l.iova);
      this.#free[i] = this.slots - 1 - i;
    }
    this.#freeCount = this.slots;
    await this.#createIoQueues();
    this.namespaces = await this.#identifyNamespaces();
  }

  /** Disable, program the admin queue, enable; waits for RDY both ways, bounded by CAP.TO. */
  async #enable(): Promise<void> {
    const m = this.mmio;
    const cc = m.read32(NvmeReg.CC);
    if ((cc & NvmeCc.EN) !== 0) {
      // EN=1 but not yet ready: let it finish before disabling (spec, CC.EN).
      if (!cstsRdy(m.read32(NvmeReg.CSTS))) await this.#waitReady(true);
      m.write32(NvmeReg.CC, cc & ~NvmeCc.EN);
    }
    await this.#waitReady(false);
    this.#admin.reset();
    this.#adminPending.fill(null);
    this.#adminOutstanding = 0;
    m.write32(NvmeReg.AQA, ((ADMIN_DEPTH - 1) << 16) | (ADMIN_DEPTH - 1));
    write64(m, NvmeReg.ASQ, this.#admin.sq.iova);
    write64(m, NvmeReg.ACQ, this.#admin.cq.iova);
    m.write32(
      NvmeReg.CC,
      (NvmeCc.EN | (NVME_SQES_LOG2 << NvmeCc.IOSQES_SHIFT) |
        (NVME_CQES_LOG2 << NvmeCc.IOCQES_SHIFT)) >>> 0,
    );
    await this.#waitReady(true);
  }

  async #waitReady(ready: boolean): Promise<void> {
    const deadline = performance.now() + this.readyTimeoutMs;
    for (let i = 0;; i++) {
      const csts = this.mmio.read32(NvmeReg.CSTS);
      if (csts === 0xffffffff) {
        throw new NvmeDriverError(
          `${this.name}: the device does not respond (CSTS reads all ones)`,
        );
      }
      if (ready && cstsCfs(csts)) {
        throw new NvmeDriverError(
          `${this.name}: controller fatal status (CSTS.CFS) while enabling`,
        );
      }
      if (cstsRdy(csts) === ready) return;
      if (performance.now() > deadline) {
        throw new NvmeDriverError(
          `${this.name}: CSTS.RDY did not become ${
            ready ? 1 : 0
          } within CAP.TO (${this.readyTimeoutMs} ms)`,
        );
      }
      await sleep(i < 10 ? 0 : 1);
    }
  }

  /** Submits an admin command; `fill` writes the SQE (the CID is set here). */
  #adminSubmit(fill: (sqe: DataView) => void, pending: AdminPending): void {
    const q = this.#admin;
    const cid = this.#adminPending.indexOf(null);
    if (cid < 0 || q.sqFull) {
      pending.reject(new NvmeDriverError(`${this.name}: admin queue full`));
      return;
    }
    const sqe = q.nextSqe();
    fill(sqe);
    sqe.setUint16(2, cid, true);
    this.#adminPending[cid] = pending;
    this.#adminOutstanding++;
    q.submit();
  }

  readonly #onAdminCqe = (cid: number, status: number, dw0: number): void => {
    const p = this.#adminPending[cid];
    if (p === undefined || p === null) {
      this.stats.staleCompletions++;
      return;
    }
    this.#adminPending[cid] = null;
    this.#adminOutstanding--;
    p.resolve({ status, dw0 });
  };

  #pollAdmin(): number {
    if (this.#adminOutstanding === 0) return 0;
    return this.#admin.reap(this.#onAdminCqe);
  }

  /** One admin command, polled to completion on the control path. */
  async adminCommand(
    what: string,
    fill: (sqe: DataView) => void,
    opts: { allowError?: boolean } = {},
  ): Promise<{ status: number; dw0: number }> {
    let result: { status: number; dw0: number } | null = null;
    let error: Error | null = null;
    this.#adminSubmit(fill, {
      resolve: (r) => result = r,
      reject: (e) => error = e,
    });
    const deadline = performance.now() + this.#opts.adminTimeoutMs;
    for (let i = 0; result === null && error === null; i++) {
      this.#pollAdmin();
      if (result !== null || error !== null) break;
      const csts = this.mmio.read32(NvmeReg.CSTS);
      if (csts === 0xffffffff) error = new NvmeDriverError(`${this.name}: ${what}: device removed`);
      else if (cstsCfs(csts)) error = new NvmeDriverError(`${this.name}: ${what}: CSTS.CFS`);
      else if (performance.now() > deadline) {
        error = new NvmeDriverError(
          `${this.name}: ${what} timed out after ${this.#opts.adminTimeoutMs} ms`,
        );
      } else await sleep(i < 20 ? 0 : 1);
    }
    if (error !== null) throw error;
    const r = result as unknown as { status: number; dw0: number };
    if (r.status !== 0 && opts.allowError !== true) {
      throw new NvmeDriverError(
        `${this.name}: ${what} failed: ${nvmeStatusText(r.status)}`,
        r.status,
      );
    }
    return r;
  }

  async #identify_(cns: number, nsid: number, what: string): Promise<Uint8Array> {
    const buf = this.#identify;
    buf.bytes.fill(0);
    await this.adminCommand(what, (s) => {
      s.setUint8(0, NvmeAdminOpcode.Identify);
      s.setUint32(4, nsid, true);
      setU64(s, 24, buf.iova);
      s.setUint32(40, cns, true);
    });
    return buf.bytes.slice(0, PAGE);
  }

  async #identifyController(): Promise<NvmeControllerInfo> {
    const b = await this.#identify_(NvmeCns.Controller, 0, "Identify Controller");
    const v = new DataView(b.buffer);
    const mdts = v.getUint8(77);
    return {
      vid: v.getUint16(0, true),
      serialNumber: getString(b, 4, 20),
      modelNumber: getString(b, 24, 40),
      firmwareRevision: getString(b, 64, 8),
      cntlid: v.getUint16(78, true),
      mdtsBytes: mdts === 0 ? 0 : 2 ** mdts * (1 << (12 + this.cap.mpsmin)),
      nn: v.getUint32(516, true),
      oncs: v.getUint16(520, true),
      vwc: v.getUint8(525),
      sgls: v.getUint32(536, true),
      subnqn: getString(b, 768, 256),
      version: nvmeVersionText(this.version),
    };
  }

  async #identifyNamespaces(): Promise<NvmeNamespaceInfo[]> {
    const list = await this.#identify_(
      NvmeCns.ActiveNamespaceList,
      0,
      "Identify Active Namespace List",
    );
    const lv = new DataView(list.buffer);
    const out: NvmeNamespaceInfo[] = [];
    for (let i = 0; i < 1024; i++) {
      const nsid = lv.getUint32(i * 4, true);
      if (nsid === 0) break;
      const b = await this.#identify_(NvmeCns.Namespace, nsid, `Identify Namespace ${nsid}`);
      const v = new DataView(b.buffer);
      const nsze = v.getUint32(0, true) + v.getUint32(4, true) * 0x1_0000_0000;
      if (nsze === 0) continue; // inactive
      const flbas = v.getUint8(26);
      const fmt = (flbas & 0xf) | ((flbas >> 5) & 3) << 4;
      const ms = v.getUint16(128 + 4 * fmt, true);
      const lbads = v.getUint8(128 + 4 * fmt + 2);
      if (ms !== 0 || lbads < 9 || lbads > 16) {
        this.#log(
          `${this.name}: namespace ${nsid} skipped: LBA format with ${ms} bytes of metadata, data 2^${lbads}`,
        );
        continue;
      }
      const hex = (o: number, n: number) => {
        let s = "";
        for (let k = 0; k < n; k++) s += (b[o + k] ?? 0).toString(16).padStart(2, "0");
        return /^0*$/.test(s) ? "" : s.toUpperCase();
      };
      out.push({
        nsid,
        blockSize: 1 << lbads,
        numBlocks: nsze,
        deallocReadsZeroes: (v.getUint8(33) & 7) === 1,
        nguid: hex(104, 16),
        eui64: hex(120, 8),
      });
    }
    return out;
  }

  /** Set Features Number of Queues, then Create I/O CQ and SQ (qid 1, physically contiguous, no interrupts). */
  async #createIoQueues(): Promise<void> {
    const io = this.#io as NvmeQueuePair;
    io.reset();
    const nq = await this.adminCommand("Set Features (Number of Queues)", (s) => {
      s.setUint8(0, NvmeAdminOpcode.SetFeatures);
      s.setUint32(40, NvmeFid.NumberOfQueues, true);
      s.setUint32(44, 0, true); // one SQ and one CQ, 0's based
    });
    if ((nq.dw0 & 0xffff) === 0xffff || (nq.dw0 >>> 16) === 0xffff) {
      throw new NvmeDriverError(
        `${this.name}: bad Number of Queues answer 0x${nq.dw0.toString(16)}`,
      );
    }
    await this.adminCommand("Create I/O Completion Queue 1", (s) => {
      s.setUint8(0, NvmeAdminOpcode.CreateIoCq);
      setU64(s, 24, io.cq.iova);
      s.setUint32(40, ((io.depth - 1) << 16) | io.qid, true);
      // PC=1; IEN per option, IV=0 (MSI-X vector 0).
      s.setUint32(44, this.#opts.interrupts ? 3 : 1, true);
    });
    await this.adminCommand("Create I/O Submission Queue 1", (s) => {
      s.setUint8(0, NvmeAdminOpcode.CreateIoSq);
      setU64(s, 24, io.sq.iova);
      s.setUint32(40, ((io.depth - 1) << 16) | io.qid, true);
      s.setUint32(44, (io.qid << 16) | 1, true); // CQID, PC=1
    });
  }

  // -------------------------------------------------------------------------
  // Data path.

  /** A free command slot, or -1. */
  allocSlot(owner: NvmeSlotOwner): number {
    if (this.#freeCount === 0 || this.state !== "enabled") return -1;
    const slot = this.#free[--this.#freeCount] as number;
    this.#owner[slot] = owner;
    return slot;
  }

  /** Gives a slot back (the owner is done with it; no command is outstanding in it). */
  freeSlot(slot: number): void {
    this.#owner[slot] = null;
    this.#free[this.#freeCount++] = slot;
  }

  /** Asks to be told (onSlotFree) when a slot frees up. */
  waitForSlot(owner: NvmeSlotOwner): void {
    if (!this.#waiters.includes(owner)) this.#waiters.push(owner);
  }

  /** Forgets a waiter (its channel is closing). */
  cancelWait(owner: NvmeSlotOwner): void {
    const i = this.#waiters.indexOf(owner);
    if (i >= 0) this.#waiters.splice(i, 1);
  }

  /**
   * Submits one command in `slot`: `op` on `nsid` at `lba` for `blocks`
   * blocks; for Read/Write/ZeroByWrite the data is the first `bytes` bytes
   * of the slot's bounce buffer. Returns false when the controller cannot
   * take commands (the caller fails the I/O).
   */
  submitIo(
    slot: number,
    op: number,
    nsid: number,
    lba: number,
    blocks: number,
    bytes: number,
  ): boolean {
    const q = this.#io;
    if (q === null || this.state !== "enabled") return false;
    // A slot is free only when its previous command completed, and the SQ
    // has depth - 1 usable entries for depth - 1 slots: never full here.
    const s = q.nextSqe();
    s.setUint16(2, slot, true);
    s.setUint32(4, nsid, true);
    switch (op) {
      case NvmeIoOp.Read:
      case NvmeIoOp.Write:
      case NvmeIoOp.ZeroByWrite:
        s.setUint8(0, op === NvmeIoOp.Read ? NvmeIoOpcode.Read : NvmeIoOpcode.Write);
        if (this.sgl) {
          // The bounce buffer is contiguous in IOVA space: one Data Block descriptor covers it.
          s.setUint8(1, NvmePsdt.SglMptrContiguous << 6);
          sqeSetSgl1(
            s,
            NvmeSglType.DataBlock,
            NvmeSglSubtype.Address,
            this.#bounceIova[slot] as number,
            bytes,
          );
        } else {
          setPrps(
            s,
            this.#bounceIova[slot] as number,
            bytes,
            this.#pageSize,
            this.#prpList[slot] as DataView,
            this.#prpIova[slot] as number,
          );
        }
        setU64(s, 40, lba);
        s.setUint32(48, blocks - 1, true);
        break;
      case NvmeIoOp.Flush:
        s.setUint8(0, NvmeIoOpcode.Flush);
        break;
      case NvmeIoOp.WriteZeroes:
      case NvmeIoOp.WriteZeroesDeallocate:
        s.setUint8(0, NvmeIoOpcode.WriteZeroes);
        setU64(s, 40, lba);
        // CDW12: NLB (0's based), DEAC (bit 25).
        s.setUint32(
          48,
          ((blocks - 1) | (op === NvmeIoOp.WriteZeroesDeallocate ? 1 << 25 : 0)) >>> 0,
          true,
        );
        break;
      case NvmeIoOp.Deallocate: {
        // One range in the bounce buffer: context attributes, length, SLBA.
        const r = this.#rangeView[slot] as DataView;
        r.setUint32(0, 0, true);
        r.setUint32(4, blocks, true);
        setU64(r, 8, lba);
        s.setUint8(0, NvmeIoOpcode.DatasetManagement);
        setU64(s, 24, this.#bounceIova[slot] as number);
        s.setUint32(40, 0, true); // NR: one range, 0's based
        s.setUint32(44, 1 << 2, true); // AD: deallocate
        break;
      }
      default:
        throw new Error(`nvme: unknown op ${op}`);
    }
    this.#submittedAt[slot] = performance.now();
    this.#timeoutStage[slot] = 0;
    this.outstanding++;
    this.stats.ioCommands++;
    q.submit();
    return true;
  }

  readonly #onIoCqe = (cid: number, status: number): void => {
    const owner = cid < this.slots ? this.#owner[cid] : null;
    if (owner === null || owner === undefined || this.#submittedAt[cid] === 0) {
      // A completion for a command already failed by a timeout or reset.
      this.stats.staleCompletions++;
      return;
    }
    this.#submittedAt[cid] = 0;
    this.outstanding--;
    if (status !== 0) this.stats.ioErrors++;
    const timedOut = this.#timeoutStage[cid] !== 0;
    const errno = status === 0 ? 0 : timedOut ? ETIMEDOUT : statusErrno(status);
    owner.onSlotDone(cid, status, errno);
  };

  /**
   * The reactor poller's body: reap I/O and admin completions, offer freed
   * slots to waiters, check timeouts and CSTS now and then. Returns the
   * work done, plus one while commands are outstanding so the reactor keeps
   * polling (there is no interrupt to wake it).
   */
  poll(): number {
    let work = 0;
    const q = this.#io;
    if (q !== null && this.outstanding > 0 && this.state === "enabled") {
      work += q.reap(this.#onIoCqe);
    }
    work += this.#pollAdmin();
    if (this.#waiters.length > 0 && this.#freeCount > 0 && this.state === "enabled") {
      work += this.#serveWaiters();
    }
    if (this.outstanding > 0 || this.#adminOutstanding > 0) {
      if (this.#opts.interrupts) {
        // An interrupt wakes the reactor: it may park while commands are outstanding. It also
        // wakes at its park timeout, so timeouts are still checked.
        this.#check(performance.now());
        return work;
      }
      if ((++this.#pollCount & 63) === 0) this.#check(performance.now());
      return work + 1;
    }
    return work;
  }

  #serveWaiters(): number {
    let n = 0;
    while (this.#waiters.length > 0 && this.#freeCount > 0) {
      const w = this.#waiters[0] as NvmeSlotOwner;
      if (w.onSlotFree === undefined || !w.onSlotFree()) {
        this.#waiters.shift();
        continue;
      }
      n++;
    }
    return n;
  }

  /** Every ~10 ms while busy: controller status and command timeouts. */
  #check(now: number): void {
    if (now - this.#lastCheck < 10) return;
    this.#lastCheck = now;
    if (this.state !== "enabled") return;
    const csts = this.mmio.read32(NvmeReg.CSTS);
    if (csts === 0xffffffff) {
      this.#fail("removed", "the device does not respond (CSTS reads all ones: removed?)");
      return;
    }
    if ((csts & NvmeCsts.CFS) !== 0) {
      this.#log(`${this.name}: controller fatal status (CSTS.CFS): resetting`);
      this.reset("controller fatal status (CSTS.CFS)");
      return;
    }
    const limit = this.#timeoutMs;
    for (let slot = 0; slot < this.slots; slot++) {
      const t = this.#submittedAt[slot] as number;
      if (t === 0 || now - t < limit) continue;
      const stage = this.#timeoutStage[slot] as number;
      if (stage === 0) {
        this.#timeoutStage[slot] = 1;
        this.#submittedAt[slot] = now; // the abort gets a full timeout too
        this.stats.timeouts++;
        this.stats.aborts++;
        this.#log(`${this.name}: I/O command ${slot} timed out after ${limit} ms: aborting it`);
        this.#adminSubmit((s) => {
          s.setUint8(0, NvmeAdminOpcode.Abort);
          s.setUint32(40, (slot << 16) | 1, true); // CID, SQID 1
        }, {
          // Whatever the answer, the command itself must still complete (with
          // "Command Abort Requested" when aborted); the reset below catches it if not.
          resolve: () => {},
          reject: () => {},
        });
      } else if (stage === 1) {
        this.#timeoutStage[slot] = 2;
        this.reset(`I/O command ${slot} still outstanding ${limit} ms after its abort`);
        return;
      }
    }
  }

  /** Fails every outstanding command with `errno` (their completions, if any come, are dropped). */
  #failOutstanding(errno: number): void {
    for (let slot = 0; slot < this.slots; slot++) {
      if (this.#submittedAt[slot] === 0) continue;
      const owner = this.#owner[slot];
      const stage = this.#timeoutStage[slot];
      this.#submittedAt[slot] = 0;
      this.outstanding--;
      owner?.onSlotDone(slot, -1, stage !== 0 ? ETIMEDOUT : errno);
    }
    for (let cid = 0; cid < ADMIN_DEPTH; cid++) {
      const p = this.#adminPending[cid];
      if (p === null || p === undefined) continue;
      this.#adminPending[cid] = null;
      this.#adminOutstanding--;
      p.reject(new NvmeDriverError(`${this.name}: admin command failed by controller reset`));
    }
  }

  #fail(state: "failed" | "removed", reason: string): void {
    this.state = state;
    this.failReason = reason;
    this.#log(`${this.name}: ${state}: ${reason}`);
    this.#failOutstanding(EIO);
    this.#notifyWaiters();
    this.onStateChange?.();
  }

  /**
   * The device is going away (the kernel asked for it back, or it stopped answering): fail
   * outstanding and future I/Os with EIO. {@link detach} then releases it without a shutdown.
   */
  markRemoved(reason: string): void {
    if (this.state === "removed" || this.state === "shutdown") return;
    this.#fail("removed", reason);
  }

  /** Waiters learn the state changed: they fail their queued I/Os or retry. */
  #notifyWaiters(): void {
    const ws = this.#waiters.splice(0);
    for (const w of ws) w.onSlotFree?.();
  }

  /**
   * Controller reset (after a timeout that the abort did not resolve, or
   * CSTS.CFS): fails outstanding I/Os with EIO (ETIMEDOUT for the timed-out
   * ones), disables and re-enables the controller and recreates the I/O
   * queues. I/Os submitted meanwhile wait; if the reset fails the
   * controller is failed and they fail.
   */
  reset(reason: string): Promise<void> {
    if (this.#resetting !== null) return this.#resetting;
    if (this.state !== "enabled" && this.state !== "failed") return Promise.resolve();
    this.state = "resetting";
    this.stats.resets++;
    this.#log(`${this.name}: resetting the controller: ${reason}`);
    this.#failOutstanding(EIO);
    this.#resetting = (async () => {
      try {
        await this.#enable();
        await this.#createIoQueues();
        this.state = "enabled";
        this.failReason = "";
        this.#log(`${this.name}: reset done`);
      } catch (e) {
        this.state = "failed";
        this.failReason = `reset failed: ${(e as Error).message}`;
        this.#log(`${this.name}: ${this.failReason}`);
      } finally {
        this.#resetting = null;
        this.#notifyWaiters();
        this.onStateChange?.();
      }
    })();
    return this.#resetting;
  }

  /** Resolves when no reset is under way. */
  async settled(): Promise<void> {
    while (this.#resetting !== null) await this.#resetting;
  }

  /**
   * Clean shutdown: delete the I/O queues, set CC.SHN normal and wait for
   * CSTS.SHST complete (bounded by RTD3E, else the shutdown timeout), then
   * free the DMA memory. Idempotent. Errors are logged, not thrown: the
   * memory is freed regardless.
   */
  async detach(): Promise<void> {
    if (this.state === "shutdown") return;
    await this.settled();
    const m = this.mmio;
    try {
      if (this.state === "enabled" && this.#io !== null) {
        await this.adminCommand("Delete I/O Submission Queue 1", (s) => {
          s.setUint8(0, NvmeAdminOpcode.DeleteIoSq);
          s.setUint32(40, 1, true);
        }, { allowError: true });
        await this.adminCommand("Delete I/O Completion Queue 1", (s) => {
          s.setUint8(0, NvmeAdminOpcode.DeleteIoCq);
          s.setUint32(40, 1, true);
        }, { allowError: true });
      }
      if (this.state !== "removed") {
        const cc = m.read32(NvmeReg.CC);
        m.write32(
          NvmeReg.CC,
          ((cc & ~(3 << NvmeCc.SHN_SHIFT)) | (NvmeShn.Normal << NvmeCc.SHN_SHIFT)) >>> 0,
        );
        const deadline = performance.now() + this.#opts.shutdownTimeoutMs;
        for (let i = 0;; i++) {
          const csts = m.read32(NvmeReg.CSTS);
          if (csts === 0xffffffff) break;
          if (cstsShst(csts) === NvmeShst.Complete) {
            this.#log(`${this.name}: shutdown complete`);
            break;
          }
          if (performance.now() > deadline) {
            this.#log(
              `${this.name}: shutdown did not complete within ${this.#opts.shutdownTimeoutMs} ms`,
            );
            break;
          }
          await sleep(i < 10 ? 0 : 1);
        }
        // Disable too, so a later attach (or the kernel driver) starts clean.
        m.write32(NvmeReg.CC, 0);
      }
    } catch (e) {
      this.#log(`${this.name}: shutdown: ${(e as Error).message}`);
    } finally {
      // A removed controller keeps saying so (bdev_nvme_get_controllers shows why I/O fails).
      if (this.state !== "removed") this.state = "shutdown";
      this.#failOutstanding(EIO);
      this.#freeMemory();
    }
  }

  #freeMemory(): void {
    this.bounce = [];
    this.#prpList = [];
    this.#rangeView = [];
    this.#io = null;
    for (const r of [this.#ioRegion, this.#adminRegion]) {
      try {
        r?.free();
      } catch (e) {
        this.#log(`${this.name}: freeing DMA memory: ${(e as Error).message}`);
      }
    }
    this.#ioRegion = this.#adminRegion = null;
  }

  /** Facts for bdev_nvme_get_controllers. */
  describe(): Record<string, unknown> {
    return {
      state: this.state,
      ...(this.failReason !== "" ? { fail_reason: this.failReason } : {}),
      model_number: this.info?.modelNumber,
      serial_number: this.info?.serialNumber,
      firmware_revision: this.info?.firmwareRevision,
      cntlid: this.info?.cntlid,
      nvme_version: this.info?.version,
      subnqn: this.info?.subnqn,
      mdts_bytes: this.info?.mdtsBytes,
      cap: {
        mqes: this.cap.mqes + 1,
        to_ms: this.readyTimeoutMs,
        dstrd: this.cap.dstrd,
        mpsmin: 1 << (12 + this.cap.mpsmin),
      },
      io_queue: {
        depth: this.slots + 1,
        transfer_bytes: this.transferBytes,
        data_pointer: this.sgl ? "sgl" : "prp",
        interrupts: this.#opts.interrupts,
      },
      stats: { ...this.stats, outstanding: this.outstanding },
      namespaces: this.namespaces.map((n) => ({
        nsid: n.nsid,
        block_size: n.blockSize,
        num_blocks: n.numBlocks,
      })),
    };
  }

  /** Optional NVM command set support from ONCS. */
  get supportsWriteZeroes(): boolean {
    return (this.info.oncs & NvmeOncs.WriteZeroes) !== 0;
  }
  get supportsDsm(): boolean {
    return (this.info.oncs & NvmeOncs.DatasetManagement) !== 0;
  }
}

const EIO = 5;
const EINVAL = 22;
const ENOSPC = 28;
const ETIMEDOUT = 110;
const ECANCELED = 125;

/** The errno a failed NVMe command maps to. */
export function statusErrno(status: number): number {
  if (statusSct(status) === 0) {
    switch (statusSc(status)) {
      case NvmeGenericSc.InvalidField:
      case NvmeGenericSc.LbaOutOfRange:
        return EINVAL;
      case NvmeGenericSc.CapacityExceeded:
        return ENOSPC;
      case NvmeGenericSc.AbortRequested:
      case NvmeGenericSc.AbortedSqDeletion:
        return ECANCELED;
    }
  }
  return EIO;
}

/** The longest run of blocks one Write Zeroes or DSM range command covers. */
export const NVME_MAX_ZERO_BLOCKS = MAX_BLOCKS_PER_ZERO_CMD;

function setU64(v: DataView, off: number, value: number): void {
  v.setUint32(off, value >>> 0, true);
  v.setUint32(off + 4, Math.floor(value / 0x1_0000_0000) >>> 0, true);
}

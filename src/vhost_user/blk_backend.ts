/**
 * The vhost-user-blk device: serves a front-end's virtqueues from guest
 * memory through the bdev layer. The session (session.ts) turns protocol
 * messages into calls of this backend; the server (server.ts) owns the
 * socket.
 *
 * First version: split rings, indirect descriptors, EVENT_IDX, IN / OUT /
 * FLUSH / GET_ID / DISCARD / WRITE_ZEROES (several ranges per request).
 * Kicks are taken from the kick eventfd through the reactor's io_uring (so a
 * parked reactor wakes), and the rings are polled while requests are in
 * flight.
 *
 * Memory hot-plug (CONFIGURE_MEM_SLOTS: ADD_MEM_REG / REM_MEM_REG, and
 * SET_MEM_TABLE while running). A removed region leaves translation at once,
 * so no new request reaches it; its mapping stays until every bdev I/O that
 * was in flight when it was removed has completed (those may still read or
 * write it, or write a status byte into it). That is tracked with epochs: each
 * I/O counts in the epoch it was submitted in, a removal closes the epoch, and
 * a removed region is unmapped once no I/O of its epoch or an older one is
 * left. A started queue whose rings lie in a removed region is stopped (logged):
 * it cannot be served any more.
 *
 * Live migration: with VHOST_F_LOG_ALL negotiated and a log given by
 * SET_LOG_BASE, every write into guest memory (IN data, GET_ID, status
 * bytes) is marked in the dirty log after it lands, and so are used-ring
 * writes of rings whose VHOST_VRING_F_LOG flag is set (dirty_log.ts).
 * @module
 */
import {
  type BdevChannel,
  type BdevDesc,
  BdevIo,
  BdevIoStatus,
  type BdevRegistry,
  pollerName,
} from "../bdev/mod.ts";
import { type Mapping, mapShared, memfdCreate, PAGE_SIZE } from "../../ffi/memory.ts";
import { sym } from "../../ffi/libc.ts";
import { Reactor } from "../reactor/reactor.ts";
import { GuestAddress, GuestMemory } from "../virtio/guest_memory.ts";
import { SplitVirtqueue } from "../virtio/virtqueue.ts";
import { VirtqueueError } from "../virtio/error.ts";
import { parseBlkWithWasm } from "../virtio/wasm_walk.ts";
import { guestWindow } from "../../wasm/guest_window.ts";
import { ensureWasmMemory, isInWasmMemory } from "../../wasm/kernels.ts";
import { acquireVirtqWalker, releaseVirtqWalker, type WasmVirtqWalker } from "../../wasm/virtq.ts";
import {
  BLK_NO_STATUS,
  type BlkLimits,
  BlkRequest,
  encodeBlkConfig,
  featureMask,
  VIRTIO_BLK_CONFIG_BYTES,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../virtio/blk.ts";
import type { InflightDescription, LogDescription, MemoryRegion } from "./messages.ts";
import {
  featureBit,
  VHOST_F_LOG_ALL,
  VHOST_VRING_F_LOG,
  VhostUserProtocolFeature as P,
} from "./messages.ts";
import type { InflightArea as InflightReply, VhostUserBackend, VringConfig } from "./session.ts";
import { InflightArea, inflightAreaBytes, InflightQueue } from "./inflight.ts";
import { DirtyLog, type DirtyLogStats } from "./dirty_log.ts";

const POLLIN = 0x001;
/** #pop results besides a head or -1. */
const POP_SKIPPED = -2;
const POP_STOPPED = -3;
/** SLUICE_VHOST_TRACE=1 logs kicks and completions: for debugging a front-end. */
const TRACE = Deno.env.get("SLUICE_VHOST_TRACE") === "1";
/** Most segments per request offered (seg_max); below the queue size as QEMU does. */
const SEG_MAX = 126;
const MAX_QUEUE_SIZE = 1024;
/** max_discard_seg and max_write_zeroes_seg: ranges per DISCARD / WRITE_ZEROES request. */
const RANGES_MAX = 16;
/** Requests per queue whose ranges all go to the bdev at once; others issue theirs in turn. */
const RANGE_PARALLEL_REQS = 8;
/** Memory slots offered with CONFIGURE_MEM_SLOTS (libvhost-user offers 32). */
const MEM_SLOTS = 32;
/** Slots of the guest memory: removed regions keep theirs until their last I/O is done. */
const MEM_SLOT_CAPACITY = 2 * MEM_SLOTS;
/** I/O epochs tracked at once (see the module note). */
const EPOCHS = 64;
/** Offset of `writeback` in the virtio-blk config space (virtio 1.2, 5.2.4). */
const WRITEBACK_OFFSET = 32;
/** Lines per second a device logs about a guest's bad requests (see #guestLog). */
const GUEST_LOG_PER_SECOND = 20;
/** How long GET_VRING_BASE (and a graceful stop) waits for a queue's requests on the bdev. */
const DRAIN_TIMEOUT_MS = 10_000;

/** A region's mapping: an mmap of its own, or a place in the wasm guest window. */
interface Unmappable {
  unmap(): void;
}

/** Options of a vhost-user-blk device. */
export interface VhostBlkOptions {
  registry: BdevRegistry;
  reactor: Reactor;
  bdevName: string;
  numQueues: number;
  readOnly: boolean;
  log: (msg: string) => void;
  /** Longest wait for a queue's bdev requests when it stops cleanly; default 10 s. */
  drainTimeoutMs?: number;
}

/** Which queue and slot a BdevIo serves: made once per slot when a queue starts. */
class SlotRef {
  /** The memory epoch the I/O was submitted in (set at each submission: see the module note). */
  epoch = 0;
  /**
   * @param slot the request slot; a range-pool I/O serves whichever request took it,
   *   so its slot is set at each submission too
   */
  constructor(readonly bq: BlkQueue, readonly index: number, public slot: number) {}
}

/** One started virtqueue with its requests. */
class BlkQueue {
  readonly q: SplitVirtqueue;
  readonly reqs: BlkRequest[] = [];
  readonly ios: BdevIo[] = [];
  readonly heads: Int32Array;
  readonly iovs: Uint8Array[][] = [];
  readonly free: number[] = [];
  /** Per request slot, DISCARD / WRITE_ZEROES: next range to issue, I/Os out, worst status. */
  readonly rangeNext: Int32Array;
  readonly rangePending: Int32Array;
  readonly rangeStatus: Uint8Array;
  /** Per request slot: 1 while a write-through write's flush is on the bdev. */
  readonly flushing: Uint8Array;
  /** Extra BdevIos so one request's ranges can be on the bdev together. */
  readonly rangePool: BdevIo[] = [];
  /** Guest memory slots holding the descriptor table, available and used rings. */
  readonly ringRegions: number[];
  inFlight = 0;
  callFd: number;
  stopped = false;
  readonly kickBuf = new Uint8Array(8);
  /** The WASM walker while every guest region lies in the wasm guest window, else null. */
  walker: WasmVirtqWalker | null = null;
  /** Guest address of the descriptor table (the walker's configuration). */
  descAddr = 0;
  // ---- hot upgrade: inflight tracking and clean stop ----
  /** This queue's region of the inflight area (INFLIGHT_SHMFD), or null. */
  inflight: InflightQueue | null = null;
  /** No new requests are taken: the queue is stopping once `inFlight` reaches 0. */
  draining = false;
  /** Ends a pending drain: `true` once its requests are all on the used ring. */
  drained: ((complete: boolean) => void) | null = null;
  /**
   * The ring was last found empty after avail_event was published, so the driver kicks for
   * anything new. While false (a full queue stopped taking requests), the poller must keep
   * looking even with nothing in flight: under EVENT_IDX the driver will not kick.
   */
  kickArmed = false;

  constructor(q: SplitVirtqueue, num: number, callFd: number | null, ringRegions: number[]) {
    this.q = q;
    this.heads = new Int32Array(num);
    this.rangeNext = new Int32Array(num);
    this.rangePending = new Int32Array(num);
    this.rangeStatus = new Uint8Array(num);
    this.flushing = new Uint8Array(num);
    this.ringRegions = ringRegions;
    this.callFd = callFd ?? -1;
    for (let i = num - 1; i >= 0; i--) this.free.push(i);
  }
}

/** A vhost-user-blk device on one bdev. */
export class VhostBlkBackend implements VhostUserBackend {
  readonly features: bigint;
  readonly protocolFeatures: bigint = featureBit(P.MQ) | featureBit(P.REPLY_ACK) |
    featureBit(P.CONFIG) | featureBit(P.INFLIGHT_SHMFD) | featureBit(P.LOG_SHMFD) |
    featureBit(P.CONFIGURE_MEM_SLOTS);
  readonly numQueues: number;
  readonly maxQueueSize = MAX_QUEUE_SIZE;
  readonly maxMemSlots = MEM_SLOTS;
  readonly #o: VhostBlkOptions;
  readonly #desc: BdevDesc;
  readonly #ch: BdevChannel;
  readonly #blockSize: number;
  readonly #capacitySectors: number;
  #negotiated = 0n;
  #memory = new GuestMemory([], MEM_SLOT_CAPACITY);
  /** Our mapping of each memory slot, and the front-end's mmap offset of it. */
  #mappings: (Unmappable | null)[] = new Array<Unmappable | null>(MEM_SLOT_CAPACITY).fill(null);
  /** The cache mode the driver sees (CONFIG_WCE): false = write through, flush after writes. */
  #writeback = true;
  /** Requests parsed by the WASM walker and by the TypeScript one (logged at close). */
  #parsedWasm = 0;
  #parsedTs = 0;
  readonly #mmapOffsets = new Float64Array(MEM_SLOT_CAPACITY);
  /** The epoch new I/Os count in, and the I/Os in flight per epoch (at epoch % EPOCHS). */
  #epoch = 0;
  readonly #epochIo = new Int32Array(EPOCHS);
  /** Removed regions still mapped: slot and the last epoch whose I/Os may use them. */
  readonly #retired: { slot: number; epoch: number }[] = [];
  #queues: (BlkQueue | null)[] = [];
  readonly #limits: BlkLimits;
  readonly #cqeHandler: number;
  readonly #poller: string;
  readonly #id: Uint8Array;
  /** Log prefix naming the device: several controllers share one log. */
  readonly #tag: string;
  /** The dirty log of live migration (mapped by SET_LOG_BASE). */
  readonly #dirty: DirtyLog;
  /** VHOST_F_LOG_ALL negotiated: log every write into guest memory. */
  #logAll = false;

  constructor(o: VhostBlkOptions) {
    this.#o = o;
    this.numQueues = o.numQueues;
    this.#desc = o.registry.open(o.bdevName, !o.readOnly);
    this.#ch = this.#desc.getIoChannel(o.reactor);
    const b = this.#desc.bdev;
    this.#blockSize = b.blockSize;
    this.#capacitySectors = (b.numBlocks * b.blockSize) / VIRTIO_BLK_SECTOR_SIZE;
    const bits = [
      VIRTIO_F_VERSION_1,
      VIRTIO_F_INDIRECT_DESC,
      VIRTIO_F_EVENT_IDX,
      VIRTIO_BLK_F_SEG_MAX,
      VIRTIO_BLK_F_BLK_SIZE,
      VIRTIO_BLK_F_FLUSH,
      VIRTIO_BLK_F_MQ,
      VIRTIO_BLK_F_TOPOLOGY,
      VIRTIO_BLK_F_CONFIG_WCE,
    ];
    // We can log our writes for live migration (dirty_log.ts).
    bits.push(VHOST_F_LOG_ALL);
    if (o.readOnly) bits.push(VIRTIO_BLK_F_RO);
    if (b.ioTypeSupported(3)) bits.push(VIRTIO_BLK_F_DISCARD);
    if (b.ioTypeSupported(5)) bits.push(VIRTIO_BLK_F_WRITE_ZEROES);
    this.features = featureMask(...bits);
    this.#limits = {
      capacitySectors: this.#capacitySectors,
      readOnly: o.readOnly,
      flush: true,
      discard: b.ioTypeSupported(3),
      writeZeroes: b.ioTypeSupported(5),
      maxDiscardSectors: 0x3fffff,
      maxDiscardSeg: RANGES_MAX,
      maxWriteZeroesSectors: 0x3fffff,
      maxWriteZeroesSeg: RANGES_MAX,
    };
    this.#id = new TextEncoder().encode(b.name.slice(0, 20));
    this.#tag = `vhost-blk ${b.name}`;
    this.#dirty = new DirtyLog(`vhost-blk ${b.name}`, o.log);
    this.#cqeHandler = o.reactor.registerCqeHandler(this.#onKick);
    this.#poller = pollerName(`vhost-blk:${b.name}`);
    o.reactor.addPoller(this.#poller, this.#poll);
  }

  setFeatures(features: bigint): void {
    this.#negotiated = features;
    const logAll = (features & featureBit(VHOST_F_LOG_ALL)) !== 0n;
    if (logAll !== this.#logAll) {
      this.#logAll = logAll;
      this.#o.log(
        `vhost-blk ${this.#desc.bdev.name}: dirty logging ${
          logAll ? "on" : `off (${this.#dirty.summary()})`
        }`,
      );
    }
  }

  setLogBase(log: LogDescription, fd: number): void {
    this.#dirty.setBase(fd, log.mmapSize, log.mmapOffset);
    this.#o.log(
      `vhost-blk ${this.#desc.bdev.name}: dirty log of ${log.mmapSize} bytes mapped ` +
        `(covers ${log.mmapSize * 8n * 4096n >> 20n} MiB of guest memory)`,
    );
  }

  setLogFd(fd: number): void {
    this.#dirty.setEventFd(fd);
  }

  /** Dirty log counters (tests, stats). */
  get dirtyLogStats(): DirtyLogStats {
    return this.#dirty.stats;
  }

  /**
   * Replaces the memory table. Regions identical to mapped ones (addresses,
   * size, mmap offset) are kept as they are, so queues running in them go on
   * (QEMU resends the whole table when one region changes); the others are
   * removed as by REM_MEM_REG and the new ones mapped. If the table is
   * refused, no region is left (as the session then believes).
   */
  setMemTable(regions: readonly MemoryRegion[], fds: number[]): void {
    const memory = this.#memory;
    const kept = new Set<number>();
    try {
      const fresh: number[] = [];
      for (const [i, r] of regions.entries()) {
        const n = regionNumbers(r, `SET_MEM_TABLE region ${i}`);
        const same = memory.activeSlots().find((slot) =>
          memory.regionGpa(slot) === n.gpa && memory.regionSize(slot) === n.size &&
          memory.regionUva(slot) === n.uva && this.#mmapOffsets[slot] === n.offset
        );
        if (same === undefined || kept.has(same)) fresh.push(i);
        else kept.add(same);
      }
      const gone = memory.activeSlots().filter((slot) => !kept.has(slot));
      this.#removeSlots(gone, "SET_MEM_TABLE");
      for (const i of fresh) {
        const fd = fds[i];
        if (fd === undefined) throw new Error(`SET_MEM_TABLE region ${i} came without an fd`);
        this.#mapRegion(regions[i] as MemoryRegion, fd, `SET_MEM_TABLE region ${i}`);
      }
    } catch (e) {
      this.#removeSlots(memory.activeSlots(), "a refused SET_MEM_TABLE");
      throw this.#refused(e);
    } finally {
      for (const fd of fds) sym.close(fd);
    }
  }

  addMemRegion(region: MemoryRegion, fd: number): void {
    try {
      this.#mapRegion(region, fd, "ADD_MEM_REG");
    } catch (e) {
      throw this.#refused(e);
    } finally {
      sym.close(fd);
    }
  }

  /** Logs why a memory message is refused (REPLY_ACK only tells the front-end "no"). */
  #refused(e: unknown): unknown {
    this.#o.log(`${this.#tag}: memory table refused: ${e instanceof Error ? e.message : e}`);
    return e;
  }

  removeMemRegion(region: MemoryRegion): void {
    const n = regionNumbers(region, "REM_MEM_REG");
    const slot = this.#memory.remove(n.gpa, n.size, n.uva);
    if (slot < 0) {
      throw this.#refused(
        new Error(
          `REM_MEM_REG: no region at guest address 0x${n.gpa.toString(16)} of ${n.size} bytes`,
        ),
      );
    }
    this.#retire([slot], "REM_MEM_REG");
  }

  /** Maps one region from the front-end's fd (the caller closes it) and adds it; its slot. */
  #mapRegion(region: MemoryRegion, fd: number, what: string): number {
    const n = regionNumbers(region, what);
    // Into the wasm guest window when it has room, so the WASM walker reads the rings in
    // place (wasm/guest_window.ts); else anywhere. mmap wants a page-aligned offset: map from
    // the page holding mmap_offset.
    const base = n.offset - (n.offset % PAGE_SIZE);
    let m: Unmappable;
    let bytes: Uint8Array;
    try {
      ensureWasmMemory();
      const w = guestWindow()?.map(fd, n.offset, n.size) ?? null;
      if (w !== null) {
        m = { unmap: () => w.release() };
        bytes = w.bytes;
      } else {
        const mapped = mapShared(fd, n.offset - base + n.size, base);
        m = mapped;
        bytes = mapped.bytes(n.offset - base, n.size);
      }
    } catch (e) {
      throw new Error(
        `${what}: cannot map ${n.size} bytes at offset ${n.offset} of the region's fd ` +
          `(guest address 0x${n.gpa.toString(16)}): ${e instanceof Error ? e.message : e}`,
      );
    }
    try {
      const slot = this.#memory.add({
        gpa: n.gpa,
        size: n.size,
        uva: n.uva,
        bytes,
      });
      this.#mappings[slot] = m;
      this.#mmapOffsets[slot] = n.offset;
      this.#refreshWalkers();
      this.#o.log(`${this.#tag}: guest memory added (${what}): ${describe(n.gpa, n.size)}`);
      return slot;
    } catch (e) {
      m.unmap();
      throw new Error(`${what}: ${e instanceof Error ? e.message : e}`);
    }
  }

  /** Takes active slots out of guest memory and retires them. */
  #removeSlots(slots: readonly number[], why: string): void {
    const memory = this.#memory;
    const removed: number[] = [];
    for (const slot of slots) {
      const r = memory.remove(
        memory.regionGpa(slot),
        memory.regionSize(slot),
        memory.regionUva(slot),
      );
      if (r >= 0) removed.push(r);
    }
    this.#retire(removed, why);
  }

  /**
   * Removed regions: stops the queues whose rings lie in them, closes the
   * current I/O epoch and unmaps each region once the I/Os that may use it
   * are done.
   */
  #retire(slots: readonly number[], why: string): void {
    if (slots.length === 0) return;
    for (const slot of slots) {
      const m = this.#memory;
      this.#o.log(
        `${this.#tag}: guest memory removed (${why}): ` +
          describe(m.regionGpa(slot), m.regionSize(slot)),
      );
    }
    for (let i = 0; i < this.#queues.length; i++) {
      const bq = this.#queues[i];
      if (bq === null || bq === undefined || bq.stopped) continue;
      const ring = bq.ringRegions.findIndex((r) => slots.includes(r));
      if (ring >= 0) {
        const name = ["descriptor table", "available ring", "used ring"][ring];
        this.#halt(i, `its ${name} lies in guest memory removed by ${why}`);
      }
    }
    this.#refreshWalkers();
    for (const slot of slots) this.#retired.push({ slot, epoch: this.#epoch });
    // I/Os from now on cannot reach the removed regions: they count in a new epoch,
    // once its counter is free (else they share this one, which only delays the unmap).
    const next = this.#epoch + 1;
    if (this.#epochIo[next % EPOCHS] === 0) this.#epoch = next;
    this.#reap();
  }

  /** Unmaps the removed regions no I/O in flight can use any more. */
  #reap(): void {
    // The oldest epoch with an I/O in flight (epochs before #epoch - EPOCHS + 1 have none).
    let oldest = this.#epoch + 1;
    for (let e = Math.max(0, this.#epoch - EPOCHS + 1); e <= this.#epoch; e++) {
      if ((this.#epochIo[e % EPOCHS] ?? 0) > 0) {
        oldest = e;
        break;
      }
    }
    const retired = this.#retired;
    let keep = 0;
    for (let i = 0; i < retired.length; i++) {
      const r = retired[i] as { slot: number; epoch: number };
      if (r.epoch < oldest) {
        this.#memory.release(r.slot);
        this.#mappings[r.slot]?.unmap();
        this.#mappings[r.slot] = null;
      } else {
        retired[keep++] = r;
      }
    }
    retired.length = keep;
  }

  startQueue(index: number, vring: Readonly<VringConfig>): void {
    const memory = this.#memory;
    if (memory.regionCount === 0) {
      throw new Error(`queue ${index} started before any guest memory was given`);
    }
    const gpa = (uva: bigint, len: number, what: string) => {
      const g = memory.uvaToGpa(Number(uva), len);
      if (g < 0) {
        throw new Error(
          `queue ${index}: ${what} address 0x${uva.toString(16)} is not in guest memory`,
        );
      }
      return g;
    };
    const n = vring.num;
    const eventIdx = (this.#negotiated & (1n << BigInt(VIRTIO_F_EVENT_IDX))) !== 0n;
    const rings = [
      gpa(vring.addr.descUserAddr, 16 * n, "descriptor table"),
      gpa(vring.addr.availUserAddr, 6 + 2 * n, "available ring"),
      gpa(vring.addr.usedUserAddr, 6 + 8 * n, "used ring"),
    ];
    const usedAddr = rings[2] as number;
    const { inflight, resubmit, lastAvailIdx } = this.#recoverInflight(index, vring, usedAddr);
    const q = SplitVirtqueue.create({
      size: n,
      descAddr: rings[0] as number,
      availAddr: rings[1] as number,
      usedAddr,
      memory,
      eventIdx,
      indirectDesc: (this.#negotiated & (1n << BigInt(VIRTIO_F_INDIRECT_DESC))) !== 0n,
      lastAvailIdx,
    });
    this.#logUsedRing(q, vring);
    // Where the rings live: a queue stops if one of these regions is removed.
    const at = new GuestAddress();
    const ringRegions = rings.map((addr) => {
      memory.translate(addr, 1, at);
      return at.region;
    });
    const bq = new BlkQueue(q, n, vring.callFd, ringRegions);
    bq.inflight = inflight;
    bq.descAddr = rings[0] as number;
    this.#attachWalker(bq);
    if (TRACE) {
      this.#o.log(
        `vhost-blk trace: start queue ${index} size ${n} kick ${vring.kickFd} call ${vring.callFd}`,
      );
    }
    for (let i = 0; i < n; i++) {
      bq.reqs.push(new BlkRequest(n, RANGES_MAX));
      bq.iovs.push([]);
      bq.ios.push(new BdevIo(this.#onIoDone, new SlotRef(bq, index, i)));
    }
    for (let i = 0; i < Math.min(n, RANGE_PARALLEL_REQS) * (RANGES_MAX - 1); i++) {
      bq.rangePool.push(new BdevIo(this.#onIoDone, new SlotRef(bq, index, -1)));
    }
    this.#queues[index] = bq;
    // Requests a previous back-end took and never returned go first, in the order it took them.
    for (const head of resubmit) this.#take(index, bq, head, memory);
    if (vring.kickFd !== null) this.#armKick(index, vring.kickFd);
    // Kicks that came while no back-end listened may be lost: look at the ring now.
    this.#serve(index, bq);
    this.#o.reactor.wake();
  }

  // ---- the WASM walker (wasm_walk.ts) ----

  /**
   * Gives `bq` a WASM walker configured with the current regions when all of
   * them lie in the wasm guest window (at most 8), else none (the TypeScript
   * walker serves it).
   */
  #attachWalker(bq: BlkQueue): void {
    const memory = this.#memory;
    const slots = memory.activeSlots();
    if (slots.length === 0 || slots.length > 8) return;
    const regions = slots.map((slot) => ({
      gpa: memory.regionGpa(slot),
      bytes: memory.bytes(slot),
      index: slot,
    }));
    if (!regions.every((r) => isInWasmMemory(r.bytes))) return;
    bq.walker = acquireVirtqWalker({
      size: bq.q.size,
      descAddr: bq.descAddr,
      indirectDesc: bq.q.indirectDesc,
      capacitySectors: this.#capacitySectors,
      regions,
    });
  }

  #detachWalker(bq: BlkQueue): void {
    if (bq.walker !== null) releaseVirtqWalker(bq.walker);
    bq.walker = null;
  }

  /**
   * The memory table changed: every walker gets the new regions (or goes),
   * so none ever translates an address of a removed region.
   */
  #refreshWalkers(): void {
    for (const bq of this.#queues) {
      if (bq === null || bq === undefined || bq.stopped) continue;
      this.#detachWalker(bq);
      this.#attachWalker(bq);
    }
  }

  // ---- hot upgrade: the inflight area and clean stops ----

  #inflightMap: Mapping | null = null;
  #inflightArea: InflightArea | null = null;

  /**
   * With an inflight area: checks queue `index`'s region against the ring and
   * returns what the previous back-end left in flight, and where to resume.
   * @throws {Error} naming the queue when the region is inconsistent
   */
  #recoverInflight(
    index: number,
    vring: Readonly<VringConfig>,
    usedAddr: number,
  ): { inflight: InflightQueue | null; resubmit: number[]; lastAvailIdx: number } {
    const area = this.#inflightArea;
    const memory = this.#memory;
    if (area === null) {
      return { inflight: null, resubmit: [], lastAvailIdx: vring.base };
    }
    const name = this.#desc.bdev.name;
    try {
      const iq = area.queue(index, vring.num);
      const at = new GuestAddress();
      if (!memory.translate(usedAddr, 4, at)) throw new Error("used ring is not in guest memory");
      const usedIdx = memory.view(at.region).getUint16(at.offset + 2, true);
      const heads = iq.recover(usedIdx);
      if (heads === null) return { inflight: iq, resubmit: [], lastAvailIdx: vring.base };
      const lastAvailIdx = (usedIdx + heads.length) & 0xffff;
      if (heads.length > 0 || lastAvailIdx !== vring.base) {
        this.#o.log(
          `vhost-blk ${name}: queue ${index}: resubmitting ${heads.length} in-flight request(s) ` +
            `from the inflight area (used idx ${usedIdx}, resuming the available ring at ` +
            `${lastAvailIdx}; the front-end said ${vring.base})`,
        );
      }
      return { inflight: iq, resubmit: heads, lastAvailIdx };
    } catch (e) {
      const msg = `vhost-blk ${name}: queue ${index}: bad inflight area: ${
        e instanceof Error ? e.message : e
      }`;
      this.#o.log(msg);
      throw new Error(msg);
    }
  }

  getInflightFd(numQueues: number, queueSize: number): InflightReply {
    this.#checkInflightShape(numQueues, queueSize);
    const bytes = inflightAreaBytes(numQueues, queueSize);
    const fd = memfdCreate("sluice-inflight", bytes);
    try {
      // Keep it mapped too: QEMU normally hands the same fd back with SET_INFLIGHT_FD.
      const m = mapShared(fd, bytes, 0);
      this.#setInflightArea(m, InflightArea.format(m.bytes(), numQueues, queueSize));
    } catch (e) {
      sym.close(fd);
      throw e;
    }
    return { fd, mmapSize: BigInt(bytes), mmapOffset: 0n };
  }

  setInflightFd(d: InflightDescription, fd: number): void {
    try {
      this.#checkInflightShape(d.numQueues, d.queueSize);
      const need = inflightAreaBytes(d.numQueues, d.queueSize);
      const size = Number(d.mmapSize);
      const off = Number(d.mmapOffset);
      if (!Number.isSafeInteger(size) || size < need || size > need + (1 << 20)) {
        throw new Error(
          `SET_INFLIGHT_FD mmap_size ${d.mmapSize} does not fit ${d.numQueues} queue(s) ` +
            `of ${d.queueSize} (${need} bytes)`,
        );
      }
      if (!Number.isSafeInteger(off) || off < 0 || off > 1 << 30) {
        throw new Error(`SET_INFLIGHT_FD mmap_offset ${d.mmapOffset} is out of range`);
      }
      const started = this.#queues.findIndex((q) => q !== null && q !== undefined);
      if (started >= 0) throw new Error(`SET_INFLIGHT_FD while queue ${started} is started`);
      // Map from offset 0 so an offset that is not page-aligned still works; mapShared
      // refuses a range past the end of the file (which would SIGBUS us).
      const m = mapShared(fd, off + size, 0);
      try {
        this.#setInflightArea(m, new InflightArea(m.bytes(off, size), d.numQueues, d.queueSize));
      } catch (e) {
        m.unmap();
        throw e;
      }
    } finally {
      sym.close(fd);
    }
  }

  #checkInflightShape(numQueues: number, queueSize: number): void {
    if (numQueues < 1 || numQueues > this.numQueues) {
      throw new Error(`inflight area for ${numQueues} queues; the device has ${this.numQueues}`);
    }
    if (queueSize < 1 || queueSize > MAX_QUEUE_SIZE || (queueSize & (queueSize - 1)) !== 0) {
      throw new Error(
        `inflight area for queue size ${queueSize}: not a power of two up to ${MAX_QUEUE_SIZE}`,
      );
    }
  }

  #setInflightArea(m: Mapping, area: InflightArea): void {
    this.#inflightMap?.unmap();
    this.#inflightMap = m;
    this.#inflightArea = area;
  }

  #dropInflightArea(): void {
    this.#inflightMap?.unmap();
    this.#inflightMap = null;
    this.#inflightArea = null;
  }

  /**
   * Stops taking requests from queue `index` and resolves once every request
   * it has on the bdev is on the used ring and the driver has been signalled
   * (GET_VRING_BASE and graceful shutdown come here before stopQueue). A bdev
   * that does not answer within the drain timeout is logged and left: its
   * requests stay in flight (and in the inflight area, for the next start).
   */
  drainQueue(index: number): Promise<void> {
    const bq = this.#queues[index];
    if (bq === null || bq === undefined || bq.stopped) return Promise.resolve();
    bq.draining = true;
    if (bq.inFlight === 0) return Promise.resolve();
    const waiting = bq.inFlight;
    const name = this.#desc.bdev.name;
    const timeoutMs = this.#o.drainTimeoutMs ?? DRAIN_TIMEOUT_MS;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        bq.drained = null;
        this.#o.log(
          `vhost-blk ${name}: queue ${index}: ${bq.inFlight} of ${waiting} request(s) still ` +
            `on the bdev after ${timeoutMs} ms; stopping without them (they stay in flight)`,
        );
        resolve();
      }, timeoutMs);
      bq.drained = (complete: boolean) => {
        clearTimeout(timer);
        bq.drained = null;
        if (!complete) {
          resolve(); // stopped meanwhile (the front-end went away): nothing more to wait for
          return;
        }
        // The completions may all have been suppressed by EVENT_IDX: one more interrupt is
        // harmless, a missed one would leave the driver waiting on a stopped queue.
        if (bq.callFd >= 0) sym.write(bq.callFd, this.#one, 8n);
        this.#o.log(
          `vhost-blk ${name}: queue ${index}: drained ${waiting} request(s) before stopping`,
        );
        resolve();
      };
    });
  }

  #kickFds: number[] = [];
  /** I/Os on the bdev now, across queues: the channel closes only when none are left. */
  #ioInFlight = 0;
  #closing = false;

  #armKick(index: number, fd: number): void {
    this.#kickFds[index] = fd;
    const r = this.#o.reactor;
    r.ring.prepPollAdd(fd, POLLIN, Reactor.userData(this.#cqeHandler, index), true);
    r.wake();
  }

  readonly #onKick = (tag: number, res: number, flags: number): void => {
    if (TRACE) this.#o.log(`vhost-blk trace: kick queue ${tag} res ${res} flags ${flags}`);
    const bq = this.#queues[tag];
    const fd = this.#kickFds[tag];
    if (bq === null || bq === undefined || fd === undefined || bq.stopped) return;
    if (res >= 0) sym.read(fd, bq.kickBuf, 8n); // drain the eventfd counter
    // Multishot polls end on their own sometimes: re-arm when the kernel says so.
    if ((flags & 2) === 0 && !bq.stopped) this.#armKick(tag, fd);
    this.#serve(tag, bq);
  };

  updateQueue(index: number, vring: Readonly<VringConfig>): void {
    const bq = this.#queues[index];
    if (!bq) return;
    const callFd = vring.callFd ?? -1;
    if (callFd !== bq.callFd && callFd >= 0 && !bq.stopped) {
      // QEMU sends SET_VRING_CALL after SET_VRING_KICK started the queue: what completed in
      // between (resubmitted requests after a restart, above all) was signalled to no one, and
      // EVENT_IDX would not signal it again. One interrupt on the new fd is harmless.
      sym.write(callFd, this.#one, 8n);
    }
    bq.callFd = callFd;
    this.#logUsedRing(bq.q, vring);
  }

  /** VHOST_VRING_F_LOG: log the ring's used-ring writes at log_guest_addr. */
  #logUsedRing(q: SplitVirtqueue, vring: Readonly<VringConfig>): void {
    const on = (vring.addr.flags & (1 << VHOST_VRING_F_LOG)) !== 0;
    // An address past 2^53 cannot be logged: mark() reports it once.
    const at = vring.addr.logGuestAddr > BigInt(Number.MAX_SAFE_INTEGER)
      ? Number.MAX_SAFE_INTEGER
      : Number(vring.addr.logGuestAddr);
    q.logUsedRing(on ? this.#dirty : null, at);
  }

  stopQueue(index: number): number {
    const bq = this.#queues[index];
    if (bq === null || bq === undefined) return 0;
    bq.stopped = true;
    bq.drained?.(false);
    if (bq.inFlight > 0 && !this.#closing) {
      this.#o.log(
        `vhost-blk ${this.#desc.bdev.name}: queue ${index} stopped with ${bq.inFlight} ` +
          `request(s) on the bdev; their completions are dropped${
            bq.inflight === null ? "" : " (they stay in the inflight area)"
          }`,
      );
    }
    this.#queues[index] = null;
    this.#detachWalker(bq);
    this.#cancelKick(index);
    // Requests still on the bdev complete into a stopped queue and are dropped: with
    // inflight tracking they stay marked in the area and the next start resubmits them.
    return bq.q.lastAvailIdx;
  }

  #cancelKick(index: number): void {
    const r = this.#o.reactor;
    if (this.#kickFds[index] !== undefined) {
      // Cancel the kick poll; its CQEs (and the cancel's own) find no queue and are ignored.
      r.ring.prepPollRemove(
        Reactor.userData(this.#cqeHandler, index),
        Reactor.userData(this.#cqeHandler, 0xffff),
      );
      delete this.#kickFds[index];
      r.wake();
    }
  }

  /**
   * Stops serving a started queue the front-end or guest made unusable: it
   * takes no new requests, its requests in flight are dropped when they come
   * back, and GET_VRING_BASE later returns where it stopped.
   */
  /** Start of the current one-second window of {@link #guestLog}, lines in it, lines dropped. */
  #guestLogWindow = 0;
  #guestLogLines = 0;
  #guestLogDropped = 0;

  /**
   * Logs a line a guest's bad request caused, at most GUEST_LOG_PER_SECOND a
   * second per device: a guest must not be able to flood the appliance's log.
   * What was dropped is counted in the next line that gets through.
   */
  #guestLog(line: string): void {
    const now = Date.now();
    if (now - this.#guestLogWindow >= 1000) {
      this.#guestLogWindow = now;
      this.#guestLogLines = 0;
    }
    if (this.#guestLogLines >= GUEST_LOG_PER_SECOND) {
      this.#guestLogDropped++;
      return;
    }
    this.#guestLogLines++;
    const dropped = this.#guestLogDropped;
    this.#guestLogDropped = 0;
    this.#o.log(
      dropped > 0 ? `${line} (${dropped} similar line(s) dropped before this one)` : line,
    );
  }

  #halt(index: number, reason: string): void {
    const bq = this.#queues[index];
    if (bq === null || bq === undefined || bq.stopped) return;
    bq.stopped = true;
    this.#detachWalker(bq);
    this.#cancelKick(index);
    this.#o.log(`${this.#tag}: queue ${index} stopped: ${reason}`);
  }

  getConfig(offset: number, size: number): Uint8Array {
    const cfg = encodeBlkConfig({
      capacitySectors: this.#capacitySectors,
      sizeMax: 0,
      segMax: SEG_MAX,
      geometry: { cylinders: 0, heads: 0, sectors: 0 },
      blkSize: this.#blockSize,
      topology: { physicalBlockExp: 0, alignmentOffset: 0, minIoSize: 1, optIoSize: 0 },
      writeback: this.#writeback ? 1 : 0,
      numQueues: this.numQueues,
      maxDiscardSectors: this.#limits.maxDiscardSectors,
      maxDiscardSeg: RANGES_MAX,
      discardSectorAlignment: this.#blockSize / VIRTIO_BLK_SECTOR_SIZE,
      maxWriteZeroesSectors: this.#limits.maxWriteZeroesSectors,
      maxWriteZeroesSeg: RANGES_MAX,
      writeZeroesMayUnmap: 1,
    });
    // SPDK's virtio-user asks for 256 bytes: answer with zeroes past the struct.
    const out = new Uint8Array(size);
    if (offset < VIRTIO_BLK_CONFIG_BYTES) {
      out.set(cfg.subarray(offset, Math.min(VIRTIO_BLK_CONFIG_BYTES, offset + size)));
    }
    return out;
  }

  /**
   * VIRTIO_BLK_F_CONFIG_WCE: the driver may switch the cache mode, the one
   * writable field (`writeback`, offset 32). In write-through mode every
   * write is followed by a flush of the bdev before it completes.
   */
  setConfig(offset: number, data: Uint8Array): void {
    if ((this.#negotiated & (1n << BigInt(VIRTIO_BLK_F_CONFIG_WCE))) === 0n) {
      throw new Error("SET_CONFIG without VIRTIO_BLK_F_CONFIG_WCE: nothing is writable");
    }
    const v = data[0];
    if (offset !== WRITEBACK_OFFSET || data.byteLength !== 1 || (v !== 0 && v !== 1)) {
      throw new Error(
        `SET_CONFIG may only set writeback (offset ${WRITEBACK_OFFSET}, 1 byte, 0 or 1); got ` +
          `offset ${offset}, ${data.byteLength} byte(s)`,
      );
    }
    if ((v === 1) !== this.#writeback) {
      this.#writeback = v === 1;
      this.#o.log(`${this.#tag}: cache mode ${this.#writeback ? "write back" : "write through"}`);
    }
  }

  reset(): void {
    this.#queues = [];
    this.#negotiated = 0n;
    this.#writeback = true;
    this.#logAll = false;
    // QEMU frees its inflight area on a device reset and sends a new one at the next start.
    this.#dropInflightArea();
  }

  // ---- data path ----

  /** While requests are in flight, poll the rings (kicks may be suppressed). */
  readonly #poll = (): number => {
    let work = 0;
    for (let i = 0; i < this.#queues.length; i++) {
      const bq = this.#queues[i];
      // Also look at idle rings while the reactor spins (it parks after ~100 us without work):
      // a driver at QD1 submits its next request within microseconds of a completion, and
      // finding it here saves the kick's wake-up (measured: p50 ~15 us -> ~7 us at QD1).
      if (bq && (bq.inFlight > 0 || !bq.kickArmed || bq.q.hasAvail())) work += this.#serve(i, bq);
    }
    return work;
  };

  #serve(index: number, bq: BlkQueue): number {
    const memory = this.#memory;
    if (bq.stopped || bq.draining || bq.q.broken) return 0;
    let work = 0;
    for (;;) {
      if (bq.free.length === 0) break;
      let head = this.#pop(index, bq);
      if (head === POP_SKIPPED) continue;
      if (head === POP_STOPPED) return work;
      if (head < 0) {
        // Ask for a kick at the next new buffer (EVENT_IDX), then look again:
        // the driver may have added one between our read and that store.
        bq.q.setAvailEvent(bq.q.lastAvailIdx);
        head = this.#pop(index, bq);
        if (head === POP_SKIPPED) continue;
        if (head === POP_STOPPED) return work;
        if (head < 0) {
          bq.kickArmed = true;
          break;
        }
      }
      bq.kickArmed = false;
      work++;
      bq.inflight?.setInflight(head);
      this.#take(index, bq, head, memory);
    }
    return work;
  }

  /**
   * The next available head, -1 when none, POP_SKIPPED when the entry named
   * a head out of range (consumed and dropped: it cannot be returned), or
   * POP_STOPPED when the available index is impossible (the queue stops).
   */
  #pop(index: number, bq: BlkQueue): number {
    try {
      return bq.q.popAvail();
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      if (bq.q.broken) {
        this.#halt(index, e.message);
        return POP_STOPPED;
      }
      this.#guestLog(`${this.#tag}: queue ${index}: available entry dropped: ${e.message}`);
      return POP_SKIPPED;
    }
  }

  /** Starts the request whose chain begins at `head` (taken and, if tracked, marked in flight). */
  #take(index: number, bq: BlkQueue, head: number, memory: GuestMemory): void {
    const slot = bq.free.pop() as number;
    bq.heads[slot] = head;
    const req = bq.reqs[slot] as BlkRequest;
    if (bq.walker !== null && parseBlkWithWasm(bq.walker, head, req)) {
      this.#parsedWasm++;
      this.#submit(bq, slot, req, memory);
      return;
    }
    // Everything the WASM walker does not take (wasm_walk.ts), and the reasons for refusals.
    this.#parsedTs++;
    try {
      bq.q.walkChain(head);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      // A bad chain fails this request only; we cannot know its status byte.
      this.#guestLog(
        `${this.#tag}: queue ${index}: bad descriptor chain at head ${head}: ${e.message}`,
      );
      bq.free.push(slot);
      this.#pushUsed(bq, head, 0);
      this.#notify(bq);
      return;
    }
    const st = req.parse(bq.q, this.#limits);
    if (st !== VIRTIO_BLK_S_OK) {
      this.#finish(bq, slot, st === BLK_NO_STATUS ? VIRTIO_BLK_S_IOERR : st);
      return;
    }
    this.#submit(bq, slot, req, memory);
  }

  /**
   * Puts `head` on the used ring, with the spec's inflight bookkeeping around
   * it: a crash before the ring update leaves the head in flight (resubmitted
   * later), one after it is repaired from last_batch_head at the next start.
   */
  #pushUsed(bq: BlkQueue, head: number, len: number): void {
    const inflight = bq.inflight;
    if (inflight === null) {
      bq.q.pushUsed(head, len);
      return;
    }
    inflight.beforeUsed(head);
    bq.q.pushUsed(head, len);
    inflight.afterUsed(head, bq.q.usedIdx);
  }

  #submit(bq: BlkQueue, slot: number, req: BlkRequest, memory: GuestMemory): void {
    const io = bq.ios[slot] as BdevIo;
    const bs = this.#blockSize;
    const perBlock = bs / VIRTIO_BLK_SECTOR_SIZE;
    switch (req.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT: {
        if (req.sector % perBlock !== 0 || req.dataBytes % bs !== 0) {
          this.#finish(bq, slot, VIRTIO_BLK_S_IOERR);
          return;
        }
        const iovs = bq.iovs[slot] as Uint8Array[];
        for (let i = 0; i < req.dataCount; i++) {
          const off = req.dataOffset[i] as number;
          iovs[i] = memory.bytes(req.dataRegion[i] as number).subarray(
            off,
            off + (req.dataLen[i] as number),
          );
        }
        this.#issue(bq, slot, io);
        if (req.type === VIRTIO_BLK_T_IN) {
          this.#ch.readv(io, iovs, req.dataCount, req.sector / perBlock, req.dataBytes / bs);
        } else this.#ch.writev(io, iovs, req.dataCount, req.sector / perBlock, req.dataBytes / bs);
        return;
      }
      case VIRTIO_BLK_T_FLUSH:
        this.#issue(bq, slot, io);
        this.#ch.flush(io);
        return;
      case VIRTIO_BLK_T_GET_ID:
        req.writeId(memory, this.#id);
        this.#finish(bq, slot, VIRTIO_BLK_S_OK);
        return;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        // blk.ts checked flags, sizes and bounds of every range; the bdev works in
        // blocks, so each range must also be block-aligned. Nothing is issued unless
        // all are.
        for (let i = 0; i < req.rangeCount; i++) {
          if (
            (req.rangeSector[i] as number) % perBlock !== 0 ||
            (req.rangeSectors[i] as number) % perBlock !== 0
          ) {
            this.#finish(bq, slot, VIRTIO_BLK_S_IOERR);
            return;
          }
        }
        bq.rangeNext[slot] = 0;
        bq.rangePending[slot] = 0;
        bq.rangeStatus[slot] = VIRTIO_BLK_S_OK;
        if (!this.#issueRange(bq, slot, io)) {
          this.#finish(bq, slot, VIRTIO_BLK_S_OK); // every range was empty
          return;
        }
        // More ranges go out together while the queue's pool has I/Os; the rest
        // follow on this request's own I/Os as they complete.
        while (bq.rangePool.length > 0 && bq.rangeNext[slot] !== -1) {
          const extra = bq.rangePool.pop() as BdevIo;
          if (!this.#issueRange(bq, slot, extra)) {
            bq.rangePool.push(extra);
            break;
          }
        }
        return;
      }
    }
    this.#finish(bq, slot, VIRTIO_BLK_S_UNSUPP);
  }

  /** Counts an I/O about to be submitted for request `slot` (its epoch, the queue's in-flight). */
  #issue(bq: BlkQueue, slot: number, io: BdevIo): void {
    const e = this.#epoch % EPOCHS;
    this.#epochIo[e] = (this.#epochIo[e] ?? 0) + 1;
    const ref = io.ctx as SlotRef;
    ref.slot = slot;
    ref.epoch = e;
    bq.inFlight++;
    this.#ioInFlight++;
  }

  /**
   * Submits the next non-empty range of DISCARD / WRITE_ZEROES request `slot`
   * on `io`; false (and `rangeNext` -1) when no range is left.
   */
  #issueRange(bq: BlkQueue, slot: number, io: BdevIo): boolean {
    const req = bq.reqs[slot] as BlkRequest;
    const perBlock = this.#blockSize / VIRTIO_BLK_SECTOR_SIZE;
    let i = bq.rangeNext[slot] as number;
    if (i < 0) return false;
    while (i < req.rangeCount && req.rangeSectors[i] === 0) i++;
    if (i >= req.rangeCount) {
      bq.rangeNext[slot] = -1;
      return false;
    }
    bq.rangeNext[slot] = i + 1;
    bq.rangePending[slot] = (bq.rangePending[slot] ?? 0) + 1;
    this.#issue(bq, slot, io);
    const offset = (req.rangeSector[i] as number) / perBlock;
    const blocks = (req.rangeSectors[i] as number) / perBlock;
    if (req.type === VIRTIO_BLK_T_DISCARD) this.#ch.unmap(io, offset, blocks);
    else this.#ch.writeZeroes(io, offset, blocks);
    return true;
  }

  readonly #onIoDone = (io: BdevIo): void => {
    const ref = io.ctx as SlotRef;
    const epoch = ref.epoch;
    this.#ioInFlight--;
    if (this.#closing) {
      this.#epochIo[epoch] = (this.#epochIo[epoch] ?? 0) - 1;
      if (this.#ioInFlight === 0) this.#release();
      return;
    }
    const bq = ref.bq;
    bq.inFlight--;
    if (bq.stopped) {
      // A stopped queue's rings belong to the front-end again (or are gone: #halt): drop
      // (the request stays in flight). Its read data did land in guest memory, though:
      // while migrating, say so.
      if (this.#logAll) this.#logWrites(bq.reqs[ref.slot] as BlkRequest, this.#memory, false);
    } else {
      this.#ioDone(bq, ref.slot, io);
      if (bq.inFlight === 0 && bq.drained !== null) bq.drained(true);
    }
    // Only now (the status byte is written) may a region removed meanwhile go.
    this.#epochIo[epoch] = (this.#epochIo[epoch] ?? 0) - 1;
    if (this.#retired.length > 0) this.#reap();
  };

  #ioDone(bq: BlkQueue, slot: number, io: BdevIo): void {
    const status = io.status === BdevIoStatus.Success ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    const req = bq.reqs[slot] as BlkRequest;
    if (req.type !== VIRTIO_BLK_T_DISCARD && req.type !== VIRTIO_BLK_T_WRITE_ZEROES) {
      if (
        req.type === VIRTIO_BLK_T_OUT && !this.#writeback && status === VIRTIO_BLK_S_OK &&
        bq.flushing[slot] === 0
      ) {
        // Write through: the write is acknowledged once the bdev's cache is flushed too.
        bq.flushing[slot] = 1;
        this.#issue(bq, slot, io);
        this.#ch.flush(io);
        return;
      }
      bq.flushing[slot] = 0;
      this.#finish(bq, slot, status);
      return;
    }
    // One range of several: the request ends with the worst status once all are done.
    if (status !== VIRTIO_BLK_S_OK) bq.rangeStatus[slot] = status;
    bq.rangePending[slot] = (bq.rangePending[slot] ?? 0) - 1;
    if (this.#issueRange(bq, slot, io)) return;
    if (io !== bq.ios[slot]) bq.rangePool.push(io);
    if (bq.rangePending[slot] === 0) this.#finish(bq, slot, bq.rangeStatus[slot] as number);
  }

  #finish(bq: BlkQueue, slot: number, status: number): void {
    if (bq.stopped) {
      // A stopped queue's rings may be gone: the request is dropped (see #halt).
      bq.free.push(slot);
      return;
    }
    const memory = this.#memory;
    const req = bq.reqs[slot] as BlkRequest;
    req.writeStatus(memory, status);
    if (this.#logAll) this.#logWrites(req, memory);
    // The virtqueue logs the used-ring writes itself (VHOST_VRING_F_LOG).
    this.#pushUsed(bq, bq.heads[slot] as number, req.usedLength(status));
    bq.free.push(slot);
    this.#notify(bq);
  }

  /**
   * Marks what the request wrote into guest memory: the data of an IN or
   * GET_ID (whatever its status: a failed read may have filled part of the
   * buffers) and, with `status`, the status byte. Called after those writes.
   */
  #logWrites(req: BlkRequest, memory: GuestMemory, status = true): void {
    const log = this.#dirty;
    if (req.type === VIRTIO_BLK_T_IN || req.type === VIRTIO_BLK_T_GET_ID) {
      for (let i = 0; i < req.dataCount; i++) {
        const region = req.dataRegion[i] as number;
        log.mark(
          memory.regionGpa(region) + (req.dataOffset[i] as number),
          req.dataLen[i] as number,
        );
      }
    }
    if (status && req.statusRegion >= 0) {
      log.mark(memory.regionGpa(req.statusRegion) + req.statusOffset, 1);
    }
  }

  /** The 8-byte eventfd increment for a call notification, made once. */
  readonly #one = new Uint8Array(new BigUint64Array([1n]).buffer);

  #notify(bq: BlkQueue): void {
    const need = bq.q.needsNotification();
    if (TRACE) this.#o.log(`vhost-blk trace: completion, call fd ${bq.callFd}, notify ${need}`);
    if (bq.callFd >= 0 && need) sym.write(bq.callFd, this.#one, 8n);
    this.#dirty.signal();
  }

  /** Every mapping, removed regions' included: only once no I/O is in flight. */
  #unmapAll(): void {
    for (const m of this.#mappings) m?.unmap();
    this.#mappings.fill(null);
    this.#retired.length = 0;
    this.#memory = new GuestMemory([], MEM_SLOT_CAPACITY);
  }

  /**
   * Frees everything (the front-end is gone). Guest memory and the bdev
   * channel stay until the last I/O on them has come back.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#released.promise;
    this.#closing = true;
    if (this.#parsedWasm + this.#parsedTs > 0) {
      this.#o.log(
        `${this.#tag}: ${this.#parsedWasm + this.#parsedTs} requests, ` +
          `${this.#parsedWasm} parsed by the WASM walker`,
      );
    }
    const d = this.#dirty.stats;
    if (d.bases > 0) {
      this.#o.log(
        `vhost-blk ${this.#desc.bdev.name}: dirty log at close: ${this.#dirty.summary()}`,
      );
    }
    for (let i = 0; i < this.#queues.length; i++) this.stopQueue(i);
    this.#o.reactor.removePoller(this.#poller);
    if (this.#ioInFlight === 0) this.#release();
    return this.#released.promise;
  }

  /** Resolved once close() has released everything (the last bdev I/O came back). */
  readonly #released = Promise.withResolvers<void>();

  /** Requests on the bdev now, across queues. */
  get ioInFlight(): number {
    return this.#ioInFlight;
  }

  #release(): void {
    this.#dirty.close();
    this.#o.reactor.unregisterCqeHandler(this.#cqeHandler);
    this.#ch.close();
    this.#desc.close();
    this.#unmapAll();
    this.#dropInflightArea();
    this.#released.resolve();
  }
}

/** A region's numbers, checked to be safe integers (sizes above 2^53 are refused). */
function regionNumbers(
  r: MemoryRegion,
  what: string,
): { gpa: number; size: number; uva: number; offset: number } {
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  const fields: [string, bigint][] = [
    ["guest address", r.guestPhysAddr],
    ["size", r.memorySize],
    ["user address", r.userspaceAddr],
    ["mmap offset", r.mmapOffset],
  ];
  for (const [name, v] of fields) {
    if (v > max) throw new Error(`${what}: the region's ${name} 0x${v.toString(16)} is past 2^53`);
  }
  if (r.memorySize === 0n) throw new Error(`${what}: the region is empty`);
  if (r.guestPhysAddr + r.memorySize > max || r.userspaceAddr + r.memorySize > max) {
    throw new Error(`${what}: the region ends past 2^53`);
  }
  return {
    gpa: Number(r.guestPhysAddr),
    size: Number(r.memorySize),
    uva: Number(r.userspaceAddr),
    offset: Number(r.mmapOffset),
  };
}

/** A region for the log: guest physical range and size. */
function describe(gpa: number, size: number): string {
  const mib = size / (1 << 20);
  return `0x${gpa.toString(16)}-0x${(gpa + size - 1).toString(16)} (${
    Number.isInteger(mib) ? `${mib} MiB` : `${size} bytes`
  })`;
}

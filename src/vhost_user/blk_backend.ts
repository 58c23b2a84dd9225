/**
 * The vhost-user-blk device: serves a front-end's virtqueues from guest
 * memory through the bdev layer. The session (session.ts) turns protocol
 * messages into calls of this backend; the server (server.ts) owns the
 * socket.
 *
 * First version: split rings, indirect descriptors, EVENT_IDX, IN / OUT /
 * FLUSH / GET_ID / DISCARD / WRITE_ZEROES. Kicks are taken from the kick
 * eventfd through the reactor's io_uring (so a parked reactor wakes), and
 * the rings are polled while requests are in flight.
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
import { type Mapping, mapShared, memfdCreate } from "../../ffi/memory.ts";
import { sym } from "../../ffi/libc.ts";
import { Reactor } from "../reactor/reactor.ts";
import { GuestAddress, GuestMemory } from "../virtio/guest_memory.ts";
import { SplitVirtqueue } from "../virtio/virtqueue.ts";
import { VirtqueueError } from "../virtio/error.ts";
import {
  BLK_NO_STATUS,
  type BlkLimits,
  BlkRequest,
  encodeBlkConfig,
  featureMask,
  VIRTIO_BLK_CONFIG_BYTES,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
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
import type { InflightDescription, MemoryRegion } from "./messages.ts";
import { featureBit, VhostUserProtocolFeature as P } from "./messages.ts";
import type { InflightArea as InflightReply, VhostUserBackend, VringConfig } from "./session.ts";
import { InflightArea, inflightAreaBytes, InflightQueue } from "./inflight.ts";

const POLLIN = 0x001;
/** SLUICE_VHOST_TRACE=1 logs kicks and completions: for debugging a front-end. */
const TRACE = Deno.env.get("SLUICE_VHOST_TRACE") === "1";
/** Most segments per request offered (seg_max); below the queue size as QEMU does. */
const SEG_MAX = 126;
const MAX_QUEUE_SIZE = 1024;
const RANGES_MAX = 16;
/** How long GET_VRING_BASE (and a graceful stop) waits for a queue's requests on the bdev. */
const DRAIN_TIMEOUT_MS = 10_000;

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
  constructor(readonly bq: BlkQueue, readonly index: number, readonly slot: number) {}
}

/** One started virtqueue with its requests. */
class BlkQueue {
  readonly q: SplitVirtqueue;
  readonly reqs: BlkRequest[] = [];
  readonly ios: BdevIo[] = [];
  readonly heads: Int32Array;
  readonly iovs: Uint8Array[][] = [];
  readonly free: number[] = [];
  inFlight = 0;
  callFd: number;
  stopped = false;
  readonly kickBuf = new Uint8Array(8);
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

  constructor(q: SplitVirtqueue, num: number, callFd: number | null) {
    this.q = q;
    this.heads = new Int32Array(num);
    this.callFd = callFd ?? -1;
    for (let i = num - 1; i >= 0; i--) this.free.push(i);
  }
}

/** A vhost-user-blk device on one bdev. */
export class VhostBlkBackend implements VhostUserBackend {
  readonly features: bigint;
  readonly protocolFeatures: bigint = featureBit(P.MQ) | featureBit(P.REPLY_ACK) |
    featureBit(P.CONFIG) | featureBit(P.INFLIGHT_SHMFD);
  readonly numQueues: number;
  readonly maxQueueSize = MAX_QUEUE_SIZE;
  readonly #o: VhostBlkOptions;
  readonly #desc: BdevDesc;
  readonly #ch: BdevChannel;
  readonly #blockSize: number;
  readonly #capacitySectors: number;
  #negotiated = 0n;
  #memory: GuestMemory | null = null;
  #mappings: Mapping[] = [];
  #queues: (BlkQueue | null)[] = [];
  readonly #limits: BlkLimits;
  readonly #cqeHandler: number;
  readonly #poller: string;
  readonly #id: Uint8Array;

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
    ];
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
    this.#cqeHandler = o.reactor.registerCqeHandler(this.#onKick);
    this.#poller = pollerName(`vhost-blk:${b.name}`);
    o.reactor.addPoller(this.#poller, this.#poll);
  }

  setFeatures(features: bigint): void {
    this.#negotiated = features;
  }

  setMemTable(regions: readonly MemoryRegion[], fds: number[]): void {
    this.#unmapAll();
    const init = [];
    try {
      for (const [i, r] of regions.entries()) {
        const fd = fds[i] as number;
        const size = Number(r.memorySize);
        const off = Number(r.mmapOffset);
        // Map from offset 0 so an mmap_offset that is not page-aligned still works.
        const m = mapShared(fd, off + size, 0);
        this.#mappings.push(m);
        init.push({
          gpa: Number(r.guestPhysAddr),
          size,
          uva: Number(r.userspaceAddr),
          bytes: m.bytes(off, size),
        });
      }
      this.#memory = new GuestMemory(init);
    } finally {
      for (const fd of fds) sym.close(fd);
    }
  }

  addMemRegion(_region: MemoryRegion, fd: number): void {
    sym.close(fd);
    throw new Error("memory hot-plug (ADD_MEM_REG) is not offered by this backend");
  }

  removeMemRegion(_region: MemoryRegion): void {
    throw new Error("memory hot-plug (REM_MEM_REG) is not offered by this backend");
  }

  startQueue(index: number, vring: Readonly<VringConfig>): void {
    const memory = this.#memory;
    if (memory === null) throw new Error(`queue ${index} started before SET_MEM_TABLE`);
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
    const usedAddr = gpa(vring.addr.usedUserAddr, 6 + 8 * n, "used ring");
    const { inflight, resubmit, lastAvailIdx } = this.#recoverInflight(index, vring, usedAddr);
    const q = SplitVirtqueue.create({
      size: n,
      descAddr: gpa(vring.addr.descUserAddr, 16 * n, "descriptor table"),
      availAddr: gpa(vring.addr.availUserAddr, 6 + 2 * n, "available ring"),
      usedAddr,
      memory,
      eventIdx,
      indirectDesc: (this.#negotiated & (1n << BigInt(VIRTIO_F_INDIRECT_DESC))) !== 0n,
      lastAvailIdx,
    });
    const bq = new BlkQueue(q, n, vring.callFd);
    bq.inflight = inflight;
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
    this.#queues[index] = bq;
    // Requests a previous back-end took and never returned go first, in the order it took them.
    for (const head of resubmit) this.#take(index, bq, head, memory);
    if (vring.kickFd !== null) this.#armKick(index, vring.kickFd);
    // Kicks that came while no back-end listened may be lost: look at the ring now.
    this.#serve(index, bq);
    this.#o.reactor.wake();
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
    if (area === null || memory === null) {
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
    // Requests still on the bdev complete into a stopped queue and are dropped: with
    // inflight tracking they stay marked in the area and the next start resubmits them.
    return bq.q.lastAvailIdx;
  }

  getConfig(offset: number, size: number): Uint8Array {
    const cfg = encodeBlkConfig({
      capacitySectors: this.#capacitySectors,
      sizeMax: 0,
      segMax: SEG_MAX,
      geometry: { cylinders: 0, heads: 0, sectors: 0 },
      blkSize: this.#blockSize,
      topology: { physicalBlockExp: 0, alignmentOffset: 0, minIoSize: 1, optIoSize: 0 },
      writeback: 0,
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

  setConfig(): void {
    // Nothing is writable (no CONFIG_WCE).
  }

  reset(): void {
    this.#queues = [];
    this.#negotiated = 0n;
    // QEMU frees its inflight area on a device reset and sends a new one at the next start.
    this.#dropInflightArea();
  }

  // ---- data path ----

  /** While requests are in flight, poll the rings (kicks may be suppressed). */
  readonly #poll = (): number => {
    let work = 0;
    for (let i = 0; i < this.#queues.length; i++) {
      const bq = this.#queues[i];
      if (bq && (bq.inFlight > 0 || !bq.kickArmed)) work += this.#serve(i, bq);
    }
    return work;
  };

  #serve(index: number, bq: BlkQueue): number {
    const memory = this.#memory;
    if (memory === null || bq.stopped || bq.draining || bq.q.broken) return 0;
    let work = 0;
    for (;;) {
      if (bq.free.length === 0) break;
      let head: number;
      try {
        head = bq.q.popAvail();
      } catch (e) {
        this.#deviceError(index, e);
        return work;
      }
      if (head < 0) {
        // Ask for a kick at the next new buffer (EVENT_IDX), then look again:
        // the driver may have added one between our read and that store.
        bq.q.setAvailEvent(bq.q.lastAvailIdx);
        try {
          head = bq.q.popAvail();
        } catch (e) {
          this.#deviceError(index, e);
          return work;
        }
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

  /** Starts the request whose chain begins at `head` (taken and, if tracked, marked in flight). */
  #take(index: number, bq: BlkQueue, head: number, memory: GuestMemory): void {
    const slot = bq.free.pop() as number;
    bq.heads[slot] = head;
    const req = bq.reqs[slot] as BlkRequest;
    try {
      bq.q.walkChain(head);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      // A bad chain fails this request only; we cannot know its status byte.
      this.#o.log(
        `vhost-blk: queue ${index}: bad descriptor chain at head ${head}: ${e.message}`,
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
    this.#submit(index, bq, slot, req, memory);
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

  #submit(index: number, bq: BlkQueue, slot: number, req: BlkRequest, memory: GuestMemory): void {
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
        bq.inFlight++;
        this.#ioInFlight++;
        if (req.type === VIRTIO_BLK_T_IN) {
          this.#ch.readv(io, iovs, req.dataCount, req.sector / perBlock, req.dataBytes / bs);
        } else this.#ch.writev(io, iovs, req.dataCount, req.sector / perBlock, req.dataBytes / bs);
        return;
      }
      case VIRTIO_BLK_T_FLUSH:
        bq.inFlight++;
        this.#ioInFlight++;
        this.#ch.flush(io);
        return;
      case VIRTIO_BLK_T_GET_ID:
        req.writeId(memory, this.#id);
        this.#finish(bq, slot, VIRTIO_BLK_S_OK);
        return;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        // One range at a time is enough for Linux (max_*_seg ranges are rare); more: UNSUPP.
        if (req.rangeCount !== 1) {
          this.#finish(bq, slot, VIRTIO_BLK_S_UNSUPP);
          return;
        }
        const sector = req.rangeSector[0] as number;
        const n = req.rangeSectors[0] as number;
        if (sector % perBlock !== 0 || n % perBlock !== 0) {
          this.#finish(bq, slot, VIRTIO_BLK_S_IOERR);
          return;
        }
        bq.inFlight++;
        this.#ioInFlight++;
        if (req.type === VIRTIO_BLK_T_DISCARD) this.#ch.unmap(io, sector / perBlock, n / perBlock);
        else this.#ch.writeZeroes(io, sector / perBlock, n / perBlock);
        return;
      }
    }
    this.#finish(bq, slot, VIRTIO_BLK_S_UNSUPP);
    void index;
  }

  readonly #onIoDone = (io: BdevIo): void => {
    this.#ioInFlight--;
    if (this.#closing) {
      if (this.#ioInFlight === 0) this.#release();
      return;
    }
    const ref = io.ctx as SlotRef;
    const bq = ref.bq;
    bq.inFlight--;
    // A stopped queue's rings belong to the front-end again: drop (the request stays in flight).
    if (bq.stopped) return;
    this.#finish(
      bq,
      ref.slot,
      io.status === BdevIoStatus.Success ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR,
    );
    if (bq.inFlight === 0 && bq.drained !== null) bq.drained(true);
  };

  #finish(bq: BlkQueue, slot: number, status: number): void {
    const memory = this.#memory;
    const req = bq.reqs[slot] as BlkRequest;
    if (memory !== null) req.writeStatus(memory, status);
    this.#pushUsed(bq, bq.heads[slot] as number, req.usedLength(status));
    bq.free.push(slot);
    this.#notify(bq);
  }

  /** The 8-byte eventfd increment for a call notification, made once. */
  readonly #one = new Uint8Array(new BigUint64Array([1n]).buffer);

  #notify(bq: BlkQueue): void {
    const need = bq.q.needsNotification();
    if (TRACE) this.#o.log(`vhost-blk trace: completion, call fd ${bq.callFd}, notify ${need}`);
    if (bq.callFd >= 0 && need) sym.write(bq.callFd, this.#one, 8n);
  }

  #deviceError(index: number, e: unknown): void {
    this.#o.log(`vhost-blk: queue ${index} stopped: ${e instanceof Error ? e.message : e}`);
  }

  #unmapAll(): void {
    for (const m of this.#mappings) m.unmap();
    this.#mappings = [];
    this.#memory = null;
  }

  /**
   * Frees everything (the front-end is gone). Guest memory and the bdev
   * channel stay until the last I/O on them has come back.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#released.promise;
    this.#closing = true;
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
    this.#o.reactor.unregisterCqeHandler(this.#cqeHandler);
    this.#ch.close();
    this.#desc.close();
    this.#unmapAll();
    this.#dropInflightArea();
    this.#released.resolve();
  }
}

/**
 * A {@link PerfDevice} over one split virtqueue of a vhost-user-blk
 * back-end: what `sluice perf -r 'trtype:vhost-user path:...'` drives. It
 * plays the guest driver: virtio-blk IN/OUT requests in shared memory, the
 * available ring, kicks, and completions read from the used ring.
 *
 * Everything is laid out once, at construction: each job slot owns a
 * request header, a status byte and (with direct chains) three descriptors
 * 3s, 3s+1, 3s+2 chained header -> data -> status, or (indirect) descriptor
 * s pointing at its own three-entry table. An I/O rewrites only the header,
 * the data descriptor (address, length, direction) and the status byte,
 * then publishes the head: no allocation per I/O.
 *
 * Notifications:
 * - kicks go through the kick eventfd, batched: submit() only publishes,
 *   {@link poll} kicks once for everything published since the last kick,
 *   and skips the kick when the device said it does not want one
 *   (avail_event with EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY without);
 * - completions are found by polling the used ring (the reactor runs
 *   {@link poll} while I/Os are in flight), so calls are suppressed
 *   (used_event kept half a ring ahead with EVENT_IDX,
 *   VIRTQ_AVAIL_F_NO_INTERRUPT without): the back-end writes no call
 *   eventfd per completion, as SPDK's polled virtio driver asks too.
 * @module
 */
import { sym } from "../../ffi/libc.ts";
import type { FrontendMemory, RingLayout } from "../vhost_user/frontend.ts";
import {
  VIRTIO_BLK_HEADER_BYTES,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
} from "../virtio/blk.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_BYTES,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from "../virtio/virtqueue.ts";
import type { PerfDevice } from "./perf.ts";

/** Descriptors per request: header, data, status. */
const DESCS_PER_REQUEST = 3;
/** Bytes of one slot's indirect table. */
const INDIRECT_TABLE_BYTES = DESCS_PER_REQUEST * VIRTQ_DESC_BYTES;
/**
 * With I/Os outstanding and nothing completed for this long, kick again
 * whatever avail_event says. A safety net for a lost notification: the
 * avail_event handshake needs a store-load fence on both sides, and a
 * back-end without one can go to sleep on a ring that has work. A miss then
 * costs a millisecond instead of a hang, and is counted ({@link stallKicks}).
 */
const STALL_MS = 1;
/** Idle polls between two looks at the clock (performance.now() costs ~90 ns). */
const STALL_CHECK_POLLS = 256;

/** Options of a {@link VhostUserPerfDevice}. */
export interface VhostUserPerfDeviceOptions {
  memory: FrontendMemory;
  /** The queue's rings (zeroed guest memory, not yet started by the back-end is fine). */
  layout: RingLayout;
  /** Guest address of {@link VhostUserPerfDevice.scratchBytes} bytes for headers, status, tables. */
  scratchGpa: number;
  kickFd: number;
  /** VIRTIO_F_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** One indirect descriptor per request (VIRTIO_F_INDIRECT_DESC negotiated). */
  indirect: boolean;
  blockSize: number;
  /** Blocks this device exposes, from `firstLba`. */
  numBlocks: number;
  firstLba?: number;
  /** Slots the job uses. */
  jobDepth: number;
  /** I/Os in flight count here (the reactor keeps polling while it is above 0). */
  reactor: { ioInFlight: number };
}

/** One virtqueue as a perf device. Set {@link onDone} before the first submit. */
export class VhostUserPerfDevice implements PerfDevice {
  readonly blockSize: number;
  readonly numBlocks: number;
  onDone: (slot: number, ok: boolean) => void = () => {};
  /** Called once if the back-end breaks the ring protocol (the run should stop). */
  onLost: (reason: string) => void = () => {};
  /** I/Os whose status byte was not VIRTIO_BLK_S_OK. */
  failedIos = 0;
  /** The first failing status byte (0xff: the device never wrote it). */
  firstFailStatus = -1;
  /** Kicks written, kicks skipped because the device did not want them, forced kicks. */
  kicks = 0;
  kicksSkipped = 0;
  stallKicks = 0;
  /**
   * Stalls where the device's avail_event asked for a kick at an index this
   * driver published without kicking: the device went to sleep on a ring with
   * work, a notification lost in the avail_event handshake (EVENT_IDX only).
   * The other stalls had their kick: the device was busy or not running.
   * Exact for a device that moves avail_event only when it finds the ring
   * empty (sluice's); one that moves it on every pop (libvhost-user) and is
   * descheduled mid-batch is counted here too.
   */
  lostNotifications = 0;
  readonly #mem: FrontendMemory;
  readonly #v: DataView;
  readonly #bytes: Uint8Array;
  /**
   * The ring indices the device reads or writes while we do (avail.idx, used.idx,
   * used_event, avail_event, the flags) go through this array: a typed-array element is
   * one 16-bit load or store, where V8's DataView.getUint16/setUint16 may move the two
   * bytes separately and another process then sees a torn index (measured: ~1 in 10^6
   * reads of a counter stepping 0x00ff <-> 0x0100, far more in unoptimized code).
   */
  readonly #u16: Uint16Array;
  readonly #availIdxAt: number;
  readonly #usedIdxAt: number;
  readonly #usedEventAt: number;
  readonly #availEventAt: number;
  readonly #size: number;
  readonly #availOff: number;
  readonly #usedOff: number;
  readonly #hdrOff: number;
  readonly #statusOff: number;
  /** Byte offset of each slot's data descriptor. */
  readonly #dataDescOff: Int32Array;
  readonly #kickFd: number;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #sectorsPerBlock: number;
  readonly #firstLba: number;
  readonly #depth: number;
  readonly #inFlight: Uint8Array;
  readonly #reactor: { ioInFlight: number };
  #availIdx = 0;
  #kickedIdx = 0;
  /** avail.idx when a kick was last written. */
  #lastKickAt = 0;
  #lastUsed = 0;
  #kickPending = false;
  #outstanding = 0;
  #idlePolls = 0;
  /** When the current stretch without completions was first noticed (-1: none); a typed
   * array so the double is not boxed. */
  readonly #progressMs = new Float64Array([-1]);
  #lost = false;
  /**
   * A store-load fence: an Atomics read-modify-write on shared memory is a locked
   * instruction on x86, which orders the avail.idx store before the avail_event load.
   */
  readonly #fence = new Int32Array(new SharedArrayBuffer(4));

  /** Scratch bytes a device of `depth` slots needs (16-aligned). */
  static scratchBytes(depth: number): number {
    const hdrStatus = depth * (VIRTIO_BLK_HEADER_BYTES + 1);
    return Math.ceil(hdrStatus / 16) * 16 + depth * INDIRECT_TABLE_BYTES;
  }

  /** Queue size for `depth` requests: direct chains need 3 descriptors each. */
  static queueSize(depth: number, indirect: boolean): number {
    const need = indirect ? depth : depth * DESCS_PER_REQUEST;
    let n = 1;
    while (n < need) n <<= 1;
    return n;
  }

  constructor(o: VhostUserPerfDeviceOptions) {
    const l = o.layout;
    if (VhostUserPerfDevice.queueSize(o.jobDepth, o.indirect) > l.size) {
      throw new RangeError(`a queue of ${l.size} entries cannot hold ${o.jobDepth} requests`);
    }
    if (o.blockSize % VIRTIO_BLK_SECTOR_SIZE !== 0) {
      throw new RangeError(`block size ${o.blockSize} is not a multiple of 512`);
    }
    this.blockSize = o.blockSize;
    this.numBlocks = o.numBlocks;
    this.#mem = o.memory;
    this.#v = o.memory.view;
    this.#bytes = o.memory.bytes;
    this.#size = l.size;
    const off = (gpa: number) => gpa - o.memory.gpaBase;
    this.#availOff = off(l.availAddr);
    this.#usedOff = off(l.usedAddr);
    const b = o.memory.bytes;
    if (b.byteOffset % 2 !== 0 || this.#availOff % 2 !== 0 || this.#usedOff % 4 !== 0) {
      throw new RangeError("the rings must be aligned (avail to 2 bytes, used to 4)");
    }
    this.#u16 = new Uint16Array(b.buffer, b.byteOffset, b.byteLength >> 1);
    this.#availIdxAt = (this.#availOff + 2) >> 1;
    this.#usedIdxAt = (this.#usedOff + 2) >> 1;
    this.#usedEventAt = (this.#availOff + 4 + 2 * l.size) >> 1;
    this.#availEventAt = (this.#usedOff + 4 + 8 * l.size) >> 1;
    this.#hdrOff = off(o.scratchGpa);
    this.#statusOff = this.#hdrOff + o.jobDepth * VIRTIO_BLK_HEADER_BYTES;
    const tablesOff = this.#hdrOff +
      Math.ceil(o.jobDepth * (VIRTIO_BLK_HEADER_BYTES + 1) / 16) * 16;
    this.#kickFd = o.kickFd;
    this.#eventIdx = o.eventIdx;
    this.#indirect = o.indirect;
    this.#sectorsPerBlock = o.blockSize / VIRTIO_BLK_SECTOR_SIZE;
    this.#firstLba = o.firstLba ?? 0;
    this.#depth = o.jobDepth;
    this.#inFlight = new Uint8Array(o.jobDepth);
    this.#reactor = o.reactor;
    this.#dataDescOff = new Int32Array(o.jobDepth);
    const v = this.#v;
    const descOff = off(l.descAddr);
    const writeDesc = (at: number, addr: number, len: number, flags: number, next: number) => {
      v.setUint32(at, addr >>> 0, true);
      v.setUint32(at + 4, Math.floor(addr / 2 ** 32), true);
      v.setUint32(at + 8, len, true);
      v.setUint16(at + 12, flags, true);
      v.setUint16(at + 14, next, true);
    };
    const gpa = (o2: number) => o.memory.gpaBase + o2;
    for (let s = 0; s < o.jobDepth; s++) {
      // Entries i of the chain (or table) at `base`, next pointing at `first + i + 1`.
      const base = o.indirect
        ? tablesOff + s * INDIRECT_TABLE_BYTES
        : descOff + s * DESCS_PER_REQUEST * VIRTQ_DESC_BYTES;
      const first = o.indirect ? 0 : s * DESCS_PER_REQUEST;
      writeDesc(
        base,
        gpa(this.#hdrOff + s * VIRTIO_BLK_HEADER_BYTES),
        VIRTIO_BLK_HEADER_BYTES,
        VIRTQ_DESC_F_NEXT,
        first + 1,
      );
      writeDesc(base + VIRTQ_DESC_BYTES, 0, 0, VIRTQ_DESC_F_NEXT, first + 2);
      writeDesc(base + 2 * VIRTQ_DESC_BYTES, gpa(this.#statusOff + s), 1, VIRTQ_DESC_F_WRITE, 0);
      this.#dataDescOff[s] = base + VIRTQ_DESC_BYTES;
      if (o.indirect) {
        writeDesc(
          descOff + s * VIRTQ_DESC_BYTES,
          gpa(base),
          INDIRECT_TABLE_BYTES,
          VIRTQ_DESC_F_INDIRECT,
          0,
        );
      }
    }
    // Completions are polled: ask for no calls.
    if (this.#eventIdx) this.#setUsedEvent();
    else this.#u16[this.#availOff >> 1] = VIRTQ_AVAIL_F_NO_INTERRUPT;
  }

  /** I/Os published and not yet used. */
  get outstanding(): number {
    return this.#outstanding;
  }

  /** The driver's available index (what GET_VRING_BASE should report after a drain). */
  get availIdx(): number {
    return this.#availIdx;
  }

  submit(slot: number, write: boolean, lba: number, numBlocks: number, buf: Uint8Array): void {
    if (this.#lost) {
      // Never inside submit: a job that resubmits from onDone would recurse.
      this.#failLater(slot);
      return;
    }
    const v = this.#v;
    const h = this.#hdrOff + slot * VIRTIO_BLK_HEADER_BYTES;
    const sector = (this.#firstLba + lba) * this.#sectorsPerBlock;
    v.setUint32(h, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, true);
    v.setUint32(h + 4, 0, true);
    v.setUint32(h + 8, sector >>> 0, true);
    v.setUint32(h + 12, Math.floor(sector / 2 ** 32), true);
    this.#bytes[this.#statusOff + slot] = 0xff;
    if (buf.buffer !== this.#bytes.buffer) {
      throw new RangeError("perf buffers must live in the shared guest memory");
    }
    const addr = this.#mem.gpaBase + (buf.byteOffset - this.#bytes.byteOffset);
    const d = this.#dataDescOff[slot] as number;
    v.setUint32(d, addr >>> 0, true);
    v.setUint32(d + 4, Math.floor(addr / 2 ** 32), true);
    v.setUint32(d + 8, numBlocks * this.blockSize, true);
    v.setUint16(d + 12, write ? VIRTQ_DESC_F_NEXT : VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, true);
    const head = this.#indirect ? slot : slot * DESCS_PER_REQUEST;
    this.#u16[(this.#availOff + 4 >> 1) + this.#availIdx % this.#size] = head;
    // x86 keeps stores in order: the ring entry and descriptors are visible before the index.
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    this.#u16[this.#availIdxAt] = this.#availIdx;
    this.#inFlight[slot] = 1;
    this.#outstanding++;
    this.#reactor.ioInFlight++;
    this.#kickPending = true;
  }

  /**
   * Reaps the used ring and sends the pending kick; returns the completions
   * seen. A reactor poller: call it on every pass.
   */
  readonly poll = (): number => {
    if (this.#lost) return 0;
    const v = this.#v;
    const usedIdx = this.#u16[this.#usedIdxAt] as number;
    // used.idx may move by at most the requests outstanding: anything else (an index moved
    // back, or far ahead) would have us read stale entries as completions.
    const fresh = (usedIdx - this.#lastUsed) & 0xffff;
    if (fresh > this.#outstanding) {
      this.#lose(
        `the back-end moved used.idx from ${this.#lastUsed} to ${usedIdx} with only ` +
          `${this.#outstanding} request(s) outstanding`,
      );
      return 0;
    }
    let work = 0;
    while (this.#lastUsed !== usedIdx) {
      const e = this.#usedOff + 4 + 8 * (this.#lastUsed % this.#size);
      const id = v.getUint32(e, true);
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
      const slot = this.#indirect ? id : id / DESCS_PER_REQUEST;
      if (
        !(slot >= 0 && slot < this.#depth && Number.isInteger(slot)) || this.#inFlight[slot] !== 1
      ) {
        this.#lose(`the back-end returned descriptor ${id}, which is not an outstanding request`);
        return work;
      }
      this.#inFlight[slot] = 0;
      this.#outstanding--;
      this.#reactor.ioInFlight--;
      work++;
      const status = this.#bytes[this.#statusOff + slot] as number;
      if (status === VIRTIO_BLK_S_OK) this.onDone(slot, true);
      else {
        this.failedIos++;
        if (this.firstFailStatus < 0) this.firstFailStatus = status;
        this.onDone(slot, false);
      }
    }
    if (work > 0) {
      this.#idlePolls = 0;
      this.#progressMs[0] = -1;
      if (this.#eventIdx) this.#setUsedEvent();
    } else if (this.#outstanding > 0 && ++this.#idlePolls >= STALL_CHECK_POLLS) {
      this.#idlePolls = 0;
      this.#checkStall();
    }
    if (this.#kickPending) this.#kick();
    return work;
  };

  #checkStall(): void {
    const now = performance.now();
    const since = this.#progressMs[0] as number;
    if (since < 0) this.#progressMs[0] = now;
    else if (now - since >= STALL_MS) {
      this.#progressMs[0] = now;
      this.stallKicks++;
      if (this.#eventIdx) {
        const event = this.#u16[this.#availEventAt] as number;
        // event in [lastKickAt, availIdx): published after the last kick, asked for, not sent.
        if (
          ((event - this.#lastKickAt) & 0xffff) < ((this.#availIdx - this.#lastKickAt) & 0xffff)
        ) {
          this.lostNotifications++;
        }
      }
      this.#lastKickAt = this.#availIdx;
      sym.write(this.#kickFd, ONE, 8n);
    }
  }

  #kick(): void {
    this.#kickPending = false;
    // The index store must be visible before avail_event / used.flags is read (virtio_mb).
    Atomics.add(this.#fence, 0, 1);
    let need: boolean;
    if (this.#eventIdx) {
      const event = this.#u16[this.#availEventAt] as number;
      // vring_need_event: did avail.idx move past avail_event since the last kick?
      need =
        ((this.#availIdx - event - 1) & 0xffff) < ((this.#availIdx - this.#kickedIdx) & 0xffff);
    } else {
      need = ((this.#u16[this.#usedOff >> 1] as number) & VIRTQ_USED_F_NO_NOTIFY) === 0;
    }
    this.#kickedIdx = this.#availIdx;
    if (need) {
      this.kicks++;
      this.#lastKickAt = this.#availIdx;
      sym.write(this.#kickFd, ONE, 8n);
    } else this.kicksSkipped++;
  }

  /** used_event half a ring of indices ahead: the device will not reach it before we move it. */
  #setUsedEvent(): void {
    this.#u16[this.#usedEventAt] = (this.#lastUsed + 0x8000) & 0xffff;
  }

  /** Ends every outstanding I/O with an error (the back-end went away or broke the ring). */
  #lose(reason: string): void {
    if (this.#lost) return;
    this.#lost = true;
    // Stop the job first, so the failures below start no new I/O.
    this.onLost(reason);
    for (let s = 0; s < this.#depth; s++) {
      if (this.#inFlight[s] !== 1) continue;
      this.#inFlight[s] = 0;
      this.#outstanding--;
      this.#reactor.ioInFlight--;
      this.failedIos++;
      this.onDone(s, false);
    }
  }

  /** A method of its own: a closure in submit would allocate a context per call. */
  #failLater(slot: number): void {
    setTimeout(() => {
      this.failedIos++;
      this.onDone(slot, false);
    }, 0);
  }

  /** Gives up on the I/Os still out (a back-end that stopped answering). */
  abandon(reason: string): void {
    this.#lose(reason);
  }
}

/** An eventfd increment of 1. */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

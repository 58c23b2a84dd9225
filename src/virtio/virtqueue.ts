/**
 * The split virtqueue (virtio 1.2, section 2.7) seen from the device side,
 * over guest memory the guest keeps writing while we read it.
 *
 * Everything in the rings is untrusted: each field is read from guest memory
 * exactly once into a local and checked before use, so a guest changing a
 * descriptor under us can only make its own request fail.
 *
 * Memory ordering. The spec asks the device for a read barrier between
 * reading `avail.idx` and reading the ring entries it covers, a write barrier
 * between writing a used element and publishing `used.idx`, and a full
 * barrier between publishing `used.idx` and reading `used_event` (or the
 * avail flags). JavaScript gives no fences on a non-shared ArrayBuffer. We
 * rely on two things: the data path runs on x86-64, whose TSO model keeps
 * loads in order with loads and stores in order with stores; and every access
 * here is an opaque DataView call on the same buffer, which V8 does not
 * reorder with another access that may alias it. The store-load case (the
 * notification decisions) is the one x86 does reorder: a store may wait in
 * the store buffer while a later load goes ahead. Both sides then decide
 * from stale values and each waits for the other (the device wrote
 * `avail_event` and found the ring empty while the driver added a buffer and
 * read the old `avail_event`: no kick; likewise `used.idx` against
 * `used_event`: no interrupt). The driver has its full barrier; ours is
 * {@linkcode fullFence}, a locked instruction, in {@linkcode
 * SplitVirtqueue.setAvailEvent} (the backend then re-reads the ring with
 * `popAvail()`) and at the start of {@linkcode
 * SplitVirtqueue.needsNotification}. A missing one showed as a queue that
 * stopped for good under a long fio run (seconds of heavy traffic on 2
 * cores).
 * @module
 */
import { VirtqueueError, type VirtqueueErrorKind } from "./error.ts";
import { GuestAddress, GuestMemory } from "./guest_memory.ts";

/** Descriptor continues via `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Buffer is device-writable. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Buffer holds an indirect descriptor table. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** avail.flags: the driver asks for no used-buffer notifications. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device asks for no available-buffer notifications. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Largest split queue size. */
export const VIRTQ_MAX_SIZE = 32768;
/** Bytes per descriptor. */
export const VIRTQ_DESC_BYTES = 16;

/** The cell the fence operates on (shared, so no engine may treat the access as private). */
const FENCE_CELL = new Int32Array(new SharedArrayBuffer(4));

/**
 * A full memory barrier (x86 `mfence` semantics): V8 compiles an Atomics
 * read-modify-write to a locked instruction, and a locked instruction drains
 * the store buffer before any later load, whatever address it names.
 * Allocates nothing.
 */
export function fullFence(): void {
  Atomics.add(FENCE_CELL, 0, 0);
}

/** Largest total chain length: the used ring's `len` is 32 bits. */
const CHAIN_BYTES_MAX = 0xffff_ffff;
/** The high 32 bits of an address must stay below this for a safe integer. */
const HIGH_WORD_LIMIT = 0x20_0000;
const TWO_32 = 0x1_0000_0000;

/**
 * Where a device records the guest pages it wrote, for live migration
 * (vhost-user's dirty log). Marks come after the write they stand for.
 */
export interface DirtyPageLog {
  /** Marks guest physical range `[gpa, gpa + length)` dirty. */
  mark(gpa: number, length: number): void;
}

/** How the queue was set up by the driver; all of it untrusted. */
export interface SplitVirtqueueConfig {
  /** Queue size: a power of two, 1..32768. */
  size: number;
  /** Guest physical address of the descriptor table (16-aligned). */
  descAddr: number;
  /** Guest physical address of the available ring (2-aligned). */
  availAddr: number;
  /** Guest physical address of the used ring (4-aligned). */
  usedAddr: number;
  /** The guest's memory. */
  memory: GuestMemory;
  /** VIRTIO_F_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC was negotiated. */
  indirectDesc: boolean;
  /** Where to resume consuming the available ring (vhost-user SET_VRING_BASE); default 0. */
  lastAvailIdx?: number;
}

/**
 * The spec's vring_need_event: whether a used index moving from `oldIdx` to
 * `newIdx` crossed `eventIdx` (all 16-bit, wrapping).
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/**
 * A split virtqueue, made only by {@linkcode SplitVirtqueue.create}, which
 * checks the driver's configuration.
 *
 * After {@linkcode SplitVirtqueue.walkChain} the chain is in the `seg*`
 * arrays (entries `0..segCount-1`), preallocated with one entry per queue
 * slot: nothing is allocated per request.
 */
export class SplitVirtqueue {
  /** Queue size. */
  readonly size: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  readonly eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  readonly indirectDesc: boolean;
  /** The guest memory the queue lives in. */
  readonly memory: GuestMemory;

  /** Number of segments of the last walked chain. */
  segCount = 0;
  /** Head index of the last walked chain. */
  head = -1;
  /** Device-readable bytes of the last chain (they all come first). */
  readableBytes = 0;
  /** Device-writable bytes of the last chain. */
  writableBytes = 0;
  /** Guest physical address of each segment. */
  readonly segGpa: Float64Array;
  /** Length of each segment. */
  readonly segLen: Uint32Array;
  /** 1 when the segment is device-writable. */
  readonly segWritable: Uint8Array;
  /** Guest memory region of each segment. */
  readonly segRegion: Int32Array;
  /** Offset of each segment inside its region. */
  readonly segOffset: Float64Array;

  readonly #mask: number;
  readonly #desc: DataView;
  readonly #descOff: number;
  readonly #used: DataView;
  readonly #usedOff: number;
  #lastAvail: number;
  #usedIdx: number;
  #signalledUsed = 0;
  #signalledUsedValid = false;
  #broken = false;
  /** Where writes to the used ring are logged (VHOST_VRING_F_LOG), or null. */
  #usedLog: DirtyPageLog | null = null;
  /** The address the used ring's first byte is logged at (vhost-user log_guest_addr). */
  #usedLogAddr = 0;
  // Loop detection: a descriptor is visited in this walk when its stamp equals #gen.
  readonly #directStamp: Uint32Array;
  readonly #indirectStamp: Uint32Array;
  #gen = 0;
  readonly #at = new GuestAddress();
  /**
   * The 16-bit ring fields the driver and the device write concurrently, as
   * Uint16Array elements: one aligned 16-bit load or store each. A DataView
   * access may be compiled to two byte accesses, and the other side then sees
   * a torn index (measured: bench/../src/perf/testdata/torn_index.ts). Avail:
   * [flags, idx, ring[size], used_event]; used: [flags, idx]; avail_event.
   */
  readonly #avail16: Uint16Array;
  readonly #used16: Uint16Array;
  readonly #availEvent16: Uint16Array;

  private constructor(
    c: SplitVirtqueueConfig,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
  ) {
    this.size = c.size;
    this.#mask = c.size - 1;
    this.eventIdx = c.eventIdx;
    this.indirectDesc = c.indirectDesc;
    this.memory = c.memory;
    this.#desc = c.memory.view(desc.region);
    this.#descOff = desc.offset;
    this.#used = c.memory.view(used.region);
    this.#usedOff = used.offset;
    const words = (region: number, off: number, n: number): Uint16Array => {
      const b = c.memory.bytes(region);
      // create() checked the ring alignment in guest memory; the mapping keeps it (page-aligned
      // mmaps, even mmap offsets) unless a front-end sent an odd mmap_offset.
      if ((b.byteOffset + off) % 2 !== 0) {
        throw new VirtqueueError("queue-alignment", "A ring is not 2-byte aligned in our mapping");
      }
      return new Uint16Array(b.buffer, b.byteOffset + off, n);
    };
    this.#avail16 = words(avail.region, avail.offset, 3 + c.size);
    this.#used16 = words(used.region, used.offset, 2);
    this.#availEvent16 = words(used.region, used.offset + 4 + 8 * c.size, 1);
    this.#lastAvail = (c.lastAvailIdx ?? 0) & 0xffff;
    this.#usedIdx = this.#used16[1] as number;
    this.segGpa = new Float64Array(c.size);
    this.segLen = new Uint32Array(c.size);
    this.segWritable = new Uint8Array(c.size);
    this.segRegion = new Int32Array(c.size);
    this.segOffset = new Float64Array(c.size);
    this.#directStamp = new Uint32Array(c.size);
    this.#indirectStamp = new Uint32Array(c.size);
  }

  /**
   * The checking constructor: size a power of two up to 32768, each area
   * aligned and inside one guest memory region.
   * Throws {@linkcode VirtqueueError} (`"queue-size"`, `"queue-alignment"`,
   * `"queue-address"`).
   */
  static create(c: SplitVirtqueueConfig): SplitVirtqueue {
    const size = c.size;
    if (!Number.isInteger(size) || size < 1 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) !== 0) {
      throw new VirtqueueError(
        "queue-size",
        `Queue size ${size} is not a power of two up to 32768`,
      );
    }
    const event = c.eventIdx ? 2 : 0;
    const areas: [string, number, number, number][] = [
      ["descriptor table", c.descAddr, 16, VIRTQ_DESC_BYTES * size],
      ["available ring", c.availAddr, 2, 4 + 2 * size + event],
      ["used ring", c.usedAddr, 4, 4 + 8 * size + event],
    ];
    const found: GuestAddress[] = [];
    for (const [name, addr, align, bytes] of areas) {
      if (!Number.isSafeInteger(addr) || addr < 0) {
        throw new VirtqueueError("queue-address", `The ${name} address ${addr} is not valid`);
      }
      if (addr % align !== 0) {
        throw new VirtqueueError(
          "queue-alignment",
          `The ${name} at 0x${addr.toString(16)} is not ${align}-byte aligned`,
        );
      }
      const at = new GuestAddress();
      if (!c.memory.translate(addr, bytes, at)) {
        throw new VirtqueueError(
          "queue-address",
          `The ${name} at 0x${addr.toString(16)} (${bytes} bytes) is not inside guest memory`,
        );
      }
      found.push(at);
    }
    const [d, a, u] = found;
    if (d === undefined || a === undefined || u === undefined) throw new Error("unreachable");
    return new SplitVirtqueue(c, d, a, u);
  }

  /** The next available-ring index the device will consume. */
  get lastAvailIdx(): number {
    return this.#lastAvail;
  }

  /** True once the driver's available index was found impossible; the device needs a reset. */
  get broken(): boolean {
    return this.#broken;
  }

  /** The device's used index (last published). */
  get usedIdx(): number {
    return this.#usedIdx;
  }

  /**
   * True when the driver has made buffers available that were not taken yet:
   * one 16-bit load, for polling between kicks.
   */
  hasAvail(): boolean {
    return (this.#avail16[1] as number) !== this.#lastAvail;
  }

  /**
   * Takes the next available chain: returns its head index, or -1 when the
   * ring is empty. Throws {@linkcode VirtqueueError} `"avail-idx"` when the
   * driver's index is more than a queue ahead (the queue is then `broken` and
   * every later call throws the same; the device should ask for a reset),
   * and `"desc-index"` for a head out of range (the entry is consumed, so
   * the queue can go on).
   */
  popAvail(): number {
    if (this.#broken) {
      throw new VirtqueueError("avail-idx", "The queue is broken by an earlier available index");
    }
    const availIdx = this.#avail16[1] as number;
    // Read barrier here: the ring entry below is read after avail.idx (see the module note).
    const pending = (availIdx - this.#lastAvail) & 0xffff;
    if (pending === 0) return -1;
    if (pending > this.size) {
      this.#broken = true;
      throw new VirtqueueError(
        "avail-idx",
        `Available index ${availIdx} is ${pending} entries past ${this.#lastAvail}, more than the queue size ${this.size}`,
      );
    }
    const head = this.#avail16[2 + (this.#lastAvail & this.#mask)] as number;
    this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
    if (head >= this.size) {
      throw new VirtqueueError(
        "desc-index",
        `Head descriptor ${head} is not below the queue size ${this.size}`,
      );
    }
    return head;
  }

  /**
   * Walks and validates the chain starting at `head`, filling the `seg*`
   * arrays. Throws {@linkcode VirtqueueError} for any broken rule; then the
   * device should return the head with length 0 (or ask for a reset).
   *
   * Direct descriptors may precede one indirect descriptor, which ends the
   * queue-table part of the chain (it may not have NEXT); the WRITE flag of
   * the descriptor that points to a table is ignored, as the spec says. A
   * chain, indirect entries included, has at most queue-size descriptors
   * (the spec's limit on drivers), so a device should offer seg_max of at
   * most the queue size minus 2 (header and status), as QEMU does.
   */
  walkChain(head: number): void {
    this.segCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.head = head;
    const size = this.size;
    if (!Number.isInteger(head) || head < 0 || head >= size) {
      throw this.#chainError("desc-index", `Head descriptor ${head} is not below ${size}`);
    }
    let gen = this.#gen + 1;
    if (gen > 0xffff_ffff) {
      this.#directStamp.fill(0);
      this.#indirectStamp.fill(0);
      gen = 1;
    }
    this.#gen = gen;
    const mem = this.memory;
    const at = this.#at;
    let view = this.#desc;
    let base = this.#descOff;
    let tableLen = size;
    let stamps = this.#directStamp;
    let inIndirect = false;
    let idx = head;
    let count = 0;
    let readable = 0;
    let writable = 0;
    let sawWritable = false;
    for (;;) {
      if (idx >= tableLen) {
        throw this.#chainError(
          "desc-index",
          `Descriptor ${idx} is not below the ${
            inIndirect ? "indirect table" : "queue"
          } size ${tableLen}`,
        );
      }
      if (stamps[idx] === gen) {
        throw this.#chainError("chain-loop", `Descriptor ${idx} appears twice in one chain`);
      }
      stamps[idx] = gen;
      const off = base + idx * VIRTQ_DESC_BYTES;
      const lo = view.getUint32(off, true);
      const hi = view.getUint32(off + 4, true);
      const len = view.getUint32(off + 8, true);
      const flags = view.getUint16(off + 12, true);
      const next = view.getUint16(off + 14, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (inIndirect) {
          throw this.#chainError("indirect-nested", "An indirect table refers to another one");
        }
        if (!this.indirectDesc) {
          throw this.#chainError(
            "indirect-feature",
            "An indirect descriptor was used without VIRTIO_F_INDIRECT_DESC",
          );
        }
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
          throw this.#chainError(
            "indirect-next",
            "An indirect descriptor also has VIRTQ_DESC_F_NEXT",
          );
        }
        if (len === 0 || len % VIRTQ_DESC_BYTES !== 0 || len / VIRTQ_DESC_BYTES > size) {
          throw this.#chainError(
            "indirect-size",
            `An indirect table of ${len} bytes is empty, not a multiple of 16 or over ${size} descriptors`,
          );
        }
        if (hi >= HIGH_WORD_LIMIT || !mem.translate(hi * TWO_32 + lo, len, at)) {
          throw this.#chainError(
            "indirect-address",
            "An indirect table is not inside guest memory",
          );
        }
        view = mem.view(at.region);
        base = at.offset;
        tableLen = len / VIRTQ_DESC_BYTES;
        stamps = this.#indirectStamp;
        inIndirect = true;
        idx = 0;
        continue;
      }
      if (count >= size) {
        throw this.#chainError(
          "chain-too-long",
          `A chain has more than ${size} descriptors`,
        );
      }
      if (hi >= HIGH_WORD_LIMIT) {
        throw this.#chainError("desc-address", `Descriptor ${idx} has an address past 2^53`);
      }
      const gpa = hi * TWO_32 + lo;
      if (!mem.translate(gpa, len, at)) {
        throw this.#chainError(
          "desc-address",
          `Descriptor ${idx} (0x${gpa.toString(16)}, ${len} bytes) is not inside guest memory`,
        );
      }
      const isWritable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (isWritable) {
        writable += len;
        sawWritable = true;
      } else {
        if (sawWritable) {
          throw this.#chainError(
            "order",
            `Descriptor ${idx} is device-readable after a device-writable one`,
          );
        }
        readable += len;
      }
      if (readable + writable > CHAIN_BYTES_MAX) {
        throw this.#chainError("chain-bytes", "A chain's buffers add up to more than 4 GiB");
      }
      this.segGpa[count] = gpa;
      this.segLen[count] = len;
      this.segWritable[count] = isWritable ? 1 : 0;
      this.segRegion[count] = at.region;
      this.segOffset[count] = at.offset;
      count++;
      this.segCount = count;
      this.readableBytes = readable;
      this.writableBytes = writable;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return;
      idx = next;
    }
  }

  /** Forgets the partly walked chain and makes the error to throw. */
  #chainError(kind: VirtqueueErrorKind, message: string): VirtqueueError {
    this.segCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    return new VirtqueueError(kind, message);
  }

  /**
   * Returns a chain to the driver: `len` bytes were written into it.
   * Throws {@linkcode VirtqueueError} `"used-head"` for a head out of range.
   */
  pushUsed(head: number, len: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size) {
      throw new VirtqueueError("used-head", `Used head ${head} is not below ${this.size}`);
    }
    const entry = this.#usedOff + 4 + 8 * (this.#usedIdx & this.#mask);
    this.#used.setUint32(entry, head, true);
    this.#used.setUint32(entry + 4, len >>> 0, true);
    this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
    // Write barrier here: the element is visible before the index (see the module note).
    this.#used16[1] = this.#usedIdx;
    const log = this.#usedLog;
    if (log !== null) {
      log.mark(this.#usedLogAddr + entry - this.#usedOff, 8);
      log.mark(this.#usedLogAddr + 2, 2);
    }
  }

  /**
   * Logs every later device write to the used ring (elements, `idx`,
   * `flags`, `avail_event`) into `log`, the ring's first byte at guest
   * address `logAddr`; `null` stops it. vhost-user sets this with
   * VHOST_VRING_F_LOG and `log_guest_addr` while the front-end migrates.
   */
  logUsedRing(log: DirtyPageLog | null, logAddr = 0): void {
    this.#usedLog = log;
    this.#usedLogAddr = logAddr;
  }

  /**
   * Whether the driver wants a used-buffer notification for what was
   * pushed since the last call that returned true (EVENT_IDX: the spec's
   * vring_need_event against `used_event`; otherwise the NO_INTERRUPT flag).
   */
  needsNotification(): boolean {
    // used.idx (stored by pushUsed) must be visible before we read used_event or the flags.
    fullFence();
    if (this.eventIdx) {
      const old = this.#signalledUsed;
      const valid = this.#signalledUsedValid;
      const now = this.#usedIdx;
      this.#signalledUsed = now;
      this.#signalledUsedValid = true;
      if (!valid) return true;
      const usedEvent = this.#avail16[2 + this.size] as number;
      return vringNeedEvent(usedEvent, now, old);
    }
    const flags = this.#avail16[0] as number;
    return (flags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * EVENT_IDX: asks the driver to notify once it makes available-ring entry
   * `idx` available (writes `avail_event`). No-op without EVENT_IDX.
   */
  setAvailEvent(idx: number): void {
    if (!this.eventIdx) return;
    this.#availEvent16[0] = idx & 0xffff;
    // avail_event must be visible before the caller re-reads avail.idx (see the module note).
    fullFence();
    this.#usedLog?.mark(this.#usedLogAddr + 4 + 8 * this.size, 2);
  }

  /** Sets or clears VIRTQ_USED_F_NO_NOTIFY (ignored by drivers under EVENT_IDX). */
  setNoNotify(on: boolean): void {
    this.#used16[0] = on ? VIRTQ_USED_F_NO_NOTIFY : 0;
    this.#usedLog?.mark(this.#usedLogAddr, 2);
  }
}

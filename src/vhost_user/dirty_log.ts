/**
 * The dirty page log of vhost-user live migration (QEMU's
 * docs/interop/vhost-user.rst, "Migration"): while the front-end migrates
 * the guest, every write the device makes into guest memory must set the bit
 * of each 4 KiB guest page it touched, so QEMU sends that page again.
 *
 * The log is a bitmap in shared memory that the front-end gives with
 * VHOST_USER_SET_LOG_BASE (an fd, a size and an offset;
 * VHOST_USER_PROTOCOL_F_LOG_SHMFD). Bit `page % 8` of byte `page / 8` stands
 * for guest physical page `page = gpa / VHOST_LOG_PAGE`.
 *
 * Concurrency. QEMU collects the log while we write it: it swaps each 64-bit
 * word with zero (an atomic exchange) and treats the bits it got as dirty.
 * Other back-ends of the same VM (a vhost-user-net process, the kernel's
 * vhost) share the same log and set bits in the same bytes. A plain
 * read-OR-write of a byte is not enough against those: between our read and
 * our write another back-end may set a bit we would then overwrite with
 * our stale copy. So each byte is updated with `Atomics.or`, which V8 compiles
 * to a locked instruction also on a non-shared ArrayBuffer over external
 * memory (dirty_log_test.ts checks it against a second thread); it returns a
 * small integer, so marking allocates nothing. Against QEMU alone the order
 * matters too: a bit is set only after the write it stands for has landed
 * (the callers mark after writing), so when QEMU clears the bit and then
 * copies the page, it copies the new bytes.
 * @module
 */
import { type Mapping, mapShared, PAGE_SIZE } from "../../ffi/memory.ts";
import { sym } from "../../ffi/libc.ts";
import type { DirtyPageLog } from "../virtio/virtqueue.ts";

/** Bytes of guest physical memory one bit of the log stands for. */
export const VHOST_LOG_PAGE = 0x1000;
/**
 * Largest log accepted, in bytes: 1 GiB of bitmap covers 32 TiB of guest
 * physical addresses. A bigger claim is a broken or hostile front-end.
 */
export const DIRTY_LOG_MAX_BYTES = 1 << 30;

const BITS_PER_BYTE = 8;
/** The 8-byte eventfd increment, made once. */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/** What the log has done since it was made (all counts only grow). */
export interface DirtyLogStats {
  /** Bytes of the current log (0: none mapped). */
  logBytes: number;
  /** Logs mapped so far (SET_LOG_BASE). */
  bases: number;
  /** Calls of {@link DirtyLog.mark} with a non-empty range. */
  writes: number;
  /** Pages marked, counted once per write that covered them. */
  pages: number;
  /** Writes that could not be logged in full (past the log's end, or no log). */
  unlogged: number;
}

/**
 * One device's view of the dirty log. Marks nothing until a log is mapped;
 * deciding *whether* a write must be logged (VHOST_F_LOG_ALL,
 * VHOST_VRING_F_LOG) is the caller's.
 */
export class DirtyLog implements DirtyPageLog {
  readonly #say: (msg: string) => void;
  readonly #name: string;
  #mapping: Mapping | null = null;
  /** The log bytes, empty when none is mapped. */
  #bits: Uint8Array = new Uint8Array(0);
  #eventFd = -1;
  /** An unlogged write was reported for the current log (report once per log). */
  #warned = false;
  /** Something was marked since the last {@link signal}. */
  #dirtySinceSignal = false;
  #bases = 0;
  #writes = 0;
  #pages = 0;
  #unlogged = 0;

  /**
   * @param name for messages ("vhost-blk Malloc0")
   * @param say where operating messages go
   */
  constructor(name: string, say: (msg: string) => void) {
    this.#name = name;
    this.#say = say;
  }

  /** True while a log is mapped. */
  get mapped(): boolean {
    return this.#mapping !== null;
  }

  /** Counters, for logs and tests. */
  get stats(): DirtyLogStats {
    return {
      logBytes: this.#bits.byteLength,
      bases: this.#bases,
      writes: this.#writes,
      pages: this.#pages,
      unlogged: this.#unlogged,
    };
  }

  /**
   * VHOST_USER_SET_LOG_BASE: maps `size` bytes of `fd` from `offset` as the
   * new log and drops the previous one (QEMU sends a new log when guest
   * memory grows and reads the old one once more after our reply). Owns
   * `fd`: it is closed whether this returns or throws. On a throw the
   * previous log stays in use.
   * @throws {RangeError} for a size of 0 or above {@link DIRTY_LOG_MAX_BYTES},
   *   or a range past the end of the file
   * @throws {ErrnoError} if mmap fails
   */
  setBase(fd: number, size: bigint, offset: bigint): void {
    let mapping: Mapping;
    let at: number;
    try {
      if (size === 0n || size > BigInt(DIRTY_LOG_MAX_BYTES)) {
        throw new RangeError(
          `dirty log of ${size} bytes: must be 1..${DIRTY_LOG_MAX_BYTES} bytes`,
        );
      }
      if (offset > BigInt(Number.MAX_SAFE_INTEGER) - size) {
        throw new RangeError(`dirty log offset 0x${offset.toString(16)} is out of range`);
      }
      const n = Number(size);
      const off = Number(offset);
      // mmap wants a page-aligned offset: map from the page holding the
      // log's first byte. mapShared refuses a range past the end of a
      // regular file (a memfd), whose pages would fault the process.
      const start = off - (off % PAGE_SIZE);
      at = off - start;
      mapping = mapShared(fd, at + n, start);
    } finally {
      sym.close(fd);
    }
    this.#unmap();
    this.#mapping = mapping;
    this.#bits = mapping.bytes(at, Number(size));
    this.#warned = false;
    this.#bases++;
  }

  /**
   * VHOST_USER_SET_LOG_FD: an eventfd to signal after logging (QEMU's
   * vhost-user front-end never sends one; the kernel's vhost has the same
   * knob). Owns `fd`; replaces and closes an earlier one.
   */
  setEventFd(fd: number): void {
    if (this.#eventFd >= 0) sym.close(this.#eventFd);
    this.#eventFd = fd;
  }

  /**
   * Marks every page of guest physical range `[gpa, gpa + length)` dirty.
   * Call it after the bytes were written. Returns false when part of the
   * range could not be logged (no log, or pages past its end: the log was
   * sized by the front-end to cover all guest memory, so this is the
   * front-end's mistake; it is reported once per log and counted in
   * `unlogged`). Never touches memory outside the log; allocates nothing.
   */
  mark(gpa: number, length: number): boolean {
    if (!(length > 0)) return true;
    const bits = this.#bits;
    const end = gpa + length;
    if (!(gpa >= 0) || !(end <= Number.MAX_SAFE_INTEGER)) {
      return this.#unloggable(gpa, length);
    }
    const first = Math.floor(gpa / VHOST_LOG_PAGE);
    const last = Math.floor((end - 1) / VHOST_LOG_PAGE);
    this.#writes++;
    // Pages from `first` to `stop` fit in the log; more is an error below.
    const lastInLog = bits.byteLength * BITS_PER_BYTE - 1;
    const stop = last <= lastInLog ? last : lastInLog;
    if (stop >= first) {
      this.#pages += stop - first + 1;
      this.#dirtySinceSignal = true;
    }
    let page = first;
    while (page <= stop) {
      const byte = Math.floor(page / BITS_PER_BYTE);
      const bit = page - byte * BITS_PER_BYTE;
      // This byte's bits from `bit` up to `stop` (or to its last bit).
      const upTo = stop - page < BITS_PER_BYTE - 1 - bit ? bit + (stop - page) : 7;
      const mask = (0xff >> (7 - upTo + bit)) << bit;
      Atomics.or(bits, byte, mask);
      page += upTo - bit + 1;
    }
    if (stop < last) return this.#unloggable(gpa, length);
    return true;
  }

  /** Signals the log eventfd when something was marked since the last call. */
  signal(): void {
    if (!this.#dirtySinceSignal) return;
    this.#dirtySinceSignal = false;
    if (this.#eventFd >= 0) sym.write(this.#eventFd, ONE, 8n);
  }

  /** A one-line summary for the operator. */
  summary(): string {
    return `${this.#writes} writes, ${this.#pages} pages marked` +
      (this.#unlogged > 0 ? `, ${this.#unlogged} writes NOT fully logged` : "");
  }

  /** Unmaps the log and closes the eventfd. */
  close(): void {
    this.#unmap();
    if (this.#eventFd >= 0) sym.close(this.#eventFd);
    this.#eventFd = -1;
  }

  #unloggable(gpa: number, length: number): boolean {
    this.#unlogged++;
    if (!this.#warned) {
      this.#warned = true;
      const log = this.#bits.byteLength;
      this.#say(
        `${this.#name}: dirty log: a write to guest 0x${gpa.toString(16)} (+${length}) ` +
          (log === 0
            ? "while no log is mapped"
            : `reaches past the log (${log} bytes cover ${
              log * BITS_PER_BYTE * VHOST_LOG_PAGE
            } bytes of guest memory)`) +
          "; migration may copy stale pages (reported once per log)",
      );
    }
    return false;
  }

  #unmap(): void {
    // Drop the view before unmapping (see ffi/memory.ts).
    this.#bits = new Uint8Array(0);
    this.#mapping?.unmap();
    this.#mapping = null;
  }
}

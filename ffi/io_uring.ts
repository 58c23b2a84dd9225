/**
 * io_uring from TypeScript, without liburing.
 *
 * The ring is set up with the raw `io_uring_setup` syscall, its SQ ring, CQ
 * ring and SQE array are mmapped and read and written through zero-copy
 * typed-array views (`Deno.UnsafePointerView.getArrayBuffer`). Layouts are
 * those of the kernel's include/uapi/linux/io_uring.h.
 *
 * Hot-path rules this file keeps (see docs: DESIGN.md "Measured on these
 * machines"):
 * - No allocation per I/O: 64-bit SQE fields are written as two u32 words,
 *   `user_data` is a 32-bit number (high half always 0), addresses and
 *   offsets are plain numbers below 2^53, and no closures or Pointer
 *   objects are made per I/O.
 * - One `io_uring_enter` per batch: `prep*` only fill SQEs; {@link
 *   IoUring.submit} publishes the SQ tail and enters the kernel once.
 * - `io_uring_enter` is called through glibc's `syscall` declared with
 *   BigInt (`i64`) arguments taken from a precomputed table and an `i32`
 *   result. Measured here: a Number to an `i64` parameter leaves the fast
 *   call path (~100 ns per argument instead of ~8 ns) and an `i64` result
 *   allocates a BigInt on every call.
 *
 * @example A NOP round trip
 * ```ts
 * import { IoUring } from "./io_uring.ts";
 * const ring = new IoUring(64);
 * ring.prepNop(7);
 * ring.submitAndWait(1);
 * ring.reap((userData, res) => console.log(userData, res)); // 7 0
 * ring.close();
 * ```
 * @module
 */
import { ErrnoError } from "./errno.ts";
import { errno, sym, SYS } from "./libc.ts";

// ---------------------------------------------------------------------------
// uapi constants (names as in include/uapi/linux/io_uring.h)

/** io_uring_setup(2) flags. */
export const IORING_SETUP_IOPOLL = 1 << 0;
export const IORING_SETUP_SQPOLL = 1 << 1;
export const IORING_SETUP_CQSIZE = 1 << 3;
export const IORING_SETUP_CLAMP = 1 << 4;
/** Keep submitting the rest of a batch when one SQE fails to prepare. */
export const IORING_SETUP_SUBMIT_ALL = 1 << 7;
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;

/** SQE opcodes (enum io_uring_op). */
export const IORING_OP_NOP = 0;
export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_POLL_ADD = 6;
export const IORING_OP_POLL_REMOVE = 7;
export const IORING_OP_ACCEPT = 13;
export const IORING_OP_ASYNC_CANCEL = 14;
export const IORING_OP_FALLOCATE = 17;
export const IORING_OP_READ = 22;
export const IORING_OP_WRITE = 23;
export const IORING_OP_SEND = 26;
export const IORING_OP_RECV = 27;

/** sqe->flags. */
export const IOSQE_FIXED_FILE = 1 << 0;
export const IOSQE_IO_DRAIN = 1 << 1;
export const IOSQE_IO_LINK = 1 << 2;
export const IOSQE_IO_HARDLINK = 1 << 3;
export const IOSQE_ASYNC = 1 << 4;
export const IOSQE_CQE_SKIP_SUCCESS = 1 << 6;

/** sqe->fsync_flags. */
export const IORING_FSYNC_DATASYNC = 1 << 0;
/** POLL_ADD command flags (in sqe->len). */
export const IORING_POLL_ADD_MULTI = 1 << 0;
/** sqe->ioprio for ACCEPT. */
export const IORING_ACCEPT_MULTISHOT = 1 << 0;
/** sqe->cancel_flags. */
export const IORING_ASYNC_CANCEL_ALL = 1 << 0;

/** cqe->flags. */
export const IORING_CQE_F_BUFFER = 1 << 0;
/** The SQE stays armed and will post more CQEs (multishot). */
export const IORING_CQE_F_MORE = 1 << 1;
export const IORING_CQE_F_SOCK_NONEMPTY = 1 << 2;
export const IORING_CQE_F_NOTIF = 1 << 3;

/** sq_ring->flags. */
export const IORING_SQ_NEED_WAKEUP = 1 << 0;
export const IORING_SQ_CQ_OVERFLOW = 1 << 1;
export const IORING_SQ_TASKRUN = 1 << 2;

/** io_uring_enter(2) flags. */
export const IORING_ENTER_GETEVENTS = 1 << 0;
export const IORING_ENTER_SQ_WAKEUP = 1 << 1;
export const IORING_ENTER_EXT_ARG = 1 << 3;

/** io_uring_params->features. */
export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
export const IORING_FEAT_NODROP = 1 << 1;
export const IORING_FEAT_SUBMIT_STABLE = 1 << 2;
export const IORING_FEAT_FAST_POLL = 1 << 5;
export const IORING_FEAT_POLL_32BITS = 1 << 6;
export const IORING_FEAT_EXT_ARG = 1 << 8;

/** poll(2) event bits (asm-generic/poll.h), for {@link IoUring.prepPollAdd}. */
export const POLL_EVENTS = {
  POLLIN: 0x0001,
  POLLPRI: 0x0002,
  POLLOUT: 0x0004,
  POLLERR: 0x0008,
  POLLHUP: 0x0010,
  POLLRDHUP: 0x2000,
} as const;

const IORING_OFF_SQ_RING = 0n;
const IORING_OFF_SQES = 0x10000000n;

const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_SHARED = 0x01;
const MAP_POPULATE = 0x08000;
const SOCK_CLOEXEC = 0o2000000;
const EINTR = 4;
const EAGAIN = 11;
const EBUSY = 16;
const EINVAL = 22;

/** sizeof(struct io_uring_sqe) / 4 and sizeof(struct io_uring_cqe) / 4. */
const SQE_WORDS = 16;
const CQE_WORDS = 4;
const PARAMS_SIZE = 120;
/** Largest ring this wrapper sets up; io_uring's own limit is 32768. */
export const IO_URING_MAX_ENTRIES = 32768;

// ---------------------------------------------------------------------------
// The ring's own glibc handle: an i32-result alias of `syscall` for the hot
// path, and a nonblocking one that waits on Deno's FFI thread pool.

const uringSymbols = {
  /** syscall(SYS_io_uring_enter, fd, to_submit, min_complete, flags, argp, argsz) */
  io_uring_enter: {
    name: "syscall",
    parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"],
    result: "i32",
  },
  /** The same, run off the JS thread: used only to park an idle reactor. */
  io_uring_enter_wait: {
    name: "syscall",
    parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

let uringLib: Deno.DynamicLibrary<typeof uringSymbols> | undefined;

function uring(): Deno.DynamicLibrary<typeof uringSymbols>["symbols"] {
  if (uringLib === undefined) {
    let last: unknown;
    for (const path of ["libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"]) {
      try {
        uringLib = Deno.dlopen(path, uringSymbols);
        break;
      } catch (e) {
        last = e;
      }
    }
    if (uringLib === undefined) throw new Error(`cannot load glibc for io_uring: ${String(last)}`);
  }
  return uringLib.symbols;
}

const SYS_IO_URING_ENTER = BigInt(SYS.io_uring_enter);
const B0 = 0n;
const B_GETEVENTS = BigInt(IORING_ENTER_GETEVENTS);
const B_GETEVENTS_EXT = BigInt(IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG);
/** sizeof(struct io_uring_getevents_arg). */
const B_GETEVENTS_ARG_SIZE = 24n;

/** Called once per CQE by {@link IoUring.reap}. */
export type CqeHandler = (userData: number, res: number, flags: number) => void;

/** Options for {@link IoUring}. */
export interface IoUringOptions {
  /** io_uring_setup flags; IORING_SETUP_SUBMIT_ALL is added when the kernel has it. */
  flags?: number;
  /** CQ ring size (IORING_SETUP_CQSIZE); the kernel's default is twice the SQ size. */
  cqEntries?: number;
}

function pointerValue(p: Deno.PointerValue): bigint {
  return BigInt(Deno.UnsafePointer.value(p));
}

/**
 * One io_uring instance: SQ/CQ rings and the SQE array mapped into this
 * process, driven from one JS thread.
 *
 * Threading: only the owning JS thread fills SQEs and moves the SQ tail and
 * the CQ head. {@link waitAsync} runs `io_uring_enter(GETEVENTS)` on another
 * thread; the kernel allows that concurrently with submissions from this
 * thread, and it touches neither tail nor head.
 */
export class IoUring {
  /** The ring's file descriptor. */
  readonly fd: number;
  /** SQ ring size (entries requested, rounded up to a power of two). */
  readonly sqEntries: number;
  /** CQ ring size. */
  readonly cqEntries: number;
  /** io_uring_params.features as reported by the kernel. */
  readonly features: number;
  /** io_uring_setup flags actually in effect. */
  readonly setupFlags: number;

  #bigFd: bigint;
  /** BigInt(i) for i in 0..cqEntries: io_uring_enter arguments without allocation. */
  #bigN: bigint[];
  #enter: Deno.DynamicLibrary<typeof uringSymbols>["symbols"]["io_uring_enter"];
  #enterWait: Deno.DynamicLibrary<typeof uringSymbols>["symbols"]["io_uring_enter_wait"];

  // Mappings (kept for munmap) and the views over them. The views are private
  // and replaced by empty arrays on close so no view of unmapped memory stays
  // reachable through this object.
  #ringPtr: Deno.PointerValue;
  #ringSize: number;
  #sqesPtr: Deno.PointerValue;
  #sqesSize: number;
  #ring: Uint32Array;
  #ringI32: Int32Array;
  #sqes: Uint32Array;

  // Word indices (byte offset / 4) into #ring, from io_uring_params.
  #sqHead: number;
  #sqTail: number;
  #sqFlags: number;
  #sqMask: number;
  #cqHead: number;
  #cqTail: number;
  #cqMask: number;
  #cqes: number;

  /** Next SQ tail to publish (u32, wraps): SQEs in [khead, #sqeTail) are ours or the kernel's. */
  #sqeTail = 0;
  /** Last SQ head read from the kernel; refreshed only when the ring looks full. */
  #sqeHeadCached = 0;
  /** SQ tail last published to the kernel: [published, #sqeTail) are filled but unsubmitted. */
  #sqePublished = 0;
  /** Our copy of the CQ head (u32, wraps); the kernel's copy is written after each reap. */
  #cqHeadLocal = 0;

  // waitAsync state: one outstanding wait at a time, argument block preallocated.
  #waiting = false;
  /** io_uring_getevents_arg (3 words) then __kernel_timespec (2), off V8's heap. */
  #waitArg = new BigUint64Array(new ArrayBuffer(40));
  #waitArgAddr: bigint;
  #closed = false;

  /**
   * Sets up a ring with at least `entries` SQEs.
   * @param entries SQ size, 1..32768 (the kernel rounds up to a power of two)
   */
  constructor(entries: number, options: IoUringOptions = {}) {
    if (!Number.isInteger(entries) || entries < 1 || entries > IO_URING_MAX_ENTRIES) {
      throw new RangeError(`io_uring entries must be an integer in 1..${IO_URING_MAX_ENTRIES}`);
    }
    const lib = uring();
    this.#enter = lib.io_uring_enter;
    this.#enterWait = lib.io_uring_enter_wait;

    // struct io_uring_params: u32 sq_entries, cq_entries, flags, sq_thread_cpu,
    // sq_thread_idle, features, wq_fd, resv[3]; io_sqring_offsets at byte 40;
    // io_cqring_offsets at byte 80; 120 bytes in all.
    // Typed arrays over an explicit ArrayBuffer are never on V8's heap, so
    // their address is stable while the kernel reads and writes them.
    const params = new Uint32Array(new ArrayBuffer(PARAMS_SIZE));
    const paramsAddr = pointerValue(Deno.UnsafePointer.of(params));
    const userFlags = options.flags ?? 0;
    let flags = userFlags | IORING_SETUP_SUBMIT_ALL;
    if (options.cqEntries !== undefined) flags |= IORING_SETUP_CQSIZE;
    let fd = -1;
    for (;;) {
      params.fill(0);
      params[1] = options.cqEntries ?? 0;
      params[2] = flags;
      fd = Number(
        sym.syscall(BigInt(SYS.io_uring_setup), BigInt(entries), paramsAddr, B0, B0, B0, B0),
      );
      if (fd >= 0) break;
      const e = errno();
      // SUBMIT_ALL arrived in 5.18; older kernels reject unknown setup flags.
      const weAdded = (userFlags & IORING_SETUP_SUBMIT_ALL) === 0;
      if (e === EINVAL && weAdded && (flags & IORING_SETUP_SUBMIT_ALL) !== 0) {
        flags &= ~IORING_SETUP_SUBMIT_ALL;
        continue;
      }
      throw new ErrnoError("io_uring_setup", e, `${entries} entries`);
    }
    this.fd = fd;
    this.setupFlags = flags;
    this.sqEntries = params[0] ?? 0;
    this.cqEntries = params[1] ?? 0;
    this.features = params[5] ?? 0;
    const p = (i: number): number => params[i] ?? 0;
    const sqOff = { head: p(10), tail: p(11), mask: p(12), flags: p(14), array: p(16) };
    const cqOff = { head: p(20), tail: p(21), mask: p(22), cqes: p(25) };

    try {
      if ((this.features & IORING_FEAT_SINGLE_MMAP) === 0) {
        // Kernels before 5.4 map SQ and CQ rings apart; sluice does not support them.
        throw new Error("io_uring without IORING_FEAT_SINGLE_MMAP (Linux < 5.4) is not supported");
      }
      this.#ringSize = Math.max(sqOff.array + this.sqEntries * 4, cqOff.cqes + this.cqEntries * 16);
      this.#ringPtr = mmapRing(fd, this.#ringSize, IORING_OFF_SQ_RING, "SQ/CQ ring");
      this.#sqesSize = this.sqEntries * SQE_WORDS * 4;
      try {
        this.#sqesPtr = mmapRing(fd, this.#sqesSize, IORING_OFF_SQES, "SQE array");
      } catch (e) {
        sym.munmap(this.#ringPtr, BigInt(this.#ringSize));
        throw e;
      }
    } catch (e) {
      sym.close(fd);
      throw e;
    }
    const ringBuf = Deno.UnsafePointerView.getArrayBuffer(
      this.#ringPtr as Deno.PointerObject,
      this.#ringSize,
    );
    this.#ring = new Uint32Array(ringBuf);
    this.#ringI32 = new Int32Array(ringBuf);
    this.#sqes = new Uint32Array(
      Deno.UnsafePointerView.getArrayBuffer(this.#sqesPtr as Deno.PointerObject, this.#sqesSize),
    );
    this.#sqHead = sqOff.head >>> 2;
    this.#sqTail = sqOff.tail >>> 2;
    this.#sqFlags = sqOff.flags >>> 2;
    this.#sqMask = this.#ring[sqOff.mask >>> 2] ?? 0;
    this.#cqHead = cqOff.head >>> 2;
    this.#cqTail = cqOff.tail >>> 2;
    this.#cqMask = this.#ring[cqOff.mask >>> 2] ?? 0;
    this.#cqes = cqOff.cqes >>> 2;

    // The SQ array indirection is set to the identity once: SQE i sits in
    // slot i, so submissions never touch the array again (as liburing does).
    const array = sqOff.array >>> 2;
    for (let i = 0; i < this.sqEntries; i++) this.#ring[array + i] = i;
    this.#sqeTail = this.#sqePublished = Atomics.load(this.#ring, this.#sqTail);
    this.#sqeHeadCached = Atomics.load(this.#ring, this.#sqHead);
    this.#cqHeadLocal = Atomics.load(this.#ring, this.#cqHead);

    this.#bigFd = BigInt(fd);
    this.#bigN = new Array<bigint>(this.cqEntries + 1);
    for (let i = 0; i <= this.cqEntries; i++) this.#bigN[i] = BigInt(i);
    this.#waitArgAddr = pointerValue(Deno.UnsafePointer.of(this.#waitArg));
  }

  // -------------------------------------------------------------------------
  // Submission side

  /**
   * Claims the next free SQE and returns its index, or -1 when the SQ ring is
   * full (submit, reap, and try again). Used by the `prep*` methods, which
   * write all 64 bytes of the SQE; a claimed SQE must be filled by one.
   */
  getSqe(): number {
    const tail = this.#sqeTail;
    if (((tail - this.#sqeHeadCached) >>> 0) >= this.sqEntries) {
      this.#sqeHeadCached = Atomics.load(this.#ring, this.#sqHead);
      if (((tail - this.#sqeHeadCached) >>> 0) >= this.sqEntries) return -1;
    }
    this.#sqeTail = (tail + 1) >>> 0;
    return tail & this.#sqMask;
  }

  /** Free SQE slots. */
  sqSpace(): number {
    this.#sqeHeadCached = Atomics.load(this.#ring, this.#sqHead);
    return this.sqEntries - ((this.#sqeTail - this.#sqeHeadCached) >>> 0);
  }

  /** SQEs prepared but not yet handed to the kernel by {@link submit}. */
  sqPending(): number {
    return (this.#sqeTail - this.#sqePublished) >>> 0;
  }

  /**
   * Writes all 16 words of SQE `i`. 64-bit fields are split into two u32
   * words (no BigInt); `user_data` keeps only its low 32 bits.
   */
  #fill(
    i: number,
    opcode: number,
    ioprio: number,
    fd: number,
    off: number,
    addr: number,
    len: number,
    opFlags: number,
    userData: number,
  ): void {
    const s = this.#sqes;
    const w = i * SQE_WORDS;
    s[w] = opcode | (ioprio << 16); // opcode u8, flags u8 (0), ioprio u16
    s[w + 1] = fd;
    if (off < 0) {
      // -1 means "current file position" for READ/WRITE: all 64 bits set.
      s[w + 2] = 0xffffffff;
      s[w + 3] = 0xffffffff;
    } else {
      s[w + 2] = off >>> 0;
      s[w + 3] = (off / 0x100000000) >>> 0;
    }
    s[w + 4] = addr >>> 0;
    s[w + 5] = (addr / 0x100000000) >>> 0;
    s[w + 6] = len;
    s[w + 7] = opFlags; // rw_flags / fsync_flags / poll32_events / msg_flags / ...
    s[w + 8] = userData;
    s[w + 9] = 0; // user_data high half
    s[w + 10] = 0; // buf_index u16, personality u16
    s[w + 11] = 0; // splice_fd_in / file_index
    s[w + 12] = 0; // addr3
    s[w + 13] = 0;
    s[w + 14] = 0; // __pad2
    s[w + 15] = 0;
  }

  /**
   * Prepares an SQE for any opcode from its generic fields: `off` (sqe->off
   * or addr2, -1 for all ones), `addr`, `len`, `opFlags` (the op-specific
   * u32 at byte 28: rw_flags, msg_flags, timeout_flags, ...) and `ioprio`.
   * Everything else is zero. Returns the SQE index, or -1 when full.
   */
  prep(
    opcode: number,
    fd: number,
    off: number,
    addr: number,
    len: number,
    opFlags: number,
    userData: number,
    ioprio = 0,
  ): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, opcode, ioprio, fd, off, addr, len, opFlags, userData);
    return i;
  }

  /** Sets sqe->flags (IOSQE_*) on a prepared SQE, e.g. IOSQE_IO_LINK. */
  setSqeFlags(sqe: number, flags: number): void {
    const w = sqe * SQE_WORDS;
    const word = this.#sqes[w] ?? 0;
    this.#sqes[w] = (word & 0xffff00ff) | ((flags & 0xff) << 8);
  }

  /** IORING_OP_NOP. Returns the SQE index, or -1 when the SQ ring is full. */
  prepNop(userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_NOP, 0, -1, 0, 0, 0, 0, userData);
    return i;
  }

  /** IORING_OP_READ of `len` bytes at file `offset` (-1: current position) into `addr`. */
  prepRead(fd: number, addr: number, len: number, offset: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_READ, 0, fd, offset, addr, len, 0, userData);
    return i;
  }

  /** IORING_OP_WRITE of `len` bytes from `addr` at file `offset` (-1: current position). */
  prepWrite(fd: number, addr: number, len: number, offset: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_WRITE, 0, fd, offset, addr, len, 0, userData);
    return i;
  }

  /** IORING_OP_READV: `nr` struct iovec at `iovecAddr`. */
  prepReadv(fd: number, iovecAddr: number, nr: number, offset: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_READV, 0, fd, offset, iovecAddr, nr, 0, userData);
    return i;
  }

  /** IORING_OP_WRITEV: `nr` struct iovec at `iovecAddr`. */
  prepWritev(fd: number, iovecAddr: number, nr: number, offset: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_WRITEV, 0, fd, offset, iovecAddr, nr, 0, userData);
    return i;
  }

  /** IORING_OP_FSYNC of the whole file; `datasync` sets IORING_FSYNC_DATASYNC. */
  prepFsync(fd: number, datasync: boolean, userData: number): number {
    const i = this.getSqe();
    const flags = datasync ? IORING_FSYNC_DATASYNC : 0;
    if (i >= 0) this.#fill(i, IORING_OP_FSYNC, 0, fd, 0, 0, 0, flags, userData);
    return i;
  }

  /**
   * IORING_OP_FALLOCATE. The kernel takes the offset in sqe->off, the
   * length in sqe->addr and the mode (FALLOC_FL_*) in sqe->len.
   */
  prepFallocate(fd: number, mode: number, offset: number, len: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_FALLOCATE, 0, fd, offset, len, mode, 0, userData);
    return i;
  }

  /**
   * IORING_OP_POLL_ADD for `mask` (POLL_EVENTS bits). With `multishot` the
   * poll stays armed and each CQE carries IORING_CQE_F_MORE while it does;
   * a CQE without F_MORE means the poll ended and must be re-armed.
   */
  prepPollAdd(fd: number, mask: number, userData: number, multishot = false): number {
    const i = this.getSqe();
    const len = multishot ? IORING_POLL_ADD_MULTI : 0;
    if (i >= 0) this.#fill(i, IORING_OP_POLL_ADD, 0, fd, 0, 0, len, mask, userData);
    return i;
  }

  /** IORING_OP_POLL_REMOVE of the poll submitted with `targetUserData`. */
  prepPollRemove(targetUserData: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_POLL_REMOVE, 0, -1, 0, targetUserData, 0, 0, userData);
    return i;
  }

  /** IORING_OP_ASYNC_CANCEL of the request submitted with `targetUserData`. */
  prepCancel(targetUserData: number, userData: number, cancelFlags = 0): number {
    const i = this.getSqe();
    if (i >= 0) {
      this.#fill(i, IORING_OP_ASYNC_CANCEL, 0, -1, 0, targetUserData, 0, cancelFlags, userData);
    }
    return i;
  }

  /** IORING_OP_RECV of up to `len` bytes into `addr`; `flags` are MSG_* flags. */
  prepRecv(fd: number, addr: number, len: number, flags: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_RECV, 0, fd, 0, addr, len, flags, userData);
    return i;
  }

  /** IORING_OP_SEND of `len` bytes from `addr`; `flags` are MSG_* flags. */
  prepSend(fd: number, addr: number, len: number, flags: number, userData: number): number {
    const i = this.getSqe();
    if (i >= 0) this.#fill(i, IORING_OP_SEND, 0, fd, 0, addr, len, flags, userData);
    return i;
  }

  /**
   * IORING_OP_ACCEPT on listening socket `fd`; the peer address is not
   * returned. `flags` are accept4(2) flags (SOCK_CLOEXEC by default); with
   * `multishot` one SQE accepts until cancelled (IORING_CQE_F_MORE).
   */
  prepAccept(fd: number, userData: number, flags = SOCK_CLOEXEC, multishot = false): number {
    const i = this.getSqe();
    const ioprio = multishot ? IORING_ACCEPT_MULTISHOT : 0;
    if (i >= 0) this.#fill(i, IORING_OP_ACCEPT, ioprio, fd, 0, 0, 0, flags, userData);
    return i;
  }

  /**
   * Hands all prepared SQEs to the kernel in one io_uring_enter and returns
   * how many it took. Returns 0 without a syscall when nothing is pending,
   * and 0 when the kernel pushes back (EAGAIN/EBUSY: reap CQEs first; the
   * SQEs stay queued and go with the next submit).
   */
  submit(): number {
    return this.#submit(B0, B0);
  }

  /** Submits prepared SQEs and waits until at least `minComplete` CQEs are ready. */
  submitAndWait(minComplete: number): number {
    return this.#submit(this.#big(minComplete), minComplete > 0 ? B_GETEVENTS : B0);
  }

  #submit(minComplete: bigint, flags: bigint): number {
    this.#assertOpen();
    const pending = (this.#sqeTail - this.#sqePublished) >>> 0;
    if (pending === 0 && flags === B0) return 0;
    // Release store: SQE contents become visible before the tail that covers them.
    Atomics.store(this.#ring, this.#sqTail, this.#sqeTail);
    this.#sqePublished = this.#sqeTail;
    // The kernel takes everything between its head and the tail we just
    // published, including SQEs a pushed-back call left behind.
    const toSubmit = (this.#sqeTail - Atomics.load(this.#ring, this.#sqHead)) >>> 0;
    for (;;) {
      const r = this.#enter(
        SYS_IO_URING_ENTER,
        this.#bigFd,
        this.#bigN[toSubmit] ?? BigInt(toSubmit),
        minComplete,
        flags,
        B0,
        B0,
      );
      if (r >= 0) return r;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN || e === EBUSY) return 0;
      throw new ErrnoError("io_uring_enter", e, `ring fd ${this.fd}`);
    }
  }

  #big(n: number): bigint {
    return this.#bigN[n] ?? BigInt(n);
  }

  // -------------------------------------------------------------------------
  // Completion side

  /** CQEs posted by the kernel and not yet reaped. */
  cqReady(): number {
    return (Atomics.load(this.#ring, this.#cqTail) - this.#cqHeadLocal) >>> 0;
  }

  /**
   * Calls `handler(userData, res, flags)` for up to `max` ready CQEs and
   * returns how many it handled. `res` < 0 is -errno. The handler may
   * prepare and submit new SQEs; it must not call reap itself.
   */
  reap(handler: CqeHandler, max = 0x7fffffff): number {
    const ring = this.#ring;
    const tail = Atomics.load(ring, this.#cqTail); // acquire: CQE bodies before tail
    let head = this.#cqHeadLocal;
    let n = 0;
    try {
      while (head !== tail && n < max) {
        const w = this.#cqes + (head & this.#cqMask) * CQE_WORDS;
        // struct io_uring_cqe: u64 user_data (low half used), s32 res, u32 flags
        const userData = ring[w] ?? 0;
        const res = this.#ringI32[w + 2] ?? 0;
        const flags = ring[w + 3] ?? 0;
        head = (head + 1) >>> 0;
        n++;
        handler(userData, res, flags);
      }
    } finally {
      // Release the slots to the kernel even if a handler threw.
      this.#cqHeadLocal = head;
      Atomics.store(ring, this.#cqHead, head);
    }
    if (n > 0 && (ring[this.#sqFlags] ?? 0) & IORING_SQ_CQ_OVERFLOW) {
      // CQEs that did not fit wait in the kernel (IORING_FEAT_NODROP); a
      // GETEVENTS enter moves them into the ring space we just freed.
      this.#submit(B0, B_GETEVENTS);
    }
    return n;
  }

  /**
   * Waits for at least `minComplete` CQEs on Deno's FFI thread pool
   * (`nonblocking` io_uring_enter, ~6-8 us of overhead: for parking an idle
   * reactor, never per I/O). Resolves to the number of CQEs ready, which is
   * below `minComplete` after `timeoutMs` elapsed or when a signal
   * interrupted the wait. Only one wait may be outstanding; submissions
   * from this thread may continue meanwhile.
   *
   * The wait runs in another task, so the ring must not be
   * IORING_SETUP_SINGLE_ISSUER (the kernel refuses other tasks) and should
   * not be IORING_SETUP_COOP_TASKRUN: completions that need task work (poll
   * wake-ups, for one) are posted by the submitting thread, and without the
   * default signal-style notification an idle submitter never posts them.
   */
  waitAsync(minComplete: number, timeoutMs?: number): Promise<number> {
    this.#assertOpen();
    if ((this.setupFlags & IORING_SETUP_SINGLE_ISSUER) !== 0) {
      throw new Error("io_uring waitAsync needs a ring without IORING_SETUP_SINGLE_ISSUER");
    }
    if (this.#waiting) throw new Error("io_uring waitAsync is already outstanding on this ring");
    const ready = this.cqReady();
    if (ready >= minComplete) return Promise.resolve(ready);
    let flags = B_GETEVENTS;
    let argp = B0;
    let argsz = B0;
    if (timeoutMs !== undefined) {
      if ((this.features & IORING_FEAT_EXT_ARG) === 0) {
        throw new Error("io_uring waitAsync timeout needs IORING_FEAT_EXT_ARG (Linux 5.11)");
      }
      const ms = Math.max(0, Math.floor(timeoutMs));
      const a = this.#waitArg;
      a[0] = 0n; // sigmask
      a[1] = 0n; // sigmask_sz, pad
      a[2] = this.#waitArgAddr + 24n; // ts -> the timespec right after
      a[3] = BigInt(Math.floor(ms / 1000)); // tv_sec
      a[4] = BigInt((ms % 1000) * 1_000_000); // tv_nsec
      flags = B_GETEVENTS_EXT;
      argp = this.#waitArgAddr;
      argsz = B_GETEVENTS_ARG_SIZE;
    }
    this.#waiting = true;
    // errno of the FFI thread is not visible here, so the result is not
    // decoded: ETIME, EINTR and success all end in "look at the CQ ring".
    return this.#enterWait(
      SYS_IO_URING_ENTER,
      this.#bigFd,
      B0,
      this.#big(minComplete),
      flags,
      argp,
      argsz,
    ).then(() => {
      this.#waiting = false;
      return this.cqReady();
    }, (e: unknown) => {
      this.#waiting = false;
      throw e;
    });
  }

  /** True while a {@link waitAsync} is outstanding. */
  get waiting(): boolean {
    return this.#waiting;
  }

  /** True once {@link close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error("io_uring is closed");
  }

  /**
   * Unmaps the rings and closes the ring fd; the kernel cancels requests
   * still in flight. Throws while a {@link waitAsync} is outstanding: its
   * thread would wait on a ring that no longer exists, so wake it first (a
   * NOP or an eventfd poll) and await it.
   */
  close(): void {
    if (this.#closed) return;
    if (this.#waiting) throw new Error("io_uring close while waitAsync is outstanding");
    this.#closed = true;
    // Drop our views before unmapping so nothing reachable points at the pages.
    this.#ring = new Uint32Array(0);
    this.#ringI32 = new Int32Array(0);
    this.#sqes = new Uint32Array(0);
    sym.munmap(this.#sqesPtr, BigInt(this.#sqesSize));
    sym.munmap(this.#ringPtr, BigInt(this.#ringSize));
    sym.close(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function mmapRing(fd: number, size: number, offset: bigint, what: string): Deno.PointerObject {
  const p = sym.mmap(
    null,
    BigInt(size),
    PROT_READ | PROT_WRITE,
    MAP_SHARED | MAP_POPULATE,
    fd,
    offset,
  );
  // MAP_FAILED is (void *)-1.
  if (p === null || Deno.UnsafePointer.value(p) === 0xffffffffffffffffn) {
    throw new ErrnoError("mmap", errno(), `io_uring ${what}, ${size} bytes`);
  }
  return p;
}

/** Returns `res` when it is a success (>= 0) and throws an ErrnoError for -errno. */
export function checkCqe(call: string, res: number): number {
  if (res < 0) throw new ErrnoError(call, -res);
  return res;
}

/**
 * The file bdev: a regular file or a block device served through the
 * reactor's io_uring (SPDK's bdev_aio and bdev_uring in one module).
 *
 * - The file is opened O_DIRECT when the filesystem supports it (statx
 *   STATX_DIOALIGN says so and gives the alignment); otherwise (tmpfs, or a
 *   kernel that does not report the alignment) buffered, shown as
 *   `"direct_io": false` in `bdev_get_bdevs`.
 * - Unaligned buffers: O_DIRECT needs every vector's address and length
 *   aligned. Rather than bouncing through copies, an unaligned I/O goes to a
 *   second descriptor of the same file opened without O_DIRECT, still
 *   through io_uring. This is the simplest correct choice: the kernel keeps
 *   the page cache coherent with direct I/O (a direct read writes back dirty
 *   cached pages of its range first, a direct write invalidates them), one
 *   fdatasync covers both descriptors (it is per inode), and no bounce pool
 *   needs sizing, waiting or copying. Consumers that care about speed align
 *   their buffers to `requiredAlignment`.
 * - Data path: no allocation per I/O. Per-slot state lives in typed arrays
 *   indexed by `io.slot`; vectored I/O uses a per-slot iovec table
 *   (BDEV_IO_MAX_IOVS x 16 bytes) in native memory, mapped lazily so only the
 *   pages touched cost memory. Short reads and writes continue with the
 *   remainder; a read that hits end of file (the file shrank) fails with EIO.
 * - Unmap and write_zeroes use IORING_OP_FALLOCATE (punch hole / zero range,
 *   keeping the size; both also work on block devices, where the kernel turns
 *   them into discard-with-zeroing and write-zeroes), falling back down the
 *   chain when the filesystem answers EOPNOTSUPP, and to writing zeroes from
 *   a shared zero buffer at the end.
 *
 * @example
 * ```ts
 * import { BdevRegistry, runIo } from "../../bdev/mod.ts";
 * import { Reactor } from "../../reactor/mod.ts";
 * import { createFileBdev, deleteFileBdev } from "./file.ts";
 *
 * const registry = new BdevRegistry();
 * const reactor = new Reactor();
 * const running = reactor.run();
 * createFileBdev(registry, { name: "File0", filename: "/var/tmp/disk.img" });
 * const desc = registry.open("File0", true);
 * const ch = desc.getIoChannel(reactor);
 * const buf = new Uint8Array(4096);
 * await runIo(ch, (io) => ch.read(io, buf, 0, 8));
 * ch.close();
 * desc.close();
 * await deleteFileBdev(registry, "File0");
 * await reactor.stop();
 * await running;
 * reactor.close();
 * ```
 * @module
 */
import type { FileReplicaSpec } from "../../bdev/replica.ts";
import {
  BDEV_IO_MAX_IOVS,
  type BdevCompleter,
  BdevError,
  type BdevFnTable,
  BdevInvalidError,
  type BdevIo,
  BdevIoStatus,
  BdevIoType,
  type BdevModuleChannel,
  type BdevRegistry,
  type IoThread,
  pollerName,
  type RpcCall,
  validateBdevName,
} from "../../bdev/mod.ts";
import { Reactor } from "../../reactor/mod.ts";
import type { IoUring } from "../../../ffi/io_uring.ts";
import { addressOf, mapAnonymous, type Mapping } from "../../../ffi/memory.ts";
import { Errno, errnoName } from "../../../ffi/errno.ts";
import {
  cstr,
  errno,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  O_CLOEXEC,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  sym,
  syscall,
} from "../../../ffi/libc.ts";

/** Parameters of bdev_file_create. */
export interface FileCreateParams {
  /** Bdev name. */
  name: string;
  /** Path of a regular file or a block device; it must exist. */
  filename: string;
  /**
   * Block size in bytes: a power of two from 512 to 65536 and a multiple of
   * the O_DIRECT alignment. Default: 512, or the device's logical block size
   * when that is larger.
   */
  blockSize?: number;
  /** RFC 4122 UUID; generated when absent. */
  uuid?: string;
  /** Open the file read-only; the bdev then serves only reads and flushes. */
  readonly?: boolean;
  /**
   * Try O_DIRECT (default true). False forces buffered I/O through the page
   * cache, e.g. to compare with fio --direct=0.
   */
  direct?: boolean;
}

/** What {@link openFileTarget} found out about the file. */
export interface FileTarget {
  filename: string;
  /** The descriptor for aligned I/O (O_DIRECT when `direct`). */
  fd: number;
  /** A descriptor without O_DIRECT for unaligned I/O; equals `fd` when not `direct`. */
  bufferedFd: number;
  direct: boolean;
  /** Why O_DIRECT is off, for dumpInfoJson; "" when on. */
  directOffReason: string;
  blockDevice: boolean;
  sizeBytes: number;
  /** O_DIRECT alignment of buffer addresses (1 when not direct). */
  memAlign: number;
  /** O_DIRECT alignment of file offsets and lengths (1 when not direct). */
  offsetAlign: number;
  /** Logical block size of a block device; 0 for a regular file. */
  logicalBlockSize: number;
}

// statx(2): AT_FDCWD-less form on an open fd.
const SYS_STATX = 332;
const AT_EMPTY_PATH = 0x1000;
const STATX_BASIC_STATS = 0x7ff;
const STATX_DIOALIGN = 0x2000;
const STATX_SIZE_BYTES = 256;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFBLK = 0o060000;
// <linux/fs.h> ioctls.
const BLKSSZGET = 0x1268;
const BLKGETSIZE64 = 0x80081272;

/** The longest single READ/WRITE submitted; the rest continues as a short transfer. */
const MAX_RW_BYTES = 1 << 30;
/** Bytes of the shared zero buffer for write-zeroes by writing (never touched: zero pages). */
const ZERO_BUFFER_BYTES = 1 << 20;
/** Bytes of one slot's iovec table. */
const IOV_TABLE_BYTES = BDEV_IO_MAX_IOVS * 16;
const TWO_32 = 0x1_0000_0000;
/** The longest path accepted (PATH_MAX). */
const PATH_MAX = 4096;

// What a slot's outstanding SQE does.
const OP_RW = 1;
const OP_FSYNC = 2;
const OP_FALLOCATE = 3;
const OP_ZERO_WRITE = 4;

const PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const ZERO_RANGE = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

// ---------------------------------------------------------------------------
// Control path: opening and probing the file.

function openError(path: string, e: number): BdevError {
  const why = e === Errno.ENOENT
    ? "no such file or directory"
    : e === Errno.EACCES || e === Errno.EPERM
    ? "permission denied"
    : e === Errno.EISDIR
    ? "is a directory"
    : e === Errno.EROFS
    ? "read-only filesystem (use readonly)"
    : "cannot open";
  return new BdevError(`filename "${path}": ${why} (${errnoName(e)})`, -e);
}

function openFd(path: string, flags: number): number {
  return sym.open(cstr(path), flags, 0);
}

interface Statx {
  mode: number;
  size: number;
  /** STATX_DIOALIGN reported. */
  dioKnown: boolean;
  dioMemAlign: number;
  dioOffsetAlign: number;
}

function statxFd(fd: number, path: string): Statx {
  const buf = new Uint8Array(STATX_SIZE_BYTES);
  const empty = cstr("");
  const r = syscall(
    SYS_STATX,
    fd,
    Deno.UnsafePointer.value(Deno.UnsafePointer.of(empty)),
    AT_EMPTY_PATH,
    STATX_BASIC_STATS | STATX_DIOALIGN,
    Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)),
  );
  if (r < 0) throw new BdevError(`filename "${path}": statx failed (${errnoName(-r)})`, r);
  const v = new DataView(buf.buffer);
  const mask = v.getUint32(0, true);
  return {
    mode: v.getUint16(28, true),
    size: Number(v.getBigUint64(40, true)),
    dioKnown: (mask & STATX_DIOALIGN) !== 0,
    dioMemAlign: v.getUint32(152, true),
    dioOffsetAlign: v.getUint32(156, true),
  };
}

function ioctlU64(fd: number, request: number, path: string, what: string): number {
  const out = new BigUint64Array(1);
  const r = sym.ioctl(fd, BigInt(request), Deno.UnsafePointer.of(out));
  if (r < 0) {
    const e = errno();
    throw new BdevError(`filename "${path}": ${what} failed (${errnoName(e)})`, -e);
  }
  return Number(out[0]);
}

function ioctlI32(fd: number, request: number, path: string, what: string): number {
  const out = new Int32Array(1);
  const r = sym.ioctl(fd, BigInt(request), Deno.UnsafePointer.of(out));
  if (r < 0) {
    const e = errno();
    throw new BdevError(`filename "${path}": ${what} failed (${errnoName(e)})`, -e);
  }
  return out[0] ?? 0;
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Opens `path` and finds its type, size and O_DIRECT alignment. Closes what it opened on error. */
function openFileTarget(path: string, readonly: boolean, wantDirect: boolean): FileTarget {
  const base = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  let direct = wantDirect;
  let reason = wantDirect ? "" : "disabled by the direct parameter";
  let fd = openFd(path, base | (direct ? O_DIRECT : 0));
  if (fd < 0) {
    const e = errno();
    // Filesystems without O_DIRECT refuse the flag at open with EINVAL.
    if (!direct || e !== Errno.EINVAL) throw openError(path, e);
    direct = false;
    reason = "the filesystem refused O_DIRECT (EINVAL)";
    fd = openFd(path, base);
    if (fd < 0) throw openError(path, errno());
  }
  const fds = [fd];
  try {
    const st = statxFd(fd, path);
    const type = st.mode & S_IFMT;
    if (type !== S_IFREG && type !== S_IFBLK) {
      throw new BdevInvalidError(`filename "${path}" is not a regular file or a block device`);
    }
    const blockDevice = type === S_IFBLK;
    let sizeBytes = st.size;
    let logical = 0;
    if (blockDevice) {
      sizeBytes = ioctlU64(fd, BLKGETSIZE64, path, "BLKGETSIZE64");
      logical = ioctlI32(fd, BLKSSZGET, path, "BLKSSZGET");
    }
    let memAlign = 1, offsetAlign = 1;
    if (direct) {
      if (st.dioKnown && st.dioOffsetAlign > 0 && isPow2(st.dioOffsetAlign)) {
        memAlign = Math.max(1, st.dioMemAlign);
        offsetAlign = st.dioOffsetAlign;
      } else if (!st.dioKnown && blockDevice && isPow2(logical)) {
        // Kernels before 6.11 do not report DIOALIGN for block devices.
        memAlign = offsetAlign = logical;
      } else {
        // tmpfs (6.6+) accepts O_DIRECT at open but reports no DIO alignment:
        // its "direct" I/O is the page cache anyway. Without a reported
        // alignment we cannot know what O_DIRECT needs: use buffered I/O.
        reason = st.dioKnown
          ? "the filesystem does not support direct I/O (statx dio_offset_align 0)"
          : "the kernel reports no direct I/O alignment for this file (statx STATX_DIOALIGN)";
        direct = false;
        sym.close(fd);
        fds.length = 0;
        fd = openFd(path, base);
        if (fd < 0) throw openError(path, errno());
        fds.push(fd);
      }
    }
    if (!isPow2(memAlign)) memAlign = 4096; // never seen; keep the masks valid
    let bufferedFd = fd;
    if (direct) {
      bufferedFd = openFd(path, base);
      if (bufferedFd < 0) throw openError(path, errno());
      fds.push(bufferedFd);
    }
    return {
      filename: path,
      fd,
      bufferedFd,
      direct,
      directOffReason: reason,
      blockDevice,
      sizeBytes,
      memAlign,
      offsetAlign,
      logicalBlockSize: logical,
    };
  } catch (e) {
    for (const f of fds) sym.close(f);
    throw e;
  }
}

function validateParams(params: FileCreateParams): void {
  validateBdevName(params.name);
  const f: unknown = params.filename;
  if (typeof f !== "string" || f.length === 0 || f.length > PATH_MAX || f.includes("\0")) {
    throw new BdevInvalidError(
      `filename must be a non-empty path of at most ${PATH_MAX} characters without NUL, got ${
        JSON.stringify(f)
      }`,
    );
  }
  const bs: unknown = params.blockSize;
  if (
    bs !== undefined &&
    (typeof bs !== "number" || !isPow2(bs) || bs < 512 || bs > 65536)
  ) {
    throw new BdevInvalidError(`block_size must be a power of two from 512 to 65536, got ${bs}`);
  }
  for (const k of ["readonly", "direct"] as const) {
    const v: unknown = params[k];
    if (v !== undefined && typeof v !== "boolean") {
      throw new BdevInvalidError(`${k} must be a boolean, got ${JSON.stringify(v)}`);
    }
  }
}

// ---------------------------------------------------------------------------
// Data path.

/** Per-thread state: the reactor's ring, per-slot contexts, the SQ-full queue. */
class FileChannel implements BdevModuleChannel {
  readonly #bdev: FileBdev;
  readonly #t: FileTarget;
  readonly #completer: BdevCompleter;
  readonly #reactor: Reactor;
  readonly #ring: IoUring;
  readonly #handlerId: number;
  /** user_data of slot 0; slot s uses `#udBase + s`. */
  readonly #udBase: number;
  readonly #poller: string;
  readonly #blockSize: number;
  readonly #memMask: number;
  readonly #offMask: number;

  // Per-slot contexts, indexed by io.slot.
  readonly #ios: (BdevIo | null)[];
  readonly #op: Uint8Array;
  /** FALLOCATE mode of the slot's current attempt. */
  readonly #mode: Uint8Array;
  /** Bytes transferred so far (reads, writes, zero writes). */
  readonly #done: Float64Array;
  /** Bytes to transfer in all. */
  readonly #total: Float64Array;
  readonly #iovTable: Mapping;
  readonly #iovWords: Uint32Array;
  readonly #iovTableAddr: number;

  /** I/Os that found the SQ ring full, in FIFO order through `io.next`. */
  #waitHead: BdevIo | null = null;
  #waitTail: BdevIo | null = null;
  #destroyed = false;

  constructor(
    bdev: FileBdev,
    t: FileTarget,
    completer: BdevCompleter,
    reactor: Reactor,
    n: number,
  ) {
    this.#bdev = bdev;
    this.#t = t;
    this.#completer = completer;
    this.#reactor = reactor;
    this.#ring = reactor.ring;
    this.#blockSize = bdev.blockSize;
    this.#memMask = t.memAlign - 1;
    this.#offMask = t.offsetAlign - 1;
    this.#ios = new Array<BdevIo | null>(n).fill(null);
    this.#op = new Uint8Array(n);
    this.#mode = new Uint8Array(n);
    this.#done = new Float64Array(n);
    this.#total = new Float64Array(n);
    // Untouched pages of an anonymous mapping cost nothing: a pool of 512
    // reserves 2 MiB of address space but uses one page per slot that ever
    // did vectored I/O.
    this.#iovTable = mapAnonymous(n * IOV_TABLE_BYTES);
    this.#iovWords = new Uint32Array(this.#iovTable.buffer);
    this.#iovTableAddr = this.#iovTable.address;
    try {
      this.#handlerId = reactor.registerCqeHandler(this.#onCqe);
    } catch (e) {
      this.#iovTable.unmap();
      throw e;
    }
    this.#udBase = Reactor.userData(this.#handlerId, 0);
    this.#poller = pollerName(`file:${bdev.name}`);
    reactor.addPoller(this.#poller, this.#poll);
  }

  /** Starts `io` in its slot. */
  submit(io: BdevIo): void {
    const slot = io.slot;
    this.#ios[slot] = io;
    this.#reactor.ioInFlight++;
    this.#done[slot] = 0;
    const bs = this.#blockSize;
    switch (io.type) {
      case BdevIoType.Read:
      case BdevIoType.Write:
        this.#op[slot] = OP_RW;
        this.#total[slot] = io.numBlocks * bs;
        break;
      case BdevIoType.Flush:
        this.#op[slot] = OP_FSYNC;
        break;
      case BdevIoType.Unmap:
      case BdevIoType.WriteZeroes: {
        const mode = this.#bdev.zeroMode(io.type);
        if (mode === 0) {
          this.#op[slot] = OP_ZERO_WRITE;
          this.#total[slot] = io.numBlocks * bs;
        } else {
          this.#op[slot] = OP_FALLOCATE;
          this.#mode[slot] = mode;
        }
        break;
      }
      default:
        this.#end(slot, io, BdevIoStatus.NotSupported, 0);
        return;
    }
    // Keep FIFO order behind I/Os already waiting for SQ space.
    if (this.#waitHead !== null || !this.#issue(slot, io)) this.#enqueue(io);
    // Submitted from outside the loop (a timer, an RPC) while the reactor
    // sleeps: get the SQE to the kernel now. A no-op flag store otherwise.
    this.#reactor.wake();
  }

  /** Prepares the SQE for the slot's next step; false when the SQ ring is full. */
  #issue(slot: number, io: BdevIo): boolean {
    const t = this.#t;
    const ud = this.#udBase + slot;
    const pos = io.offsetBlocks * this.#blockSize;
    switch (this.#op[slot]) {
      case OP_RW:
        return this.#issueRw(slot, io, ud);
      case OP_FSYNC:
        // fdatasync of the inode: covers writes through both descriptors.
        return this.#ring.prepFsync(t.fd, true, ud) >= 0;
      case OP_FALLOCATE:
        return this.#ring.prepFallocate(
          t.fd,
          this.#mode[slot] ?? 0,
          pos,
          io.numBlocks * this.#blockSize,
          ud,
        ) >= 0;
      case OP_ZERO_WRITE: {
        const done = this.#done[slot] ?? 0;
        const rest = (this.#total[slot] ?? 0) - done;
        const len = rest < ZERO_BUFFER_BYTES ? rest : ZERO_BUFFER_BYTES;
        const at = pos + done;
        // The zero buffer is page-aligned; only a short write can misalign us.
        const fd = ((at | len) & this.#offMask) === 0 ? t.fd : t.bufferedFd;
        return this.#ring.prepWrite(fd, this.#bdev.zeroAddress, len, at, ud) >= 0;
      }
    }
    throw new Error(`file bdev: slot ${slot} has no operation`);
  }

  /** READ/WRITE for one vector, READV/WRITEV for more, from byte `done` of the I/O on. */
  #issueRw(slot: number, io: BdevIo, ud: number): boolean {
    const t = this.#t;
    const ring = this.#ring;
    const isRead = io.type === BdevIoType.Read;
    const skip0 = this.#done[slot] ?? 0;
    // Computed here, not passed in: a double argument to a call that is not
    // inlined is boxed, an allocation per I/O.
    const pos = io.offsetBlocks * this.#blockSize + skip0;
    const memMask = this.#memMask, offMask = this.#offMask;
    if (io.iovcnt === 1) {
      const buf = io.iovs[0] as Uint8Array;
      const addr = addressOf(buf) + skip0;
      let len = buf.byteLength - skip0;
      if (len > MAX_RW_BYTES) len = MAX_RW_BYTES;
      // Bitwise ops keep the low 32 bits exactly: enough for alignment masks.
      const fd = ((addr & memMask) | (len & offMask) | (pos & offMask)) === 0 ? t.fd : t.bufferedFd;
      return (isRead
        ? ring.prepRead(fd, addr, len, pos, ud)
        : ring.prepWrite(fd, addr, len, pos, ud)) >= 0;
    }
    const w = this.#iovWords;
    const first = slot * (IOV_TABLE_BYTES >>> 2);
    let skip = skip0;
    let n = 0;
    let misaligned = pos & offMask;
    for (let i = 0; i < io.iovcnt; i++) {
      const v = io.iovs[i] as Uint8Array;
      let len = v.byteLength;
      if (skip >= len) {
        skip -= len; // done already, or empty
        continue;
      }
      const addr = addressOf(v) + skip;
      len -= skip;
      skip = 0;
      misaligned |= (addr & memMask) | (len & offMask);
      // struct iovec { void *iov_base; size_t iov_len; }: 64-bit fields as two u32.
      const k = first + n * 4;
      w[k] = addr >>> 0;
      w[k + 1] = (addr / TWO_32) >>> 0;
      w[k + 2] = len >>> 0;
      w[k + 3] = (len / TWO_32) >>> 0;
      n++;
    }
    const fd = misaligned === 0 ? t.fd : t.bufferedFd;
    const table = this.#iovTableAddr + slot * IOV_TABLE_BYTES;
    return (isRead
      ? ring.prepReadv(fd, table, n, pos, ud)
      : ring.prepWritev(fd, table, n, pos, ud)) >= 0;
  }

  /** The reactor calls this for each CQE of this channel: `tag` is the slot. */
  readonly #onCqe = (slot: number, res: number): void => {
    const io = this.#ios[slot];
    if (io === undefined || io === null) {
      // A CQE for a slot with nothing in flight is a bug in this module.
      throw new Error(`file bdev "${this.#bdev.name}": CQE (res ${res}) for idle slot ${slot}`);
    }
    switch (this.#op[slot]) {
      case OP_RW:
      case OP_ZERO_WRITE: {
        if (res < 0) return this.#end(slot, io, BdevIoStatus.Failed, -res);
        // No progress: end of file on a read (the file shrank), or a device
        // that takes no more. Retrying would spin.
        if (res === 0) return this.#end(slot, io, BdevIoStatus.Failed, Errno.EIO);
        const done = (this.#done[slot] ?? 0) + res;
        this.#done[slot] = done;
        if (done >= (this.#total[slot] ?? 0)) return this.#end(slot, io, BdevIoStatus.Success, 0);
        // Short transfer: continue with the rest.
        if (!this.#issue(slot, io)) this.#enqueue(io);
        return;
      }
      case OP_FALLOCATE: {
        if (res === -Errno.EOPNOTSUPP) {
          // The filesystem lacks this mode: remember, then take the next way down.
          this.#bdev.fallocateUnsupported(this.#mode[slot] ?? 0);
          const mode = this.#bdev.zeroMode(io.type);
          if (mode === 0) {
            this.#op[slot] = OP_ZERO_WRITE;
            this.#done[slot] = 0;
            this.#total[slot] = io.numBlocks * this.#blockSize;
          } else {
            this.#mode[slot] = mode;
          }
          if (!this.#issue(slot, io)) this.#enqueue(io);
          return;
        }
        if (res < 0) return this.#end(slot, io, BdevIoStatus.Failed, -res);
        return this.#end(slot, io, BdevIoStatus.Success, 0);
      }
      case OP_FSYNC:
        if (res < 0) return this.#end(slot, io, BdevIoStatus.Failed, -res);
        return this.#end(slot, io, BdevIoStatus.Success, 0);
    }
  };

  #end(slot: number, io: BdevIo, status: BdevIoStatus, err: number): void {
    // Clear first: the completion may start a new I/O in this very slot.
    this.#ios[slot] = null;
    this.#op[slot] = 0;
    this.#reactor.ioInFlight--;
    this.#completer.complete(io, status, err);
  }

  #enqueue(io: BdevIo): void {
    io.next = null;
    if (this.#waitTail === null) this.#waitHead = io;
    else this.#waitTail.next = io;
    this.#waitTail = io;
  }

  /** Retries I/Os that found the SQ ring full; the reactor submits at the end of its pass. */
  readonly #poll = (): number => {
    let work = 0;
    while (this.#waitHead !== null) {
      const io = this.#waitHead;
      if (!this.#issue(io.slot, io)) break;
      this.#waitHead = io.next;
      if (this.#waitHead === null) this.#waitTail = null;
      io.next = null;
      work++;
    }
    // Still waiting: report work so the reactor stays awake and submits.
    return this.#waitHead !== null ? work + 1 : work;
  };

  /** I/Os waiting for SQ space (for tests and stats). */
  get waiting(): number {
    let n = 0;
    for (let io = this.#waitHead; io !== null; io = io.next) n++;
    return n;
  }

  destroy(): void {
    if (this.#destroyed) return;
    for (const io of this.#ios) {
      if (io !== null) {
        throw new Error(`file bdev "${this.#bdev.name}": channel destroyed with I/O in flight`);
      }
    }
    this.#destroyed = true;
    this.#reactor.removePoller(this.#poller);
    this.#reactor.unregisterCqeHandler(this.#handlerId);
    this.#iovTable.unmap();
  }
}

/** One file bdev: the descriptors and what the filesystem supports. */
class FileBdev implements BdevFnTable<FileChannel> {
  readonly name: string;
  readonly blockSize: number;
  readonly #t: FileTarget;
  readonly #params: FileCreateParams;
  readonly #zeroBuffer: Mapping;
  /** Address of the shared zero buffer (read by the kernel only). */
  readonly zeroAddress: number;
  uuid = "";
  #punchHole = true;
  #zeroRange = true;
  #closed = false;
  /** A replica borrows the original's descriptors and never closes them. */
  readonly #borrowed: boolean;

  /** `borrowed`: the descriptors belong to the original (a replica: src/bdev/replica.ts). */
  constructor(params: FileCreateParams, t: FileTarget, blockSize: number, borrowed = false) {
    this.#borrowed = borrowed;
    this.name = params.name;
    this.blockSize = blockSize;
    this.#params = params;
    this.#t = t;
    // Never written: every page is the kernel's shared zero page.
    this.#zeroBuffer = mapAnonymous(ZERO_BUFFER_BYTES);
    this.zeroAddress = this.#zeroBuffer.address;
  }

  /** The FALLOCATE mode to try for an unmap or write_zeroes, or 0 to write zeroes. */
  zeroMode(type: BdevIoType): number {
    if (type === BdevIoType.Unmap) {
      return this.#punchHole ? PUNCH_HOLE : this.#zeroRange ? ZERO_RANGE : 0;
    }
    return this.#zeroRange ? ZERO_RANGE : this.#punchHole ? PUNCH_HOLE : 0;
  }

  /** The filesystem answered EOPNOTSUPP to `mode`: do not try it again. */
  fallocateUnsupported(mode: number): void {
    if (mode === PUNCH_HOLE) this.#punchHole = false;
    else if (mode === ZERO_RANGE) this.#zeroRange = false;
  }

  getIoChannel(completer: BdevCompleter, thread: IoThread, poolSize: number): FileChannel {
    if (!(thread instanceof Reactor)) {
      throw new Error(
        `file bdev "${this.name}" needs a Reactor as its I/O thread (it submits through the reactor's io_uring)`,
      );
    }
    if (this.#closed) throw new Error(`file bdev "${this.name}" is destructed`);
    return new FileChannel(this, this.#t, completer, thread, poolSize);
  }

  submitRequest(ch: FileChannel, io: BdevIo): void {
    ch.submit(io);
  }

  destruct(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#borrowed) {
      if (this.#t.bufferedFd !== this.#t.fd) sym.close(this.#t.bufferedFd);
      sym.close(this.#t.fd);
    }
    this.#zeroBuffer.unmap();
  }

  dumpInfoJson(): Record<string, unknown> {
    const t = this.#t;
    return {
      filename: t.filename,
      block_device: t.blockDevice,
      readonly: this.#params.readonly === true,
      direct_io: t.direct,
      ...(t.direct
        ? { dio_mem_align: t.memAlign, dio_offset_align: t.offsetAlign }
        : { direct_io_off_reason: t.directOffReason }),
      ...(t.blockDevice ? { logical_block_size: t.logicalBlockSize } : {}),
      fallocate_punch_hole: this.#punchHole,
      fallocate_zero_range: this.#zeroRange,
    };
  }

  replicaSpec(): FileReplicaSpec {
    return {
      module: "file",
      name: this.name,
      uuid: this.uuid,
      params: { ...this.#params },
      target: { ...this.#t },
      blockSize: this.blockSize,
    };
  }

  writeConfigJson(): RpcCall {
    const p = this.#params;
    return {
      method: "bdev_file_create",
      params: {
        name: p.name,
        filename: p.filename,
        block_size: this.blockSize,
        uuid: this.uuid,
        ...(p.readonly === true ? { readonly: true } : {}),
        ...(p.direct === false ? { direct: false } : {}),
      },
    };
  }
}

/**
 * Opens `params.filename` and registers a file bdev on it; returns its name.
 * @throws {BdevError} with code -ENOENT (and the path) when the file does not exist
 * @throws {BdevInvalidError} for a bad parameter, a file that is neither a
 *   regular file nor a block device, or a size that is not a multiple of the block size
 */
export function createFileBdev(registry: BdevRegistry, params: FileCreateParams): string {
  validateParams(params);
  const own: FileCreateParams = { ...params };
  const t = openFileTarget(own.filename, own.readonly === true, own.direct !== false);
  let fnTable: FileBdev | undefined;
  try {
    // O_DIRECT offsets and lengths must be multiples of the device's logical
    // block size, so each block must be; without O_DIRECT any size works.
    const detected = t.direct ? t.offsetAlign : t.blockDevice ? t.logicalBlockSize : 512;
    const blockSize = own.blockSize ?? Math.min(65536, Math.max(512, detected));
    if (blockSize % t.offsetAlign !== 0) {
      throw new BdevInvalidError(
        `block_size ${blockSize} is not a multiple of the ${t.offsetAlign}-byte direct I/O alignment of "${own.filename}"`,
      );
    }
    if (t.sizeBytes < blockSize) {
      throw new BdevInvalidError(
        `filename "${own.filename}" is ${t.sizeBytes} bytes, smaller than one block of ${blockSize}`,
      );
    }
    if (t.sizeBytes % blockSize !== 0) {
      throw new BdevInvalidError(
        `size of "${own.filename}" (${t.sizeBytes} bytes) is not a multiple of block_size ${blockSize}`,
      );
    }
    fnTable = new FileBdev(own, t, blockSize);
    return registerFile(registry, fnTable, own, t, blockSize);
  } catch (e) {
    if (fnTable !== undefined) fnTable.destruct();
    else {
      if (t.bufferedFd !== t.fd) sym.close(t.bufferedFd);
      sym.close(t.fd);
    }
    throw e;
  }
}

/** Registers a replica of a file bdev over the original's descriptors (src/bdev/replica.ts). */
export function createFileReplica(registry: BdevRegistry, spec: FileReplicaSpec): void {
  const fnTable = new FileBdev(spec.params, spec.target, spec.blockSize, true);
  try {
    registerFile(
      registry,
      fnTable,
      { ...spec.params, uuid: spec.uuid },
      spec.target,
      spec.blockSize,
    );
  } catch (e) {
    fnTable.destruct();
    throw e;
  }
}

function registerFile(
  registry: BdevRegistry,
  fnTable: FileBdev,
  own: FileCreateParams,
  t: FileTarget,
  blockSize: number,
): string {
  const readonly = own.readonly === true;
  const bdev = registry.register({
    name: own.name,
    module: "file",
    productName: t.blockDevice ? "File disk (block device)" : "File disk",
    blockSize,
    numBlocks: t.sizeBytes / blockSize,
    uuid: own.uuid,
    ioTypes: readonly ? [BdevIoType.Read, BdevIoType.Flush] : [
      BdevIoType.Read,
      BdevIoType.Write,
      BdevIoType.Unmap,
      BdevIoType.WriteZeroes,
      BdevIoType.Flush,
    ],
    writeCache: true,
    requiredAlignment: t.direct ? Math.max(t.memAlign, t.offsetAlign) : 1,
    fnTable,
  });
  fnTable.uuid = bdev.uuid;
  return bdev.name;
}

/** Deletes a file bdev (refuses other modules' bdevs); the file stays. */
export async function deleteFileBdev(registry: BdevRegistry, name: string): Promise<void> {
  const bdev = registry.get(name);
  if (bdev.module !== "file") {
    throw new BdevInvalidError(`bdev "${name}" is a ${bdev.module} bdev, not a file bdev`);
  }
  await registry.unregister(name);
}

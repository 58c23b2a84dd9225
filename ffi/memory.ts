/**
 * Native memory: anonymous and shared mappings, memfd, and zero-copy views.
 *
 * A {@link Mapping} owns one mmap(2) region and exposes it as an ArrayBuffer
 * from `Deno.UnsafePointerView.getArrayBuffer`: a true zero-copy view whose
 * lifetime is NOT tied to the mapping. V8 keeps such a buffer (and every view
 * of it) alive after munmap, and touching it then faults the whole process.
 * So callers must drop their views before {@link Mapping.unmap}; as a second
 * line of defence `unmap` detaches the buffer it handed out, which turns every
 * view made from `mapping.buffer` or `mapping.bytes()` into a zero-length view
 * (reads give `undefined`, writes are ignored) instead of a crash. Views made
 * some other way (a second `getArrayBuffer` on the same address) are not
 * covered.
 *
 * {@link addressOf} gives the native address of a view's first byte for
 * building iovecs, SQEs and PRP lists. It is on the data path, so it does
 * not allocate in steady state (see its documentation and the micro-test in
 * memory_test.ts).
 *
 * @example Share bytes between two mappings of one memfd
 * ```ts
 * import { mapShared, memfdCreate } from "./memory.ts";
 * import { close } from "./libc.ts";
 *
 * const fd = memfdCreate("example", 4096);
 * const a = mapShared(fd, 4096);
 * const b = mapShared(fd, 4096);
 * close(fd); // the mappings keep the memory alive
 * a.bytes()[0] = 42;
 * console.log(b.bytes()[0]); // 42
 * a.unmap();
 * b.unmap();
 * ```
 * @module
 */
import { check, cstr, errno, sym } from "./libc.ts";
import { ErrnoError } from "./errno.ts";

/** The x86-64 base page size: mmap offsets and MAP_FIXED addresses must be multiples of it. */
export const PAGE_SIZE = 4096;

/** Pages may not be accessed. */
export const PROT_NONE = 0x0;
/** Pages may be read. */
export const PROT_READ = 0x1;
/** Pages may be written. */
export const PROT_WRITE = 0x2;

/** Share this mapping: stores are visible to every other mapping of the object. */
export const MAP_SHARED = 0x01;
/** Private copy-on-write mapping. */
export const MAP_PRIVATE = 0x02;
/** Place the mapping exactly at the given address, replacing what was there. */
export const MAP_FIXED = 0x10;
/** The mapping is not backed by any file; contents start zeroed. */
export const MAP_ANONYMOUS = 0x20;
/** Do not reserve swap space for this mapping. */
export const MAP_NORESERVE = 0x4000;
/** Prefault page tables (read-ahead for files). */
export const MAP_POPULATE = 0x8000;

/** memfd_create(2): set close-on-exec on the new fd. */
export const MFD_CLOEXEC = 0x0001;
/** memfd_create(2): allow fcntl(F_ADD_SEALS) on the memfd. */
export const MFD_ALLOW_SEALING = 0x0002;

/** mmap(2) returns MAP_FAILED, `(void *) -1`, on error. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** struct stat on x86-64: st_mode (u32) at 24, st_size (i64) at 48, 144 bytes in all. */
const STAT_SIZE = 144;
const STAT_MODE_OFFSET = 24;
const STAT_SIZE_OFFSET = 48;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

/**
 * Base address of each ArrayBuffer already seen by {@link addressOf}. A
 * WeakMap so the cache never keeps a buffer alive.
 */
const baseAddresses = new WeakMap<ArrayBufferLike, number>();

/**
 * One mmap(2) region, owned: {@link Mapping.unmap} releases it.
 *
 * Drop every view of `buffer` before calling `unmap`: see the module
 * documentation for why, and what `unmap` does to soften the mistake.
 */
export class Mapping {
  /** Start of the region, for FFI calls. */
  readonly pointer: Deno.PointerObject;
  /** Start of the region as a number (x86-64 user addresses fit in 47 bits). */
  readonly address: number;
  /** Length of the region in bytes (as requested; the kernel rounds up to pages). */
  readonly length: number;
  #buffer: ArrayBuffer;
  #closed = false;
  readonly #restoreOnUnmap: boolean;

  /**
   * Wraps a region that is already mapped and takes ownership of it.
   * Prefer {@link mapAnonymous} and {@link mapShared}.
   *
   * @param pointer start of the region
   * @param length length in bytes, > 0
   * @param restoreOnUnmap when true, `unmap` puts private anonymous zero
   *   pages back over the range (MAP_FIXED) instead of munmap, so memory the
   *   mapping was laid over (e.g. pages of a WebAssembly.Memory) stays valid
   */
  constructor(pointer: Deno.PointerObject, length: number, restoreOnUnmap = false) {
    assertLength(length);
    this.pointer = pointer;
    this.address = Number(Deno.UnsafePointer.value(pointer));
    this.length = length;
    this.#restoreOnUnmap = restoreOnUnmap;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, length);
    // Seed the addressOf cache: we already know where this buffer lives.
    baseAddresses.set(this.#buffer, this.address);
  }

  /** True once {@link unmap} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The whole region as a zero-copy ArrayBuffer (the same object on every
   * call). Writing into a mapping made without PROT_WRITE faults the process.
   * @throws {Error} if the mapping is unmapped
   */
  get buffer(): ArrayBuffer {
    this.#assertOpen();
    return this.#buffer;
  }

  /**
   * A zero-copy Uint8Array over `[offset, offset + length)` of the region.
   * @throws {Error} if the mapping is unmapped
   * @throws {RangeError} if the range is outside the mapping
   */
  bytes(offset = 0, length: number = this.length - offset): Uint8Array<ArrayBuffer> {
    this.#assertOpen();
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
      length < 0 || offset + length > this.length
    ) {
      throw new RangeError(
        `Mapping range [${offset}, +${length}) is outside the mapping of ${this.length} bytes`,
      );
    }
    return new Uint8Array(this.#buffer, offset, length);
  }

  /**
   * Releases the region. Idempotent: later calls do nothing. Detaches
   * `buffer` first, so views made from it become zero-length rather than
   * dangling.
   * @throws {ErrnoError} if munmap (or the restoring mmap) fails; the
   *   mapping counts as closed anyway
   */
  unmap(): void {
    if (this.#closed) return;
    this.#closed = true;
    baseAddresses.delete(this.#buffer);
    // transfer(0) detaches the external buffer without copying a byte.
    this.#buffer.transfer(0);
    if (this.#restoreOnUnmap) {
      const p = sym.mmap(
        this.pointer,
        BigInt(this.length),
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
        -1,
        0n,
      );
      checkMmap(p, `restore ${this.length} bytes at 0x${this.address.toString(16)}`);
    } else {
      check(
        "munmap",
        sym.munmap(this.pointer, BigInt(this.length)),
        `${this.length} bytes at 0x${this.address.toString(16)}`,
      );
    }
  }

  /** Same as {@link unmap}, for `using`. */
  [Symbol.dispose](): void {
    this.unmap();
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new Error(`Mapping at 0x${this.address.toString(16)} is already unmapped`);
    }
  }
}

/** Options for {@link mapAnonymous}. */
export interface MapAnonymousOptions {
  /** PROT_* bits; PROT_READ | PROT_WRITE by default. */
  prot?: number;
  /** MAP_POPULATE: fault every page in now, not on first touch. */
  populate?: boolean;
}

/**
 * A private anonymous mapping of `bytes` zeroed bytes.
 * @throws {RangeError} if `bytes` is not a positive safe integer
 * @throws {ErrnoError} if mmap fails (e.g. ENOMEM)
 */
export function mapAnonymous(bytes: number, options: MapAnonymousOptions = {}): Mapping {
  assertLength(bytes);
  const flags = MAP_PRIVATE | MAP_ANONYMOUS | (options.populate ? MAP_POPULATE : 0);
  const p = sym.mmap(null, BigInt(bytes), options.prot ?? PROT_READ | PROT_WRITE, flags, -1, 0n);
  return new Mapping(checkMmap(p, `anonymous ${bytes} bytes`), bytes);
}

/**
 * memfd_create(2) with MFD_CLOEXEC, sized to `bytes` with ftruncate(2).
 * The caller owns the returned fd.
 *
 * @param name shows in /proc/<pid>/fd as `/memfd:<name>`; at most 249 bytes
 * @param bytes size of the file, >= 0
 * @param flags MFD_* flags; MFD_CLOEXEC by default
 * @throws {ErrnoError} if memfd_create or ftruncate fails
 */
export function memfdCreate(name: string, bytes: number, flags: number = MFD_CLOEXEC): number {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new RangeError(`memfd size must be a non-negative integer, got ${bytes}`);
  }
  const fd = check("memfd_create", sym.memfd_create(cstr(name), flags), name);
  const r = sym.ftruncate(fd, BigInt(bytes));
  if (r < 0) {
    const e = new ErrnoError("ftruncate", errno(), `memfd ${name} to ${bytes} bytes`);
    sym.close(fd);
    throw e;
  }
  return fd;
}

/** Options for {@link mapShared}. */
export interface MapSharedOptions {
  /**
   * MAP_FIXED: lay the mapping exactly over this page-aligned address,
   * replacing whatever was mapped there (e.g. pages inside a
   * WebAssembly.Memory, so both WASM and the fd's other users see them).
   */
  fixedAddress?: number;
  /**
   * With `fixedAddress`: on unmap, put private anonymous zero pages back
   * instead of leaving a hole, so the borrowed range stays usable by its
   * owner. Default true when `fixedAddress` is given.
   */
  restoreOnUnmap?: boolean;
  /** MAP_POPULATE: fault the pages in now. */
  populate?: boolean;
}

/**
 * A MAP_SHARED mapping of `bytes` bytes of `fd` from `offset`.
 *
 * The mapping holds its own reference to the file: the caller may close
 * `fd` right after. For a regular file (memfds are regular files) the range
 * must lie inside the file, since touching a page past its end raises SIGBUS
 * and would take the process down.
 *
 * @param prot PROT_* bits; PROT_READ | PROT_WRITE by default. Writing through
 *   a view of a mapping without PROT_WRITE faults the process.
 * @throws {RangeError} on a bad length, unaligned offset or fixed address, or
 *   a range past the end of a regular file
 * @throws {ErrnoError} if fstat or mmap fails (EBADF, EACCES, ...)
 */
export function mapShared(
  fd: number,
  bytes: number,
  offset = 0,
  prot: number = PROT_READ | PROT_WRITE,
  options: MapSharedOptions = {},
): Mapping {
  assertLength(bytes);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) {
    throw new RangeError(`mmap offset must be a multiple of ${PAGE_SIZE}, got ${offset}`);
  }
  const stat = new Uint8Array(STAT_SIZE);
  check("fstat", sym.fstat(fd, stat), `fd ${fd}`);
  const statView = new DataView(stat.buffer);
  if ((statView.getUint32(STAT_MODE_OFFSET, true) & S_IFMT) === S_IFREG) {
    const size = Number(statView.getBigInt64(STAT_SIZE_OFFSET, true));
    if (offset + bytes > size) {
      throw new RangeError(
        `mapping [${offset}, +${bytes}) runs past the end of fd ${fd} (${size} bytes)`,
      );
    }
  }
  let flags = MAP_SHARED | (options.populate ? MAP_POPULATE : 0);
  let hint: Deno.PointerValue = null;
  const fixed = options.fixedAddress;
  if (fixed !== undefined) {
    if (!Number.isSafeInteger(fixed) || fixed <= 0 || fixed % PAGE_SIZE !== 0) {
      throw new RangeError(`MAP_FIXED address must be page-aligned and non-zero, got ${fixed}`);
    }
    flags |= MAP_FIXED;
    hint = Deno.UnsafePointer.create(BigInt(fixed));
  }
  const p = sym.mmap(hint, BigInt(bytes), prot, flags, fd, BigInt(offset));
  const mapped = checkMmap(p, `fd ${fd} [${offset}, +${bytes})`);
  return new Mapping(mapped, bytes, fixed !== undefined && (options.restoreOnUnmap ?? true));
}

/** Releases `mapping`; same as {@link Mapping.unmap} (idempotent). */
export function unmap(mapping: Mapping): void {
  mapping.unmap();
}

/**
 * The native address of `view`'s first byte, for iovecs, SQEs and the like.
 *
 * Steady state costs one WeakMap lookup and one add, and allocates nothing:
 * the buffer's base address is computed once per ArrayBuffer (with
 * `Deno.UnsafePointer.of`, which allocates a pointer object) and cached in a
 * WeakMap keyed by the buffer. The result is a double; where it exceeds the
 * small-integer range, optimized code keeps it unboxed as long as the caller
 * consumes it as a number (e.g. {@link setAddress}) rather than converting it
 * to a BigInt. memory_test.ts checks this with V8's GC trace.
 *
 * The address stays valid while the buffer is alive and not detached: the
 * first `.buffer` access moves a small on-heap typed array's bytes off-heap
 * for good, and ArrayBuffer backing stores never move after that.
 *
 * @throws {TypeError} if the view's buffer is detached (e.g. its Mapping was unmapped)
 */
export function addressOf(view: ArrayBufferView): number {
  const base = baseAddresses.get(view.buffer);
  // A zero-length view may belong to a detached buffer: let the slow path decide.
  if (base !== undefined && view.byteLength !== 0) return base + view.byteOffset;
  return addressOfSlow(view);
}

function addressOfSlow(view: ArrayBufferView): number {
  const buffer = view.buffer;
  if (buffer instanceof ArrayBuffer && buffer.detached) {
    throw new TypeError("addressOf: the view's ArrayBuffer is detached");
  }
  let base = baseAddresses.get(buffer);
  if (base === undefined) {
    const p = Deno.UnsafePointer.of(new Uint8Array(buffer));
    base = p === null ? 0 : Number(Deno.UnsafePointer.value(p));
    // A zero-length buffer has no address (null); do not cache that, it may grow.
    if (base !== 0) baseAddresses.set(buffer, base);
  }
  return base + view.byteOffset;
}

/**
 * Stores a native address as a little-endian u64 without going through
 * BigInt (which would allocate per call).
 */
export function setAddress(view: DataView, byteOffset: number, address: number): void {
  view.setUint32(byteOffset, address >>> 0, true);
  view.setUint32(byteOffset + 4, Math.floor(address / 0x1_0000_0000) >>> 0, true);
}

function assertLength(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new RangeError(`mapping length must be a positive integer, got ${bytes}`);
  }
}

function checkMmap(p: Deno.PointerValue, subject: string): Deno.PointerObject {
  if (p === null || BigInt(Deno.UnsafePointer.value(p)) === MAP_FAILED) {
    throw new ErrnoError("mmap", errno(), subject);
  }
  return p;
}

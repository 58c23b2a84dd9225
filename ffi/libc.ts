/**
 * The libc symbols table and thin typed wrappers.
 *
 * One `Deno.dlopen` of glibc for the whole process. Wrappers turn a -1
 * return into an {@link ErrnoError}; the raw `libc.symbols` stay available
 * for hot paths that check results themselves.
 *
 * `syscall` is declared with a fixed 7-argument signature: glibc's variadic
 * `syscall(long, ...)` reads its arguments from the same registers, so a
 * fixed declaration is correct on x86-64 and avoids Deno's variadic limits.
 * @module
 */
import { ErrnoError } from "./errno.ts";

const LIBC_PATHS = ["libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"];

/** The symbols sluice uses from glibc. */
export const libcSymbols = {
  syscall: {
    parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"],
    result: "i64",
  },
  __errno_location: { parameters: [], result: "pointer" },
  getpid: { parameters: [], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "pointer"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  unlink: { parameters: ["buffer"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** poll(2) on Deno's blocking thread pool (~6-8 us per call): control plane only. */
  poll_nonblocking: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  memcpy: { parameters: ["pointer", "pointer", "usize"], result: "pointer" },
  sched_setaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  sched_getaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

function openLibc(): Deno.DynamicLibrary<typeof libcSymbols> {
  let last: unknown;
  for (const path of LIBC_PATHS) {
    try {
      return Deno.dlopen(path, libcSymbols);
    } catch (e) {
      last = e;
    }
  }
  throw new Error(`cannot load glibc (tried ${LIBC_PATHS.join(", ")}): ${String(last)}`);
}

/** The process-wide glibc handle. */
export const libc: Deno.DynamicLibrary<typeof libcSymbols> = openLibc();

/** The raw symbols, for hot paths that check results themselves. */
export const sym = libc.symbols;

/** The calling thread's current errno. */
export function errno(): number {
  const p = sym.__errno_location();
  if (p === null) return 0;
  return new Deno.UnsafePointerView(p).getInt32(0);
}

/** Throws an {@link ErrnoError} for `call` if `result` is negative; returns it otherwise. */
export function check(call: string, result: number, subject?: string): number {
  if (result < 0) throw new ErrnoError(call, errno(), subject);
  return result;
}

/** Same as {@link check} for calls returning `isize`/`i64` (number or bigint). */
export function checkBig(call: string, result: number | bigint, subject?: string): number {
  const n = Number(result);
  if (n < 0) throw new ErrnoError(call, errno(), subject);
  return n;
}

/**
 * Raw syscall returning the kernel's result: a negative value is -errno
 * (the glibc wrapper's -1/errno convention is undone here so callers on
 * hot paths need not read errno).
 */
export function syscall(
  nr: number,
  a0: number | bigint = 0,
  a1: number | bigint = 0,
  a2: number | bigint = 0,
  a3: number | bigint = 0,
  a4: number | bigint = 0,
  a5: number | bigint = 0,
): number {
  const r = Number(
    sym.syscall(BigInt(nr), BigInt(a0), BigInt(a1), BigInt(a2), BigInt(a3), BigInt(a4), BigInt(a5)),
  );
  return r === -1 ? -errno() : r;
}

const encoder = new TextEncoder();

/** A NUL-terminated C string for `buffer` parameters. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(s.length * 3 + 1);
  const { written } = encoder.encodeInto(s, bytes);
  bytes[written] = 0;
  return bytes.subarray(0, written + 1);
}

/** close(2), throwing on failure. */
export function close(fd: number): void {
  check("close", sym.close(fd), `fd ${fd}`);
}

/** F_DUPFD_CLOEXEC: fcntl's dup with close-on-exec set. */
const F_DUPFD_CLOEXEC = 1030;

/** A new descriptor for the same open file (close-on-exec), throwing on failure. */
export function dupFd(fd: number): number {
  return check("fcntl(F_DUPFD_CLOEXEC)", sym.fcntl(fd, F_DUPFD_CLOEXEC, 0n), `fd ${fd}`);
}

/** eventfd(2) with the given flags (EFD_NONBLOCK | EFD_CLOEXEC by default). */
export function eventfd(initval = 0, flags = EFD_NONBLOCK | EFD_CLOEXEC): number {
  return check("eventfd", sym.eventfd(initval, flags));
}

/** Linux x86-64 syscall numbers used from TypeScript. */
export const SYS = {
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
} as const;

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECT = 0o40000;
export const O_CLOEXEC = 0o2000000;

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

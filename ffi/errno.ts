/**
 * Errno values and the typed error that FFI wrappers throw.
 *
 * Numbers are Linux x86-64 (asm-generic/errno-base.h and errno.h).
 * @module
 */

/** Linux errno numbers used by sluice; names as in errno(3). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  ERANGE: 34,
  ENOSYS: 38,
  ENOTSUP: 95,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  ECANCELED: 125,
} as const;

const names = new Map<number, string>();
for (const [name, value] of Object.entries(Errno)) {
  if (!names.has(value)) names.set(value, name);
}

/** The symbolic name of an errno value ("EINVAL"), or "E<n>" when unknown. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `E${errno}`;
}

/**
 * A failed system call: which call, the errno, and an optional subject
 * (a path, an fd) so the message says what failed, not just how.
 */
export class ErrnoError extends Error {
  /** The positive errno value. */
  readonly errno: number;
  /** The C function or syscall that failed. */
  readonly call: string;

  constructor(call: string, errno: number, subject?: string) {
    const where = subject === undefined ? "" : ` (${subject})`;
    super(`${call} failed${where}: ${errnoName(errno)} (errno ${errno})`);
    this.name = "ErrnoError";
    this.errno = errno;
    this.call = call;
  }

  /** The symbolic errno name, e.g. "EAGAIN". */
  get code(): string {
    return errnoName(this.errno);
  }
}

/**
 * AF_UNIX SOCK_STREAM sockets through FFI, with file descriptor passing.
 *
 * Deno's own Unix sockets cannot send or receive file descriptors, and
 * vhost-user needs exactly that: the frontend hands over guest memory as
 * memfds and the vring kick/call eventfds as SCM_RIGHTS control messages.
 *
 * Every socket made here is O_NONBLOCK and close-on-exec, and received fds
 * are close-on-exec too (MSG_CMSG_CLOEXEC), so a spawned helper inherits
 * nothing by accident.
 *
 * Two layers:
 * - synchronous calls ({@link acceptUnix}, {@link sendMsg}, {@link recvMsg})
 *   that never block: "would block" (EAGAIN) is the result `null`, not an
 *   exception, because it is the normal outcome on a non-blocking socket;
 * - asynchronous waits ({@link readable}, {@link writable} and the
 *   {@link UnixSocket} methods) that park on poll(2) on Deno's blocking
 *   thread pool (`nonblocking: true` FFI): no busy loop and no blocked JS
 *   thread, but each wait costs a thread hand-off (6-8 us per DESIGN.md;
 *   ~11 us bare and ~14 us through UnixSocket measured on a loaded 2-CPU
 *   VM), so they are for the control plane only (vhost-user messages are
 *   rare). An AbortSignal or closing the {@link UnixSocket} ends a wait at
 *   once: each cancellable wait polls an extra eventfd that the abort
 *   writes to.
 *
 * Wire layouts are Linux x86-64 (<sys/socket.h>, <sys/un.h>, <poll.h>),
 * built by hand in preallocated buffers:
 *
 * ```
 * struct msghdr  { void *msg_name; socklen_t msg_namelen; (pad 4)   // 0, 8
 *                  struct iovec *msg_iov; size_t msg_iovlen;         // 16, 24
 *                  void *msg_control; size_t msg_controllen;         // 32, 40
 *                  int msg_flags; (pad 4) }                          // 48; 56 bytes
 * struct iovec   { void *iov_base; size_t iov_len; }                 // 0, 8; 16 bytes
 * struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } // 0, 8, 12; data at 16
 * struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; } // 0, 2; 110 bytes
 * struct pollfd  { int fd; short events; short revents; }            // 0, 4, 6; 8 bytes
 * ```
 *
 * @example Pass a memfd over a socketpair
 * ```ts
 * import { UnixSocket } from "./unix_socket.ts";
 * import { memfdCreate } from "./memory.ts";
 * import { close } from "./libc.ts";
 *
 * const [a, b] = UnixSocket.pair();
 * const memfd = memfdCreate("guest-ram", 1 << 20);
 * await a.sendMsg(new Uint8Array([1]), [memfd]);
 * close(memfd); // the receiver holds its own reference now
 * const { bytes, fds } = await b.recvMsg(new Uint8Array(16), 1);
 * console.log(bytes, fds.length); // 1 1
 * for (const fd of fds) close(fd);
 * a.close();
 * b.close();
 * ```
 * @module
 */
import { check, close, cstr, EFD_CLOEXEC, EFD_NONBLOCK, errno, eventfd, sym } from "./libc.ts";
import { Errno, ErrnoError } from "./errno.ts";
import { addressOf, setAddress } from "./memory.ts";

/** Address family of Unix domain sockets. */
export const AF_UNIX = 1;
/** Connection-oriented byte stream. */
export const SOCK_STREAM = 1;
/** socket(2) type flag: O_NONBLOCK on the new fd. */
export const SOCK_NONBLOCK = 0o4000;
/** socket(2) type flag: close-on-exec on the new fd. */
export const SOCK_CLOEXEC = 0o2000000;
/** Socket-level options and control messages. */
export const SOL_SOCKET = 1;
/** Control message type carrying an array of file descriptors. */
export const SCM_RIGHTS = 1;
/** msg_flags: control data was discarded for lack of space. */
export const MSG_CTRUNC = 0x8;
/** Per-call non-blocking operation. */
export const MSG_DONTWAIT = 0x40;
/** Do not raise SIGPIPE when the peer has gone. */
export const MSG_NOSIGNAL = 0x4000;
/** Set close-on-exec on fds received through SCM_RIGHTS. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** shutdown(2): no more receptions. */
export const SHUT_RD = 0;
/** shutdown(2): no more transmissions. */
export const SHUT_WR = 1;
/** shutdown(2): neither. */
export const SHUT_RDWR = 2;
/** poll(2): data to read (or a connection to accept). */
export const POLLIN = 0x1;
/** poll(2): writing will not block. */
export const POLLOUT = 0x4;
/** poll(2): error condition (revents only). */
export const POLLERR = 0x8;
/** poll(2): hang up (revents only). */
export const POLLHUP = 0x10;
/** poll(2): fd not open (revents only). */
export const POLLNVAL = 0x20;
/** The kernel's limit on fds in one SCM_RIGHTS message (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;
/** Size of sockaddr_un.sun_path, including the terminating NUL. */
export const UNIX_PATH_MAX = 108;

const ECONNABORTED = 103;

const SIZEOF_MSGHDR = 56;
const SIZEOF_IOVEC = 16;
const SIZEOF_CMSGHDR = 16;
const SIZEOF_INT = 4;
const SIZEOF_SOCKADDR_UN = 2 + UNIX_PATH_MAX;
const SIZEOF_POLLFD = 8;

/** CMSG_ALIGN: control messages are aligned to sizeof(size_t). */
function cmsgAlign(len: number): number {
  return (len + 7) & ~7;
}
/** CMSG_LEN: cmsg_len of a message with `len` data bytes. */
function cmsgLen(len: number): number {
  return SIZEOF_CMSGHDR + len;
}
/** CMSG_SPACE: bytes a message with `len` data bytes occupies, padding included. */
function cmsgSpace(len: number): number {
  return SIZEOF_CMSGHDR + cmsgAlign(len);
}

// Scratch structs for sendmsg/recvmsg, allocated once. Safe to share: the
// calls using them are synchronous and JS runs them one at a time.
const msghdr = new Uint8Array(new ArrayBuffer(SIZEOF_MSGHDR));
const msghdrView = new DataView(msghdr.buffer);
const iovec = new Uint8Array(new ArrayBuffer(SIZEOF_IOVEC));
const iovecView = new DataView(iovec.buffer);
const control = new Uint8Array(new ArrayBuffer(cmsgSpace(SCM_MAX_FD * SIZEOF_INT)));
const controlView = new DataView(control.buffer);

/** What {@link recvMsg} read: the byte count (0 = peer closed) and the fds received. */
export interface RecvResult {
  /** Bytes stored at the start of the buffer; 0 means end of stream. */
  bytes: number;
  /** Received file descriptors, close-on-exec; the caller owns (and must close) them. */
  fds: number[];
}

/**
 * The peer sent more file descriptors than the receiver allowed
 * (MSG_CTRUNC, or more than `maxFds` fitted in the padding). The received
 * fds were closed and the message's data bytes are consumed: a protocol
 * violation by the peer, best answered by dropping the connection.
 */
export class ControlTruncatedError extends Error {
  /** The socket the message came from. */
  readonly fd: number;
  /** Data bytes the message carried (already consumed from the stream). */
  readonly bytes: number;
  /** File descriptors that did arrive (all closed again). */
  readonly received: number;
  /** The receiver's limit. */
  readonly maxFds: number;

  constructor(fd: number, bytes: number, received: number, maxFds: number) {
    super(
      `Control data truncated on fd ${fd}: the peer sent more than ${maxFds} file descriptor(s) ` +
        `(${received} arrived and were closed, ${bytes} data byte(s) consumed)`,
    );
    this.name = "ControlTruncatedError";
    this.fd = fd;
    this.bytes = bytes;
    this.received = received;
    this.maxFds = maxFds;
  }
}

/** Options for the asynchronous waits. */
export interface WaitOptions {
  /** Ends the wait: the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/**
 * Encodes a filesystem path as struct sockaddr_un.
 * @throws {RangeError} if the path is empty, contains NUL, or does not fit in sun_path
 */
function sockaddrUn(path: string): { addr: Uint8Array<ArrayBuffer>; len: number } {
  const encoded = cstr(path);
  const pathBytes = encoded.length - 1;
  if (pathBytes === 0 || encoded.indexOf(0) !== pathBytes) {
    throw new RangeError(`Unix socket path must be non-empty without NUL bytes: ${path}`);
  }
  if (encoded.length > UNIX_PATH_MAX) {
    throw new RangeError(
      `Unix socket path is ${pathBytes} bytes, the limit is ${UNIX_PATH_MAX - 1}: ${path}`,
    );
  }
  const addr = new Uint8Array(SIZEOF_SOCKADDR_UN);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(encoded, 2);
  return { addr, len: 2 + encoded.length };
}

function newSocket(): number {
  return check("socket", sym.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

/**
 * Removes a socket file left by a listener that is gone, so bind can reuse
 * the path. Refuses to touch anything else: a path that is not a socket, or
 * a socket someone still accepts on (found by trying to connect to it).
 */
function removeStaleSocket(path: string, addr: Uint8Array<ArrayBuffer>, len: number): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (info.isSocket !== true) {
    throw new ErrnoError("bind", Errno.EADDRINUSE, `${path} exists and is not a socket`);
  }
  const probe = newSocket();
  const r = sym.connect(probe, addr, len);
  const e = r < 0 ? errno() : 0;
  sym.close(probe);
  if (r === 0 || e === Errno.EAGAIN) {
    throw new ErrnoError("bind", Errno.EADDRINUSE, `${path} has a live listener`);
  }
  if (e !== Errno.ECONNREFUSED) throw new ErrnoError("connect", e, `probing ${path}`);
  if (sym.unlink(cstr(path)) < 0 && errno() !== Errno.ENOENT) {
    throw new ErrnoError("unlink", errno(), `stale socket ${path}`);
  }
}

/**
 * A listening socket bound to `path`: removes a stale socket file first
 * (never a live one or a non-socket), then bind(2) and listen(2).
 * Non-blocking, close-on-exec. Needs read permission to lstat `path`.
 *
 * A socket file counts as stale when connecting to it is refused. The probe
 * connection that finds a live listener instead reaches that listener as a
 * connection that closes at once.
 *
 * @returns the listening fd; the caller owns it
 * @throws {RangeError} if the path does not fit in sockaddr_un
 * @throws {ErrnoError} with the path in the message (EADDRINUSE, EACCES, ...)
 */
export function listenUnix(path: string, backlog = 128): number {
  const { addr, len } = sockaddrUn(path);
  removeStaleSocket(path, addr, len);
  const fd = newSocket();
  try {
    check("bind", sym.bind(fd, addr, len), path);
    check("listen", sym.listen(fd, backlog), path);
  } catch (e) {
    sym.close(fd);
    throw e;
  }
  return fd;
}

/**
 * A socket connected to the listener at `path`; non-blocking, close-on-exec.
 * Connecting to a Unix listener completes at once or fails: a full backlog
 * is EAGAIN, thrown like any other error.
 *
 * @returns the connected fd; the caller owns it
 * @throws {ErrnoError} with the path in the message (ENOENT, ECONNREFUSED, EAGAIN, ...)
 */
export function connectUnix(path: string): number {
  const { addr, len } = sockaddrUn(path);
  const fd = newSocket();
  if (sym.connect(fd, addr, len) < 0) {
    const e = new ErrnoError("connect", errno(), path);
    sym.close(fd);
    throw e;
  }
  return fd;
}

/**
 * accept4(2) one pending connection as a non-blocking, close-on-exec fd.
 * @returns the new fd (caller owns it), or null if none is pending (EAGAIN)
 * @throws {ErrnoError} on other failures (EMFILE, EBADF, ...)
 */
export function acceptUnix(listenFd: number): number | null {
  for (;;) {
    const fd = sym.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    const e = errno();
    if (e === Errno.EAGAIN) return null;
    // The client gave up before we accepted, or a signal hit: try the next one.
    if (e === Errno.EINTR || e === ECONNABORTED) continue;
    throw new ErrnoError("accept4", e, `fd ${listenFd}`);
  }
}

/**
 * A connected pair of non-blocking, close-on-exec AF_UNIX stream sockets.
 * @returns both fds; the caller owns them
 */
export function socketPair(): [number, number] {
  const sv = new Int32Array(2);
  check(
    "socketpair",
    sym.socketpair(
      AF_UNIX,
      SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
      0,
      new Uint8Array(sv.buffer),
    ),
  );
  return [sv[0] ?? -1, sv[1] ?? -1];
}

/** Fills the scratch msghdr + iovec for one buffer and `controlLen` bytes of control data. */
function prepareMsghdr(data: Uint8Array, controlLen: number): void {
  setAddress(iovecView, 0, addressOf(data));
  setAddress(iovecView, 8, data.length);
  setAddress(msghdrView, 0, 0); // msg_name: connected socket, no address
  msghdrView.setUint32(8, 0, true); // msg_namelen
  setAddress(msghdrView, 16, addressOf(iovec)); // msg_iov
  setAddress(msghdrView, 24, 1); // msg_iovlen
  setAddress(msghdrView, 32, controlLen === 0 ? 0 : addressOf(control)); // msg_control
  setAddress(msghdrView, 40, controlLen); // msg_controllen
  msghdrView.setInt32(48, 0, true); // msg_flags
}

/**
 * sendmsg(2) `bytes` with `fds` attached as one SCM_RIGHTS message, without
 * blocking (MSG_DONTWAIT) and without SIGPIPE (MSG_NOSIGNAL).
 *
 * On a stream socket the fds travel with the first byte sent: if fewer than
 * `bytes.length` bytes go out, send the rest WITHOUT the fds. The fds stay
 * open here; the receiver gets its own references.
 *
 * @returns bytes sent, or null if the socket buffer is full (EAGAIN; nothing was sent)
 * @throws {RangeError} if fds are given with no data byte, or more than SCM_MAX_FD
 * @throws {ErrnoError} on other failures (EPIPE when the peer has gone, EBADF, ...)
 */
export function sendMsg(fd: number, bytes: Uint8Array, fds: readonly number[] = []): number | null {
  if (fds.length > SCM_MAX_FD) {
    throw new RangeError(`at most ${SCM_MAX_FD} fds fit in one message, got ${fds.length}`);
  }
  if (fds.length > 0 && bytes.length === 0) {
    throw new RangeError("passing fds on a stream socket needs at least one data byte");
  }
  let controlLen = 0;
  if (fds.length > 0) {
    const dataLen = fds.length * SIZEOF_INT;
    controlLen = cmsgSpace(dataLen);
    control.fill(0, 0, controlLen);
    setAddress(controlView, 0, cmsgLen(dataLen)); // cmsg_len
    controlView.setInt32(8, SOL_SOCKET, true); // cmsg_level
    controlView.setInt32(12, SCM_RIGHTS, true); // cmsg_type
    for (let i = 0; i < fds.length; i++) {
      const passed = fds[i];
      if (passed === undefined || !Number.isInteger(passed) || passed < 0) {
        throw new RangeError(`not a file descriptor: ${passed}`);
      }
      controlView.setInt32(SIZEOF_CMSGHDR + i * SIZEOF_INT, passed, true);
    }
  }
  prepareMsghdr(bytes, controlLen);
  for (;;) {
    const r = Number(sym.sendmsg(fd, msghdr, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (r >= 0) return r;
    const e = errno();
    if (e === Errno.EAGAIN) return null;
    if (e === Errno.EINTR) continue;
    throw new ErrnoError("sendmsg", e, `fd ${fd}`);
  }
}

/**
 * recvmsg(2) into `buf`, accepting up to `maxFds` file descriptors, without
 * blocking. Received fds are close-on-exec and owned by the caller.
 *
 * @returns what was read (`bytes === 0` is end of stream), or null if there
 *   is nothing to read yet (EAGAIN)
 * @throws {ControlTruncatedError} if the peer sent more than `maxFds` fds
 *   (the ones that arrived are closed first)
 * @throws {RangeError} if `buf` is empty or `maxFds` is outside 0..SCM_MAX_FD
 * @throws {ErrnoError} on other failures (ECONNRESET, EBADF, ...)
 */
export function recvMsg(fd: number, buf: Uint8Array, maxFds = 0): RecvResult | null {
  if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > SCM_MAX_FD) {
    throw new RangeError(`maxFds must be 0..${SCM_MAX_FD}, got ${maxFds}`);
  }
  if (buf.length === 0) {
    // 0 bytes read must keep meaning end of stream.
    throw new RangeError("recvMsg needs a buffer of at least one byte");
  }
  const controlSpace = maxFds === 0 ? 0 : cmsgSpace(maxFds * SIZEOF_INT);
  prepareMsghdr(buf, controlSpace);
  let r: number;
  for (;;) {
    r = Number(sym.recvmsg(fd, msghdr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
    if (r >= 0) break;
    const e = errno();
    if (e === Errno.EAGAIN) return null;
    if (e === Errno.EINTR) continue;
    throw new ErrnoError("recvmsg", e, `fd ${fd}`);
  }
  // The kernel rewrites msg_controllen to the bytes of control data it stored.
  const controlLen = Math.min(Number(msghdrView.getBigUint64(40, true)), controlSpace);
  const msgFlags = msghdrView.getInt32(48, true);
  const fds: number[] = [];
  // CMSG_FIRSTHDR / CMSG_NXTHDR over what the kernel stored.
  for (let off = 0; off + SIZEOF_CMSGHDR <= controlLen;) {
    const len = Number(controlView.getBigUint64(off, true));
    if (len < SIZEOF_CMSGHDR || off + len > controlLen) break;
    const level = controlView.getInt32(off + 8, true);
    const type = controlView.getInt32(off + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      const count = Math.floor((len - SIZEOF_CMSGHDR) / SIZEOF_INT);
      for (let i = 0; i < count; i++) {
        fds.push(controlView.getInt32(off + SIZEOF_CMSGHDR + i * SIZEOF_INT, true));
      }
    }
    off += cmsgAlign(len);
  }
  // CMSG_SPACE pads to 8 bytes, so an odd maxFds leaves room for one fd more
  // than asked: that is a violation of the caller's limit too.
  if ((msgFlags & MSG_CTRUNC) !== 0 || fds.length > maxFds) {
    for (const received of fds) sym.close(received);
    throw new ControlTruncatedError(fd, r, fds.length, maxFds);
  }
  return { bytes: r, fds };
}

/**
 * Waits until `fd` has any of `events` (or an error/hang-up) without
 * blocking the JS thread, using poll(2) on Deno's blocking thread pool.
 * Control plane only: each call costs ~6-8 us of thread hand-off.
 *
 * poll's errno belongs to the pool thread, so when it fails the call is
 * repeated synchronously with a zero timeout to learn why.
 */
async function waitFd(fd: number, events: number, options: WaitOptions): Promise<number> {
  const signal = options.signal;
  signal?.throwIfAborted();
  const pollfds = new Uint8Array(new ArrayBuffer(2 * SIZEOF_POLLFD));
  const view = new DataView(pollfds.buffer);
  // Poll cannot be interrupted from JS; an eventfd written on abort wakes it.
  const wake = signal === undefined ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const nfds = wake < 0 ? 1n : 2n;
  const onAbort = () => {
    sym.write(wake, new BigUint64Array([1n]), 8n);
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      view.setInt32(0, fd, true);
      view.setInt16(4, events, true);
      view.setInt16(6, 0, true);
      view.setInt32(8, wake, true);
      view.setInt16(12, POLLIN, true);
      view.setInt16(14, 0, true);
      const r = await sym.poll_nonblocking(pollfds, nfds, -1);
      signal?.throwIfAborted();
      if (r < 0) {
        if (sym.poll(pollfds, nfds, 0) < 0 && errno() !== Errno.EINTR) {
          throw new ErrnoError("poll", errno(), `fd ${fd}`);
        }
        continue;
      }
      const revents = view.getInt16(6, true);
      if ((revents & POLLNVAL) !== 0) throw new ErrnoError("poll", Errno.EBADF, `fd ${fd}`);
      if (revents !== 0) return revents;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (wake >= 0) sym.close(wake);
  }
}

/**
 * Resolves when `fd` is readable (data, a pending connection, end of
 * stream or an error) with poll's revents. Control plane only (~6-8 us).
 *
 * Cancel with `options.signal`, or shutdown(2) the socket. Closing a bare
 * fd does NOT end the wait (poll holds its own file reference): use
 * {@link UnixSocket}, whose close() does.
 * @throws {ErrnoError} EBADF if `fd` is not open
 */
export function readable(fd: number, options: WaitOptions = {}): Promise<number> {
  return waitFd(fd, POLLIN, options);
}

/** Like {@link readable}, for room to write (POLLOUT). */
export function writable(fd: number, options: WaitOptions = {}): Promise<number> {
  return waitFd(fd, POLLOUT, options);
}

/**
 * An owned AF_UNIX stream socket: sync `try*` calls for when readiness is
 * known, async calls that wait for it (control plane), and close().
 *
 * close() wakes every pending wait on this socket through its eventfd and
 * they reject with ECANCELED. The pool thread may poll the old fd number for
 * a moment after it is closed (and perhaps reused): harmless, since poll
 * only reads readiness and that result is discarded.
 */
export class UnixSocket {
  #fd: number;
  #closed = false;
  /** Aborted by close(): wakes every wait on this socket. */
  readonly #closing = new AbortController();
  /** For a listener: the path it bound and that file's inode, to unlink on close. */
  #bound: { path: string; ino: number | null } | null = null;

  /** Takes ownership of `fd` (a non-blocking AF_UNIX stream socket). */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`not a file descriptor: ${fd}`);
    this.#fd = fd;
  }

  /**
   * Listens on `path` (see {@link listenUnix}). close() unlinks the socket
   * file if it is still the one this listener bound.
   */
  static listen(path: string, backlog = 128): UnixSocket {
    const socket = new UnixSocket(listenUnix(path, backlog));
    socket.#bound = { path, ino: Deno.lstatSync(path).ino };
    return socket;
  }

  /** Connects to the listener at `path` (see {@link connectUnix}). */
  static connect(path: string): UnixSocket {
    return new UnixSocket(connectUnix(path));
  }

  /** A connected pair (see {@link socketPair}). */
  static pair(): [UnixSocket, UnixSocket] {
    const [a, b] = socketPair();
    return [new UnixSocket(a), new UnixSocket(b)];
  }

  /**
   * The socket's fd, for FFI calls of your own.
   * @throws {Error} after close(), so a stale number is never used
   */
  get fd(): number {
    if (this.#closed) throw new Error(`UnixSocket fd ${this.#fd} is closed`);
    return this.#fd;
  }

  /** For a listener made by {@link UnixSocket.listen}: the path it is bound to. */
  get path(): string | undefined {
    return this.#bound?.path;
  }

  /** True once close() ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Accepts a pending connection, or returns null if none is pending. */
  tryAccept(): UnixSocket | null {
    const fd = acceptUnix(this.fd);
    return fd === null ? null : new UnixSocket(fd);
  }

  /** Waits for and accepts one connection. */
  async accept(options: WaitOptions = {}): Promise<UnixSocket> {
    for (;;) {
      const socket = this.tryAccept();
      if (socket !== null) return socket;
      await this.readable(options);
    }
  }

  /** {@link sendMsg} on this socket: bytes sent, or null if it would block. */
  trySendMsg(bytes: Uint8Array, fds: readonly number[] = []): number | null {
    return sendMsg(this.fd, bytes, fds);
  }

  /** Sends all of `bytes`, `fds` attached to the first chunk, waiting for room as needed. */
  async sendMsg(
    bytes: Uint8Array,
    fds: readonly number[] = [],
    options: WaitOptions = {},
  ): Promise<void> {
    let sent = 0;
    let pendingFds = fds;
    do {
      const n = sendMsg(this.fd, bytes.subarray(sent), pendingFds);
      if (n === null) {
        await this.writable(options);
        continue;
      }
      sent += n;
      pendingFds = [];
    } while (sent < bytes.length || pendingFds.length > 0);
  }

  /** {@link recvMsg} on this socket: the message, or null if nothing is there yet. */
  tryRecvMsg(buf: Uint8Array, maxFds = 0): RecvResult | null {
    return recvMsg(this.fd, buf, maxFds);
  }

  /**
   * Waits for and receives one chunk (see {@link recvMsg}); `bytes === 0`
   * means the peer closed its end.
   */
  async recvMsg(buf: Uint8Array, maxFds = 0, options: WaitOptions = {}): Promise<RecvResult> {
    for (;;) {
      const result = this.tryRecvMsg(buf, maxFds);
      if (result !== null) return result;
      await this.readable(options);
    }
  }

  /**
   * Waits until readable; ends early on `options.signal` or close().
   * @throws {ErrnoError} ECANCELED if the socket is closed meanwhile
   */
  async readable(options: WaitOptions = {}): Promise<number> {
    return await this.#wait(POLLIN, options);
  }

  /** Waits until writable; ends early on `options.signal` or close(). */
  async writable(options: WaitOptions = {}): Promise<number> {
    return await this.#wait(POLLOUT, options);
  }

  /** shutdown(2): the peer sees end of stream (SHUT_WR) or both directions end. */
  shutdown(how: number = SHUT_RDWR): void {
    check("shutdown", sym.shutdown(this.fd, how), `fd ${this.#fd}`);
  }

  /**
   * Cancels pending waits, closes the fd and, for a listener, unlinks its
   * socket file if it is still ours. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort(new ErrnoError("poll", Errno.ECANCELED, `fd ${this.#fd} closed`));
    const bound = this.#bound;
    if (bound !== null) {
      try {
        if (Deno.lstatSync(bound.path).ino === bound.ino) sym.unlink(cstr(bound.path));
      } catch {
        // Already gone or unreadable: nothing of ours left to clean up.
      }
    }
    close(this.#fd);
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #wait(events: number, options: WaitOptions): Promise<number> {
    const fd = this.fd;
    const signal = options.signal === undefined
      ? this.#closing.signal
      : AbortSignal.any([this.#closing.signal, options.signal]);
    return waitFd(fd, events, { signal });
  }
}

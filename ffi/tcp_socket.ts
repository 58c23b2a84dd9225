/**
 * TCP sockets (IPv4 and IPv6) through libc, for the data path's own TCP.
 *
 * Deno's TCP costs a promise and an op per read and cannot receive into
 * buffers we choose; sluice drives its TCP connections through the
 * reactor's io_uring instead (src/net). This file is the control-path half:
 * making sockets, binding, listening, connecting, socket options, and the
 * sockaddr codecs. Nothing here is called per I/O.
 *
 * Every socket made here is O_NONBLOCK and close-on-exec. Addresses are
 * numeric ("127.0.0.1", "::1", "[::1]"), plus "localhost" for 127.0.0.1;
 * there is no name resolution on purpose (the data path never waits on DNS).
 * Addresses print as "ip:port" and "[ip6]:port".
 *
 * Wire layouts are Linux x86-64 (<netinet/in.h>):
 *
 * ```
 * struct sockaddr_in  { u16 sin_family; u16 sin_port (BE); u8 sin_addr[4]; u8 zero[8]; } // 16
 * struct sockaddr_in6 { u16 sin6_family; u16 sin6_port (BE); u32 sin6_flowinfo;
 *                       u8 sin6_addr[16]; u32 sin6_scope_id; }                             // 28
 * ```
 *
 * @example Listen on an ephemeral port and connect to it
 * ```ts
 * import { peerAddress, tcpConnect, tcpListen } from "./tcp_socket.ts";
 * import { close } from "./libc.ts";
 * const listener = tcpListen("127.0.0.1", 0);
 * console.log(listener.address); // "127.0.0.1:41234"
 * const fd = await tcpConnect("127.0.0.1", listener.port);
 * console.log(peerAddress(fd)); // "127.0.0.1:41234"
 * close(fd);
 * close(listener.fd);
 * ```
 * @module
 */
import { check, errno, sym } from "./libc.ts";
import { Errno, ErrnoError } from "./errno.ts";

/** Address family IPv4. */
export const AF_INET = 2;
/** Address family IPv6. */
export const AF_INET6 = 10;
/** Connection-oriented byte stream. */
export const SOCK_STREAM = 1;
/** socket(2)/accept4(2) type flag: O_NONBLOCK on the new fd. */
export const SOCK_NONBLOCK = 0o4000;
/** socket(2)/accept4(2) type flag: close-on-exec on the new fd. */
export const SOCK_CLOEXEC = 0o2000000;
/** Socket-level options. */
export const SOL_SOCKET = 1;
/** Allow bind to a port with connections in TIME_WAIT. */
export const SO_REUSEADDR = 2;
/** Pending socket error (read and cleared by getsockopt). */
export const SO_ERROR = 4;
/** Send buffer size. */
export const SO_SNDBUF = 7;
/** Receive buffer size. */
export const SO_RCVBUF = 8;
/** Linger on close: with a zero timeout, close sends RST instead of FIN. */
export const SO_LINGER = 13;
/** TCP-level options. */
export const IPPROTO_TCP = 6;
/** IPv6-level options. */
export const IPPROTO_IPV6 = 41;
/** Disable Nagle's algorithm: small writes go out at once. */
export const TCP_NODELAY = 1;
/** An AF_INET6 socket accepts IPv6 only (no IPv4-mapped peers). */
export const IPV6_V6ONLY = 26;
/** shutdown(2): no more receptions. */
export const SHUT_RD = 0;
/** shutdown(2): no more transmissions (sends FIN). */
export const SHUT_WR = 1;
/** shutdown(2): neither. */
export const SHUT_RDWR = 2;
/** Do not raise SIGPIPE when the peer has gone (send flags). */
export const MSG_NOSIGNAL = 0x4000;

/** sizeof(struct sockaddr_in). */
export const SIZEOF_SOCKADDR_IN = 16;
/** sizeof(struct sockaddr_in6). */
export const SIZEOF_SOCKADDR_IN6 = 28;
/** sizeof(struct sockaddr_storage): room for any address. */
export const SIZEOF_SOCKADDR_STORAGE = 128;

const EINPROGRESS = 115;
const POLLOUT = 0x4;
const POLLERR = 0x8;
const POLLHUP = 0x10;

/** A socket address: family, numeric host, port. */
export interface SocketAddress {
  /** AF_INET or AF_INET6. */
  family: number;
  /** Numeric host: "127.0.0.1" or "::1" (without brackets). */
  host: string;
  /** Port, 0..65535. */
  port: number;
}

/** An encoded struct sockaddr_in or sockaddr_in6 and its length. */
export interface EncodedSockaddr {
  /** The struct's bytes (16 or 28). */
  bytes: Uint8Array<ArrayBuffer>;
  /** socklen_t to pass with it. */
  length: number;
  /** AF_INET or AF_INET6. */
  family: number;
}

// ---------------------------------------------------------------------------
// Address parsing and formatting

/** The four bytes of a dotted-quad IPv4 address, or null if `s` is not one. */
export function parseIPv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] ?? "";
    // Decimal only, no leading zeros (inet_pton's rule; "010" is not 8 or 10).
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/**
 * The sixteen bytes of an IPv6 address in the text forms of RFC 4291 2.2
 * ("::1", "fe80::1:2", "::ffff:1.2.3.4"), or null if `s` is not one. Zone
 * ids ("%eth0") are not supported.
 */
export function parseIPv6(s: string): Uint8Array | null {
  if (s.length === 0 || s.length > 45) return null;
  const out = new Uint8Array(16);
  // An embedded IPv4 address takes the last 32 bits.
  let words = s;
  let tailV4: Uint8Array | null = null;
  const lastColon = s.lastIndexOf(":");
  if (lastColon >= 0 && s.indexOf(".", lastColon) > lastColon) {
    tailV4 = parseIPv4(s.slice(lastColon + 1));
    if (tailV4 === null) return null;
    words = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = words.split("::");
  if (halves.length > 2) return null;
  const parse = (part: string): number[] | null => {
    if (part === "") return [];
    const groups = part.split(":");
    const vals: number[] = [];
    for (const g of groups) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      vals.push(parseInt(g, 16));
    }
    return vals;
  };
  const head = parse(halves[0] ?? "");
  const tail = halves.length === 2 ? parse(halves[1] ?? "") : [];
  if (head === null || tail === null) return null;
  if (halves.length === 1 && head.length !== 8) return null;
  if (halves.length === 2 && head.length + tail.length > 7) return null;
  const groups = new Array<number>(8).fill(0);
  head.forEach((v, i) => (groups[i] = v));
  tail.forEach((v, i) => (groups[8 - tail.length + i] = v));
  for (let i = 0; i < 8; i++) {
    const g = groups[i] ?? 0;
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  }
  if (tailV4 !== null) out.set(tailV4, 12);
  return out;
}

/** Text of a 4-byte IPv4 address. */
export function formatIPv4(b: Uint8Array): string {
  return `${b[0] ?? 0}.${b[1] ?? 0}.${b[2] ?? 0}.${b[3] ?? 0}`;
}

/**
 * Text of a 16-byte IPv6 address in RFC 5952 form: lowercase, the longest
 * run of two or more zero groups as "::", IPv4-mapped as "::ffff:a.b.c.d".
 */
export function formatIPv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(((b[2 * i] ?? 0) << 8) | (b[2 * i + 1] ?? 0));
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${formatIPv4(b.subarray(12, 16))}`;
  }
  let bestAt = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

/** "ip:port" for IPv4, "[ip6]:port" for IPv6. */
export function formatAddress(addr: SocketAddress): string {
  return addr.family === AF_INET6 ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`TCP port must be an integer in 0..65535, got ${port}`);
  }
}

/**
 * Encodes `host` and `port` as struct sockaddr_in (IPv4) or sockaddr_in6
 * (IPv6, also when bracketed: "[::1]"). "localhost" is 127.0.0.1 and ""
 * is the IPv4 wildcard 0.0.0.0.
 * @throws {RangeError} if the host is not a numeric address or the port is out of range
 */
export function encodeSockaddr(host: string, port: number): EncodedSockaddr {
  checkPort(port);
  let h = host;
  if (h === "" || h === "localhost") h = h === "" ? "0.0.0.0" : "127.0.0.1";
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  const v4 = parseIPv4(h);
  if (v4 !== null) {
    const bytes = new Uint8Array(new ArrayBuffer(SIZEOF_SOCKADDR_IN));
    const dv = new DataView(bytes.buffer);
    dv.setUint16(0, AF_INET, true);
    dv.setUint16(2, port, false);
    bytes.set(v4, 4);
    return { bytes, length: SIZEOF_SOCKADDR_IN, family: AF_INET };
  }
  const v6 = parseIPv6(h);
  if (v6 !== null) {
    const bytes = new Uint8Array(new ArrayBuffer(SIZEOF_SOCKADDR_IN6));
    const dv = new DataView(bytes.buffer);
    dv.setUint16(0, AF_INET6, true);
    dv.setUint16(2, port, false);
    bytes.set(v6, 8);
    return { bytes, length: SIZEOF_SOCKADDR_IN6, family: AF_INET6 };
  }
  throw new RangeError(
    `not a numeric IPv4 or IPv6 address: "${host}" (names other than localhost are not resolved)`,
  );
}

/**
 * Decodes a struct sockaddr_in or sockaddr_in6 of `length` bytes.
 * @throws {RangeError} for another family or a short struct
 */
export function decodeSockaddr(bytes: Uint8Array, length = bytes.byteLength): SocketAddress {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const family = length >= 2 ? dv.getUint16(0, true) : -1;
  if (family === AF_INET && length >= SIZEOF_SOCKADDR_IN) {
    return { family, host: formatIPv4(bytes.subarray(4, 8)), port: dv.getUint16(2, false) };
  }
  if (family === AF_INET6 && length >= SIZEOF_SOCKADDR_IN6) {
    return { family, host: formatIPv6(bytes.subarray(8, 24)), port: dv.getUint16(2, false) };
  }
  throw new RangeError(`not an IPv4 or IPv6 socket address (family ${family}, ${length} bytes)`);
}

// ---------------------------------------------------------------------------
// Socket options

function setIntOption(fd: number, level: number, name: number, value: number, what: string): void {
  const v = new Int32Array([value]);
  check("setsockopt", sym.setsockopt(fd, level, name, new Uint8Array(v.buffer), 4), what);
}

function getIntOption(fd: number, level: number, name: number, what: string): number {
  const v = new Int32Array(2); // value, socklen
  v[1] = 4;
  const bytes = new Uint8Array(v.buffer);
  check(
    "getsockopt",
    sym.getsockopt(fd, level, name, bytes.subarray(0, 4), bytes.subarray(4)),
    what,
  );
  return v[0] ?? 0;
}

/** TCP_NODELAY on or off (on: small writes are not held back by Nagle's algorithm). */
export function setNoDelay(fd: number, on = true): void {
  setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0, `TCP_NODELAY on fd ${fd}`);
}

/** Whether TCP_NODELAY is on. */
export function getNoDelay(fd: number): boolean {
  return getIntOption(fd, IPPROTO_TCP, TCP_NODELAY, `TCP_NODELAY on fd ${fd}`) !== 0;
}

/**
 * SO_SNDBUF. Linux doubles the value for its bookkeeping and clamps it to
 * net.core.wmem_max; {@link getSendBufferSize} reads back what it kept.
 */
export function setSendBufferSize(fd: number, bytes: number): void {
  setIntOption(fd, SOL_SOCKET, SO_SNDBUF, bytes, `SO_SNDBUF ${bytes} on fd ${fd}`);
}

/** SO_SNDBUF as the kernel keeps it (twice the value set, within limits). */
export function getSendBufferSize(fd: number): number {
  return getIntOption(fd, SOL_SOCKET, SO_SNDBUF, `SO_SNDBUF on fd ${fd}`);
}

/** SO_RCVBUF; see {@link setSendBufferSize} for how Linux treats the value. */
export function setReceiveBufferSize(fd: number, bytes: number): void {
  setIntOption(fd, SOL_SOCKET, SO_RCVBUF, bytes, `SO_RCVBUF ${bytes} on fd ${fd}`);
}

/** SO_RCVBUF as the kernel keeps it. */
export function getReceiveBufferSize(fd: number): number {
  return getIntOption(fd, SOL_SOCKET, SO_RCVBUF, `SO_RCVBUF on fd ${fd}`);
}

/**
 * SO_LINGER: `seconds` null turns lingering off (the default); 0 makes
 * close(2) abort the connection with RST and drop unsent data.
 */
export function setLinger(fd: number, seconds: number | null): void {
  const v = new Int32Array([seconds === null ? 0 : 1, seconds ?? 0]);
  check(
    "setsockopt",
    sym.setsockopt(fd, SOL_SOCKET, SO_LINGER, new Uint8Array(v.buffer), 8),
    `SO_LINGER on fd ${fd}`,
  );
}

/** SO_ERROR: the socket's pending error (0 if none), cleared by reading it. */
export function getSocketError(fd: number): number {
  return getIntOption(fd, SOL_SOCKET, SO_ERROR, `SO_ERROR on fd ${fd}`);
}

/** shutdown(2) with SHUT_RD, SHUT_WR or SHUT_RDWR. */
export function shutdownSocket(fd: number, how: number = SHUT_RDWR): void {
  check("shutdown", sym.shutdown(fd, how), `fd ${fd}`);
}

// ---------------------------------------------------------------------------
// Names

type NameCall = "getsockname" | "getpeername";

function socketName(call: NameCall, fd: number): SocketAddress {
  const buf = new Uint8Array(new ArrayBuffer(SIZEOF_SOCKADDR_STORAGE + 4));
  const lenView = new DataView(buf.buffer, SIZEOF_SOCKADDR_STORAGE, 4);
  lenView.setUint32(0, SIZEOF_SOCKADDR_STORAGE, true);
  const addr = buf.subarray(0, SIZEOF_SOCKADDR_STORAGE);
  const len = buf.subarray(SIZEOF_SOCKADDR_STORAGE);
  const r = call === "getsockname"
    ? sym.getsockname(fd, addr, len)
    : sym.getpeername(fd, addr, len);
  check(call, r, `fd ${fd}`);
  return decodeSockaddr(addr, lenView.getUint32(0, true));
}

/** getsockname(2) as a {@link SocketAddress}. */
export function localSocketAddress(fd: number): SocketAddress {
  return socketName("getsockname", fd);
}

/** getpeername(2) as a {@link SocketAddress}. */
export function peerSocketAddress(fd: number): SocketAddress {
  return socketName("getpeername", fd);
}

/** getsockname(2) as "ip:port" ("[ip6]:port"). */
export function localAddress(fd: number): string {
  return formatAddress(localSocketAddress(fd));
}

/** getpeername(2) as "ip:port" ("[ip6]:port"). @throws {ErrnoError} ENOTCONN if not connected */
export function peerAddress(fd: number): string {
  return formatAddress(peerSocketAddress(fd));
}

// ---------------------------------------------------------------------------
// Listen and connect

/** A bound, listening TCP socket. */
export interface TcpListenSocket {
  /** The listening fd (non-blocking, close-on-exec); the caller owns it. */
  fd: number;
  /** The port bound: the one asked for, or the kernel's choice for port 0. */
  port: number;
  /** The bound address as "ip:port" ("[ip6]:port"). */
  address: string;
}

/** Options for {@link tcpListen}. */
export interface TcpListenOptions {
  /** SO_REUSEADDR (bind while old connections sit in TIME_WAIT). Default true. */
  reuseAddress?: boolean;
  /** For an IPv6 address: IPV6_V6ONLY. Default: the system's (usually dual-stack). */
  v6Only?: boolean;
}

function subjectFor(host: string, port: number): string {
  const shown = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return `port ${port} on ${shown === "" ? "0.0.0.0" : shown}`;
}

/**
 * A TCP socket listening on `host:port`; port 0 binds an ephemeral port,
 * read back with getsockname.
 *
 * @throws {ErrnoError} with the address in the message, e.g.
 *   `bind failed (port 4420 on 127.0.0.1): EADDRINUSE (errno 98)`
 * @throws {RangeError} for a non-numeric host or a bad port
 */
export function tcpListen(
  host: string,
  port: number,
  backlog = 128,
  options: TcpListenOptions = {},
): TcpListenSocket {
  const sa = encodeSockaddr(host, port);
  const subject = subjectFor(host, port);
  const fd = check(
    "socket",
    sym.socket(sa.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
    subject,
  );
  try {
    if (options.reuseAddress ?? true) setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, subject);
    if (sa.family === AF_INET6 && options.v6Only !== undefined) {
      setIntOption(fd, IPPROTO_IPV6, IPV6_V6ONLY, options.v6Only ? 1 : 0, subject);
    }
    check("bind", sym.bind(fd, sa.bytes, sa.length), subject);
    check("listen", sym.listen(fd, backlog), subject);
    const local = localSocketAddress(fd);
    return { fd, port: local.port, address: formatAddress(local) };
  } catch (e) {
    sym.close(fd);
    throw e;
  }
}

/** Options for {@link tcpConnect}. */
export interface TcpConnectOptions {
  /** Give up after this long (ETIMEDOUT). Default 10 000 ms. */
  timeoutMs?: number;
  /** TCP_NODELAY on the new socket. Default true. */
  noDelay?: boolean;
}

/**
 * A TCP socket connected to `host:port`; non-blocking and close-on-exec.
 *
 * The connect itself is non-blocking; when the handshake does not finish at
 * once, the wait is a poll(2) on Deno's blocking thread pool (one ~10 us
 * hand-off per connection: control path only).
 *
 * @returns the connected fd; the caller owns it
 * @throws {ErrnoError} with the address in the message (ECONNREFUSED,
 *   ETIMEDOUT, ENETUNREACH, ...)
 */
export async function tcpConnect(
  host: string,
  port: number,
  options: TcpConnectOptions = {},
): Promise<number> {
  const sa = encodeSockaddr(host, port);
  const subject = formatAddress({ family: sa.family, host: host.replace(/^\[|\]$/g, ""), port });
  const fd = check(
    "socket",
    sym.socket(sa.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
    subject,
  );
  try {
    if (options.noDelay ?? true) setNoDelay(fd, true);
    if (sym.connect(fd, sa.bytes, sa.length) < 0) {
      const e = errno();
      if (e !== EINPROGRESS) throw new ErrnoError("connect", e, subject);
      await waitWritable(fd, options.timeoutMs ?? 10_000, subject);
      const err = getSocketError(fd);
      if (err !== 0) throw new ErrnoError("connect", err, subject);
    }
    return fd;
  } catch (e) {
    sym.close(fd);
    throw e;
  }
}

/** Waits for POLLOUT: a synchronous zero-timeout poll first, then one on the thread pool. */
async function waitWritable(fd: number, timeoutMs: number, subject: string): Promise<void> {
  const pollfd = new Uint8Array(new ArrayBuffer(8));
  const dv = new DataView(pollfd.buffer);
  const deadline = performance.now() + timeoutMs;
  for (let first = true;; first = false) {
    dv.setInt32(0, fd, true);
    dv.setInt16(4, POLLOUT, true);
    dv.setInt16(6, 0, true);
    const wait = first ? 0 : Math.max(0, Math.ceil(deadline - performance.now()));
    const r = first ? sym.poll(pollfd, 1n, 0) : await sym.poll_nonblocking(pollfd, 1n, wait);
    if (r > 0 && (dv.getInt16(6, true) & (POLLOUT | POLLERR | POLLHUP)) !== 0) return;
    if (r < 0 && first && errno() !== Errno.EINTR) throw new ErrnoError("poll", errno(), subject);
    if (!first && performance.now() >= deadline) {
      throw new ErrnoError("connect", Errno.ETIMEDOUT, `${subject} after ${timeoutMs} ms`);
    }
  }
}

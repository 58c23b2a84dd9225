/**
 * TCP for the data path, driven by the reactor's io_uring.
 *
 * Deno's own TCP costs a promise and an op per read and receives into
 * buffers it chooses. Here a {@link TcpConnection} receives with
 * IORING_OP_RECV straight into one receive buffer the owner supplies (inside
 * WASM memory on the data path, so CRC32C digests need no copy), and sends
 * with IORING_OP_SENDMSG straight from the owner's buffers. A
 * {@link TcpListener} accepts with one multishot IORING_OP_ACCEPT.
 *
 * ## Receiving: one buffer, a consumed count
 *
 * The connection owns one receive buffer of `receiveBufferBytes`. Received
 * bytes always start at offset 0 of it: `onData(buffer, length)` sees
 * `buffer[0, length)` (the whole buffer object is passed with a length, so
 * no view is made per receive) and returns how many leading bytes it
 * consumed. Unconsumed bytes (a PDU that straddles two receives) are moved
 * to the start of the buffer and the next receive appends to them, so the
 * next `onData` sees them again followed by the new bytes. A message must
 * therefore fit in the buffer: a full buffer of which nothing is consumed
 * closes the connection (EMSGSIZE), unless receiving is paused.
 *
 * The next receive is armed after `onData` returns. Every view of the buffer
 * is void once `onData` returns (the leftover move and the next receive
 * write into it): consume synchronously or copy.
 *
 * Backpressure on the receive side: {@link TcpConnection.pauseReceive}
 * stops arming receives (one already armed may still complete into the
 * free tail; its bytes wait, undelivered). {@link TcpConnection.resumeReceive}
 * re-arms and, if bytes wait, delivers them again on the next reactor pass.
 * A zero-copy echo sends `buffer[0, length)`, pauses, returns `length`, and
 * resumes in `onSent`.
 *
 * ## Sending: queued by reference, coalesced per reactor pass
 *
 * {@link TcpConnection.send}, `sendRange` and `sendv` queue references, never
 * copies: the caller must not touch a buffer until `onSent(tag)` reports
 * that send call done (all its bytes are in the kernel), or until `onClose`
 * (the kernel no longer reads any queued buffer then). Everything queued
 * during one reactor pass goes out in ONE IORING_OP_SENDMSG whose iovec
 * array (preallocated, `maxIovPerSend` entries) lists the queued buffers;
 * one SENDMSG is in flight per connection at a time (TCP byte order), and a
 * short send continues from the byte where it stopped. The queue is bounded:
 * `writable` turns false when `sendQueueBytes` or `sendQueueEntries` is
 * reached and `onDrain` fires once the queue is back below half of both;
 * a send past `sendQueueEntries` throws (the owner ignored `writable`).
 *
 * ## Closing
 *
 * Peer close (a receive of 0 bytes), an error (ECONNRESET, EPIPE, ...),
 * {@link TcpConnection.close} and the end of {@link TcpConnection.end} all
 * lead to `onClose(reason)` exactly once, from the reactor's loop (never
 * inside a call to `close`), after the kernel has given back every receive
 * and send: shutdown(2) ends them at once. Then the fd is closed, queued
 * sends are dropped (counted in the reason), the receive buffer is
 * released, and the connection's slot in the reactor is freed. Teardown
 * runs on the reactor: it must be running.
 *
 * ## Accounting and allocation
 *
 * A SENDMSG in flight counts in `reactor.ioInFlight` (the reactor keeps
 * polling: the answer comes soon). A receive waiting on a quiet peer does
 * not (or the reactor would never park); a protocol layer that expects an
 * answer (an initiator with commands outstanding) counts those itself. In
 * steady state nothing is allocated per receive or send: the msghdr and
 * iovecs live in preallocated memory written as u32 words, user_data and
 * addresses are numbers.
 *
 * All connections and listeners of one reactor share one CQE handler id
 * and one poller ("net:tcp"): `user_data` carries a slot number and the
 * operation, so the number of connections is not bounded by the reactor's
 * 255 handler ids.
 *
 * @example Echo server and client on one reactor
 * ```ts
 * import { Reactor } from "../reactor/mod.ts";
 * import { connectTcp, TcpConnection, TcpListener } from "./tcp.ts";
 *
 * const reactor = new Reactor();
 * const running = reactor.run();
 * const listener = new TcpListener(reactor, {
 *   host: "127.0.0.1",
 *   port: 0,
 *   onConnection(fd, peer) {
 *     const conn: TcpConnection = new TcpConnection(reactor, fd, {
 *       peer,
 *       onData(buffer, length) { // zero-copy echo
 *         conn.sendRange(buffer, 0, length);
 *         conn.pauseReceive();
 *         return length;
 *       },
 *       onSent: () => conn.resumeReceive(),
 *     });
 *   },
 * });
 * const client = await connectTcp(reactor, "127.0.0.1", listener.port, {
 *   onData(buffer, length) {
 *     console.log(new TextDecoder().decode(buffer.subarray(0, length))); // "hello"
 *     client.close();
 *     return length;
 *   },
 * });
 * client.send(new TextEncoder().encode("hello"));
 * await client.whenClosed;
 * await listener.close();
 * await reactor.stop();
 * await running;
 * reactor.close();
 * ```
 * @module
 */
import { Errno, errnoName } from "../../ffi/errno.ts";
import {
  IORING_ASYNC_CANCEL_ALL,
  IORING_CQE_F_MORE,
  IORING_OP_ASYNC_CANCEL,
  type IoUring,
} from "../../ffi/io_uring.ts";
import { sym } from "../../ffi/libc.ts";
import { addressOf } from "../../ffi/memory.ts";
import {
  localAddress as socketLocalAddress,
  MSG_NOSIGNAL,
  peerAddress,
  setNoDelay,
  SHUT_RD,
  SHUT_RDWR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  tcpConnect,
  type TcpConnectOptions,
  tcpListen,
} from "../../ffi/tcp_socket.ts";
import { Reactor } from "../reactor/reactor.ts";

/** IORING_OP_SENDMSG (enum io_uring_op). */
const IORING_OP_SENDMSG = 9;
/** IORING_ASYNC_CANCEL_FD: cancel by fd rather than user_data (Linux 5.19). */
const IORING_ASYNC_CANCEL_FD = 1 << 1;
const EMSGSIZE = 90;
const ENOBUFS = 105;

// user_data tag = slot << OP_BITS | op (24 bits in all, see Reactor.userData).
const OP_BITS = 2;
const OP_MASK = (1 << OP_BITS) - 1;
const OP_RECV = 0;
const OP_SEND = 1;
const OP_ACCEPT = 2;
const OP_CANCEL = 3;
/** Largest number of connections plus listeners on one reactor. */
export const TCP_SLOTS_MAX = 1 << (24 - OP_BITS);

/** Largest total of one SENDMSG: the CQE result is an s32. */
const SENDMSG_BYTES_MAX = 1 << 30;
/** The kernel's IOV_MAX: iovecs per sendmsg. */
const IOV_MAX = 1024;
const SIZEOF_MSGHDR = 56;
const SIZEOF_IOVEC = 16;
const TWO_32 = 0x1_0000_0000;
const EMPTY = new Uint8Array(0);

const STATE_OPEN = 0;
const STATE_CLOSING = 1;
const STATE_CLOSED = 2;

// Internal protocol between the shared dispatcher and its endpoints, keyed by
// symbols so it stays off the documented API of the exported classes.
const kCqe: unique symbol = Symbol("tcp.cqe");
const kService: unique symbol = Symbol("tcp.service");
const kNext: unique symbol = Symbol("tcp.nextDirty");
const kDirty: unique symbol = Symbol("tcp.dirty");
const kForget: unique symbol = Symbol("tcp.forgetFd");

interface Endpoint {
  /** A CQE of this endpoint: `op` is OP_*. */
  [kCqe](op: number, res: number, flags: number): void;
  /** Deferred work (sends to build, SQEs that found the ring full, teardown); true: again next pass. */
  [kService](): boolean;
  [kNext]: Endpoint | null;
  [kDirty]: boolean;
}

/**
 * One per reactor: the CQE handler and poller all TCP endpoints share, and
 * the slot table that maps `user_data` back to an endpoint. Exists while at
 * least one endpoint is attached.
 */
class TcpDispatcher {
  static readonly #byReactor = new WeakMap<Reactor, TcpDispatcher>();

  readonly reactor: Reactor;
  readonly #handlerId: number;
  readonly #udBase: number;
  readonly #slots: (Endpoint | undefined)[] = [];
  readonly #free: number[] = [];
  readonly #listeners = new Set<TcpListener>();
  #attached = 0;
  #dirtyHead: Endpoint | null = null;
  #dirtyTail: Endpoint | null = null;
  readonly #pollerName: string;

  static of(reactor: Reactor): TcpDispatcher {
    let d = TcpDispatcher.#byReactor.get(reactor);
    if (d === undefined) {
      d = new TcpDispatcher(reactor);
      TcpDispatcher.#byReactor.set(reactor, d);
    }
    return d;
  }

  private constructor(reactor: Reactor) {
    this.reactor = reactor;
    this.#handlerId = reactor.registerCqeHandler(this.#onCqe);
    this.#udBase = Reactor.userData(this.#handlerId, 0);
    this.#pollerName = "net:tcp";
    reactor.addPoller(this.#pollerName, this.#poll);
  }

  /** Takes a slot for `ep`; its user_data values are {@link userData}(slot, op). */
  attach(ep: Endpoint): number {
    let slot = this.#free.pop();
    if (slot === undefined) {
      if (this.#slots.length >= TCP_SLOTS_MAX) {
        throw new Error(`reactor has no free TCP slot (all ${TCP_SLOTS_MAX} in use)`);
      }
      slot = this.#slots.length;
      this.#slots.push(undefined);
    }
    this.#slots[slot] = ep;
    this.#attached++;
    return slot;
  }

  /** Frees a slot; the endpoint must have nothing in the kernel any more. */
  detach(slot: number): void {
    this.#slots[slot] = undefined;
    this.#free.push(slot);
    if (--this.#attached === 0) {
      this.reactor.unregisterCqeHandler(this.#handlerId);
      this.reactor.removePoller(this.#pollerName);
      TcpDispatcher.#byReactor.delete(this.reactor);
    }
  }

  userData(slot: number, op: number): number {
    return this.#udBase + slot * (1 << OP_BITS) + op;
  }

  addListener(l: TcpListener): void {
    this.#listeners.add(l);
  }

  removeListener(l: TcpListener): void {
    this.#listeners.delete(l);
  }

  /** A connection closed `fd`: listeners that handed it out stop counting it. */
  fdClosed(fd: number): void {
    for (const l of this.#listeners) l[kForget](fd);
  }

  /** Queues `ep` for the poller (runs after this pass's CQEs) and wakes a parked reactor. */
  markDirty(ep: Endpoint): void {
    if (ep[kDirty]) return;
    ep[kDirty] = true;
    ep[kNext] = null;
    if (this.#dirtyTail === null) this.#dirtyHead = ep;
    else this.#dirtyTail[kNext] = ep;
    this.#dirtyTail = ep;
    this.reactor.wake();
  }

  readonly #onCqe = (tag: number, res: number, flags: number): void => {
    const ep = this.#slots[tag >>> OP_BITS];
    if (ep === undefined) {
      // Slots are freed only when their endpoint has nothing in the kernel.
      throw new Error(`tcp: CQE (res ${res}) for free slot ${tag >>> OP_BITS}`);
    }
    ep[kCqe](tag & OP_MASK, res, flags);
  };

  /**
   * Services dirty endpoints. Endpoints made dirty while this runs (a
   * callback sending) are served in the same call, up to a few passes.
   */
  readonly #poll = (): number => {
    let work = 0;
    let retryHead: Endpoint | null = null;
    for (let pass = 0; pass < 4 && this.#dirtyHead !== null; pass++) {
      let ep: Endpoint | null = this.#dirtyHead;
      this.#dirtyHead = this.#dirtyTail = null;
      while (ep !== null) {
        const next: Endpoint | null = ep[kNext];
        ep[kNext] = null;
        ep[kDirty] = false;
        work++;
        if (ep[kService]() && !ep[kDirty]) {
          // The SQ ring was full: try again next pass (returning work keeps
          // the reactor awake and submitting, which frees SQ space).
          ep[kDirty] = true;
          ep[kNext] = retryHead;
          retryHead = ep;
        }
        ep = next;
      }
    }
    while (retryHead !== null) {
      const ep: Endpoint = retryHead;
      retryHead = ep[kNext];
      ep[kDirty] = false;
      this.markDirty(ep);
    }
    return work;
  };
}

// ---------------------------------------------------------------------------
// Receive buffers

/** Where a connection's receive buffer comes from and goes back to. */
export interface ReceiveBufferAllocator {
  /** A buffer of at least `bytes` bytes; the connection uses the first `bytes`. */
  allocate(bytes: number): Uint8Array;
  /** Takes the buffer back after the connection closed (the kernel no longer writes it). */
  release?(buffer: Uint8Array): void;
}

/** Plain memory: a fresh ArrayBuffer per connection, left to the GC. */
export const plainReceiveBuffers: ReceiveBufferAllocator = {
  allocate: (bytes) => new Uint8Array(new ArrayBuffer(bytes)),
};

/**
 * Recycles receive buffers of one size made by `allocate(bytes, align)`:
 * for memory without a free, such as `wasmAlloc` (buffers inside WASM
 * memory, where CRC32C reads them in place). At most `maxFree` idle
 * buffers are kept; more are dropped to `allocate`'s owner.
 *
 * @example
 * ```ts
 * import { initWasmMemory, wasmAlloc } from "../../wasm/mod.ts";
 * import { ReceiveBufferPool } from "./tcp.ts";
 * initWasmMemory(64 << 20);
 * const pool = new ReceiveBufferPool(wasmAlloc, 4096);
 * // new TcpConnection(reactor, fd, { receiveBuffers: pool, onData ... })
 * ```
 */
export class ReceiveBufferPool implements ReceiveBufferAllocator {
  readonly #allocate: (bytes: number, align: number) => Uint8Array;
  readonly #align: number;
  readonly #maxFree: number;
  readonly #free = new Map<number, Uint8Array[]>();
  /** Buffers made by `allocate` so far. */
  allocated = 0;

  constructor(
    allocate: (bytes: number, align: number) => Uint8Array,
    align = 64,
    maxFree = 1024,
  ) {
    this.#allocate = allocate;
    this.#align = align;
    this.#maxFree = maxFree;
  }

  allocate(bytes: number): Uint8Array {
    const list = this.#free.get(bytes);
    const reused = list?.pop();
    if (reused !== undefined) return reused;
    this.allocated++;
    return this.#allocate(bytes, this.#align);
  }

  release(buffer: Uint8Array): void {
    let list = this.#free.get(buffer.byteLength);
    if (list === undefined) this.#free.set(buffer.byteLength, list = []);
    if (list.length < this.#maxFree) list.push(buffer);
  }
}

// ---------------------------------------------------------------------------
// Connections

/** Why a connection closed; passed once to `onClose`. */
export interface TcpCloseReason {
  /** "local": close()/end(); "peer": the peer closed (end of stream); "error": a failed receive or send. */
  kind: "local" | "peer" | "error";
  /** The errno for "error" (ECONNRESET, EPIPE, EMSGSIZE for a full receive buffer), else 0. */
  errno: number;
  /** A sentence for logs. */
  message: string;
  /** Send calls dropped unsent (their onSent never came). */
  unsentCalls: number;
  /** Bytes of those and of a partly sent call that were not sent. */
  unsentBytes: number;
}

/** Counters of one connection; a plain object, read any time. */
export interface TcpConnectionStats {
  /** Receive SQEs prepared. */
  recvSubmitted: number;
  /** Receives that brought bytes. */
  recvCompleted: number;
  bytesReceived: number;
  /** onData calls. */
  deliveries: number;
  /** Unconsumed bytes moved to the buffer start (a message straddling receives). */
  bytesMoved: number;
  /** send/sendRange calls plus buffers of sendv calls queued. */
  buffersQueued: number;
  /** SENDMSG SQEs prepared: fewer than buffersQueued when sends coalesced. */
  sendmsgSubmitted: number;
  /** SENDMSGs that sent less than asked (continued from where they stopped). */
  partialSends: number;
  bytesSent: number;
}

/** Options of a {@link TcpConnection}. */
export interface TcpConnectionOptions {
  /**
   * Received bytes are `buffer[0, length)`; return how many leading bytes
   * were consumed (0..length). The rest is kept at the buffer start and
   * offered again with the next bytes. Views of `buffer` are void after
   * return. See the module documentation.
   */
  onData: (buffer: Uint8Array, length: number) => number;
  /** The connection ended; called once, from the reactor loop. */
  onClose?: (reason: TcpCloseReason) => void;
  /** All bytes of the send call made with `tag` are in the kernel: its buffers are the caller's again. */
  onSent?: (tag: number) => void;
  /** `writable` is true again after a full send queue. */
  onDrain?: () => void;
  /** Receive buffer size. Default 256 KiB. */
  receiveBufferBytes?: number;
  /** Where the receive buffer comes from. Default {@link plainReceiveBuffers}. */
  receiveBuffers?: ReceiveBufferAllocator;
  /** Hard limit of queued send buffers (rounded up to a power of two). Default 1024. */
  sendQueueEntries?: number;
  /** Queued bytes at which `writable` turns false. Default 4 MiB. */
  sendQueueBytes?: number;
  /** Most iovecs in one SENDMSG, 1..1024. Default 64. */
  maxIovPerSend?: number;
  /** TCP_NODELAY. Default true. */
  noDelay?: boolean;
  /** The peer's "ip:port" if known (the listener passes it); else read with getpeername. */
  peer?: string;
}

/**
 * A TCP connection on a {@link Reactor}: receives into one buffer, sends
 * queued buffers coalesced into SENDMSGs. Takes ownership of `fd` (it is
 * closed when the connection closes). See the module documentation for
 * the receive, send and close contracts.
 *
 * Everything runs on the reactor's thread; calls made from outside the
 * loop (a timer, a test) wake a parked reactor.
 */
export class TcpConnection implements Endpoint {
  /** The socket; owned by this connection until it closed. */
  readonly fd: number;
  /** The peer as "ip:port" ("[ip6]:port"). */
  readonly peer: string;
  /** Live counters. */
  readonly stats: TcpConnectionStats = {
    recvSubmitted: 0,
    recvCompleted: 0,
    bytesReceived: 0,
    deliveries: 0,
    bytesMoved: 0,
    buffersQueued: 0,
    sendmsgSubmitted: 0,
    partialSends: 0,
    bytesSent: 0,
  };
  /** Resolves with the reason once the connection has closed (after onClose). */
  readonly whenClosed: Promise<TcpCloseReason>;

  [kNext]: Endpoint | null = null;
  [kDirty] = false;

  readonly #d: TcpDispatcher;
  readonly #reactor: Reactor;
  readonly #ring: IoUring;
  readonly #slot: number;
  readonly #udRecv: number;
  readonly #udSend: number;
  readonly #udCancel: number;
  readonly #onData: (buffer: Uint8Array, length: number) => number;
  readonly #onClose: ((reason: TcpCloseReason) => void) | undefined;
  readonly #onSent: ((tag: number) => void) | undefined;
  readonly #onDrain: (() => void) | undefined;
  #resolveClosed: (reason: TcpCloseReason) => void = () => {};
  #local: string | undefined;

  // Receive side.
  readonly #allocator: ReceiveBufferAllocator;
  readonly #rbuf: Uint8Array;
  readonly #rsize: number;
  readonly #raddr: number;
  /** Bytes held at the start of #rbuf (received, not consumed). */
  #rlen = 0;
  #recvArmed = false;
  /** The armed receive counts in reactor.ioInFlight (only while closing). */
  #recvCounted = false;
  #paused = false;
  #needArm = false;
  #needDeliver = false;
  #delivering = false;

  // Send queue: a ring of references; head..tail (u32 counters) are queued.
  readonly #qBufs: (Uint8Array | undefined)[];
  readonly #qOff: Float64Array;
  readonly #qLen: Float64Array;
  readonly #qTag: Float64Array;
  /** 1: the last buffer of a send call (onSent fires when it is done). */
  readonly #qEnd: Uint8Array;
  readonly #qMask: number;
  readonly #qCap: number;
  #qHead = 0;
  #qTail = 0;
  /** Bytes of the head buffer already sent. */
  #headSent = 0;
  /** Bytes queued and not yet sent. */
  #qBytes = 0;
  readonly #qBytesMax: number;
  #writable = true;
  #sendInFlight = false;
  #sendAsked = 0;
  #ending = false;

  // SENDMSG: one msghdr and its iovec array, preallocated, written as u32 words.
  readonly #msgWords: Uint32Array;
  readonly #msgAddr: number;
  readonly #maxIov: number;

  #state = STATE_OPEN;
  #reason: TcpCloseReason | null = null;
  #cancelInFlight = false;
  #needCancel = false;

  /**
   * Wraps connected socket `fd` and arms the first receive.
   * @throws {RangeError} for bad options; ErrnoError from setsockopt
   *   or getpeername. On a throw the fd is still the caller's to close.
   */
  constructor(reactor: Reactor, fd: number, options: TcpConnectionOptions) {
    const rsize = options.receiveBufferBytes ?? 256 * 1024;
    if (!Number.isSafeInteger(rsize) || rsize < 1 || rsize > 0x7fffffff) {
      throw new RangeError(`receiveBufferBytes must be an integer in 1..2^31-1, got ${rsize}`);
    }
    const entries = options.sendQueueEntries ?? 1024;
    if (!Number.isInteger(entries) || entries < 1 || entries > 1 << 20) {
      throw new RangeError(`sendQueueEntries must be an integer in 1..2^20, got ${entries}`);
    }
    const maxIov = options.maxIovPerSend ?? 64;
    if (!Number.isInteger(maxIov) || maxIov < 1 || maxIov > IOV_MAX) {
      throw new RangeError(`maxIovPerSend must be an integer in 1..${IOV_MAX}, got ${maxIov}`);
    }
    const qBytesMax = options.sendQueueBytes ?? 4 * 1024 * 1024;
    if (!Number.isSafeInteger(qBytesMax) || qBytesMax < 1) {
      throw new RangeError(`sendQueueBytes must be a positive integer, got ${qBytesMax}`);
    }
    this.fd = fd;
    this.#reactor = reactor;
    this.#ring = reactor.ring;
    this.#onData = options.onData;
    this.#onClose = options.onClose;
    this.#onSent = options.onSent;
    this.#onDrain = options.onDrain;
    this.whenClosed = new Promise((resolve) => (this.#resolveClosed = resolve));

    let cap = 1;
    while (cap < entries) cap *= 2;
    this.#qCap = cap;
    this.#qMask = cap - 1;
    this.#qBufs = new Array<Uint8Array | undefined>(cap).fill(undefined);
    this.#qOff = new Float64Array(cap);
    this.#qLen = new Float64Array(cap);
    this.#qTag = new Float64Array(cap);
    this.#qEnd = new Uint8Array(cap);
    this.#qBytesMax = qBytesMax;

    this.#maxIov = maxIov;
    // An explicit ArrayBuffer's backing store never moves: its address is stable.
    const msg = new ArrayBuffer(SIZEOF_MSGHDR + maxIov * SIZEOF_IOVEC);
    this.#msgWords = new Uint32Array(msg);
    this.#msgAddr = addressOf(this.#msgWords);
    const iovAddr = this.#msgAddr + SIZEOF_MSGHDR;
    // struct msghdr: msg_iov at byte 16; the rest stays 0 but msg_iovlen (24).
    this.#msgWords[4] = iovAddr >>> 0;
    this.#msgWords[5] = (iovAddr / TWO_32) >>> 0;

    if (options.noDelay ?? true) setNoDelay(fd, true);
    this.peer = options.peer ?? peerAddress(fd);

    this.#allocator = options.receiveBuffers ?? plainReceiveBuffers;
    const buf = this.#allocator.allocate(rsize);
    if (buf.byteLength < rsize) {
      throw new RangeError(`receive buffer allocator gave ${buf.byteLength} bytes for ${rsize}`);
    }
    this.#rbuf = buf;
    this.#rsize = rsize;
    this.#raddr = addressOf(buf);

    this.#d = TcpDispatcher.of(reactor);
    try {
      this.#slot = this.#d.attach(this);
    } catch (e) {
      this.#allocator.release?.(buf);
      throw e;
    }
    this.#udRecv = this.#d.userData(this.#slot, OP_RECV);
    this.#udSend = this.#d.userData(this.#slot, OP_SEND);
    this.#udCancel = this.#d.userData(this.#slot, OP_CANCEL);
    this.#armRecv();
    // Made outside the loop (connectTcp, a test): a parked reactor must submit the SQE.
    reactor.wake();
  }

  /** The local end as "ip:port" (getsockname, read once). */
  get local(): string {
    if (this.#local === undefined) this.#local = socketLocalAddress(this.fd);
    return this.#local;
  }

  /** False once the send queue reached a limit, until onDrain. */
  get writable(): boolean {
    return this.#writable;
  }

  /** True until the connection starts closing: sends are accepted. */
  get open(): boolean {
    return this.#state === STATE_OPEN && !this.#ending;
  }

  /** True once onClose ran. */
  get closed(): boolean {
    return this.#state === STATE_CLOSED;
  }

  /** Bytes queued and not yet sent. */
  get queuedBytes(): number {
    return this.#qBytes;
  }

  /** Send buffers queued and not yet fully sent. */
  get queuedBuffers(): number {
    return (this.#qTail - this.#qHead) >>> 0;
  }

  /** True while a SENDMSG is in the kernel. */
  get sending(): boolean {
    return this.#sendInFlight;
  }

  /** True while receiving is paused. */
  get receivePaused(): boolean {
    return this.#paused;
  }

  /**
   * Queues all of `bytes`; onSent(tag) when it is sent. Returns false, taking
   * nothing, when the connection is closing or closed.
   * @throws {RangeError} when the queue already holds `sendQueueEntries` buffers
   */
  send(bytes: Uint8Array, tag = 0): boolean {
    if (this.#state !== STATE_OPEN || this.#ending) return false;
    this.#push(bytes, 0, bytes.byteLength, tag, 1);
    this.#queued();
    return true;
  }

  /** As {@link send} for `bytes[offset, offset + length)`, without making a view. */
  sendRange(bytes: Uint8Array, offset: number, length: number, tag = 0): boolean {
    if (
      !(offset >= 0 && length >= 0 && offset + length <= bytes.byteLength) ||
      !Number.isInteger(offset) || !Number.isInteger(length)
    ) {
      throw new RangeError(
        `sendRange [${offset}, +${length}) is outside the ${bytes.byteLength}-byte buffer`,
      );
    }
    if (this.#state !== STATE_OPEN || this.#ending) return false;
    this.#push(bytes, offset, length, tag, 1);
    this.#queued();
    return true;
  }

  /**
   * Queues `iovs[0, count)` in order as one send call: onSent(tag) once,
   * when the last is sent. All or nothing.
   * @throws {RangeError} when the queue lacks room for `count` more buffers
   */
  sendv(iovs: readonly Uint8Array[], count: number = iovs.length, tag = 0): boolean {
    if (!Number.isInteger(count) || count < 0 || count > iovs.length) {
      throw new RangeError(`sendv count ${count} is outside 0..${iovs.length}`);
    }
    if (this.#state !== STATE_OPEN || this.#ending) return false;
    if (count === 0) return this.send(EMPTY, tag); // onSent(tag) still comes, in order
    if (((this.#qTail - this.#qHead) >>> 0) + count > this.#qCap) this.#queueFull(count);
    for (let i = 0; i < count; i++) {
      const b = iovs[i] as Uint8Array;
      this.#push(b, 0, b.byteLength, tag, i === count - 1 ? 1 : 0);
    }
    this.#queued();
    return true;
  }

  #push(bytes: Uint8Array, offset: number, length: number, tag: number, end: number): void {
    const n = (this.#qTail - this.#qHead) >>> 0;
    if (n >= this.#qCap) this.#queueFull(1);
    const i = this.#qTail & this.#qMask;
    this.#qBufs[i] = bytes;
    this.#qOff[i] = offset;
    this.#qLen[i] = length;
    this.#qTag[i] = tag;
    this.#qEnd[i] = end;
    this.#qTail = (this.#qTail + 1) >>> 0;
    this.#qBytes += length;
    this.stats.buffersQueued++;
  }

  #queueFull(more: number): never {
    throw new RangeError(
      `TCP send queue to ${this.peer} is full (${this.#qCap} buffers, ${more} more asked): ` +
        "wait for onDrain when writable is false",
    );
  }

  #queued(): void {
    if (
      this.#writable &&
      (this.#qBytes >= this.#qBytesMax || ((this.#qTail - this.#qHead) >>> 0) >= this.#qCap)
    ) {
      this.#writable = false;
    }
    // The poller builds the SENDMSG after this pass's CQEs: that is the coalescing.
    if (!this.#sendInFlight) this.#d.markDirty(this);
  }

  /** Stops arming receives until {@link resumeReceive}; see the module documentation. */
  pauseReceive(): void {
    this.#paused = true;
  }

  /** Arms receiving again; bytes held unconsumed are offered again on the next pass. */
  resumeReceive(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#state !== STATE_OPEN) return;
    if (this.#delivering) return; // the delivery in progress arms after onData returns
    if (this.#rlen > 0) this.#needDeliver = true;
    if (!this.#recvArmed) this.#needArm = true;
    this.#d.markDirty(this);
  }

  /**
   * Closes now: queued sends are dropped, onClose({kind: "local"}) follows
   * from the reactor loop. Idempotent.
   */
  close(): void {
    this.#closeWith("local", 0, "closed locally");
  }

  /** Closes once every queued send is in the kernel; no sends are accepted meanwhile. */
  end(): void {
    if (this.#state !== STATE_OPEN || this.#ending) return;
    this.#ending = true;
    if (this.#qHead === this.#qTail && !this.#sendInFlight) this.close();
  }

  // -------------------------------------------------------------------------

  #armRecv(): void {
    if (this.#recvArmed || this.#paused || this.#state !== STATE_OPEN) return;
    const free = this.#rsize - this.#rlen;
    if (free === 0) return;
    if (this.#ring.prepRecv(this.fd, this.#raddr + this.#rlen, free, 0, this.#udRecv) < 0) {
      this.#needArm = true;
      this.#d.markDirty(this);
      return;
    }
    this.#needArm = false;
    this.#recvArmed = true;
    this.stats.recvSubmitted++;
  }

  /** Offers the held bytes to onData and keeps what it did not consume. */
  #deliver(): void {
    const len = this.#rlen;
    this.stats.deliveries++;
    this.#delivering = true;
    let consumed: number;
    try {
      consumed = this.#onData(this.#rbuf, len);
    } finally {
      this.#delivering = false;
    }
    if (!(consumed >= 0 && consumed <= len) || !Number.isInteger(consumed)) {
      throw new RangeError(`onData returned ${consumed}; it must consume 0..${len} bytes`);
    }
    if (this.#state !== STATE_OPEN) return;
    if (consumed === len) {
      this.#rlen = 0;
    } else if (consumed > 0) {
      this.#rbuf.copyWithin(0, consumed, len);
      this.#rlen = len - consumed;
      this.stats.bytesMoved += len - consumed;
    }
    if (this.#rlen === this.#rsize && !this.#paused) {
      this.#closeWith(
        "error",
        EMSGSIZE,
        `receive buffer full: a message from ${this.peer} exceeds ${this.#rsize} bytes`,
      );
    }
  }

  [kCqe](op: number, res: number, flags: number): void {
    switch (op) {
      case OP_RECV:
        return this.#onRecv(res);
      case OP_SEND:
        return this.#onSendDone(res);
      case OP_CANCEL:
        this.#cancelInFlight = false;
        this.#reactor.ioInFlight--;
        this.#d.markDirty(this);
        return;
    }
    throw new Error(`tcp connection ${this.peer}: unexpected CQE op ${op} (res ${res}, ${flags})`);
  }

  #onRecv(res: number): void {
    this.#recvArmed = false;
    if (this.#recvCounted) {
      this.#recvCounted = false;
      this.#reactor.ioInFlight--;
    }
    if (this.#state !== STATE_OPEN) {
      this.#d.markDirty(this); // teardown may be able to finish now
      return;
    }
    if (res > 0) {
      this.#rlen += res;
      this.stats.recvCompleted++;
      this.stats.bytesReceived += res;
      if (this.#paused) return; // held until resumeReceive
      this.#deliver();
      this.#armRecv();
      return;
    }
    if (res === 0) {
      this.#closeWith("peer", 0, `${this.peer} closed the connection`);
      return;
    }
    this.#closeWith("error", -res, `recv from ${this.peer} failed: ${errnoName(-res)}`);
  }

  #onSendDone(res: number): void {
    this.#sendInFlight = false;
    this.#reactor.ioInFlight--;
    // Bytes the kernel took are sent even if the connection is closing
    // meanwhile: their send calls complete (onSent) rather than count as unsent.
    if (res > 0) this.#retire(res);
    else if (res === 0 && this.#sendAsked === 0) this.#retire(0); // only empty buffers
    if (this.#state !== STATE_OPEN) {
      this.#d.markDirty(this); // teardown may be able to finish now
      return;
    }
    if (res < 0) {
      this.#closeWith("error", -res, `send to ${this.peer} failed: ${errnoName(-res)}`);
      return;
    }
    if (res === 0 && this.#sendAsked > 0) {
      this.#closeWith("error", Errno.EPIPE, `send to ${this.peer} made no progress`);
      return;
    }
    if (
      !this.#writable && this.#qBytes <= this.#qBytesMax / 2 &&
      ((this.#qTail - this.#qHead) >>> 0) <= this.#qCap / 2
    ) {
      this.#writable = true;
      this.#onDrain?.();
      if (this.#state !== STATE_OPEN) return;
    }
    if (this.#qHead !== this.#qTail) this.#d.markDirty(this);
    else if (this.#ending) this.close();
  }

  /** Takes `res` sent bytes off the queue in order; onSent for each send call completed. */
  #retire(res: number): void {
    this.stats.bytesSent += res;
    if (res < this.#sendAsked) this.stats.partialSends++;
    this.#qBytes -= res;
    let rest = res;
    while (this.#qHead !== this.#qTail) {
      const i = this.#qHead & this.#qMask;
      const left = (this.#qLen[i] ?? 0) - this.#headSent;
      if (rest < left) {
        this.#headSent += rest;
        break;
      }
      rest -= left;
      this.#qBufs[i] = undefined;
      this.#headSent = 0;
      this.#qHead = (this.#qHead + 1) >>> 0;
      if (this.#qEnd[i] === 1 && this.#onSent !== undefined) this.#onSent(this.#qTag[i] ?? 0);
    }
  }

  /** Builds one SENDMSG over the queue from the head; false when the SQ ring is full. */
  #startSend(): boolean {
    const w = this.#msgWords;
    const bufs = this.#qBufs;
    const maxIov = this.#maxIov;
    let n = 0;
    let total = 0;
    let skip = this.#headSent;
    for (let q = this.#qHead; q !== this.#qTail && n < maxIov; q = (q + 1) >>> 0) {
      const i = q & this.#qMask;
      let len = (this.#qLen[i] ?? 0) - skip;
      if (len <= 0) {
        skip = 0;
        continue;
      }
      if (len > SENDMSG_BYTES_MAX - total) len = SENDMSG_BYTES_MAX - total;
      const addr = addressOf(bufs[i] as Uint8Array) + (this.#qOff[i] ?? 0) + skip;
      skip = 0;
      // struct iovec { void *iov_base; size_t iov_len; } after the 56-byte msghdr.
      const k = (SIZEOF_MSGHDR >>> 2) + n * 4;
      w[k] = addr >>> 0;
      w[k + 1] = (addr / TWO_32) >>> 0;
      w[k + 2] = len;
      w[k + 3] = 0;
      n++;
      total += len;
      if (total >= SENDMSG_BYTES_MAX) break;
    }
    if (n === 0) {
      // Only empty buffers queued: they are "sent" without a syscall.
      this.#sendAsked = 0;
      this.#sendInFlight = true;
      this.#reactor.ioInFlight++;
      this.#onSendDone(0);
      return true;
    }
    w[6] = n; // msg_iovlen
    w[7] = 0;
    if (
      this.#ring.prep(IORING_OP_SENDMSG, this.fd, 0, this.#msgAddr, 1, MSG_NOSIGNAL, this.#udSend) <
        0
    ) {
      return false;
    }
    this.#sendAsked = total;
    this.#sendInFlight = true;
    this.#reactor.ioInFlight++;
    this.stats.sendmsgSubmitted++;
    return true;
  }

  [kService](): boolean {
    if (this.#state === STATE_CLOSING) return this.#serviceClosing();
    if (this.#state !== STATE_OPEN) return false;
    if (this.#needDeliver && !this.#paused) {
      this.#needDeliver = false;
      if (this.#rlen > 0) this.#deliver();
      if (this.#state !== STATE_OPEN) return this.#serviceClosing();
    }
    if (!this.#recvArmed) this.#armRecv(); // no-op while paused or full
    if (!this.#sendInFlight && this.#qHead !== this.#qTail) {
      if (!this.#startSend()) return true;
    }
    return this.#needArm;
  }

  #closeWith(kind: TcpCloseReason["kind"], err: number, message: string): void {
    if (this.#state !== STATE_OPEN) return;
    this.#state = STATE_CLOSING;
    this.#reason = { kind, errno: err, message, unsentCalls: 0, unsentBytes: 0 };
    if (this.#recvArmed || this.#sendInFlight) {
      // shutdown(2) completes the armed recv (0) and a blocked send (EPIPE)
      // at once. When it fails (ENOTCONN after a reset) cancel by fd.
      if (sym.shutdown(this.fd, SHUT_RDWR) < 0) this.#needCancel = true;
      if (this.#recvArmed && !this.#recvCounted) {
        // Its CQE comes soon now: keep the reactor polling for it.
        this.#recvCounted = true;
        this.#reactor.ioInFlight++;
      }
    }
    this.#d.markDirty(this);
  }

  #serviceClosing(): boolean {
    if (this.#needCancel && (this.#recvArmed || this.#sendInFlight) && !this.#cancelInFlight) {
      const i = this.#ring.prep(
        IORING_OP_ASYNC_CANCEL,
        this.fd,
        0,
        0,
        0,
        IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_FD,
        this.#udCancel,
      );
      if (i < 0) return true;
      this.#needCancel = false;
      this.#cancelInFlight = true;
      this.#reactor.ioInFlight++;
    }
    if (this.#recvArmed || this.#sendInFlight || this.#cancelInFlight) return false;
    this.#finish();
    return false;
  }

  /** Nothing of ours is in the kernel: release everything, then tell the owner. */
  #finish(): void {
    this.#state = STATE_CLOSED;
    const reason = this.#reason ?? {
      kind: "local",
      errno: 0,
      message: "closed",
      unsentCalls: 0,
      unsentBytes: 0,
    };
    reason.unsentBytes = this.#qBytes;
    while (this.#qHead !== this.#qTail) {
      const i = this.#qHead & this.#qMask;
      if (this.#qEnd[i] === 1) reason.unsentCalls++;
      this.#qBufs[i] = undefined;
      this.#qHead = (this.#qHead + 1) >>> 0;
    }
    this.#qBytes = 0;
    sym.close(this.fd);
    this.#d.fdClosed(this.fd);
    this.#d.detach(this.#slot);
    this.#allocator.release?.(this.#rbuf);
    try {
      this.#onClose?.(reason);
    } finally {
      this.#resolveClosed(reason);
    }
  }
}

/** Options of {@link connectTcp}: the connection's and the connect's. */
export type ConnectTcpOptions = TcpConnectionOptions & TcpConnectOptions;

/**
 * Connects to `host:port` (numeric address) and returns the connection on
 * `reactor`. The connect is non-blocking; waiting for the handshake costs
 * one hand-off to Deno's thread pool (control path).
 * @throws {ErrnoError} naming the address (ECONNREFUSED, ETIMEDOUT, ...)
 */
export async function connectTcp(
  reactor: Reactor,
  host: string,
  port: number,
  options: ConnectTcpOptions,
): Promise<TcpConnection> {
  const fd = await tcpConnect(host, port, options);
  try {
    return new TcpConnection(reactor, fd, { ...options, noDelay: false });
  } catch (e) {
    sym.close(fd);
    throw e;
  }
}

// ---------------------------------------------------------------------------
// Listener

/** Options of a {@link TcpListener}. */
export interface TcpListenerOptions {
  /** Numeric address to bind; default "0.0.0.0". */
  host?: string;
  /** Port; 0 for an ephemeral one (read it back from `port`). */
  port: number;
  /** listen(2) backlog. Default 128. */
  backlog?: number;
  /**
   * Connections handed out and still open; more are accepted and closed
   * at once (counted in `stats.refused`). Default 1024.
   */
  maxConnections?: number;
  /**
   * A new connection: `fd` is non-blocking and close-on-exec, and the
   * callee owns it: wrap it in a {@link TcpConnection} (counted until it
   * closes) or close it and call {@link TcpListener.release}.
   */
  onConnection: (fd: number, peer: string) => void;
  /** An accept failed (not counted against the peer); the listener goes on. */
  onAcceptError?: (errno: number, message: string) => void;
  /** Delay before accepting again after EMFILE/ENFILE/ENOMEM/ENOBUFS. Default 100 ms. */
  acceptRetryMs?: number;
}

/** Counters of a {@link TcpListener}. */
export interface TcpListenerStats {
  /** Connections handed to onConnection. */
  accepted: number;
  /** Connections closed at once for exceeding maxConnections. */
  refused: number;
  /** Accept CQEs with an error. */
  acceptErrors: number;
  /** Accept SQEs submitted (1 + re-arms after the kernel ended a multishot). */
  acceptsArmed: number;
}

/**
 * A listening TCP socket on a {@link Reactor}: one multishot
 * IORING_OP_ACCEPT, re-armed when the kernel ends it, with a bound on
 * open connections.
 */
export class TcpListener implements Endpoint {
  /** The listening socket. */
  readonly fd: number;
  /** The bound port (the kernel's choice for port 0). */
  readonly port: number;
  /** The bound address, "ip:port". */
  readonly address: string;
  /** Live counters. */
  readonly stats: TcpListenerStats = { accepted: 0, refused: 0, acceptErrors: 0, acceptsArmed: 0 };

  [kNext]: Endpoint | null = null;
  [kDirty] = false;

  readonly #d: TcpDispatcher;
  readonly #reactor: Reactor;
  readonly #slot: number;
  readonly #udAccept: number;
  readonly #udCancel: number;
  readonly #max: number;
  readonly #onConnection: (fd: number, peer: string) => void;
  readonly #onAcceptError: ((errno: number, message: string) => void) | undefined;
  readonly #retryMs: number;
  /** fds handed out and not yet closed. */
  readonly #open = new Set<number>();
  #acceptArmed = false;
  #needArm = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #state = STATE_OPEN;
  #needCancel = false;
  #cancelInFlight = false;
  #closingCounted = false;
  #resolveClosed: () => void = () => {};
  #whenClosed: Promise<void> | undefined;

  constructor(reactor: Reactor, options: TcpListenerOptions) {
    const max = options.maxConnections ?? 1024;
    if (!Number.isInteger(max) || max < 0) {
      throw new RangeError(`maxConnections must be a non-negative integer, got ${max}`);
    }
    const sock = tcpListen(options.host ?? "0.0.0.0", options.port, options.backlog ?? 128);
    this.fd = sock.fd;
    this.port = sock.port;
    this.address = sock.address;
    this.#reactor = reactor;
    this.#max = max;
    this.#onConnection = options.onConnection;
    this.#onAcceptError = options.onAcceptError;
    this.#retryMs = options.acceptRetryMs ?? 100;
    this.#d = TcpDispatcher.of(reactor);
    try {
      this.#slot = this.#d.attach(this);
    } catch (e) {
      sym.close(this.fd);
      throw e;
    }
    this.#d.addListener(this);
    this.#udAccept = this.#d.userData(this.#slot, OP_ACCEPT);
    this.#udCancel = this.#d.userData(this.#slot, OP_CANCEL);
    this.#arm();
    reactor.wake(); // a parked reactor must submit the accept
  }

  /** Connections handed out and still open. */
  get active(): number {
    return this.#open.size;
  }

  /** For a connection fd the owner closed itself (not through a TcpConnection on this reactor). */
  release(fd: number): void {
    this.#open.delete(fd);
  }

  [kForget](fd: number): void {
    this.#open.delete(fd);
  }

  /**
   * Stops accepting and closes the socket; resolves once the kernel gave
   * the accept back and the fd is closed. Open connections are not touched.
   */
  close(): Promise<void> {
    if (this.#whenClosed !== undefined) return this.#whenClosed;
    this.#whenClosed = new Promise<void>((resolve) => (this.#resolveClosed = resolve));
    this.#state = STATE_CLOSING;
    if (this.#retryTimer !== undefined) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
    }
    if (this.#acceptArmed) {
      // shutdown(SHUT_RD) ends the multishot accept (EINVAL) at once.
      if (sym.shutdown(this.fd, SHUT_RD) < 0) this.#needCancel = true;
      this.#closingCounted = true;
      this.#reactor.ioInFlight++;
    }
    this.#d.markDirty(this);
    return this.#whenClosed;
  }

  #arm(): void {
    if (this.#acceptArmed || this.#state !== STATE_OPEN) return;
    const i = this.#reactor.ring.prepAccept(
      this.fd,
      this.#udAccept,
      SOCK_NONBLOCK | SOCK_CLOEXEC,
      true,
    );
    if (i < 0) {
      this.#needArm = true;
      this.#d.markDirty(this);
      return;
    }
    this.#needArm = false;
    this.#acceptArmed = true;
    this.stats.acceptsArmed++;
  }

  [kCqe](op: number, res: number, flags: number): void {
    if (op === OP_CANCEL) {
      this.#cancelInFlight = false;
      this.#reactor.ioInFlight--;
      this.#d.markDirty(this);
      return;
    }
    if ((flags & IORING_CQE_F_MORE) === 0) this.#acceptArmed = false;
    if (this.#state !== STATE_OPEN) {
      if (res >= 0) sym.close(res); // raced with close()
      if (!this.#acceptArmed) this.#d.markDirty(this);
      return;
    }
    if (res >= 0) {
      this.#accepted(res);
    } else {
      this.stats.acceptErrors++;
      const e = -res;
      this.#onAcceptError?.(e, `accept on ${this.address} failed: ${errnoName(e)}`);
      if (
        !this.#acceptArmed &&
        (e === Errno.EMFILE || e === Errno.ENFILE || e === Errno.ENOMEM || e === ENOBUFS)
      ) {
        // Out of fds or memory: accepting again at once would fail again at once.
        this.#retryTimer = setTimeout(() => {
          this.#retryTimer = undefined;
          this.#needArm = true;
          this.#d.markDirty(this);
        }, this.#retryMs);
        return;
      }
    }
    if (!this.#acceptArmed && this.#state === STATE_OPEN && this.#retryTimer === undefined) {
      this.#arm();
    }
  }

  #accepted(fd: number): void {
    if (this.#open.size >= this.#max) {
      sym.close(fd);
      this.stats.refused++;
      return;
    }
    let peer: string;
    try {
      peer = peerAddress(fd);
    } catch {
      // Reset before we looked (ENOTCONN): nothing to serve.
      sym.close(fd);
      this.stats.acceptErrors++;
      return;
    }
    this.#open.add(fd);
    this.stats.accepted++;
    this.#onConnection(fd, peer);
  }

  [kService](): boolean {
    if (this.#state === STATE_OPEN) {
      if (this.#needArm) this.#arm();
      return this.#needArm;
    }
    if (this.#state !== STATE_CLOSING) return false;
    if (this.#needCancel && this.#acceptArmed && !this.#cancelInFlight) {
      if (this.#reactor.ring.prepCancel(this.#udAccept, this.#udCancel) < 0) return true;
      this.#needCancel = false;
      this.#cancelInFlight = true;
      this.#reactor.ioInFlight++;
    }
    if (this.#acceptArmed || this.#cancelInFlight) return false;
    this.#state = STATE_CLOSED;
    if (this.#closingCounted) {
      this.#closingCounted = false;
      this.#reactor.ioInFlight--;
    }
    sym.close(this.fd);
    this.#d.removeListener(this);
    this.#d.detach(this.#slot);
    this.#resolveClosed();
    return false;
  }
}

/**
 * The front-end side of vhost-user (what QEMU does for a vhost-user-blk
 * device): connect to a back-end's socket, negotiate features and protocol
 * features, share guest memory (a memfd sent with SCM_RIGHTS in
 * SET_MEM_TABLE), set up split virtqueues (SET_VRING_NUM/BASE/ADDR/CALL/KICK,
 * SET_VRING_ENABLE, eventfds), read the config space, stop a ring
 * (GET_VRING_BASE) and close.
 *
 * This module is connection, memory and queue set-up only. What runs on the
 * rings is someone else's: the perf request engine (src/perf/vhost_user_device.ts)
 * or a test writing raw, even hostile, ring contents through
 * {@link FrontendMemory.bytes} (src/testing/virtio_driver.ts can lay its
 * rings over that memory).
 *
 * Control path only: the socket calls are async and allocate freely.
 *
 * @example A guest's view of one queue, with raw ring access (as frontend_test.ts does)
 * ```ts
 * const mem = FrontendMemory.create(1 << 20, 0x10_0000);
 * const fe = VhostUserFrontend.connect("/var/run/sluice/vhost.0.sock");
 * await fe.negotiate(featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX));
 * await fe.setMemTable([mem]);
 * const driver = new VirtioDriver({
 *   queueSize: 16, bytes: mem.bytes, gpaBase: mem.gpaBase, uva: mem.uva, eventIdx: true,
 * });
 * await fe.setupQueue(0, mem, driver); // its descAddr/availAddr/usedAddr/size are a RingLayout
 * driver.addLoop(); // or any raw descriptors: driver.writeDesc(...), driver.publish(...)
 * fe.kick(0);
 * // ... read driver.usedIdx(), then:
 * await fe.getVringBase(0);
 * fe.close();
 * mem.close();
 * ```
 * @module
 */
import { close, eventfd, sym } from "../../ffi/libc.ts";
import { type Mapping, mapShared, memfdCreate, PAGE_SIZE } from "../../ffi/memory.ts";
import { UnixSocket } from "../../ffi/unix_socket.ts";
import { GuestMemory } from "../virtio/guest_memory.ts";
import {
  decodeConfig,
  decodeHeader,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeMemoryTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  featureBit,
  HEADER_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_REGIONS,
  type MemoryRegion,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VhostUserProtocolFeature as P,
  VhostUserRequest as R,
} from "./messages.ts";
import { hasExplicitReply } from "./reply.ts";

/** The back-end broke the protocol, refused a request, or did not answer in time. */
export class VhostUserFrontendError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VhostUserFrontendError";
  }
}

/** Largest reply a front-end accepts: a config space access (12 + 256 bytes). */
const MAX_REPLY_PAYLOAD = 12 + MAX_CONFIG_SIZE;

/**
 * Guest memory as one shared region: a memfd mapped here, whose fd goes to
 * the back-end in SET_MEM_TABLE. Guest physical addresses start at
 * `gpaBase`; the front-end virtual address (vhost-user's "user address", used
 * for ring addresses) is where it is mapped in this process, as in QEMU.
 */
export class FrontendMemory {
  /** The memfd (owned: closed by {@link close}). */
  readonly fd: number;
  readonly mapping: Mapping;
  /** Guest physical address of the first byte. */
  readonly gpaBase: number;
  /** Bytes of guest memory. */
  readonly size: number;
  /** The whole region, zero-copy: every ring and buffer lives here. */
  readonly bytes: Uint8Array;
  /** A DataView of {@link bytes}. */
  readonly view: DataView;
  #closed = false;

  private constructor(fd: number, mapping: Mapping, gpaBase: number, size: number) {
    this.fd = fd;
    this.mapping = mapping;
    this.gpaBase = gpaBase;
    this.size = size;
    this.bytes = mapping.bytes();
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  /**
   * A memfd of `size` bytes (rounded up to pages), mapped shared and
   * prefaulted so the first I/Os do not take page faults.
   */
  static create(size: number, gpaBase = 0): FrontendMemory {
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new RangeError(`guest memory size must be a positive integer, got ${size}`);
    }
    if (!Number.isSafeInteger(gpaBase) || gpaBase < 0 || gpaBase % PAGE_SIZE !== 0) {
      throw new RangeError(`guest memory base must be page-aligned, got ${gpaBase}`);
    }
    const bytes = Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
    const fd = memfdCreate("sluice-vhost-frontend", bytes);
    try {
      const m = mapShared(fd, bytes, 0, undefined, { populate: true });
      return new FrontendMemory(fd, m, gpaBase, bytes);
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /** This process's address of the first byte (the region's user address). */
  get uva(): number {
    return this.mapping.address;
  }

  /** The user address of guest physical address `gpa`. */
  uvaOf(gpa: number): number {
    if (gpa < this.gpaBase || gpa > this.gpaBase + this.size) {
      throw new RangeError(`0x${gpa.toString(16)} is outside guest memory`);
    }
    return this.uva + (gpa - this.gpaBase);
  }

  /** The guest physical address of a view into {@link bytes}. */
  gpaOf(view: ArrayBufferView): number {
    if (view.buffer !== this.bytes.buffer) {
      throw new RangeError("the view is not inside this guest memory");
    }
    return this.gpaBase + (view.byteOffset - this.bytes.byteOffset);
  }

  /** The SET_MEM_TABLE entry of this region. */
  region(): MemoryRegion {
    return {
      guestPhysAddr: BigInt(this.gpaBase),
      memorySize: BigInt(this.size),
      userspaceAddr: BigInt(this.uva),
      mmapOffset: 0n,
    };
  }

  /** The same memory as the device model sees it (for SplitVirtqueue over it in tests). */
  guestMemory(): GuestMemory {
    return new GuestMemory([{
      gpa: this.gpaBase,
      size: this.size,
      uva: this.uva,
      bytes: this.bytes,
    }]);
  }

  /** Unmaps and closes the memfd (the back-end keeps its own mapping until it lets go). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.mapping.unmap();
    close(this.fd);
  }
}

/** Where a split virtqueue lives, in guest physical addresses. */
export interface RingLayout {
  /** Queue size (a power of two). */
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

/** Bytes a split ring of `size` entries takes, laid out by {@link splitRingLayout}. */
export function splitRingBytes(size: number): number {
  const used = align(16 * size + 6 + 2 * size, PAGE_SIZE);
  return align(used + 6 + 8 * size, PAGE_SIZE);
}

/** The virtio 1.x split ring layout at `gpa`: descriptors, avail, then used on the next page. */
export function splitRingLayout(gpa: number, size: number): RingLayout {
  return {
    size,
    descAddr: gpa,
    availAddr: gpa + 16 * size,
    usedAddr: gpa + align(16 * size + 6 + 2 * size, PAGE_SIZE),
  };
}

function align(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

/** One set-up virtqueue: its layout and its eventfds (owned by the front-end). */
export interface FrontendQueue {
  readonly index: number;
  readonly layout: RingLayout;
  /** The front-end writes 1 here to kick the back-end. */
  readonly kickFd: number;
  /** The back-end writes here to signal used buffers. */
  readonly callFd: number;
}

/** What {@link VhostUserFrontend.negotiate} settled on. */
export interface Negotiated {
  /** Virtio features acked (VHOST_USER_F_PROTOCOL_FEATURES included when offered). */
  features: bigint;
  /** The back-end's whole offer. */
  offered: bigint;
  /** Protocol features acked (0 when the back-end has none). */
  protocolFeatures: bigint;
}

/** Options of {@link VhostUserFrontend.connect}. */
export interface FrontendOptions {
  /** How long a reply may take, ms (default 5000): a silent back-end is an error, not a hang. */
  replyTimeoutMs?: number;
}

/** Protocol features this front-end knows how to use. */
export const FRONTEND_PROTOCOL_FEATURES = featureBit(P.MQ) | featureBit(P.REPLY_ACK) |
  featureBit(P.CONFIG);

/** One connection to a vhost-user back-end. */
export class VhostUserFrontend {
  readonly path: string;
  readonly #sock: UnixSocket;
  readonly #timeoutMs: number;
  readonly #queues = new Map<number, FrontendQueue>();
  #protocolFeatures = 0n;
  #features = 0n;
  /** Bytes received and not yet consumed. */
  #rx = new Uint8Array(0);
  #closed = false;

  private constructor(path: string, sock: UnixSocket, timeoutMs: number) {
    this.path = path;
    this.#sock = sock;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Connects to the back-end listening at `path`.
   * @throws {VhostUserFrontendError} naming the path when nothing listens there
   */
  static connect(path: string, o: FrontendOptions = {}): VhostUserFrontend {
    let sock: UnixSocket;
    try {
      sock = UnixSocket.connect(path);
    } catch (e) {
      throw new VhostUserFrontendError(
        `cannot connect to the vhost-user socket ${path}: ${e instanceof Error ? e.message : e}`,
      );
    }
    return new VhostUserFrontend(path, sock, o.replyTimeoutMs ?? 5000);
  }

  /** The negotiated protocol features. */
  get protocolFeatures(): bigint {
    return this.#protocolFeatures;
  }

  /** The acked virtio features. */
  get features(): bigint {
    return this.#features;
  }

  /** The queues set up so far. */
  queue(index: number): FrontendQueue | undefined {
    return this.#queues.get(index);
  }

  #replyAck(): boolean {
    return (this.#protocolFeatures & featureBit(P.REPLY_ACK)) !== 0n;
  }

  /**
   * Sends one request. With `reply`, waits for and returns the reply payload;
   * without, and with REPLY_ACK negotiated, asks for an ack and turns a
   * refusal into an error (so set-up mistakes surface at the request that
   * caused them).
   */
  async request(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
    reply = hasExplicitReply(request),
  ): Promise<Uint8Array | null> {
    if (this.#closed) throw new VhostUserFrontendError(`${this.path}: connection closed`);
    const ack = !reply && this.#replyAck();
    const msg = encodeMessage(request, payload, ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    const signal = AbortSignal.timeout(this.#timeoutMs);
    const name = requestName(request) ?? `request ${request}`;
    let body: Uint8Array;
    try {
      await this.#sock.sendMsg(msg, fds, { signal });
      if (!reply && !ack) return null;
      body = await this.#readReply(request, signal);
      if (ack && body.byteLength !== 8) {
        throw new VhostUserFrontendError(`${name}: REPLY_ACK of ${body.byteLength} bytes`);
      }
    } catch (e) {
      // A late or malformed reply would be read as the answer to a later request: the
      // stream cannot be trusted any more, so the connection ends here.
      this.close();
      if (e instanceof VhostUserFrontendError) throw e;
      if (signal.aborted) {
        throw new VhostUserFrontendError(
          `${this.path}: no reply to ${name} within ${this.#timeoutMs} ms`,
        );
      }
      throw new VhostUserFrontendError(
        `${this.path}: ${name}: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    if (ack) {
      // A refusal leaves the stream intact: the connection stays usable.
      const status = decodeU64(body);
      if (status !== 0n) {
        throw new VhostUserFrontendError(`the back-end refused ${name} (status ${status})`);
      }
      return null;
    }
    return body;
  }

  /**
   * Resolves with a reason when the back-end closes the connection (or it
   * fails), for a caller that sends nothing for a while (a perf run) and
   * wants to know at once. Anything the back-end sends meanwhile is kept for
   * the next reply. Stop watching with `signal` before sending a request:
   * the watch then resolves with null.
   */
  async watchClose(signal: AbortSignal): Promise<string | null> {
    const buf = new Uint8Array(4096);
    try {
      for (;;) {
        await this.#sock.readable({ signal });
        const r = this.#sock.tryRecvMsg(buf, 0);
        if (r === null) continue;
        if (r.bytes === 0) return "the back-end closed the connection";
        const joined = new Uint8Array(this.#rx.byteLength + r.bytes);
        joined.set(this.#rx);
        joined.set(buf.subarray(0, r.bytes), this.#rx.byteLength);
        this.#rx = joined;
      }
    } catch (e) {
      if (signal.aborted || this.#closed) return null;
      return `the connection failed: ${e instanceof Error ? e.message : String(e)}`;
    }
  }

  async #fill(n: number, signal: AbortSignal): Promise<void> {
    const buf = new Uint8Array(4096);
    while (this.#rx.byteLength < n) {
      const r = await this.#sock.recvMsg(buf, 0, { signal });
      if (r.bytes === 0) {
        throw new VhostUserFrontendError(`${this.path}: the back-end closed the connection`);
      }
      const joined = new Uint8Array(this.#rx.byteLength + r.bytes);
      joined.set(this.#rx);
      joined.set(buf.subarray(0, r.bytes), this.#rx.byteLength);
      this.#rx = joined;
    }
  }

  async #readReply(request: number, signal: AbortSignal): Promise<Uint8Array> {
    const name = requestName(request) ?? `request ${request}`;
    await this.#fill(HEADER_SIZE, signal);
    const h = decodeHeader(this.#rx);
    if (
      h.request !== request || (h.flags & VHOST_USER_REPLY_MASK) === 0 ||
      (h.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION
    ) {
      throw new VhostUserFrontendError(
        `${this.path}: expected the reply to ${name}, got request ${h.request} flags 0x${
          h.flags.toString(16)
        }`,
      );
    }
    if (h.size > MAX_REPLY_PAYLOAD) {
      throw new VhostUserFrontendError(`${this.path}: reply to ${name} of ${h.size} bytes`);
    }
    await this.#fill(HEADER_SIZE + h.size, signal);
    const body = this.#rx.slice(HEADER_SIZE, HEADER_SIZE + h.size);
    this.#rx = this.#rx.slice(HEADER_SIZE + h.size);
    return body;
  }

  async #u64(request: number): Promise<bigint> {
    const body = await this.request(request);
    if (body === null || body.byteLength !== 8) {
      throw new VhostUserFrontendError(
        `${this.path}: reply to ${requestName(request)} is not a u64`,
      );
    }
    return decodeU64(body);
  }

  /** GET_FEATURES: the back-end's virtio feature offer. */
  getFeatures(): Promise<bigint> {
    return this.#u64(R.GET_FEATURES);
  }

  /** SET_FEATURES. */
  async setFeatures(features: bigint): Promise<void> {
    await this.request(R.SET_FEATURES, encodeU64(features));
    this.#features = features;
  }

  /** GET_PROTOCOL_FEATURES. */
  getProtocolFeatures(): Promise<bigint> {
    return this.#u64(R.GET_PROTOCOL_FEATURES);
  }

  /** SET_PROTOCOL_FEATURES. */
  async setProtocolFeatures(features: bigint): Promise<void> {
    await this.request(R.SET_PROTOCOL_FEATURES, encodeU64(features));
    this.#protocolFeatures = features;
  }

  /** SET_OWNER. */
  async setOwner(): Promise<void> {
    await this.request(R.SET_OWNER);
  }

  /** GET_QUEUE_NUM (needs MQ). */
  async getQueueNum(): Promise<number> {
    return Number(await this.#u64(R.GET_QUEUE_NUM));
  }

  /**
   * The usual opening, in QEMU's order: GET_FEATURES, GET/SET_PROTOCOL_FEATURES
   * (the offer masked by `wantProtocol`), SET_OWNER, SET_FEATURES (the offer
   * masked by `want`, plus VHOST_USER_F_PROTOCOL_FEATURES when offered).
   * `require` lists virtio bits the back-end must offer.
   */
  async negotiate(
    want: bigint,
    wantProtocol: bigint = FRONTEND_PROTOCOL_FEATURES,
    require = 0n,
  ): Promise<Negotiated> {
    const offered = await this.getFeatures();
    const missing = require & ~offered;
    if (missing !== 0n) {
      throw new VhostUserFrontendError(
        `${this.path}: the back-end does not offer feature bits 0x${missing.toString(16)}`,
      );
    }
    const pf = featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
    let protocolFeatures = 0n;
    if ((offered & pf) !== 0n) {
      protocolFeatures = (await this.getProtocolFeatures()) & wantProtocol;
      await this.setProtocolFeatures(protocolFeatures);
    }
    await this.setOwner();
    const features = (offered & want) | (offered & pf);
    await this.setFeatures(features);
    return { features, offered, protocolFeatures };
  }

  /** SET_MEM_TABLE with each region's memfd attached (SCM_RIGHTS). */
  async setMemTable(regions: readonly FrontendMemory[]): Promise<void> {
    if (regions.length < 1 || regions.length > MAX_MEM_REGIONS) {
      throw new RangeError(`SET_MEM_TABLE takes 1..${MAX_MEM_REGIONS} regions`);
    }
    await this.request(
      R.SET_MEM_TABLE,
      encodeMemoryTable(regions.map((r) => r.region())),
      regions.map((r) => r.fd),
    );
  }

  /**
   * GET_CONFIG: `size` bytes of the device config space from `offset`.
   * @throws {VhostUserFrontendError} when the back-end answers with no data (its way of failing)
   */
  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    const body = await this.request(
      R.GET_CONFIG,
      encodeConfig({ offset, flags: 0, data: new Uint8Array(size) }),
    );
    if (body === null) throw new VhostUserFrontendError(`${this.path}: no GET_CONFIG reply`);
    const c = decodeConfig(body);
    if (c.data.byteLength !== size) {
      throw new VhostUserFrontendError(
        `${this.path}: GET_CONFIG of ${size} bytes at ${offset} answered with ${c.data.byteLength}`,
      );
    }
    return c.data;
  }

  /** SET_VRING_NUM. */
  async setVringNum(index: number, num: number): Promise<void> {
    await this.request(R.SET_VRING_NUM, encodeVringState({ index, num }));
  }

  /** SET_VRING_BASE: the next available index the back-end reads. */
  async setVringBase(index: number, base: number): Promise<void> {
    await this.request(R.SET_VRING_BASE, encodeVringState({ index, num: base }));
  }

  /** SET_VRING_ADDR, from guest physical addresses converted to user addresses. */
  async setVringAddr(index: number, mem: FrontendMemory, layout: RingLayout): Promise<void> {
    await this.request(
      R.SET_VRING_ADDR,
      encodeVringAddr({
        index,
        flags: 0,
        descUserAddr: BigInt(mem.uvaOf(layout.descAddr)),
        usedUserAddr: BigInt(mem.uvaOf(layout.usedAddr)),
        availUserAddr: BigInt(mem.uvaOf(layout.availAddr)),
        logGuestAddr: 0n,
      }),
    );
  }

  /** SET_VRING_KICK with `fd` (or NOFD for null): the back-end starts the ring. */
  async setVringKick(index: number, fd: number | null): Promise<void> {
    await this.request(
      R.SET_VRING_KICK,
      encodeVringFd({ index, noFd: fd === null }),
      fd === null ? [] : [fd],
    );
  }

  /** SET_VRING_CALL with `fd`. */
  async setVringCall(index: number, fd: number | null): Promise<void> {
    await this.request(
      R.SET_VRING_CALL,
      encodeVringFd({ index, noFd: fd === null }),
      fd === null ? [] : [fd],
    );
  }

  /** SET_VRING_ENABLE (only with VHOST_USER_F_PROTOCOL_FEATURES acked). */
  async setVringEnable(index: number, enable: boolean): Promise<void> {
    await this.request(R.SET_VRING_ENABLE, encodeVringState({ index, num: enable ? 1 : 0 }));
  }

  /**
   * GET_VRING_BASE: stops the ring and returns the back-end's next available
   * index. The kick eventfd stays open here until {@link close}.
   */
  async getVringBase(index: number): Promise<number> {
    const body = await this.request(R.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    if (body === null || body.byteLength !== 8) {
      throw new VhostUserFrontendError(`${this.path}: bad GET_VRING_BASE reply`);
    }
    const s = decodeVringState(body);
    if (s.index !== index) {
      throw new VhostUserFrontendError(
        `${this.path}: GET_VRING_BASE for queue ${index} answered for queue ${s.index}`,
      );
    }
    return s.num;
  }

  /**
   * Sets up queue `index` over `layout` (already zeroed or prepared by the
   * caller) as QEMU does: NUM, BASE, ADDR, CALL, KICK (which starts it),
   * then ENABLE when protocol features were acked. Creates the kick and call
   * eventfds (non-blocking, close-on-exec; closed by {@link close}).
   */
  async setupQueue(
    index: number,
    mem: FrontendMemory,
    layout: RingLayout,
    base = 0,
  ): Promise<FrontendQueue> {
    if (this.#queues.has(index)) throw new RangeError(`queue ${index} is already set up`);
    const kickFd = eventfd();
    let callFd = -1;
    try {
      callFd = eventfd();
      const q: FrontendQueue = { index, layout, kickFd, callFd };
      this.#queues.set(index, q);
      await this.setVringNum(index, layout.size);
      await this.setVringBase(index, base);
      await this.setVringAddr(index, mem, layout);
      await this.setVringCall(index, callFd);
      await this.setVringKick(index, kickFd);
      if ((this.#features & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
        await this.setVringEnable(index, true);
      }
      return q;
    } catch (e) {
      if (!this.#queues.has(index)) {
        close(kickFd);
        if (callFd >= 0) close(callFd);
      }
      throw e;
    }
  }

  /** Kicks queue `index` (writes 1 to its kick eventfd). */
  kick(index: number): void {
    const q = this.#queues.get(index);
    if (q === undefined) throw new RangeError(`queue ${index} is not set up`);
    sym.write(q.kickFd, ONE, 8n);
  }

  /**
   * Closes the connection and the eventfds. Guest memory belongs to the
   * caller (close it after this: the back-end may still be mapping it).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sock.close();
    for (const q of this.#queues.values()) {
      close(q.kickFd);
      close(q.callFd);
    }
    this.#queues.clear();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** An eventfd increment of 1. */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

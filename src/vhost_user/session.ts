/**
 * The front-end-facing state machine of one vhost-user connection: feature
 * negotiation, ownership, the memory table's bookkeeping and per-queue vring
 * state, applied to an abstract {@link VhostUserBackend}. Mapping memory and
 * processing virtqueues belong to the backend; this module only decides what
 * is legal and when, and who owns each file descriptor.
 * @module
 */

import { VhostUserError } from "./errors.ts";
import {
  featureBit,
  type InflightDescription,
  type LogDescription,
  MAX_MEM_REGIONS,
  type MemoryRegion,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_VRING_F_LOG,
  VhostUserProtocolFeature as P,
  VhostUserRequest as R,
  type VringAddr,
} from "./messages.ts";
import type { VhostUserMessage } from "./reader.ts";
import {
  needsReplyAck,
  replyAck,
  replyConfig,
  replyInflight,
  replyU64,
  replyVringState,
} from "./reply.ts";

/** Largest virtqueue size virtio allows for split rings. */
export const MAX_QUEUE_SIZE = 32768;

/** What a started queue needs: its ring addresses and size, where it begins, its eventfds. */
export interface VringConfig {
  num: number;
  base: number;
  addr: VringAddr;
  /** Kick eventfd, or null when the front-end sends no fd (polling or in-band kicks). */
  kickFd: number | null;
  callFd: number | null;
  errFd: number | null;
  enabled: boolean;
}

/** An inflight area the backend created for GET_INFLIGHT_FD. */
export interface InflightArea {
  /** memfd to send with the reply; the caller closes it after sending. */
  fd: number;
  mmapSize: bigint;
  mmapOffset: bigint;
}

/**
 * A device behind the vhost-user protocol. Methods that receive fds take
 * ownership of them, whether they return or throw. A throw is an operating
 * error: with REPLY_ACK it is reported to the front-end, otherwise the
 * connection ends.
 */
export interface VhostUserBackend {
  /** Virtio feature bits offered (the session adds VHOST_USER_F_PROTOCOL_FEATURES). */
  readonly features: bigint;
  /** Protocol feature bits offered; those the session cannot handle are masked off. */
  readonly protocolFeatures: bigint;
  /** Virtqueues of the device, 1..256. */
  readonly numQueues: number;
  /** Largest ring size accepted, a power of two up to {@link MAX_QUEUE_SIZE}. */
  readonly maxQueueSize: number;
  /** Memory slots offered with CONFIGURE_MEM_SLOTS (default 8). */
  readonly maxMemSlots?: number;
  /** The negotiated virtio features (without VHOST_USER_F_PROTOCOL_FEATURES). */
  setFeatures(features: bigint): void;
  /** Replaces the whole memory table; owns `fds` (one per region, same order). */
  setMemTable(regions: readonly MemoryRegion[], fds: number[]): void;
  /** Adds one region; owns `fd`. */
  addMemRegion(region: MemoryRegion, fd: number): void;
  /** Removes the region with these guest address, size and user address. */
  removeMemRegion(region: MemoryRegion): void;
  /** Starts processing queue `index` (the session keeps the fds; they stay valid until stop). */
  startQueue(index: number, vring: Readonly<VringConfig>): void;
  /** Stops queue `index` and returns the next available index to process (the vring base). */
  stopQueue(index: number): number;
  /**
   * Before a clean stop (GET_VRING_BASE, graceful shutdown): stop taking new
   * requests from queue `index` and resolve once those already taken are on
   * the used ring, so {@link stopQueue} drops nothing. Must resolve (bounded
   * by the backend) and never reject. Without it, stopQueue drops them.
   */
  drainQueue?(index: number): Promise<void>;
  /** A started queue's enable state, call or err fd changed. */
  updateQueue(index: number, vring: Readonly<VringConfig>): void;
  /** Device configuration space bytes [offset, offset + size). */
  getConfig(offset: number, size: number, flags: number): Uint8Array;
  /** Writes device configuration space. */
  setConfig(offset: number, data: Uint8Array, flags: number): void;
  /** Back to the initial device state (RESET_OWNER, RESET_DEVICE); queues are already stopped. */
  reset(): void;
  /** A new device status byte (SET_STATUS). */
  setStatus?(status: number): void;
  /** Creates the inflight area (needed to offer INFLIGHT_SHMFD). */
  getInflightFd?(numQueues: number, queueSize: number): InflightArea;
  /** Takes the inflight area back after a restart; owns `fd`. */
  setInflightFd?(inflight: InflightDescription, fd: number): void;
  /**
   * SET_LOG_BASE: maps the dirty log `fd` (size and offset from `log`) and
   * replaces the previous log (needed to offer LOG_SHMFD); owns `fd`.
   * Returns once writes are logged into the new log.
   */
  setLogBase?(log: LogDescription, fd: number): void;
  /** SET_LOG_FD: an eventfd to signal after logging; owns `fd`. */
  setLogFd?(fd: number): void;
}

/** What the caller does after one message. */
export interface SessionOutput {
  /** Bytes to send to the front-end, or null. */
  reply: Uint8Array | null;
  /** fds to send with the reply; close them after sending. */
  replyFds: number[];
  /** fds no one owns any more (replaced eventfds, REM_MEM_REG's fd): close them. */
  closeFds: number[];
}

/** Protocol features the session knows how to honour. */
const SESSION_PROTOCOL_FEATURES = featureBit(P.MQ) | featureBit(P.REPLY_ACK) |
  featureBit(P.CONFIG) | featureBit(P.RESET_DEVICE) | featureBit(P.CONFIGURE_MEM_SLOTS) |
  featureBit(P.STATUS) | featureBit(P.INBAND_NOTIFICATIONS);

/** Protocol feature each gated request needs. */
const GATES: ReadonlyMap<number, number> = new Map<number, number>([
  [R.GET_QUEUE_NUM, P.MQ],
  [R.GET_CONFIG, P.CONFIG],
  [R.SET_CONFIG, P.CONFIG],
  [R.RESET_DEVICE, P.RESET_DEVICE],
  [R.GET_MAX_MEM_SLOTS, P.CONFIGURE_MEM_SLOTS],
  [R.ADD_MEM_REG, P.CONFIGURE_MEM_SLOTS],
  [R.REM_MEM_REG, P.CONFIGURE_MEM_SLOTS],
  [R.SET_STATUS, P.STATUS],
  [R.GET_STATUS, P.STATUS],
  [R.VRING_KICK, P.INBAND_NOTIFICATIONS],
  [R.GET_INFLIGHT_FD, P.INFLIGHT_SHMFD],
  [R.SET_INFLIGHT_FD, P.INFLIGHT_SHMFD],
  [R.SET_LOG_BASE, P.LOG_SHMFD],
  [R.SEND_RARP, P.RARP],
  [R.NET_SET_MTU, P.MTU],
  [R.SET_BACKEND_REQ_FD, P.BACKEND_REQ],
  [R.SET_VRING_ENDIAN, P.CROSS_ENDIAN],
  [R.POSTCOPY_ADVISE, P.PAGEFAULT],
  [R.POSTCOPY_LISTEN, P.PAGEFAULT],
  [R.POSTCOPY_END, P.PAGEFAULT],
]);

/** Requests that touch rings or memory and so need an owner. */
const OWNER_ONLY: ReadonlySet<number> = new Set([
  R.SET_MEM_TABLE,
  R.ADD_MEM_REG,
  R.REM_MEM_REG,
  R.SET_LOG_BASE,
  R.SET_LOG_FD,
  R.SET_VRING_NUM,
  R.SET_VRING_ADDR,
  R.SET_VRING_BASE,
  R.GET_VRING_BASE,
  R.SET_VRING_KICK,
  R.SET_VRING_CALL,
  R.SET_VRING_ERR,
  R.SET_VRING_ENABLE,
  R.VRING_KICK,
  R.GET_INFLIGHT_FD,
  R.SET_INFLIGHT_FD,
]);

interface Vring extends VringConfig {
  addrSet: boolean;
  started: boolean;
}

function newVring(): Vring {
  return {
    num: 0,
    base: 0,
    addr: {
      index: 0,
      flags: 0,
      descUserAddr: 0n,
      usedUserAddr: 0n,
      availUserAddr: 0n,
      logGuestAddr: 0n,
    },
    kickFd: null,
    callFd: null,
    errFd: null,
    enabled: false,
    addrSet: false,
    started: false,
  };
}

/** The backend's copy of a vring's state (not the session's own object). */
function snapshot(v: Vring): VringConfig {
  return {
    num: v.num,
    base: v.base,
    addr: { ...v.addr },
    kickFd: v.kickFd,
    callFd: v.callFd,
    errFd: v.errFd,
    enabled: v.enabled,
  };
}

function nameOf(request: number): string {
  return requestName(request) ?? `request ${request}`;
}

const NOTHING: Readonly<SessionOutput> = Object.freeze({
  reply: null,
  replyFds: [],
  closeFds: [],
});

/**
 * One connection's protocol state. Feed it each message from the
 * {@link MessageReader}; send what it returns.
 */
export class VhostUserSession {
  readonly #backend: VhostUserBackend;
  readonly #offeredFeatures: bigint;
  readonly #offeredProtocol: bigint;
  readonly #maxMemSlots: number;
  #owner = false;
  #features = 0n;
  #protocolFeatures = 0n;
  #status = 0;
  #regions: MemoryRegion[] = [];
  readonly #vrings: Vring[];

  constructor(backend: VhostUserBackend) {
    if (!Number.isInteger(backend.numQueues) || backend.numQueues < 1 || backend.numQueues > 256) {
      throw new RangeError(`numQueues must be 1..256, got ${backend.numQueues}`);
    }
    const q = backend.maxQueueSize;
    if (!Number.isInteger(q) || q < 1 || q > MAX_QUEUE_SIZE || (q & (q - 1)) !== 0) {
      throw new RangeError(`maxQueueSize must be a power of two up to ${MAX_QUEUE_SIZE}, got ${q}`);
    }
    this.#backend = backend;
    this.#offeredFeatures = backend.features | featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
    const inflight = backend.getInflightFd !== undefined && backend.setInflightFd !== undefined
      ? featureBit(P.INFLIGHT_SHMFD)
      : 0n;
    const logShmfd = backend.setLogBase !== undefined ? featureBit(P.LOG_SHMFD) : 0n;
    this.#offeredProtocol = backend.protocolFeatures &
      (SESSION_PROTOCOL_FEATURES | inflight | logShmfd);
    this.#maxMemSlots = backend.maxMemSlots ?? MAX_MEM_REGIONS;
    this.#vrings = Array.from({ length: backend.numQueues }, newVring);
  }

  /** True once SET_OWNER was received (and no RESET_OWNER since). */
  get owner(): boolean {
    return this.#owner;
  }

  /** The virtio features acked by the front-end, VHOST_USER_F_PROTOCOL_FEATURES included. */
  get ackedFeatures(): bigint {
    return this.#features;
  }

  /** The negotiated protocol features. */
  get protocolFeatures(): bigint {
    return this.#protocolFeatures;
  }

  /** A snapshot of queue `index`'s vring state. */
  vring(index: number): Readonly<VringConfig> & { started: boolean } {
    const v = this.#vrings[index];
    if (v === undefined) throw new RangeError(`No queue ${index}`);
    return { ...v };
  }

  /**
   * Applies one message. On success the message's fds have been handed to
   * the backend, kept, or listed in `closeFds`.
   * @throws {VhostUserError} when the front-end broke the protocol; its
   *   `fds` (the message's) must be closed and the connection ended.
   */
  handle(message: VhostUserMessage): SessionOutput {
    const ack = needsReplyAck(message, this.#protocolFeatures);
    let handedOver = false;
    const handOver = (): void => {
      handedOver = true;
    };
    try {
      this.#checkLegal(message);
      let out: SessionOutput;
      try {
        out = this.#apply(message, handOver);
      } catch (e) {
        if (e instanceof VhostUserError) throw e;
        if (!ack) {
          throw new VhostUserError(
            "backendFailed",
            `The back-end failed ${nameOf(message.request)}: ${
              e instanceof Error ? e.message : String(e)
            }`,
          );
        }
        return { reply: replyAck(message.request, false), replyFds: [], closeFds: [] };
      }
      if (ack) return { ...out, reply: replyAck(message.request, true) };
      return out;
    } catch (e) {
      if (e instanceof VhostUserError && !handedOver && message.fds.length > 0) {
        throw new VhostUserError(e.kind, e.message, [...message.fds]);
      }
      throw e;
    }
  }

  /**
   * {@link handle} for a server: a GET_VRING_BASE that stops a started queue
   * first waits for that queue's requests to reach the used ring (the
   * backend's drainQueue), so the reply's base leaves nothing in flight. The
   * caller must not handle the connection's next message before this settles.
   */
  async handleAsync(message: VhostUserMessage): Promise<SessionOutput> {
    const b = message.body;
    if (
      message.request === R.GET_VRING_BASE && b.type === "vringState" && this.#owner &&
      this.#backend.drainQueue !== undefined && this.#vrings[b.state.index]?.started === true
    ) {
      await this.#backend.drainQueue(b.state.index);
    }
    return this.handle(message);
  }

  /**
   * Graceful end (back-end shutdown or upgrade): drains every started queue
   * as GET_VRING_BASE would, so the front-end finds all requests taken so
   * far on the used ring. The queues stay started; {@link close} stops them.
   */
  async quiesce(): Promise<void> {
    const drain = this.#backend.drainQueue?.bind(this.#backend);
    if (drain === undefined) return;
    await Promise.all(
      this.#vrings.map((v, i) => v.started ? drain(i) : Promise.resolve()),
    );
  }

  /**
   * Ends the session: stops started queues and gives back every fd it kept
   * (kick, call, err) for closing.
   */
  close(): number[] {
    const fds: number[] = [];
    this.#vrings.forEach((v, i) => {
      if (v.started) {
        v.started = false;
        this.#backend.stopQueue(i);
      }
      fds.push(...this.#dropFds(v));
    });
    return fds;
  }

  #negotiated(bit: number): boolean {
    return (this.#protocolFeatures & featureBit(bit)) !== 0n;
  }

  #protocolAcked(): boolean {
    return (this.#features & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
  }

  #checkLegal(m: VhostUserMessage): void {
    const name = nameOf(m.request);
    const gate = GATES.get(m.request);
    if (gate !== undefined && !this.#negotiated(gate)) {
      throw new VhostUserError(
        "notNegotiated",
        `${name} needs a protocol feature (bit ${gate}) that was not negotiated`,
      );
    }
    if (m.request === R.SET_VRING_ENABLE && !this.#protocolAcked()) {
      throw new VhostUserError(
        "notNegotiated",
        `${name} needs VHOST_USER_F_PROTOCOL_FEATURES to be acked`,
      );
    }
    if (m.body.type === "vringFd" && m.body.noFd && m.request === R.SET_VRING_CALL) {
      if (!this.#negotiated(P.INBAND_NOTIFICATIONS)) {
        throw new VhostUserError(
          "notNegotiated",
          `${name} without an fd needs INBAND_NOTIFICATIONS`,
        );
      }
    }
    if (OWNER_ONLY.has(m.request) && !this.#owner) {
      throw new VhostUserError("notOwner", `${name} before SET_OWNER`);
    }
  }

  #queue(request: number, index: number): Vring {
    const v = this.#vrings[index];
    if (v === undefined) {
      throw new VhostUserError(
        "badQueueIndex",
        `${nameOf(request)} names queue ${index}; the device has ${this.#vrings.length}`,
      );
    }
    return v;
  }

  #stopped(request: number, index: number): Vring {
    const v = this.#queue(request, index);
    if (v.started) {
      throw new VhostUserError(
        "illegalState",
        `${nameOf(request)} on queue ${index} while it is started`,
      );
    }
    return v;
  }

  #dropFds(v: Vring): number[] {
    const fds = [v.kickFd, v.callFd, v.errFd].filter((fd): fd is number => fd !== null);
    v.kickFd = v.callFd = v.errFd = null;
    return fds;
  }

  #stopAll(): number[] {
    const fds: number[] = [];
    this.#vrings.forEach((v, i) => {
      if (v.started) this.#backend.stopQueue(i);
      fds.push(...this.#dropFds(v));
      Object.assign(v, newVring());
    });
    return fds;
  }

  #apply(m: VhostUserMessage, handOver: () => void): SessionOutput {
    const b = m.body;
    const name = nameOf(m.request);
    switch (m.request) {
      case R.GET_FEATURES:
        return this.#reply(replyU64(m.request, this.#offeredFeatures));
      case R.SET_FEATURES: {
        if (b.type !== "u64") break;
        if ((b.value & ~this.#offeredFeatures) !== 0n) {
          throw new VhostUserError(
            "badFeatures",
            `${name} acks bits 0x${(b.value & ~this.#offeredFeatures).toString(16)} ` +
              `that were not offered`,
          );
        }
        this.#features = b.value;
        this.#backend.setFeatures(b.value & ~featureBit(VHOST_USER_F_PROTOCOL_FEATURES));
        return NOTHING;
      }
      case R.GET_PROTOCOL_FEATURES:
        return this.#reply(replyU64(m.request, this.#offeredProtocol));
      case R.SET_PROTOCOL_FEATURES: {
        if (b.type !== "u64") break;
        if ((b.value & ~this.#offeredProtocol) !== 0n) {
          throw new VhostUserError(
            "badFeatures",
            `${name} acks bits 0x${(b.value & ~this.#offeredProtocol).toString(16)} ` +
              `that were not offered`,
          );
        }
        this.#protocolFeatures = b.value;
        return NOTHING;
      }
      case R.SET_OWNER:
        this.#owner = true;
        return NOTHING;
      case R.RESET_OWNER: {
        const closeFds = this.#stopAll();
        this.#owner = false;
        this.#features = 0n;
        this.#status = 0;
        this.#backend.reset();
        return { reply: null, replyFds: [], closeFds };
      }
      case R.RESET_DEVICE: {
        const closeFds = this.#stopAll();
        this.#status = 0;
        this.#backend.reset();
        return { reply: null, replyFds: [], closeFds };
      }
      case R.GET_QUEUE_NUM:
        return this.#reply(replyU64(m.request, BigInt(this.#vrings.length)));
      case R.GET_MAX_MEM_SLOTS:
        return this.#reply(replyU64(m.request, BigInt(this.#maxMemSlots)));
      case R.SET_MEM_TABLE: {
        if (b.type !== "memoryTable") break;
        handOver();
        this.#regions = [];
        this.#backend.setMemTable(b.regions, m.fds);
        this.#regions = [...b.regions];
        return NOTHING;
      }
      case R.ADD_MEM_REG: {
        if (b.type !== "memoryRegion") break;
        const r = b.region;
        if (this.#regions.length >= this.#maxMemSlots) {
          throw new VhostUserError(
            "tooManyRegions",
            `${name} would exceed the ${this.#maxMemSlots} memory slots`,
          );
        }
        for (const o of this.#regions) {
          if (
            r.guestPhysAddr < o.guestPhysAddr + o.memorySize &&
            o.guestPhysAddr < r.guestPhysAddr + r.memorySize
          ) {
            throw new VhostUserError(
              "overlappingRegions",
              `${name} overlaps the region at 0x${o.guestPhysAddr.toString(16)}`,
            );
          }
        }
        const fd = m.fds[0];
        if (fd === undefined) break;
        handOver();
        this.#backend.addMemRegion(r, fd);
        this.#regions.push(r);
        return NOTHING;
      }
      case R.REM_MEM_REG: {
        if (b.type !== "memoryRegion") break;
        const r = b.region;
        const i = this.#regions.findIndex((o) =>
          o.guestPhysAddr === r.guestPhysAddr && o.memorySize === r.memorySize &&
          o.userspaceAddr === r.userspaceAddr
        );
        if (i < 0) {
          throw new VhostUserError(
            "noSuchRegion",
            `${name} names no mapped region at 0x${r.guestPhysAddr.toString(16)}`,
          );
        }
        handOver();
        // The backend first: if it refuses, the region is still mapped on both sides.
        this.#backend.removeMemRegion(r);
        this.#regions.splice(i, 1);
        return { reply: null, replyFds: [], closeFds: [...m.fds] };
      }
      case R.SET_VRING_NUM: {
        if (b.type !== "vringState") break;
        const v = this.#stopped(m.request, b.state.index);
        const n = b.state.num;
        if (n < 1 || n > this.#backend.maxQueueSize || (n & (n - 1)) !== 0) {
          throw new VhostUserError(
            "badPayload",
            `${name} size ${n} is not a power of two up to ${this.#backend.maxQueueSize}`,
          );
        }
        v.num = n;
        return NOTHING;
      }
      case R.SET_VRING_BASE: {
        if (b.type !== "vringState") break;
        const v = this.#stopped(m.request, b.state.index);
        if (b.state.num > 0xffff) {
          throw new VhostUserError("badPayload", `${name} base ${b.state.num} exceeds 65535`);
        }
        v.base = b.state.num;
        return NOTHING;
      }
      case R.SET_VRING_ADDR: {
        if (b.type !== "vringAddr") break;
        const a = b.addr;
        const v = this.#queue(m.request, a.index);
        if ((a.flags & ~(1 << VHOST_VRING_F_LOG)) !== 0) {
          throw new VhostUserError(
            "badPayload",
            `${name} sets undefined flags 0x${a.flags.toString(16)}`,
          );
        }
        if (v.started) {
          // Live migration turns used-ring logging on and off on running
          // rings (VHOST_VRING_F_LOG, log_guest_addr): that is all that may
          // change while the ring runs.
          const o = v.addr;
          if (
            o.descUserAddr !== a.descUserAddr || o.availUserAddr !== a.availUserAddr ||
            o.usedUserAddr !== a.usedUserAddr
          ) {
            throw new VhostUserError(
              "illegalState",
              `${name} moves queue ${a.index}'s rings while it is started`,
            );
          }
          v.addr = { ...a };
          this.#backend.updateQueue(a.index, snapshot(v));
          return NOTHING;
        }
        v.addr = { ...a };
        v.addrSet = true;
        return NOTHING;
      }
      case R.GET_VRING_BASE: {
        if (b.type !== "vringState") break;
        const index = b.state.index;
        const v = this.#queue(m.request, index);
        if (v.started) {
          v.started = false;
          v.base = this.#backend.stopQueue(index);
        }
        // A stopped ring no longer listens to its kick fd.
        const closeFds = v.kickFd === null ? [] : [v.kickFd];
        v.kickFd = null;
        return {
          reply: replyVringState(m.request, { index, num: v.base }),
          replyFds: [],
          closeFds,
        };
      }
      case R.SET_VRING_KICK:
      case R.SET_VRING_CALL:
      case R.SET_VRING_ERR: {
        if (b.type !== "vringFd") break;
        const v = this.#queue(m.request, b.index);
        const fd = b.noFd ? null : (m.fds[0] ?? null);
        handOver();
        const closeFds: number[] = [];
        const field = m.request === R.SET_VRING_KICK
          ? "kickFd"
          : m.request === R.SET_VRING_CALL
          ? "callFd"
          : "errFd";
        const old = v[field];
        if (old !== null) closeFds.push(old);
        v[field] = fd;
        if (m.request === R.SET_VRING_KICK) {
          if (!v.started) {
            if (!v.addrSet || v.num === 0) {
              // Keep the fd; the ring starts with a later kick once configured.
              return { reply: null, replyFds: [], closeFds };
            }
            if (!this.#protocolAcked()) v.enabled = true;
            // Started only once the backend accepted it (it refuses a bad inflight area).
            this.#backend.startQueue(b.index, snapshot(v));
            v.started = true;
          } else {
            this.#backend.updateQueue(b.index, snapshot(v));
          }
        } else if (v.started) {
          this.#backend.updateQueue(b.index, snapshot(v));
        }
        return { reply: null, replyFds: [], closeFds };
      }
      case R.SET_VRING_ENABLE: {
        if (b.type !== "vringState") break;
        const v = this.#queue(m.request, b.state.index);
        if (b.state.num > 1) {
          throw new VhostUserError("badPayload", `${name} value ${b.state.num} is not 0 or 1`);
        }
        v.enabled = b.state.num === 1;
        if (v.started) this.#backend.updateQueue(b.state.index, snapshot(v));
        return NOTHING;
      }
      case R.VRING_KICK: {
        if (b.type !== "vringState") break;
        this.#queue(m.request, b.state.index);
        return NOTHING;
      }
      case R.GET_CONFIG: {
        if (b.type !== "config") break;
        const c = b.config;
        let data: Uint8Array;
        try {
          data = this.#backend.getConfig(c.offset, c.data.byteLength, c.flags);
          if (data.byteLength !== c.data.byteLength) throw new Error("wrong length");
        } catch {
          // An empty config reply tells the front-end the read failed.
          data = new Uint8Array(0);
        }
        return this.#reply(replyConfig({ offset: c.offset, flags: c.flags, data }));
      }
      case R.SET_CONFIG: {
        if (b.type !== "config") break;
        this.#backend.setConfig(b.config.offset, b.config.data, b.config.flags);
        return NOTHING;
      }
      case R.SET_STATUS: {
        if (b.type !== "u64") break;
        if (b.value > 0xffn) {
          throw new VhostUserError("badPayload", `${name} status 0x${b.value.toString(16)}`);
        }
        this.#status = Number(b.value);
        this.#backend.setStatus?.(this.#status);
        return NOTHING;
      }
      case R.GET_STATUS:
        return this.#reply(replyU64(m.request, BigInt(this.#status)));
      case R.GET_INFLIGHT_FD: {
        if (b.type !== "inflight" || this.#backend.getInflightFd === undefined) break;
        const area = this.#backend.getInflightFd(b.inflight.numQueues, b.inflight.queueSize);
        return {
          reply: replyInflight({
            mmapSize: area.mmapSize,
            mmapOffset: area.mmapOffset,
            numQueues: b.inflight.numQueues,
            queueSize: b.inflight.queueSize,
          }),
          replyFds: [area.fd],
          closeFds: [],
        };
      }
      case R.SET_LOG_BASE: {
        const fd = m.fds[0];
        if (b.type !== "log" || fd === undefined || this.#backend.setLogBase === undefined) {
          break;
        }
        handOver();
        this.#backend.setLogBase(b.log, fd);
        // QEMU waits for this reply (with LOG_SHMFD) before it relies on the
        // new log; its payload is not specified: a u64 0, as libvhost-user.
        return this.#reply(replyU64(m.request, 0n));
      }
      case R.SET_LOG_FD: {
        const fd = m.fds[0];
        if (fd === undefined) break;
        handOver();
        if (this.#backend.setLogFd === undefined) {
          // Optional (the front-end may be told of log updates through it): unused here.
          return { reply: null, replyFds: [], closeFds: [fd] };
        }
        this.#backend.setLogFd(fd);
        return NOTHING;
      }
      case R.SET_INFLIGHT_FD: {
        const fd = m.fds[0];
        if (
          b.type !== "inflight" || fd === undefined || this.#backend.setInflightFd === undefined
        ) {
          break;
        }
        handOver();
        this.#backend.setInflightFd(b.inflight, fd);
        return NOTHING;
      }
    }
    // Gated requests the session never offers end here, as do reader/session mismatches.
    throw new VhostUserError("unsupportedRequest", `Request ${name} is not supported`);
  }

  #reply(reply: Uint8Array): SessionOutput {
    return { reply, replyFds: [], closeFds: [] };
  }
}

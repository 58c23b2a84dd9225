/**
 * The block device consumer API: find a bdev, open a descriptor, get an I/O
 * channel on a thread, submit I/Os. Modules live behind `bdev_module.ts`.
 *
 * @example
 * ```ts
 * const desc = registry.open("Malloc0", true);
 * const ch = desc.getIoChannel(reactor);
 * const io = new BdevIo((io) => console.log(io.status));
 * ch.write(io, buf, 0, 8);
 * ```
 * @module
 */
import {
  BDEV_IO_MAX_IOVS,
  BdevIo,
  BdevIoStatus,
  bdevIoStatusText,
  BdevIoType,
  bdevIoTypeName,
} from "./bdev_io.ts";
import type {
  BdevCompleter,
  BdevFnTable,
  BdevInit,
  BdevModuleChannel,
  IoThread,
  RpcCall,
} from "./bdev_module.ts";
import { pollerName } from "./bdev_module.ts";
import {
  BdevBusyError,
  BdevExistsError,
  BdevInvalidError,
  BdevIoError,
  BdevNotFoundError,
} from "./errors.ts";

/** Options of the bdev layer (SPDK's bdev_set_options). */
export interface BdevOptions {
  /** Most I/Os in flight per channel; more wait in a queue. Set at start-up. */
  ioPoolSize: number;
}

/** Default per-channel pool: covers NVMe/TCP QD128 and a 256-entry virtqueue. */
export const DEFAULT_BDEV_OPTIONS: Readonly<BdevOptions> = { ioPoolSize: 512 };

/** Who holds a claim on a bdev (a layered bdev built on it). */
export interface BdevClaim {
  module: string;
  by: string;
}

/**
 * Latency histogram buckets: bucket i counts sampled I/Os that took less
 * than 2^i microseconds (and at least 2^(i-1)); the last one everything
 * slower (2^22 us is about 4 s).
 */
export const LATENCY_BUCKETS = 24;
/**
 * One dispatched I/O in this many has its latency measured: each clock read
 * costs ~90 ns and returns a boxed number, so sampling keeps both far from
 * the per-I/O path (two small boxes per 64 I/Os, no GC in 1M I/Os).
 */
export const LATENCY_SAMPLE_EVERY = 64;

/** Counters per channel; plain numbers so reading them allocates nothing. */
export class BdevIoStats {
  readOps = 0;
  readBytes = 0;
  writeOps = 0;
  writeBytes = 0;
  unmapOps = 0;
  flushOps = 0;
  writeZeroesOps = 0;
  errors = 0;
  /** I/Os that had to wait because the channel's pool was full. */
  queued = 0;
  /** Sampled latencies (submit to the module's completion), see {@link LATENCY_BUCKETS}. */
  readonly latencyBuckets: Float64Array = new Float64Array(LATENCY_BUCKETS);
  /** Sum of the sampled latencies, in milliseconds. */
  latencySumMs = 0;
  /** Number of sampled latencies. */
  latencySamples = 0;
}

/** Adds every counter of `from` to `into`. */
export function addIoStats(into: BdevIoStats, from: BdevIoStats): void {
  into.readOps += from.readOps;
  into.readBytes += from.readBytes;
  into.writeOps += from.writeOps;
  into.writeBytes += from.writeBytes;
  into.unmapOps += from.unmapOps;
  into.flushOps += from.flushOps;
  into.writeZeroesOps += from.writeZeroesOps;
  into.errors += from.errors;
  into.queued += from.queued;
  for (let i = 0; i < LATENCY_BUCKETS; i++) {
    into.latencyBuckets[i] = (into.latencyBuckets[i] as number) +
      (from.latencyBuckets[i] as number);
  }
  into.latencySumMs += from.latencySumMs;
  into.latencySamples += from.latencySamples;
}

/** A registered block device. Read its geometry; open it to do I/O. */
export class Bdev {
  readonly name: string;
  readonly module: string;
  readonly productName: string;
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly uuid: string;
  readonly writeCache: boolean;
  readonly requiredAlignment: number;
  /** @internal */
  readonly fnTable: BdevFnTable;
  /** Indexed by BdevIoType. */
  readonly #supported: boolean[] = [];
  /** @internal */
  claim: BdevClaim | null = null;
  /** @internal */
  readonly descs = new Set<BdevDesc>();
  /** Totals of closed channels, so stats survive channel churn. */
  readonly closedStats = new BdevIoStats();
  /**
   * Counters of this bdev's replicas in data-path workers, by reactor index,
   * as each worker last reported them (src/worker): about a second old.
   */
  readonly remoteStats = new Map<number, BdevIoStats>();

  /** @internal Use {@link BdevRegistry.register}. */
  constructor(init: BdevInit) {
    this.name = init.name;
    this.module = init.module;
    this.productName = init.productName;
    this.blockSize = init.blockSize;
    this.numBlocks = init.numBlocks;
    this.uuid = init.uuid ?? crypto.randomUUID();
    this.writeCache = init.writeCache ?? false;
    this.requiredAlignment = init.requiredAlignment ?? 1;
    this.fnTable = init.fnTable;
    for (const t of init.ioTypes) this.#supported[t] = true;
  }

  /**
   * Adds this bdev's counters (closed channels and every open one) to `out`.
   * Control path (stats, metrics): walks the descriptors, allocates nothing.
   */
  addStatsTo(out: BdevIoStats): void {
    addIoStats(out, this.closedStats);
    for (const d of this.descs) d.addChannelStatsTo(out);
    for (const r of this.remoteStats.values()) addIoStats(out, r);
  }

  /** Does this bdev serve I/Os of `type`? */
  ioTypeSupported(type: BdevIoType): boolean {
    return this.#supported[type] === true;
  }

  /** Size in bytes. */
  get sizeBytes(): number {
    return this.blockSize * this.numBlocks;
  }

  /** The RPC that recreates this bdev, for save_config. */
  writeConfigJson(): RpcCall | null {
    return this.fnTable.writeConfigJson?.() ?? null;
  }

  /** The `bdev_get_bdevs` view of this bdev, with SPDK's field names. */
  toJSON(): Record<string, unknown> {
    const supported: Record<string, boolean> = {};
    for (const t of Object.values(BdevIoType)) {
      supported[bdevIoTypeName[t]] = this.ioTypeSupported(t);
    }
    supported["reset"] = false;
    return {
      name: this.name,
      aliases: [],
      product_name: this.productName,
      block_size: this.blockSize,
      num_blocks: this.numBlocks,
      uuid: this.uuid,
      claimed: this.claim !== null,
      ...(this.claim ? { claim_type: "exclusive_write", claimed_by: this.claim.by } : {}),
      zoned: false,
      write_cache: this.writeCache,
      required_alignment: Math.log2(this.requiredAlignment),
      supported_io_types: supported,
      driver_specific: { [this.module]: this.fnTable.dumpInfoJson?.() ?? {} },
    };
  }
}

/** An open handle on a bdev. Get I/O channels from it; close it when done. */
export class BdevDesc {
  readonly bdev: Bdev;
  readonly writable: boolean;
  readonly #registry: BdevRegistry;
  readonly #channels = new Set<BdevChannel>();
  #closed = false;

  /** @internal Use {@link BdevRegistry.open}. */
  constructor(registry: BdevRegistry, bdev: Bdev, writable: boolean) {
    this.#registry = registry;
    this.bdev = bdev;
    this.writable = writable;
  }

  /** A channel for submitting I/O from `thread`. Close it before the descriptor. */
  getIoChannel(thread: IoThread): BdevChannel {
    if (this.#closed) throw new Error(`descriptor of bdev "${this.bdev.name}" is closed`);
    const ch = new BdevChannel(this, thread, this.#registry.options.ioPoolSize);
    this.#channels.add(ch);
    return ch;
  }

  /** Adds the counters of this descriptor's open channels to `out`. */
  addChannelStatsTo(out: BdevIoStats): void {
    for (const ch of this.#channels) addIoStats(out, ch.stats);
  }

  /** @internal */
  channelClosed(ch: BdevChannel): void {
    this.#channels.delete(ch);
  }

  /** Closes the descriptor. Every channel must be closed first. */
  close(): void {
    if (this.#closed) return;
    if (this.#channels.size > 0) {
      throw new Error(
        `descriptor of bdev "${this.bdev.name}" closed with ${this.#channels.size} open channel(s)`,
      );
    }
    this.#closed = true;
    this.bdev.descs.delete(this);
  }
}

/**
 * Deferred completions are delivered from the thread's poller only when they
 * happened inside a submit call; this depth counter tells which (one per
 * JS thread, like the thread itself).
 */
let submitDepth = 0;

/**
 * A consumer's per-thread path to one bdev. Holds the I/O pool: at most
 * `poolSize` I/Os are in flight; more wait in FIFO order and start as slots
 * free up, so a burst is queued, never failed.
 */
export class BdevChannel implements BdevCompleter {
  readonly desc: BdevDesc;
  readonly bdev: Bdev;
  readonly poolSize: number;
  readonly stats: BdevIoStats = new BdevIoStats();
  readonly #moduleChannel: BdevModuleChannel;
  readonly #fnTable: BdevFnTable;
  readonly #thread: IoThread;
  readonly #poller: string;
  readonly #freeSlots: Int32Array;
  #freeTop: number;
  #waitHead: BdevIo | null = null;
  #waitTail: BdevIo | null = null;
  #doneHead: BdevIo | null = null;
  #doneTail: BdevIo | null = null;
  #closed = false;
  readonly #blockSize: number;
  readonly #numBlocks: number;
  /** Counts dispatches down to the next latency sample. */
  #untilSample = LATENCY_SAMPLE_EVERY;
  /**
   * Per pool slot: when its I/O was dispatched, if sampled (else -1). Typed
   * arrays, not fields of the I/O: storing a double there boxes it.
   */
  readonly #startMs: Float64Array;

  /** @internal Use {@link BdevDesc.getIoChannel}. */
  constructor(desc: BdevDesc, thread: IoThread, poolSize: number) {
    this.desc = desc;
    this.bdev = desc.bdev;
    this.poolSize = poolSize;
    this.#blockSize = desc.bdev.blockSize;
    this.#numBlocks = desc.bdev.numBlocks;
    this.#fnTable = desc.bdev.fnTable;
    this.#thread = thread;
    this.#freeSlots = new Int32Array(poolSize);
    for (let i = 0; i < poolSize; i++) this.#freeSlots[i] = poolSize - 1 - i;
    this.#freeTop = poolSize;
    this.#startMs = new Float64Array(poolSize).fill(-1);
    this.#moduleChannel = this.#fnTable.getIoChannel(this, thread, poolSize);
    this.#poller = pollerName(`bdev:${desc.bdev.name}`);
    thread.addPoller(this.#poller, this.poll);
  }

  /** I/Os holding a pool slot now. */
  get inFlight(): number {
    return this.poolSize - this.#freeTop;
  }

  /** Reads `numBlocks` blocks at `offsetBlocks` into `buf`. */
  read(io: BdevIo, buf: Uint8Array, offsetBlocks: number, numBlocks: number): void {
    io.setBuffer(buf);
    this.#start(io, BdevIoType.Read, offsetBlocks, numBlocks);
  }

  /** Reads into the first `iovcnt` vectors of `iovs`. */
  readv(
    io: BdevIo,
    iovs: Uint8Array[],
    iovcnt: number,
    offsetBlocks: number,
    numBlocks: number,
  ): void {
    io.setIovs(iovs, iovcnt);
    this.#start(io, BdevIoType.Read, offsetBlocks, numBlocks);
  }

  /** Writes `buf` (numBlocks blocks) at `offsetBlocks`. */
  write(io: BdevIo, buf: Uint8Array, offsetBlocks: number, numBlocks: number): void {
    io.setBuffer(buf);
    this.#start(io, BdevIoType.Write, offsetBlocks, numBlocks);
  }

  /** Writes the first `iovcnt` vectors of `iovs`. */
  writev(
    io: BdevIo,
    iovs: Uint8Array[],
    iovcnt: number,
    offsetBlocks: number,
    numBlocks: number,
  ): void {
    io.setIovs(iovs, iovcnt);
    this.#start(io, BdevIoType.Write, offsetBlocks, numBlocks);
  }

  /** Deallocates blocks; they read back as zeroes afterwards. */
  unmap(io: BdevIo, offsetBlocks: number, numBlocks: number): void {
    io.iovcnt = 0;
    this.#start(io, BdevIoType.Unmap, offsetBlocks, numBlocks);
  }

  /** Writes zeroes without a data buffer. */
  writeZeroes(io: BdevIo, offsetBlocks: number, numBlocks: number): void {
    io.iovcnt = 0;
    this.#start(io, BdevIoType.WriteZeroes, offsetBlocks, numBlocks);
  }

  /** Makes earlier completed writes durable (the whole device when the range is all of it). */
  flush(io: BdevIo, offsetBlocks = 0, numBlocks = this.#numBlocks): void {
    io.iovcnt = 0;
    this.#start(io, BdevIoType.Flush, offsetBlocks, numBlocks);
  }

  /** Submits an I/O whose type, range and vectors the caller set already. */
  submit(io: BdevIo): void {
    this.#start(io, io.type, io.offsetBlocks, io.numBlocks);
  }

  #start(io: BdevIo, type: BdevIoType, offsetBlocks: number, numBlocks: number): void {
    // Programmer errors crash: reusing a busy I/O would corrupt two requests.
    if (io.inFlight) throw new Error("BdevIo submitted while still in flight");
    if (this.#closed) throw new Error(`I/O channel of bdev "${this.bdev.name}" is closed`);
    io.inFlight = true;
    io.type = type;
    io.offsetBlocks = offsetBlocks;
    io.numBlocks = numBlocks;
    io.status = BdevIoStatus.Pending;
    io.errno = 0;
    const bad = this.#validate(io);
    if (bad !== BdevIoStatus.Success) {
      // Never call back inside the caller's submit: defer like an inline completion.
      submitDepth++;
      this.#finish(io, bad);
      submitDepth--;
      return;
    }
    if (this.#freeTop === 0) {
      this.stats.queued++;
      io.next = null;
      if (this.#waitTail === null) this.#waitHead = io;
      else this.#waitTail.next = io;
      this.#waitTail = io;
      return;
    }
    this.#dispatch(io);
  }

  #validate(io: BdevIo): BdevIoStatus {
    const type = io.type;
    if (!this.bdev.ioTypeSupported(type)) return BdevIoStatus.NotSupported;
    if (type !== BdevIoType.Read && !this.desc.writable) return BdevIoStatus.ReadOnly;
    const off = io.offsetBlocks, n = io.numBlocks;
    if (!Number.isInteger(off) || !Number.isInteger(n) || off < 0 || n < 0) {
      return BdevIoStatus.InvalidParam;
    }
    if (off + n > this.#numBlocks) return BdevIoStatus.OutOfRange;
    if (type === BdevIoType.Flush) return BdevIoStatus.Success;
    if (n === 0) return BdevIoStatus.InvalidParam;
    if (type === BdevIoType.Read || type === BdevIoType.Write) {
      if (io.iovcnt < 1 || io.iovcnt > BDEV_IO_MAX_IOVS || io.iovcnt > io.iovs.length) {
        return BdevIoStatus.InvalidParam;
      }
      if (io.iovBytes() !== n * this.#blockSize) return BdevIoStatus.InvalidParam;
    }
    return BdevIoStatus.Success;
  }

  #dispatch(io: BdevIo): void {
    io.slot = this.#freeSlots[--this.#freeTop] as number;
    if (--this.#untilSample === 0) {
      this.#untilSample = LATENCY_SAMPLE_EVERY;
      this.#startMs[io.slot] = performance.now();
    }
    submitDepth++;
    try {
      this.#fnTable.submitRequest(this.#moduleChannel, io);
    } finally {
      submitDepth--;
    }
  }

  /** Called by the module: the I/O in `io.slot` is done. */
  complete(io: BdevIo, status: BdevIoStatus, errno = 0): void {
    if (io.slot < 0) throw new Error("complete() of an I/O that holds no slot");
    const started = this.#startMs[io.slot] as number;
    if (started >= 0) {
      this.#startMs[io.slot] = -1;
      this.#recordLatency(performance.now() - started);
    }
    this.#freeSlots[this.#freeTop++] = io.slot;
    io.slot = -1;
    io.errno = errno;
    this.#finish(io, status);
  }

  #finish(io: BdevIo, status: BdevIoStatus): void {
    io.status = status;
    this.#count(io);
    if (submitDepth > 0 || this.#waitHead !== null) {
      // Deliver from the poller: either we are inside a submit (recursion),
      // or queued I/Os must get the freed slot before new submissions do.
      io.next = null;
      if (this.#doneTail === null) this.#doneHead = io;
      else this.#doneTail.next = io;
      this.#doneTail = io;
      this.#thread.wake();
      return;
    }
    io.inFlight = false;
    io.onComplete(io);
  }

  #recordLatency(ms: number): void {
    const s = this.stats;
    // floor(us) < 2^i: bucket i = bit length of floor(us).
    const b = 32 - Math.clz32(Math.min(ms * 1000, 0x7fffffff));
    const i = b < LATENCY_BUCKETS ? b : LATENCY_BUCKETS - 1;
    s.latencyBuckets[i] = (s.latencyBuckets[i] as number) + 1;
    s.latencySumMs += ms;
    s.latencySamples++;
  }

  #count(io: BdevIo): void {
    const s = this.stats;
    if (io.status !== BdevIoStatus.Success) {
      s.errors++;
      return;
    }
    const bytes = io.numBlocks * this.#blockSize;
    switch (io.type) {
      case BdevIoType.Read:
        s.readOps++;
        s.readBytes += bytes;
        break;
      case BdevIoType.Write:
        s.writeOps++;
        s.writeBytes += bytes;
        break;
      case BdevIoType.Unmap:
        s.unmapOps++;
        break;
      case BdevIoType.Flush:
        s.flushOps++;
        break;
      case BdevIoType.WriteZeroes:
        s.writeZeroesOps++;
        break;
    }
  }

  /**
   * The channel's poller: starts queued I/Os on free slots, then delivers
   * deferred completions. Returns the work done (0 when idle).
   */
  readonly poll = (): number => {
    let work = 0;
    while (this.#waitHead !== null && this.#freeTop > 0) {
      const io = this.#waitHead;
      this.#waitHead = io.next;
      if (this.#waitHead === null) this.#waitTail = null;
      io.next = null;
      this.#dispatch(io);
      work++;
    }
    // Take the list as it is now: completions delivered below may add more,
    // which wait for the next poll rather than growing this loop without end.
    let io = this.#doneHead;
    this.#doneHead = this.#doneTail = null;
    while (io !== null) {
      const next = io.next;
      io.next = null;
      io.inFlight = false;
      io.onComplete(io);
      io = next;
      work++;
    }
    return work;
  };

  /**
   * Closes the channel. Nothing may be in flight; I/Os still waiting for a
   * slot end as Aborted.
   */
  close(): void {
    if (this.#closed) return;
    if (this.inFlight > 0) {
      throw new Error(
        `I/O channel of bdev "${this.bdev.name}" closed with ${this.inFlight} I/O(s) in flight`,
      );
    }
    this.poll();
    let io = this.#waitHead;
    this.#waitHead = this.#waitTail = null;
    while (io !== null) {
      const next = io.next;
      io.next = null;
      io.status = BdevIoStatus.Aborted;
      io.inFlight = false;
      io.onComplete(io);
      io = next;
    }
    this.#closed = true;
    this.#thread.removePoller(this.#poller);
    this.#moduleChannel.destroy();
    addIoStats(this.bdev.closedStats, this.stats);
    this.desc.channelClosed(this);
  }
}

/**
 * All bdevs of one appliance. Names are unique; a bdev that another claims
 * (a layered bdev built on it) or that is open cannot be deleted.
 */
export class BdevRegistry {
  readonly options: BdevOptions;
  readonly #bdevs = new Map<string, Bdev>();

  constructor(options: Partial<BdevOptions> = {}) {
    this.options = { ...DEFAULT_BDEV_OPTIONS, ...options };
    validatePoolSize(this.options.ioPoolSize);
  }

  /** Changes options; only before any bdev exists (they size pools at start-up). */
  setOptions(options: Partial<BdevOptions>): void {
    if (this.#bdevs.size > 0) {
      throw new BdevBusyError("bdev options can only be set before any bdev is created");
    }
    if (options.ioPoolSize !== undefined) validatePoolSize(options.ioPoolSize);
    Object.assign(this.options, options);
  }

  /** Adds a bdev; validates its name and geometry. */
  register(init: BdevInit): Bdev {
    validateBdevName(init.name);
    if (this.#bdevs.has(init.name)) throw new BdevExistsError(init.name);
    const bs = init.blockSize;
    if (!Number.isInteger(bs) || bs < 512 || bs > 65536 || (bs & (bs - 1)) !== 0) {
      throw new BdevInvalidError(
        `block_size must be a power of two from 512 to 65536, got ${bs}`,
      );
    }
    if (!Number.isSafeInteger(init.numBlocks) || init.numBlocks < 1) {
      throw new BdevInvalidError(`num_blocks must be a positive integer, got ${init.numBlocks}`);
    }
    if (init.uuid !== undefined && !UUID_RE.test(init.uuid)) {
      throw new BdevInvalidError(`uuid "${init.uuid}" is not an RFC 4122 UUID`);
    }
    for (const b of this.#bdevs.values()) {
      if (init.uuid !== undefined && b.uuid === init.uuid.toLowerCase()) {
        throw new BdevExistsError(`${init.name}" (uuid ${init.uuid} is used by "${b.name})`);
      }
    }
    const bdev = new Bdev({ ...init, uuid: init.uuid?.toLowerCase() });
    this.#bdevs.set(bdev.name, bdev);
    return bdev;
  }

  /**
   * Removes a bdev and destructs it. Refused while it is claimed or open:
   * delete the bdevs built on it and detach its users first.
   */
  async unregister(name: string): Promise<void> {
    const bdev = this.get(name);
    if (bdev.claim !== null) {
      throw new BdevBusyError(
        `bdev "${name}" is claimed by ${bdev.claim.module} bdev "${bdev.claim.by}"; delete that first`,
      );
    }
    if (bdev.descs.size > 0) {
      throw new BdevBusyError(`bdev "${name}" is open by ${bdev.descs.size} user(s)`);
    }
    this.#bdevs.delete(name);
    await bdev.fnTable.destruct();
  }

  /** The bdev called `name`; throws {@link BdevNotFoundError} when none. */
  get(name: string): Bdev {
    const bdev = this.#bdevs.get(name);
    if (bdev === undefined) throw new BdevNotFoundError(name);
    return bdev;
  }

  /** Does a bdev called `name` exist? */
  has(name: string): boolean {
    return this.#bdevs.has(name);
  }

  /** All bdevs in creation order (bases before the bdevs built on them). */
  list(): Bdev[] {
    return [...this.#bdevs.values()];
  }

  /** Opens `name` for I/O; `writable` false gives a read-only descriptor. */
  open(name: string, writable: boolean): BdevDesc {
    const bdev = this.get(name);
    const desc = new BdevDesc(this, bdev, writable);
    bdev.descs.add(desc);
    return desc;
  }

  /** Marks `base` as the base of layered bdev `by`; one claim at a time. */
  claim(base: Bdev, module: string, by: string): void {
    if (base.claim !== null) {
      throw new BdevBusyError(
        `bdev "${base.name}" is already claimed by ${base.claim.module} bdev "${base.claim.by}"`,
      );
    }
    base.claim = { module, by };
  }

  /** Drops the claim that `by` holds on `base`. */
  releaseClaim(base: Bdev, by: string): void {
    if (base.claim?.by === by) base.claim = null;
  }
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NAME_RE = /^[A-Za-z0-9_.:+-]{1,128}$/;

/** Bdev names are 1-128 characters of letters, digits and _ . : + - */
export function validateBdevName(name: unknown): asserts name is string {
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    throw new BdevInvalidError(
      `bdev name must be 1-128 characters of letters, digits and _ . : + -, got ${
        JSON.stringify(name)
      }`,
    );
  }
}

function validatePoolSize(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 65536) {
    throw new BdevInvalidError(`bdev_io_pool_size must be an integer from 1 to 65536, got ${n}`);
  }
}

/**
 * Runs one I/O and resolves when it ends; rejects with {@link BdevIoError}.
 * For the control path and tests: it allocates a request and a promise.
 */
export function runIo(ch: BdevChannel, setup: (io: BdevIo) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const io = new BdevIo((io) => {
      if (io.status === BdevIoStatus.Success) resolve();
      else {
        reject(
          new BdevIoError(
            `${
              bdevIoTypeName[io.type]
            } of ${io.numBlocks} block(s) at ${io.offsetBlocks} on "${ch.bdev.name}": ${
              bdevIoStatusText(io.status)
            }${io.errno ? ` (errno ${io.errno})` : ""}`,
            io.status,
            io.errno,
          ),
        );
      }
    });
    setup(io);
  });
}

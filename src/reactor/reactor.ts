/**
 * The reactor: the poll loop the data path runs in.
 *
 * One {@link Reactor} owns one io_uring and a list of pollers. `run()` calls
 * every poller in turn; completions are reaped by a built-in poller and
 * dispatched to CQE handlers by the handler id in the top 8 bits of
 * `user_data`, so the file bdev, sockets and everything else share one ring.
 * SQEs prepared during an iteration go to the kernel in one io_uring_enter
 * at its end.
 *
 * The loop adapts to load:
 * - busy: while any poller does work, iterate without sleeping, but give the
 *   JS event loop a macrotask turn every `yieldIntervalMs` (timers and worker
 *   messages still run) and let the runtime poll its sockets every
 *   `deepYieldIntervalMs` (the admin plane still answers);
 * - idle: after `idleSpinUs` without work, park in `io_uring_enter(GETEVENTS)`
 *   on Deno's FFI thread pool (a `nonblocking` call, ~6-8 us, paid once per
 *   park) so an idle appliance uses no CPU. A CQE ends the park: an I/O
 *   completion, or the reactor's eventfd, which {@link Reactor.wake} (or any
 *   thread holding {@link Reactor.wakeFd}) writes.
 *
 * The reactor uses no main-thread-only API: it runs the same in a Worker,
 * which is the intended shape (one Worker per data-path core).
 *
 * @example
 * ```ts
 * import { Reactor } from "./reactor.ts";
 * const reactor = new Reactor();
 * const id = reactor.registerCqeHandler((tag, res) => console.log("done", tag, res));
 * reactor.ring.prepNop(Reactor.userData(id, 1));
 * const done = reactor.run();
 * reactor.wake();
 * setTimeout(() => reactor.stop(), 10);
 * await done;
 * reactor.close();
 * ```
 * @module
 */
import { Errno } from "../../ffi/errno.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK, eventfd, sym } from "../../ffi/libc.ts";
import {
  IORING_CQE_F_MORE,
  IORING_FEAT_EXT_ARG,
  IoUring,
  POLL_EVENTS,
} from "../../ffi/io_uring.ts";
import { setImmediate } from "node:timers";

/**
 * Gives the JS event loop one macrotask turn while busy: timers and worker
 * messages run. Measured on Deno 2.9.6 with a loop busy 1 ms between
 * yields: setImmediate keeps timers on time (< 1 ms late) and worker
 * messages at ~1 ms, for ~2% of the time. A MessageChannel ping (the
 * browser idiom) does not reach Deno's event loop phases: timers ran
 * ~150 ms late, worker messages ~190 ms, TCP round trips took 6-10 s.
 */
function yieldTurn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * Lets the runtime park once so it polls its I/O driver: with setImmediate
 * alone, Deno's own sockets (the admin plane's HTTP) saw ~120 ms round
 * trips under a saturated loop. setTimeout(0) sleeps ~1-2.4 ms, so it is
 * rationed by `deepYieldIntervalMs`.
 */
function deepYield(): Promise<void> {
  return new Promise<void>((resolve) => setTimeout(resolve, 0));
}

/** A unit of the poll loop; returns how much work it did (0: none). */
export type Poller = () => number;

/**
 * Receives the completions of one subsystem: `tag` is the low 24 bits of
 * `user_data`, `res` the CQE result (< 0 is -errno), `flags` the CQE flags.
 */
export type ReactorCqeHandler = (tag: number, res: number, flags: number) => void;

/** Bits of `user_data` left to a handler for its own tag. */
export const USER_DATA_TAG_BITS = 24;
/** Largest tag a handler can put in `user_data`. */
export const USER_DATA_TAG_MAX = (1 << USER_DATA_TAG_BITS) - 1;
/** Handler ids are 1..255; 0 belongs to the reactor itself (its wake eventfd). */
export const CQE_HANDLER_ID_MAX = 255;

const REACTOR_HANDLER_ID = 0;
const TAG_WAKE_POLL = 1;
const EINVAL = Errno.EINVAL;

/** Tuning of a {@link Reactor}. */
export interface ReactorOptions {
  /** io_uring SQ entries (the CQ ring is twice that). Default 1024. */
  entries?: number;
  /** Time without work before parking, in microseconds. Default 100. */
  idleSpinUs?: number;
  /**
   * The same while modules have I/O in the kernel ({@link Reactor.ioInFlight}
   * > 0): the device will answer soon, and waking from a park costs ~100 us
   * through Deno's FFI thread, more than a fast device takes. Default 2000.
   */
  inflightSpinUs?: number;
  /**
   * Longest stretch of busy polling before the JS event loop gets a turn
   * (timers, worker messages). Default 1.
   */
  yieldIntervalMs?: number;
  /**
   * Longest stretch of busy polling before the runtime may park to poll
   * Deno's own sockets and files; each such turn costs ~1-2 ms. Default 100.
   */
  deepYieldIntervalMs?: number;
  /**
   * Longest park before the loop looks around again: a safety net for work
   * queued without {@link Reactor.wake}, not a polling period. Default 1000.
   */
  parkTimeoutMs?: number;
}

/** Counters of a {@link Reactor}; a plain object, read it any time. */
export interface ReactorStats {
  /** Iterations in which some poller did work. */
  busyIterations: number;
  /** Iterations in which no poller did work (the idle spin before a park). */
  idleIterations: number;
  /** Times the reactor parked in the kernel. */
  idleParks: number;
  /** Parks that ended by the park timeout rather than a CQE. */
  parkTimeouts: number;
  /** Macrotask turns given to the JS event loop while busy. */
  yields: number;
  /** Turns that let the runtime park and poll its I/O driver while busy. */
  deepYields: number;
  /** CQEs reaped and dispatched. */
  cqesReaped: number;
  /** CQEs whose handler id had no handler registered. */
  cqesUnclaimed: number;
  /** io_uring_enter calls made to submit. */
  submitCalls: number;
  /** SQEs handed to the kernel. */
  sqesSubmitted: number;
  /** Times the wake eventfd fired (from any thread). */
  wakeEvents: number;
  /** eventfd writes made by {@link Reactor.wake} on this thread. */
  wakesSent: number;
  /** Wake polls that ended with an error (re-armed at the next park). */
  wakePollErrors: number;
  /**
   * Milliseconds spent parked in the kernel (idle, using no CPU); the rest
   * of the time since the loop started it was running (polling or working).
   */
  parkedMs: number;
}

interface PollerEntry {
  readonly name: string;
  readonly fn: Poller;
}

/**
 * A poll-mode event loop around one io_uring.
 *
 * Threading: everything but writing {@link wakeFd} must happen on the thread
 * that created the reactor. Await {@link stop} before terminating a Worker
 * that runs one: a parked reactor's wait holds one of Deno's blocking
 * threads in the kernel until a CQE arrives.
 *
 * A poller or CQE handler that throws ends run() with that error.
 */
export class Reactor {
  /** The ring all of this reactor's I/O goes through. */
  readonly ring: IoUring;
  /** Live counters. */
  readonly stats: ReactorStats = {
    busyIterations: 0,
    idleIterations: 0,
    idleParks: 0,
    parkTimeouts: 0,
    yields: 0,
    deepYields: 0,
    cqesReaped: 0,
    cqesUnclaimed: 0,
    submitCalls: 0,
    sqesSubmitted: 0,
    wakeEvents: 0,
    wakesSent: 0,
    wakePollErrors: 0,
    parkedMs: 0,
  };
  /** performance.now() when the running loop started; -1 when not running. */
  #runStartMs = -1;
  /** Milliseconds the loop ran in earlier runs. */
  #ranMs = 0;

  readonly #idleSpinMs: number;
  readonly #inflightSpinMs: number;
  /**
   * I/Os that modules have submitted to the kernel and not yet seen
   * complete; they count them up and down. While non-zero the reactor polls
   * longer before it parks (poll while busy, sleep when idle).
   */
  ioInFlight = 0;
  readonly #yieldIntervalMs: number;
  readonly #deepYieldIntervalMs: number;
  readonly #parkTimeoutMs: number;

  /** Copy-on-write: add/remove replace the array, the loop iterates a snapshot. */
  #pollers: readonly PollerEntry[] = [];
  #handlers: (ReactorCqeHandler | undefined)[] = new Array(CQE_HANDLER_ID_MAX + 1);
  /** Bound once so reaping makes no closure per call. */
  readonly #dispatch = (userData: number, res: number, flags: number): void => {
    const handler = this.#handlers[userData >>> USER_DATA_TAG_BITS];
    if (handler === undefined) {
      this.stats.cqesUnclaimed++;
      return;
    }
    handler(userData & USER_DATA_TAG_MAX, res, flags);
  };

  readonly #wakeFd: number;
  /** eventfd counter write/read buffers (8 bytes, off V8's heap). */
  readonly #wakeOne = new BigUint64Array(new ArrayBuffer(8));
  readonly #wakeSink = new BigUint64Array(new ArrayBuffer(8));
  #wakePollArmed = false;
  /** Multishot POLL_ADD is refused by kernels before 5.13: then re-arm one-shots. */
  #wakePollMultishot = true;
  /** A wake was written for the current park; further wakes need not write. */
  #wakeWritten = false;
  /** Work arrived from this thread while busy: do not count this as idle. */
  #workHinted = false;

  #running = false;
  #parked = false;
  #stopRequested = false;
  #closed = false;
  #runDone: Promise<void> = Promise.resolve();

  constructor(options: ReactorOptions = {}) {
    this.#idleSpinMs = (options.idleSpinUs ?? 100) / 1000;
    this.#inflightSpinMs = (options.inflightSpinUs ?? 2000) / 1000;
    this.#yieldIntervalMs = options.yieldIntervalMs ?? 1;
    this.#deepYieldIntervalMs = options.deepYieldIntervalMs ?? 100;
    this.#parkTimeoutMs = options.parkTimeoutMs ?? 1000;
    this.ring = new IoUring(options.entries ?? 1024);
    try {
      this.#wakeFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    } catch (e) {
      this.ring.close();
      throw e;
    }
    this.#wakeOne[0] = 1n;
    this.#handlers[REACTOR_HANDLER_ID] = (tag, res, flags) => this.#onReactorCqe(tag, res, flags);
    this.#armWakePoll();
    this.flush();
  }

  /**
   * Encodes a handler id (1..255) and a tag (0..2^24-1) into a 32-bit
   * `user_data` for `ring.prep*`.
   */
  static userData(handlerId: number, tag: number): number {
    return ((handlerId << USER_DATA_TAG_BITS) | (tag & USER_DATA_TAG_MAX)) >>> 0;
  }

  /** The eventfd that wakes a parked reactor: any thread may write 8 bytes (a u64 > 0) to it. */
  get wakeFd(): number {
    return this.#wakeFd;
  }

  /** True while run() is active. */
  get running(): boolean {
    return this.#running;
  }

  /** True while the reactor sleeps in the kernel waiting for a CQE. */
  get parked(): boolean {
    return this.#parked;
  }

  /** Adds a poller; names are unique and say what the poller serves. */
  addPoller(name: string, fn: Poller): void {
    if (this.#pollers.some((p) => p.name === name)) {
      throw new Error(`reactor already has a poller named "${name}"`);
    }
    this.#pollers = [...this.#pollers, { name, fn }];
  }

  /** Removes a poller by name; returns whether there was one. Safe from inside a poller. */
  removePoller(name: string): boolean {
    const next = this.#pollers.filter((p) => p.name !== name);
    const removed = next.length !== this.#pollers.length;
    this.#pollers = next;
    return removed;
  }

  /** Names of the pollers, in call order. */
  pollerNames(): string[] {
    return this.#pollers.map((p) => p.name);
  }

  /**
   * Registers a CQE handler and returns its id (1..255) for
   * {@link Reactor.userData}. Handlers run inside the reap poller; they may
   * prepare new SQEs (flushed at the end of the iteration) but must not
   * block.
   */
  registerCqeHandler(handler: ReactorCqeHandler): number {
    for (let id = 1; id <= CQE_HANDLER_ID_MAX; id++) {
      if (this.#handlers[id] === undefined) {
        this.#handlers[id] = handler;
        return id;
      }
    }
    throw new Error(`reactor has no free CQE handler id (all ${CQE_HANDLER_ID_MAX} in use)`);
  }

  /** Frees a handler id; CQEs still carrying it are counted as unclaimed. */
  unregisterCqeHandler(id: number): void {
    if (!Number.isInteger(id) || id < 1 || id > CQE_HANDLER_ID_MAX) {
      throw new RangeError(`CQE handler id must be 1..${CQE_HANDLER_ID_MAX}, got ${id}`);
    }
    this.#handlers[id] = undefined;
  }

  /**
   * Submits prepared SQEs now rather than at the end of the iteration, e.g.
   * when a poller filled the SQ ring. Returns how many the kernel took.
   */
  flush(): number {
    if (this.ring.sqPending() === 0) return 0;
    const n = this.ring.submit();
    this.stats.submitCalls++;
    this.stats.sqesSubmitted += n;
    return n;
  }

  /**
   * Makes a parked reactor run its pollers again; call it after queueing
   * work from outside the loop (an RPC, a timer). SQEs already prepared are
   * submitted at once. Cheap when the reactor is not parked. Other threads
   * write {@link wakeFd} instead.
   */
  wake(): void {
    if (this.#closed) return;
    if (!this.#parked) {
      this.#workHinted = true;
      return;
    }
    this.flush();
    if (this.#wakeWritten) return;
    this.#wakeWritten = true;
    this.stats.wakesSent++;
    sym.write(this.#wakeFd, this.#wakeOne, 8n);
  }

  /**
   * Runs the poll loop until {@link stop}. Resolves when the loop has ended
   * and no wait is outstanding on the ring.
   */
  run(): Promise<void> {
    if (this.#closed) throw new Error("reactor is closed");
    if (this.#running) throw new Error("reactor is already running");
    this.#running = true;
    this.#stopRequested = false;
    this.#runDone = this.#loop();
    return this.#runDone;
  }

  /** Ends run() after the current iteration; resolves when it has ended. */
  stop(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    this.#stopRequested = true;
    this.wake();
    return this.#runDone;
  }

  /**
   * Frees the eventfd and the ring; the kernel cancels I/O still in flight.
   * Stop the reactor first.
   */
  close(): void {
    if (this.#closed) return;
    if (this.#running) throw new Error("reactor close while running: await stop() first");
    this.#closed = true;
    this.ring.close();
    sym.close(this.#wakeFd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * One pass over all pollers: reap CQEs, run each poller, submit what they
   * prepared. Returns the work done. Public for callers that drive the
   * reactor themselves (tests, a custom loop).
   */
  poll(): number {
    let work = this.#reap();
    const pollers = this.#pollers;
    for (let i = 0; i < pollers.length; i++) {
      const p = pollers[i];
      if (p !== undefined) work += p.fn();
    }
    // Completions posted while the pollers ran go out with this batch's
    // submit anyway; reaping them now saves an iteration.
    if (this.ring.sqPending() > 0) {
      this.flush();
      work += this.#reap();
    }
    return work;
  }

  #reap(): number {
    if (this.ring.cqReady() === 0) return 0;
    const n = this.ring.reap(this.#dispatch);
    this.stats.cqesReaped += n;
    return n;
  }

  /**
   * Milliseconds the loop has been running (all runs), parked time included:
   * `stats.parkedMs / runningMs` is the idle share, the rest used a core.
   */
  get runningMs(): number {
    return this.#ranMs + (this.#runStartMs < 0 ? 0 : performance.now() - this.#runStartMs);
  }

  async #loop(): Promise<void> {
    const stats = this.stats;
    this.#runStartMs = performance.now();
    let lastYield = performance.now();
    let lastDeepYield = lastYield;
    let idleSince = -1;
    let sinceClock = 0;
    try {
      while (!this.#stopRequested) {
        const work = this.poll();
        let now: number;
        if (work > 0 || this.#workHinted) {
          this.#workHinted = false;
          stats.busyIterations++;
          idleSince = -1;
          // performance.now() costs ~90 ns: look at the clock every 32 busy passes.
          if (++sinceClock < 32) continue;
          sinceClock = 0;
          now = performance.now();
        } else {
          stats.idleIterations++;
          now = performance.now();
          if (idleSince < 0) {
            idleSince = now;
          } else if (
            now - idleSince >= (this.ioInFlight > 0 ? this.#inflightSpinMs : this.#idleSpinMs)
          ) {
            await this.#park();
            idleSince = -1;
            lastYield = lastDeepYield = performance.now();
            continue;
          }
        }
        if (now - lastDeepYield >= this.#deepYieldIntervalMs) {
          stats.deepYields++;
          await deepYield();
          lastYield = lastDeepYield = performance.now();
        } else if (now - lastYield >= this.#yieldIntervalMs) {
          stats.yields++;
          await yieldTurn();
          lastYield = performance.now();
        }
      }
    } finally {
      this.#running = false;
      this.#ranMs += performance.now() - this.#runStartMs;
      this.#runStartMs = -1;
    }
  }

  async #park(): Promise<void> {
    this.flush();
    if (!this.#wakePollArmed) this.#armWakePoll();
    this.flush();
    this.stats.idleParks++;
    this.#parked = true;
    this.#wakeWritten = false;
    // Two clock reads per park (not per I/O): the idle time operators see as CPU not used.
    const parkStart = performance.now();
    try {
      // Kernels before 5.11 (no IORING_FEAT_EXT_ARG) cannot time a wait.
      const timed = (this.ring.features & IORING_FEAT_EXT_ARG) !== 0;
      const ready = await this.ring.waitAsync(1, timed ? this.#parkTimeoutMs : undefined);
      if (ready === 0) this.stats.parkTimeouts++;
    } finally {
      this.#parked = false;
      this.stats.parkedMs += performance.now() - parkStart;
    }
  }

  #armWakePoll(): void {
    const ud = Reactor.userData(REACTOR_HANDLER_ID, TAG_WAKE_POLL);
    if (this.ring.prepPollAdd(this.#wakeFd, POLL_EVENTS.POLLIN, ud, this.#wakePollMultishot) < 0) {
      return; // SQ full: the next park re-arms
    }
    this.#wakePollArmed = true;
  }

  #onReactorCqe(tag: number, res: number, flags: number): void {
    if (tag !== TAG_WAKE_POLL) return;
    if ((flags & IORING_CQE_F_MORE) === 0) this.#wakePollArmed = false;
    if (res >= 0) {
      this.stats.wakeEvents++;
      // Drain the counter so the next write is a new edge.
      sym.read(this.#wakeFd, this.#wakeSink, 8n);
    } else {
      this.stats.wakePollErrors++;
      // Kernels before 5.13 refuse multishot poll: fall back to one-shots.
      if (res === -EINVAL) this.#wakePollMultishot = false;
      // Any other error is not retried in a loop here: the next park re-arms.
      return;
    }
    // The poll ended (one-shot, or multishot stopped by the kernel): re-arm.
    if (!this.#wakePollArmed && !this.#closed) this.#armWakePoll();
  }
}

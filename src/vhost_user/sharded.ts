/**
 * A vhost-user-blk device whose queues are spread over several reactors.
 *
 * The socket and the session stay on the main thread; each queue is served
 * by the reactor it was placed on (src/vhost_user/vhost_rpc.ts): queues on
 * the main reactor by a local {@link VhostBlkBackend} (the primary, which
 * also answers what the device as a whole is: features, config space), the
 * others by a *shard*, a VhostBlkBackend in a data-path worker over that
 * worker's bdev replica (src/worker/worker_main.ts).
 *
 * Every message that sets device state (features, memory table and
 * hot-plug, inflight area, dirty log, config writes, reset) goes to the
 * primary first, then to every shard; a queue's start, update, drain and
 * stop go only to the reactor that owns it. Guest memory, the inflight area
 * and the dirty log are shared memory, so each shard maps them itself from
 * its own dup of the front-end's fd; a shard owns and closes every fd it is
 * given. Its queues' kicks and completions never touch the main thread.
 *
 * Calls to shards are posted in order and not awaited, except a queue's
 * drain before GET_VRING_BASE (its base comes from the shard) and close.
 * Only the primary's answer reaches the front-end: a shard's failure on a
 * message the primary accepted is logged by the shard (it cannot happen for
 * validation, which the primary did first with the same code).
 * @module
 */
import { close as closeFd, dupFd } from "../../ffi/libc.ts";
import type { DataPathWorker } from "../worker/workers.ts";
import type { ShardCall } from "../worker/protocol.ts";
import type { VhostBlkBackend } from "./blk_backend.ts";
import type { InflightArea, VhostUserBackend, VringConfig } from "./session.ts";
import type { InflightDescription, LogDescription, MemoryRegion } from "./messages.ts";

/** One worker's shard of a device: its name there and the queues it serves. */
interface Shard {
  worker: DataPathWorker;
  id: string;
  queues: number[];
}

let shardSeq = 0;

/** Options of {@link ShardedVhostBackend}. */
export interface ShardedOptions {
  /** Serves the queues on the main reactor and speaks for the device. */
  primary: VhostBlkBackend;
  /** For each queue, its reactor index (0: the main thread's). */
  queueReactors: readonly number[];
  /** Workers by reactor index. */
  workers: ReadonlyMap<number, DataPathWorker>;
  ctrlr: string;
  bdevName: string;
  readOnly: boolean;
  log: (msg: string) => void;
}

/** A device spread over reactors, as one {@link VhostUserBackend} to the session. */
export class ShardedVhostBackend implements VhostUserBackend {
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly numQueues: number;
  readonly maxQueueSize: number;
  readonly maxMemSlots?: number;
  readonly #o: ShardedOptions;
  readonly #primary: VhostBlkBackend;
  readonly #shards: Shard[] = [];
  /** The shard of each queue, or null when the main reactor serves it. */
  readonly #shardOf: (Shard | null)[];
  /** The base a shard's drainStop returned, for the stopQueue that follows. */
  readonly #bases = new Map<number, number>();

  constructor(o: ShardedOptions) {
    this.#o = o;
    this.#primary = o.primary;
    this.features = o.primary.features;
    this.protocolFeatures = o.primary.protocolFeatures;
    this.numQueues = o.primary.numQueues;
    this.maxQueueSize = o.primary.maxQueueSize;
    this.maxMemSlots = o.primary.maxMemSlots;
    this.#shardOf = o.queueReactors.map(() => null);
    for (const [reactor, worker] of o.workers) {
      const queues = o.queueReactors.flatMap((r, q) => r === reactor ? [q] : []);
      if (queues.length === 0) continue;
      const shard = { worker, id: `${o.ctrlr}#${++shardSeq}`, queues };
      this.#shards.push(shard);
      for (const q of queues) this.#shardOf[q] = shard;
      this.#post(shard, {
        m: "open",
        bdev: o.bdevName,
        numQueues: this.numQueues,
        readonly: o.readOnly,
        queues,
      });
    }
  }

  /** Posts a call; its failure is logged (the worker logs the detail too). */
  #post(shard: Shard, call: ShardCall): void {
    this.#call(shard, call).catch((e) =>
      this.#o.log(
        `vhost-blk ${this.#o.bdevName}: queue shard on reactor ${shard.worker.index}: ${call.m}: ${
          e instanceof Error ? e.message : e
        }`,
      )
    );
  }

  #call(shard: Shard, call: ShardCall): Promise<unknown> {
    return shard.worker.request({ op: "shard", shard: shard.id, call });
  }

  /** A device-wide message without fds: the primary first, then every shard. */
  #fanOut(primary: () => void, call: ShardCall): void {
    primary();
    for (const s of this.#shards) this.#post(s, call);
  }

  /**
   * A device-wide message that brings fds: each shard gets its own dups, made before the
   * primary takes (and may close) the originals; when the primary refuses, or a dup fails,
   * the dups made are closed and the error goes to the session.
   */
  #fanOutFds(
    fds: readonly number[],
    primary: () => void,
    call: (fds: number[]) => ShardCall,
  ): void {
    const copies: number[][] = [];
    try {
      for (const _ of this.#shards) copies.push(fds.map(dupFd));
      primary();
    } catch (e) {
      for (const c of copies) for (const fd of c) closeFd(fd);
      throw e;
    }
    this.#shards.forEach((s, i) => this.#post(s, call(copies[i] as number[])));
  }

  setFeatures(features: bigint): void {
    this.#fanOut(() => this.#primary.setFeatures(features), { m: "setFeatures", features });
  }

  setMemTable(regions: readonly MemoryRegion[], fds: number[]): void {
    this.#fanOutFds(fds, () => this.#primary.setMemTable(regions, fds), (copies) => ({
      m: "setMemTable",
      regions: [...regions],
      fds: copies,
    }));
  }

  addMemRegion(region: MemoryRegion, fd: number): void {
    this.#fanOutFds([fd], () => this.#primary.addMemRegion(region, fd), ([copy]) => ({
      m: "addMemRegion",
      region,
      fd: copy as number,
    }));
  }

  removeMemRegion(region: MemoryRegion): void {
    this.#fanOut(() => this.#primary.removeMemRegion(region), { m: "removeMemRegion", region });
  }

  /** The vring with the shard's own copies of its fds. */
  #vringFor(vring: Readonly<VringConfig>, withKick: boolean): VringConfig {
    const dup = (fd: number | null) => fd === null ? null : dupFd(fd);
    return {
      ...vring,
      addr: { ...vring.addr },
      kickFd: withKick ? dup(vring.kickFd) : null,
      callFd: dup(vring.callFd),
      errFd: dup(vring.errFd),
    };
  }

  startQueue(index: number, vring: Readonly<VringConfig>): void {
    const shard = this.#shardOf[index];
    if (shard === null || shard === undefined) {
      this.#primary.startQueue(index, vring);
      return;
    }
    this.#bases.delete(index);
    this.#post(shard, { m: "startQueue", index, vring: this.#vringFor(vring, true) });
  }

  updateQueue(index: number, vring: Readonly<VringConfig>): void {
    const shard = this.#shardOf[index];
    if (shard === null || shard === undefined) {
      this.#primary.updateQueue(index, vring);
      return;
    }
    // The shard keeps the kick fd it started with (its poll is armed on it).
    this.#post(shard, { m: "updateQueue", index, vring: this.#vringFor(vring, false) });
  }

  async drainQueue(index: number): Promise<void> {
    const shard = this.#shardOf[index];
    if (shard === null || shard === undefined) {
      await this.#primary.drainQueue(index);
      return;
    }
    try {
      this.#bases.set(index, await this.#call(shard, { m: "drainStop", index }) as number);
    } catch (e) {
      this.#o.log(
        `vhost-blk ${this.#o.bdevName}: queue ${index} on reactor ${shard.worker.index}: ` +
          `drain: ${e instanceof Error ? e.message : e}`,
      );
    }
  }

  /**
   * A shard's queue was already stopped by the drain before GET_VRING_BASE,
   * which gave its base; on the other paths (reset, the front-end gone) the
   * base is not used and the stop is posted.
   */
  stopQueue(index: number): number {
    const shard = this.#shardOf[index];
    if (shard === null || shard === undefined) return this.#primary.stopQueue(index);
    const base = this.#bases.get(index);
    this.#bases.delete(index);
    if (base !== undefined) return base;
    this.#post(shard, { m: "stopQueue", index });
    return 0;
  }

  getConfig(offset: number, size: number): Uint8Array {
    return this.#primary.getConfig(offset, size);
  }

  setConfig(offset: number, data: Uint8Array, flags: number): void {
    this.#fanOut(() => this.#primary.setConfig(offset, data), {
      m: "setConfig",
      offset,
      data,
      flags,
    });
  }

  reset(): void {
    this.#fanOut(() => this.#primary.reset(), { m: "reset" });
  }

  getInflightFd(numQueues: number, queueSize: number): InflightArea {
    const area = this.#primary.getInflightFd(numQueues, queueSize);
    const inflight = { mmapSize: area.mmapSize, mmapOffset: area.mmapOffset, numQueues, queueSize };
    // The session sends and closes area.fd: the shards map the area from their own dups.
    for (const s of this.#shards) {
      this.#post(s, { m: "setInflightFd", inflight, fd: dupFd(area.fd) });
    }
    return area;
  }

  setInflightFd(inflight: InflightDescription, fd: number): void {
    this.#fanOutFds([fd], () => this.#primary.setInflightFd(inflight, fd), ([copy]) => ({
      m: "setInflightFd",
      inflight,
      fd: copy as number,
    }));
  }

  setLogBase(log: LogDescription, fd: number): void {
    this.#fanOutFds([fd], () => this.#primary.setLogBase(log, fd), ([copy]) => ({
      m: "setLogBase",
      log,
      fd: copy as number,
    }));
  }

  setLogFd(fd: number): void {
    this.#fanOutFds([fd], () => this.#primary.setLogFd(fd), ([copy]) => ({
      m: "setLogFd",
      fd: copy as number,
    }));
  }

  /** Closes the primary and every shard; settles once all have let go of their bdev I/O. */
  async close(): Promise<void> {
    await Promise.all([
      this.#primary.close(),
      ...this.#shards.map((s) =>
        this.#call(s, { m: "close" }).catch((e) =>
          this.#o.log(
            `vhost-blk ${this.#o.bdevName}: queue shard on reactor ${s.worker.index}: close: ${
              e instanceof Error ? e.message : e
            }`,
          )
        )
      ),
    ]);
  }
}

/**
 * Data-path workers, the main thread's side. `serve --cpumask` names the
 * cores the appliance runs reactors on: the first is the main thread's
 * reactor (which also runs the RPC and admin planes and the NVMe/TCP
 * target), each further core gets a {@link DataPathWorker}, a Worker thread
 * pinned to that core with its own reactor (src/worker/worker_main.ts).
 *
 * Controllers are placed on a reactor by their own cpumask. A worker serves
 * a bdev through a replica over the same storage (src/bdev/replica.ts); the
 * main thread keeps a descriptor of the original open meanwhile, so the
 * storage cannot be deleted under the worker.
 * @module
 */
import { addIoStats, BdevError, type BdevRegistry } from "../bdev/mod.ts";
import { ioStatsFromWords, type ReplicaSpec, wipeReplicaSpec } from "../bdev/replica.ts";
import type { ReplicaStatsList, WorkerEnvelope, WorkerMessage, WorkerRequest } from "./protocol.ts";

/** Options of {@link DataPathWorker.start}. */
export interface DataPathWorkerOptions {
  /** Reactor index: 1.. (0 is the main thread's). */
  index: number;
  /** The core it runs on; pinned there when `pin`. */
  core: number;
  pin: boolean;
  /** Bytes of the worker's WASM guest window. */
  guestWindowBytes: number;
  /** The main thread's registry: replica counters are added to its bdevs. */
  registry: BdevRegistry;
  log: (msg: string) => void;
}

/** One data-path worker, as the main thread drives it. */
export class DataPathWorker {
  readonly index: number;
  readonly core: number;
  /** The worker's reactor counters, as of its last report (about once a second). */
  reactorStats: Record<string, number> = {};
  /** The worker reactor's running time, as of its last report. */
  runningMs = 0;
  /** False once the worker died or was shut down: requests are refused. */
  alive = true;
  readonly #worker: Worker;
  readonly #registry: BdevRegistry;
  readonly #log: (msg: string) => void;
  readonly #pending = new Map<number, PromiseWithResolvers<unknown>>();
  #nextId = 1;

  private constructor(o: DataPathWorkerOptions) {
    this.index = o.index;
    this.core = o.core;
    this.#registry = o.registry;
    this.#log = o.log;
    this.#worker = new Worker(new URL("./worker_main.ts", import.meta.url).href, {
      type: "module",
      name: `reactor ${o.index}`,
    });
    this.#worker.onmessage = (e: MessageEvent<WorkerMessage>) => this.#onMessage(e.data);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(`reactor ${this.index} (core ${this.core}) died: ${e.message}`);
    };
  }

  /** Starts a worker and waits until its reactor runs. */
  static async start(o: DataPathWorkerOptions): Promise<DataPathWorker> {
    const w = new DataPathWorker(o);
    try {
      await w.request({
        op: "init",
        index: o.index,
        core: o.pin ? o.core : null,
        guestWindowBytes: o.guestWindowBytes,
      });
    } catch (e) {
      w.#worker.terminate();
      throw e;
    }
    return w;
  }

  /** Sends a request; resolves with the worker's answer, rejects with its error. */
  request(req: WorkerRequest): Promise<unknown> {
    if (!this.alive) {
      return Promise.reject(new BdevError(`reactor ${this.index} is not running`, -5));
    }
    const id = this.#nextId++;
    const p = Promise.withResolvers<unknown>();
    this.#pending.set(id, p);
    const env: WorkerEnvelope = { id, req };
    this.#worker.postMessage(env);
    return p.promise;
  }

  /**
   * Opens a replica of a bdev in the worker. The key material in `spec` is
   * zeroed here once posted (the worker got its own copy).
   */
  async openReplica(spec: ReplicaSpec): Promise<void> {
    try {
      await this.request({
        op: "replica_open",
        spec,
        ioPoolSize: this.#registry.options.ioPoolSize,
      });
    } finally {
      wipeReplicaSpec(spec);
    }
  }

  /** Closes a replica; the counters of what went away are kept by the main bdevs. */
  async closeReplica(name: string): Promise<void> {
    const gone = await this.request({ op: "replica_close", name }) as ReplicaStatsList;
    for (const [bdevName, words] of gone) {
      if (!this.#registry.has(bdevName)) continue;
      const bdev = this.#registry.get(bdevName);
      addIoStats(bdev.closedStats, ioStatsFromWords(words));
      bdev.remoteStats.delete(this.index);
    }
  }

  /** Stops everything the worker serves, then the worker. */
  async shutdown(): Promise<void> {
    if (!this.alive) return;
    try {
      await this.request({ op: "shutdown" });
    } catch (e) {
      this.#log(`reactor ${this.index}: shutdown: ${e instanceof Error ? e.message : e}`);
    }
    this.alive = false;
    this.#worker.terminate();
  }

  #onMessage(m: WorkerMessage): void {
    switch (m.kind) {
      case "reply": {
        const p = this.#pending.get(m.id);
        if (p === undefined) return;
        this.#pending.delete(m.id);
        if (m.ok) p.resolve(m.value);
        else p.reject(m.code === null ? new Error(m.message) : new BdevError(m.message, m.code));
        return;
      }
      case "log":
        this.#log(m.msg);
        return;
      case "stats":
        this.reactorStats = m.reactor;
        this.runningMs = m.runningMs;
        for (const [name, words] of m.bdevs) {
          if (this.#registry.has(name)) {
            this.#registry.get(name).remoteStats.set(this.index, ioStatsFromWords(words));
          }
        }
        return;
    }
  }

  #fail(why: string): void {
    this.#log(why);
    this.alive = false;
    for (const p of this.#pending.values()) p.reject(new BdevError(why, -5));
    this.#pending.clear();
  }
}

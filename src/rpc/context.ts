/**
 * What RPC handlers act on: the appliance's engine objects. The admin plane
 * reaches the data path only through these.
 * @module
 */
import type { BdevRegistry } from "../bdev/mod.ts";
import type { Reactor } from "../reactor/mod.ts";
import type { DataPathWorker } from "../worker/workers.ts";

/** The engine as RPC handlers see it. */
export interface AppContext {
  readonly bdevs: BdevRegistry;
  /** The main thread's data-path reactor (reactor 0). */
  readonly reactor: Reactor;
  /** The core of each reactor: index 0 the main thread's, then each worker's. */
  readonly reactorCores: readonly number[];
  /** The data-path workers (reactors 1..), see src/worker/workers.ts. */
  readonly workers: readonly DataPathWorker[];
  /** When the appliance started (ms since the epoch). */
  readonly startedAtMs: number;
  /** Version string of this build. */
  readonly version: string;
  /** Operational messages (connections, protocol errors): the daemon prints them. */
  log(msg: string): void;
}

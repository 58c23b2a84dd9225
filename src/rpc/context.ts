/**
 * What RPC handlers act on: the appliance's engine objects. The admin plane
 * reaches the data path only through these.
 * @module
 */
import type { BdevRegistry } from "../bdev/mod.ts";
import type { Reactor } from "../reactor/mod.ts";

/** The engine as RPC handlers see it. */
export interface AppContext {
  readonly bdevs: BdevRegistry;
  /** The data-path thread (one reactor for now; a Worker per core later). */
  readonly reactor: Reactor;
  /** When the appliance started (ms since the epoch). */
  readonly startedAtMs: number;
  /** Version string of this build. */
  readonly version: string;
  /** Operational messages (connections, protocol errors): the daemon prints them. */
  log(msg: string): void;
}

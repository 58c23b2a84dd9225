/**
 * The interface that block device modules implement (SPDK keeps this apart
 * from the consumer API in bdev_module.h; so do we). Consumers never import
 * this file; modules import it and `bdev.ts`.
 * @module
 */
import type { BdevIo, BdevIoStatus, BdevIoType } from "./bdev_io.ts";
import type { ReplicaSpec } from "./replica.ts";

/**
 * The thread an I/O channel lives on: something that runs pollers. The
 * reactor implements it; a channel registers one poller to deliver
 * completions that a module produced while the consumer was still inside
 * `submit` (delivering them there would recurse without bound).
 */
export interface IoThread {
  /** Adds a poller; `name` is unique on the thread. */
  addPoller(name: string, fn: () => number): void;
  /** Removes the poller called `name`. */
  removePoller(name: string): unknown;
  /**
   * Makes the thread run its pollers soon even if it sleeps in the kernel:
   * work queued from outside its loop (an RPC, a deferred completion) would
   * otherwise wait for an unrelated event. Cheap when the thread is busy.
   */
  wake(): void;
}

let pollerSeq = 0;

/** A thread-unique poller name: `what` plus a sequence number. */
export function pollerName(what: string): string {
  return `${what}#${++pollerSeq}`;
}

/** Given to a module channel so it can hand finished I/Os back to the layer. */
export interface BdevCompleter {
  /** Ends `io` with `status` (and an errno for Failed). Call exactly once per I/O. */
  complete(io: BdevIo, status: BdevIoStatus, errno?: number): void;
}

/** A module's per-thread, per-descriptor state: rings, fds, context pools. */
export interface BdevModuleChannel {
  /** Called when the consumer closes its channel; nothing is in flight then. */
  destroy(): void;
}

/** One SPDK-style RPC call that rebuilds a bdev: what `save_config` emits. */
export interface RpcCall {
  method: string;
  params: Record<string, unknown>;
}

/** The function table a module fills in for each bdev (spdk_bdev_fn_table). */
export interface BdevFnTable<C extends BdevModuleChannel = BdevModuleChannel> {
  /**
   * Creates the channel state for one consumer channel. `poolSize` is the
   * most I/Os the layer will ever have in flight on it at once, and each
   * in-flight I/O carries a distinct `io.slot` in [0, poolSize): size
   * per-I/O context arrays by it and index them by slot.
   */
  getIoChannel(completer: BdevCompleter, thread: IoThread, poolSize: number): C;
  /**
   * Starts `io` (already validated: in range, vectors sized, type
   * supported). Finish it later, or at once, through the completer.
   */
  submitRequest(ch: C, io: BdevIo): void;
  /** Frees the device's resources after it left the registry. */
  destruct(): void | Promise<void>;
  /** Module-specific facts for `bdev_get_bdevs` "driver_specific". */
  dumpInfoJson?(): Record<string, unknown>;
  /** The RPC that recreates this bdev, or null when it is not saved (e.g. made by another module). */
  writeConfigJson?(): RpcCall | null;
  /**
   * What a data-path worker needs to open a replica of this bdev over the
   * same storage (src/bdev/replica.ts); absent or null when it cannot
   * (null: this one cannot, e.g. because its base cannot).
   */
  replicaSpec?(): ReplicaSpec | null;
}

/** What a module passes to register a bdev. */
export interface BdevInit {
  name: string;
  /** Name of the module, e.g. "malloc"; shown as product and in errors. */
  module: string;
  productName: string;
  blockSize: number;
  numBlocks: number;
  /** RFC 4122 string; generated when absent. */
  uuid?: string;
  /** The I/O types this bdev serves. */
  ioTypes: readonly BdevIoType[];
  /** Does the device have a volatile write cache (so flush matters)? */
  writeCache?: boolean;
  /** Buffers must be aligned to this many bytes (O_DIRECT); 1 when any will do. */
  requiredAlignment?: number;
  fnTable: BdevFnTable;
}

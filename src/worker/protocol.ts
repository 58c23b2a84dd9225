/**
 * Messages between the main thread and a data-path worker (src/worker).
 * Requests carry an id; every request gets exactly one reply with that id.
 * Workers also send log lines and, once a second while something changed,
 * their reactor's and replicas' counters.
 * @module
 */
import type { ReplicaSpec } from "../bdev/replica.ts";
import type { InflightDescription, LogDescription, MemoryRegion } from "../vhost_user/messages.ts";
import type { VringConfig } from "../vhost_user/session.ts";

/** What the main thread asks a worker to do. */
export type WorkerRequest =
  | {
    op: "init";
    /** Reactor index (1.. for workers): names its log lines and stats. */
    index: number;
    /** The CPU to pin the worker's thread to, or null to leave it to the scheduler. */
    core: number | null;
    /** Bytes of the WASM guest window (serve --guest-window-mib). */
    guestWindowBytes: number;
  }
  | {
    op: "replica_open";
    spec: ReplicaSpec;
    /** The main registry's per-channel pool size (bdev_set_options), for a fresh registry. */
    ioPoolSize: number;
  }
  | { op: "replica_close"; name: string }
  | {
    op: "vhost_create";
    ctrlr: string;
    socket: string;
    bdev: string;
    numQueues: number;
    readonly: boolean;
  }
  | { op: "vhost_delete"; ctrlr: string }
  | { op: "vhost_disconnect"; ctrlr: string }
  | { op: "vhost_connected"; ctrlr: string }
  /** A call on queue shard `shard` (made by its "open" call). */
  | { op: "shard"; shard: string; call: ShardCall }
  | { op: "shutdown" };

/** A request with its id, as posted. */
export interface WorkerEnvelope {
  id: number;
  req: WorkerRequest;
}

/** I/O counters of the replicas, each as the flat record of src/bdev/replica.ts. */
export type ReplicaStatsList = [name: string, words: Float64Array][];

/** What a worker posts back. */
export type WorkerMessage =
  | { kind: "reply"; id: number; ok: true; value: unknown }
  | { kind: "reply"; id: number; ok: false; message: string; code: number | null }
  | { kind: "log"; msg: string }
  | {
    kind: "stats";
    reactor: Record<string, number>;
    runningMs: number;
    bdevs: ReplicaStatsList;
  };

/**
 * One call on a queue shard: a vhost-user-blk backend in a worker that
 * serves some queues of a controller whose socket and session are on the
 * main thread (src/vhost_user/sharded.ts). Every fd in a call is the
 * shard's own (a dup), and the shard closes it.
 */
export type ShardCall =
  | { m: "open"; bdev: string; numQueues: number; readonly: boolean; queues: number[] }
  | { m: "setFeatures"; features: bigint }
  | { m: "setMemTable"; regions: MemoryRegion[]; fds: number[] }
  | { m: "addMemRegion"; region: MemoryRegion; fd: number }
  | { m: "removeMemRegion"; region: MemoryRegion }
  | { m: "startQueue"; index: number; vring: VringConfig }
  | { m: "updateQueue"; index: number; vring: VringConfig }
  | { m: "drainStop"; index: number }
  | { m: "stopQueue"; index: number }
  | { m: "setConfig"; offset: number; data: Uint8Array; flags: number }
  | { m: "reset" }
  | { m: "setInflightFd"; inflight: InflightDescription; fd: number }
  | { m: "setLogBase"; log: LogDescription; fd: number }
  | { m: "setLogFd"; fd: number }
  | { m: "close" };

/**
 * Messages between the main thread and a data-path worker (src/worker).
 * Requests carry an id; every request gets exactly one reply with that id.
 * Workers also send log lines and, once a second while something changed,
 * their reactor's and replicas' counters.
 * @module
 */
import type { ReplicaSpec } from "../bdev/replica.ts";

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
  | { op: "replica_open"; spec: ReplicaSpec }
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

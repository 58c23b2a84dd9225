/**
 * Bdev replicas: the same block device opened a second time in a
 * data-path worker (src/worker).
 *
 * A bdev object lives in one isolate: a Worker cannot call the main
 * thread's. But a worker is a thread of the same process, so it shares the
 * process's address space and file descriptors. A replica is a bdev in the
 * worker's own registry built over the *same storage*: a malloc bdev's
 * mapping, a file bdev's descriptors, a layered bdev over a replica of its
 * base with its key material copied. Writes through either are seen by the
 * other, as two channels of one bdev see each other's writes.
 *
 * The main thread keeps a descriptor of the original open for as long as a
 * worker uses a replica, so the storage (mapping, fds) cannot go away under
 * the worker; a replica never frees the storage it borrows.
 *
 * Modules that can be replicated implement {@link BdevFnTable.replicaSpec}.
 * NVMe (one queue pair, owned by the main thread) cannot: serve it from the
 * main reactor. An error bdev's replica shares its injection table.
 * @module
 */
import { type Bdev, BdevIoStats, type BdevRegistry, LATENCY_BUCKETS } from "./bdev.ts";
import { BdevInvalidError } from "./errors.ts";
import type { KeyStore } from "../crypto/keys.ts";
import type { FileCreateParams, FileTarget } from "../bdev_modules/file/file.ts";
import { createMallocReplica } from "../bdev_modules/malloc/malloc.ts";
import { createFileReplica } from "../bdev_modules/file/file.ts";
import { createCryptoReplica } from "../bdev_modules/crypto/crypto.ts";
import { createPassthruBdev } from "../bdev_modules/passthru/passthru.ts";
import { createErrorReplica } from "../bdev_modules/error/error.ts";

/** Geometry every replica repeats from its original. */
interface ReplicaCommon {
  name: string;
  uuid: string;
}

/** A malloc bdev's replica: the original's mapping, by address. */
export interface MallocReplicaSpec extends ReplicaCommon {
  module: "malloc";
  blockSize: number;
  numBlocks: number;
  /** Address of the original's mapping (process-wide). */
  address: bigint;
}

/** A file bdev's replica: the original's open descriptors. */
export interface FileReplicaSpec extends ReplicaCommon {
  module: "file";
  params: FileCreateParams;
  target: FileTarget;
  blockSize: number;
}

/** A crypto bdev's replica: over a replica of its base, with a copy of its key. */
export interface CryptoReplicaSpec extends ReplicaCommon {
  module: "crypto";
  base: ReplicaSpec;
  keyName: string;
  /** key1 || key2; zeroed on the sending side once posted, owned by the receiver. */
  material: Uint8Array;
  dataUnitSize: number;
  /** The engine the original's key runs on, so both sides compute alike. */
  engine: "wasm" | "native";
}

/** A passthru bdev's replica: over a replica of its base. */
export interface PassthruReplicaSpec extends ReplicaCommon {
  module: "passthru";
  base: ReplicaSpec;
}

/** An error bdev's replica: over a replica of its base, sharing its injection table. */
export interface ErrorReplicaSpec extends ReplicaCommon {
  module: "error";
  base: ReplicaSpec;
  /** The original's injection table (shared, not copied, by postMessage). */
  table: SharedArrayBuffer;
}

/** Everything a worker needs to open a replica; structured-clonable. */
export type ReplicaSpec =
  | MallocReplicaSpec
  | FileReplicaSpec
  | CryptoReplicaSpec
  | PassthruReplicaSpec
  | ErrorReplicaSpec;

/**
 * The spec of a replica of `bdev`.
 * @throws {BdevInvalidError} when its module (or a base's) cannot be replicated
 */
export function replicaSpecOf(bdev: Bdev): ReplicaSpec {
  const spec = bdev.fnTable.replicaSpec?.() ?? null;
  if (spec === null) {
    throw new BdevInvalidError(
      `bdev "${bdev.name}" (${bdev.module}, or a bdev under it) cannot be served from a data-path worker; ` +
        `serve it from the main reactor (the first core of serve --cpumask) instead`,
    );
  }
  return spec;
}

/** Zeroes the key material in a spec (after posting it: the clone went to the worker). */
export function wipeReplicaSpec(spec: ReplicaSpec): void {
  if (spec.module === "crypto") spec.material.fill(0);
  if (spec.module === "crypto" || spec.module === "passthru" || spec.module === "error") {
    wipeReplicaSpec(spec.base);
  }
}

/** Every bdev a spec builds, bases first. */
function chain(spec: ReplicaSpec): ReplicaSpec[] {
  return spec.module === "malloc" || spec.module === "file" ? [spec] : [...chain(spec.base), spec];
}

/**
 * The replicas of one worker, counted: a base shared by two replicated
 * stacks, or one bdev served by two controllers, is opened once.
 */
export class ReplicaSet {
  readonly #registry: BdevRegistry;
  readonly #keys: KeyStore;
  readonly #users = new Map<string, number>();
  readonly #bases = new Map<string, string>();
  /** The key each crypto replica uses: destroyed in this worker with its last user. */
  readonly #keyOf = new Map<string, string>();

  constructor(registry: BdevRegistry, keys: KeyStore) {
    this.#registry = registry;
    this.#keys = keys;
  }

  /** Opens the replica `spec` describes (and its bases). */
  async open(spec: ReplicaSpec): Promise<void> {
    const opened: string[] = [];
    try {
      for (const s of chain(spec)) {
        const n = this.#users.get(s.name);
        if (n !== undefined) {
          this.#users.set(s.name, n + 1);
          if (s.module === "crypto") s.material.fill(0);
        } else {
          await this.#create(s);
          this.#users.set(s.name, 1);
          if (s.module !== "malloc" && s.module !== "file") this.#bases.set(s.name, s.base.name);
          if (s.module === "crypto") this.#keyOf.set(s.name, s.keyName);
        }
        opened.push(s.name);
      }
    } catch (e) {
      wipeReplicaSpec(spec);
      for (const name of opened.reverse()) await this.#release(name);
      throw e;
    }
  }

  async #create(s: ReplicaSpec): Promise<void> {
    switch (s.module) {
      case "malloc":
        createMallocReplica(this.#registry, s);
        return;
      case "file":
        createFileReplica(this.#registry, s);
        return;
      case "crypto":
        await createCryptoReplica(this.#registry, this.#keys, s);
        return;
      case "error":
        createErrorReplica(this.#registry, s);
        return;
      case "passthru":
        createPassthruBdev(this.#registry, {
          baseBdevName: s.base.name,
          name: s.name,
          uuid: s.uuid,
        });
        return;
    }
  }

  /**
   * Closes the replica `name` opened by {@link open} (and its bases no one
   * else uses). Returns the I/O counters of every replica that went away,
   * so the main thread can keep them.
   */
  async close(name: string): Promise<Map<string, BdevIoStats>> {
    const gone = new Map<string, BdevIoStats>();
    for (let n: string | undefined = name; n !== undefined;) {
      const base: string | undefined = this.#bases.get(n);
      await this.#release(n, gone);
      n = base;
    }
    return gone;
  }

  async #release(name: string, gone?: Map<string, BdevIoStats>): Promise<void> {
    const n = this.#users.get(name);
    if (n === undefined) return;
    if (n > 1) {
      this.#users.set(name, n - 1);
      return;
    }
    this.#users.delete(name);
    this.#bases.delete(name);
    if (!this.#registry.has(name)) return;
    const stats = new BdevIoStats();
    this.#registry.get(name).addStatsTo(stats);
    await this.#registry.unregister(name);
    gone?.set(name, stats);
    const key = this.#keyOf.get(name);
    this.#keyOf.delete(name);
    if (key !== undefined && this.#keys.has(key) && this.#keys.unused(key)) this.#keys.destroy(key);
  }

  /** Closes every replica, however many users each has (shutdown). */
  async closeAll(): Promise<void> {
    for (let names = this.names(); names.length > 0; names = this.names()) {
      await this.close(names[names.length - 1] as string);
    }
  }

  /** Names of the replicas open now. */
  names(): string[] {
    return [...this.#users.keys()];
  }
}

/** Numbers in a flat stats record: the counters, the buckets, the latency sum and count. */
export const IO_STATS_WORDS = 9 + LATENCY_BUCKETS + 2;

/** Writes `s` into `out` at `at` (a flat record for a message to the main thread). */
export function ioStatsToWords(s: BdevIoStats, out: Float64Array, at = 0): void {
  out[at] = s.readOps;
  out[at + 1] = s.readBytes;
  out[at + 2] = s.writeOps;
  out[at + 3] = s.writeBytes;
  out[at + 4] = s.unmapOps;
  out[at + 5] = s.flushOps;
  out[at + 6] = s.writeZeroesOps;
  out[at + 7] = s.errors;
  out[at + 8] = s.queued;
  out.set(s.latencyBuckets, at + 9);
  out[at + 9 + LATENCY_BUCKETS] = s.latencySumMs;
  out[at + 10 + LATENCY_BUCKETS] = s.latencySamples;
}

/** Reads a flat record written by {@link ioStatsToWords}. */
export function ioStatsFromWords(w: Float64Array, at = 0): BdevIoStats {
  const s = new BdevIoStats();
  s.readOps = w[at] ?? 0;
  s.readBytes = w[at + 1] ?? 0;
  s.writeOps = w[at + 2] ?? 0;
  s.writeBytes = w[at + 3] ?? 0;
  s.unmapOps = w[at + 4] ?? 0;
  s.flushOps = w[at + 5] ?? 0;
  s.writeZeroesOps = w[at + 6] ?? 0;
  s.errors = w[at + 7] ?? 0;
  s.queued = w[at + 8] ?? 0;
  s.latencyBuckets.set(w.subarray(at + 9, at + 9 + LATENCY_BUCKETS));
  s.latencySumMs = w[at + 9 + LATENCY_BUCKETS] ?? 0;
  s.latencySamples = w[at + 10 + LATENCY_BUCKETS] ?? 0;
  return s;
}

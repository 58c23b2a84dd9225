/**
 * The error bdev: a layered bdev that fails, delays or corrupts chosen I/Os
 * (SPDK's vbdev_error, plus delays). For tests of everything above the bdev
 * layer: how a transport reports a failed write, what a guest sees when a
 * read is slow. It is named "EE_<base>" as in SPDK.
 * @module
 */
import {
  type BdevCompleter,
  BdevInvalidError,
  type BdevIo,
  BdevIoStatus,
  BdevIoType,
  bdevIoTypeName,
  type BdevRegistry,
  type IoThread,
  pollerName,
  type RpcCall,
} from "../../bdev/mod.ts";
import { Vbdev, VbdevChannel } from "../../bdev/vbdev.ts";
import type { ErrorReplicaSpec } from "../../bdev/replica.ts";

/** What an injected error does. */
export type ErrorType = "failure" | "delay" | "corrupt_data";
export const ERROR_TYPES: readonly ErrorType[] = ["failure", "delay", "corrupt_data"];

/** Parameters of bdev_error_inject_error. */
export interface InjectParams {
  /** "read", "write", "unmap", "flush", "write_zeroes", "all" or "clear". */
  ioType: string;
  errorType: ErrorType;
  /** How many of the next matching I/Os are hit. */
  num: number;
  /** For "delay": microseconds added to the completion. */
  delayUs?: number;
  /** For "corrupt_data" (reads): byte offset in the data and the value XORed there. */
  corruptOffset?: number;
  corruptValue?: number;
}

/** Injection kinds in the shared table; 0: none. */
const KIND: Record<ErrorType, number> = { failure: 1, delay: 2, corrupt_data: 3 };
const KIND_NAME: readonly (ErrorType | null)[] = [null, "failure", "delay", "corrupt_data"];
/** Entries of the table, indexed by BdevIoType (0 unused). */
const ENTRIES = 6;

/**
 * The armed injections, per I/O type, in shared memory: a replica of the
 * error bdev in a data-path worker (src/bdev/replica.ts) uses the same
 * table, so what `bdev_error_inject_error` arms on the main thread hits the
 * worker's I/O too, and each injection fires `num` times in all. The count
 * is taken with a compare-and-swap.
 */
export class InjectionTable {
  readonly sab: SharedArrayBuffer;
  /** Per type: kind, remaining. */
  readonly #w: Int32Array;
  /** Per type: delay (us), corrupt offset, corrupt value. */
  readonly #p: Float64Array;

  constructor(sab: SharedArrayBuffer = new SharedArrayBuffer(ENTRIES * 2 * 4 + ENTRIES * 3 * 8)) {
    this.sab = sab;
    this.#w = new Int32Array(sab, 0, ENTRIES * 2);
    this.#p = new Float64Array(sab, ENTRIES * 2 * 4, ENTRIES * 3);
  }

  /** The kind armed for `type` with hits left (0: none). */
  kind(type: number): number {
    return Atomics.load(this.#w, type * 2 + 1) > 0 ? Atomics.load(this.#w, type * 2) : 0;
  }

  /** Takes one hit of `type`'s injection; false when none is left. */
  take(type: number): boolean {
    const i = type * 2 + 1;
    for (;;) {
      const r = Atomics.load(this.#w, i);
      if (r <= 0) return false;
      if (Atomics.compareExchange(this.#w, i, r, r - 1) === r) return true;
    }
  }

  remaining(type: number): number {
    return Atomics.load(this.#w, type * 2 + 1);
  }

  delayUs(type: number): number {
    return this.#p[type * 3] as number;
  }

  corruptOffset(type: number): number {
    return this.#p[type * 3 + 1] as number;
  }

  corruptValue(type: number): number {
    return this.#p[type * 3 + 2] as number;
  }

  /** Arms `type`: parameters first, the count last (it makes the entry live). */
  set(type: number, kind: ErrorType, num: number, delayUs: number, off: number, value: number) {
    Atomics.store(this.#w, type * 2 + 1, 0);
    this.#p[type * 3] = delayUs;
    this.#p[type * 3 + 1] = off;
    this.#p[type * 3 + 2] = value;
    Atomics.store(this.#w, type * 2, KIND[kind]);
    Atomics.store(this.#w, type * 2 + 1, num);
  }

  clear(): void {
    for (let t = 0; t < ENTRIES; t++) Atomics.store(this.#w, t * 2 + 1, 0);
  }

  kindName(type: number): ErrorType | null {
    return KIND_NAME[this.kind(type)] ?? null;
  }
}

const EIO = 5;
const IO_TYPES = [
  BdevIoType.Read,
  BdevIoType.Write,
  BdevIoType.Unmap,
  BdevIoType.Flush,
  BdevIoType.WriteZeroes,
];

class ErrorChannel extends VbdevChannel {
  /** Completed children waiting out an injected delay (linked through `next`). */
  delayedHead: BdevIo | null = null;
  /** Deadline per slot, in performance.now() milliseconds. */
  readonly deadlineMs: Float64Array;
  readonly #poller: string;

  constructor(
    vbdev: ErrorBdev,
    completer: BdevCompleter,
    thread: IoThread,
    poolSize: number,
    onChild: (child: BdevIo) => void,
  ) {
    super(completer, thread, vbdev.baseDesc, poolSize, onChild);
    this.deadlineMs = new Float64Array(poolSize);
    this.#poller = pollerName(`error:${vbdev.name}`);
    thread.addPoller(this.#poller, () => vbdev.releaseDelayed(this));
  }

  override destroy(): void {
    this.thread.removePoller(this.#poller);
    super.destroy();
  }
}

class ErrorBdev extends Vbdev<ErrorChannel> {
  readonly #baseName: string;
  readonly injections: InjectionTable;
  uuid = "";

  constructor(registry: BdevRegistry, baseName: string, table = new InjectionTable()) {
    super(registry, "error", `EE_${baseName}`, baseName);
    this.#baseName = baseName;
    this.injections = table;
  }

  getIoChannel(completer: BdevCompleter, thread: IoThread, poolSize: number): ErrorChannel {
    return new ErrorChannel(this, completer, thread, poolSize, this.onChild);
  }

  override submitRequest(ch: ErrorChannel, io: BdevIo): void {
    const t = this.injections;
    if (t.kind(io.type) === KIND.failure && t.take(io.type)) {
      ch.completer.complete(io, BdevIoStatus.Failed, EIO);
      return;
    }
    this.forward(ch, io);
  }

  protected override childCompleted(ch: ErrorChannel, child: BdevIo): void {
    const parent = child.parent as BdevIo;
    const t = this.injections, type = parent.type;
    const kind = t.kind(type);
    if (kind !== 0 && child.status === BdevIoStatus.Success) {
      if (kind === KIND.delay && t.take(type)) {
        ch.deadlineMs[parent.slot] = performance.now() + t.delayUs(type) / 1000;
        child.next = ch.delayedHead;
        ch.delayedHead = child;
        return;
      }
      if (kind === KIND.corrupt_data && type === BdevIoType.Read && t.take(type)) {
        corrupt(parent, t.corruptOffset(type), t.corruptValue(type));
      }
    }
    this.finish(ch, child, child.status, child.errno);
  }

  /** The channel's poller: completes delayed I/Os whose time has come. */
  releaseDelayed(ch: ErrorChannel): number {
    if (ch.delayedHead === null) return 0;
    const now = performance.now();
    let work = 0;
    let prev: BdevIo | null = null;
    let c: BdevIo | null = ch.delayedHead;
    while (c !== null) {
      const next: BdevIo | null = c.next;
      const parent = c.parent as BdevIo;
      if ((ch.deadlineMs[parent.slot] as number) <= now) {
        if (prev === null) ch.delayedHead = next;
        else prev.next = next;
        c.next = null;
        this.finish(ch, c, c.status, c.errno);
        work++;
      } else {
        prev = c;
      }
      c = next;
    }
    return work;
  }

  inject(p: InjectParams): void {
    if (p.ioType === "clear") {
      this.injections.clear();
      return;
    }
    const types = p.ioType === "all"
      ? IO_TYPES
      : IO_TYPES.filter((t) => bdevIoTypeName[t] === p.ioType);
    if (types.length === 0) {
      throw new BdevInvalidError(
        `io_type must be one of read, write, unmap, flush, write_zeroes, all, clear; got "${p.ioType}"`,
      );
    }
    if (p.errorType === "corrupt_data" && p.ioType !== "read") {
      throw new BdevInvalidError('corrupt_data applies to reads only (io_type "read")');
    }
    for (const t of types) {
      this.injections.set(
        t,
        p.errorType,
        p.num,
        p.delayUs ?? 0,
        p.corruptOffset ?? 0,
        p.corruptValue ?? 0xff,
      );
    }
  }

  override dumpInfoJson(): Record<string, unknown> {
    const injected: Record<string, unknown> = {};
    for (const t of IO_TYPES) {
      const kind = this.injections.kindName(t);
      if (kind !== null) {
        injected[bdevIoTypeName[t]] = { error_type: kind, remaining: this.injections.remaining(t) };
      }
    }
    return { ...super.dumpInfoJson(), injected };
  }

  replicaSpec(): ErrorReplicaSpec | null {
    const base = this.baseDesc.bdev.fnTable.replicaSpec?.() ?? null;
    if (base === null) return null;
    return { module: "error", name: this.name, uuid: this.uuid, base, table: this.injections.sab };
  }

  writeConfigJson(): RpcCall {
    return { method: "bdev_error_create", params: { base_name: this.#baseName } };
  }
}

/** XORs `value` into byte `offset` of the I/O's data. */
function corrupt(io: BdevIo, offset: number, value: number): void {
  let off = offset;
  for (let i = 0; i < io.iovcnt; i++) {
    const iov = io.iovs[i] as Uint8Array;
    if (off < iov.byteLength) {
      iov[off] = (iov[off] as number) ^ (value & 0xff);
      return;
    }
    off -= iov.byteLength;
  }
}

const instances = new WeakMap<BdevRegistry, Map<string, ErrorBdev>>();

function errorBdevs(registry: BdevRegistry): Map<string, ErrorBdev> {
  let m = instances.get(registry);
  if (m === undefined) instances.set(registry, m = new Map());
  return m;
}

/** Creates "EE_<baseName>" on `baseName`; returns its name. */
export function createErrorBdev(
  registry: BdevRegistry,
  baseName: string,
  uuid?: string,
  table?: InjectionTable,
): string {
  const vbdev = new ErrorBdev(registry, baseName, table);
  const base = vbdev.baseDesc.bdev;
  try {
    const bdev = registry.register({
      name: vbdev.name,
      module: "error",
      productName: "Error Injection Disk",
      blockSize: base.blockSize,
      numBlocks: base.numBlocks,
      uuid,
      ioTypes: vbdev.ioTypes(),
      writeCache: base.writeCache,
      requiredAlignment: base.requiredAlignment,
      fnTable: vbdev,
    });
    vbdev.uuid = bdev.uuid;
  } catch (e) {
    vbdev.destruct();
    throw e;
  }
  errorBdevs(registry).set(vbdev.name, vbdev);
  return vbdev.name;
}

/** Arms error injection on the error bdev `name`. */
export function injectError(registry: BdevRegistry, name: string, p: InjectParams): void {
  const vbdev = errorBdevs(registry).get(name);
  if (vbdev === undefined) {
    registry.get(name); // a clear "no bdev" error when it does not exist at all
    throw new BdevInvalidError(`bdev "${name}" is not an error bdev`);
  }
  vbdev.inject(p);
}

/** Registers a replica of an error bdev sharing the original's injection table (src/bdev/replica.ts). */
export function createErrorReplica(registry: BdevRegistry, spec: ErrorReplicaSpec): void {
  createErrorBdev(registry, spec.base.name, spec.uuid, new InjectionTable(spec.table));
}

/** Deletes an error bdev. */
export async function deleteErrorBdev(registry: BdevRegistry, name: string): Promise<void> {
  if (!errorBdevs(registry).has(name)) {
    registry.get(name);
    throw new BdevInvalidError(`bdev "${name}" is not an error bdev`);
  }
  await registry.unregister(name);
  errorBdevs(registry).delete(name);
}

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

interface Injection {
  errorType: ErrorType;
  remaining: number;
  delayUs: number;
  corruptOffset: number;
  corruptValue: number;
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
  /** Indexed by BdevIoType. */
  readonly injections: (Injection | null)[] = [null, null, null, null, null, null];

  constructor(registry: BdevRegistry, baseName: string) {
    super(registry, "error", `EE_${baseName}`, baseName);
    this.#baseName = baseName;
  }

  getIoChannel(completer: BdevCompleter, thread: IoThread, poolSize: number): ErrorChannel {
    return new ErrorChannel(this, completer, thread, poolSize, this.onChild);
  }

  override submitRequest(ch: ErrorChannel, io: BdevIo): void {
    const inj = this.injections[io.type];
    if (inj && inj.remaining > 0 && inj.errorType === "failure") {
      inj.remaining--;
      ch.completer.complete(io, BdevIoStatus.Failed, EIO);
      return;
    }
    this.forward(ch, io);
  }

  protected override childCompleted(ch: ErrorChannel, child: BdevIo): void {
    const parent = child.parent as BdevIo;
    const inj = this.injections[parent.type];
    if (inj && inj.remaining > 0 && child.status === BdevIoStatus.Success) {
      if (inj.errorType === "delay") {
        inj.remaining--;
        ch.deadlineMs[parent.slot] = performance.now() + inj.delayUs / 1000;
        child.next = ch.delayedHead;
        ch.delayedHead = child;
        return;
      }
      if (inj.errorType === "corrupt_data" && parent.type === BdevIoType.Read) {
        inj.remaining--;
        corrupt(parent, inj.corruptOffset, inj.corruptValue);
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
      this.injections.fill(null);
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
      this.injections[t] = {
        errorType: p.errorType,
        remaining: p.num,
        delayUs: p.delayUs ?? 0,
        corruptOffset: p.corruptOffset ?? 0,
        corruptValue: p.corruptValue ?? 0xff,
      };
    }
  }

  override dumpInfoJson(): Record<string, unknown> {
    const injected: Record<string, unknown> = {};
    for (const t of IO_TYPES) {
      const inj = this.injections[t];
      if (inj && inj.remaining > 0) {
        injected[bdevIoTypeName[t]] = { error_type: inj.errorType, remaining: inj.remaining };
      }
    }
    return { ...super.dumpInfoJson(), injected };
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
export function createErrorBdev(registry: BdevRegistry, baseName: string, uuid?: string): string {
  const vbdev = new ErrorBdev(registry, baseName);
  const base = vbdev.baseDesc.bdev;
  try {
    registry.register({
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

/** Deletes an error bdev. */
export async function deleteErrorBdev(registry: BdevRegistry, name: string): Promise<void> {
  if (!errorBdevs(registry).has(name)) {
    registry.get(name);
    throw new BdevInvalidError(`bdev "${name}" is not an error bdev`);
  }
  await registry.unregister(name);
  errorBdevs(registry).delete(name);
}

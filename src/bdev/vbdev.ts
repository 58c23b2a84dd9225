/**
 * Shared machinery for layered ("virtual") bdevs built on a base bdev:
 * passthru, error injection, and later crypto and clones.
 *
 * A layered bdev claims its base, opens it, and per channel opens a base
 * channel plus one child I/O per pool slot. A parent I/O in slot k always
 * uses child k, so forwarding never waits for a context and never allocates.
 * @module
 */
import type { BdevChannel, BdevDesc, BdevRegistry } from "./bdev.ts";
import { BdevIo, type BdevIoStatus, type BdevIoType } from "./bdev_io.ts";
import type {
  BdevCompleter,
  BdevFnTable,
  BdevModuleChannel,
  IoThread,
  RpcCall,
} from "./bdev_module.ts";

/** Per-channel state of a layered bdev. */
export class VbdevChannel implements BdevModuleChannel {
  readonly completer: BdevCompleter;
  readonly thread: IoThread;
  readonly base: BdevChannel;
  /** Child I/O for each pool slot of the parent channel. */
  readonly children: BdevIo[];

  constructor(
    completer: BdevCompleter,
    thread: IoThread,
    baseDesc: BdevDesc,
    poolSize: number,
    onChildComplete: (child: BdevIo) => void,
  ) {
    this.completer = completer;
    this.thread = thread;
    this.base = baseDesc.getIoChannel(thread);
    this.children = [];
    for (let i = 0; i < poolSize; i++) this.children.push(new BdevIo(onChildComplete, this));
  }

  destroy(): void {
    this.base.close();
  }
}

/**
 * Base class of layered bdevs. Subclasses override the hooks to change
 * what goes down (`submitRequest`) or what comes back (`childCompleted`).
 */
export abstract class Vbdev<C extends VbdevChannel = VbdevChannel> implements BdevFnTable<C> {
  readonly name: string;
  readonly module: string;
  readonly baseDesc: BdevDesc;
  readonly #registry: BdevRegistry;

  /** Claims and opens `baseName` for the layered bdev `name`. */
  constructor(registry: BdevRegistry, module: string, name: string, baseName: string) {
    this.#registry = registry;
    this.module = module;
    this.name = name;
    const base = registry.get(baseName);
    registry.claim(base, module, name);
    try {
      this.baseDesc = registry.open(baseName, true);
    } catch (e) {
      registry.releaseClaim(base, name);
      throw e;
    }
  }

  /** The I/O types to offer: by default, all the base offers. */
  ioTypes(): BdevIoType[] {
    const all: BdevIoType[] = [1, 2, 3, 4, 5];
    return all.filter((t) => this.baseDesc.bdev.ioTypeSupported(t));
  }

  abstract getIoChannel(completer: BdevCompleter, thread: IoThread, poolSize: number): C;

  /** Makes a channel whose children report to {@link childCompleted}. */
  protected makeChannel(
    completer: BdevCompleter,
    thread: IoThread,
    poolSize: number,
  ): VbdevChannel {
    return new VbdevChannel(completer, thread, this.baseDesc, poolSize, this.onChild);
  }

  /** The completion callback of every child I/O; pass it to channel subclasses. */
  protected readonly onChild = (child: BdevIo): void => {
    this.childCompleted(child.ctx as C, child);
  };

  /** Default: forward the parent unchanged to the base through its child. */
  submitRequest(ch: C, io: BdevIo): void {
    this.forward(ch, io);
  }

  /** Sends `io` down as the child in its slot, sharing the parent's vectors. */
  protected forward(ch: C, io: BdevIo): void {
    const child = ch.children[io.slot] as BdevIo;
    child.parent = io;
    child.setIovs(io.iovs, io.iovcnt);
    child.type = io.type;
    child.offsetBlocks = io.offsetBlocks;
    child.numBlocks = io.numBlocks;
    ch.base.submit(child);
  }

  /** Default: the parent ends as its child ended. */
  protected childCompleted(ch: C, child: BdevIo): void {
    this.finish(ch, child, child.status, child.errno);
  }

  /** Completes the parent of `child`. */
  protected finish(ch: C, child: BdevIo, status: BdevIoStatus, errno: number): void {
    const parent = child.parent as BdevIo;
    child.parent = null;
    ch.completer.complete(parent, status, errno);
  }

  destruct(): void {
    this.baseDesc.close();
    this.#registry.releaseClaim(this.baseDesc.bdev, this.name);
  }

  dumpInfoJson(): Record<string, unknown> {
    return { base_bdev_name: this.baseDesc.bdev.name };
  }

  abstract writeConfigJson(): RpcCall | null;
}

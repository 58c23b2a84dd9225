/**
 * The worker side of a queue shard (src/vhost_user/sharded.ts): a
 * VhostBlkBackend on this worker's reactor and bdev replica that serves the
 * queues of a device placed here, driven by the calls the main thread's
 * session fans out. It owns every fd a call brings: the memory table's,
 * the inflight area's and the dirty log's go to the backend (which owns
 * them), a queue's kick, call and err fds stay here until the queue stops
 * or they are replaced.
 * @module
 */
import { sym } from "../../ffi/libc.ts";
import type { BdevRegistry } from "../bdev/mod.ts";
import type { Reactor } from "../reactor/mod.ts";
import { VhostBlkBackend } from "../vhost_user/blk_backend.ts";
import type { VringConfig } from "../vhost_user/session.ts";
import type { ShardCall } from "./protocol.ts";

/** The fds a started queue holds: kept until it stops. */
interface QueueFds {
  kick: number | null;
  call: number | null;
  err: number | null;
}

function closeIf(fd: number | null): void {
  if (fd !== null) sym.close(fd);
}

/** One shard: its backend, its queues' fds, and a chain so calls apply in order. */
export class ShardHost {
  readonly #backend: VhostBlkBackend;
  readonly #fds = new Map<number, QueueFds>();
  readonly #queues: Set<number>;
  #chain: Promise<unknown> = Promise.resolve();

  constructor(
    registry: BdevRegistry,
    reactor: Reactor,
    open: Extract<ShardCall, { m: "open" }>,
    log: (msg: string) => void,
    reactorIndex: number,
  ) {
    this.#queues = new Set(open.queues);
    this.#backend = new VhostBlkBackend({
      registry,
      reactor,
      bdevName: open.bdev,
      numQueues: open.numQueues,
      readOnly: open.readonly,
      // Its lines end with where it runs: the main thread's backend logs the same events.
      log: (msg) => log(`${msg} [queue(s) ${open.queues.join(",")} on reactor ${reactorIndex}]`),
    });
  }

  /** Applies `call` after every call before it (drains and close are asynchronous). */
  apply(call: ShardCall): Promise<unknown> {
    const next = this.#chain.then(() => this.#apply(call));
    this.#chain = next.catch(() => {});
    return next;
  }

  async #apply(c: ShardCall): Promise<unknown> {
    const b = this.#backend;
    switch (c.m) {
      case "open":
        return true;
      case "setFeatures":
        b.setFeatures(c.features);
        return true;
      case "setMemTable":
        b.setMemTable(c.regions, c.fds);
        return true;
      case "addMemRegion":
        b.addMemRegion(c.region, c.fd);
        return true;
      case "removeMemRegion":
        b.removeMemRegion(c.region);
        return true;
      case "startQueue":
        if (!this.#queues.has(c.index)) {
          this.#dropVring(c.vring);
          throw new Error(`queue ${c.index} is not served by this shard`);
        }
        this.#stop(c.index);
        this.#fds.set(c.index, { kick: c.vring.kickFd, call: c.vring.callFd, err: c.vring.errFd });
        b.startQueue(c.index, c.vring);
        return true;
      case "updateQueue": {
        const held = this.#fds.get(c.index);
        if (held === undefined) {
          this.#dropVring(c.vring);
          return false;
        }
        b.updateQueue(c.index, { ...c.vring, kickFd: held.kick });
        closeIf(held.call);
        closeIf(held.err);
        held.call = c.vring.callFd;
        held.err = c.vring.errFd;
        return true;
      }
      case "drainStop":
        await b.drainQueue(c.index);
        return this.#stop(c.index);
      case "stopQueue":
        return this.#stop(c.index);
      case "setConfig":
        b.setConfig(c.offset, c.data);
        return true;
      case "reset":
        for (const q of [...this.#fds.keys()]) this.#stop(q);
        b.reset();
        return true;
      case "setInflightFd":
        b.setInflightFd(c.inflight, c.fd);
        return true;
      case "setLogBase":
        b.setLogBase(c.log, c.fd);
        return true;
      case "setLogFd":
        b.setLogFd(c.fd);
        return true;
      case "close": {
        for (const q of [...this.#fds.keys()]) this.#stop(q);
        await b.close();
        return true;
      }
    }
  }

  /** Stops queue `index` if started here; returns its base; closes its fds. */
  #stop(index: number): number {
    const held = this.#fds.get(index);
    if (held === undefined) return 0;
    this.#fds.delete(index);
    const base = this.#backend.stopQueue(index);
    closeIf(held.kick);
    closeIf(held.call);
    closeIf(held.err);
    return base;
  }

  #dropVring(v: VringConfig): void {
    closeIf(v.kickFd);
    closeIf(v.callFd);
    closeIf(v.errFd);
  }
}

/**
 * A {@link PerfDevice} over one NVMe/TCP I/O queue of the host in
 * src/nvmf_tcp/host.ts: what `sluice perf -r 'trtype:TCP ...'` drives.
 *
 * The job's slots map onto the queue's command slots. When the job is
 * deeper than the queue (the target's MQES is smaller than `-q`), the
 * extra I/Os wait here in a FIFO and start as command slots free, as
 * spdk_nvme_perf's queued requests do; their latency counts the wait.
 * Everything is sized at construction: nothing is allocated per I/O.
 * @module
 */
import type { IoDone } from "../nvmf_tcp/host.ts";
import type { PerfDevice } from "./perf.ts";

/** What the device uses of an NvmeTcpQueue (tests give a fake). */
export interface PerfQueue {
  /** Command slots. */
  readonly depth: number;
  /** False once the connection has gone. */
  readonly open: boolean;
  submitIo(
    slot: number,
    write: boolean,
    nsid: number,
    slba: number,
    nlb: number,
    buf: Uint8Array,
  ): void;
  onIoDone: IoDone;
  onClose: (reason: string) => void;
}

/** Where a {@link NvmeTcpPerfDevice} works. */
export interface NvmeTcpPerfDeviceOptions {
  queue: PerfQueue;
  /** The reactor the queue runs on: I/Os outstanding count in its `ioInFlight`. */
  reactor: { ioInFlight: number };
  nsid: number;
  blockSize: number;
  /** Blocks of the namespace this device exposes, from `firstLba`. */
  numBlocks: number;
  /** First LBA of the slice (0: the whole namespace). */
  firstLba?: number;
  /** Slots the job will use (its depth); may exceed the queue's. */
  jobDepth: number;
}

/** One queue as a perf device. Set {@link onDone} (the job's) before the first submit. */
export class NvmeTcpPerfDevice implements PerfDevice {
  readonly blockSize: number;
  readonly numBlocks: number;
  /** The job's completion callback. */
  onDone: (slot: number, ok: boolean) => void = () => {};
  /** I/Os that ended with a non-zero NVMe status (or on a closed connection). */
  failedIos = 0;
  /** The first failing status seen, for the error message (0: none). */
  firstFailStatus = 0;
  /** Most I/Os that waited here at once for a command slot. */
  queuedMax = 0;
  readonly #q: PerfQueue;
  readonly #reactor: { ioInFlight: number };
  readonly #nsid: number;
  readonly #firstLba: number;
  /** Job slot of each command slot (-1: free). */
  readonly #jobOf: Int32Array;
  readonly #freeCmd: Int32Array;
  #freeTop: number;
  /** Per job slot: the I/O to start once a command slot frees. */
  readonly #write: Uint8Array;
  readonly #lba: Float64Array;
  readonly #nlb: Int32Array;
  readonly #buf: Uint8Array[];
  /** FIFO of waiting job slots (a ring of jobDepth entries). */
  readonly #wait: Int32Array;
  #waitHead = 0;
  #waitCount = 0;
  #closed = false;
  /** Called once when the connection goes away (the run should stop). */
  onLost: (reason: string) => void = () => {};

  constructor(o: NvmeTcpPerfDeviceOptions) {
    this.blockSize = o.blockSize;
    this.numBlocks = o.numBlocks;
    this.#q = o.queue;
    this.#reactor = o.reactor;
    this.#nsid = o.nsid;
    this.#firstLba = o.firstLba ?? 0;
    const cmdSlots = o.queue.depth;
    this.#jobOf = new Int32Array(cmdSlots).fill(-1);
    this.#freeCmd = new Int32Array(cmdSlots);
    for (let i = 0; i < cmdSlots; i++) this.#freeCmd[i] = cmdSlots - 1 - i;
    this.#freeTop = cmdSlots;
    this.#write = new Uint8Array(o.jobDepth);
    this.#lba = new Float64Array(o.jobDepth);
    this.#nlb = new Int32Array(o.jobDepth);
    this.#buf = new Array<Uint8Array>(o.jobDepth).fill(EMPTY);
    this.#wait = new Int32Array(o.jobDepth);
    o.queue.onIoDone = this.#ioDone;
    o.queue.onClose = (reason) => this.#lost(reason);
  }

  submit(slot: number, write: boolean, lba: number, numBlocks: number, buf: Uint8Array): void {
    this.#reactor.ioInFlight++;
    if (this.#closed || !this.#q.open) {
      // The connection is gone: end the I/O on the next turn (never inside submit, so a
      // job that resubmits from onDone cannot loop here).
      this.#failLater(slot);
      return;
    }
    if (this.#freeTop === 0) {
      this.#write[slot] = write ? 1 : 0;
      this.#lba[slot] = lba;
      this.#nlb[slot] = numBlocks;
      this.#buf[slot] = buf;
      this.#wait[(this.#waitHead + this.#waitCount) % this.#wait.length] = slot;
      if (++this.#waitCount > this.queuedMax) this.queuedMax = this.#waitCount;
      return;
    }
    const cmd = this.#freeCmd[--this.#freeTop] as number;
    this.#jobOf[cmd] = slot;
    this.#q.submitIo(cmd, write, this.#nsid, this.#firstLba + lba, numBlocks, buf);
  }

  readonly #ioDone = (cmd: number, status: number): void => {
    const slot = this.#jobOf[cmd] as number;
    if (slot < 0) return; // not one of ours (cannot happen: the queue runs nothing else)
    this.#jobOf[cmd] = -1;
    this.#freeCmd[this.#freeTop++] = cmd;
    // The host ends in-flight commands (status 0xffff) before it reports the close: start
    // nothing on a queue that is no longer open.
    if (this.#waitCount > 0 && this.#q.open) {
      // Start the oldest waiting I/O first: it has waited longest.
      const next = this.#wait[this.#waitHead] as number;
      this.#waitHead = (this.#waitHead + 1) % this.#wait.length;
      this.#waitCount--;
      const c = this.#freeCmd[--this.#freeTop] as number;
      this.#jobOf[c] = next;
      this.#q.submitIo(
        c,
        this.#write[next] === 1,
        this.#nsid,
        this.#firstLba + (this.#lba[next] as number),
        this.#nlb[next] as number,
        this.#buf[next] as Uint8Array,
      );
    }
    this.#reactor.ioInFlight--;
    if (status !== 0) {
      this.failedIos++;
      if (this.firstFailStatus === 0) this.firstFailStatus = status;
      this.onDone(slot, false);
      return;
    }
    this.onDone(slot, true);
  };

  /**
   * Ends `slot` with an error on a later turn. A method of its own on purpose: a closure
   * in submit capturing `slot` would make V8 allocate a context on every submit.
   */
  #failLater(slot: number): void {
    setTimeout(() => this.#fail(slot), 0);
  }

  #fail(slot: number): void {
    this.#reactor.ioInFlight--;
    this.failedIos++;
    if (this.firstFailStatus === 0) this.firstFailStatus = 0xffff;
    this.onDone(slot, false);
  }

  #lost(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    // I/Os still waiting here never reached the target: they fail too.
    while (this.#waitCount > 0) {
      const slot = this.#wait[this.#waitHead] as number;
      this.#waitHead = (this.#waitHead + 1) % this.#wait.length;
      this.#waitCount--;
      this.#failLater(slot);
    }
    this.onLost(reason);
  }
}

const EMPTY = new Uint8Array(0);

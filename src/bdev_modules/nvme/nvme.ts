/**
 * The nvme bdev module (SPDK's bdev_nvme, PCIe transport): attaches a
 * local NVMe controller through the user-space driver in src/nvme_vfio and
 * registers one bdev per active namespace, `<name>n<nsid>`.
 *
 * Data path: each bdev I/O takes a command slot of the controller's I/O
 * queue pair; its data is copied into (writes) or out of (reads) the slot's
 * DMA bounce buffer, because callers' buffers are not mapped in the IOMMU.
 * An I/O larger than a bounce buffer runs as consecutive commands in the
 * same slot. I/Os that find no free slot wait in a FIFO per channel.
 * Unmap is Write Zeroes with Deallocate where the controller has Write
 * Zeroes (bdev unmap must read back zeroes), else Dataset Management
 * deallocate when the namespace reports deallocated blocks reading as
 * zeroes, else writing zeroes.
 * @module
 */
import {
  type BdevCompleter,
  type BdevFnTable,
  BdevInvalidError,
  type BdevIo,
  BdevIoStatus,
  BdevIoType,
  type BdevModuleChannel,
  type BdevRegistry,
  type IoThread,
  pollerName,
  type RpcCall,
  validateBdevName,
} from "../../bdev/mod.ts";
import {
  NVME_MAX_ZERO_BLOCKS,
  NvmeController,
  type NvmeDriverOptions,
  NvmeIoOp,
  type NvmeNamespaceInfo,
  type NvmeSlotOwner,
} from "../../nvme_vfio/controller.ts";
import type { DmaSpace } from "../../nvme_vfio/dma.ts";
import { openPcieBackend } from "../../nvme_vfio/pcie.ts";
import type { NvmeMmio } from "../../nvme_vfio/mmio.ts";
import { Reactor } from "../../reactor/mod.ts";
import { IORING_CQE_F_MORE, POLL_EVENTS } from "../../../ffi/io_uring.ts";
import { sym } from "../../../ffi/libc.ts";

const EIO = 5;

/** What the driver runs on: registers, DMA mapping, and how to let go of both. */
export interface NvmeBackend {
  mmio: NvmeMmio;
  dma: DmaSpace;
  /** Facts for bdev_nvme_get_controllers (PCI address, IOMMU group...). */
  describe(): Record<string, unknown>;
  /** Turns on completion interrupts (MSI-X) into an eventfd; undefined when there are none. */
  enableInterrupts?(): number | undefined;
  /** Calls `onRequest` once if the device must be given back (removal); optional. */
  watchRemoval?(onRequest: () => void): void;
  close(): void | Promise<void>;
}

/** Opens a backend for a transport address (tests inject an in-memory controller). */
export type NvmeBackendOpener = (traddr: string) => NvmeBackend;

/** Parameters of bdev_nvme_attach_controller (SPDK names, PCIe transport). */
export interface NvmeAttachParams {
  /** Controller name; bdevs are `<name>n<nsid>`. */
  name: string;
  /** "pcie" (SPDK accepts any case). */
  trtype: string;
  /** PCI address, 0000:00:04.0. */
  traddr: string;
  /** Driver tuning. */
  options?: Omit<NvmeDriverOptions, "log">;
}

/** One attached controller. */
class NvmeCtrlr {
  readonly name: string;
  readonly traddr: string;
  readonly ctrl: NvmeController;
  readonly backend: NvmeBackend;
  readonly bdevNames: string[] = [];
  readonly params: NvmeAttachParams;
  thread: IoThread | null = null;
  #poller = "";
  #channels = 0;
  detaching = false;

  /** The completion interrupt eventfd when interrupts are on. */
  readonly irqFd: number | undefined;

  constructor(
    params: NvmeAttachParams,
    ctrl: NvmeController,
    backend: NvmeBackend,
    irqFd: number | undefined,
  ) {
    this.irqFd = irqFd;
    this.name = params.name;
    this.traddr = params.traddr;
    this.params = params;
    this.ctrl = ctrl;
    this.backend = backend;
  }

  /** A channel opens on `thread`: the controller's one I/O queue pair polls there. */
  bind(thread: IoThread): void {
    if (this.thread !== null && this.thread !== thread) {
      throw new Error(
        `nvme controller "${this.name}" has one I/O queue pair, already polled by another thread`,
      );
    }
    if (this.#channels++ === 0) {
      this.thread = thread;
      this.#poller = pollerName(`nvme ${this.name}`);
      thread.addPoller(this.#poller, () => this.ctrl.poll());
      const fd = this.irqFd;
      if (fd !== undefined && this.ctrl.interrupts && thread instanceof Reactor) {
        // Completion interrupts wake the reactor from its park through its ring.
        this.#irqReactor = thread;
        this.#irqHandler = thread.registerCqeHandler((_tag, res, flags) => {
          if (this.#irqReactor === null) return;
          if (res >= 0) sym.read(fd, this.#irqSink, 8n); // drain the counter: a new edge next time
          if ((flags & IORING_CQE_F_MORE) === 0) this.#armIrq(fd);
        });
        this.#armIrq(fd);
      }
    }
  }

  #irqReactor: Reactor | null = null;
  #irqHandler = 0;
  readonly #irqSink = new BigUint64Array(1);

  #armIrq(fd: number): void {
    const r = this.#irqReactor;
    if (r === null) return;
    r.ring.prepPollAdd(fd, POLL_EVENTS.POLLIN, Reactor.userData(this.#irqHandler, 1), true);
    r.wake();
  }

  unbind(): void {
    if (--this.#channels === 0 && this.thread !== null) {
      this.thread.removePoller(this.#poller);
      const r = this.#irqReactor;
      if (r !== null) {
        this.#irqReactor = null;
        r.ring.prepPollRemove(
          Reactor.userData(this.#irqHandler, 1),
          Reactor.userData(this.#irqHandler, 2),
        );
        r.flush();
        r.unregisterCqeHandler(this.#irqHandler);
      }
      this.thread = null;
    }
  }
}

/** Per consumer channel: the slots it holds and the I/Os waiting for one. */
class NvmeChannel implements BdevModuleChannel, NvmeSlotOwner {
  readonly #c: NvmeCtrlr;
  readonly #ctrl: NvmeController;
  readonly #ns: NvmeNamespaceInfo;
  readonly #bdev: NvmeBdev;
  readonly #completer: BdevCompleter;
  readonly #thread: IoThread & { ioInFlight?: number };
  /** Indexed by controller slot. */
  readonly #io: (BdevIo | null)[];
  readonly #op: Uint8Array;
  /** Bytes (Read/Write) or blocks (the others) done so far, and in the current command. */
  readonly #done: Float64Array;
  readonly #cur: Float64Array;
  readonly #head: HeadViews;
  #waitHead: BdevIo | null = null;
  #waitTail: BdevIo | null = null;
  #destroyed = false;

  constructor(bdev: NvmeBdev, completer: BdevCompleter, thread: IoThread) {
    this.#bdev = bdev;
    this.#c = bdev.c;
    this.#ctrl = bdev.c.ctrl;
    this.#ns = bdev.ns;
    this.#completer = completer;
    this.#thread = thread;
    const n = this.#ctrl.slots;
    this.#io = new Array(n).fill(null);
    this.#op = new Uint8Array(n);
    this.#done = new Float64Array(n);
    this.#cur = new Float64Array(n);
    this.#head = new HeadViews(n);
    this.#c.bind(thread);
  }

  submit(io: BdevIo): void {
    const st = this.#ctrl.state;
    if (st !== "enabled" && st !== "resetting") {
      this.#completer.complete(io, BdevIoStatus.Failed, EIO);
      return;
    }
    if (this.#waitHead === null) {
      const slot = this.#ctrl.allocSlot(this);
      if (slot >= 0) {
        this.#start(slot, io);
        return;
      }
    }
    io.next = null;
    if (this.#waitTail === null) this.#waitHead = io;
    else this.#waitTail.next = io;
    this.#waitTail = io;
    this.#ctrl.waitForSlot(this);
    this.#thread.wake();
  }

  #start(slot: number, io: BdevIo): void {
    let op: number;
    const b = this.#bdev;
    switch (io.type) {
      case BdevIoType.Read:
        op = NvmeIoOp.Read;
        break;
      case BdevIoType.Write:
        op = NvmeIoOp.Write;
        break;
      case BdevIoType.Flush:
        op = NvmeIoOp.Flush;
        break;
      case BdevIoType.WriteZeroes:
        op = b.writeZeroesOp;
        break;
      case BdevIoType.Unmap:
        op = b.unmapOp;
        break;
      default:
        this.#ctrl.freeSlot(slot);
        this.#completer.complete(io, BdevIoStatus.NotSupported);
        return;
    }
    this.#io[slot] = io;
    this.#op[slot] = op;
    this.#done[slot] = 0;
    if (this.#thread.ioInFlight !== undefined) this.#thread.ioInFlight++;
    this.#issue(slot, io);
    this.#thread.wake();
  }

  /** Submits the slot's next command; ends the I/O with EIO when the controller refuses. */
  #issue(slot: number, io: BdevIo): void {
    const ctrl = this.#ctrl;
    const op = this.#op[slot] as number;
    const bs = this.#ns.blockSize;
    const done = this.#done[slot] as number;
    let ok: boolean;
    if (op === NvmeIoOp.Read || op === NvmeIoOp.Write) {
      const total = io.numBlocks * bs;
      let len = total - done;
      if (len > ctrl.transferBytes) len = ctrl.transferBytes;
      this.#cur[slot] = len;
      if (op === NvmeIoOp.Write) gather(io, done, len, ctrl.bounce[slot] as Uint8Array);
      ok = ctrl.submitIo(slot, op, this.#ns.nsid, io.offsetBlocks + done / bs, len / bs, len);
    } else if (op === NvmeIoOp.Flush) {
      this.#cur[slot] = 0;
      ok = ctrl.submitIo(slot, op, this.#ns.nsid, 0, 0, 0);
    } else if (op === NvmeIoOp.ZeroByWrite) {
      let blocks = io.numBlocks - done;
      const max = ctrl.transferBytes / bs;
      if (blocks > max) blocks = max;
      this.#cur[slot] = blocks;
      (ctrl.bounce[slot] as Uint8Array).fill(0, 0, blocks * bs);
      ok = ctrl.submitIo(slot, op, this.#ns.nsid, io.offsetBlocks + done, blocks, blocks * bs);
    } else {
      let blocks = io.numBlocks - done;
      if (blocks > NVME_MAX_ZERO_BLOCKS) blocks = NVME_MAX_ZERO_BLOCKS;
      this.#cur[slot] = blocks;
      ok = ctrl.submitIo(slot, op, this.#ns.nsid, io.offsetBlocks + done, blocks, 0);
    }
    if (!ok) this.#end(slot, io, BdevIoStatus.Failed, EIO);
  }

  onSlotDone(slot: number, status: number, errno: number): void {
    const io = this.#io[slot];
    if (io === null || io === undefined) return;
    if (status !== 0) {
      this.#end(slot, io, BdevIoStatus.Failed, errno === 0 ? EIO : errno);
      return;
    }
    const op = this.#op[slot] as number;
    const cur = this.#cur[slot] as number;
    if (op === NvmeIoOp.Read) {
      scatter(
        io,
        this.#done[slot] as number,
        cur,
        this.#ctrl.bounce[slot] as Uint8Array,
        this.#head,
        slot,
      );
    }
    const done = (this.#done[slot] as number) + cur;
    this.#done[slot] = done;
    const total = op === NvmeIoOp.Read || op === NvmeIoOp.Write
      ? io.numBlocks * this.#ns.blockSize
      : op === NvmeIoOp.Flush
      ? 0
      : io.numBlocks;
    if (done < total) this.#issue(slot, io);
    else this.#end(slot, io, BdevIoStatus.Success, 0);
  }

  #end(slot: number, io: BdevIo, status: BdevIoStatus, errno: number): void {
    this.#io[slot] = null;
    this.#op[slot] = 0;
    this.#ctrl.freeSlot(slot);
    if (this.#thread.ioInFlight !== undefined) this.#thread.ioInFlight--;
    this.#completer.complete(io, status, errno);
  }

  /** A slot is free (or the controller changed state): start the oldest waiting I/O. */
  onSlotFree(): boolean {
    const io = this.#waitHead;
    if (io === null || this.#destroyed) return false;
    const st = this.#ctrl.state;
    if (st !== "enabled" && st !== "resetting") {
      // Failed or removed: every waiting I/O fails now.
      this.#waitHead = this.#waitTail = null;
      for (let w: BdevIo | null = io; w !== null;) {
        const next: BdevIo | null = w.next;
        w.next = null;
        this.#completer.complete(w, BdevIoStatus.Failed, EIO);
        w = next;
      }
      return false;
    }
    if (st === "resetting") {
      this.#ctrl.waitForSlot(this);
      return false;
    }
    const slot = this.#ctrl.allocSlot(this);
    if (slot < 0) {
      this.#ctrl.waitForSlot(this);
      return false;
    }
    this.#waitHead = io.next;
    if (this.#waitHead === null) this.#waitTail = null;
    io.next = null;
    this.#start(slot, io);
    if (this.#waitHead !== null) this.#ctrl.waitForSlot(this);
    return true;
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#ctrl.cancelWait(this);
    this.#c.unbind();
  }
}

/** Copies `len` bytes of the I/O's vectors from byte `from` into `dst`. */
function gather(io: BdevIo, from: number, len: number, dst: Uint8Array): void {
  let skip = from, at = 0;
  for (let i = 0; i < io.iovcnt && at < len; i++) {
    const v = io.iovs[i] as Uint8Array;
    if (skip >= v.byteLength) {
      skip -= v.byteLength;
      continue;
    }
    let n = v.byteLength - skip;
    if (n > len - at) n = len - at;
    dst.set(skip === 0 && n === v.byteLength ? v : v.subarray(skip, skip + n), at);
    at += n;
    skip = 0;
  }
}

/** Copies `len` bytes of `src` into the I/O's vectors from byte `from`. */
function scatter(
  io: BdevIo,
  from: number,
  len: number,
  src: Uint8Array,
  head: HeadViews,
  slot: number,
): void {
  let skip = from, at = 0;
  for (let i = 0; i < io.iovcnt && at < len; i++) {
    const v = io.iovs[i] as Uint8Array;
    if (skip >= v.byteLength) {
      skip -= v.byteLength;
      continue;
    }
    let n = v.byteLength - skip;
    if (n > len - at) n = len - at;
    v.set(at === 0 ? head.get(slot, src, n) : src.subarray(at, at + n), skip);
    at += n;
    skip = 0;
  }
}

/**
 * The first `n` bytes of each slot's bounce buffer as a view, kept while `n` repeats: a read
 * into one vector copies out of exactly such a view, and workloads repeat their sizes, so the
 * steady state makes no view (and allocates nothing) per I/O.
 */
class HeadViews {
  readonly #views: (Uint8Array | null)[];
  constructor(slots: number) {
    this.#views = new Array(slots).fill(null);
  }
  get(slot: number, src: Uint8Array, n: number): Uint8Array {
    const v = this.#views[slot];
    if (
      v !== null && v !== undefined && v.byteLength === n && v.byteOffset === src.byteOffset &&
      v.buffer === src.buffer
    ) return v;
    const made = src.subarray(0, n);
    this.#views[slot] = made;
    return made;
  }
}

/** One namespace as a bdev. */
class NvmeBdev implements BdevFnTable<NvmeChannel> {
  readonly c: NvmeCtrlr;
  readonly ns: NvmeNamespaceInfo;
  readonly writeZeroesOp: number;
  readonly unmapOp: number;

  constructor(c: NvmeCtrlr, ns: NvmeNamespaceInfo) {
    this.c = c;
    this.ns = ns;
    const ctrl = c.ctrl;
    this.writeZeroesOp = ctrl.supportsWriteZeroes ? NvmeIoOp.WriteZeroes : NvmeIoOp.ZeroByWrite;
    this.unmapOp = ctrl.supportsWriteZeroes
      ? NvmeIoOp.WriteZeroesDeallocate
      : ctrl.supportsDsm && ns.deallocReadsZeroes
      ? NvmeIoOp.Deallocate
      : NvmeIoOp.ZeroByWrite;
  }

  getIoChannel(completer: BdevCompleter, thread: IoThread): NvmeChannel {
    if (this.c.ctrl.state === "shutdown") {
      throw new Error(`nvme controller "${this.c.name}" is detached`);
    }
    return new NvmeChannel(this, completer, thread);
  }

  submitRequest(ch: NvmeChannel, io: BdevIo): void {
    ch.submit(io);
  }

  destruct(): void {}

  dumpInfoJson(): Record<string, unknown> {
    const ctrl = this.c.ctrl;
    const opName = (op: number) =>
      op === NvmeIoOp.WriteZeroes
        ? "write_zeroes"
        : op === NvmeIoOp.WriteZeroesDeallocate
        ? "write_zeroes_deallocate"
        : op === NvmeIoOp.Deallocate
        ? "dataset_management_deallocate"
        : "write_of_zeroes";
    return {
      nvme: [{
        pci_address: this.c.traddr,
        trid: { trtype: "PCIe", traddr: this.c.traddr },
        ctrlr_data: {
          cntlid: ctrl.info.cntlid,
          vendor_id: `0x${ctrl.info.vid.toString(16).padStart(4, "0")}`,
          model_number: ctrl.info.modelNumber,
          serial_number: ctrl.info.serialNumber,
          firmware_revision: ctrl.info.firmwareRevision,
          subnqn: ctrl.info.subnqn,
        },
        vs: { nvme_version: ctrl.info.version },
        ns_data: { id: this.ns.nsid, ...(this.ns.nguid ? { nguid: this.ns.nguid } : {}) },
      }],
      write_zeroes_as: opName(this.writeZeroesOp),
      unmap_as: opName(this.unmapOp),
      bounce_bytes_per_command: ctrl.transferBytes,
    };
  }

  writeConfigJson(): RpcCall | null {
    // The controller's attach recreates every namespace bdev: emit it once, with the first.
    if (this.c.bdevNames[0] !== `${this.c.name}n${this.ns.nsid}`) return null;
    const o = this.c.params.options ?? {};
    return {
      method: "bdev_nvme_attach_controller",
      params: {
        name: this.c.name,
        trtype: "PCIe",
        traddr: this.c.traddr,
        io_queue_depth: o.ioQueueDepth,
        max_transfer_bytes: o.maxTransferBytes,
        timeout_us: o.ioTimeoutMs === undefined ? undefined : Math.round(o.ioTimeoutMs * 1000),
        timeout_admin_us: o.adminTimeoutMs === undefined
          ? undefined
          : Math.round(o.adminTimeoutMs * 1000),
        use_sgl: o.useSgl,
        interrupts: o.interrupts,
      },
    };
  }
}

const controllers = new WeakMap<BdevRegistry, Map<string, NvmeCtrlr>>();

function ctrlrsOf(registry: BdevRegistry): Map<string, NvmeCtrlr> {
  let m = controllers.get(registry);
  if (m === undefined) {
    m = new Map();
    controllers.set(registry, m);
  }
  return m;
}

/**
 * Attaches a controller and registers a bdev per active namespace; returns
 * the bdev names. `open` makes the backend (default: VFIO on a PCI function).
 * @throws {BdevInvalidError} for bad parameters or a name in use
 * @throws {VfioError | NvmeDriverError} when the device cannot be opened or brought up
 */
export async function attachNvmeController(
  registry: BdevRegistry,
  params: NvmeAttachParams,
  log: (msg: string) => void = () => {},
  open: NvmeBackendOpener = openPcieBackend,
): Promise<string[]> {
  validateBdevName(params.name);
  if (params.trtype.toLowerCase() !== "pcie") {
    throw new BdevInvalidError(
      `trtype "${params.trtype}" is not supported by bdev_nvme here: use PCIe (NVMe/TCP hosts use the kernel initiator)`,
    );
  }
  const map = ctrlrsOf(registry);
  if (map.has(params.name)) {
    throw new BdevInvalidError(`nvme controller "${params.name}" already exists`);
  }
  for (const c of map.values()) {
    if (c.traddr === params.traddr) {
      throw new BdevInvalidError(
        `PCI device ${params.traddr} is already attached as controller "${c.name}"`,
      );
    }
  }
  const backend = open(params.traddr);
  let ctrl: NvmeController;
  let irqFd: number | undefined;
  try {
    // Completion interrupts (MSI-X through an eventfd) only when asked for and available:
    // polling is the default (see docs/nvme.md for what interrupts cost in the lab).
    irqFd = params.options?.interrupts === true ? backend.enableInterrupts?.() : undefined;
    if (params.options?.interrupts === true && irqFd === undefined) {
      log(`${params.name}: no MSI-X interrupt for ${params.traddr}: polling only`);
    }
    ctrl = await NvmeController.attach(params.name, backend.mmio, backend.dma, {
      ...params.options,
      interrupts: irqFd !== undefined,
      log,
    });
  } catch (e) {
    await backend.close();
    throw e;
  }
  const c = new NvmeCtrlr(params, ctrl, backend, irqFd);
  map.set(params.name, c);
  backend.watchRemoval?.(() => {
    onRemovalRequest(registry, c, log).catch((e) =>
      log(`${c.name}: releasing the removed device: ${(e as Error).message}`)
    );
  });
  try {
    for (const ns of ctrl.namespaces) {
      const fnTable = new NvmeBdev(c, ns);
      const name = `${params.name}n${ns.nsid}`;
      c.bdevNames.push(name);
      registry.register({
        name,
        module: "nvme",
        productName: "NVMe disk",
        blockSize: ns.blockSize,
        numBlocks: ns.numBlocks,
        ioTypes: [
          BdevIoType.Read,
          BdevIoType.Write,
          BdevIoType.Flush,
          BdevIoType.WriteZeroes,
          BdevIoType.Unmap,
        ],
        writeCache: (ctrl.info.vwc & 1) !== 0,
        fnTable,
      });
    }
  } catch (e) {
    await detachNvmeController(registry, params.name).catch(() => {});
    throw e;
  }
  return [...c.bdevNames];
}

/**
 * Unregisters the controller's bdevs, shuts the controller down (CC.SHN)
 * and releases the device.
 * @throws {BdevInvalidError} when there is no such controller
 */
export async function detachNvmeController(registry: BdevRegistry, name: string): Promise<void> {
  const map = ctrlrsOf(registry);
  const c = map.get(name);
  if (c === undefined) throw new BdevInvalidError(`no nvme controller named "${name}"`);
  if (c.detaching) throw new BdevInvalidError(`nvme controller "${name}" is being detached`);
  c.detaching = true;
  try {
    for (const b of c.bdevNames) {
      if (registry.has(b)) await registry.unregister(b);
    }
  } catch (e) {
    c.detaching = false;
    throw e;
  }
  map.delete(name);
  try {
    await c.ctrl.detach();
  } finally {
    await c.backend.close();
  }
}

/**
 * The kernel asks for the device back (it is being removed): fail its I/O, delete the bdevs
 * nobody has open, release the device so the removal can finish. The controller stays listed
 * as `removed` until bdev_nvme_detach_controller (after its users closed the bdevs).
 */
async function onRemovalRequest(
  registry: BdevRegistry,
  c: NvmeCtrlr,
  log: (msg: string) => void,
): Promise<void> {
  if (c.detaching) return;
  log(`${c.name}: the kernel asks for ${c.traddr} back (device removal): failing its I/O`);
  c.ctrl.markRemoved("device removed (the kernel asked for it back)");
  for (const b of c.bdevNames) {
    try {
      if (registry.has(b)) await registry.unregister(b);
    } catch {
      // Still open: its I/O fails with EIO until its user closes it.
    }
  }
  await c.ctrl.detach();
  await c.backend.close();
  log(`${c.name}: ${c.traddr} released`);
}

/** Detaches every controller (at exit: each gets its shutdown notification). */
export async function detachAllNvmeControllers(registry: BdevRegistry): Promise<void> {
  for (const name of [...ctrlrsOf(registry).keys()]) {
    try {
      await detachNvmeController(registry, name);
    } catch {
      // A bdev still open by a closing user: the process exit releases the device.
    }
  }
}

/** bdev_nvme_get_controllers: SPDK's shape plus the driver's facts. */
export function getNvmeControllers(
  registry: BdevRegistry,
  name?: string,
): Record<string, unknown>[] {
  const map = ctrlrsOf(registry);
  if (name !== undefined && !map.has(name)) {
    throw new BdevInvalidError(`no nvme controller named "${name}"`);
  }
  const out: Record<string, unknown>[] = [];
  for (const c of map.values()) {
    if (name !== undefined && c.name !== name) continue;
    const d = c.ctrl.describe();
    out.push({
      name: c.name,
      ctrlrs: [{
        state: d.state,
        trid: { trtype: "PCIe", traddr: c.traddr },
        cntlid: c.ctrl.info.cntlid,
        bdevs: [...c.bdevNames],
        backend: c.backend.describe(),
        driver: d,
      }],
    });
  }
  return out;
}

/** The controller object behind `name` (tests, fault injection). */
export function nvmeControllerOf(registry: BdevRegistry, name: string): NvmeController {
  const c = ctrlrsOf(registry).get(name);
  if (c === undefined) throw new BdevInvalidError(`no nvme controller named "${name}"`);
  return c.ctrl;
}

/**
 * The I/O request object shared by consumers, the bdev layer and modules.
 *
 * A `BdevIo` is owned by its consumer and allocated once (per queue slot of
 * an NVMe/TCP queue, per virtqueue entry, per perf job), then reused for
 * every I/O: the data path allocates nothing per I/O. While an I/O is in
 * flight the bdev layer and the module own it; it comes back through
 * `onComplete` exactly once.
 * @module
 */

/** What an I/O does; names follow SPDK's spdk_bdev_io_type. */
export const BdevIoType = {
  Read: 1,
  Write: 2,
  Unmap: 3,
  Flush: 4,
  WriteZeroes: 5,
} as const;
/** A value of {@link BdevIoType}. */
export type BdevIoType = typeof BdevIoType[keyof typeof BdevIoType];

/** Lower-case names, as in `bdev_get_bdevs` "supported_io_types". */
export const bdevIoTypeName: Readonly<Record<BdevIoType, string>> = {
  [BdevIoType.Read]: "read",
  [BdevIoType.Write]: "write",
  [BdevIoType.Unmap]: "unmap",
  [BdevIoType.Flush]: "flush",
  [BdevIoType.WriteZeroes]: "write_zeroes",
};

/** How an I/O ended. Zero is success; errors are negative. */
export const BdevIoStatus = {
  Pending: 1,
  Success: 0,
  /** The device failed the I/O; `io.errno` says how when known. */
  Failed: -1,
  /** offset/length outside the device. */
  OutOfRange: -2,
  /** Malformed request: buffer sizes do not match the block count, too many vectors. */
  InvalidParam: -3,
  /** The bdev does not support this I/O type. */
  NotSupported: -4,
  /** A write-class I/O on a descriptor opened read-only. */
  ReadOnly: -5,
  /** The I/O was aborted (channel closed, device removed). */
  Aborted: -6,
} as const;
/** A value of {@link BdevIoStatus}. */
export type BdevIoStatus = typeof BdevIoStatus[keyof typeof BdevIoStatus];

const statusText: Readonly<Record<number, string>> = {
  [BdevIoStatus.Pending]: "pending",
  [BdevIoStatus.Success]: "success",
  [BdevIoStatus.Failed]: "I/O failed",
  [BdevIoStatus.OutOfRange]: "offset or length beyond the end of the device",
  [BdevIoStatus.InvalidParam]: "invalid request",
  [BdevIoStatus.NotSupported]: "I/O type not supported by this device",
  [BdevIoStatus.ReadOnly]: "device opened read-only",
  [BdevIoStatus.Aborted]: "I/O aborted",
};

/** Human text for a status; control path only (builds a string). */
export function bdevIoStatusText(status: number): string {
  return statusText[status] ?? `status ${status}`;
}

/** The most vectors one I/O may carry (virtio-blk seg_max and NVMe SGLs fit). */
export const BDEV_IO_MAX_IOVS = 256;

const NO_BUFFER = new Uint8Array(0);

/** One block I/O. Allocate once, reuse for every request. */
export class BdevIo {
  type: BdevIoType = BdevIoType.Read;
  offsetBlocks = 0;
  numBlocks = 0;
  /** Data vectors; only the first `iovcnt` count. Lengths must sum to numBlocks * blockSize. */
  iovs: Uint8Array[];
  iovcnt = 0;
  status: BdevIoStatus = BdevIoStatus.Success;
  /** For `Failed`: the positive errno from the device when known, else 0. */
  errno = 0;
  /** Called once when the I/O ends; set once by the consumer. */
  onComplete: (io: BdevIo) => void;
  /** The consumer's own context (a queue slot, a request); never touched by the layer. */
  ctx: unknown = null;

  // Owned by the bdev layer while in flight.
  /** Intrusive link for the layer's and modules' queues (no allocation to queue). */
  next: BdevIo | null = null;
  /** The per-channel pool slot this I/O holds while in flight; -1 when none. */
  slot = -1;
  /** True from submit to completion; a second submit of a busy I/O is a bug. */
  inFlight = false;
  /** Layered modules: the parent I/O a child I/O serves. */
  parent: BdevIo | null = null;

  /** A one-element vector list reused by the single-buffer helpers. */
  readonly ownIovs: Uint8Array[] = [NO_BUFFER];

  constructor(onComplete: (io: BdevIo) => void = noop, ctx: unknown = null) {
    this.onComplete = onComplete;
    this.ctx = ctx;
    this.iovs = this.ownIovs;
  }

  /** Points the I/O at one buffer without allocating. */
  setBuffer(buf: Uint8Array): void {
    this.ownIovs[0] = buf;
    this.iovs = this.ownIovs;
    this.iovcnt = 1;
  }

  /** Points the I/O at a caller-owned vector list. */
  setIovs(iovs: Uint8Array[], iovcnt: number): void {
    this.iovs = iovs;
    this.iovcnt = iovcnt;
  }

  /** Total bytes in the first `iovcnt` vectors. */
  iovBytes(): number {
    let n = 0;
    for (let i = 0; i < this.iovcnt; i++) n += (this.iovs[i] as Uint8Array).byteLength;
    return n;
  }
}

function noop(): void {}

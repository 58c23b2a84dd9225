/**
 * The contract between the transport-independent NVMe-oF target core
 * (subsystems, controllers, command execution) and the TCP transport
 * (connections, PDUs, data movement), as SPDK splits lib/nvmf/ctrlr.c from
 * lib/nvmf/tcp.c.
 *
 * Flow of one command:
 *  1. The transport takes a free `NvmfRequest` of the queue pair, copies the
 *     64-byte SQE into `req.sqe`, and works out the data length and
 *     direction from the SQE (`nvmeDataDirection`, SGL length).
 *  2. It points `req.iovs/iovcnt/length` at data buffers from its pool;
 *     for host-to-controller data it fills them first (in-capsule data or
 *     R2T + H2CData).
 *  3. It calls `target.execute(req)`. The core validates and runs the
 *     command (fabrics, admin, or I/O through the bdev layer using
 *     `req.bdevIo`), fills `req.cqe` (CID, SQ ID/head, status, DW0/1) and
 *     calls `req.qpair.complete(req)` exactly once, possibly inside execute.
 *  4. For controller-to-host data the transport sends `req.length` bytes
 *     from the iovs (C2HData), then the response capsule, and frees the
 *     request.
 * @module
 */
import { BdevIo } from "../bdev/bdev_io.ts";

/** Data direction of a command (NVMe opcode bits 1:0; fabrics: FCTYPE bits 1:0). */
export const NvmeDataDir = {
  None: 0,
  HostToController: 1,
  ControllerToHost: 2,
  Bidirectional: 3,
} as const;
/** A value of {@link NvmeDataDir}. */
export type NvmeDataDir = typeof NvmeDataDir[keyof typeof NvmeDataDir];

/** What the core needs from a queue pair (one TCP connection). */
export interface NvmfQpair {
  /** Queue ID: 0 for the admin queue; set by the core on Connect. */
  qid: number;
  /** Queue size from Connect (SQSIZE + 1); set by the core. */
  sqSize: number;
  /** The controller this queue belongs to, once connected (opaque to the transport). */
  ctrlr: unknown;
  /** Host address and port, for logs and the discovery log's view of who asks. */
  readonly peer: string;
  /** The address and port the host connected to (for discovery and listener checks). */
  readonly local: { traddr: string; trsvcid: string };
  /** Called once per request when its CQE is ready. */
  complete(req: NvmfRequest): void;
  /** Tears the connection down (keep-alive timeout, controller reset, fatal error). */
  disconnect(reason: string): void;
}

/**
 * One command slot of a queue pair, allocated when the queue is created and
 * reused: no allocation per command.
 */
export class NvmfRequest {
  /** The submission queue entry, copied from the capsule. */
  readonly sqe: Uint8Array = new Uint8Array(64);
  readonly sqeView: DataView = new DataView(this.sqe.buffer);
  /** The completion queue entry the core fills. */
  readonly cqe: Uint8Array = new Uint8Array(16);
  readonly cqeView: DataView = new DataView(this.cqe.buffer);
  /** Data buffers of this command; the first `iovcnt` are valid. */
  iovs: Uint8Array[] = [];
  iovcnt = 0;
  /** Bytes of data the command transfers (from the SGL). */
  length = 0;
  dir: NvmeDataDir = NvmeDataDir.None;
  /** The bdev request used for I/O commands (its onComplete is set by the core once). */
  readonly bdevIo: BdevIo = new BdevIo();
  /** Transport-private: slot index, state. */
  index = 0;
  state = 0;

  constructor(readonly qpair: NvmfQpair, index: number) {
    this.index = index;
    this.bdevIo.ctx = this;
  }

  /** Command Identifier (SQE bytes 2-3). */
  get cid(): number {
    return this.sqeView.getUint16(2, true);
  }

  /** Opcode (SQE byte 0). */
  get opcode(): number {
    return this.sqe[0] as number;
  }

  /** Clears the CQE and stamps the CID: the starting point of every completion. */
  resetCqe(): void {
    this.cqe.fill(0);
    this.cqeView.setUint16(12, this.cid, true);
  }
}

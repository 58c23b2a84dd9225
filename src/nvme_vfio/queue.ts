/**
 * One submission/completion queue pair in host memory (NVMe Base 2.0,
 * "Queue Mechanism"): the host writes SQEs at the SQ tail and rings the SQ
 * tail doorbell; the controller posts CQEs with a Phase Tag that flips on
 * each pass over the CQ, so the host sees a new entry when its phase equals
 * the phase it expects, and tells the controller what it consumed through
 * the CQ head doorbell. The SQ head the controller reports in each CQE
 * (SQHD) says which SQ slots are free again.
 *
 * Doorbells sit at 1000h + (2y + 0|1) * (4 << CAP.DSTRD) for queue y.
 * Allocation-free after construction: each entry has a DataView made once.
 * @module
 */
import { NVME_CQE_BYTES, NVME_SQE_BYTES } from "../nvme/mod.ts";
import type { DmaBuffer } from "./dma.ts";
import type { NvmeMmio } from "./mmio.ts";

/** Offset of the SQ tail (`cq` false) or CQ head (`cq` true) doorbell of queue `qid`. */
export function doorbellOffset(qid: number, cq: boolean, dstrd: number): number {
  return 0x1000 + (2 * qid + (cq ? 1 : 0)) * (4 << dstrd);
}

/** Called for each completion: command id, status field (without phase), DW0. */
export type CqeHandler = (cid: number, status: number, dw0: number) => void;

/** A queue pair: SQ and CQ rings of `depth` entries each. */
export class NvmeQueuePair {
  readonly qid: number;
  readonly depth: number;
  readonly sq: DmaBuffer;
  readonly cq: DmaBuffer;
  readonly #sqes: DataView[] = [];
  readonly #cqes: DataView[] = [];
  readonly #mmio: NvmeMmio;
  readonly #sqDoorbell: number;
  readonly #cqDoorbell: number;
  #sqTail = 0;
  #sqHead = 0;
  #cqHead = 0;
  #phase = 1;

  constructor(
    mmio: NvmeMmio,
    qid: number,
    depth: number,
    sq: DmaBuffer,
    cq: DmaBuffer,
    dstrd: number,
  ) {
    if (
      sq.bytes.byteLength < depth * NVME_SQE_BYTES || cq.bytes.byteLength < depth * NVME_CQE_BYTES
    ) {
      throw new RangeError(`queue ${qid}: rings too small for ${depth} entries`);
    }
    this.#mmio = mmio;
    this.qid = qid;
    this.depth = depth;
    this.sq = sq;
    this.cq = cq;
    for (let i = 0; i < depth; i++) {
      this.#sqes.push(
        new DataView(sq.bytes.buffer, sq.bytes.byteOffset + i * NVME_SQE_BYTES, NVME_SQE_BYTES),
      );
      this.#cqes.push(
        new DataView(cq.bytes.buffer, cq.bytes.byteOffset + i * NVME_CQE_BYTES, NVME_CQE_BYTES),
      );
    }
    this.#sqDoorbell = doorbellOffset(qid, false, dstrd);
    this.#cqDoorbell = doorbellOffset(qid, true, dstrd);
  }

  /** Back to the state after creation (controller reset): empty rings, phase 1. */
  reset(): void {
    this.#sqTail = this.#sqHead = this.#cqHead = 0;
    this.#phase = 1;
    this.sq.bytes.fill(0);
    this.cq.bytes.fill(0);
  }

  /** SQ slots in use as far as the host knows (submitted, head not yet reported past them). */
  get sqUsed(): number {
    return (this.#sqTail - this.#sqHead + this.depth) % this.depth;
  }

  /** True when one more entry would make the SQ full (tail + 1 == head). */
  get sqFull(): boolean {
    return (this.#sqTail + 1) % this.depth === this.#sqHead;
  }

  /** The zeroed entry at the SQ tail, to fill before {@link submit}. Check {@link sqFull} first. */
  nextSqe(): DataView {
    const v = this.#sqes[this.#sqTail] as DataView;
    for (let i = 0; i < NVME_SQE_BYTES; i += 4) v.setUint32(i, 0, true);
    return v;
  }

  /** Hands the entry filled at the tail to the controller: advance the tail, ring the doorbell. */
  submit(): void {
    this.#sqTail = (this.#sqTail + 1) % this.depth;
    this.#mmio.write32(this.#sqDoorbell, this.#sqTail);
  }

  /** Consumes every new CQE (phase matches), then rings the CQ head doorbell once. */
  reap(handler: CqeHandler, max = this.depth): number {
    let n = 0;
    while (n < max) {
      const v = this.#cqes[this.#cqHead] as DataView;
      const sf = v.getUint16(14, true);
      if ((sf & 1) !== this.#phase) break;
      // Read the rest after the phase: x86 keeps loads in order.
      const dw0 = v.getUint32(0, true);
      const sqhd = v.getUint16(8, true);
      const cid = v.getUint16(12, true);
      if (sqhd < this.depth) this.#sqHead = sqhd;
      if (++this.#cqHead === this.depth) {
        this.#cqHead = 0;
        this.#phase ^= 1;
      }
      n++;
      handler(cid, sf >>> 1, dw0);
    }
    if (n > 0) this.#mmio.write32(this.#cqDoorbell, this.#cqHead);
    return n;
  }

  /** True when a CQE is waiting (a cheap look, no side effect). */
  get cqPending(): boolean {
    const v = this.#cqes[this.#cqHead] as DataView;
    return (v.getUint16(14, true) & 1) === this.#phase;
  }
}

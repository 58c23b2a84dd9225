/**
 * Inflight I/O tracking for split virtqueues (vhost-user protocol feature
 * INFLIGHT_SHMFD, docs/interop/vhost-user.rst "Inflight I/O tracking").
 *
 * The back-end records in a shared memory area, which the front-end keeps
 * across back-end restarts, which requests it has taken from the available
 * ring and not yet returned on the used ring. A restarted back-end (after a
 * crash or an upgrade) gets the area back with SET_INFLIGHT_FD and resubmits
 * those requests: the available ring alone cannot tell, because requests
 * complete out of order and the driver reuses ring slots.
 *
 * Layout (the spec's, for split rings): one region per queue, each
 * `QueueRegionSplit` = features u64, version u16, desc_num u16,
 * last_batch_head u16, used_idx u16, then desc_num `DescStateSplit` =
 * inflight u8, padding 5, next u16, counter u64. Regions are
 * {@link inflightQueueBytes} apart (16 + 16 * queue size, rounded up to 64
 * bytes: the same stride libvhost-user uses).
 *
 * The area comes from the front-end and is not trusted: every field is
 * checked when a queue starts ({@link InflightQueue.recover}), and a bad one
 * fails that queue with an {@link InflightError}. The data-path methods touch
 * only offsets derived from the checked queue size and allocate nothing.
 * @module
 */

/** The only region version defined (0 means "not initialised yet"). */
export const INFLIGHT_VERSION = 1;
/** Bytes of the per-queue header (features, version, desc_num, last_batch_head, used_idx). */
export const INFLIGHT_QUEUE_HEADER_BYTES = 16;
/** Bytes of one DescStateSplit. */
export const INFLIGHT_DESC_BYTES = 16;
/** Queue regions start on 64-byte boundaries. */
export const INFLIGHT_ALIGN = 64;

// Field offsets in a queue region.
const F_FEATURES = 0;
const F_VERSION = 8;
const F_DESC_NUM = 10;
const F_LAST_BATCH_HEAD = 12;
const F_USED_IDX = 14;
// Field offsets in a DescStateSplit.
const D_INFLIGHT = 0;
const D_NEXT = 6;
const D_COUNTER = 8;

const TWO_32 = 0x1_0000_0000;

/** Bytes one queue's region takes in the area (and the stride between regions). */
export function inflightQueueBytes(queueSize: number): number {
  const raw = INFLIGHT_QUEUE_HEADER_BYTES + INFLIGHT_DESC_BYTES * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGN) * INFLIGHT_ALIGN;
}

/** Bytes of a whole area for `numQueues` queues of `queueSize`. */
export function inflightAreaBytes(numQueues: number, queueSize: number): number {
  return numQueues * inflightQueueBytes(queueSize);
}

/** The inflight area's contents are inconsistent; the queue cannot start. */
export class InflightError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InflightError";
  }
}

/**
 * A whole inflight area (one region per queue) over bytes mapped from the
 * front-end's fd.
 */
export class InflightArea {
  readonly numQueues: number;
  readonly queueSize: number;
  readonly bytes: Uint8Array;

  /**
   * @throws {RangeError} when `bytes` is smaller than the layout needs or
   *   the queue count or size is out of range
   */
  constructor(bytes: Uint8Array, numQueues: number, queueSize: number) {
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) {
      throw new RangeError(`inflight area: ${numQueues} queues is not 1..65535`);
    }
    if (
      !Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768 ||
      (queueSize & (queueSize - 1)) !== 0
    ) {
      throw new RangeError(`inflight area: queue size ${queueSize} is not a power of two`);
    }
    const need = inflightAreaBytes(numQueues, queueSize);
    if (bytes.byteLength < need) {
      throw new RangeError(
        `inflight area of ${bytes.byteLength} bytes is smaller than the ${need} bytes ` +
          `${numQueues} queue(s) of ${queueSize} need`,
      );
    }
    this.bytes = bytes;
    this.numQueues = numQueues;
    this.queueSize = queueSize;
  }

  /**
   * A fresh area for GET_INFLIGHT_FD: zeroes (version 0: each queue
   * initialises its region when it first starts) with desc_num filled in.
   */
  static format(bytes: Uint8Array, numQueues: number, queueSize: number): InflightArea {
    const a = new InflightArea(bytes, numQueues, queueSize);
    bytes.fill(0, 0, inflightAreaBytes(numQueues, queueSize));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const stride = inflightQueueBytes(queueSize);
    for (let q = 0; q < numQueues; q++) view.setUint16(q * stride + F_DESC_NUM, queueSize, true);
    return a;
  }

  /**
   * The region of queue `index` for a ring of `ringSize` entries.
   * @throws {InflightError} when the area has no region for that queue or
   *   was made for another queue size
   */
  queue(index: number, ringSize: number): InflightQueue {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) {
      throw new InflightError(
        `the inflight area covers ${this.numQueues} queue(s); queue ${index} has no region`,
      );
    }
    if (ringSize !== this.queueSize) {
      throw new InflightError(
        `queue ${index} has ${ringSize} entries but the inflight area was made for ${this.queueSize}`,
      );
    }
    const stride = inflightQueueBytes(this.queueSize);
    return new InflightQueue(
      new DataView(this.bytes.buffer, this.bytes.byteOffset + index * stride, stride),
      ringSize,
    );
  }
}

/**
 * One queue's region. Call {@link recover} once when the queue starts, then
 * {@link setInflight} for each head taken from the available ring, and
 * {@link beforeUsed} / {@link afterUsed} around each used-ring update.
 */
export class InflightQueue {
  /** Queue size (= desc_num once checked). */
  readonly size: number;
  readonly #view: DataView;
  /** The global counter of the spec: order in which heads were taken. */
  #counter = 0;

  constructor(view: DataView, size: number) {
    this.#view = view;
    this.size = size;
  }

  /**
   * Checks the region and brings it in line with the used ring, whose
   * current `idx` is `ringUsedIdx`: when the previous back-end died between
   * publishing a used element and clearing its inflight flag (used_idx
   * differs from the ring's), the last batch is cleared, as the spec says.
   *
   * @returns null when the region was never initialised (version 0; it is
   *   initialised now and the front-end's base applies), else the heads
   *   still in flight, in the order they were taken (counter order): the
   *   back-end resubmits them before anything new and resumes the available
   *   ring at `ringUsedIdx + length`.
   * @throws {InflightError} naming the bad field
   */
  recover(ringUsedIdx: number): number[] | null {
    const v = this.#view;
    const size = this.size;
    const version = v.getUint16(F_VERSION, true);
    if (version === 0) {
      for (let i = 0; i < size; i++) this.#clearEntry(i);
      v.setUint32(F_FEATURES, 0, true);
      v.setUint32(F_FEATURES + 4, 0, true);
      v.setUint16(F_DESC_NUM, size, true);
      v.setUint16(F_LAST_BATCH_HEAD, 0, true);
      v.setUint16(F_USED_IDX, ringUsedIdx & 0xffff, true);
      // Last: a region is valid only once everything above is written.
      v.setUint16(F_VERSION, INFLIGHT_VERSION, true);
      this.#counter = 0;
      return null;
    }
    if (version !== INFLIGHT_VERSION) {
      throw new InflightError(`inflight region version ${version} is unknown (expected 1)`);
    }
    const features = v.getUint32(F_FEATURES, true) + v.getUint32(F_FEATURES + 4, true) * TWO_32;
    if (features !== 0) {
      throw new InflightError(`inflight region features 0x${features.toString(16)} are unknown`);
    }
    const descNum = v.getUint16(F_DESC_NUM, true);
    if (descNum !== size) {
      throw new InflightError(
        `inflight region desc_num ${descNum} does not match the queue size ${size}`,
      );
    }
    const usedIdx = v.getUint16(F_USED_IDX, true);
    const ring = ringUsedIdx & 0xffff;
    if (usedIdx !== ring) {
      // The last batch reached the used ring but its flags were not cleared.
      const batch = (ring - usedIdx) & 0xffff;
      if (batch > size) {
        throw new InflightError(
          `inflight used_idx ${usedIdx} is ${batch} entries behind the used ring's ${ring}, ` +
            `more than the queue size ${size}`,
        );
      }
      let i = v.getUint16(F_LAST_BATCH_HEAD, true);
      for (let k = 0; k < batch; k++) {
        if (i >= size) {
          throw new InflightError(
            `inflight last batch names descriptor ${i}, not below the queue size ${size}`,
          );
        }
        const off = this.#entry(i);
        const next = v.getUint16(off + D_NEXT, true);
        v.setUint8(off + D_INFLIGHT, 0);
        i = next;
      }
      v.setUint16(F_USED_IDX, ring, true);
    }
    const heads: number[] = [];
    const counters: number[] = [];
    let max = -1;
    for (let i = 0; i < size; i++) {
      const off = this.#entry(i);
      const flag = v.getUint8(off + D_INFLIGHT);
      if (flag === 0) continue;
      if (flag !== 1) {
        throw new InflightError(`inflight flag of descriptor ${i} is ${flag}, not 0 or 1`);
      }
      const counter = v.getUint32(off + D_COUNTER, true) +
        v.getUint32(off + D_COUNTER + 4, true) * TWO_32;
      heads.push(i);
      counters[i] = counter;
      if (counter > max) max = counter;
    }
    heads.sort((a, b) => (counters[a] as number) - (counters[b] as number) || a - b);
    this.#counter = max + 1;
    return heads;
  }

  /** A head was taken from the available ring: record it (counter, then the flag). */
  setInflight(head: number): void {
    const off = this.#entry(head);
    const c = this.#counter++;
    this.#view.setUint32(off + D_COUNTER, c >>> 0, true);
    this.#view.setUint32(off + D_COUNTER + 4, Math.floor(c / TWO_32), true);
    this.#view.setUint8(off + D_INFLIGHT, 1);
  }

  /** Before `head` goes on the used ring: it becomes the last batch (of one). */
  beforeUsed(head: number): void {
    const v = this.#view;
    v.setUint16(this.#entry(head) + D_NEXT, v.getUint16(F_LAST_BATCH_HEAD, true), true);
    v.setUint16(F_LAST_BATCH_HEAD, head, true);
  }

  /** After the used ring's idx became `usedIdx` with `head` on it: no longer in flight. */
  afterUsed(head: number, usedIdx: number): void {
    this.#view.setUint8(this.#entry(head) + D_INFLIGHT, 0);
    this.#view.setUint16(F_USED_IDX, usedIdx, true);
  }

  /** Whether `head` is marked in flight (tests and logs). */
  isInflight(head: number): boolean {
    return this.#view.getUint8(this.#entry(head) + D_INFLIGHT) === 1;
  }

  /** The region's used_idx (tests and logs). */
  get usedIdx(): number {
    return this.#view.getUint16(F_USED_IDX, true);
  }

  /** The region's last_batch_head (tests and logs). */
  get lastBatchHead(): number {
    return this.#view.getUint16(F_LAST_BATCH_HEAD, true);
  }

  /** How many heads are marked in flight (control path: scans the region). */
  countInflight(): number {
    let n = 0;
    for (let i = 0; i < this.size; i++) if (this.isInflight(i)) n++;
    return n;
  }

  #entry(i: number): number {
    return INFLIGHT_QUEUE_HEADER_BYTES + i * INFLIGHT_DESC_BYTES;
  }

  #clearEntry(i: number): void {
    const off = this.#entry(i);
    for (let b = 0; b < INFLIGHT_DESC_BYTES; b += 4) this.#view.setUint32(off + b, 0, true);
  }
}

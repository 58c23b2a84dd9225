/**
 * The one error type of the virtio package.
 * @module
 */

/**
 * What went wrong. Every kind is an operating error caused by the guest (or
 * by the front-end's memory table), never a programming error of ours:
 *
 * - `"memory-region"`: a guest memory table is unusable (too many regions,
 *   sizes that do not match their mappings, overlapping or unsafe addresses).
 * - `"queue-size"`: the queue size is not a power of two in 1..32768.
 * - `"queue-alignment"`: a ring area is not aligned as the spec requires
 *   (descriptor table 16, available ring 2, used ring 4).
 * - `"queue-address"`: a ring area does not lie inside one guest memory region.
 * - `"avail-idx"`: the available index moved more than the queue size past
 *   the entries already consumed; the queue is broken.
 * - `"desc-index"`: a head or `next` index is not below the queue size (or
 *   the indirect table length).
 * - `"desc-address"`: a buffer does not lie inside one guest memory region,
 *   or its address is not a safe integer.
 * - `"chain-loop"`: a chain visits one descriptor twice.
 * - `"chain-too-long"`: a chain has more descriptors than the queue size.
 * - `"chain-bytes"`: a chain's buffers add up to more than 4 GiB - 1 bytes
 *   (the used ring's length field).
 * - `"indirect-feature"`: VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC.
 * - `"indirect-nested"`: VIRTQ_DESC_F_INDIRECT inside an indirect table.
 * - `"indirect-next"`: VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT.
 * - `"indirect-size"`: an indirect table is empty, not a multiple of 16 bytes
 *   or longer than the queue size in descriptors.
 * - `"indirect-address"`: an indirect table does not lie inside one guest
 *   memory region.
 * - `"order"`: a device-readable descriptor follows a device-writable one.
 * - `"used-head"`: a head returned to the used ring is not below the queue
 *   size (a programming error of the backend, reported the same way).
 */
export type VirtqueueErrorKind =
  | "memory-region"
  | "queue-size"
  | "queue-alignment"
  | "queue-address"
  | "avail-idx"
  | "desc-index"
  | "desc-address"
  | "chain-loop"
  | "chain-too-long"
  | "chain-bytes"
  | "indirect-feature"
  | "indirect-nested"
  | "indirect-next"
  | "indirect-size"
  | "indirect-address"
  | "order"
  | "used-head";

/** An error found in guest-controlled virtio state; `kind` says which. */
export class VirtqueueError extends Error {
  /** Which rule was broken. */
  readonly kind: VirtqueueErrorKind;

  constructor(kind: VirtqueueErrorKind, message: string) {
    super(message);
    this.name = "VirtqueueError";
    this.kind = kind;
  }
}

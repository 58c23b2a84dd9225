/**
 * virtio for the vhost-user-blk backend: guest memory, the split virtqueue
 * (a checking constructor, a validating allocation-free chain walker,
 * EVENT_IDX notification suppression) and virtio-blk request parsing.
 * Everything read from guest memory is untrusted; every failure is a
 * {@linkcode VirtqueueError} with a documented `kind`, or for virtio-blk a
 * status byte.
 * @module
 */
export * from "./error.ts";
export * from "./guest_memory.ts";
export * from "./virtqueue.ts";
export * from "./blk.ts";

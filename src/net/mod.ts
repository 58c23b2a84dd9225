/**
 * TCP for the data path on the reactor's io_uring: listeners, connections
 * with caller-chosen receive buffers and coalesced zero-copy sends.
 * @module
 */
export * from "./tcp.ts";

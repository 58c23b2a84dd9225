/**
 * FFI bindings: one symbols table per library, typed wrappers, errno errors.
 * @module
 */
export * from "./errno.ts";
export * from "./libc.ts";
export * from "./io_uring.ts";
export * from "./memory.ts";
export * from "./unix_socket.ts";

/**
 * FFI bindings: one symbols table per library, typed wrappers, errno errors.
 * @module
 */
export * from "./errno.ts";
export * from "./libc.ts";

/**
 * The block device layer: the consumer API, the module interface and the
 * I/O request type.
 * @module
 */
export * from "./bdev_io.ts";
export * from "./bdev.ts";
export * from "./bdev_module.ts";
export * from "./errors.ts";

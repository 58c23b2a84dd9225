/**
 * NVMe specification constants, field accessors and structure builders,
 * shared by the NVMe-oF target and the user-space NVMe driver. One topic
 * per file; nothing here does I/O.
 * @module
 */
export * from "./bytes.ts";
export * from "./cqe.ts";
export * from "./discovery_log.ts";
export * from "./fabrics.ts";
export * from "./features.ts";
export * from "./identify.ts";
export * from "./log_pages.ts";
export * from "./nqn.ts";
export * from "./opcodes.ts";
export * from "./registers.ts";
export * from "./sqe.ts";
export * from "./status.ts";

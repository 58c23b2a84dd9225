/**
 * RPCs of the error bdev: bdev_error_create, bdev_error_delete,
 * bdev_error_inject_error (SPDK's names; "delay" with delay_us is ours).
 * @module
 */
import type { AppContext } from "../../rpc/context.ts";
import type { RpcTable } from "../../rpc/rpc.ts";
import { createErrorBdev, deleteErrorBdev, ERROR_TYPES, injectError } from "./error.ts";

const IO_TYPES = ["read", "write", "unmap", "flush", "write_zeroes", "all", "clear"] as const;

/** Registers the error-injection methods. */
export function registerErrorRpcs(table: RpcTable<AppContext>): void {
  table.register("bdev_error_create", {
    help: "Create an error-injection bdev EE_<base_name> (params: base_name, uuid)",
    mutating: true,
  }, (p, ctx) => {
    const base = p.str("base_name");
    const uuid = p.optUuid("uuid");
    p.done();
    return createErrorBdev(ctx.bdevs, base, uuid);
  });

  table.register("bdev_error_delete", {
    help: "Delete an error-injection bdev (params: name)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    p.done();
    await deleteErrorBdev(ctx.bdevs, name);
  });

  table.register("bdev_error_inject_error", {
    help:
      "Fail, delay or corrupt the next I/Os (params: name, io_type, error_type, num, delay_us, corrupt_offset, corrupt_value)",
  }, (p, ctx) => {
    const name = p.str("name");
    const ioType = p.optEnum("io_type", IO_TYPES) ?? "all";
    const errorType = p.optEnum("error_type", ERROR_TYPES) ?? "failure";
    const num = p.optInt("num", { min: 0, max: 1_000_000_000 }) ?? 1;
    const delayUs = p.optInt("delay_us", { min: 0, max: 60_000_000 });
    const corruptOffset = p.optInt("corrupt_offset", { min: 0 });
    const corruptValue = p.optInt("corrupt_value", { min: 1, max: 255 });
    // SPDK's NVMe-status and queue-depth variants.
    p.neutral("nvme_sct", [0], "no NVMe status injection");
    p.neutral("nvme_sc", [0], "no NVMe status injection");
    p.neutral("queue_depth", [0], "no queue-depth trigger");
    p.done();
    injectError(ctx.bdevs, name, { ioType, errorType, num, delayUs, corruptOffset, corruptValue });
  });
}

/**
 * RPCs of the passthru bdev: bdev_passthru_create, bdev_passthru_delete.
 * @module
 */
import type { AppContext } from "../../rpc/context.ts";
import type { RpcTable } from "../../rpc/rpc.ts";
import { createPassthruBdev, deletePassthruBdev } from "./passthru.ts";

/** Registers the passthru methods. */
export function registerPassthruRpcs(table: RpcTable<AppContext>): void {
  table.register("bdev_passthru_create", {
    help: "Create a passthru bdev on a base bdev (params: base_bdev_name, name, uuid)",
    mutating: true,
  }, (p, ctx) => {
    const baseBdevName = p.str("base_bdev_name");
    const name = p.str("name");
    const uuid = p.optUuid("uuid");
    p.done();
    return createPassthruBdev(ctx.bdevs, { baseBdevName, name, uuid });
  });

  table.register("bdev_passthru_delete", {
    help: "Delete a passthru bdev (params: name)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    p.done();
    await deletePassthruBdev(ctx.bdevs, name);
  });
}

/**
 * RPCs of the malloc bdev: bdev_malloc_create, bdev_malloc_delete.
 * @module
 */
import type { AppContext } from "../../rpc/context.ts";
import type { RpcTable } from "../../rpc/rpc.ts";
import { createMallocBdev, deleteMallocBdev } from "./malloc.ts";

/** Registers the malloc methods. */
export function registerMallocRpcs(table: RpcTable<AppContext>): void {
  table.register("bdev_malloc_create", {
    help: "Create a RAM bdev (params: num_blocks, block_size, name, uuid)",
    mutating: true,
  }, (p, ctx) => {
    const numBlocks = p.int("num_blocks", { min: 1 });
    const blockSize = p.optInt("block_size", { min: 512, max: 65536 }) ?? 512;
    let name = p.optStr("name");
    const uuid = p.optUuid("uuid");
    p.done();
    if (name === undefined) {
      let i = 0;
      while (ctx.bdevs.has(`Malloc${i}`)) i++;
      name = `Malloc${i}`;
    }
    return createMallocBdev(ctx.bdevs, { name, numBlocks, blockSize, uuid });
  });

  table.register("bdev_malloc_delete", {
    help: "Delete a RAM bdev (params: name)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    p.done();
    await deleteMallocBdev(ctx.bdevs, name);
  });
}

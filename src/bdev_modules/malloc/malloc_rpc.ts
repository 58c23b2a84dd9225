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
    // SPDK's metadata, DIF and placement options, which rpc.py sends at their defaults.
    p.optInt("physical_block_size", { min: 512, max: 65536 });
    p.neutral("optimal_io_boundary", [0], "no I/O splitting boundary");
    p.neutral("md_size", [0], "no per-block metadata");
    p.neutral("md_interleave", [false], "no per-block metadata");
    p.neutral("dif_type", [0], "no DIF protection information");
    p.neutral("dif_is_head_of_md", [false], "no DIF protection information");
    p.neutral("dif_pi_format", [0], "no DIF protection information");
    p.neutral("numa_id", [-1, 0], "memory comes from the appliance's only NUMA node");
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

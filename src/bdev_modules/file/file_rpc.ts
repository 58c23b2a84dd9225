/**
 * RPCs of the file bdev: bdev_file_create, bdev_file_delete, with SPDK's
 * bdev_aio_create/bdev_aio_delete accepted as aliases so aio scripts work.
 * @module
 */
import type { AppContext } from "../../rpc/context.ts";
import type { RpcTable } from "../../rpc/rpc.ts";
import { createFileBdev, deleteFileBdev } from "./file.ts";

/** Registers the file methods. */
export function registerFileRpcs(table: RpcTable<AppContext>): void {
  table.register("bdev_file_create", {
    help:
      "Create a bdev on a file or block device through io_uring (params: name, filename, block_size, uuid, readonly)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    const filename = p.str("filename");
    const blockSize = p.optInt("block_size", { min: 512, max: 65536 });
    const uuid = p.optUuid("uuid");
    const readonly = p.optBool("readonly");
    // SPDK aio options that rpc.py sends: write zeroes uses fallocate here anyway.
    p.optBool("fallocate");
    p.neutral("nowait", [false], "RWF_NOWAIT submission is not used");
    p.done();
    return await createFileBdev(ctx.bdevs, { name, filename, blockSize, uuid, readonly });
  });
  table.alias("bdev_aio_create", "bdev_file_create");

  table.register("bdev_file_delete", {
    help: "Delete a file bdev; the file stays (params: name)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    p.done();
    await deleteFileBdev(ctx.bdevs, name);
  });
  table.alias("bdev_aio_delete", "bdev_file_delete");
}

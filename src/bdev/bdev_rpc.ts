/**
 * Generic bdev methods (SPDK's names and shapes).
 * @module
 */
import type { AppContext } from "../rpc/context.ts";
import type { RpcTable } from "../rpc/rpc.ts";
import { BdevIoStats } from "./bdev.ts";
import { BdevNotFoundError } from "./errors.ts";

/** Registers bdev_get_bdevs, bdev_get_iostat and bdev_set_options. */
export function registerBdevRpcs(table: RpcTable<AppContext>): void {
  table.register("bdev_get_bdevs", {
    help: "List bdevs, or one by name (params: name, timeout)",
  }, (p, ctx) => {
    const name = p.optStr("name");
    p.optInt("timeout", { min: 0 }); // bdevs appear synchronously here: nothing to wait for
    p.done();
    if (name !== undefined) {
      const b = ctx.bdevs.list().find((b) => b.name === name || b.uuid === name);
      if (b === undefined) throw new BdevNotFoundError(name);
      return [b.toJSON()];
    }
    return ctx.bdevs.list().map((b) => b.toJSON());
  });

  table.register("bdev_get_iostat", {
    help: "I/O counters per bdev (params: name)",
  }, (p, ctx) => {
    const name = p.optStr("name");
    p.neutral("per_channel", [false], "counters are kept per bdev");
    p.neutral("reset_mode", ["none"], "counters are not reset");
    p.neutral("names", [], 'use "name" for one bdev');
    p.done();
    const bdevs = name === undefined ? ctx.bdevs.list() : [ctx.bdevs.get(name)];
    return {
      tick_rate: 1000,
      ticks: Math.round(performance.now()),
      bdevs: bdevs.map((b) => {
        // Open channels count too: a volume in use shows its live figures.
        const s = new BdevIoStats();
        b.addStatsTo(s);
        return {
          name: b.name,
          bytes_read: s.readBytes,
          num_read_ops: s.readOps,
          bytes_written: s.writeBytes,
          num_write_ops: s.writeOps,
          num_unmap_ops: s.unmapOps,
          num_write_zeroes_ops: s.writeZeroesOps,
          num_flush_ops: s.flushOps,
          io_error: s.errors,
        };
      }),
    };
  });

  table.register("bdev_set_options", {
    help: "Set bdev layer options before any bdev exists (params: bdev_io_pool_size)",
    mutating: true,
  }, (p, ctx) => {
    const ioPoolSize = p.optInt("bdev_io_pool_size", { min: 1, max: 65536 });
    p.optInt("bdev_io_cache_size", { min: 0 }); // SPDK's per-thread cache: no equivalent here
    p.optBool("bdev_auto_examine");
    p.optInt("iobuf_small_cache_size", { min: 0 }); // iobuf caches: buffers are the consumer's here
    p.optInt("iobuf_large_cache_size", { min: 0 });
    p.done();
    if (ioPoolSize !== undefined) ctx.bdevs.setOptions({ ioPoolSize });
  });
}

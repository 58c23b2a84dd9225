/**
 * Framework methods: method listing, version and status.
 * @module
 */
import type { AppContext } from "./context.ts";
import type { RpcTable } from "./rpc.ts";

/** Registers rpc_get_methods, spdk_get_version and sluice_get_status. */
export function registerCoreRpcs(table: RpcTable<AppContext>): void {
  table.register("rpc_get_methods", {
    help: "List the RPC methods (params: current, include_aliases)",
  }, (p) => {
    p.optBool("current"); // every method is callable at any time: no start-up phase
    const aliases = p.optBool("include_aliases") ?? false;
    p.done();
    return table.methods(aliases);
  });

  table.register("spdk_get_version", { help: "The version of this appliance" }, (p, ctx) => {
    p.done();
    const [major = "0", minor = "0", patch = "0"] = ctx.version.split(".");
    return {
      version: `sluice v${ctx.version}`,
      fields: { major: Number(major), minor: Number(minor), patch: Number(patch), suffix: "" },
    };
  });

  table.register("sluice_get_status", {
    help: "Uptime, bdevs and data-path reactor counters",
  }, (p, ctx) => {
    p.done();
    return {
      version: ctx.version,
      pid: Deno.pid,
      uptime_s: Math.round((Date.now() - ctx.startedAtMs) / 1000),
      bdevs: ctx.bdevs.list().map((b) => ({
        name: b.name,
        module: b.module,
        size_bytes: b.sizeBytes,
        block_size: b.blockSize,
        claimed: b.claim !== null,
      })),
      reactor: { ...ctx.reactor.stats },
    };
  });
}

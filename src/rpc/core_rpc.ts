/**
 * Framework methods: method listing, version and status.
 * @module
 */
import type { AppContext } from "./context.ts";
import type { RpcTable } from "./rpc.ts";

/** Registers rpc_get_methods, spdk_get_version, sluice_get_status and framework_get_reactors. */
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

  table.register("framework_get_reactors", {
    help:
      "The data-path reactors (SPDK's shape): core, busy and idle time in ticks of tick_rate per second",
  }, (p, ctx) => {
    p.done();
    const one = (
      index: number,
      lcore: number,
      runningMs: number,
      stats: Readonly<Record<string, number>>,
    ) => {
      const idle = stats["parkedMs"] ?? 0;
      return {
        lcore,
        // sluice's: 0 is the main thread's reactor, the others are data-path workers.
        index,
        thread: index === 0 ? "main" : "worker",
        busy: Math.max(0, Math.round(runningMs - idle)),
        idle: Math.round(idle),
        // Reactors park in the kernel when idle (SPDK's interrupt mode, in effect).
        in_interrupt: false,
      };
    };
    return {
      tick_rate: 1000,
      reactors: [
        one(0, ctx.reactorCores[0] ?? 0, ctx.reactor.runningMs, { ...ctx.reactor.stats }),
        ...ctx.workers.map((w) => one(w.index, w.core, w.runningMs, w.reactorStats)),
      ],
    };
  });
}

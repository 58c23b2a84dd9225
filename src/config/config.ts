/**
 * The configuration: the running state as the RPC calls that rebuild it, in
 * SPDK's JSON config layout:
 * `{"subsystems":[{"subsystem":"bdev","config":[{"method":...,"params":{...}}]}]}`.
 * `save_config` writes it, start-up loads it, and the daemon rewrites the
 * file after every change so a restart comes back as it was.
 * @module
 */
import type { RpcCall } from "../bdev/bdev_module.ts";
import { DEFAULT_BDEV_OPTIONS } from "../bdev/bdev.ts";
import type { AppContext } from "../rpc/context.ts";
import type { RpcTable } from "../rpc/rpc.ts";
import { RpcError } from "../rpc/errors.ts";
import { nvmfConfigCalls } from "../nvmf_tcp/nvmf_rpc.ts";
import { vhostConfigCalls } from "../vhost_user/vhost_rpc.ts";
import { cryptoConfigCalls } from "../crypto/crypto_rpc.ts";

/** One subsystem's part of the config. */
export interface SubsystemConfig {
  subsystem: string;
  config: RpcCall[];
}

/** The whole config document. */
export interface SluiceConfig {
  subsystems: SubsystemConfig[];
}

/**
 * Subsystems in the order they are applied (later ones use earlier ones'
 * objects): "accel" holds crypto keys, which crypto bdevs need first.
 */
export const SUBSYSTEMS = ["accel", "bdev", "nvmf", "vhost_blk"] as const;

/** A config document is malformed; the message says where. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The running configuration. */
export function buildConfig(ctx: AppContext): SluiceConfig {
  const bdev: RpcCall[] = [];
  const pool = ctx.bdevs.options.ioPoolSize;
  if (pool !== DEFAULT_BDEV_OPTIONS.ioPoolSize) {
    bdev.push({ method: "bdev_set_options", params: { bdev_io_pool_size: pool } });
  }
  for (const b of ctx.bdevs.list()) {
    const call = b.writeConfigJson();
    if (call !== null) bdev.push({ method: call.method, params: dropUndefined(call.params) });
  }
  // Never any key material in "accel": crypto bdevs name their keys (docs/crypto.md).
  // It is left out while empty (always, for now), so saved files look as before.
  const accel = cryptoConfigCalls(ctx);
  return {
    subsystems: [
      ...(accel.length > 0 ? [{ subsystem: "accel", config: accel }] : []),
      { subsystem: "bdev", config: bdev },
      { subsystem: "nvmf", config: nvmfConfigCalls(ctx) },
      { subsystem: "vhost_blk", config: vhostConfigCalls(ctx) },
    ],
  };
}

function dropUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** Checks the document's shape; returns it typed. Method params are checked when applied. */
export function validateConfig(doc: unknown, source = "config"): SluiceConfig {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new ConfigError(`${source}: must be an object with a "subsystems" array`);
  }
  const subsystems = (doc as Record<string, unknown>)["subsystems"];
  if (!Array.isArray(subsystems)) throw new ConfigError(`${source}: "subsystems" must be an array`);
  const out: SubsystemConfig[] = [];
  subsystems.forEach((s, i) => {
    const where = `${source}: subsystems[${i}]`;
    if (typeof s !== "object" || s === null) throw new ConfigError(`${where} must be an object`);
    const { subsystem, config } = s as Record<string, unknown>;
    if (typeof subsystem !== "string" || !(SUBSYSTEMS as readonly string[]).includes(subsystem)) {
      throw new ConfigError(
        `${where}.subsystem must be one of ${SUBSYSTEMS.join(", ")}; got ${
          JSON.stringify(subsystem)
        }`,
      );
    }
    if (config === null || config === undefined) {
      out.push({ subsystem, config: [] });
      return;
    }
    if (!Array.isArray(config)) throw new ConfigError(`${where}.config must be an array`);
    const calls: RpcCall[] = config.map((c, j) => {
      const w = `${where}.config[${j}]`;
      if (typeof c !== "object" || c === null) throw new ConfigError(`${w} must be an object`);
      const { method, params } = c as Record<string, unknown>;
      if (typeof method !== "string") throw new ConfigError(`${w}.method must be a string`);
      if (
        params !== undefined &&
        (typeof params !== "object" || params === null || Array.isArray(params))
      ) {
        throw new ConfigError(`${w}.params must be an object`);
      }
      return { method, params: (params ?? {}) as Record<string, unknown> };
    });
    out.push({ subsystem, config: calls });
  });
  out.sort((a, b) =>
    SUBSYSTEMS.indexOf(a.subsystem as typeof SUBSYSTEMS[number]) -
    SUBSYSTEMS.indexOf(b.subsystem as typeof SUBSYSTEMS[number])
  );
  return { subsystems: out };
}

/**
 * Applies a config by calling its methods in order. Stops at the first
 * failure with an error naming the entry; what was applied before stays.
 */
export async function applyConfig(
  table: RpcTable<AppContext>,
  ctx: AppContext,
  doc: unknown,
  source = "config",
): Promise<number> {
  const cfg = validateConfig(doc, source);
  let n = 0;
  for (const s of cfg.subsystems) {
    for (const [j, call] of s.config.entries()) {
      if (!table.info(call.method)?.mutating) {
        throw new ConfigError(
          `${source}: ${s.subsystem}.config[${j}]: "${call.method}" is not a configuration method`,
        );
      }
      try {
        await table.call(call.method, call.params, ctx);
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new ConfigError(`${source}: ${s.subsystem}.config[${j}] ${call.method}: ${msg}`);
      }
      n++;
    }
  }
  return n;
}

/** Reads and parses a config file; errors name the file. */
export async function readConfigFile(path: string): Promise<SluiceConfig> {
  const text = await Deno.readTextFile(path);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON: ${e instanceof Error ? e.message : e}`);
  }
  return validateConfig(doc, path);
}

/** Writes the config atomically (temp file + rename), mode 0600. */
export async function writeConfigFile(path: string, cfg: SluiceConfig): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify(cfg, null, 2) + "\n", { mode: 0o600 });
  const f = await Deno.open(tmp, { read: true, write: true });
  try {
    await f.syncData();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
}

/** Registers save_config, load_config and SPDK's framework_get_subsystems/config. */
export function registerConfigRpcs(table: RpcTable<AppContext>): void {
  // rpc.py's save_config is client-side: it lists subsystems, then asks for each one's config.
  table.register("framework_get_subsystems", {
    help: "The configuration subsystems in the order they are applied",
  }, (p) => {
    p.done();
    return SUBSYSTEMS.map((s, i) => ({ subsystem: s, depends_on: SUBSYSTEMS.slice(0, i) }));
  });
  table.register("framework_get_config", {
    help: "One subsystem's configuration (params: name)",
  }, (p, ctx) => {
    const name = p.str("name");
    p.neutral("with_batches", [false], "configs are flat lists");
    p.done();
    const s = buildConfig(ctx).subsystems.find((s) => s.subsystem === name);
    if (s !== undefined) return s.config;
    if ((SUBSYSTEMS as readonly string[]).includes(name)) return [];
    throw new RpcError(-19, `No subsystem named "${name}"`);
  });

  table.register("save_config", {
    help: "The running configuration as the RPCs that rebuild it",
  }, (p, ctx) => {
    p.done();
    return buildConfig(ctx);
  });
  table.register("load_config", {
    help: "Apply a configuration document (params: the document, as save_config returns it)",
    mutating: true,
  }, async (p, ctx) => {
    const doc = p.raw();
    try {
      return { applied: await applyConfig(table, ctx, doc, "load_config") };
    } catch (e) {
      if (e instanceof ConfigError) throw new RpcError(-22, e.message);
      throw e;
    }
  });
}

/**
 * RPCs of the crypto keys (SPDK's names): accel_crypto_key_create,
 * accel_crypto_key_destroy, accel_crypto_keys_get. Saved as subsystem
 * "accel", which is applied before "bdev" so a config that carries keys
 * (as spdk_dd configs do) has them before its crypto bdevs. `save_config`
 * itself never writes key material: its accel section is empty and crypto
 * bdevs name their key (see docs/crypto.md).
 * @module
 */
import type { RpcCall } from "../bdev/bdev_module.ts";
import type { AppContext } from "../rpc/context.ts";
import { RpcParamsError } from "../rpc/errors.ts";
import type { RpcTable } from "../rpc/rpc.ts";
import { KeyStore } from "./keys.ts";

const stores = new WeakMap<AppContext, KeyStore>();

/** The key store of an appliance (made on first use). */
export function keyStoreOf(ctx: AppContext): KeyStore {
  let s = stores.get(ctx);
  if (s === undefined) stores.set(ctx, s = new KeyStore());
  return s;
}

const CREATE_PARAMS = ["name", "cipher", "key", "key2", "tweak_mode"];

/** Registers the key methods. */
export function registerCryptoKeyRpcs(table: RpcTable<AppContext>): void {
  table.register("accel_crypto_key_create", {
    help:
      "Add a named AES-256-XTS key, held in memory only (params: name, cipher AES_XTS, key and key2 as 64 hex digits each, tweak_mode SIMPLE_LBA)",
    mutating: true,
  }, (p, ctx) => {
    // Read the object directly: the generic accessors quote bad values in
    // their errors, and a key must never appear in a reply or a log.
    const raw = p.raw();
    for (const k of Object.keys(raw)) {
      if (!CREATE_PARAMS.includes(k)) throw new RpcParamsError(`unknown parameter "${k}"`);
    }
    for (const k of ["name", "cipher", "key", "key2"]) {
      if (raw[k] === undefined || raw[k] === null) throw new RpcParamsError(`"${k}" is required`);
    }
    const tweak = raw["tweak_mode"];
    if (tweak !== undefined && tweak !== null && tweak !== "SIMPLE_LBA") {
      throw new RpcParamsError(
        `"tweak_mode" = ${
          JSON.stringify(tweak)
        } is not supported: the tweak is the data-unit number (accepted: "SIMPLE_LBA")`,
      );
    }
    keyStoreOf(ctx).create({
      name: raw["name"] as string,
      cipher: raw["cipher"] as string,
      key: raw["key"] as string,
      key2: raw["key2"] as string,
    });
  });

  table.register("accel_crypto_key_destroy", {
    help: "Zero and remove a crypto key that no crypto bdev uses (params: key_name)",
    mutating: true,
  }, (p, ctx) => {
    const name = p.str("key_name");
    p.done();
    keyStoreOf(ctx).destroy(name);
  });

  table.register("accel_crypto_keys_get", {
    help: "List crypto keys by name and cipher, never their bytes (params: key_name)",
  }, (p, ctx) => {
    const name = p.optStr("key_name");
    p.done();
    return keyStoreOf(ctx).list(name);
  });
}

/** The accel subsystem's saved config: always empty, keys are never saved (docs/crypto.md). */
export function cryptoConfigCalls(_ctx: AppContext): RpcCall[] {
  return [];
}

/** Zeroes every key of the appliance (shutdown). */
export function shutdownCryptoKeys(ctx: AppContext): void {
  stores.get(ctx)?.clear();
  stores.delete(ctx);
}

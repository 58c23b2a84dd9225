/**
 * RPCs of the crypto bdev: bdev_crypto_create, bdev_crypto_delete (SPDK's
 * names). Keys are named, never given here: SPDK's deprecated inline
 * `key`/`key2`/`cipher`/`crypto_pmd` params are refused.
 * @module
 */
import { keyStoreOf } from "../../crypto/crypto_rpc.ts";
import type { AppContext } from "../../rpc/context.ts";
import { RpcParamsError } from "../../rpc/errors.ts";
import type { RpcTable } from "../../rpc/rpc.ts";
import { createCryptoBdev, deleteCryptoBdev } from "./crypto.ts";

const PARAMS = ["base_bdev_name", "name", "key_name", "data_unit_size", "uuid"];
const INLINE_KEY_PARAMS = ["key", "key2", "cipher", "crypto_pmd"];

/** Registers the crypto bdev methods. */
export function registerCryptoRpcs(table: RpcTable<AppContext>): void {
  table.register("bdev_crypto_create", {
    help:
      "Create an AES-256-XTS encrypted bdev on a base bdev (params: base_bdev_name, name, key_name, data_unit_size, uuid)",
    mutating: true,
  }, (p, ctx) => {
    for (const k of Object.keys(p.raw())) {
      if (INLINE_KEY_PARAMS.includes(k)) {
        // Never echo the value: it may be key material.
        throw new RpcParamsError(
          `"${k}" is not supported: create the key with accel_crypto_key_create and give its "key_name"`,
        );
      }
      if (!PARAMS.includes(k)) throw new RpcParamsError(`unknown parameter "${k}"`);
    }
    const baseBdevName = p.str("base_bdev_name");
    const name = p.str("name");
    const keyName = p.str("key_name");
    const dataUnitSize = p.optInt("data_unit_size", { min: 512, max: 65536 });
    const uuid = p.optUuid("uuid");
    return createCryptoBdev(ctx.bdevs, keyStoreOf(ctx), {
      baseBdevName,
      name,
      keyName,
      dataUnitSize,
      uuid,
    });
  });

  table.register("bdev_crypto_delete", {
    help: "Delete a crypto bdev; its base and key stay (params: name)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    p.done();
    await deleteCryptoBdev(ctx.bdevs, name);
  });
}

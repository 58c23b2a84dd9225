import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { withApp } from "../testing/app.ts";
import { RpcError } from "../rpc/errors.ts";
import { checkKeyFilePermissions, KeyStore, loadKeyFile } from "./keys.ts";
import { createNativeXtsEngine } from "./native_xts.ts";
import type { XtsEngine, XtsKey } from "./xts.ts";

const noEngine = createNativeXtsEngine() === null;
const KEY = "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f";
const KEY2 = "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/** No fragment of either key may appear in `text`. */
function assertNoKey(text: string, what: string): void {
  for (const k of [KEY, KEY2]) {
    for (let i = 0; i + 8 <= k.length; i += 8) {
      assert(!text.toLowerCase().includes(k.slice(i, i + 8)), `${what} shows key bytes: ${text}`);
    }
  }
}

async function rejects(p: () => Promise<unknown>, code: number, msg: string): Promise<RpcError> {
  const e = await assertRejects(p, RpcError);
  assertEquals(e.code, code, e.message);
  assert(e.message.includes(msg), `"${e.message}" should mention "${msg}"`);
  assertNoKey(e.message, "an error");
  return e;
}

Deno.test({
  name: "crypto rpc: keys are created, listed without their bytes, refused when malformed",
  ignore: noEngine,
  async fn() {
    await withApp(async (app) => {
      await app.call("accel_crypto_key_create", {
        name: "k0",
        cipher: "AES_XTS",
        key: KEY,
        key2: KEY2,
        tweak_mode: "SIMPLE_LBA",
      });
      const list = await app.call("accel_crypto_keys_get");
      assertEquals(list, [{ name: "k0", cipher: "AES_XTS", tweak_mode: "SIMPLE_LBA", users: [] }]);
      assertNoKey(JSON.stringify(list), "accel_crypto_keys_get");
      const base = { cipher: "AES_XTS", key: KEY, key2: KEY2 };
      await rejects(
        () => app.call("accel_crypto_key_create", { ...base, name: "k0" }),
        -17,
        "exists",
      );
      await rejects(
        () => app.call("accel_crypto_key_create", { ...base, name: "same", key2: KEY }),
        -22,
        "must differ",
      );
      await rejects(
        () => app.call("accel_crypto_key_create", { ...base, name: "short", key: KEY.slice(2) }),
        -22,
        "64 hex digits",
      );
      await rejects(
        () =>
          app.call("accel_crypto_key_create", { ...base, name: "x", key: KEY.replace("0", "g") }),
        -22,
        "hex digits",
      );
      await rejects(
        () => app.call("accel_crypto_key_create", { ...base, name: "c", cipher: "AES_CBC" }),
        -22,
        "AES_XTS",
      );
      await rejects(
        () =>
          app.call("accel_crypto_key_create", {
            ...base,
            name: "t",
            tweak_mode: "INCR_512_FULL_LBA",
          }),
        -32602,
        "tweak_mode",
      );
      await rejects(
        () => app.call("accel_crypto_key_create", { ...base, name: "u", key3: KEY }),
        -32602,
        'unknown parameter "key3"',
      );
      await rejects(
        () => app.call("accel_crypto_key_create", { name: "m", cipher: "AES_XTS" }),
        -32602,
        '"key" is required',
      );
      await rejects(
        () => app.call("accel_crypto_key_destroy", { key_name: "nope" }),
        -19,
        "No crypto key",
      );
      await app.call("accel_crypto_key_destroy", { key_name: "k0" });
      assertEquals(await app.call("accel_crypto_keys_get"), []);
    });
  },
});

Deno.test({
  name:
    "crypto rpc: save_config names the key, never holds it; load_config applies keys before bdevs",
  ignore: noEngine,
  async fn() {
    let saved: unknown;
    await withApp(async (app) => {
      await app.call("accel_crypto_key_create", {
        name: "k0",
        cipher: "AES_XTS",
        key: KEY,
        key2: KEY2,
      });
      await app.call("bdev_malloc_create", { name: "M0", num_blocks: 256, block_size: 512 });
      await app.call("bdev_crypto_create", { base_bdev_name: "M0", name: "C0", key_name: "k0" });
      await rejects(
        () => app.call("bdev_crypto_create", { base_bdev_name: "M0", name: "C1", key: KEY }),
        -32602,
        "accel_crypto_key_create",
      );
      await rejects(() => app.call("accel_crypto_key_destroy", { key_name: "k0" }), -16, '"C0"');
      saved = await app.call("save_config");
      const text = JSON.stringify(saved);
      assertNoKey(text, "save_config");
      assert(text.includes('"key_name":"k0"'), text);
      assert(
        /"name":"C0","key_name":"k0","data_unit_size":512,"uuid":"[0-9a-f-]{36}"/.test(text),
        text,
      );
      assertNoKey(JSON.stringify(await app.call("bdev_get_bdevs")), "bdev_get_bdevs");
      assertEquals(await app.call("framework_get_config", { name: "accel" }), []);
    });
    // The saved config alone cannot bring the volume back: the key is not in it.
    await withApp(async (app) => {
      await rejects(() => app.call("load_config", saved), -22, 'No crypto key named "k0"');
    });
    // With the key given (an accel section, placed after bdev in the document), it does.
    await withApp(async (app) => {
      const doc = saved as { subsystems: unknown[] };
      const withKey = {
        subsystems: [...doc.subsystems, {
          subsystem: "accel",
          config: [{
            method: "accel_crypto_key_create",
            params: { name: "k0", cipher: "AES_XTS", key: KEY, key2: KEY2 },
          }],
        }],
      };
      assertEquals(await app.call("load_config", withKey), { applied: 3 });
      assertEquals(await app.call("save_config"), saved);
      await app.call("bdev_crypto_delete", { name: "C0" });
      await app.call("accel_crypto_key_destroy", { key_name: "k0" });
    });
  },
});

class SpyEngine implements XtsEngine {
  readonly name = "native" as const;
  seen: Uint8Array[] = [];
  createKey(key: Uint8Array): XtsKey {
    this.seen.push(key);
    return { encrypt() {}, decrypt() {}, destroy() {} };
  }
}

Deno.test("crypto keys: material is zeroed on destroy and clear", () => {
  const spy = new SpyEngine();
  const store = new KeyStore(() => spy);
  store.create({ name: "a", cipher: "AES_XTS", key: KEY, key2: KEY2 });
  store.create({ name: "b", cipher: "AES_XTS", key: KEY2, key2: KEY });
  store.acquire("a", "user").destroy();
  store.acquire("b", "user").destroy();
  const [a, b] = spy.seen as [Uint8Array, Uint8Array];
  assert(a.some((x) => x !== 0) && b.some((x) => x !== 0));
  assertThrows(() => store.destroy("a"), Error, "used by");
  store.release("a", "user");
  store.destroy("a");
  assertEquals(a, new Uint8Array(64));
  store.clear();
  assertEquals(b, new Uint8Array(64));
  assertEquals(store.list(), []);
  // A later engine choice applies to keys loaded from then on.
  const other = new SpyEngine();
  store.setEngine(other);
  store.create({ name: "c", cipher: "AES_XTS", key: KEY, key2: KEY2 });
  store.acquire("c", "user");
  assertEquals([spy.seen.length, other.seen.length], [2, 1]);
});

Deno.test("crypto keys: a key file loads only with owner-only permissions, all or nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice_keys_" });
  try {
    const path = `${dir}/keys.json`;
    const doc = { keys: [{ name: "k0", cipher: "AES_XTS", key: KEY, key2: KEY2 }] };
    await Deno.writeTextFile(path, JSON.stringify(doc), { mode: 0o600 });
    await Deno.chmod(path, 0o644);
    const store = new KeyStore(() => new SpyEngine());
    const loose = await assertRejects(() => loadKeyFile(store, path), Error, "mode 0644");
    assert(loose.message.includes("chmod 600"), loose.message);
    await Deno.chmod(path, 0o640);
    await assertRejects(() => checkKeyFilePermissions(path), Error, "mode 0640");
    await Deno.chmod(path, 0o600);
    assertEquals(await loadKeyFile(store, path), ["k0"]);
    assertEquals(store.list().map((k) => k.name), ["k0"]);

    // A bad second entry: nothing of the file is loaded.
    const bad = {
      keys: [
        { name: "k1", cipher: "AES_XTS", key: KEY, key2: KEY2 },
        { name: "k2", cipher: "AES_XTS", key: KEY, key2: KEY },
      ],
    };
    await Deno.writeTextFile(path, JSON.stringify(bad));
    const e = await assertRejects(() => loadKeyFile(store, path), Error, "must differ");
    assertNoKey(e.message, "a key file error");
    assertEquals(store.list().map((k) => k.name), ["k0"]);
    await Deno.writeTextFile(path, `{"keys": [{"name": "k3", "key": "${KEY}",}]}`);
    const j = await assertRejects(() => loadKeyFile(store, path), Error, "not valid JSON");
    assertNoKey(j.message, "a JSON error");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

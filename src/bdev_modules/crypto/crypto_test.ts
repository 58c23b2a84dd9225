import { bdevConformance, fillPattern } from "../../testing/bdev_conformance.ts";
import { startReactor } from "../../testing/reactor_thread.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../testing/assert.ts";
import {
  type BdevChannel,
  BdevError,
  BdevExistsError,
  BdevRegistry,
  runIo,
} from "../../bdev/mod.ts";
import { KeyStore } from "../../crypto/keys.ts";
import { createNativeXtsEngine } from "../../crypto/native_xts.ts";
import { hasOpensslCli, referenceXts, toHex } from "../../testing/xts_reference.ts";
import { createMallocBdev, deleteMallocBdev } from "../malloc/malloc.ts";
import { createFileBdev, deleteFileBdev } from "../file/file.ts";
import {
  createCryptoBdev,
  CRYPTO_BOUNCE_BYTES,
  CRYPTO_BOUNCE_COUNT,
  deleteCryptoBdev,
} from "./crypto.ts";

const noEngine = createNativeXtsEngine() === null;
const KEY = "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f";
const KEY2 = "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEY_BYTES = new Uint8Array([...hexBytes(KEY), ...hexBytes(KEY2)]);

function hexBytes(h: string): number[] {
  return Array.from({ length: h.length / 2 }, (_, i) => parseInt(h.slice(2 * i, 2 * i + 2), 16));
}

/** A registry-side key store per registry (each conformance case makes a fresh registry). */
const stores = new WeakMap<BdevRegistry, KeyStore>();
function keysOf(r: BdevRegistry): KeyStore {
  let k = stores.get(r);
  if (k === undefined) {
    stores.set(r, k = new KeyStore());
    k.create({ name: "k0", cipher: "AES_XTS", key: KEY, key2: KEY2 });
  }
  return k;
}

if (!noEngine) {
  bdevConformance({
    module: "crypto on malloc",
    startThread: startReactor,
    ioPoolSize: 16,
    create: (r) => {
      createMallocBdev(r, { name: "M0", numBlocks: 8192, blockSize: 512 });
      return Promise.resolve(
        createCryptoBdev(r, keysOf(r), { name: "C0", baseBdevName: "M0", keyName: "k0" }),
      );
    },
    destroy: async (r, n) => {
      await deleteCryptoBdev(r, n);
      await deleteMallocBdev(r, "M0");
    },
  });

  bdevConformance({
    module: "crypto on malloc, 4K blocks, 512-byte data units",
    startThread: startReactor,
    create: (r) => {
      createMallocBdev(r, { name: "M0", numBlocks: 2048, blockSize: 4096 });
      return Promise.resolve(
        createCryptoBdev(r, keysOf(r), {
          name: "C0",
          baseBdevName: "M0",
          keyName: "k0",
          dataUnitSize: 512,
        }),
      );
    },
    destroy: async (r, n) => {
      await deleteCryptoBdev(r, n);
      await deleteMallocBdev(r, "M0");
    },
  });

  const fileDir = new URL("../../../var/crypto_bdev_test/", import.meta.url).pathname;
  const files = new WeakMap<BdevRegistry, string>();
  bdevConformance({
    module: "crypto on file",
    startThread: startReactor,
    create: async (r) => {
      await Deno.mkdir(fileDir, { recursive: true });
      const path = await Deno.makeTempFile({ dir: fileDir, suffix: ".img" });
      await Deno.truncate(path, 8 * 1024 * 1024);
      files.set(r, path);
      await createFileBdev(r, { name: "F0", filename: path, blockSize: 4096 });
      return createCryptoBdev(r, keysOf(r), { name: "C0", baseBdevName: "F0", keyName: "k0" });
    },
    destroy: async (r, n) => {
      await deleteCryptoBdev(r, n);
      await deleteFileBdev(r, "F0");
      const path = files.get(r);
      if (path !== undefined) await Deno.remove(path);
    },
  });
}

/** A malloc base M0 with crypto bdev C0 on it; channels on both. */
async function withCrypto(
  opts: { blockSize: number; numBlocks: number; dataUnitSize?: number; ioPoolSize?: number },
  fn: (c: BdevChannel, base: BdevChannel, keys: KeyStore, r: BdevRegistry) => Promise<void>,
): Promise<void> {
  const r = new BdevRegistry({ ioPoolSize: opts.ioPoolSize ?? 8 });
  const keys = keysOf(r);
  const { thread, stop } = await startReactor();
  createMallocBdev(r, { name: "M0", numBlocks: opts.numBlocks, blockSize: opts.blockSize });
  createCryptoBdev(r, keys, {
    name: "C0",
    baseBdevName: "M0",
    keyName: "k0",
    dataUnitSize: opts.dataUnitSize,
  });
  const cd = r.open("C0", true), bd = r.open("M0", true);
  const c = cd.getIoChannel(thread), b = bd.getIoChannel(thread);
  try {
    await fn(c, b, keys, r);
  } finally {
    c.close();
    b.close();
    cd.close();
    bd.close();
    await deleteCryptoBdev(r, "C0");
    await deleteMallocBdev(r, "M0");
    await stop();
  }
}

Deno.test({
  name: "crypto bdev: ciphertext on the base is AES-256-XTS with tweak = LBA (openssl reference)",
  ignore: noEngine || !(await hasOpensslCli()),
  async fn() {
    for (const [bs, du] of [[512, 512], [4096, 4096], [4096, 512]] as const) {
      await withCrypto({ blockSize: bs, numBlocks: 1024, dataUnitSize: du }, async (c, b) => {
        const lba = 37, n = 5;
        const plain = new Uint8Array(n * bs);
        fillPattern(plain, lba, bs, 1);
        const copy = plain.slice();
        await runIo(c, (io) => c.write(io, plain, lba, n));
        assertEquals(plain, copy, "a write leaves the caller's buffer as it was");
        const onBase = new Uint8Array(n * bs);
        await runIo(b, (io) => b.read(io, onBase, lba, n));
        assert(toHex(onBase) !== toHex(plain), "ciphertext differs from plaintext");
        const want = await referenceXts(KEY_BYTES, plain, du, lba * (bs / du));
        assertEquals(toHex(onBase), toHex(want), `bs ${bs} du ${du}`);
        const back = new Uint8Array(n * bs);
        await runIo(c, (io) => c.read(io, back, lba, n));
        assertEquals(back, plain);
      });
    }
  },
});

Deno.test({
  name: "crypto bdev: zeroes below read as zeroes; zero-filled writes are encrypted",
  ignore: noEngine,
  async fn() {
    await withCrypto({ blockSize: 512, numBlocks: 1024 }, async (c, b) => {
      const bs = 512;
      // Never written: the base is zero, the crypto bdev reads zeroes.
      const got = new Uint8Array(8 * bs).fill(0xee);
      await runIo(c, (io) => c.read(io, got, 100, 8));
      assertEquals(got, new Uint8Array(8 * bs));
      // A zero-filled write is data like any other: the base gets ciphertext.
      const zeros = new Uint8Array(4 * bs);
      await runIo(c, (io) => c.write(io, zeros, 200, 4));
      const onBase = new Uint8Array(4 * bs);
      await runIo(b, (io) => b.read(io, onBase, 200, 4));
      assert(onBase.some((x) => x !== 0), "zero plaintext must not be stored as zeroes");
      // Zeroed on the base behind our back (as a base unmap does): reads as zeroes.
      const data = new Uint8Array(4 * bs).fill(0x5a);
      await runIo(c, (io) => c.write(io, data, 300, 4));
      await runIo(b, (io) => b.writeZeroes(io, 301, 2));
      const mixed = new Uint8Array(4 * bs);
      await runIo(c, (io) => c.read(io, mixed, 300, 4));
      assertEquals(mixed.subarray(0, bs), data.subarray(0, bs));
      assertEquals(mixed.subarray(bs, 3 * bs), new Uint8Array(2 * bs));
      assertEquals(mixed.subarray(3 * bs), data.subarray(3 * bs));
      // write_zeroes through the crypto bdev passes down: the base holds zeroes.
      await runIo(c, (io) => c.writeZeroes(io, 300, 4));
      await runIo(b, (io) => b.read(io, onBase, 300, 4));
      assertEquals(onBase, new Uint8Array(4 * bs));
    });
  },
});

Deno.test({
  name: "crypto bdev: I/Os larger than a bounce buffer and more I/Os than bounce buffers",
  ignore: noEngine,
  async fn() {
    // A pool larger than the bounce set, so I/Os wait for bounce buffers too.
    const ioPoolSize = 2 * CRYPTO_BOUNCE_COUNT;
    await withCrypto({ blockSize: 512, numBlocks: 16384, ioPoolSize }, async (c) => {
      const bs = 512;
      const big = (3 * CRYPTO_BOUNCE_BYTES) / bs + 5; // four pieces, the last one short
      const plain = new Uint8Array(big * bs);
      fillPattern(plain, 7, bs, 3);
      // Odd vectors straddling blocks and pieces.
      const cuts = [0, 1000, CRYPTO_BOUNCE_BYTES + 17, 2 * CRYPTO_BOUNCE_BYTES, big * bs];
      const pieces = cuts.slice(1).map((end, i) => plain.slice(cuts[i], end));
      await runIo(c, (io) => c.writev(io, pieces, pieces.length, 7, big));
      const back = new Uint8Array(big * bs);
      await runIo(c, (io) => c.read(io, back, 7, big));
      assertEquals(back, plain);
      // 96 writes at once: the layer queues beyond the pool, we beyond the bounce set.
      const bufs = Array.from({ length: 96 }, (_, i) => {
        const u = new Uint8Array(2 * bs);
        fillPattern(u, 5000 + 2 * i, bs, 9);
        return u;
      });
      await Promise.all(bufs.map((u, i) => runIo(c, (io) => c.write(io, u, 5000 + 2 * i, 2))));
      const all = new Uint8Array(192 * bs);
      await runIo(c, (io) => c.read(io, all, 5000, 192));
      bufs.forEach((u, i) => assertEquals(all.subarray(2 * i * bs, (2 * i + 2) * bs), u));
    });
  },
});

Deno.test({
  name: "crypto bdev: keys are taken and given back; bad parameters leave nothing behind",
  ignore: noEngine,
  async fn() {
    const r = new BdevRegistry();
    const keys = keysOf(r);
    createMallocBdev(r, { name: "M0", numBlocks: 64, blockSize: 512 });
    createMallocBdev(r, { name: "M1", numBlocks: 64, blockSize: 512 });
    const e = assertThrows(
      () => createCryptoBdev(r, keys, { name: "C0", baseBdevName: "M0", keyName: "nope" }),
      BdevError,
      'No crypto key named "nope"',
    );
    assertEquals(e.code, -19);
    assertEquals(r.get("M0").toJSON()["claimed"], false, "a failed create releases the base");
    assertThrows(
      () =>
        createCryptoBdev(r, keys, {
          name: "C0",
          baseBdevName: "M0",
          keyName: "k0",
          dataUnitSize: 1024,
        }),
      BdevError,
      "data_unit_size",
    );
    createCryptoBdev(r, keys, { name: "C0", baseBdevName: "M0", keyName: "k0" });
    assertThrows(
      () => createCryptoBdev(r, keys, { name: "C0", baseBdevName: "M1", keyName: "k0" }),
      BdevExistsError,
    );
    assertEquals(r.get("M1").toJSON()["claimed"], false);
    assertEquals(keys.list("k0")[0]?.users, ["C0"]);
    const busy = assertThrows(() => keys.destroy("k0"), BdevError, 'used by crypto bdev(s) "C0"');
    assertEquals(busy.code, -16);
    const info = r.get("C0").toJSON();
    assertEquals((info["driver_specific"] as Record<string, unknown>)["crypto"], {
      base_bdev_name: "M0",
      name: "C0",
      key_name: "k0",
      data_unit_size: 512,
      cipher: "AES_XTS",
    });
    assert(!JSON.stringify(info).includes(KEY.slice(0, 16)), "no key bytes in bdev_get_bdevs");
    await deleteCryptoBdev(r, "C0");
    assertEquals(keys.list("k0")[0]?.users, []);
    keys.destroy("k0");
    await assertRejects(() => deleteCryptoBdev(r, "M0"), BdevError, "not a crypto bdev");
    await deleteMallocBdev(r, "M0");
    await deleteMallocBdev(r, "M1");
  },
});

/**
 * Encryption at rest as an operator runs it: keys in <state-dir>/keys.json,
 * a crypto bdev made over the CLI, the config saved without the key, the
 * volume written and read offline with `sluice dd`, back after a restart;
 * a key file with loose permissions, or a missing key, stops start-up.
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { sluice } from "../../src/testing/cli.ts";
import { type Daemon, startDaemon } from "../../src/testing/daemon.ts";
import { freePort } from "../../src/testing/net.ts";
import { createNativeXtsEngine } from "../../src/crypto/native_xts.ts";

const KEY = "8f2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0a1";
const KEY2 = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const dec = new TextDecoder();

function serveArgs(dir: string): string[] {
  return ["serve", "--state-dir", dir, "--nvmf-listen", `127.0.0.1:${freePort()}`];
}

/** `sluice serve` on `dir` with NVMe/TCP on a free port. */
function startServe(dir: string): Promise<Daemon> {
  return startDaemon(dir, { args: ["--nvmf-listen", `127.0.0.1:${freePort()}`] });
}

Deno.test({
  name: "crypto appliance: key file, crypto bdev over the CLI, dd offline, restart",
  ignore: createNativeXtsEngine() === null,
  async fn() {
    const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "sluice-crypto-" });
    const sock = `${dir}/sluice.sock`;
    try {
      const keys = `${dir}/keys.json`;
      await Deno.writeTextFile(
        keys,
        JSON.stringify({ keys: [{ name: "k0", cipher: "AES_XTS", key: KEY, key2: KEY2 }] }),
        { mode: 0o600 },
      );
      await Deno.writeFile(`${dir}/enc.img`, new Uint8Array(0));
      await Deno.truncate(`${dir}/enc.img`, 8 * 1024 * 1024);

      const first = await startServe(dir);
      try {
        assert(
          first.log.some((l) => l.includes(`loaded 1 crypto key(s) from ${keys}`)),
          first.log.join("\n"),
        );
        for (
          const args of [
            [
              "bdev_file_create",
              "--name",
              "F0",
              "--filename",
              `${dir}/enc.img`,
              "--block_size",
              "4096",
            ],
            ["bdev_crypto_create", "--base_bdev_name", "F0", "--name", "C0", "--key_name", "k0"],
          ]
        ) {
          const r = await sluice(["rpc", "-s", sock, ...args]);
          assertEquals(r.code, 0, dec.decode(r.stderr));
        }
        // dd refuses to touch the volumes of a running appliance.
        const busy = await sluice([
          "dd",
          "--json",
          `${dir}/config.json`,
          "--ib",
          "C0",
          "--of",
          `${dir}/x`,
        ]);
        assertEquals(busy.code, 1);
        assert(dec.decode(busy.stderr).includes("stop it before"), dec.decode(busy.stderr));
        const list = await sluice(["rpc", "-s", sock, "accel_crypto_keys_get"]);
        const text = dec.decode(list.stdout);
        assert(text.includes('"C0"') && !text.includes(KEY.slice(0, 16)), text);
      } finally {
        assertEquals(await first.stop(), 0);
      }
      const cfg = await Deno.readTextFile(`${dir}/config.json`);
      assert(cfg.includes('"key_name": "k0"'), cfg);
      assert(!cfg.includes(KEY.slice(0, 16)) && !cfg.includes(KEY2.slice(0, 16)), cfg);

      // Offline: write an image into the encrypted volume, as an operator initialises it.
      const plain = new Uint8Array(256 * 1024);
      for (let i = 0; i < plain.length; i += 65536) {
        crypto.getRandomValues(plain.subarray(i, i + 65536));
      }
      await Deno.writeFile(`${dir}/plain.img`, plain);
      let r = await sluice([
        "dd",
        "--json",
        `${dir}/config.json`,
        "--if",
        `${dir}/plain.img`,
        "--ob",
        "C0",
      ]);
      assertEquals(r.code, 0, dec.decode(r.stderr));
      assert(dec.decode(r.stdout).includes("Copied 262144 bytes"), dec.decode(r.stdout));
      const raw = (await Deno.readFile(`${dir}/enc.img`)).subarray(0, plain.length);
      assert(raw.some((b, i) => b !== plain[i]), "the base holds ciphertext");

      // The daemon comes back with the volume (key from the file, bdev from the config).
      const second = await startServe(dir);
      try {
        assert(second.log.some((l) => l.includes("bdev C0: crypto")), second.log.join("\n"));
      } finally {
        assertEquals(await second.stop(), 0);
      }
      r = await sluice([
        "dd",
        "--json",
        `${dir}/config.json`,
        "--ib",
        "C0",
        "--of",
        `${dir}/back.img`,
        "--count",
        "64",
      ]);
      assertEquals(r.code, 0, dec.decode(r.stderr));
      assertEquals(await Deno.readFile(`${dir}/back.img`), plain);

      // A key file others can read stops start-up, and says how to fix it.
      await Deno.chmod(keys, 0o644);
      r = await sluice(serveArgs(dir));
      assertEquals(r.code, 1);
      assert(dec.decode(r.stderr).includes("chmod 600"), dec.decode(r.stderr));
      // Without the key the volume cannot be served: start-up stops, naming the key.
      await Deno.remove(keys);
      r = await sluice(serveArgs(dir));
      assertEquals(r.code, 1);
      assert(dec.decode(r.stderr).includes('No crypto key named "k0"'), dec.decode(r.stderr));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

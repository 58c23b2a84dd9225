import { assert, assertEquals } from "../src/testing/assert.ts";
import { hasOpensslCli, referenceXts } from "../src/testing/xts_reference.ts";
import { createNativeXtsEngine } from "../src/crypto/native_xts.ts";
import { dd } from "./dd.ts";
import { main } from "./main.ts";
import { exists } from "./fs.ts";

const noEngine = createNativeXtsEngine() === null;
const KEY = "2718281828459045235360287471352662497757247093699959574966967627";
const KEY2 = "3141592653589793238462643383279502884197169399375105820974944592";
const KEY_BYTES = Uint8Array.from(
  (KEY + KEY2).match(/../g) ?? [],
  (h) => parseInt(h, 16),
);

/** Runs dd, capturing what it prints. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    return { code: await dd(args), out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

interface Lab {
  dir: string;
  cfg: string;
  enc: string;
  plain: Uint8Array;
  plainPath: string;
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice_dd_" });
  try {
    const enc = `${dir}/enc.img`, other = `${dir}/other.img`;
    await Deno.writeFile(enc, new Uint8Array(0));
    await Deno.truncate(enc, 4 * 1024 * 1024);
    await Deno.writeFile(other, new Uint8Array(0));
    await Deno.truncate(other, 1024 * 1024);
    // An "image" that ends inside a block.
    const plain = crypto.getRandomValues(new Uint8Array(64 * 1024)).slice(0, 64 * 1024 - 1000);
    const plainPath = `${dir}/plain.img`;
    await Deno.writeFile(plainPath, plain);
    await Deno.writeTextFile(
      `${dir}/keys.json`,
      JSON.stringify({ keys: [{ name: "k0", cipher: "AES_XTS", key: KEY, key2: KEY2 }] }),
      { mode: 0o600 },
    );
    const cfg = `${dir}/config.json`;
    await Deno.writeTextFile(
      cfg,
      JSON.stringify({
        subsystems: [
          {
            subsystem: "bdev",
            config: [
              {
                method: "bdev_file_create",
                params: { name: "F0", filename: enc, block_size: 512 },
              },
              {
                method: "bdev_crypto_create",
                params: { base_bdev_name: "F0", name: "C0", key_name: "k0" },
              },
              {
                method: "bdev_file_create",
                params: { name: "F1", filename: other, block_size: 4096 },
              },
            ],
          },
          // Exports in the config must not start in an offline copy.
          {
            subsystem: "vhost_blk",
            config: [{
              method: "vhost_create_blk_controller",
              params: { ctrlr: "v0", dev_name: "C0", socket: `${dir}/v0.sock` },
            }],
          },
        ],
      }),
    );
    await fn({ dir, cfg, enc, plain, plainPath });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "dd: an encrypted volume initialised from a file reads back the same; ciphertext is XTS",
  ignore: noEngine || !(await hasOpensslCli()),
  async fn() {
    await withLab(async ({ dir, cfg, enc, plain, plainPath }) => {
      const w = await run(["--json", cfg, "--if", plainPath, "--ob", "C0", "--bs", "512"]);
      assertEquals(w.code, 0, w.err);
      assert(w.out.includes(`Copied ${plain.length} bytes`), w.out);
      assert(w.out.includes("MB/s") && w.out.includes("padded with 488 zero bytes"), w.out);
      assert(!(await exists(`${dir}/v0.sock`)), "the vhost export must not start");

      const back = `${dir}/back.img`;
      const r = await run([
        "--json",
        cfg,
        "--ib",
        "C0",
        "--of",
        back,
        "--bs",
        "512",
        "--count",
        "128",
      ]);
      assertEquals(r.code, 0, r.err);
      const got = await Deno.readFile(back);
      assertEquals(got.length, 128 * 512);
      assertEquals(got.subarray(0, plain.length), plain);
      // 488 bytes of padding, then block 127, never written: zeroes both.
      assertEquals(got.subarray(plain.length), new Uint8Array(1000));

      // On the base file: AES-256-XTS of the padded image, tweak = LBA (127 blocks
      // written); block 127 was never written and stays zero on the base.
      const raw = (await Deno.readFile(enc)).subarray(0, 128 * 512);
      const want = await referenceXts(KEY_BYTES, got.subarray(0, 127 * 512), 512, 0);
      assertEquals(raw.subarray(0, 127 * 512), want);
      assertEquals(raw.subarray(127 * 512), new Uint8Array(512));
      assert(!raw.subarray(0, 512).every((b, i) => b === plain[i]));
    });
  },
});

Deno.test({
  name: "dd: --skip, --seek, --count and bdev to bdev",
  ignore: noEngine,
  async fn() {
    await withLab(async ({ dir, cfg, plain, plainPath }) => {
      // Blocks 1-2 of the image (4 KiB blocks) to blocks 10-11 of the volume.
      let r = await run([
        "--json",
        cfg,
        "--if",
        plainPath,
        "--ob",
        "C0",
        "--skip",
        "1",
        "--seek",
        "10",
        "--count",
        "2",
      ]);
      assertEquals(r.code, 0, r.err);
      // Volume blocks 10-11 to bdev F1 at block 3 (bdev to bdev, through the decryption).
      r = await run([
        "--json",
        cfg,
        "--ib",
        "C0",
        "--ob",
        "F1",
        "--skip",
        "10",
        "--seek",
        "3",
        "--count",
        "2",
      ]);
      assertEquals(r.code, 0, r.err);
      const f1 = await Deno.readFile(`${dir}/other.img`);
      assertEquals(f1.subarray(3 * 4096, 5 * 4096), plain.subarray(4096, 3 * 4096));
      assertEquals(f1.subarray(0, 3 * 4096), new Uint8Array(3 * 4096));
      // And out to a file at an offset.
      const out = `${dir}/out.img`;
      r = await run([
        "--json",
        cfg,
        "--ib",
        "F1",
        "--of",
        out,
        "--skip",
        "3",
        "--seek",
        "1",
        "--count",
        "2",
      ]);
      assertEquals(r.code, 0, r.err);
      const o = await Deno.readFile(out);
      assertEquals(o.length, 3 * 4096);
      assertEquals(o.subarray(4096), plain.subarray(4096, 3 * 4096));
    });
  },
});

Deno.test({
  name: "dd: clear errors for bad bdevs, sizes, keys and arguments",
  ignore: noEngine,
  async fn() {
    await withLab(async ({ dir, cfg, plainPath }) => {
      const cases: [string[], number, string][] = [
        [["--if", plainPath, "--ob", "C0"], 2, "--json FILE is needed"],
        [["--json", cfg, "--if", plainPath], 2, "exactly one output"],
        [["--json", cfg, "--if", plainPath, "--of", "x"], 2, "one side must be a bdev"],
        [
          ["--json", cfg, "--if", plainPath, "--ob", "C0", "--bs", "x"],
          2,
          "--bs must be an integer",
        ],
        [
          ["--json", cfg, "--if", plainPath, "--ob", "C0", "--frob", "1"],
          2,
          "unknown option --frob",
        ],
        [["--json", cfg, "--if", plainPath, "--ob", "nope"], 1, 'no bdev named "nope"'],
        [
          ["--json", cfg, "--if", plainPath, "--ob", "F1", "--bs", "512"],
          1,
          "not a multiple of the block size of bdev F1",
        ],
        [["--json", cfg, "--if", plainPath, "--ob", "F1", "--seek", "250"], 1, "has room for"],
        [
          ["--json", cfg, "--ib", "C0", "--of", `${dir}/x`, "--skip", "100000"],
          1,
          "beyond the end",
        ],
        [["--json", `${dir}/none.json`, "--ib", "C0", "--of", `${dir}/x`], 1, "does not exist"],
        [["--json", cfg, "--key-file", plainPath, "--ib", "C0", "--of", `${dir}/x`], 1, "mode 0"],
      ];
      for (const [args, code, msg] of cases) {
        const r = await run(args);
        assertEquals(r.code, code, `${args.join(" ")}: ${r.err}`);
        assert(r.err.includes(msg), `${args.join(" ")}: "${r.err}" should mention "${msg}"`);
      }
      // Without the key file the crypto bdev cannot be built, and says why.
      await Deno.remove(`${dir}/keys.json`);
      const r = await run(["--json", cfg, "--ib", "C0", "--of", `${dir}/x`]);
      assertEquals(r.code, 1);
      assert(r.err.includes('No crypto key named "k0"'), r.err);
    });
  },
});

Deno.test("dd: wired into the sluice command with --help", async () => {
  const out: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  try {
    assertEquals(await main(["dd", "--help"]), 0);
    assertEquals(await main(["help", "dd"]), 0);
  } finally {
    console.log = log;
  }
  assert(out[0]?.startsWith("Usage: sluice dd --json FILE"), out[0]);
  assertEquals(out[0], out[1]);
});

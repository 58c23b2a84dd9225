/**
 * Encryption at rest end to end: `sluice serve` exports an encrypted volume
 * (crypto bdev over a file bdev, key from <state-dir>/keys.json) as a
 * vhost-user-blk controller or an NVMe/TCP namespace; a QEMU guest makes an
 * ext4 filesystem on it and writes files. With the daemon stopped, the image on the host holds no
 * plaintext (no ext4 superblock, no marker text), while `sluice dd` reads
 * the decrypted volume back with both. After a restart, a second guest
 * mounts the filesystem and finds the files intact.
 * Run with `deno task test:vm crypto`.
 */
import assert from "node:assert/strict";
import { type GuestOptions, outputTail, runGuest } from "./guest.ts";
import { freePort } from "../../src/testing/net.ts";
import { startDaemon } from "../../src/testing/daemon.ts";
import { sluice as runSluice } from "../../src/testing/cli.ts";
import { nvmfExportConfig, vhostBlkConfig } from "../../src/testing/config.ts";

const SCRIPT = new URL("./guest/crypto_fs.sh", import.meta.url);
const VOLUME_BYTES = 64 * 1024 * 1024;
const MARKER = "SLUICE-PLAINTEXT-MARKER";
/** ext4's superblock magic 0xEF53, little-endian at byte 1080 of the device. */
const EXT4_MAGIC_AT = 1080;

interface Report {
  markerSha256: string;
  randomSha256: string;
}

function hasExt4Magic(b: Uint8Array): boolean {
  return b[EXT4_MAGIC_AT] === 0x53 && b[EXT4_MAGIC_AT + 1] === 0xef;
}

function contains(hay: Uint8Array, needle: string): boolean {
  return new TextDecoder("latin1").decode(hay).includes(needle);
}

const NQN = "nqn.2026-11.dev.sluice:crypt";

/** The export part of the config, and how the guest reaches it. */
function exportOf(kind: "vhost" | "nvmf", socket: string, port: number): {
  config: { subsystem: string; config: unknown[] };
  guest: Omit<GuestOptions, "script">;
  env: Record<string, string>;
} {
  if (kind === "vhost") {
    return {
      config: vhostBlkConfig([{ ctrlr: "vhost.crypt", devName: "crypt0", socket }]),
      guest: {
        modules: ["virtio_pci", "virtio_blk", "ext4"],
        sharedMem: true,
        qemuArgs: [
          ...["-chardev", `socket,id=vhost0,path=${socket}`],
          ...["-device", "vhost-user-blk-pci,chardev=vhost0,num-queues=1"],
        ],
      },
      env: { EXPORT: "vhost" },
    };
  }
  return {
    config: nvmfExportConfig({
      nqn: NQN,
      serialNumber: "SLUICECRYPT0001",
      bdevName: "crypt0",
      port,
    }),
    guest: { modules: ["nvme_tcp", "ext4"], net: true },
    env: { EXPORT: "nvmf", ADDR: "10.0.2.2", PORT: String(port), NQN },
  };
}

for (const kind of ["vhost", "nvmf"] as const) {
  Deno.test(`crypto: ext4 on an encrypted volume over ${kind === "vhost" ? "vhost-user-blk" : "NVMe/TCP"} survives a restart; the image is ciphertext`, async () => {
    const nvmfPort = freePort();
    const dir = await Deno.makeTempDir({ prefix: "sluice-vm-crypto-" });
    const socket = `${dir}/vhost.crypt.sock`;
    assert.ok(socket.length < 108, `socket path too long for a unix socket: ${socket}`);
    const image = `${dir}/enc.img`;
    await Deno.writeFile(image, new Uint8Array(0));
    await Deno.truncate(image, VOLUME_BYTES);
    const hex = (n: number) =>
      Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0"))
        .join("");
    await Deno.writeTextFile(
      `${dir}/keys.json`,
      JSON.stringify({ keys: [{ name: "vol0", cipher: "AES_XTS", key: hex(32), key2: hex(32) }] }),
      { mode: 0o600 },
    );
    const { config: exportConfig, guest, env } = exportOf(kind, socket, nvmfPort);
    const config = {
      subsystems: [
        {
          subsystem: "bdev",
          config: [
            {
              method: "bdev_file_create",
              params: { name: "disk0", filename: image, block_size: 512 },
            },
            {
              method: "bdev_crypto_create",
              params: { base_bdev_name: "disk0", name: "crypt0", key_name: "vol0" },
            },
          ],
        },
        exportConfig,
      ],
    };
    const common = { ...guest, smp: 2, timeoutSec: 300 };
    // The default config's listener is not used (a config is given), but keep it off 4420.
    const args = ["--nvmf-listen", `127.0.0.1:${freePort()}`];
    try {
      let sluice = await startDaemon(dir, { config, args, echo: true });
      let report: Report;
      try {
        assert.ok(
          sluice.log.some((l) => l.includes("loaded 1 crypto key(s)")),
          sluice.log.join("\n"),
        );
        const r = await runGuest({
          ...common,
          name: `crypto-${kind}-write`,
          script: SCRIPT,
          env: { ...env, MODE: "write", EXPECT_SHA: "", EXPECT_MARKER_SHA: "" },
        });
        assert.equal(r.exitCode, 0, outputTail(r.output, 60));
        for (const s of ["device", "mkfs", "mount", "write"]) {
          assert.ok(r.output.includes(`STEP ${s} OK`), `step ${s}:\n${outputTail(r.output, 40)}`);
        }
        report = JSON.parse(r.report) as Report;
      } finally {
        assert.equal(await sluice.stop(), 0);
      }

      // At rest: the image is ciphertext. Decrypted by `sluice dd`, it is the filesystem.
      const raw = await Deno.readFile(image);
      assert.ok(!hasExt4Magic(raw), "the ext4 superblock is visible in the image");
      assert.ok(!contains(raw, MARKER), "the marker text is visible in the image");
      const plain = `${dir}/plain.img`;
      const dd = await runSluice([
        "dd",
        "--json",
        `${dir}/config.json`,
        "--ib",
        "crypt0",
        "--of",
        plain,
      ]);
      assert.equal(dd.code, 0, new TextDecoder().decode(dd.stderr));
      const dec = await Deno.readFile(plain);
      assert.equal(dec.length, VOLUME_BYTES);
      assert.ok(hasExt4Magic(dec), "no ext4 superblock in the decrypted volume");
      assert.ok(contains(dec, MARKER), "no marker text in the decrypted volume");
      await Deno.remove(plain);

      // Restart from the saved config and the key file; a new guest mounts and checks.
      sluice = await startDaemon(dir, { args, echo: true });
      try {
        const r = await runGuest({
          ...common,
          name: `crypto-${kind}-verify`,
          tools: kind === "nvmf", // nvme-cli
          script: SCRIPT,
          env: {
            ...env,
            MODE: "verify",
            EXPECT_SHA: report.randomSha256,
            EXPECT_MARKER_SHA: report.markerSha256,
          },
        });
        assert.equal(r.exitCode, 0, outputTail(r.output, 60));
        assert.ok(r.output.includes("STEP verify OK"), outputTail(r.output, 40));
      } finally {
        assert.equal(await sluice.stop(), 0);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

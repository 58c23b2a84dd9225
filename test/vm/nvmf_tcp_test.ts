/**
 * NVMe/TCP against the real Linux initiator: `sluice serve` on the host
 * exports a RAM namespace; a QEMU guest with Debian's kernel runs nvme-cli
 * and fio against it through QEMU's user network (the host is 10.0.2.2).
 * Run with `deno task test:vm nvmf`.
 */
import assert from "node:assert/strict";
import { outputTail, runGuest } from "./guest.ts";
import { rpcCall } from "../../src/rpc/server.ts";
import { freePort } from "../../src/testing/net.ts";
import { type Daemon, startDaemon } from "../../src/testing/daemon.ts";
import { mallocBdevConfig, nvmfExportConfig } from "../../src/testing/config.ts";

const NQN = "nqn.2026-11.dev.sluice:vmtest";
const NUM_BLOCKS = 262144; // 128 MiB of 512-byte blocks

/** The daemon with a config that exports Malloc0 as namespace 1 of NQN on `port`. */
async function startSluice(dir: string, port: number): Promise<Daemon> {
  const config = {
    subsystems: [
      mallocBdevConfig("Malloc0", NUM_BLOCKS),
      nvmfExportConfig({
        nqn: NQN,
        serialNumber: "SLUICE0001",
        modelNumber: "sluice volume",
        bdevName: "Malloc0",
        port,
      }),
    ],
  };
  return await startDaemon(dir, { config, echo: true });
}

/** Answers the guest's "add_ns" by adding a second namespace over RPC. */
function controlServer(port: number, sock: string): Deno.TcpListener {
  const l = Deno.listen({ hostname: "127.0.0.1", port });
  (async () => {
    for await (const conn of l) {
      const buf = new Uint8Array(64);
      const n = await conn.read(buf);
      let answer = "unknown\n";
      if (n !== null && new TextDecoder().decode(buf.subarray(0, n)).includes("add_ns")) {
        try {
          await rpcCall(sock, "bdev_malloc_create", {
            name: "Malloc1",
            num_blocks: 16384,
            block_size: 512,
          });
          await rpcCall(sock, "nvmf_subsystem_add_ns", {
            nqn: NQN,
            namespace: { bdev_name: "Malloc1" },
          });
          answer = "ok\n";
        } catch (e) {
          answer = `error ${e instanceof Error ? e.message : e}\n`;
        }
      }
      await conn.write(new TextEncoder().encode(answer));
      conn.close();
    }
  })().catch(() => {});
  return l;
}

for (const digests of [false, true]) {
  Deno.test(`nvme-tcp: Linux initiator, nvme-cli and fio against sluice (digests ${digests ? "on" : "off"})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-vm-nvmf-" });
    const port = freePort();
    const ctlPort = freePort();
    const child = await startSluice(dir, port);
    const ctl = controlServer(ctlPort, `${dir}/sluice.sock`);
    try {
      const r = await runGuest({
        name: `nvmf-tcp${digests ? "-digests" : ""}`,
        script: new URL("./guest/nvmf_tcp.sh", import.meta.url),
        net: true,
        modules: ["nvme_tcp", "ext4"],
        env: {
          ADDR: "10.0.2.2",
          PORT: String(port),
          NQN,
          NSZE: `0x${NUM_BLOCKS.toString(16)}`,
          CTL_PORT: String(ctlPort),
          DIGEST: digests ? "--hdr-digest --data-digest" : "",
        },
        timeoutSec: 300,
      });
      assert.equal(r.exitCode, 0, outputTail(r.output, 60));
      for (
        const step of [
          "discover",
          "connect",
          "identify",
          "fio",
          "filesystem",
          "discard",
          "hotadd",
          "disconnect",
        ]
      ) {
        assert.ok(
          r.output.includes(`STEP ${step} OK`),
          `step ${step} missing:\n${outputTail(r.output, 40)}`,
        );
      }
    } finally {
      ctl.close();
      await child.stop();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/**
 * vhost-user-blk memory hot-plug with a real QEMU and Linux guest: sluice
 * offers VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, so QEMU gives it the
 * guest's memory region by region (ADD_MEM_REG). While the guest does I/O
 * on the disk, the host hot-adds a 128 MiB DIMM through the QEMU monitor
 * (object_add memory-backend-memfd share=on, device_add pc-dimm); QEMU sends
 * sluice the new region with ADD_MEM_REG while the queue runs, the guest
 * onlines the memory, and I/O (with buffers that can now live in the DIMM)
 * keeps working and verifying. Then the host deletes the DIMM (device_del),
 * the guest ejects it, sluice gets REM_MEM_REG, and I/O still works. Run
 * with `deno task test:vm hot-plug`.
 */
import assert from "node:assert/strict";
import { outputTail, runGuest } from "./guest.ts";
import { labPaths } from "./lab.ts";
import { freePort } from "../../src/testing/net.ts";
import { collectLines, startDaemon } from "../../src/testing/daemon.ts";
import { mallocBdevConfig, vhostBlkConfig } from "../../src/testing/config.ts";

const NUM_BLOCKS = 262144; // 128 MiB of 512-byte blocks
const SCRIPT = new URL("./guest/vhost_hotplug.sh", import.meta.url);
const NAME = "vhost-hotplug";
const DIMM_MIB = 128;

/** Waits for `marker` on the console of this process's run of guest NAME. */
async function waitForConsole(marker: string, signal: AbortSignal): Promise<void> {
  const runs = labPaths().runs;
  const mine = new RegExp(`^${NAME}-.*-${Deno.pid}-\\d+$`);
  while (!signal.aborted) {
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(runs)) if (mine.test(e.name)) names.push(e.name);
    } catch {
      // not there yet
    }
    for (const name of names) {
      const text = await Deno.readTextFile(`${runs}/${name}/serial.log`).catch(() => "");
      if (text.includes(marker)) return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the guest never printed ${marker}`);
}

/** Sends one human monitor command and returns its answer (up to the next prompt). */
async function hmp(path: string, command: string): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  const dec = new TextDecoder();
  let text = "";
  const buf = new Uint8Array(4096);
  const readUntilPrompt = async (count: number) => {
    while ((text.match(/\(qemu\)/g) ?? []).length < count) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
  };
  try {
    await readUntilPrompt(1); // the greeting
    await conn.write(new TextEncoder().encode(command + "\n"));
    await readUntilPrompt(2);
  } finally {
    conn.close();
  }
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").replaceAll("\r", "");
}

Deno.test("vhost-user-blk: memory hot-plug and unplug (pc-dimm) while the guest does I/O; sluice gets ADD_MEM_REG and REM_MEM_REG", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vm-hotplug-" });
  const socket = `${dir}/vhost.0.sock`;
  const monitor = `${dir}/hmp.sock`;
  assert.ok(socket.length < 100 && monitor.length < 100, `paths too long: ${dir}`);
  const lines: string[] = [];
  const sluice = await startDaemon(dir, {
    config: {
      subsystems: [
        mallocBdevConfig("Malloc0", NUM_BLOCKS),
        // Two queues spread over two reactors (queue 0 on a data-path worker): both backends
        // get the memory table, the DIMM and its removal.
        vhostBlkConfig([{
          ctrlr: "vhost.0",
          devName: "Malloc0",
          socket,
          numQueues: 2,
          cpumask: "0x3",
        }]),
      ],
    },
    args: ["--nvmf-listen", `127.0.0.1:${freePort()}`, "--cpumask", "0x3"],
    echo: true,
    onOutput: collectLines(lines),
  });
  const abort = new AbortController();
  try {
    const guest = runGuest({
      name: NAME,
      script: SCRIPT,
      modules: ["virtio_pci", "virtio_blk"],
      sharedMem: true,
      smp: 2,
      memMiB: 512,
      qemuArgs: [
        // Merged with runGuest's -m 512: room for DIMMs.
        ...["-m", "512M,slots=4,maxmem=2G"],
        ...["-monitor", `unix:${monitor},server=on,wait=off`],
        ...["-chardev", `socket,id=vhost0,path=${socket}`],
        ...["-device", "vhost-user-blk-pci,chardev=vhost0,num-queues=2"],
      ],
      env: { NUM_BLOCKS: String(NUM_BLOCKS) },
      timeoutSec: 400,
      signal: abort.signal,
    });
    const plug = (async () => {
      await waitForConsole("HOTPLUG_NOW", abort.signal);
      const before = lines.length;
      const added = await hmp(
        monitor,
        `object_add memory-backend-memfd,id=dimm0mem,size=${DIMM_MIB}M,share=on`,
      );
      assert.ok(!/error/i.test(added), `object_add: ${added}`);
      const dimm = await hmp(monitor, "device_add pc-dimm,id=dimm0,memdev=dimm0mem");
      assert.ok(!/error/i.test(dimm), `device_add: ${dimm}`);
      await waitForConsole("UNPLUG_NOW", abort.signal);
      const unplugMark = lines.length;
      const del = await hmp(monitor, "device_del dimm0");
      assert.ok(!/error/i.test(del), `device_del: ${del}`);
      return [before, unplugMark];
    })();
    plug.catch(() => abort.abort());
    const r = await guest;
    abort.abort();
    assert.equal(r.exitCode, 0, outputTail(r.output, 60));
    const [mark, unplugMark] = await plug;
    for (const step of ["device", "before", "hotplug", "after", "unplug"]) {
      assert.ok(r.output.includes(`STEP ${step} OK`), `step ${step}:\n${outputTail(r.output, 40)}`);
    }
    const report = JSON.parse(r.report) as { blocksBefore: number; blocksAfter: number };
    assert.ok(report.blocksAfter > report.blocksBefore, r.report);

    // sluice was given the guest's RAM region by region at start, and the DIMM while running.
    const log = lines.join("\n");
    assert.ok(log.includes("guest memory added (ADD_MEM_REG)"), log);
    const after = lines.slice(mark).filter((l) => l.includes("guest memory added (ADD_MEM_REG)"));
    assert.ok(
      after.some((l) => l.includes(`(${DIMM_MIB} MiB)`)),
      `no ADD_MEM_REG of the ${DIMM_MIB} MiB DIMM after the hot-plug:\n${log}`,
    );
    // ... and was told when it went (QEMU sends REM_MEM_REG with the region's fd).
    assert.ok(
      lines.slice(unplugMark).some((l) =>
        l.includes("guest memory removed (REM_MEM_REG)") && l.includes(`(${DIMM_MIB} MiB)`)
      ),
      `no REM_MEM_REG of the DIMM after device_del:\n${log}`,
    );
    // The worker's queue shard got the DIMM and its removal too.
    for (const what of ["added (ADD_MEM_REG)", "removed (REM_MEM_REG)"]) {
      assert.ok(
        lines.some((l) =>
          l.includes(`guest memory ${what}`) && l.includes(`(${DIMM_MIB} MiB)`) &&
          l.includes("[queue(s) 0 on reactor 1]")
        ),
        `the worker's shard did not log the DIMM ${what}:\n${log}`,
      );
    }
    assert.ok(!log.includes("stopped:"), `a queue stopped:\n${log}`);
  } finally {
    abort.abort();
    await sluice.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

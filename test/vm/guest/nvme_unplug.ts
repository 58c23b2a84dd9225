/**
 * Runs INSIDE the VFIO lab guest (guest/nvme_unplug.sh): sluice's driver reads from the
 * hotpluggable controller at Deno.args[0] while the host removes it with QMP device_del (after
 * this prints READY_FOR_UNPLUG). The guest's pciehp asks vfio-pci for the device, vfio-pci asks the
 * driver (REQ interrupt), the driver fails its I/O and lets go, the removal completes. Results go
 * to /dev/report as KEY=value lines.
 */
import { BdevIoError, runIo } from "../../../src/bdev/mod.ts";
import { App } from "../../../src/app.ts";

const bdf = Deno.args[0] ?? "";
const report = (k: string, v: unknown) =>
  Deno.writeTextFileSync("/dev/report", `${k}=${typeof v === "string" ? v : JSON.stringify(v)}\n`, {
    append: true,
  });
const logs: string[] = [];
const app = new App(undefined, (m) => {
  logs.push(m);
  console.log(m);
});
app.start();
try {
  await app.call("bdev_nvme_attach_controller", { name: "Nvme0", trtype: "PCIe", traddr: bdf });
  await app.call("bdev_malloc_create", { name: "Malloc0", num_blocks: 256, block_size: 512 });
  const desc = app.bdevs.open("Nvme0n1", true);
  const ch = desc.getIoChannel(app.reactor);
  let ok = 0, failure = 0, asked = false;
  const b = new Uint8Array(4096);
  const started = Date.now();
  for (let i = 0; Date.now() - started < 120_000; i++) {
    try {
      await runIo(ch, (io) => ch.read(io, b, (i % 64) * 8, 8));
      ok++;
    } catch (e) {
      failure = e instanceof BdevIoError ? e.code : -999;
      break;
    }
    if (ok === 50 && !asked) {
      asked = true;
      console.log("READY_FOR_UNPLUG");
    }
    // Let the event loop breathe between reads (the removal watcher runs on it too).
    if (ok % 50 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  report("READS_OK", ok);
  report("FAILURE", failure);
  for (let i = 0; i < 200 && !logs.some((l) => l.includes("released")); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  report("RELEASED", logs.some((l) => l.includes("released")) ? 1 : 0);
  const ctrls = await app.call("bdev_nvme_get_controllers", {}) as Record<string, unknown>[];
  report("STATE", ((ctrls[0]?.ctrlrs as Record<string, unknown>[])[0] ?? {}).state ?? "");
  const m = app.bdevs.open("Malloc0", true);
  const mch = m.getIoChannel(app.reactor);
  await runIo(mch, (io) => mch.write(io, new Uint8Array(512).fill(1), 0, 1));
  report("MALLOC_OK", 1);
  mch.close();
  m.close();
  ch.close();
  desc.close();
  await app.call("bdev_nvme_detach_controller", { name: "Nvme0" });
  report("DETACH_OK", 1);
} finally {
  await app.shutdown();
}

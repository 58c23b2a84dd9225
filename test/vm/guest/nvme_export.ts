/**
 * Runs INSIDE the VFIO lab guest (guest/nvme_export.sh): sluice attaches the emulated NVMe
 * controller at Deno.args[0] with its user-space driver and serves the nvme bdev over NVMe/TCP on
 * 127.0.0.1:4420 (NQN in Deno.args[1]). Writes /tmp/export.ready when serving; on
 * /tmp/export.stop prints the controller's counters as `NVME_FACT <json>` and shuts down (the
 * controller gets its shutdown notification).
 */
import { App } from "../../../src/app.ts";

const [bdf, nqn] = Deno.args;
if (bdf === undefined || nqn === undefined) throw new Error("usage: nvme_export.ts BDF NQN");
const app = new App(undefined, (m) => console.log(m));
app.start();
try {
  const bdevs = await app.call("bdev_nvme_attach_controller", {
    name: "Nvme0",
    trtype: "PCIe",
    traddr: bdf,
  });
  console.log(`attached: ${JSON.stringify(bdevs)}`);
  await app.call("nvmf_create_transport", { trtype: "TCP" });
  await app.call("nvmf_create_subsystem", {
    nqn,
    allow_any_host: true,
    serial_number: "SLUICEVFIO0001",
  });
  await app.call("nvmf_subsystem_add_ns", { nqn, namespace: { bdev_name: "Nvme0n1" } });
  await app.call("nvmf_subsystem_add_listener", {
    nqn,
    listen_address: { trtype: "TCP", adrfam: "IPv4", traddr: "127.0.0.1", trsvcid: "4420" },
  });
  await Deno.writeTextFile("/tmp/export.ready", "1");
  for (;;) {
    try {
      await Deno.stat("/tmp/export.stop");
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const ctrls = await app.call("bdev_nvme_get_controllers", {}) as Record<string, unknown>[];
  const driver = ((ctrls[0]?.ctrlrs as Record<string, unknown>[])[0]?.driver ?? {}) as Record<
    string,
    unknown
  >;
  console.log(`NVME_FACT ${JSON.stringify({ export_stats: driver.stats, state: driver.state })}`);
} finally {
  await app.shutdown();
  console.log("EXPORT_DONE");
}

/**
 * Runs INSIDE the VFIO lab guest (guest/nvme_fault.sh) on an emulated NVMe controller whose
 * drive QEMU throttles to a few IOPS: commands queue in QEMU far longer than the driver's
 * timeout. Each timed-out command gets an Abort (QEMU acknowledges without aborting), then the
 * controller is reset; the I/Os fail with ETIMEDOUT (or EIO for those caught by the reset), none
 * hangs, the appliance keeps answering RPCs, and detach still shuts the controller down.
 */
import { assert, assertEquals } from "../../../src/testing/assert.ts";
import { BdevIoError, runIo } from "../../../src/bdev/mod.ts";
import { nvmeControllerOf } from "../../../src/bdev_modules/nvme/nvme.ts";
import { App } from "../../../src/app.ts";

const BDF = Deno.env.get("NVME_BDF") ?? "";

Deno.test(`nvme over VFIO ${BDF}: commands slowed past the timeout are aborted, the controller reset, the I/Os fail cleanly`, async () => {
  const logs: string[] = [];
  const app = new App(undefined, (m) => {
    logs.push(m);
    console.log(m);
  });
  app.start();
  try {
    await app.call("bdev_nvme_attach_controller", {
      name: "Nvme0",
      trtype: "PCIe",
      traddr: BDF,
      timeout_us: 500_000,
    });
    const ctrl = nvmeControllerOf(app.bdevs, "Nvme0");
    const desc = app.bdevs.open("Nvme0n1", true);
    const ch = desc.getIoChannel(app.reactor);
    try {
      const bs = ch.bdev.blockSize;
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => {
          const b = new Uint8Array(4096);
          return runIo(ch, (io) => ch.read(io, b, i * (4096 / bs), 4096 / bs));
        }),
      );
      await ctrl.settled();
      const codes = results.map((r) =>
        r.status === "fulfilled" ? 0 : r.reason instanceof BdevIoError ? r.reason.code : -999
      );
      console.log(`NVME_FACT ${JSON.stringify({ codes, stats: ctrl.stats, state: ctrl.state })}`);
      assert(codes.some((c) => c === -110), `some I/O failed with ETIMEDOUT: ${codes}`);
      assert(codes.every((c) => c === 0 || c === -110 || c === -5), `clean failures: ${codes}`);
      assert(ctrl.stats.timeouts > 0 && ctrl.stats.aborts > 0, JSON.stringify(ctrl.stats));
      assertEquals(ctrl.stats.resets, 1, JSON.stringify(ctrl.stats));
      assertEquals(ctrl.state, "enabled");
      // The appliance keeps answering.
      const bdevs = await app.call("bdev_get_bdevs", { name: "Nvme0n1" }) as unknown[];
      assertEquals(bdevs.length, 1);
    } finally {
      ch.close();
      desc.close();
    }
    await app.call("bdev_nvme_detach_controller", { name: "Nvme0" });
    assert(logs.some((l) => l.includes("shutdown complete")), "shutdown after the reset");
  } finally {
    await app.shutdown();
  }
});

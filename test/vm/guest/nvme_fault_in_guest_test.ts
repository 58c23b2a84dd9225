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

Deno.test(`nvme over VFIO ${BDF}: with MSI-X completion interrupts the reactor sleeps while slow commands are outstanding`, async () => {
  const app = new App(undefined, (m) => console.log(m));
  app.start();
  try {
    await app.call("bdev_nvme_attach_controller", {
      name: "Nvme0",
      trtype: "PCIe",
      traddr: BDF,
      interrupts: true,
    });
    const ctrl = nvmeControllerOf(app.bdevs, "Nvme0");
    const desc = app.bdevs.open("Nvme0n1", true);
    const ch = desc.getIoChannel(app.reactor);
    try {
      const b = new Uint8Array(4096);
      const parks = app.reactor.stats.idleParks;
      const t0 = performance.now();
      // The drive is throttled to 2 IOPS: most of these wait in QEMU for hundreds of ms.
      for (let i = 0; i < 6; i++) await runIo(ch, (io) => ch.read(io, b, i * 8, 8));
      const ms = performance.now() - t0;
      const parked = app.reactor.stats.idleParks - parks;
      console.log(`NVME_FACT ${JSON.stringify({ interrupts: ctrl.interrupts, parked, ms })}`);
      assertEquals(ctrl.interrupts, true);
      assert(parked > 0, "the reactor parked while commands were outstanding");
    } finally {
      ch.close();
      desc.close();
    }
    await app.call("bdev_nvme_detach_controller", { name: "Nvme0" });
  } finally {
    await app.shutdown();
  }
});

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

Deno.test(`nvme over VFIO ${BDF}: removing the PCI device fails the I/O with EIO, the driver releases it, the appliance stays up`, async () => {
  const logs: string[] = [];
  const app = new App(undefined, (m) => {
    logs.push(m);
    console.log(m);
  });
  app.start();
  try {
    await app.call("bdev_nvme_attach_controller", { name: "Nvme0", trtype: "PCIe", traddr: BDF });
    await app.call("bdev_malloc_create", { name: "Malloc0", num_blocks: 256, block_size: 512 });
    const desc = app.bdevs.open("Nvme0n1", true);
    const ch = desc.getIoChannel(app.reactor);
    let ok = 0;
    let failure = 0;
    try {
      // Reads keep going while the kernel removes the device under vfio-pci: vfio-pci asks the
      // driver for it back (REQ interrupt), the driver fails its I/O and lets go, the removal ends.
      const reads = (async () => {
        const b = new Uint8Array(4096);
        for (let i = 0; i < 100_000; i++) {
          try {
            await runIo(ch, (io) => ch.read(io, b, (i % 64) * 8, 8));
            ok++;
          } catch (e) {
            failure = e instanceof BdevIoError ? e.code : -999;
            return;
          }
        }
      })();
      while (ok < 4) await new Promise((r) => setTimeout(r, 10));
      // The write to `remove` blocks until vfio-pci has the device back: another process.
      const remove = new Deno.Command("sh", {
        args: ["-c", `echo 1 > /sys/bus/pci/devices/${BDF}/remove`],
      }).output();
      await reads;
      const rm = await remove;
      console.log(`NVME_FACT ${JSON.stringify({ reads_ok: ok, failure, remove_rc: rm.code })}`);
      assertEquals(failure, -5, "the first failed read says EIO");
      assertEquals(rm.code, 0);
      let gone = false;
      try {
        await Deno.stat(`/sys/bus/pci/devices/${BDF}`);
      } catch {
        gone = true;
      }
      assert(gone, "the device left the PCI tree");
      const ctrls = await app.call("bdev_nvme_get_controllers", {}) as Record<string, unknown>[];
      const state = ((ctrls[0]?.ctrlrs as Record<string, unknown>[])[0] as Record<string, unknown>)
        .state;
      assertEquals(state, "removed");
      // Everything else still serves.
      const m = app.bdevs.open("Malloc0", true);
      const mch = m.getIoChannel(app.reactor);
      const w = new Uint8Array(512).fill(7);
      await runIo(mch, (io) => mch.write(io, w, 0, 1));
      mch.close();
      m.close();
    } finally {
      ch.close();
      desc.close();
    }
    await app.call("bdev_nvme_detach_controller", { name: "Nvme0" });
    assert(logs.some((l) => l.includes("released")), "the driver released the device");
  } finally {
    await app.shutdown();
  }
});

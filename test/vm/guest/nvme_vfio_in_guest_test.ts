/**
 * Runs INSIDE the VFIO lab guest (test/vm/nvme_vfio_test.ts packs the tree and starts it with
 * `deno test -A --no-check`): sluice's user-space NVMe driver on QEMU's emulated controllers,
 * bound to vfio-pci, behind the emulated intel-iommu.
 *
 * - the block device conformance suite on the controller at NVME_CONF_BDF (attached and detached
 *   for every case: bring-up, FLR, shutdown each time);
 * - through the App's RPCs on NVME_DATA_BDF: attach, get_controllers, the host's bytes read back,
 *   a write that the host finds in its image file afterwards, a large multi-command transfer
 *   with PRP lists, flush, detach (shutdown notification).
 * Facts for the host side are printed as `NVME_FACT <json>` lines.
 */
import { bdevConformance, fillPattern } from "../../../src/testing/bdev_conformance.ts";
import { startReactor } from "../../../src/testing/reactor_thread.ts";
import { assert, assertEquals } from "../../../src/testing/assert.ts";
import { runIo } from "../../../src/bdev/mod.ts";
import {
  attachNvmeController,
  detachNvmeController,
  nvmeControllerOf,
} from "../../../src/bdev_modules/nvme/nvme.ts";
import { App } from "../../../src/app.ts";

const CONF = Deno.env.get("NVME_CONF_BDF") ?? "";
const DATA = Deno.env.get("NVME_DATA_BDF") ?? "";
const HOST_TOKEN = Deno.env.get("HOST_TOKEN") ?? "";
const HOST_TOKEN_AT = Number(Deno.env.get("HOST_TOKEN_AT") ?? "0");
const GUEST_TOKEN = Deno.env.get("GUEST_TOKEN") ?? "";
const GUEST_TOKEN_AT = Number(Deno.env.get("GUEST_TOKEN_AT") ?? "0");

function fact(o: Record<string, unknown>): void {
  console.log(`NVME_FACT ${JSON.stringify(o)}`);
}

bdevConformance({
  module: `nvme over VFIO ${CONF}`,
  startThread: startReactor,
  async create(registry) {
    const names = await attachNvmeController(
      registry,
      { name: "NvmeC", trtype: "PCIe", traddr: CONF },
      (m) => console.log(m),
    );
    return names[0] as string;
  },
  async destroy(registry) {
    const ctrl = nvmeControllerOf(registry, "NvmeC");
    const stats = { ...ctrl.stats, sgl: ctrl.sgl };
    await detachNvmeController(registry, "NvmeC");
    fact({ conformance_case_stats: stats, state_after_detach: ctrl.state });
  },
});

Deno.test(`nvme over VFIO ${DATA}: RPC attach, host data, guest write, PRP-list transfer, flush, reset, idle parks, detach`, async () => {
  const app = new App(undefined, (m) => console.log(m));
  app.start();
  try {
    const names = await app.call("bdev_nvme_attach_controller", {
      name: "Nvme1",
      trtype: "PCIe",
      traddr: DATA,
      // The conformance cases use SGLs (QEMU's controller has them); this one PRPs and PRP lists.
      use_sgl: false,
    });
    assertEquals(names, ["Nvme1n1"]);
    const ctrls = await app.call("bdev_nvme_get_controllers", { name: "Nvme1" });
    fact({ get_controllers: ctrls });
    const desc = app.bdevs.open("Nvme1n1", true);
    const ch = desc.getIoChannel(app.reactor);
    try {
      const bs = ch.bdev.blockSize;
      const blk = new Uint8Array(4096);
      await runIo(ch, (io) => ch.read(io, blk, HOST_TOKEN_AT / bs, 4096 / bs));
      const host = new TextDecoder().decode(blk.subarray(0, HOST_TOKEN.length));
      fact({ host_token_read: host });
      assertEquals(host, HOST_TOKEN);

      const w = new Uint8Array(4096);
      w.set(new TextEncoder().encode(GUEST_TOKEN));
      await runIo(ch, (io) => ch.write(io, w, GUEST_TOKEN_AT / bs, 4096 / bs));

      // 1 MiB + 512 bytes at an odd LBA: several commands, PRP lists, a partial last page.
      const n = (1 << 20) / bs + 1;
      const big = new Uint8Array(n * bs);
      fillPattern(big, 4097, bs, 5);
      await runIo(ch, (io) => ch.write(io, big, 4097, n));
      const back = new Uint8Array(n * bs);
      await runIo(ch, (io) => ch.read(io, back, 4097, n));
      assert(back.every((b, i) => b === big[i]), "1 MiB transfer reads back");
      await runIo(ch, (io) => ch.flush(io, 0, ch.bdev.numBlocks));
      // A reset by RPC (disable, enable, queues recreated): the data is still there after it.
      assertEquals(await app.call("bdev_nvme_reset_controller", { name: "Nvme1" }), true);
      back.fill(0);
      await runIo(ch, (io) => ch.read(io, back, 4097, n));
      assert(back.every((b, i) => b === big[i]), "the transfer reads back after a reset");
      // Idle with the channel open: the poller reports no work, the reactor sleeps in the kernel.
      await new Promise((r) => setTimeout(r, 300));
      const busy = app.reactor.stats.busyIterations;
      await new Promise((r) => setTimeout(r, 1000));
      fact({
        idle_busy_iterations: app.reactor.stats.busyIterations - busy,
        parked: app.reactor.parked,
      });
      assertEquals(app.reactor.stats.busyIterations, busy, "no busy iterations while idle");
      assert(app.reactor.parked, "the reactor is parked while the controller is idle");
      const ctrl = nvmeControllerOf(app.bdevs, "Nvme1");
      fact({ data_stats: ctrl.stats, transfer_bytes: ctrl.transferBytes, sgl: ctrl.sgl });
      assertEquals(ctrl.sgl, false);
      assert(ctrl.stats.ioCommands > n * bs / ctrl.transferBytes, "split into several commands");
    } finally {
      ch.close();
      desc.close();
    }
    assertEquals(await app.call("bdev_nvme_detach_controller", { name: "Nvme1" }), true);
    assertEquals(await app.call("bdev_nvme_get_controllers", {}), []);
  } finally {
    await app.shutdown();
  }
});

/**
 * RPCs of the nvme bdev (SPDK's names): bdev_nvme_attach_controller,
 * bdev_nvme_detach_controller, bdev_nvme_reset_controller, bdev_nvme_get_controllers. PCIe only: the
 * appliance drives local controllers; NVMe/TCP is what it serves.
 * @module
 */
import type { AppContext } from "../../rpc/context.ts";
import type { RpcTable } from "../../rpc/rpc.ts";
import { RpcError, RpcParamsError } from "../../rpc/errors.ts";
import {
  attachNvmeController,
  detachAllNvmeControllers,
  detachNvmeController,
  getNvmeControllers,
  nvmeControllerOf,
} from "./nvme.ts";

const BDF = /^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\.[0-7]$/;

/** Registers the nvme methods. */
export function registerNvmeRpcs(table: RpcTable<AppContext>): void {
  table.register("bdev_nvme_attach_controller", {
    help:
      "Attach a local NVMe controller (PCIe, bound to vfio-pci) and create <name>n<nsid> bdevs (params: name, trtype, traddr, io_queue_depth, max_transfer_bytes, timeout_us, timeout_admin_us, use_sgl, interrupts)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    const trtype = p.str("trtype");
    if (trtype.toLowerCase() !== "pcie") {
      throw new RpcParamsError(`"trtype" must be "PCIe" (local controllers), got "${trtype}"`);
    }
    const raw = p.str("traddr", BDF, "a PCI address like 0000:00:04.0");
    const traddr = raw.length === 7 ? `0000:${raw.toLowerCase()}` : raw.toLowerCase();
    const ioQueueDepth = p.optInt("io_queue_depth", { min: 2, max: 1024 });
    const maxTransferBytes = p.optInt("max_transfer_bytes", { min: 4096, max: 2 * 1024 * 1024 });
    const timeoutUs = p.optInt("timeout_us", { min: 1000, max: 3600 * 1_000_000 });
    const timeoutAdminUs = p.optInt("timeout_admin_us", { min: 1000, max: 3600 * 1_000_000 });
    const useSgl = p.optBool("use_sgl");
    const interrupts = p.optBool("interrupts");
    // SPDK options that mean nothing for a local PCIe controller.
    p.neutral("adrfam", ["", "pcie", "PCIe"], "PCIe has no address family");
    p.neutral("prchk_reftag", [false], "protection information is not supported");
    p.neutral("prchk_guard", [false], "protection information is not supported");
    p.done();
    return await attachNvmeController(ctx.bdevs, {
      name,
      trtype,
      traddr,
      options: {
        ioQueueDepth,
        maxTransferBytes,
        ioTimeoutMs: timeoutUs === undefined ? undefined : timeoutUs / 1000,
        adminTimeoutMs: timeoutAdminUs === undefined ? undefined : timeoutAdminUs / 1000,
        useSgl,
        interrupts,
      },
    }, ctx.log);
  });

  table.register("bdev_nvme_detach_controller", {
    help:
      "Delete an NVMe controller's bdevs, shut it down (CC.SHN) and release the device (params: name, trtype, traddr)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    const trtype = p.optStr("trtype");
    const traddr = p.optStr("traddr");
    p.done();
    if (trtype !== undefined || traddr !== undefined) {
      const [c] = getNvmeControllers(ctx.bdevs, name);
      const trid = ((c?.ctrlrs as Record<string, unknown>[])[0]?.trid ?? {}) as Record<
        string,
        string
      >;
      if (trtype !== undefined && trtype.toLowerCase() !== "pcie") {
        throw new RpcParamsError(`controller "${name}" is PCIe, not ${trtype}`);
      }
      if (traddr !== undefined && traddr.toLowerCase() !== trid.traddr) {
        throw new RpcParamsError(`controller "${name}" is at ${trid.traddr}, not ${traddr}`);
      }
    }
    await detachNvmeController(ctx.bdevs, name);
    return true;
  });

  table.register("bdev_nvme_reset_controller", {
    help: "Reset an NVMe controller: outstanding I/Os fail, queues are recreated (params: name)",
    mutating: true,
  }, async (p, ctx) => {
    const name = p.str("name");
    p.done();
    const ctrl = nvmeControllerOf(ctx.bdevs, name);
    await ctrl.reset("requested by bdev_nvme_reset_controller");
    await ctrl.settled();
    if (ctrl.state !== "enabled") {
      throw new RpcError(-5, `nvme controller "${name}" is ${ctrl.state}: ${ctrl.failReason}`);
    }
    return true;
  });

  table.register("bdev_nvme_get_controllers", {
    help: "List NVMe controllers (params: name)",
    mutating: false,
  }, (p, ctx) => {
    const name = p.optStr("name");
    p.done();
    return Promise.resolve(getNvmeControllers(ctx.bdevs, name));
  });
}

/** At exit: every controller gets its shutdown notification. */
export async function shutdownNvme(ctx: AppContext): Promise<void> {
  await detachAllNvmeControllers(ctx.bdevs);
}

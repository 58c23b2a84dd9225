import { assertEquals, assertRejects } from "../../testing/assert.ts";
import { App } from "../../app.ts";
import { RpcError } from "../../rpc/errors.ts";

Deno.test("nvme RPCs: registered with SPDK's names; bad params and a missing device give clear errors", async () => {
  const app = new App();
  try {
    for (
      const m of [
        "bdev_nvme_attach_controller",
        "bdev_nvme_detach_controller",
        "bdev_nvme_reset_controller",
        "bdev_nvme_get_controllers",
      ]
    ) {
      assertEquals(app.rpc.info(m) !== undefined, true, m);
    }
    assertEquals(await app.call("bdev_nvme_get_controllers", {}), []);
    await assertRejects(
      () =>
        app.call("bdev_nvme_attach_controller", { name: "N", trtype: "TCP", traddr: "1.2.3.4" }),
      RpcError,
      "PCIe",
    );
    await assertRejects(
      () => app.call("bdev_nvme_attach_controller", { name: "N", trtype: "PCIe", traddr: "nope" }),
      RpcError,
      "PCI address",
    );
    await assertRejects(
      () =>
        app.call("bdev_nvme_attach_controller", {
          name: "N",
          trtype: "PCIe",
          traddr: "0000:fe:1f.7",
          bogus: 1,
        }),
      RpcError,
      "bogus",
    );
    // No such device on this machine: the error names it (VFIO's checks come after).
    await assertRejects(
      () =>
        app.call("bdev_nvme_attach_controller", { name: "N", trtype: "PCIe", traddr: "fe:1f.7" }),
      RpcError,
      "no PCI device 0000:fe:1f.7",
    );
    await assertRejects(
      () => app.call("bdev_nvme_detach_controller", { name: "N" }),
      RpcError,
      'no nvme controller named "N"',
    );
    await assertRejects(
      () => app.call("bdev_nvme_reset_controller", { name: "N" }),
      RpcError,
      'no nvme controller named "N"',
    );
  } finally {
    await app.shutdown();
  }
});

/**
 * The VFIO lab end to end (test/vm/vfio.ts): a q35 guest with an emulated IOMMU and two emulated
 * NVMe controllers backed by files here. In the guest (guest/vfio_lab.sh):
 *
 * - `sluice setup bind` refuses a named device whose namespace is mounted, skips it when no
 *   address is named, refuses a bad address and a PCI device that is not NVMe, and binds the free
 *   controller to vfio-pci; `sluice setup status --json` shows vfio-pci and its IOMMU group;
 * - Deno opens /dev/vfio/vfio and /dev/vfio/<group>, sets the type1 IOMMU, gets the device fd,
 *   and reads the PCI vendor id and NVMe CAP/VS through it (guest/vfio_check.ts);
 * - `sluice setup unbind` refuses while a process holds the VFIO group (the kernel would block);
 * - `sluice setup unbind` gives the controller back to the kernel's nvme driver: its namespace
 *   reappears, with the data the host wrote into the image before boot and the data the guest
 *   wrote through the kernel before binding (which the host then finds in its file).
 *
 * Run with `deno task test:vm vfio_lab`.
 */
import assert from "node:assert/strict";
import { outputTail } from "./guest.ts";
import {
  createDiskImage,
  nvmePciAddress,
  parseReport,
  runUnplugGuest,
  runVfioGuest,
} from "./vfio.ts";

const HOST_TOKEN = "SLUICE-HOST-WROTE-THIS-BEFORE-BOOT";
const HOST_TOKEN_AT = 1 << 20;
const GUEST_TOKEN = "SLUICE-GUEST-WROTE-THIS-THROUGH-THE-KERNEL";
const GUEST_TOKEN_AT = 2 << 20;
/** QEMU's emulated NVMe: Red Hat's vendor id, device 0x0010. */
const QEMU_NVME_VENDOR = 0x1b36;

interface StatusDevice {
  address: string;
  driver: string | null;
  iommuGroup: number | null;
  vfioNode: string | null;
  blockDevices: string[];
  inUse: string[];
}

Deno.test("vfio_lab: sluice setup binds an emulated NVMe to vfio-pci, Deno opens its group, unbind gives it back with the data", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vfio-lab-" });
  try {
    const a = await createDiskImage(`${dir}/nvm0.img`, 64, {
      at: HOST_TOKEN_AT,
      bytes: new TextEncoder().encode(HOST_TOKEN),
    });
    const b = await createDiskImage(`${dir}/nvm1.img`, 64);
    const r = await runVfioGuest({
      name: "vfio-lab",
      disks: [{ path: a }, { path: b }],
      modules: ["ext4"],
      script: new URL("./guest/vfio_lab.sh", import.meta.url),
      env: {
        HOST_TOKEN,
        HOST_TOKEN_AT: String(HOST_TOKEN_AT),
        GUEST_TOKEN,
        GUEST_TOKEN_AT: String(GUEST_TOKEN_AT),
      },
      timeoutSec: 400,
    });
    const tail = outputTail(r.output, 40);
    assert.equal(r.exitCode, 0, tail);
    const rep = parseReport(r.report);
    const get = (k: string) => {
      const v = rep.get(k);
      assert.ok(v !== undefined, `no ${k} in the report:\n${r.report}\n${tail}`);
      return v;
    };
    const [addrA, addrB] = [nvmePciAddress(0), nvmePciAddress(1)];

    assert.equal(get("DENO_TEST_RC"), "0", tail);
    assert.equal(get("BEFORE_DRIVER"), "nvme");
    assert.equal(get("HOST_TOKEN_BEFORE"), HOST_TOKEN);
    // Refusals: mounted (1, with the mount named), malformed address (2), not NVMe (1).
    assert.equal(get("BIND_MOUNTED_RC"), "1", tail);
    assert.equal(get("BIND_MOUNTED_MSG"), "ok", tail);
    assert.equal(get("BAD_ADDR_RC"), "2", tail);
    assert.equal(get("NOT_NVME_RC"), "1", tail);
    assert.equal(get("NOT_NVME_MSG"), "ok", tail);

    // Bind without addresses: A moves to vfio-pci, B (mounted) stays on nvme.
    assert.equal(get("BIND_RC"), "0", tail);
    assert.equal(get("STATUS_RC"), "0", tail);
    const status = JSON.parse(get("STATUS_BOUND")) as {
      iommuGroups: number;
      vfioPci: boolean;
      vfioIommuType1: boolean;
      vfioContainer: boolean;
      devices: StatusDevice[];
    };
    assert.ok(status.iommuGroups > 0);
    assert.deepEqual(
      [status.vfioPci, status.vfioIommuType1, status.vfioContainer],
      [true, true, true],
    );
    const devA = status.devices.find((d) => d.address === addrA);
    const devB = status.devices.find((d) => d.address === addrB);
    const group = Number(get("DEV_VFIO_GROUP"));
    assert.ok(Number.isInteger(group) && group >= 0);
    assert.deepEqual(
      devA && [devA.driver, devA.iommuGroup, devA.vfioNode, devA.blockDevices],
      ["vfio-pci", group, `/dev/vfio/${group}`, []],
      JSON.stringify(status),
    );
    assert.equal(devB?.driver, "nvme", JSON.stringify(status));
    assert.ok(devB?.inUse.some((w) => w.includes("mounted on /mnt/b")), JSON.stringify(status));

    // Deno in the guest drove the VFIO ioctls on the group and read the controller's registers.
    assert.equal(get("VFIO_CHECK_RC"), "0", tail);
    const check = JSON.parse(get("VFIO_CHECK")) as {
      apiVersionOk: boolean;
      type1: boolean;
      viable: boolean;
      numRegions: number;
      bar0Size: number;
      vendorId: number;
      cap: string;
      vs: string;
    };
    assert.deepEqual([check.apiVersionOk, check.type1, check.viable], [true, true, true]);
    assert.equal(check.vendorId, QEMU_NVME_VENDOR);
    assert.ok(check.numRegions >= 9, `regions ${check.numRegions}`); // BAR0-5, ROM, config, VGA
    assert.ok(check.bar0Size >= 0x1000, `BAR0 ${check.bar0Size}`);
    // CAP.MQES (bits 15:0) is the max queue entries minus one, never 0 for a real controller;
    // VS is 1.x (QEMU 7.2 says 1.4).
    assert.ok((BigInt(`0x${check.cap}`) & 0xffffn) > 0n, `CAP ${check.cap}`);
    assert.equal(Number(`0x${check.vs}`) >>> 16, 1, `VS ${check.vs}`);

    // A process holding the group: unbind refuses (1) and names it, instead of hanging.
    assert.equal(get("UNBIND_HELD_RC"), "1", tail);
    assert.equal(get("UNBIND_HELD_MSG"), "ok", tail);

    // Unbind: the kernel has the controller back, with both writes.
    assert.equal(get("UNBIND_RC"), "0", tail);
    assert.equal(get("AFTER_DRIVER"), "nvme");
    assert.match(get("NS_BACK"), /^\/dev\/nvme\d+n1$/);
    assert.equal(get("HOST_TOKEN_AFTER"), HOST_TOKEN);
    assert.equal(get("GUEST_TOKEN_AFTER"), GUEST_TOKEN);
    assert.equal(get("UNBIND_NONE_RC"), "0", tail);

    const onHost = await Deno.readFile(a);
    const guestBytes = onHost.subarray(GUEST_TOKEN_AT, GUEST_TOKEN_AT + GUEST_TOKEN.length);
    assert.equal(new TextDecoder().decode(guestBytes), GUEST_TOKEN);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vfio_lab: a hotpluggable controller on vfio-pci is removed from the running guest (device_del), and sluice setup no longer lists it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vfio-unplug-" });
  try {
    const { r, rep, tail, addresses: [addrA] } = await runUnplugGuest({
      dir,
      name: "vfio-unplug",
      script: new URL("./guest/vfio_unplug.sh", import.meta.url),
      timeoutSec: 300,
      tailLines: 40,
    });
    assert.equal(r.exitCode, 0, tail);
    assert.equal(rep.get("BIND_RC"), "0", tail);
    assert.equal(rep.get("BOUND_DRIVER"), "vfio-pci", tail);
    assert.equal(rep.get("GONE"), "1", tail);
    assert.equal(rep.get("STATUS_RC"), "0", tail);
    const status = JSON.parse(rep.get("STATUS") ?? "{}") as { devices: StatusDevice[] };
    assert.deepEqual(status.devices.map((d) => [d.address, d.driver]), [[addrA, "nvme"]]);
    // The address is gone: a clear error, not a crash.
    assert.equal(rep.get("UNBIND_GONE_RC"), "1", tail);
    assert.match(r.output, /sluice setup: no PCI device 0000:01:00\.0/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

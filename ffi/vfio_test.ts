import { assertEquals, assertThrows } from "../src/testing/assert.ts";
import {
  iommuGroupOf,
  normalizeBdf,
  pciDriverOf,
  VfioContainer,
  VfioError,
  VfioIoctl,
  VfioPciFunction,
} from "./vfio.ts";

Deno.test("vfio: ioctl numbers are _IO(';', 100 + n) as in linux/vfio.h", () => {
  // The values the lab's vfio-consts.c prints from the kernel headers.
  assertEquals(VfioIoctl.GET_API_VERSION, 0x3b64);
  assertEquals(VfioIoctl.CHECK_EXTENSION, 0x3b65);
  assertEquals(VfioIoctl.SET_IOMMU, 0x3b66);
  assertEquals(VfioIoctl.GROUP_GET_STATUS, 0x3b67);
  assertEquals(VfioIoctl.GROUP_SET_CONTAINER, 0x3b68);
  assertEquals(VfioIoctl.GROUP_GET_DEVICE_FD, 0x3b6a);
  assertEquals(VfioIoctl.DEVICE_GET_INFO, 0x3b6b);
  assertEquals(VfioIoctl.DEVICE_GET_REGION_INFO, 0x3b6c);
  assertEquals(VfioIoctl.DEVICE_RESET, 0x3b6f);
  assertEquals(VfioIoctl.IOMMU_MAP_DMA, 0x3b71);
  assertEquals(VfioIoctl.IOMMU_UNMAP_DMA, 0x3b72);
});

Deno.test("vfio: PCI addresses are normalized; garbage is refused", () => {
  assertEquals(normalizeBdf("0000:00:04.0"), "0000:00:04.0");
  assertEquals(normalizeBdf("00:04.0"), "0000:00:04.0");
  assertEquals(normalizeBdf("0000:AF:1F.7"), "0000:af:1f.7");
  assertThrows(() => normalizeBdf("0000:00:04"), VfioError, "not a PCI address");
  assertThrows(() => normalizeBdf("../../etc"), VfioError, "not a PCI address");
});

Deno.test("vfio: a missing device, IOMMU group or binding gives a clear error", async () => {
  const sys = await Deno.makeTempDir({ prefix: "vfio_sysfs_" });
  try {
    assertThrows(() => iommuGroupOf("0000:00:04.0", sys), VfioError, "no PCI device 0000:00:04.0");
    const dev = `${sys}/bus/pci/devices/0000:00:04.0`;
    await Deno.mkdir(dev, { recursive: true });
    assertThrows(() => iommuGroupOf("0000:00:04.0", sys), VfioError, "no IOMMU group");
    await Deno.mkdir(`${sys}/kernel/iommu_groups/5`, { recursive: true });
    await Deno.symlink(`${sys}/kernel/iommu_groups/5`, `${dev}/iommu_group`);
    assertEquals(iommuGroupOf("0000:00:04.0", sys), 5);
    assertEquals(pciDriverOf("0000:00:04.0", sys), "");
    assertThrows(() => VfioPciFunction.open("0000:00:04.0", sys), VfioError, "not vfio-pci");
    await Deno.mkdir(`${sys}/bus/pci/drivers/nvme`, { recursive: true });
    await Deno.symlink(`${sys}/bus/pci/drivers/nvme`, `${dev}/driver`);
    assertThrows(() => VfioPciFunction.open("0000:00:04.0", sys), VfioError, 'bound to "nvme"');
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});

Deno.test({
  name: "vfio: without /dev/vfio/vfio the container open says to load the module",
  ignore: (() => {
    try {
      Deno.statSync("/dev/vfio/vfio");
      return true;
    } catch {
      return false;
    }
  })(),
  fn() {
    assertThrows(() => VfioContainer.open(), VfioError, "vfio module");
  },
});

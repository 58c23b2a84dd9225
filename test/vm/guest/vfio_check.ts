/**
 * Guest side of the VFIO lab smoke test (vfio_lab_test.ts): proves that Deno in the guest can use
 * a device `sluice setup bind` gave to vfio-pci, with the VFIO ioctls of linux/vfio.h on a
 * container and a group — not the driver (src/nvme_vfio), only the plumbing it stands on.
 *
 *   deno run -A vfio_check.ts <iommu group> <PCI address>
 *
 * Prints one JSON line: the API version, TYPE1 support, group viability, the device's regions,
 * its PCI vendor id (config space) and the NVMe CAP and VS registers (BAR0, read with pread on
 * the device fd: no mmap, no DMA).
 * @module
 */
import { check, cstr, errno, O_RDWR, sym } from "../../../ffi/libc.ts";

// linux/vfio.h: _IO(VFIO_TYPE = ';', VFIO_BASE + n)
const VFIO_IO = (n: number) => BigInt((0x3b << 8) | (100 + n));
const VFIO_GET_API_VERSION = VFIO_IO(0);
const VFIO_CHECK_EXTENSION = VFIO_IO(1);
const VFIO_SET_IOMMU = VFIO_IO(2);
const VFIO_GROUP_GET_STATUS = VFIO_IO(3);
const VFIO_GROUP_SET_CONTAINER = VFIO_IO(4);
const VFIO_GROUP_GET_DEVICE_FD = VFIO_IO(6);
const VFIO_DEVICE_GET_INFO = VFIO_IO(7);
const VFIO_DEVICE_GET_REGION_INFO = VFIO_IO(8);
const VFIO_API_VERSION = 0;
const VFIO_TYPE1_IOMMU = 1;
const VFIO_GROUP_FLAGS_VIABLE = 1;
const VFIO_PCI_BAR0_REGION_INDEX = 0;
const VFIO_PCI_CONFIG_REGION_INDEX = 7;

const [groupArg, address] = Deno.args;
if (groupArg === undefined || address === undefined) {
  console.error("usage: vfio_check.ts <iommu group> <PCI address>");
  Deno.exit(2);
}

const ptr = (b: Uint8Array<ArrayBuffer>) => Deno.UnsafePointer.of(b);
/** An ioctl whose argument is an integer passed by value. */
const ioctlValue = (fd: number, req: bigint, v: number) =>
  sym.ioctl(fd, req, Deno.UnsafePointer.create(BigInt(v)));
const ioctlBuf = (name: string, fd: number, req: bigint, b: Uint8Array<ArrayBuffer>) =>
  check(name, sym.ioctl(fd, req, ptr(b)));

function regionInfo(device: number, index: number): { size: bigint; offset: bigint } {
  // struct vfio_region_info { u32 argsz, flags, index, cap_offset; u64 size, offset; }
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setUint32(0, 32, true);
  v.setUint32(8, index, true);
  ioctlBuf("VFIO_DEVICE_GET_REGION_INFO", device, VFIO_DEVICE_GET_REGION_INFO, b);
  return { size: v.getBigUint64(16, true), offset: v.getBigUint64(24, true) };
}

function pread32(fd: number, at: bigint): number {
  const b = new Uint8Array(4);
  const n = Number(sym.pread(fd, b, 4n, at));
  if (n !== 4) throw new Error(`pread at ${at}: ${n} (errno ${errno()})`);
  return new DataView(b.buffer).getUint32(0, true);
}

const container = check("open /dev/vfio/vfio", sym.open(cstr("/dev/vfio/vfio"), O_RDWR, 0));
const apiVersion = check("VFIO_GET_API_VERSION", ioctlValue(container, VFIO_GET_API_VERSION, 0));
const type1 = ioctlValue(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) === 1;
const groupPath = `/dev/vfio/${groupArg}`;
const group = check(`open ${groupPath}`, sym.open(cstr(groupPath), O_RDWR, 0));
// struct vfio_group_status { u32 argsz, flags; }
const status = new Uint8Array(8);
new DataView(status.buffer).setUint32(0, 8, true);
ioctlBuf("VFIO_GROUP_GET_STATUS", group, VFIO_GROUP_GET_STATUS, status);
const viable = (new DataView(status.buffer).getUint32(4, true) & VFIO_GROUP_FLAGS_VIABLE) !== 0;
const fdBox = new Uint8Array(4);
new DataView(fdBox.buffer).setInt32(0, container, true);
ioctlBuf("VFIO_GROUP_SET_CONTAINER", group, VFIO_GROUP_SET_CONTAINER, fdBox);
check("VFIO_SET_IOMMU", ioctlValue(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU));
const device = check(
  "VFIO_GROUP_GET_DEVICE_FD",
  sym.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, ptr(cstr(address))),
);
// struct vfio_device_info { u32 argsz, flags, num_regions, num_irqs; ... }
const info = new Uint8Array(16);
const iv = new DataView(info.buffer);
iv.setUint32(0, 16, true);
ioctlBuf("VFIO_DEVICE_GET_INFO", device, VFIO_DEVICE_GET_INFO, info);
const config = regionInfo(device, VFIO_PCI_CONFIG_REGION_INDEX);
const bar0 = regionInfo(device, VFIO_PCI_BAR0_REGION_INDEX);
const vendorDevice = pread32(device, config.offset);
// NVMe base spec, controller registers: CAP at 0x00 (64 bits), VS at 0x08.
const capLo = pread32(device, bar0.offset);
const capHi = pread32(device, bar0.offset + 4n);
const vs = pread32(device, bar0.offset + 8n);

console.log(JSON.stringify({
  apiVersion,
  apiVersionOk: apiVersion === VFIO_API_VERSION,
  type1,
  viable,
  deviceFlags: iv.getUint32(4, true),
  numRegions: iv.getUint32(8, true),
  numIrqs: iv.getUint32(12, true),
  bar0Size: Number(bar0.size),
  vendorId: vendorDevice & 0xffff,
  deviceId: vendorDevice >>> 16,
  cap: ((BigInt(capHi) << 32n) | BigInt(capLo)).toString(16),
  vs: vs.toString(16),
}));
for (const fd of [device, group, container]) sym.close(fd);

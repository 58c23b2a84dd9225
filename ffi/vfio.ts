/**
 * VFIO bindings (Linux include/uapi/linux/vfio.h, the legacy container and
 * group API with the type1 IOMMU backend): what a user-space PCI driver
 * needs to own a device.
 *
 * - a container (`/dev/vfio/vfio`) holds one IOMMU address space: the
 *   device sees host memory only where {@link VfioContainer.mapDma} put it,
 *   at an IOVA the caller chooses;
 * - a group (`/dev/vfio/<n>`, the device's IOMMU group) is attached to the
 *   container; every device of the group must be bound to vfio-pci (the
 *   group is then "viable");
 * - the device fd gives regions (BARs, PCI config space) by index, read
 *   and written with pread/pwrite at the region's offset or mmapped when the
 *   region allows it, and a reset (PCI function level reset or the like).
 *
 * ioctl numbers are `_IO(';', 100 + n)`; the structs are the uapi layouts
 * (little-endian, natural alignment), built in small ArrayBuffers.
 * Control path only: nothing here runs per I/O.
 * @module
 */
import { Errno, errnoName } from "./errno.ts";
import { cstr, errno, sym, syscall } from "./libc.ts";
import { type Mapping, mapShared, PROT_READ, PROT_WRITE } from "./memory.ts";

/** `_IO(VFIO_TYPE, VFIO_BASE + n)` with VFIO_TYPE ';' (0x3b) and VFIO_BASE 100. */
const vfioIo = (n: number): number => (0x3b << 8) | (100 + n);

/** The VFIO ioctl request numbers (no size or direction bits: VFIO uses `argsz`). */
export const VfioIoctl = {
  GET_API_VERSION: vfioIo(0),
  CHECK_EXTENSION: vfioIo(1),
  SET_IOMMU: vfioIo(2),
  GROUP_GET_STATUS: vfioIo(3),
  GROUP_SET_CONTAINER: vfioIo(4),
  GROUP_UNSET_CONTAINER: vfioIo(5),
  GROUP_GET_DEVICE_FD: vfioIo(6),
  DEVICE_GET_INFO: vfioIo(7),
  DEVICE_GET_REGION_INFO: vfioIo(8),
  DEVICE_GET_IRQ_INFO: vfioIo(9),
  DEVICE_SET_IRQS: vfioIo(10),
  DEVICE_RESET: vfioIo(11),
  IOMMU_GET_INFO: vfioIo(12),
  IOMMU_MAP_DMA: vfioIo(13),
  IOMMU_UNMAP_DMA: vfioIo(14),
} as const;

/** VFIO_API_VERSION: what GET_API_VERSION returns on every kernel with this API. */
export const VFIO_API_VERSION = 0;
/** IOMMU backend ids for CHECK_EXTENSION / SET_IOMMU. */
export const VfioIommuType = { TYPE1: 1, TYPE1v2: 3 } as const;

/** vfio_group_status.flags. */
export const VfioGroupFlags = { VIABLE: 1 << 0, CONTAINER_SET: 1 << 1 } as const;
/** vfio_device_info.flags. */
export const VfioDeviceFlags = { RESET: 1 << 0, PCI: 1 << 1 } as const;
/** vfio_region_info.flags. */
export const VfioRegionFlags = { READ: 1 << 0, WRITE: 1 << 1, MMAP: 1 << 2, CAPS: 1 << 3 } as const;
/** vfio_iommu_type1_dma_map.flags. */
export const VfioDmaFlags = { READ: 1 << 0, WRITE: 1 << 1 } as const;

/** Region indexes of a vfio-pci device. */
export const VfioPciRegion = {
  BAR0: 0,
  BAR1: 1,
  BAR2: 2,
  BAR3: 3,
  BAR4: 4,
  BAR5: 5,
  ROM: 6,
  CONFIG: 7,
  VGA: 8,
} as const;

/** Interrupt indexes of a vfio-pci device. REQ: the kernel asks the user to release the device. */
export const VfioPciIrq = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4 } as const;

/** vfio_irq_set.flags. */
export const VfioIrqSetFlags = {
  DATA_NONE: 1 << 0,
  DATA_BOOL: 1 << 1,
  DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3,
  ACTION_UNMASK: 1 << 4,
  ACTION_TRIGGER: 1 << 5,
} as const;

/** PCI configuration space offsets and bits used by drivers (PCI Local Bus 3.0). */
export const PciConfig = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  CLASS_REVISION: 0x08,
  /** COMMAND bits. */
  COMMAND_MEMORY: 1 << 1,
  COMMAND_MASTER: 1 << 2,
  COMMAND_INTX_DISABLE: 1 << 10,
} as const;

/** struct sizes. */
const GROUP_STATUS_BYTES = 8;
const DEVICE_INFO_BYTES = 24;
const REGION_INFO_BYTES = 32;
const DMA_MAP_BYTES = 32;
const DMA_UNMAP_BYTES = 24;

const SYS_IOCTL = 16;

/** A clear error for a missing piece of the VFIO setup (module, IOMMU, binding). */
export class VfioError extends Error {
  /** The errno behind it, when a call failed; 0 otherwise. */
  readonly errno: number;
  constructor(message: string, errno = 0) {
    super(message);
    this.name = "VfioError";
    this.errno = errno;
  }
}

function addr(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** ioctl(2) through the raw syscall: the result, or -errno. */
function ioctl(fd: number, request: number, arg: bigint | number): number {
  return syscall(SYS_IOCTL, fd, request, arg);
}

function openDev(path: string, hint: string): number {
  const O_RDWR_CLOEXEC = 2 | 0o2000000;
  const fd = sym.open(cstr(path), O_RDWR_CLOEXEC, 0);
  if (fd < 0) {
    const err = errno();
    throw new VfioError(`cannot open ${path} (${errnoName(err)}): ${hint}`, err);
  }
  return fd;
}

/** A VFIO container: one IOMMU address space. */
export class VfioContainer {
  readonly fd: number;
  #iommuSet = false;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Opens `/dev/vfio/vfio` and checks the API version and the type1 IOMMU.
   * @throws {VfioError} when the vfio module is not loaded, the API differs,
   *   or type1 is missing (vfio_iommu_type1 not loaded)
   */
  static open(path = "/dev/vfio/vfio"): VfioContainer {
    const fd = openDev(path, "is the vfio module loaded (modprobe vfio-pci) and are you root?");
    const c = new VfioContainer(fd);
    try {
      const api = ioctl(fd, VfioIoctl.GET_API_VERSION, 0);
      if (api !== VFIO_API_VERSION) {
        throw new VfioError(`${path}: VFIO API version ${api}, expected ${VFIO_API_VERSION}`);
      }
      if (c.checkExtension(VfioIommuType.TYPE1) !== 1) {
        throw new VfioError(
          `${path}: no type1 IOMMU backend (modprobe vfio_iommu_type1; the kernel needs an IOMMU, e.g. intel_iommu=on)`,
        );
      }
      return c;
    } catch (e) {
      c.close();
      throw e;
    }
  }

  /** VFIO_CHECK_EXTENSION: > 0 when supported. */
  checkExtension(ext: number): number {
    return ioctl(this.fd, VfioIoctl.CHECK_EXTENSION, ext);
  }

  /** VFIO_SET_IOMMU type1; needs a group attached first. Idempotent. */
  setIommu(type: number = VfioIommuType.TYPE1): void {
    if (this.#iommuSet) return;
    const r = ioctl(this.fd, VfioIoctl.SET_IOMMU, type);
    if (r < 0) {
      throw new VfioError(`VFIO_SET_IOMMU(type ${type}) failed: ${errnoName(-r)}`, -r);
    }
    this.#iommuSet = true;
  }

  /**
   * VFIO_IOMMU_MAP_DMA: makes `size` bytes at host address `vaddr` visible
   * to the devices at `iova`, readable and writable. The kernel pins the
   * pages for as long as the mapping lasts, so ordinary (non-hugepage)
   * memory works; all three must be page-aligned.
   */
  mapDma(vaddr: number, iova: number, size: number): void {
    const b = new Uint8Array(DMA_MAP_BYTES);
    const v = new DataView(b.buffer);
    v.setUint32(0, DMA_MAP_BYTES, true);
    v.setUint32(4, VfioDmaFlags.READ | VfioDmaFlags.WRITE, true);
    v.setBigUint64(8, BigInt(vaddr), true);
    v.setBigUint64(16, BigInt(iova), true);
    v.setBigUint64(24, BigInt(size), true);
    const r = ioctl(this.fd, VfioIoctl.IOMMU_MAP_DMA, addr(b));
    if (r < 0) {
      const why = -r === Errno.ENOMEM
        ? " (locked memory limit? raise RLIMIT_MEMLOCK or run as root)"
        : "";
      throw new VfioError(
        `VFIO_IOMMU_MAP_DMA of ${size} bytes at iova 0x${iova.toString(16)} failed: ${
          errnoName(-r)
        }${why}`,
        -r,
      );
    }
  }

  /** VFIO_IOMMU_UNMAP_DMA of exactly a range mapped before; returns the bytes unmapped. */
  unmapDma(iova: number, size: number): number {
    const b = new Uint8Array(DMA_UNMAP_BYTES);
    const v = new DataView(b.buffer);
    v.setUint32(0, DMA_UNMAP_BYTES, true);
    v.setUint32(4, 0, true);
    v.setBigUint64(8, BigInt(iova), true);
    v.setBigUint64(16, BigInt(size), true);
    const r = ioctl(this.fd, VfioIoctl.IOMMU_UNMAP_DMA, addr(b));
    if (r < 0) {
      throw new VfioError(
        `VFIO_IOMMU_UNMAP_DMA at iova 0x${iova.toString(16)} failed: ${errnoName(-r)}`,
        -r,
      );
    }
    return Number(v.getBigUint64(16, true));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    sym.close(this.fd);
  }
}

/** The IOMMU group number of a PCI function, from sysfs. */
export function iommuGroupOf(bdf: string, sysfs = "/sys"): number {
  const dev = `${sysfs}/bus/pci/devices/${bdf}`;
  try {
    Deno.statSync(dev);
  } catch {
    throw new VfioError(`no PCI device ${bdf} (${dev} does not exist)`);
  }
  let link: string;
  try {
    link = Deno.readLinkSync(`${dev}/iommu_group`);
  } catch {
    throw new VfioError(
      `PCI device ${bdf} has no IOMMU group: no IOMMU enabled (boot with intel_iommu=on / amd_iommu=on)`,
    );
  }
  const n = Number(link.slice(link.lastIndexOf("/") + 1));
  if (!Number.isInteger(n) || n < 0) throw new VfioError(`bad iommu_group link ${link}`);
  return n;
}

/** The driver a PCI function is bound to ("" when none). */
export function pciDriverOf(bdf: string, sysfs = "/sys"): string {
  try {
    const link = Deno.readLinkSync(`${sysfs}/bus/pci/devices/${bdf}/driver`);
    return link.slice(link.lastIndexOf("/") + 1);
  } catch {
    return "";
  }
}

/** A PCI BDF ("0000:00:04.0"); the short form "00:04.0" gets domain 0000. */
export function normalizeBdf(s: string): string {
  const m = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$/.exec(s);
  if (m === null) {
    throw new VfioError(`"${s}" is not a PCI address (domain:bus:device.function, 0000:00:04.0)`);
  }
  return `${(m[1] ?? "0000").toLowerCase()}:${m[2]?.toLowerCase()}:${m[3]?.toLowerCase()}.${m[4]}`;
}

/** One region of a device (vfio_region_info). */
export interface VfioRegionInfo {
  index: number;
  flags: number;
  size: number;
  offset: number;
}

/** A VFIO device fd and its regions. */
export class VfioDevice {
  readonly fd: number;
  readonly bdf: string;
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
  #config: VfioRegionInfo | null = null;
  #closed = false;

  constructor(fd: number, bdf: string) {
    this.fd = fd;
    this.bdf = bdf;
    const b = new Uint8Array(DEVICE_INFO_BYTES);
    const v = new DataView(b.buffer);
    v.setUint32(0, DEVICE_INFO_BYTES, true);
    const r = ioctl(fd, VfioIoctl.DEVICE_GET_INFO, addr(b));
    if (r < 0) throw new VfioError(`VFIO_DEVICE_GET_INFO(${bdf}) failed: ${errnoName(-r)}`, -r);
    this.flags = v.getUint32(4, true);
    this.numRegions = v.getUint32(8, true);
    this.numIrqs = v.getUint32(12, true);
    if ((this.flags & VfioDeviceFlags.PCI) === 0) {
      throw new VfioError(`${bdf} is not a vfio-pci device (flags 0x${this.flags.toString(16)})`);
    }
  }

  /** VFIO_DEVICE_GET_REGION_INFO. */
  regionInfo(index: number): VfioRegionInfo {
    const b = new Uint8Array(REGION_INFO_BYTES);
    const v = new DataView(b.buffer);
    v.setUint32(0, REGION_INFO_BYTES, true);
    v.setUint32(8, index, true);
    const r = ioctl(this.fd, VfioIoctl.DEVICE_GET_REGION_INFO, addr(b));
    if (r < 0) {
      throw new VfioError(
        `VFIO_DEVICE_GET_REGION_INFO(${this.bdf}, region ${index}) failed: ${errnoName(-r)}`,
        -r,
      );
    }
    return {
      index,
      flags: v.getUint32(4, true),
      size: Number(v.getBigUint64(16, true)),
      offset: Number(v.getBigUint64(24, true)),
    };
  }

  /**
   * mmaps a whole region (a memory BAR) shared and read-write.
   * @throws {VfioError} when the region is empty or not mmappable
   */
  mapRegion(index: number): Mapping {
    const ri = this.regionInfo(index);
    if (ri.size === 0) throw new VfioError(`${this.bdf}: region ${index} is not implemented`);
    if ((ri.flags & VfioRegionFlags.MMAP) === 0) {
      throw new VfioError(`${this.bdf}: region ${index} cannot be mmapped`);
    }
    return mapShared(this.fd, ri.size, ri.offset, PROT_READ | PROT_WRITE);
  }

  #configRegion(): VfioRegionInfo {
    this.#config ??= this.regionInfo(VfioPciRegion.CONFIG);
    return this.#config;
  }

  /** Reads `bytes` (1, 2 or 4) of PCI config space at `offset`. */
  configRead(offset: number, bytes: 1 | 2 | 4): number {
    const buf = new Uint8Array(4);
    const r = Number(
      sym.pread(this.fd, buf, BigInt(bytes), BigInt(this.#configRegion().offset + offset)),
    );
    if (r !== bytes) {
      throw new VfioError(`${this.bdf}: config read at 0x${offset.toString(16)} failed (${r})`);
    }
    const v = new DataView(buf.buffer);
    return bytes === 1 ? v.getUint8(0) : bytes === 2 ? v.getUint16(0, true) : v.getUint32(0, true);
  }

  /** Writes `bytes` (1, 2 or 4) of PCI config space at `offset`. */
  configWrite(offset: number, bytes: 1 | 2 | 4, value: number): void {
    const buf = new Uint8Array(4);
    const v = new DataView(buf.buffer);
    if (bytes === 1) v.setUint8(0, value);
    else if (bytes === 2) v.setUint16(0, value, true);
    else v.setUint32(0, value >>> 0, true);
    const r = Number(
      sym.pwrite(this.fd, buf, BigInt(bytes), BigInt(this.#configRegion().offset + offset)),
    );
    if (r !== bytes) {
      throw new VfioError(`${this.bdf}: config write at 0x${offset.toString(16)} failed (${r})`);
    }
  }

  /** Sets PCI COMMAND memory space and bus master enable (the device may then DMA). */
  enableBusMaster(): void {
    const cmd = this.configRead(PciConfig.COMMAND, 2);
    const want = cmd | PciConfig.COMMAND_MEMORY | PciConfig.COMMAND_MASTER;
    if (want !== cmd) this.configWrite(PciConfig.COMMAND, 2, want);
  }

  /** Clears bus master enable: no more DMA from the device. */
  disableBusMaster(): void {
    const cmd = this.configRead(PciConfig.COMMAND, 2);
    if ((cmd & PciConfig.COMMAND_MASTER) !== 0) {
      this.configWrite(PciConfig.COMMAND, 2, cmd & ~PciConfig.COMMAND_MASTER);
    }
  }

  /** VFIO_DEVICE_GET_IRQ_INFO: how many interrupts of `index` the device has (0 when none). */
  irqCount(index: number): number {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setUint32(0, 16, true);
    v.setUint32(8, index, true);
    const r = ioctl(this.fd, VfioIoctl.DEVICE_GET_IRQ_INFO, addr(b));
    if (r < 0) return 0;
    return v.getUint32(12, true);
  }

  /**
   * VFIO_DEVICE_SET_IRQS with an eventfd as the trigger of interrupt 0 of `index` (for REQ:
   * the kernel signals it when it wants the device back, e.g. on removal); fd -1 disables it.
   */
  setIrqEventfd(index: number, fd: number): void {
    const b = new Uint8Array(24);
    const v = new DataView(b.buffer);
    v.setUint32(0, 24, true);
    v.setUint32(4, VfioIrqSetFlags.DATA_EVENTFD | VfioIrqSetFlags.ACTION_TRIGGER, true);
    v.setUint32(8, index, true);
    v.setUint32(12, 0, true);
    v.setUint32(16, 1, true);
    v.setInt32(20, fd, true);
    const r = ioctl(this.fd, VfioIoctl.DEVICE_SET_IRQS, addr(b));
    if (r < 0) {
      throw new VfioError(
        `VFIO_DEVICE_SET_IRQS(${this.bdf}, index ${index}) failed: ${errnoName(-r)}`,
        -r,
      );
    }
  }

  /** True when the kernel offers a reset for this device (FLR, PM or bus reset). */
  get canReset(): boolean {
    return (this.flags & VfioDeviceFlags.RESET) !== 0;
  }

  /** VFIO_DEVICE_RESET (function level reset where offered); false when not offered. */
  reset(): boolean {
    if (!this.canReset) return false;
    const r = ioctl(this.fd, VfioIoctl.DEVICE_RESET, 0);
    if (r < 0) throw new VfioError(`VFIO_DEVICE_RESET(${this.bdf}) failed: ${errnoName(-r)}`, -r);
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    sym.close(this.fd);
  }
}

/** A PCI function opened through VFIO: its container, group and device. */
export class VfioPciFunction {
  readonly container: VfioContainer;
  readonly groupFd: number;
  readonly group: number;
  readonly device: VfioDevice;
  #closed = false;

  private constructor(container: VfioContainer, groupFd: number, group: number, dev: VfioDevice) {
    this.container = container;
    this.groupFd = groupFd;
    this.group = group;
    this.device = dev;
  }

  /**
   * Opens `bdf` (bound to vfio-pci) in a fresh container with the type1
   * IOMMU. Errors say which step is missing: no IOMMU group, not bound to
   * vfio-pci, group not viable (another function of the group is bound to a
   * host driver), no vfio module, no type1 backend.
   */
  static open(bdf: string, sysfs = "/sys"): VfioPciFunction {
    const bdfN = normalizeBdf(bdf);
    const group = iommuGroupOf(bdfN, sysfs);
    const driver = pciDriverOf(bdfN, sysfs);
    if (driver !== "vfio-pci") {
      throw new VfioError(
        `PCI device ${bdfN} is bound to ${
          driver === "" ? "no driver" : `"${driver}"`
        }, not vfio-pci (run: sluice setup, or bind it by hand)`,
      );
    }
    const container = VfioContainer.open();
    let groupFd = -1;
    try {
      groupFd = openDev(
        `/dev/vfio/${group}`,
        "the device's IOMMU group has no VFIO node (is it bound to vfio-pci? is another process using it?)",
      );
      const st = new Uint8Array(GROUP_STATUS_BYTES);
      const sv = new DataView(st.buffer);
      sv.setUint32(0, GROUP_STATUS_BYTES, true);
      let r = ioctl(groupFd, VfioIoctl.GROUP_GET_STATUS, addr(st));
      if (r < 0) throw new VfioError(`VFIO_GROUP_GET_STATUS failed: ${errnoName(-r)}`, -r);
      if ((sv.getUint32(4, true) & VfioGroupFlags.VIABLE) === 0) {
        throw new VfioError(
          `IOMMU group ${group} is not viable: bind every device of /sys/kernel/iommu_groups/${group}/devices to vfio-pci`,
        );
      }
      const cfd = new Int32Array([container.fd]);
      r = ioctl(groupFd, VfioIoctl.GROUP_SET_CONTAINER, addr(new Uint8Array(cfd.buffer)));
      if (r < 0) {
        throw new VfioError(
          `VFIO_GROUP_SET_CONTAINER(group ${group}) failed: ${errnoName(-r)}`,
          -r,
        );
      }
      container.setIommu(VfioIommuType.TYPE1);
      const name = cstr(bdfN);
      const devFd = ioctl(groupFd, VfioIoctl.GROUP_GET_DEVICE_FD, addr(name));
      if (devFd < 0) {
        throw new VfioError(
          `VFIO_GROUP_GET_DEVICE_FD(${bdfN}) failed: ${errnoName(-devFd)}${
            -devFd === Errno.EBUSY ? " (already open by another process?)" : ""
          }`,
          -devFd,
        );
      }
      let dev: VfioDevice;
      try {
        dev = new VfioDevice(devFd, bdfN);
      } catch (e) {
        sym.close(devFd);
        throw e;
      }
      return new VfioPciFunction(container, groupFd, group, dev);
    } catch (e) {
      if (groupFd >= 0) sym.close(groupFd);
      container.close();
      throw e;
    }
  }

  /** Closes the device, the group and the container (the kernel drops DMA mappings). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.device.close();
    sym.close(this.groupFd);
    this.container.close();
  }
}

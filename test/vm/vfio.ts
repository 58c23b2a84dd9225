/**
 * The VFIO test lab: a guest in which user-space NVMe drivers can be tested against QEMU's
 * emulated NVMe controller behind an emulated IOMMU, with Deno and the sluice source tree inside.
 *
 * {@linkcode runVfioGuest} boots a q35 guest (TCG) with
 *
 * - `-device intel-iommu,intremap=on` (first device, see {@linkcode GuestOptions.iommu}) and the
 *   kernel booted with `intel_iommu=on`, so every PCI device sits in an IOMMU group and VFIO's
 *   type1 backend can map DMA. Under TCG `kernel-irqchip=split` is not needed (it is only
 *   required with KVM's in-kernel irqchip);
 * - one or more emulated NVMe controllers (`-device nvme`), each backed by a raw file on the host
 *   and placed at a fixed PCI address: the first at 0000:00:04.0, the next at 0000:00:05.0, ...
 *   ({@linkcode nvmePciAddress}), or, {@linkcode NvmeDisk.hotpluggable}, behind a PCIe root port so
 *   that a test can remove it from the running guest ({@linkcode unplugNvme});
 * - Deno (the lab's deno piece) and the sluice tree at `/sluice` (appliance/, src/, ffi/, wasm/
 *   with wasm/dist, bench/, test/ and deno.json, as they are in the working tree, so uncommitted
 *   work is tested too). sluice imports nothing but `node:` built-ins, so Deno needs no network
 *   and no package cache in the guest: `deno run -A /sluice/appliance/main.ts ...` and
 *   `deno test -A --no-check /sluice/src/...` work offline. (`--no-check` because type-checking
 *   the tree under TCG takes minutes; `deno task check` type-checks on the host.)
 * - the modules nvme, vfio, vfio-pci and vfio_iommu_type1 loaded (type1 is not loaded on demand:
 *   without it VFIO_CHECK_EXTENSION(TYPE1) is 0 and VFIO_SET_IOMMU fails with ENODEV).
 *
 * The NVMe devices start on the kernel's nvme driver; a script moves them to vfio-pci with
 * `sluice setup bind` (appliance/setup.ts) and back with `sluice setup unbind`. The guest's
 * variables (in `/guest.env`, set before the script runs):
 *
 * | variable      | value                                                           |
 * | ------------- | --------------------------------------------------------------- |
 * | `SLUICE`      | `/sluice`, the source tree                                      |
 * | `NVME_BDFS`   | the controllers' PCI addresses, space-separated                 |
 * | `NVME_BDF`    | the first one (0000:00:04.0)                                    |
 *
 * and `/sluice/test/vm/guest/vfio_lib.sh` has shell helpers (`sluice`, `wait_for`, ...).
 *
 * @example
 * ```ts
 * import { createDiskImage, runVfioGuest } from "./vfio.ts";
 * const img = await createDiskImage(`${dir}/nvm0.img`, 64);
 * const r = await runVfioGuest({
 *   name: "vfio-hello",
 *   disks: [{ path: img }],
 *   script: ". /sluice/test/vm/guest/vfio_lib.sh\nsluice setup bind && sluice setup status",
 * });
 * ```
 *
 * @module
 */

import { type GuestOptions, type GuestResult, outputTail, runGuest } from "./guest.ts";
import { repoRoot } from "./lab.ts";
import { Qmp } from "./migration.ts";

/** One emulated NVMe controller with one namespace backed by a host file. */
export interface NvmeDisk {
  /** Raw image on the host (see {@linkcode createDiskImage}). */
  path: string;
  /** Serial number the controller reports; default `SLUICE-NVME<n>`. */
  serial?: string;
  /** Logical block size of the namespace, 512 or 4096; default 512 (QEMU's default). */
  blockSize?: 512 | 4096;
  /** Extra `-device nvme` properties, e.g. `"mdts=5"` or `"max_ioqpairs=4"`. */
  deviceProps?: string;
  /**
   * Extra `-drive` properties, e.g. throttling to make commands slow for timeout tests
   * (`"throttling.iops-total=10"`).
   */
  driveProps?: string;
  /**
   * Put the controller behind its own PCIe root port, so that it can be removed while the guest
   * runs (QMP `device_del` with {@linkcode nvmeDeviceId}; the guest's pciehp/ACPI hotplug takes
   * it away). Its address is then 0000:0<n>:00.0 with n counting such disks from 1, see
   * {@linkcode nvmeAddresses}. Devices on the root bus cannot be unplugged.
   */
  hotpluggable?: boolean;
}

/** Options of {@linkcode runVfioGuest}: those of runGuest, plus the NVMe disks. */
export interface VfioGuestOptions extends Omit<GuestOptions, "machine" | "iommu" | "deno"> {
  /** The NVMe controllers (at least one), at 0000:00:04.0, 0000:00:05.0, ... in this order. */
  disks: readonly NvmeDisk[];
  /** Pack the sluice tree at /sluice; default true. */
  sluiceTree?: boolean;
  /** Include deno; default true. */
  deno?: boolean;
}

/** PCI slot of the first NVMe controller on q35's root bus (0000:00:04.0, as SPDK's examples). */
export const FIRST_NVME_SLOT = 4;
/** Where the sluice source tree is in the guest. */
export const GUEST_SLUICE_DIR = "/sluice";

/** Modules the VFIO guest loads before the test. */
export const VFIO_GUEST_MODULES: readonly string[] = [
  "nvme",
  "vfio",
  "vfio-pci",
  "vfio_iommu_type1",
];

/** Directories and files of the repository packed into the guest. */
const TREE_ENTRIES = ["appliance", "src", "ffi", "wasm", "bench", "test", "deno.json"] as const;
/** Never packed: build outputs and sources Deno does not run. */
const TREE_SKIP = [/\/target(\/|$)/, /^wasm\/kernels(\/|$)/, /^var(\/|$)/, /\/\.[^/]*$/];
/** A file this big in the tree is a mistake (a disk image left behind), not source. */
const TREE_MAX_FILE_BYTES = 16 * 1024 * 1024;

/** QEMU's device id of NVMe controller `index`, for QMP (`device_del`). */
export function nvmeDeviceId(index: number): string {
  return `nvme${index}`;
}

/**
 * The guest's PCI addresses of `disks`: on the root bus slot 4 + index; a hotpluggable disk sits
 * on the secondary bus of its root port (in slot 4 + index), and Linux numbers those buses from
 * 1 in slot order (the lab boots without firmware; the kernel assigns the bus numbers).
 */
export function nvmeAddresses(disks: readonly NvmeDisk[]): string[] {
  let bus = 0;
  return disks.map((d, i) => {
    if (!d.hotpluggable) return nvmePciAddress(i);
    nvmePciAddress(i); // range check of the root port's slot
    return `0000:${(++bus).toString(16).padStart(2, "0")}:00.0`;
  });
}

/** The guest's PCI address of NVMe controller `index` (0-based) on the root bus. */
export function nvmePciAddress(index: number): string {
  const slot = FIRST_NVME_SLOT + index;
  if (!Number.isInteger(index) || index < 0 || slot > 0x1f) {
    throw new RangeError(`NVMe controller index ${index} does not fit on the root bus.`);
  }
  return `0000:00:${slot.toString(16).padStart(2, "0")}.0`;
}

/** The QEMU arguments of the NVMe controllers (the IOMMU comes from runGuest's `iommu`). */
export function nvmeQemuArgs(disks: readonly NvmeDisk[]): string[] {
  const args: string[] = [];
  disks.forEach((d, i) => {
    // QEMU's option syntax separates properties with ","; a path holding one would need ",,".
    if (d.path.includes(",")) throw new Error(`Disk path ${d.path} must not contain ",".`);
    const serial = d.serial ?? `SLUICE-NVME${i}`;
    if (!/^[A-Za-z0-9_.-]{1,20}$/.test(serial)) {
      throw new Error(`NVMe serial ${serial} must be 1-20 characters of [A-Za-z0-9_.-].`);
    }
    const bs = d.blockSize ?? 512;
    const drive = [
      `file=${d.path}`,
      "if=none",
      `id=nvm${i}`,
      "format=raw",
      // O_DIRECT on the host file is not needed, and tmpfs (a test's temp dir) has none.
      "cache=writeback",
      ...(d.driveProps ? [d.driveProps] : []),
    ];
    const slot = `0x${(FIRST_NVME_SLOT + i).toString(16)}`;
    if (d.hotpluggable) {
      // chassis/slot numbers only need to be unique per root port.
      args.push(
        "-device",
        `pcie-root-port,id=rp${i},bus=pcie.0,addr=${slot},chassis=${i + 1},slot=${i + 1}`,
      );
    }
    const device = [
      "nvme",
      `id=${nvmeDeviceId(i)}`,
      `serial=${serial}`,
      `drive=nvm${i}`,
      ...(d.hotpluggable ? [`bus=rp${i}`, "addr=0x0"] : ["bus=pcie.0", `addr=${slot}`]),
      `logical_block_size=${bs}`,
      `physical_block_size=${bs}`,
      ...(d.deviceProps ? [d.deviceProps] : []),
    ];
    args.push("-drive", drive.join(","), "-device", device.join(","));
  });
  return args;
}

/**
 * Boots a q35 guest with an IOMMU, the NVMe disks, Deno and the sluice tree, and runs the script
 * (see the module documentation for what the guest has).
 */
export async function runVfioGuest(options: VfioGuestOptions): Promise<GuestResult> {
  const { disks, sluiceTree: withTree, ...rest } = options;
  if (disks.length === 0) throw new Error("runVfioGuest needs at least one NVMe disk.");
  for (const d of disks) await Deno.stat(d.path); // a missing image: QEMU's error is less clear
  const bdfs = nvmeAddresses(disks);
  const files: Record<string, string | Uint8Array | URL> = {};
  if (withTree ?? true) Object.assign(files, await sluiceTreeFiles());
  Object.assign(files, options.files ?? {});
  return await runGuest({
    ...rest,
    name: options.name ?? "vfio",
    deno: options.deno ?? true,
    machine: "q35",
    iommu: true,
    modules: [...VFIO_GUEST_MODULES, ...(options.modules ?? [])],
    qemuArgs: [...nvmeQemuArgs(disks), ...(options.qemuArgs ?? [])],
    env: {
      SLUICE: GUEST_SLUICE_DIR,
      NVME_BDFS: bdfs.join(" "),
      NVME_BDF: bdfs[0] ?? "",
      ...(options.env ?? {}),
    },
    files,
  });
}

/**
 * Removes NVMe controller `index` (a {@linkcode NvmeDisk.hotpluggable} one) from a running guest:
 * QMP `device_del` on the socket given as runGuest's `qmp`. Returns once QEMU accepted the
 * request; the guest then takes the device away (a few seconds; while a VFIO user holds it, the
 * kernel asks that user to release it through the device's request interrupt first).
 */
export async function unplugNvme(qmpSocket: string, index: number): Promise<void> {
  const q = await Qmp.connect(qmpSocket);
  try {
    await q.execute("device_del", { id: nvmeDeviceId(index) });
  } finally {
    q.close();
  }
}

/** A guest report of KEY=value lines, as a map. */
export function parseReport(report: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of report.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1).replace(/\r$/, ""));
  }
  return out;
}

/**
 * Boots a VFIO guest with two 64 MiB NVMe controllers, the second hot-pluggable at 0000:01:00.0,
 * runs `script`, and removes that controller (QMP device_del) when the guest prints
 * READY_FOR_UNPLUG. Returns the guest's result, its report and the controllers' addresses once
 * the removal was accepted; throws when the guest never asked for it.
 */
export async function runUnplugGuest(o: {
  dir: string;
  name: string;
  script: URL;
  timeoutSec: number;
  tailLines: number;
}): Promise<{ r: GuestResult; rep: Map<string, string>; tail: string; addresses: string[] }> {
  const qmp = `${o.dir}/qmp.sock`;
  const disks = [
    { path: await createDiskImage(`${o.dir}/a.img`, 64) },
    { path: await createDiskImage(`${o.dir}/b.img`, 64), hotpluggable: true },
  ];
  const addresses = nvmeAddresses(disks);
  if (addresses[1] !== "0000:01:00.0") throw new Error(`unexpected address ${addresses[1]}`);
  let unplug: Promise<void> | null = null;
  const r = await runVfioGuest({
    name: o.name,
    disks,
    tools: false,
    qmp,
    onLine: (line) => {
      if (line.startsWith("READY_FOR_UNPLUG") && unplug === null) unplug = unplugNvme(qmp, 1);
    },
    script: o.script,
    timeoutSec: o.timeoutSec,
  });
  const tail = outputTail(r.output, o.tailLines);
  if (unplug === null) throw new Error(`the guest never asked for the unplug:\n${tail}`);
  await unplug;
  return { r, rep: parseReport(r.report), tail, addresses };
}

/**
 * The sluice tree as guest files (`/sluice/<path>` -> contents), read from the working tree of
 * this checkout (uncommitted changes included).
 */
export async function sluiceTreeFiles(
  root: string = repoRoot(),
): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  const add = async (rel: string): Promise<void> => {
    if (TREE_SKIP.some((re) => re.test(rel))) return;
    const full = `${root}/${rel}`;
    const info = await Deno.lstat(full).catch(() => null);
    if (info === null || info.isSymlink) return;
    if (info.isDirectory) {
      const names: string[] = [];
      for await (const e of Deno.readDir(full)) names.push(e.name);
      names.sort();
      for (const n of names) await add(`${rel}/${n}`);
      return;
    }
    if (!info.isFile) return;
    if (info.size > TREE_MAX_FILE_BYTES) {
      throw new Error(`${full} is ${info.size} bytes: too big to be source; remove it or skip it.`);
    }
    out[`${GUEST_SLUICE_DIR}/${rel}`] = await Deno.readFile(full);
  };
  for (const e of TREE_ENTRIES) await add(e);
  return out;
}

/**
 * Creates a raw disk image of `sizeMiB` MiB (sparse), optionally with `data` written at byte
 * offset `at`, and returns its path.
 */
export async function createDiskImage(
  path: string,
  sizeMiB: number,
  data?: { at: number; bytes: Uint8Array },
): Promise<string> {
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) throw new RangeError("sizeMiB must be >= 1.");
  using f = await Deno.open(path, { create: true, write: true, truncate: true });
  await f.truncate(sizeMiB * 1024 * 1024);
  if (data !== undefined) {
    await f.seek(data.at, Deno.SeekMode.Start);
    let done = 0;
    while (done < data.bytes.length) done += await f.write(data.bytes.subarray(done));
  }
  return path;
}

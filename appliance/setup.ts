/**
 * `sluice setup`: hands NVMe devices to VFIO so the appliance's user-space driver can drive
 * them, and gives them back to the kernel (what SPDK's scripts/setup.sh does for SPDK).
 *
 *   sluice setup status [--json] [PCI address...]   NVMe devices, their driver and IOMMU group
 *   sluice setup bind [PCI address...]               to vfio-pci (all unused NVMe devices if none)
 *   sluice setup unbind [PCI address...]             back to the kernel's nvme driver
 *
 * Binding goes through the PCI core's `driver_override` (kernel 3.16+): write `vfio-pci` to
 * `/sys/bus/pci/devices/<addr>/driver_override`, unbind the current driver, then ask the core to
 * probe the device again (`/sys/bus/pci/drivers_probe`), which now only matches vfio-pci.
 * Unbinding clears the override and probes again, so the kernel's nvme driver takes the device
 * back and its block devices reappear.
 *
 * Before binding it checks, with clear errors, what VFIO needs: an IOMMU (IOMMU groups in
 * `/sys/kernel/iommu_groups`), the vfio-pci and vfio_iommu_type1 modules (loaded with modprobe
 * when missing: type1 is not loaded on demand, and without it VFIO_SET_IOMMU fails), the
 * container node `/dev/vfio/vfio`, and a group whose other devices do not belong to a kernel
 * driver (VFIO only opens a group when all its devices are VFIO's or driverless). A device whose
 * namespaces are mounted, used as swap, or held by device-mapper/md is refused (named addresses)
 * or skipped (no addresses). Unbinding refuses (or skips) a device whose VFIO group a process has
 * open, since the kernel would block until that process lets go.
 *
 * Exit status: 0 done, 1 a check or a bind failed (message on stderr), 2 usage error.
 * @module
 */
import { exists } from "./fs.ts";

/** The usage text of `sluice setup --help`. */
export const SETUP_USAGE = `Usage: sluice setup [status|bind|unbind] [options] [PCI address...]

Moves NVMe devices between the kernel's nvme driver and vfio-pci, so that
sluice's user-space NVMe driver can attach them (bdev_nvme_attach_controller
-t pcie -a ADDR), as SPDK's scripts/setup.sh does. Needs root.

Commands:
  status    List NVMe devices (PCI class 01:08:02): driver, IOMMU group,
            block devices or VFIO group node (the default command)
  bind      Bind to vfio-pci (alias: config). Without addresses: every NVMe
            device not in use; devices with mounted filesystems, swap or
            device-mapper holders are skipped (refused when named)
  unbind    Give back to the kernel's nvme driver (alias: reset). Without
            addresses: every NVMe device bound to vfio-pci

Options:
  --json    status: print JSON instead of a table
  -h, --help  Show this help

PCI addresses are written 0000:00:04.0 (the domain may be left out: 00:04.0).

VFIO needs an IOMMU: enable VT-d (Intel) or AMD-Vi in the firmware and boot
with intel_iommu=on (AMD: on by default). In a QEMU guest use -machine q35 and
-device intel-iommu,intremap=on. See docs/nvme.md.`;

/** PCI class code of an NVMe controller: mass storage (01), NVM (08), NVM Express (02). */
export const NVME_CLASS = 0x010802;
/** How long to wait for a driver to take a device and for its device nodes to appear. */
const SETTLE_MS = 10_000;
const POLL_MS = 50;

/** Where the kernel's interfaces are (tests point them at a fake tree), and how to load modules. */
export interface SetupHost {
  /** sysfs mount point; default /sys. */
  sys: string;
  /** devtmpfs mount point; default /dev. */
  dev: string;
  /** procfs mount point; default /proc. */
  proc: string;
  /** Loads a kernel module; true when modprobe succeeded. */
  modprobe: (name: string) => Promise<boolean>;
  /** How long to wait for a driver or device node; default 10 s. */
  settleMs?: number;
}

/** The real system. */
export const SYSTEM_HOST: SetupHost = {
  sys: "/sys",
  dev: "/dev",
  proc: "/proc",
  modprobe: async (name) => {
    try {
      const out = await new Deno.Command("modprobe", {
        args: [name],
        stdout: "null",
        stderr: "null",
      })
        .output();
      return out.success;
    } catch {
      return false; // no modprobe binary: the sysfs checks that follow say what is missing
    }
  },
};

/** One NVMe controller on the PCI bus, as `status` shows it. */
export interface NvmeDeviceInfo {
  /** PCI address, 0000:00:04.0. */
  address: string;
  /** Vendor and device id, "1b36:0010". */
  id: string;
  /** The driver it is bound to, or null. */
  driver: string | null;
  /** Its IOMMU group, or null without an IOMMU. */
  iommuGroup: number | null;
  /** `/dev/vfio/<group>` when bound to vfio-pci and the node exists. */
  vfioNode: string | null;
  /** Block devices of its namespaces while the kernel's nvme driver has it (nvme0n1, ...). */
  blockDevices: string[];
  /** Why it must not be taken from the kernel (mounts, swap, holders); empty when free. */
  inUse: string[];
}

/** What VFIO on this system has, and the NVMe devices. */
export interface SetupStatus {
  /** Number of IOMMU groups (0: no IOMMU, or it is off). */
  iommuGroups: number;
  /** vfio-pci is loaded (its driver directory exists). */
  vfioPci: boolean;
  /** The type1 IOMMU backend is loaded. */
  vfioIommuType1: boolean;
  /** /dev/vfio/vfio exists. */
  vfioContainer: boolean;
  /** NVMe devices, by address. */
  devices: NvmeDeviceInfo[];
}

/** A check or an operation failed; the message says what to do. */
export class SetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SetupError";
  }
}

/** Normalizes a PCI address to domain:bus:slot.function ("00:04.0" -> "0000:00:04.0"). */
export function normalizePciAddress(text: string): string {
  const m = /^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/.exec(text);
  if (!m) throw new SetupError(`'${text}' is not a PCI address (write it as 0000:00:04.0)`);
  const [, domain = "0", bus = "", slot = "", fn = ""] = m;
  if (parseInt(slot, 16) > 0x1f) throw new SetupError(`'${text}': PCI slot above 1f`);
  return `${domain.padStart(4, "0")}:${bus.padStart(2, "0")}:${slot.padStart(2, "0")}.${fn}`
    .toLowerCase();
}

/** Reads what `status` shows. */
export async function setupStatus(host: SetupHost = SYSTEM_HOST): Promise<SetupStatus> {
  const pciDevices = `${host.sys}/bus/pci/devices`;
  if (!(await isDir(pciDevices))) {
    throw new SetupError(`${pciDevices} is missing: this is not Linux with sysfs, or no PCI bus.`);
  }
  const usage = await blockUsage(host);
  const devices: NvmeDeviceInfo[] = [];
  for (const address of (await listDir(pciDevices)).sort()) {
    const info = await deviceInfo(host, address, usage);
    if (info !== null) devices.push(info);
  }
  return {
    iommuGroups: (await listDir(`${host.sys}/kernel/iommu_groups`)).length,
    vfioPci: await isDir(`${host.sys}/bus/pci/drivers/vfio-pci`),
    vfioIommuType1: await isDir(`${host.sys}/module/vfio_iommu_type1`),
    vfioContainer: await exists(`${host.dev}/vfio/vfio`),
    devices,
  };
}

/** The devices `addresses` name (all NVMe devices when empty); errors for unknown or non-NVMe. */
async function pick(
  host: SetupHost,
  status: SetupStatus,
  addresses: readonly string[],
): Promise<NvmeDeviceInfo[]> {
  const out: NvmeDeviceInfo[] = [];
  for (const a of addresses.map(normalizePciAddress)) {
    const dev = status.devices.find((d) => d.address === a);
    if (dev !== undefined) {
      if (!out.includes(dev)) out.push(dev);
      continue;
    }
    if (await exists(`${host.sys}/bus/pci/devices/${a}`)) {
      const cls = await readText(`${host.sys}/bus/pci/devices/${a}/class`);
      throw new SetupError(`${a} is not an NVMe controller (PCI class ${cls}, want 0x010802)`);
    }
    throw new SetupError(`no PCI device ${a}`);
  }
  return out;
}

/**
 * Binds NVMe devices to vfio-pci (all that are not in use when `addresses` is empty). Returns
 * one line per device for the user. Throws SetupError when VFIO cannot work here.
 */
export async function bindVfio(
  addresses: readonly string[],
  host: SetupHost = SYSTEM_HOST,
  say: (line: string) => void = console.log,
): Promise<void> {
  let status = await setupStatus(host);
  const named = addresses.length > 0;
  let targets = named ? await pick(host, status, addresses) : status.devices;
  if (!named && targets.length === 0) {
    say("no NVMe devices found");
    return;
  }
  for (const d of targets) {
    if (d.inUse.length === 0) continue;
    const why = `${d.address} is in use: ${d.inUse.join("; ")}`;
    if (named) throw new SetupError(`${why}. Unmount / release it first.`);
    say(`${why}: skipped`);
  }
  targets = targets.filter((d) => d.inUse.length === 0);

  await requireVfio(host, status);
  status = await setupStatus(host); // modules may have been loaded
  for (const t of targets) {
    const d = status.devices.find((x) => x.address === t.address) ?? t;
    if (d.driver === "vfio-pci") {
      say(`${d.address} (${d.id}): already on vfio-pci, IOMMU group ${d.iommuGroup}`);
      continue;
    }
    await requireGroupViable(host, d, targets.map((x) => x.address));
    await rebind(host, d.address, "vfio-pci");
    const node = `${host.dev}/vfio/${d.iommuGroup}`;
    if (!(await waitFor(() => exists(node), host.settleMs ?? SETTLE_MS))) {
      throw new SetupError(`${d.address} is on vfio-pci but ${node} did not appear (no devtmpfs?)`);
    }
    say(`${d.address} (${d.id}): ${d.driver ?? "no driver"} -> vfio-pci, ${node}`);
  }
}

/**
 * Gives NVMe devices back to the kernel's nvme driver (all on vfio-pci when `addresses` is
 * empty), and waits for the driver to take them.
 */
export async function unbindVfio(
  addresses: readonly string[],
  host: SetupHost = SYSTEM_HOST,
  say: (line: string) => void = console.log,
): Promise<void> {
  const status = await setupStatus(host);
  const targets = addresses.length > 0
    ? await pick(host, status, addresses)
    : status.devices.filter((d) => d.driver === "vfio-pci");
  if (targets.length === 0) {
    say("no NVMe devices on vfio-pci");
    return;
  }
  if (!(await isDir(`${host.sys}/bus/pci/drivers/nvme`))) await host.modprobe("nvme");
  if (!(await isDir(`${host.sys}/bus/pci/drivers/nvme`))) {
    throw new SetupError("the kernel's nvme driver is not available: modprobe nvme failed");
  }
  const named = addresses.length > 0;
  for (const d of targets) {
    if (d.driver === "nvme") {
      say(`${d.address} (${d.id}): already on nvme`);
      continue;
    }
    // Unbinding a device a VFIO user holds blocks in the kernel until that user lets go (vfio-pci
    // asks it through the request interrupt): refuse instead of hanging.
    const users = d.driver === "vfio-pci" && d.iommuGroup !== null
      ? await vfioGroupUsers(host, d.iommuGroup)
      : [];
    if (users.length > 0) {
      const why = `${d.address} is in use: ${host.dev}/vfio/${d.iommuGroup} is open in ${
        users.join(", ")
      }`;
      if (named) throw new SetupError(`${why}. Stop it (or detach the controller) first.`);
      say(`${why}: skipped`);
      continue;
    }
    await rebind(host, d.address, null);
    say(`${d.address} (${d.id}): ${d.driver ?? "no driver"} -> nvme`);
  }
}

/** Processes that have `/dev/vfio/<group>` open, as "pid N (comm)". */
async function vfioGroupUsers(host: SetupHost, group: number): Promise<string[]> {
  const node = `${host.dev}/vfio/${group}`;
  const users: string[] = [];
  for (const pid of (await listDir(host.proc)).filter((n) => /^\d+$/.test(n)).sort()) {
    for (const fd of await listDir(`${host.proc}/${pid}/fd`)) {
      if ((await readLink(`${host.proc}/${pid}/fd/${fd}`)) === node) {
        users.push(`pid ${pid} (${await readText(`${host.proc}/${pid}/comm`) || "?"})`);
        break;
      }
    }
  }
  return users;
}

/** Throws a SetupError that says what is missing for VFIO; loads the modules it can. */
async function requireVfio(host: SetupHost, status: SetupStatus): Promise<void> {
  if (status.iommuGroups === 0) {
    throw new SetupError(
      `no IOMMU: ${host.sys}/kernel/iommu_groups is empty, so VFIO cannot isolate devices. ` +
        "Enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware and boot Linux with " +
        "intel_iommu=on (Intel; AMD's is on by default). In a QEMU guest: -machine q35 " +
        "-device intel-iommu,intremap=on and intel_iommu=on on the guest kernel's command line.",
    );
  }
  if (!status.vfioPci) await host.modprobe("vfio-pci");
  if (!(await isDir(`${host.sys}/bus/pci/drivers/vfio-pci`))) {
    throw new SetupError(
      "the vfio-pci driver is missing and modprobe vfio-pci failed: this kernel has no " +
        "CONFIG_VFIO_PCI, or its modules are not installed",
    );
  }
  // type1 is VFIO's IOMMU backend for x86; it is not loaded on demand.
  if (!status.vfioIommuType1) await host.modprobe("vfio_iommu_type1");
  if (!(await isDir(`${host.sys}/module/vfio_iommu_type1`))) {
    throw new SetupError(
      "the vfio_iommu_type1 module is missing and modprobe vfio_iommu_type1 failed: without " +
        "it VFIO cannot map DMA (VFIO_SET_IOMMU fails with ENODEV)",
    );
  }
  if (!(await exists(`${host.dev}/vfio/vfio`))) {
    throw new SetupError(`${host.dev}/vfio/vfio is missing: the vfio module is not loaded`);
  }
}

/**
 * VFIO opens a group only when every device in it is bound to a VFIO driver or to none
 * (PCIe bridges on pcieport are fine): refuse a group shared with devices a kernel driver has.
 */
async function requireGroupViable(
  host: SetupHost,
  d: NvmeDeviceInfo,
  alsoBinding: readonly string[],
): Promise<void> {
  if (d.iommuGroup === null) {
    throw new SetupError(
      `${d.address} has no IOMMU group (the IOMMU does not cover it; check intel_iommu=on)`,
    );
  }
  const members = await listDir(`${host.sys}/kernel/iommu_groups/${d.iommuGroup}/devices`);
  const blockers: string[] = [];
  for (const m of members.sort()) {
    if (m === d.address || alsoBinding.includes(m)) continue;
    const drv = await driverOf(host, m);
    if (drv !== null && drv !== "vfio-pci" && drv !== "pcieport") blockers.push(`${m} (${drv})`);
  }
  if (blockers.length > 0) {
    throw new SetupError(
      `IOMMU group ${d.iommuGroup} of ${d.address} also holds ${blockers.join(", ")}: VFIO ` +
        "only opens a group whose devices are all on vfio-pci or driverless; bind or unbind " +
        "those too (or move the device to a slot with its own group)",
    );
  }
}

/**
 * Moves a device to `driver` (vfio-pci) or, with null, back to whatever the kernel would pick
 * (nvme), through driver_override, unbind and drivers_probe; waits until it is there.
 */
async function rebind(host: SetupHost, address: string, driver: string | null): Promise<void> {
  const dev = `${host.sys}/bus/pci/devices/${address}`;
  // An empty driver_override (a lone newline) clears it.
  await writeSysfs(`${dev}/driver_override`, driver === null ? "\n" : driver);
  if (await exists(`${dev}/driver`)) await writeSysfs(`${dev}/driver/unbind`, address);
  await writeSysfs(`${host.sys}/bus/pci/drivers_probe`, address);
  const want = driver ?? "nvme";
  const ok = await waitFor(
    async () => (await driverOf(host, address)) === want,
    host.settleMs ?? SETTLE_MS,
  );
  if (!ok) {
    const now = await driverOf(host, address);
    throw new SetupError(
      `${address} did not bind to ${want} (now: ${now ?? "no driver"}); see dmesg`,
    );
  }
}

async function writeSysfs(path: string, value: string): Promise<void> {
  try {
    await Deno.writeTextFile(path, value);
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new SetupError(`cannot write ${path}: permission denied (run sluice setup as root)`);
    }
    throw new SetupError(`writing '${value.trim()}' to ${path} failed: ${errorText(e)}`);
  }
}

/** NVMe info for one PCI device, or null when it is not an NVMe controller. */
async function deviceInfo(
  host: SetupHost,
  address: string,
  usage: Map<string, string[]>,
): Promise<NvmeDeviceInfo | null> {
  const dev = `${host.sys}/bus/pci/devices/${address}`;
  const cls = parseInt(await readText(`${dev}/class`), 16);
  if (cls !== NVME_CLASS) return null;
  const vendor = (await readText(`${dev}/vendor`)).replace(/^0x/, "");
  const device = (await readText(`${dev}/device`)).replace(/^0x/, "");
  const driver = await driverOf(host, address);
  const groupLink = await readLink(`${dev}/iommu_group`);
  const iommuGroup = groupLink === null ? null : Number(basename(groupLink));
  const vfioNode = driver === "vfio-pci" && iommuGroup !== null &&
      await exists(`${host.dev}/vfio/${iommuGroup}`)
    ? `${host.dev}/vfio/${iommuGroup}`
    : null;
  const blockDevices: string[] = [];
  for (const ctrl of (await listDir(`${dev}/nvme`)).sort()) {
    for (const e of (await listDir(`${dev}/nvme/${ctrl}`)).sort()) {
      // nvme0n1, or with native multipath nvme<subsys>c<ctrl>n<ns> whose disk is nvme<subsys>n<ns>.
      const m = /^nvme(\d+)(?:c\d+)?n(\d+)$/.exec(e);
      if (m) {
        const name = `nvme${m[1]}n${m[2]}`;
        if (!blockDevices.includes(name)) blockDevices.push(name);
      }
    }
  }
  const inUse = blockDevices.flatMap((b) => usage.get(b) ?? []);
  return { address, id: `${vendor}:${device}`, driver, iommuGroup, vfioNode, blockDevices, inUse };
}

/**
 * Block device (disk) name -> reasons it is in use: a filesystem of it or of a partition mounted
 * (matched by major:minor in mountinfo, so any name of the device counts), swap, or holders
 * (device-mapper, md).
 */
async function blockUsage(host: SetupHost): Promise<Map<string, string[]>> {
  const byDevNo = new Map<string, { disk: string; name: string }>();
  const holders = new Map<string, string[]>();
  for (const disk of await listDir(`${host.sys}/block`)) {
    if (!disk.startsWith("nvme")) continue;
    const dir = `${host.sys}/block/${disk}`;
    const parts = [disk, ...(await listDir(dir)).filter((p) => p.startsWith(disk))];
    for (const p of parts) {
      const path = p === disk ? dir : `${dir}/${p}`;
      const devNo = (await readText(`${path}/dev`)).trim();
      if (devNo) byDevNo.set(devNo, { disk, name: p });
      const hs = await listDir(`${path}/holders`);
      if (hs.length > 0) holders.set(disk, [...(holders.get(disk) ?? []), `${p} held by ${hs}`]);
    }
  }
  const usage = new Map<string, string[]>();
  const add = (disk: string, why: string) => usage.set(disk, [...(usage.get(disk) ?? []), why]);
  for (const [disk, whys] of holders) for (const w of whys) add(disk, w);
  const mountinfo = await readText(`${host.proc}/self/mountinfo`);
  for (const line of mountinfo.split("\n")) {
    // id parent major:minor root mountpoint ...
    const f = line.split(" ");
    const hit = f[2] === undefined ? undefined : byDevNo.get(f[2]);
    if (hit !== undefined) add(hit.disk, `/dev/${hit.name} is mounted on ${unescape(f[4] ?? "")}`);
  }
  const swaps = await readText(`${host.proc}/swaps`);
  for (const line of swaps.split("\n").slice(1)) {
    const name = /^\/dev\/(nvme\d+n\d+)(p\d+)?\s/.exec(line);
    if (name?.[1]) add(name[1], `/dev/${name[1]}${name[2] ?? ""} is used as swap`);
  }
  return usage;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

async function driverOf(host: SetupHost, address: string): Promise<string | null> {
  const link = await readLink(`${host.sys}/bus/pci/devices/${address}/driver`);
  return link === null ? null : basename(link);
}

/** Formats `status` as a table. */
export function formatStatus(s: SetupStatus): string {
  const yes = (b: boolean) => (b ? "yes" : "no");
  const lines = [
    `IOMMU groups: ${s.iommuGroups}${s.iommuGroups === 0 ? " (no IOMMU: VFIO unusable)" : ""}; ` +
    `vfio-pci: ${yes(s.vfioPci)}; vfio_iommu_type1: ${yes(s.vfioIommuType1)}; ` +
    `/dev/vfio/vfio: ${yes(s.vfioContainer)}`,
  ];
  if (s.devices.length === 0) {
    lines.push("no NVMe devices");
    return lines.join("\n");
  }
  const rows = [["PCI address", "id", "driver", "IOMMU group", "devices", "in use"]];
  for (const d of s.devices) {
    rows.push([
      d.address,
      d.id,
      d.driver ?? "-",
      d.iommuGroup === null ? "-" : String(d.iommuGroup),
      d.vfioNode ?? (d.blockDevices.join(",") || "-"),
      d.inUse.length > 0 ? d.inUse.join("; ") : "-",
    ]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0))) ?? [];
  for (const r of rows) {
    lines.push(r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd());
  }
  return lines.join("\n");
}

/** `sluice setup ARGS`; returns the exit status. */
export async function setup(
  args: readonly string[],
  host: SetupHost = SYSTEM_HOST,
): Promise<number> {
  const positional: string[] = [];
  let json = false;
  for (const a of args) {
    if (a === "-h" || a === "--help") {
      console.log(SETUP_USAGE);
      return 0;
    } else if (a === "--json") json = true;
    else if (a.startsWith("-")) {
      console.error(`sluice setup: unknown option ${a}\nRun 'sluice setup --help' for usage.`);
      return 2;
    } else positional.push(a);
  }
  const commands = ["status", "bind", "config", "unbind", "reset"];
  const command = positional[0] !== undefined && commands.includes(positional[0])
    ? positional.shift() as string
    : "status";
  try {
    positional.forEach(normalizePciAddress);
  } catch (e) {
    console.error(`sluice setup: ${errorText(e)}\nRun 'sluice setup --help' for usage.`);
    return 2;
  }
  if (json && command !== "status") {
    console.error("sluice setup: --json is for status\nRun 'sluice setup --help' for usage.");
    return 2;
  }
  try {
    switch (command) {
      case "status": {
        const s = await setupStatus(host);
        if (positional.length > 0) s.devices = await pick(host, s, positional);
        console.log(json ? JSON.stringify(s, null, 2) : formatStatus(s));
        return 0;
      }
      case "bind":
      case "config":
        await bindVfio(positional, host);
        return 0;
      default:
        await unbindVfio(positional, host);
        return 0;
    }
  } catch (e) {
    if (e instanceof SetupError) {
      console.error(`sluice setup: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

async function waitFor(ok: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = performance.now() + ms;
  while (true) {
    if (await ok()) return true;
    if (performance.now() > until) return false;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function readText(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch {
    return "";
  }
}

async function readLink(path: string): Promise<string | null> {
  try {
    return await Deno.readLink(path);
  } catch {
    return null;
  }
}

async function listDir(path: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(path)) names.push(e.name);
  } catch {
    // missing: empty
  }
  return names;
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

function basename(p: string): string {
  return p.slice(p.lastIndexOf("/") + 1);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

if (import.meta.main) {
  Deno.exit(await setup(Deno.args));
}

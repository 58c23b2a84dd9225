/**
 * Boots the appliance image in QEMU (TCG) for image/boot_test.ts: q35 with an emulated Intel
 * IOMMU (VFIO in the appliance), the image as a virtio disk (a qcow2 overlay, so the built image
 * stays as it is), NVMe drives, user networking with the admin and NVMe/TCP ports forwarded to
 * host loopback ports, BIOS (SeaBIOS) or UEFI (OVMF) firmware, the serial console to a file.
 * @module
 */
import { runChecked } from "../test/vm/exec.ts";

export interface ApplianceVmOptions {
  /** The disk to boot: a qcow2 overlay, or a raw copy of the image. */
  disk: string;
  diskFormat?: "qcow2" | "raw";
  /** The appliance's address the forwards go to; default QEMU's first DHCP address. */
  guestAddr?: string;
  /** Raw files backing the emulated NVMe drives. */
  nvme: readonly string[];
  firmware: "bios" | "uefi";
  /** A copy of OVMF's variable store for UEFI (written by the firmware). */
  ovmfVars?: string;
  adminPort: number;
  nvmfPort: number;
  /** Where the serial console goes (appended to). */
  serialLog: string;
  /** QEMU monitor socket, for system_powerdown. */
  monitor: string;
  /** Host port forwarded to the appliance's ssh (22). */
  sshPort?: number;
  /** Raw files attached read-only as further virtio disks (vdb, ...). */
  extraDisks?: readonly string[];
  memMiB?: number;
}

/** First PCI slot of the NVMe drives on q35's root bus: 0000:00:04.0, 0000:00:05.0, ... */
const FIRST_NVME_SLOT = 4;

export function nvmePciAddress(index: number): string {
  return `0000:00:${(FIRST_NVME_SLOT + index).toString(16).padStart(2, "0")}.0`;
}

export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
export const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd";

export class ApplianceVm {
  readonly options: ApplianceVmOptions;
  readonly child: Deno.ChildProcess;
  readonly started = performance.now();
  readonly exited: Promise<Deno.CommandStatus>;
  #done = false;

  constructor(options: ApplianceVmOptions) {
    this.options = options;
    const o = options;
    const args = [
      ...["-accel", "tcg,thread=multi,tb-size=512", "-cpu", "max"],
      ...["-machine", "q35", "-smp", "2", "-m", String(o.memMiB ?? 2048)],
      // QEMU wants the IOMMU created before the PCI devices it translates for.
      ...["-device", "intel-iommu,intremap=on"],
      ...["-nodefaults", "-no-user-config", "-display", "none"],
      ...["-serial", `file:${o.serialLog}`],
      ...["-monitor", `unix:${o.monitor},server=on,wait=off`],
      ...[
        "-drive",
        `file=${o.disk},if=none,id=boot,format=${o.diskFormat ?? "qcow2"},cache=unsafe`,
      ],
      ...["-device", "virtio-blk-pci,drive=boot,bootindex=0,bus=pcie.0,addr=0x3"],
      ...[
        "-netdev",
        `user,id=net0,hostfwd=tcp:127.0.0.1:${o.adminPort}-${o.guestAddr ?? ""}:8080,` +
        `hostfwd=tcp:127.0.0.1:${o.nvmfPort}-${o.guestAddr ?? ""}:4420` +
        (o.sshPort === undefined ? "" : `,hostfwd=tcp:127.0.0.1:${o.sshPort}-:22`),
      ],
      ...["-device", "virtio-net-pci,netdev=net0,bus=pcie.0,addr=0x2"],
    ];
    o.nvme.forEach((path, i) => {
      const slot = `0x${(FIRST_NVME_SLOT + i).toString(16)}`;
      args.push(
        "-drive",
        `file=${path},if=none,id=nvm${i},format=raw,cache=writeback`,
        "-device",
        `nvme,id=nvme${i},serial=SLUICE-IMG${i},drive=nvm${i},bus=pcie.0,addr=${slot}`,
      );
    });
    (o.extraDisks ?? []).forEach((path, i) => {
      args.push(
        "-drive",
        `file=${path},if=none,id=extra${i},format=raw,readonly=on`,
        "-device",
        `virtio-blk-pci,drive=extra${i},bus=pcie.0,addr=0x${(0x10 + i).toString(16)}`,
      );
    });
    if (o.firmware === "uefi") {
      if (o.ovmfVars === undefined) throw new Error("UEFI needs a copy of OVMF's variables");
      args.push(
        "-drive",
        `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
        "-drive",
        `if=pflash,format=raw,unit=1,file=${o.ovmfVars}`,
      );
    }
    // setpriv: the kernel kills QEMU if this process dies first (no orphaned appliance).
    this.child = new Deno.Command("setpriv", {
      args: ["--pdeathsig", "KILL", "--", "qemu-system-x86_64", ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.exited = this.child.output().then((o) => {
      this.#done = true;
      const err = new TextDecoder().decode(o.stderr).trim();
      if (err) console.error(`qemu: ${err}`);
      return { success: o.success, code: o.code, signal: o.signal };
    });
  }

  get running(): boolean {
    return !this.#done;
  }

  /** The serial console so far. */
  async console(): Promise<string> {
    return (await Deno.readTextFile(this.options.serialLog).catch(() => "")).replaceAll("\r", "");
  }

  /** Sends a human monitor command. */
  async monitor(command: string): Promise<void> {
    const conn = await Deno.connect({ transport: "unix", path: this.options.monitor });
    try {
      await conn.write(new TextEncoder().encode(`${command}\n`));
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      conn.close();
    }
  }

  /** ACPI power button, then wait for the guest to power off (a clean shutdown). */
  async powerdown(timeoutMs: number): Promise<boolean> {
    await this.monitor("system_powerdown");
    const t = new Promise<false>((r) => setTimeout(() => r(false), timeoutMs));
    const ok = await Promise.race([this.exited.then(() => true), t]);
    if (!ok) await this.kill();
    return ok;
  }

  async kill(): Promise<void> {
    if (!this.#done) {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await this.exited;
  }
}

/** A qcow2 overlay over the raw image, `sizeGiB` large (the data partition grows into it). */
export async function overlay(raw: string, path: string, sizeGiB: number): Promise<void> {
  await runChecked([
    "qemu-img",
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    raw,
    "-F",
    "raw",
    path,
    `${sizeGiB}G`,
  ]);
}

/**
 * Builds the bootable appliance image, `dist/sluice-<version>.img` (raw, GPT), a qcow2 and a
 * zstd-compressed copy beside it (docs/install.md).
 *
 * ```sh
 * deno task image            # as root; installs its host tools with apt-get when missing
 * ```
 *
 * 1. Root file system from Debian's packages only: `mmdebstrap` (image/packages.txt, hooks in
 *    image/hooks/), cached as a tarball in `var/image/cache/` keyed by the package list, the
 *    hooks and the mirrors: the second build does not touch the network.
 * 2. The overlay (image/rootfs/: systemd units, fstab, scripts), sluice (Deno's binary from the
 *    npm package `deno` plus the sluice modules the appliance loads, its npm dependencies and
 *    transpiled modules cached at build time), unit symlinks, every mtime set to
 *    SOURCE_DATE_EPOCH.
 * 3. File systems without mounting anything: ext4 with `mkfs.ext4 -d` (fixed UUID and hash
 *    seed), FAT with mkfs.vfat + mtools, GPT with sfdisk on the image file.
 * 4. GRUB for BIOS (boot.img in the MBR, core.img in the BIOS boot partition, patched as
 *    grub-install would) and UEFI (EFI/BOOT/BOOTX64.EFI), both made with grub-mkimage with an
 *    embedded config that finds the ESP and loads its grub.cfg, which boots root slot A or B.
 *
 * Environment: SOURCE_DATE_EPOCH (default: the last commit's time), SLUICE_IMAGE_DIST (output
 * directory, default dist/), SLUICE_IMAGE_VAR (cache and work directory, default var/image).
 * @module
 */
import { fileURLToPath } from "node:url";
import { runChecked, runCommand, which } from "../test/vm/exec.ts";
import { VERSION } from "../src/version.ts";
import { DISK, IMAGE_FORMAT, MIRRORS, partitionTable, SECTOR } from "./layout.ts";
import { exists } from "../appliance/fs.ts";

const REPO = fileURLToPath(new URL("../", import.meta.url)).replace(/\/$/, "");
const IMAGE_DIR = `${REPO}/image`;

/** Host tools the build needs (Debian package names). */
const HOST_PACKAGES = [
  "mmdebstrap",
  "grub-pc-bin",
  "grub-efi-amd64-bin",
  "grub-common",
  "mtools",
  "dosfstools",
  "fdisk",
  "e2fsprogs",
  "qemu-utils",
  "zstd",
];
const HOST_COMMANDS: Record<string, string> = {
  mmdebstrap: "mmdebstrap",
  "grub-mkimage": "grub-common",
  mcopy: "mtools",
  "mkfs.vfat": "dosfstools",
  sfdisk: "fdisk",
  "mkfs.ext4": "e2fsprogs",
  "qemu-img": "qemu-utils",
  zstd: "zstd",
};

/** GRUB modules built into both GRUB images (no module is loaded from disk). */
const GRUB_COMMON_MODULES = [
  "part_gpt",
  "fat",
  "ext2",
  "normal",
  "linux",
  "search",
  "search_label",
  "search_fs_uuid",
  "configfile",
  "loadenv",
  "echo",
  "test",
  "serial",
  "terminal",
  "sleep",
  "reboot",
  "halt",
];
const GRUB_BIOS_MODULES = ["biosdisk", ...GRUB_COMMON_MODULES];
const GRUB_EFI_MODULES = ["efi_gop", "efi_uga", ...GRUB_COMMON_MODULES];

/** Units enabled in the image (besides Debian's defaults); ssh is disabled (docs/install.md). */
const ENABLE_UNITS = [
  "sluice.service",
  "sluice-prepare.service",
  "sluice-console.service",
  "sluice-console-serial.service",
  "sluice-slot-good.service",
  "systemd-networkd.service",
];
const DISABLE_UNITS = [
  "ssh.service",
  "ssh.socket",
  // nvme-cli's: this node is an NVMe/TCP target, not a host.
  "nvmf-autoconnect.service",
];
const MASK_UNITS = ["getty@tty1.service", "systemd-networkd-wait-online.service"];

/** The modules of sluice the appliance runs (and what they import). */
const SLUICE_ENTRY_POINTS = [
  "appliance/main.ts",
  "appliance/web/start.ts",
  "appliance/setup.ts",
  // Loaded with new Worker(), which `deno info` does not follow: the data-path workers.
  "src/worker/worker_main.ts",
];

function log(msg: string): void {
  console.log(`image: ${msg}`);
}

async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Installs the host tools with apt-get when one is missing (as root), like test/vm/setup.ts. */
async function ensureHostTools(): Promise<void> {
  const missing = new Set<string>();
  for (const [cmd, pkg] of Object.entries(HOST_COMMANDS)) {
    if (!(await which(cmd)) && !(await which(`/usr/sbin/${cmd}`))) missing.add(pkg);
  }
  for (const dir of ["/usr/lib/grub/i386-pc", "/usr/lib/grub/x86_64-efi"]) {
    if (!(await exists(dir))) {
      missing.add(dir.endsWith("i386-pc") ? "grub-pc-bin" : "grub-efi-amd64-bin");
    }
  }
  if (missing.size === 0) return;
  if (Deno.uid() !== 0) {
    throw new Error(`missing host packages: ${[...missing].join(" ")} (install them as root)`);
  }
  log(`installing host packages: ${[...missing].join(" ")}`);
  const install = ["apt-get", "install", "-y", "--no-install-recommends", ...HOST_PACKAGES];
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  if ((await runCommand(install, { env })).code !== 0) {
    await runChecked(["apt-get", "update"], { env });
    await runChecked(install, { env });
  }
}

/** The commit time, or SOURCE_DATE_EPOCH when set. */
async function sourceDateEpoch(): Promise<number> {
  const fromEnv = Deno.env.get("SOURCE_DATE_EPOCH");
  if (fromEnv) return Number(fromEnv);
  const out = await runChecked(["git", "-C", REPO, "log", "-1", "--format=%ct"]);
  return Number(out.trim());
}

function packageList(text: string): string[] {
  return text.split("\n").map((l) => l.replace(/#.*/, "").trim()).filter((l) => l !== "");
}

/** Step 1: the Debian root file system as a tarball, from the cache when its key matches. */
async function debianRootfs(cacheDir: string, epoch: number): Promise<string> {
  const packagesText = await Deno.readTextFile(`${IMAGE_DIR}/packages.txt`);
  const setupHook = await Deno.readTextFile(`${IMAGE_DIR}/hooks/setup.sh`);
  const customizeHook = await Deno.readTextFile(`${IMAGE_DIR}/hooks/customize.sh`);
  const initramfs = [
    await Deno.readTextFile(`${IMAGE_DIR}/initramfs/hook`),
    await Deno.readTextFile(`${IMAGE_DIR}/initramfs/grow-data`),
  ];
  const key = (await sha256Hex(
    JSON.stringify({ IMAGE_FORMAT, packagesText, setupHook, customizeHook, initramfs, MIRRORS }),
  )).slice(0, 16);
  const tarball = `${cacheDir}/rootfs-${key}.tar`;
  if (await exists(tarball)) {
    log(`Debian root file system from the cache: ${tarball}`);
    return tarball;
  }
  await Deno.mkdir(cacheDir, { recursive: true });
  const partial = `${tarball}.partial-${Deno.pid}.tar`;
  const started = performance.now();
  log(`mmdebstrap bookworm (${packageList(packagesText).length} packages); a few minutes`);
  const argv = [
    "mmdebstrap",
    "--mode=root",
    "--variant=essential",
    '--aptopt=APT::Install-Recommends "false"',
    `--include=${packageList(packagesText).join(",")}`,
    `--setup-hook=${IMAGE_DIR}/hooks/setup.sh "$1"`,
    `--customize-hook=${IMAGE_DIR}/hooks/customize.sh "$1"`,
    "bookworm",
    partial,
    ...MIRRORS,
  ];
  const child = new Deno.Command(argv[0] as string, {
    args: argv.slice(1),
    env: { SOURCE_DATE_EPOCH: String(epoch), DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const status = await child.status;
  if (!status.success) {
    await Deno.remove(partial).catch(() => {});
    throw new Error(`mmdebstrap failed (exit ${status.code})`);
  }
  await Deno.rename(partial, tarball);
  // Older tarballs of other keys are of no use any more.
  for await (const e of Deno.readDir(cacheDir)) {
    if (e.name.startsWith("rootfs-") && `${cacheDir}/${e.name}` !== tarball) {
      await Deno.remove(`${cacheDir}/${e.name}`).catch(() => {});
    }
  }
  log(`mmdebstrap took ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return tarball;
}

/** The local modules (and wasm) sluice's entry points need, relative to the repository. */
async function sluiceFiles(deno: string): Promise<string[]> {
  const files = new Set<string>(["deno.json", "deno.lock"]);
  if (await exists(`${REPO}/docs/install.md`)) files.add("docs/install.md");
  for (const entry of SLUICE_ENTRY_POINTS) {
    const out = await runChecked([deno, "info", "--json", entry], { cwd: REPO });
    const info = JSON.parse(out) as { modules: { specifier: string; kind?: string }[] };
    for (const m of info.modules) {
      if (!m.specifier.startsWith("file://")) continue;
      const path = fileURLToPath(m.specifier);
      if (!path.startsWith(`${REPO}/`)) throw new Error(`module outside the repository: ${path}`);
      files.add(path.slice(REPO.length + 1));
    }
  }
  for await (const e of Deno.readDir(`${REPO}/wasm/dist`)) {
    if (e.isFile && e.name.endsWith(".wasm")) files.add(`wasm/dist/${e.name}`);
  }
  return [...files].sort();
}

/** Step 2: the root tree in `root`: Debian, the overlay, sluice, units, timestamps. */
async function stageRoot(tarball: string, root: string, epoch: number): Promise<void> {
  await runChecked(["rm", "-rf", root]);
  await Deno.mkdir(root, { recursive: true });
  await runChecked([
    "tar",
    "-xpf",
    tarball,
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "-C",
    root,
  ]);
  await runChecked(["cp", "-a", "--no-preserve=ownership", `${IMAGE_DIR}/rootfs/.`, `${root}/`]);
  // A checkout's modes follow the umask (0775 with umask 002): set the overlay's (and the
  // directories it shares with Debian's, /etc included) to 0755 / 0644, 0755 for executables.
  const overlayPaths = (await runChecked(["find", ".", "-mindepth", "1"], {
    cwd: `${IMAGE_DIR}/rootfs`,
  })).split("\n").filter((l) => l).map((l) => l.slice(2));
  for (const rel of overlayPaths) {
    const st = await Deno.lstat(`${IMAGE_DIR}/rootfs/${rel}`);
    if (st.isSymlink) continue;
    const exec = st.isDirectory || ((st.mode ?? 0) & 0o100) !== 0;
    await Deno.chmod(`${root}/${rel}`, exec ? 0o755 : 0o644);
  }
  await runChecked(["chown", "-R", "0:0", `${root}/etc/systemd/system`, `${root}/usr/lib/sluice`]);
  for (const d of ["boot/efi", "var/lib/sluice"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }

  // sluice: Deno's binary and the modules it runs.
  const deno = Deno.execPath();
  const opt = `${root}/opt/sluice`;
  await Deno.mkdir(`${opt}/bin`, { recursive: true });
  await Deno.copyFile(deno, `${opt}/bin/deno`);
  await Deno.chmod(`${opt}/bin/deno`, 0o755);
  const files = await sluiceFiles(deno);
  for (const f of files) {
    await Deno.mkdir(`${opt}/app/${f.slice(0, f.lastIndexOf("/") + 1)}`, { recursive: true });
    await Deno.copyFile(`${REPO}/${f}`, `${opt}/app/${f}`);
  }
  log(`sluice: Deno ${Deno.version.deno} and ${files.length} files of the sluice tree`);
  // npm dependencies (hono) into the image's DENO_DIR, checked against deno.lock; then, inside
  // the new root (same paths as at run time), transpile every module once so the read-only
  // root never needs a cache write.
  // The image's deno.json: the repository's compiler options and only the imports the
  // appliance uses (hono; not the test tools), checked against the repository's lock file.
  const config = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`)) as {
    compilerOptions: unknown;
    imports: Record<string, string>;
  };
  const imports = Object.fromEntries(
    Object.entries(config.imports).filter(([k]) => k === "hono" || k.startsWith("hono/")),
  );
  await Deno.writeTextFile(
    `${opt}/app/deno.json`,
    JSON.stringify({ compilerOptions: config.compilerOptions, imports }, null, 2) + "\n",
  );
  const denoEnv = { DENO_DIR: `${opt}/deno-dir`, DENO_NO_UPDATE_CHECK: "1" };
  const entries = SLUICE_ENTRY_POINTS.map((e) => `${opt}/app/${e}`);
  await runChecked([
    deno,
    "cache",
    "--config",
    `${opt}/app/deno.json`,
    "--lock",
    `${opt}/app/deno.lock`,
    ...entries,
  ], { env: denoEnv });
  // That also transpiled the modules under their build-time paths: of no use at run time, and
  // the path differs between builds. The chroot run below transpiles them under /opt/sluice.
  await Deno.remove(`${opt}/deno-dir/gen`, { recursive: true });
  await chrootRun(root, [
    "/usr/bin/env",
    "DENO_DIR=/opt/sluice/deno-dir",
    "DENO_NO_UPDATE_CHECK=1",
    "/opt/sluice/bin/deno",
    "cache",
    "--lock",
    "/opt/sluice/app/deno.lock",
    "--config",
    "/opt/sluice/app/deno.json",
    ...SLUICE_ENTRY_POINTS.map((e) => `/opt/sluice/app/${e}`),
  ]);
  // SQLite side files of the caches: made again (in memory) at run time.
  await runChecked([
    "find",
    `${opt}/deno-dir`,
    "-maxdepth",
    "1",
    "(",
    "-name",
    "*-shm",
    "-o",
    "-name",
    "*-wal",
    "-o",
    "-name",
    "*_cache_v2",
    ")",
    "-delete",
  ]);

  // Units: enabled, disabled and masked in the new root (systemctl works offline in a chroot).
  // SLUICE_IMAGE_DEBUG=1: a root shell on tty9 without a password, for debugging a build only.
  const debug = Deno.env.get("SLUICE_IMAGE_DEBUG") === "1";
  if (debug) log("DEBUG IMAGE: root shell on tty9 (debug-shell.service); never ship it");
  await chrootRun(root, [
    "systemctl",
    "enable",
    ...ENABLE_UNITS,
    ...(debug ? ["debug-shell.service"] : []),
  ]);
  await chrootRun(root, ["systemctl", "disable", ...DISABLE_UNITS]);
  await chrootRun(root, ["systemctl", "mask", ...MASK_UNITS]);
  await runChecked(["rm", "-f", `${root}/etc/ssh/ssh_host_ed25519_key`]);
  // Reproducible file times.
  await runChecked([
    "find",
    root,
    "-newermt",
    `@${epoch}`,
    "-exec",
    "touch",
    "-h",
    "-d",
    `@${epoch}`,
    "{}",
    "+",
  ]);
}

/** Runs a command inside `root` with /proc and /dev available. */
async function chrootRun(root: string, argv: string[]): Promise<void> {
  await runChecked(["mount", "-t", "proc", "proc", `${root}/proc`]);
  await runChecked(["mount", "--bind", "/dev", `${root}/dev`]);
  try {
    await runChecked(["chroot", root, ...argv], { env: { LC_ALL: "C" } });
  } finally {
    await runCommand(["umount", `${root}/dev`]);
    await runCommand(["umount", `${root}/proc`]);
  }
}

/** An ext4 image of `mib` MiB with the contents of `dir` (or empty), fixed UUID and hash seed. */
async function makeExt4(
  path: string,
  mib: number,
  label: string,
  uuid: string,
  epoch: number,
  dir: string | null,
  journal: boolean,
): Promise<void> {
  await Deno.remove(path).catch(() => {});
  const argv = [
    "mkfs.ext4",
    "-q",
    "-F",
    "-L",
    label,
    "-U",
    uuid,
    "-E",
    `hash_seed=${uuid},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0`,
    "-b",
    "4096",
    "-I",
    "256",
    "-m",
    "0",
    ...(journal ? [] : ["-O", "^has_journal"]),
    ...(dir === null ? [] : ["-d", dir]),
    path,
    `${mib}M`,
  ];
  const env = { E2FSPROGS_FAKE_TIME: String(epoch), SOURCE_DATE_EPOCH: String(epoch) };
  await runChecked(argv, { env });
  if (dir === null) return;
  // mkfs.ext4 -d (1.47.0) copies each file's ctime, which the host set when the build touched
  // it (ctime cannot be set from user space), and its atime: set every inode's to
  // SOURCE_DATE_EPOCH with debugfs, in one session (a second or two for the root tree).
  const paths = (await runChecked(["find", ".", "-mindepth", "1", "-print0"], { cwd: dir }))
    .split("\0").filter((p) => p).map((p) => p.slice(1)).sort();
  const lines: string[] = [];
  for (const p of ["/", ...paths]) {
    if (/["\n]/.test(p)) throw new Error(`cannot fix the times of ${JSON.stringify(p)}`);
    // atime too: reading a file (mkfs.ext4 itself does) moves it under relatime.
    lines.push(`sif "${p}" ctime @${epoch}`, `sif "${p}" atime @${epoch}`);
  }
  const cmds = `${path}.debugfs`;
  await Deno.writeTextFile(cmds, lines.join("\n") + "\n");
  const out = await runCommand(["debugfs", "-w", "-f", cmds, path], { env });
  await Deno.remove(cmds);
  // stdout echoes the commands; stderr has the version banner and any error.
  const errors = out.stderr.split("\n").filter((l) => l && !l.startsWith("debugfs "));
  if (out.code !== 0) errors.push(`exit ${out.code}`);
  if (errors.length > 0) throw new Error(`debugfs: ${errors.slice(0, 5).join("; ")}`);
}

/** The ESP: FAT32 with GRUB for UEFI, grub.cfg, grubenv and the operator's sluice/ folder. */
async function makeEsp(path: string, work: string, epoch: number): Promise<void> {
  await Deno.remove(path).catch(() => {});
  await runChecked([
    "mkfs.vfat",
    "-C",
    "-F",
    "32",
    "-n",
    "SLUICE-ESP",
    "--invariant",
    path,
    String(DISK.espMiB * 1024),
  ], { env: { SOURCE_DATE_EPOCH: String(epoch) } });
  // --invariant (fixed times and serial) also fixes the volume id at 1234-ABCD, the same on
  // every such FAT: write ours into the boot sector and its backup (sector 6), offset 0x43.
  const id = parseInt(DISK.espVolumeId, 16);
  const fat = await Deno.open(path, { read: true, write: true });
  try {
    for (const sector of [0, 6]) {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, id, true);
      await fat.seek(sector * SECTOR + 0x43, Deno.SeekMode.Start);
      await fat.write(b);
    }
  } finally {
    fat.close();
  }
  const tree = `${work}/esp`;
  await runChecked(["rm", "-rf", tree]);
  await Deno.mkdir(`${tree}/EFI/BOOT`, { recursive: true });
  await Deno.mkdir(`${tree}/grub`, { recursive: true });
  await Deno.mkdir(`${tree}/sluice/network`, { recursive: true });
  await runChecked([
    "grub-mkimage",
    "-O",
    "x86_64-efi",
    "-o",
    `${tree}/EFI/BOOT/BOOTX64.EFI`,
    "-c",
    `${work}/grub-early.cfg`,
    "-p",
    "/grub",
    ...GRUB_EFI_MODULES,
  ]);
  await Deno.copyFile(`${IMAGE_DIR}/boot/grub.cfg`, `${tree}/grub/grub.cfg`);
  await Deno.writeFile(`${tree}/grub/grubenv`, grubenv({ sluice_slot: "a" }));
  await Deno.copyFile(`${IMAGE_DIR}/boot/README.txt`, `${tree}/sluice/README.txt`);
  await Deno.copyFile(
    `${IMAGE_DIR}/boot/static.network.example`,
    `${tree}/sluice/network/static.network.example`,
  );
  await runChecked(["find", tree, "-exec", "touch", "-h", "-d", `@${epoch}`, "{}", "+"]);
  // mcopy in a fixed order; -m keeps the (fixed) modification times.
  for (const d of ["EFI", "EFI/BOOT", "grub", "sluice", "sluice/network"]) {
    await runChecked(["mmd", "-i", path, `::/${d}`], { env: { MTOOLS_SKIP_CHECK: "1" } });
  }
  const files = (await runChecked(["find", ".", "-type", "f"], { cwd: tree }))
    .split("\n").filter((l) => l).map((l) => l.slice(2)).sort();
  for (const f of files) {
    await runChecked(["mcopy", "-m", "-i", path, `${tree}/${f}`, `::/${f}`], {
      env: { MTOOLS_SKIP_CHECK: "1", SOURCE_DATE_EPOCH: String(epoch) },
    });
  }
}

/** A GRUB environment block (1024 bytes, `#` padded), as grub-editenv writes it. */
export function grubenv(vars: Record<string, string>): Uint8Array {
  let text = "# GRUB Environment Block\n";
  for (const [k, v] of Object.entries(vars)) text += `${k}=${v}\n`;
  if (text.length > 1024) throw new Error("grubenv over 1024 bytes");
  return new TextEncoder().encode(text.padEnd(1024, "#"));
}

/**
 * Writes GRUB's BIOS boot code into the raw image: boot.img in the MBR's code area (the
 * protective MBR's partition table stays) and core.img at the BIOS boot partition, with the
 * two sector addresses grub-install's setup would patch in: boot.img's kernel sector (0x5c,
 * the LBA of core.img's first sector) and the first blocklist entry at the end of core.img's
 * first sector (diskboot.img: start LBA of the rest of core.img; grub-mkimage wrote its length).
 */
async function installBiosGrub(img: string, work: string): Promise<void> {
  const core = `${work}/core.img`;
  await runChecked([
    "grub-mkimage",
    "-O",
    "i386-pc",
    "-o",
    core,
    "-c",
    `${work}/grub-early.cfg`,
    "-p",
    "/grub",
    ...GRUB_BIOS_MODULES,
  ]);
  const coreBytes = await Deno.readFile(core);
  const coreLba = DISK.biosBootStartMiB * 1024 * 1024 / SECTOR;
  if (coreBytes.length > DISK.biosBootMiB * 1024 * 1024) throw new Error("core.img too large");
  const dv = new DataView(coreBytes.buffer, coreBytes.byteOffset, coreBytes.byteLength);
  // struct grub_boot_blocklist { u64 start; u16 len; u16 segment; } at 512 - 12.
  const bl = SECTOR - 12;
  const len = dv.getUint16(bl + 8, true);
  if (len !== Math.ceil(coreBytes.length / SECTOR) - 1) {
    throw new Error(`core.img blocklist length ${len} does not match its size`);
  }
  dv.setBigUint64(bl, BigInt(coreLba + 1), true);

  const bootImg = await Deno.readFile("/usr/lib/grub/i386-pc/boot.img");
  if (bootImg.length !== SECTOR) throw new Error("boot.img is not one sector");
  const f = await Deno.open(img, { read: true, write: true });
  try {
    const mbr = new Uint8Array(SECTOR);
    await f.seek(0, Deno.SeekMode.Start);
    if ((await f.read(mbr)) !== SECTOR) throw new Error("short read of the MBR");
    const out = bootImg.slice();
    // Keep the disk signature and the protective partition table (0x1b8..0x1ff).
    out.set(mbr.subarray(0x1b8), 0x1b8);
    const odv = new DataView(out.buffer);
    odv.setBigUint64(0x5c, BigInt(coreLba), true);
    // A hard disk: skip boot.img's floppy probe (grub-setup writes two NOPs at 0x66).
    out[0x66] = 0x90;
    out[0x67] = 0x90;
    await f.seek(0, Deno.SeekMode.Start);
    await f.write(out);
    await f.seek(coreLba * SECTOR, Deno.SeekMode.Start);
    let off = 0;
    while (off < coreBytes.length) off += await f.write(coreBytes.subarray(off));
  } finally {
    f.close();
  }
}

/** Copies a partition's file system image into the disk image at `startMiB`. */
async function writeAt(img: string, part: string, startMiB: number): Promise<void> {
  await runChecked([
    "dd",
    `if=${part}`,
    `of=${img}`,
    "bs=1M",
    `seek=${startMiB}`,
    "conv=notrunc,sparse",
    "status=none",
  ]);
}

async function fileSize(path: string): Promise<number> {
  return (await Deno.stat(path)).size;
}

/** Bytes the file occupies on disk (a raw image is sparse). */
async function allocated(path: string): Promise<number> {
  const out = await runChecked(["du", "-B1", "--apparent-size", path]);
  const real = await runChecked(["du", "-B1", path]);
  return Math.min(Number(out.split("\t")[0]), Number(real.split("\t")[0]));
}

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Builds the image; returns the paths written. */
export async function buildImage(): Promise<{ raw: string; qcow2: string; zst: string }> {
  const started = performance.now();
  if (Deno.uid() !== 0) throw new Error("the image build runs as root (mmdebstrap, chroot)");
  await ensureHostTools();
  const epoch = await sourceDateEpoch();
  const varDir = Deno.env.get("SLUICE_IMAGE_VAR") ?? `${REPO}/var/image`;
  const dist = Deno.env.get("SLUICE_IMAGE_DIST") ?? `${REPO}/dist`;
  const work = `${varDir}/work`;
  await runChecked(["rm", "-rf", work]);
  await Deno.mkdir(work, { recursive: true });
  await Deno.mkdir(dist, { recursive: true });

  const tarball = await debianRootfs(`${varDir}/cache`, epoch);
  const root = `${work}/root`;
  await stageRoot(tarball, root, epoch);
  const rootBytes = Number((await runChecked(["du", "-sxB1", root])).split("\t")[0]);
  log(`root tree: ${mib(rootBytes)} (slot size ${DISK.rootMiB} MiB)`);
  if (rootBytes > DISK.rootMiB * 1024 * 1024 * 0.9) {
    throw new Error(`the root tree (${mib(rootBytes)}) does not fit a ${DISK.rootMiB} MiB slot`);
  }

  // GRUB's embedded config: find the ESP by its volume id, then its grub.cfg.
  await Deno.writeTextFile(
    `${work}/grub-early.cfg`,
    `search --no-floppy --fs-uuid --set=root ${DISK.espFsUuid}\n` +
      "set prefix=($root)/grub\nconfigfile $prefix/grub.cfg\n",
  );
  const rootA = `${work}/root-a.ext4`;
  const data = `${work}/data.ext4`;
  const esp = `${work}/esp.vfat`;
  await makeExt4(rootA, DISK.rootMiB, "sluice-root-a", DISK.rootAFsUuid, epoch, root, false);
  await makeExt4(data, DISK.dataMiB, "sluice-data", DISK.dataFsUuid, epoch, null, true);
  await makeEsp(esp, work, epoch);

  const name = `sluice-${VERSION}`;
  const raw = `${dist}/${name}.img`;
  await Deno.remove(raw).catch(() => {});
  const f = await Deno.open(raw, { create: true, write: true, truncate: true });
  await f.truncate(DISK.totalMiB * 1024 * 1024);
  f.close();
  await runChecked(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw], {
    stdin: new TextEncoder().encode(partitionTable()),
  });
  await writeAt(raw, esp, DISK.espStartMiB);
  await writeAt(raw, rootA, DISK.rootAStartMiB);
  await writeAt(raw, data, DISK.dataStartMiB);
  await installBiosGrub(raw, work);
  await Deno.utime(raw, epoch, epoch);

  const qcow2 = `${dist}/${name}.qcow2`;
  await runChecked(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, qcow2]);
  const zst = `${raw}.zst`;
  await runChecked(["zstd", "-q", "-f", "-T2", "-10", "--sparse", raw, "-o", zst]);
  const sums: string[] = [];
  for (const p of [raw, qcow2, zst]) {
    const hash = (await runChecked(["sha256sum", p])).split(" ")[0];
    sums.push(`${hash}  ${p.slice(dist.length + 1)}`);
  }
  await Deno.writeTextFile(`${dist}/${name}.sha256`, sums.join("\n") + "\n");
  await runChecked(["rm", "-rf", work]);

  log(`raw   ${raw}: ${mib(await fileSize(raw))} (${mib(await allocated(raw))} allocated)`);
  log(`qcow2 ${qcow2}: ${mib(await fileSize(qcow2))} (compressed clusters)`);
  log(`zstd  ${zst}: ${mib(await fileSize(zst))}`);
  log(`sha256 ${sums[0]}`);
  log(`built in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return { raw, qcow2, zst };
}

if (import.meta.main) {
  try {
    await buildImage();
  } catch (e) {
    console.error(`image: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}

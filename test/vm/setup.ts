/**
 * Builds (or finds up to date) everything the guest lab needs, in the lab cache directory
 * (`$SLUICE_LAB`, default `var/vm-lab` in the repository):
 *
 * 1. Debian packages on the host (qemu, fio, nvme-cli, busybox-static, ...), installed with
 *    apt-get when missing (as root; `apt-get update` only when an install fails).
 * 2. The kernel the package `linux-image-amd64` currently depends on: `apt-get download`,
 *    `dpkg -x`, `depmod`.
 * 3. `vmlinux`, the uncompressed kernel, taken from the bzImage so QEMU boots it through PVH.
 * 4. Initramfs pieces (newc cpio, uncompressed), concatenated per guest by `guest.ts`:
 *    - base: busybox, `/init`, kernel modules with their dependencies;
 *    - tools: fio, nvme-cli, mkfs.ext4, blkdiscard and their shared libraries;
 *    - deno: the running (glibc) Deno binary and its libraries.
 *
 * Every step is skipped when its output is newer than a fingerprint of its inputs, so a second
 * run takes about a second. A lock file serializes concurrent runs on one cache.
 *
 * ```sh
 * deno run -A test/vm/setup.ts [--force] [--no-deno] [--no-apt]
 * ```
 *
 * Environment: `SLUICE_LAB` (cache directory), `SLUICE_LAB_DENO` (Deno binary for the guest,
 * default: the running one), `SLUICE_LAB_NO_APT=1`, `SLUICE_LAB_NO_DENO=1`, `SLUICE_LAB_FORCE=1`.
 *
 * @module
 */

import { CpioWriter } from "./cpio.ts";
import { CommandError, runChecked, runCommand } from "./exec.ts";
import { extractVmlinux, hasPvhEntry } from "./kernel_image.ts";
import { labDir, type LabManifest, labPaths, type PieceName, readLab } from "./lab.ts";
import { exists } from "../../appliance/fs.ts";

/** Debian packages the lab uses on the host. */
export const HOST_PACKAGES: readonly string[] = [
  "qemu-system-x86", // qemu-system-x86_64, and qemu-storage-daemon through qemu-system-common
  "qemu-utils", // qemu-img
  "fio",
  "nvme-cli",
  "busybox-static",
  "cpio", // not needed by the build (cpio.ts writes the archives); handy to inspect them
  "kmod", // depmod
  "e2fsprogs", // mkfs.ext4
  "util-linux", // blkdiscard, setpriv
  "xz-utils", // the kernel payload and modules are xz-compressed
  "zstd", // for kernels with zstd payloads or modules
];

/** Modules packed into the base piece (their dependencies and soft dependencies come along). */
export const BASE_MODULES: readonly string[] = [
  "virtio_pci",
  "virtio_blk",
  "virtio_net",
  "nvme",
  "nvme-tcp",
  "nvmet",
  "nvmet-tcp",
  "null_blk",
  "configfs",
  "vfio",
  "vfio-pci",
  "vfio_iommu_type1",
  "crc32c",
  "loop",
  "ext4",
];

/** Commands in the tools piece, looked up on the host. */
export const TOOL_COMMANDS: readonly string[] = ["fio", "nvme", "mkfs.ext4", "blkdiscard"];

/** Plain files copied into the tools piece when the host has them. */
const TOOL_FILES: readonly string[] = ["/etc/mke2fs.conf"];

/** Bump when the way a piece is built changes, so cached pieces are rebuilt. */
const PIECE_FORMAT = 1;
const VMLINUX_FORMAT = 1;
const GUEST_BIN_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];
const RUN_DIR_KEEP_MS = 2 * 24 * 3600 * 1000;
const STALE_INITRD_MS = 3600 * 1000;

/** Options for {@linkcode setupLab}. */
export interface SetupOptions {
  /** Cache directory; default {@linkcode labDir}. */
  dir?: string;
  /** Build the deno piece (default true unless `SLUICE_LAB_NO_DENO=1`). */
  deno?: boolean;
  /** Install missing host packages with apt-get (default true unless `SLUICE_LAB_NO_APT=1`). */
  apt?: boolean;
  /** Rebuild every step (default false unless `SLUICE_LAB_FORCE=1`). */
  force?: boolean;
  /** Receives progress lines; default prints them to stderr. */
  log?: (line: string) => void;
}

/** Makes the lab ready and returns its manifest. Idempotent; see the module documentation. */
export async function setupLab(options: SetupOptions = {}): Promise<LabManifest> {
  const env = (k: string) => Deno.env.get(k) === "1";
  const dir = options.dir ?? labDir();
  const paths = labPaths(dir);
  const withDeno = options.deno ?? !env("SLUICE_LAB_NO_DENO");
  const apt = options.apt ?? !env("SLUICE_LAB_NO_APT");
  const force = options.force ?? env("SLUICE_LAB_FORCE");
  const t0 = performance.now();
  const print = options.log ?? ((line: string) => console.error(line));
  const log = (msg: string) =>
    print(`[vm-lab setup ${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);

  for (const d of [dir, paths.kernelRoot, paths.downloads, paths.img, paths.build, paths.runs]) {
    await Deno.mkdir(d, { recursive: true });
  }
  using lockFile = await Deno.open(paths.lock, { create: true, write: true });
  const waiting = setTimeout(() => log("waiting for another setup to finish"), 1000);
  await lockFile.lock(true);
  clearTimeout(waiting);

  log(`lab directory ${dir}`);
  await ensurePackages(apt, log);
  const kernel = await ensureKernel(paths, force, log);
  const boot = await ensureVmlinux(paths, kernel, force, log);
  const modules = await ensureBasePiece(paths, kernel, force, log);
  await ensureToolsPiece(paths, force, log);
  const denoVersion = withDeno ? await ensureDenoPiece(paths, force, log) : null;
  if (!withDeno) await Deno.remove(paths.piece("deno")).catch(() => {});

  const manifest: LabManifest = {
    format: 1,
    kernelPackage: kernel.pkg,
    kernelPackageVersion: kernel.version,
    kernelRelease: kernel.release,
    kernelImage: boot.image,
    bootProtocol: boot.protocol,
    pieces: {
      base: paths.piece("base"),
      tools: paths.piece("tools"),
      deno: withDeno ? paths.piece("deno") : null,
    },
    modules,
    denoVersion,
    updatedAt: new Date().toISOString(),
  };
  await writeAtomic(paths.manifest, new TextEncoder().encode(JSON.stringify(manifest, null, 2)));
  await pruneRuns(paths.runs);
  log(
    `ready: kernel ${kernel.release} (${boot.protocol}), pieces ${await pieceSizes(paths)}` +
      (denoVersion ? `, deno ${denoVersion}` : ""),
  );
  await lockFile.unlock();
  return await readLab(dir);
}

type Log = (msg: string) => void;
type Paths = ReturnType<typeof labPaths>;

// ---------------------------------------------------------------------------------------------
// 1. host packages

async function ensurePackages(apt: boolean, log: Log): Promise<void> {
  const missing = await missingPackages(HOST_PACKAGES);
  if (missing.length === 0) {
    log(`host packages present (${HOST_PACKAGES.length})`);
    return;
  }
  const cmd = `apt-get install --no-install-recommends ${missing.join(" ")}`;
  if (!apt) throw new Error(`Missing Debian packages (SLUICE_LAB_NO_APT=1): run ${cmd}`);
  if (Deno.uid() !== 0) throw new Error(`Missing Debian packages; as root, run: ${cmd}`);
  log(`apt-get install ${missing.join(" ")}`);
  const install = () => aptGet(["install", "-y", "-q", "--no-install-recommends", ...missing]);
  if (!(await install())) {
    log("apt-get install failed; running apt-get update and trying again");
    if (!(await aptGet(["update", "-q"]))) throw new Error("apt-get update failed.");
    if (!(await install())) throw new Error(`apt-get install failed: ${missing.join(" ")}`);
  }
  const still = await missingPackages(HOST_PACKAGES);
  if (still.length > 0) throw new Error(`Packages still missing after install: ${still.join(" ")}`);
}

/** Packages of `names` that dpkg does not list as installed. */
export async function missingPackages(names: readonly string[]): Promise<string[]> {
  const out = await runCommand([
    "dpkg-query",
    "--show",
    "--showformat=${Package}\t${db:Status-Abbrev}\n",
    ...names,
  ]);
  const installed = new Set<string>();
  for (const line of out.stdout.split("\n")) {
    const [name, status] = line.split("\t");
    if (name && status?.startsWith("ii")) installed.add(name);
  }
  return names.filter((n) => !installed.has(n));
}

async function aptGet(args: string[]): Promise<boolean> {
  const status = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  return status.success;
}

// ---------------------------------------------------------------------------------------------
// 2. kernel package

interface Kernel {
  pkg: string;
  version: string;
  release: string;
  /** dpkg -x of the package. */
  root: string;
  bzImage: string;
  /** lib/modules/<release> inside root (depmod'd). */
  moduleDir: string;
}

async function ensureKernel(paths: Paths, force: boolean, log: Log): Promise<Kernel> {
  let resolved = await resolveKernelPackage();
  if (!resolved) {
    const cached = await cachedKernel(paths);
    if (cached && !force) {
      log(`apt cannot resolve linux-image-amd64; using the cached ${cached.pkg}`);
      return cached;
    }
    log("apt cannot resolve linux-image-amd64: running apt-get update");
    await aptUpdateOrThrow();
    resolved = await resolveKernelPackage();
    if (!resolved) throw new Error("Cannot resolve the package linux-image-amd64 depends on.");
  }
  const root = `${paths.kernelRoot}/${resolved.pkg}_${resolved.version}`;
  if (!force && await exists(`${root}/.complete`)) {
    log(`kernel ${resolved.pkg} ${resolved.version} cached`);
    return await describeKernel(root, resolved.pkg, resolved.version);
  }

  log(`apt-get download ${resolved.pkg}=${resolved.version}`);
  let deb = await downloadPackage(paths.downloads, resolved.pkg, resolved.version);
  if (!deb) {
    log("download failed; running apt-get update and resolving again");
    await aptUpdateOrThrow();
    resolved = await resolveKernelPackage();
    if (!resolved) throw new Error("Cannot resolve the package linux-image-amd64 depends on.");
    deb = await downloadPackage(paths.downloads, resolved.pkg, resolved.version);
    if (!deb) throw new Error(`apt-get download ${resolved.pkg} failed.`);
  }
  const final = `${paths.kernelRoot}/${resolved.pkg}_${resolved.version}`;
  const tmp = `${final}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  log(`dpkg -x ${basename(deb)} (${mib((await Deno.stat(deb)).size)})`);
  await runChecked(["dpkg", "-x", deb, tmp]);
  const release = resolved.pkg.replace(/^linux-image-/, "");
  // depmod -b looks in <base>/lib/modules; newer packages ship usr/lib/modules only.
  if (!(await exists(`${tmp}/lib/modules/${release}`))) {
    if (!(await exists(`${tmp}/usr/lib/modules/${release}`))) {
      throw new Error(`${basename(deb)} has no modules for ${release}.`);
    }
    await Deno.symlink("usr/lib", `${tmp}/lib`);
  }
  log(`depmod ${release}`);
  await runChecked(["depmod", "-b", tmp, release]);
  await Deno.remove(final, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, final);
  await Deno.writeTextFile(`${final}/.complete`, `${resolved.pkg} ${resolved.version}\n`);
  await Deno.remove(deb);
  for await (const e of Deno.readDir(paths.kernelRoot)) {
    if (`${paths.kernelRoot}/${e.name}` !== final) {
      log(`removing old kernel ${e.name}`);
      await Deno.remove(`${paths.kernelRoot}/${e.name}`, { recursive: true });
    }
  }
  return await describeKernel(final, resolved.pkg, resolved.version);
}

async function resolveKernelPackage(): Promise<{ pkg: string; version: string } | null> {
  // The metapackage pins its kernel: "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)".
  const meta = await runCommand(["apt-cache", "show", "--no-all-versions", "linux-image-amd64"]);
  const m = /^Depends:.*?\b(linux-image-[0-9][^\s,()]*)(?:\s*\(=\s*([^)\s]+)\))?/m.exec(
    meta.stdout,
  );
  const pkg = m?.[1];
  if (meta.code !== 0 || !pkg) return null;
  if (m?.[2]) return { pkg, version: m[2] };
  const show = await runCommand(["apt-cache", "show", "--no-all-versions", pkg]);
  const version = /^Version:\s*(\S+)/m.exec(show.stdout)?.[1];
  if (show.code !== 0 || !version) return null;
  return { pkg, version };
}

async function aptUpdateOrThrow(): Promise<void> {
  if (Deno.uid() !== 0) {
    throw new Error("apt lists are missing or stale; run apt-get update as root.");
  }
  if (!(await aptGet(["update", "-q"]))) throw new Error("apt-get update failed.");
}

async function downloadPackage(dir: string, pkg: string, version: string): Promise<string | null> {
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(`${pkg}_`)) await Deno.remove(`${dir}/${e.name}`);
  }
  const out = await runCommand(
    ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", `${pkg}=${version}`],
    { cwd: dir },
  );
  if (out.code !== 0) {
    console.error(out.stderr.trim());
    return null;
  }
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(`${pkg}_`) && e.name.endsWith(".deb")) return `${dir}/${e.name}`;
  }
  return null;
}

async function cachedKernel(paths: Paths): Promise<Kernel | null> {
  for await (const e of Deno.readDir(paths.kernelRoot)) {
    const root = `${paths.kernelRoot}/${e.name}`;
    const stamp = await Deno.readTextFile(`${root}/.complete`).catch(() => "");
    const [pkg, version] = stamp.trim().split(" ");
    if (pkg && version) return await describeKernel(root, pkg, version);
  }
  return null;
}

async function describeKernel(root: string, pkg: string, version: string): Promise<Kernel> {
  const release = pkg.replace(/^linux-image-/, "");
  const kernel = {
    pkg,
    version,
    release,
    root,
    bzImage: `${root}/boot/vmlinuz-${release}`,
    moduleDir: `${root}/lib/modules/${release}`,
  };
  for (const f of [kernel.bzImage, `${kernel.moduleDir}/modules.dep`]) {
    if (!(await exists(f))) throw new Error(`Kernel file ${f} is missing; run setup with --force.`);
  }
  return kernel;
}

// ---------------------------------------------------------------------------------------------
// 3. vmlinux

async function ensureVmlinux(
  paths: Paths,
  kernel: Kernel,
  force: boolean,
  log: Log,
): Promise<{ image: string; protocol: "pvh" | "bzimage" }> {
  const key = await fingerprint([kernel.bzImage], { VMLINUX_FORMAT });
  const keyText = await Deno.readTextFile(`${paths.vmlinux}.key`).catch(() => "");
  if (!force && keyText.startsWith(key)) {
    const protocol = keyText.includes("bzimage") ? "bzimage" : "pvh";
    log(`vmlinux cached (${protocol})`);
    return { image: protocol === "pvh" ? paths.vmlinux : kernel.bzImage, protocol };
  }
  log(`extracting vmlinux from ${basename(kernel.bzImage)}`);
  const elf = await extractVmlinux(await Deno.readFile(kernel.bzImage));
  const pvh = hasPvhEntry(elf);
  if (pvh) {
    await writeAtomic(paths.vmlinux, elf);
    log(`vmlinux: ${mib(elf.length)}, PVH entry found`);
  } else {
    await Deno.remove(paths.vmlinux).catch(() => {});
    log("warning: vmlinux has no PVH entry note; guests boot the bzImage (about 3 s slower)");
  }
  const protocol = pvh ? "pvh" : "bzimage";
  await Deno.writeTextFile(`${paths.vmlinux}.key`, `${key} ${protocol}\n`);
  return { image: pvh ? paths.vmlinux : kernel.bzImage, protocol };
}

// ---------------------------------------------------------------------------------------------
// 4. initramfs pieces

async function ensureBasePiece(
  paths: Paths,
  kernel: Kernel,
  force: boolean,
  log: Log,
): Promise<string[]> {
  const out = paths.piece("base");
  const initUrl = new URL("./guest_init.sh", import.meta.url);
  const init = await Deno.readFile(initUrl);
  const index = await readModuleIndex(kernel.moduleDir);
  const modules = resolveModules(index, BASE_MODULES);
  const key = await fingerprint(["/bin/busybox"], {
    PIECE_FORMAT,
    kernel: `${kernel.pkg} ${kernel.version}`,
    modules,
    init: await sha256Hex(init),
  });
  if (!force && await isFresh(out, key)) {
    log(`base piece cached (${modules.length} modules)`);
    return modules;
  }
  log(`building base piece: busybox, /init, ${modules.length} modules`);
  const busybox = "/bin/busybox";
  if ((await sharedLibraries(busybox)).length > 0) {
    throw new Error(`${busybox} is not static; install busybox-static.`);
  }

  // Stage the modules (decompressed) and run depmod on the staged set.
  const stage = `${paths.build}/base-modules`;
  await Deno.remove(stage, { recursive: true }).catch(() => {});
  const stagedModDir = `${stage}/lib/modules/${kernel.release}`;
  await Deno.mkdir(stagedModDir, { recursive: true });
  for (const name of modules) {
    const rel = index.path.get(name);
    if (rel === undefined) throw new Error(`Module ${name} lost its path.`);
    const relOut = rel.replace(/\.(xz|zst|gz)$/, "");
    await Deno.mkdir(dirname(`${stagedModDir}/${relOut}`), { recursive: true });
    await Deno.writeFile(
      `${stagedModDir}/${relOut}`,
      await readModule(`${kernel.moduleDir}/${rel}`),
    );
  }
  for (const f of ["modules.order", "modules.builtin", "modules.builtin.modinfo"]) {
    if (await exists(`${kernel.moduleDir}/${f}`)) {
      await Deno.copyFile(`${kernel.moduleDir}/${f}`, `${stagedModDir}/${f}`);
    }
  }
  await runChecked(["depmod", "-b", stage, kernel.release]);

  await writePiece(out, key, async (cpio) => {
    for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "etc", "root"]) {
      await cpio.directory(d);
    }
    for (const d of ["proc", "sys", "dev", "tmp", "run", "mnt", "var/tmp"]) {
      await cpio.directory(d, d.endsWith("tmp") ? 0o1777 : 0o755);
    }
    await cpio.charDevice("dev/console", 5, 1, 0o600);
    await cpio.charDevice("dev/null", 1, 3, 0o666);
    await cpio.fileFrom("bin/busybox", busybox, 0o755);
    const applets = (await runChecked([busybox, "--list-full"])).split("\n").filter((l) => l);
    for (const applet of applets) {
      if (!cpio.has(applet)) await cpio.symlink(applet, "/bin/busybox");
    }
    await cpio.file("init", init, 0o755);
    const text = (s: string) => new TextEncoder().encode(s);
    await cpio.file("etc/passwd", text("root:x:0:0:root:/root:/bin/sh\n"));
    await cpio.file("etc/group", text("root:x:0:\n"));
    await cpio.file("etc/hosts", text("127.0.0.1 localhost\n"));
    const hostId = "5a1c3e00-0000-4000-8000-000000000001";
    await cpio.file("etc/nvme/hostnqn", text(`nqn.2014-08.org.nvmexpress:uuid:${hostId}\n`));
    await cpio.file("etc/nvme/hostid", text(`${hostId}\n`));
    await addTree(cpio, stage, "lib/modules");
  });
  await Deno.remove(stage, { recursive: true });
  log(`base piece: ${mib((await Deno.stat(out)).size)}`);
  return modules;
}

async function ensureToolsPiece(paths: Paths, force: boolean, log: Log): Promise<void> {
  const out = paths.piece("tools");
  const entries: { guest: string; host: string; link?: string }[] = [];
  for (const command of TOOL_COMMANDS) {
    const found = await findCommand(command);
    if (!found) throw new Error(`Command ${command} not found on the host.`);
    const real = await Deno.realPath(found);
    if (real !== found) entries.push({ guest: found, host: real, link: real });
    entries.push({ guest: real, host: real });
    for (const lib of await sharedLibraries(real)) entries.push({ guest: lib, host: lib });
  }
  for (const f of TOOL_FILES) {
    if (await exists(f)) entries.push({ guest: f, host: f });
  }
  const key = await fingerprint(unique(entries.map((e) => e.host)), {
    PIECE_FORMAT,
    entries: entries.map((e) => [e.guest, e.link ?? ""]),
  });
  if (!force && await isFresh(out, key)) {
    log("tools piece cached");
    return;
  }
  log(`building tools piece: ${TOOL_COMMANDS.join(", ")} and their libraries`);
  await writePiece(out, key, async (cpio) => {
    for (const e of entries) {
      if (cpio.has(e.guest)) continue;
      if (e.link !== undefined) await cpio.symlink(e.guest, e.link);
      else await cpio.fileFrom(e.guest, e.host);
    }
  });
  log(`tools piece: ${mib((await Deno.stat(out)).size)}`);
}

async function ensureDenoPiece(paths: Paths, force: boolean, log: Log): Promise<string> {
  const out = paths.piece("deno");
  const bin = await Deno.realPath(Deno.env.get("SLUICE_LAB_DENO") ?? Deno.execPath());
  const libs = await sharedLibraries(bin);
  if (libs.length === 0) throw new Error(`${bin} is not a dynamically linked (glibc) deno.`);
  const version = /deno (\S+)/.exec(await runChecked([bin, "--version"]))?.[1] ?? "unknown";
  const key = await fingerprint([bin, ...libs], { PIECE_FORMAT, version });
  if (!force && await isFresh(out, key)) {
    log(`deno piece cached (deno ${version})`);
    return version;
  }
  log(`building deno piece: ${bin} (deno ${version}) and its libraries`);
  await writePiece(out, key, async (cpio) => {
    await cpio.fileFrom("usr/bin/deno", bin, 0o755);
    for (const lib of libs) if (!cpio.has(lib)) await cpio.fileFrom(lib, lib);
  });
  log(`deno piece: ${mib((await Deno.stat(out)).size)}`);
  return version;
}

/** Writes a piece through `fill` into a temporary file, then renames it and its key into place. */
async function writePiece(
  out: string,
  key: string,
  fill: (cpio: CpioWriter) => Promise<void>,
): Promise<void> {
  const tmp = `${out}.tmp-${Deno.pid}`;
  try {
    {
      using f = await Deno.open(tmp, { create: true, write: true, truncate: true });
      const cpio = new CpioWriter(f);
      await fill(cpio);
      await cpio.finish();
    }
    await Deno.remove(`${out}.key`).catch(() => {});
    await Deno.rename(tmp, out);
    await Deno.writeTextFile(`${out}.key`, `${key}\n`);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

/** Adds every entry under `root/sub` to the archive at path `sub/...`. */
async function addTree(cpio: CpioWriter, root: string, sub: string): Promise<void> {
  const entries: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(`${root}/${sub}`)) entries.push(e);
  entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  for (const e of entries) {
    const rel = `${sub}/${e.name}`;
    if (e.isDirectory) {
      await cpio.directory(rel);
      await addTree(cpio, root, rel);
    } else if (e.isSymlink) {
      await cpio.symlink(rel, await Deno.readLink(`${root}/${rel}`));
    } else {
      await cpio.fileFrom(rel, `${root}/${rel}`, 0o644);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// kernel modules

/** What depmod knows about the modules of one kernel. */
export interface ModuleIndex {
  /** Module name (underscores) -> path relative to lib/modules/<release>. */
  path: Map<string, string>;
  /** Module name -> names of the modules it depends on (all of them, from modules.dep). */
  deps: Map<string, string[]>;
  /** Alias -> module names (exact aliases only, such as `crc32c`). */
  aliases: Map<string, string[]>;
  /** Module name -> soft dependencies (pre and post). */
  softdeps: Map<string, string[]>;
  /** Names of modules built into the kernel. */
  builtin: Set<string>;
}

/** Module name from a path or name: basename without `.ko[.xz|.zst|.gz]`, `-` as `_`. */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

async function readModuleIndex(moduleDir: string): Promise<ModuleIndex> {
  const read = (f: string) => Deno.readTextFile(`${moduleDir}/${f}`).catch(() => "");
  return parseModuleIndex({
    dep: await read("modules.dep"),
    alias: await read("modules.alias"),
    softdep: await read("modules.softdep"),
    builtin: await read("modules.builtin"),
  });
}

/** Parses depmod's modules.dep, modules.alias, modules.softdep and modules.builtin. */
export function parseModuleIndex(
  files: { dep: string; alias: string; softdep: string; builtin: string },
): ModuleIndex {
  const index: ModuleIndex = {
    path: new Map(),
    deps: new Map(),
    aliases: new Map(),
    softdeps: new Map(),
    builtin: new Set(),
  };
  for (const line of files.dep.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const path = line.slice(0, colon).trim();
    const name = moduleName(path);
    index.path.set(name, path);
    index.deps.set(
      name,
      line.slice(colon + 1).trim().split(/\s+/).filter((d) => d).map(moduleName),
    );
  }
  for (const line of files.alias.split("\n")) {
    const m = /^alias\s+(\S+)\s+(\S+)/.exec(line);
    if (!m || !m[1] || !m[2] || /[*?[]/.test(m[1])) continue;
    const list = index.aliases.get(m[1]) ?? [];
    list.push(moduleName(m[2]));
    index.aliases.set(m[1], list);
  }
  for (const line of files.softdep.split("\n")) {
    const m = /^softdep\s+(\S+)\s+(.*)$/.exec(line);
    if (!m || !m[1] || m[2] === undefined) continue;
    const soft = m[2].split(/\s+/).filter((w) => w && w !== "pre:" && w !== "post:");
    index.softdeps.set(moduleName(m[1]), soft);
  }
  for (const line of files.builtin.split("\n")) {
    if (line.trim()) index.builtin.add(moduleName(line.trim()));
  }
  return index;
}

/**
 * The modules to pack for `wanted` (names or aliases): each with its dependencies and soft
 * dependencies, sorted. Built-in modules are skipped; an unknown name throws.
 */
export function resolveModules(index: ModuleIndex, wanted: readonly string[]): string[] {
  const out = new Set<string>();
  const visit = (raw: string, required: boolean): void => {
    const name = moduleName(raw);
    if (out.has(name)) return;
    if (index.path.has(name)) {
      out.add(name);
      for (const d of index.deps.get(name) ?? []) visit(d, true);
      for (const s of index.softdeps.get(name) ?? []) visit(s, false);
      return;
    }
    if (index.builtin.has(name)) return;
    const aliased = index.aliases.get(raw) ?? index.aliases.get(name) ?? [];
    if (aliased.length > 0) {
      for (const a of aliased) visit(a, required);
      return;
    }
    if (required) throw new Error(`Kernel module ${raw} is neither a module nor built in.`);
  };
  for (const w of wanted) visit(w, true);
  return [...out].sort();
}

async function readModule(path: string): Promise<Uint8Array> {
  if (path.endsWith(".ko")) return await Deno.readFile(path);
  const tool = path.endsWith(".xz") ? "xz" : path.endsWith(".zst") ? "zstd" : "gzip";
  const out = await new Deno.Command(tool, { args: ["-dc", path], stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${tool} -dc ${path} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return out.stdout;
}

// ---------------------------------------------------------------------------------------------
// host binaries

/** Absolute paths of the shared libraries (and the loader) `ldd` lists for `binary`. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const out = await runCommand(["ldd", binary]);
  if (out.code !== 0) {
    if (/not a dynamic executable|statically linked/.test(out.stdout + out.stderr)) return [];
    throw new CommandError(["ldd", binary], out.code, out.stderr);
  }
  const libs: string[] = [];
  for (const line of out.stdout.split("\n")) {
    const arrow = /=>\s+(\/\S+)/.exec(line);
    const direct = /^\s+(\/\S+)\s+\(/.exec(line);
    const path = arrow?.[1] ?? direct?.[1];
    if (/=>\s+not found/.test(line)) throw new Error(`ldd ${binary}: ${line.trim()}`);
    if (path) libs.push(path);
  }
  return unique(libs);
}

async function findCommand(name: string): Promise<string | null> {
  for (const dir of GUEST_BIN_DIRS) {
    const path = `${dir}/${name}`;
    try {
      const st = await Deno.stat(path);
      if (st.isFile) return path;
    } catch {
      // not in this directory
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// small helpers

/** sha256 over the names, sizes and mtimes of `files` plus `extra`. */
async function fingerprint(files: readonly string[], extra: unknown): Promise<string> {
  const stats = [];
  for (const f of files) {
    const st = await Deno.stat(f);
    stats.push([f, st.size, st.mtime?.getTime() ?? 0]);
  }
  return await sha256Hex(new TextEncoder().encode(JSON.stringify({ stats, extra })));
}

async function isFresh(out: string, key: string): Promise<boolean> {
  const stored = await Deno.readTextFile(`${out}.key`).catch(() => "");
  return stored.trim() === key && await exists(out);
}

async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}

/** Removes run directories older than two days and big initrd files left by killed runs. */
async function pruneRuns(runs: string): Promise<void> {
  const now = Date.now();
  for await (const e of Deno.readDir(runs)) {
    const dir = `${runs}/${e.name}`;
    const st = await Deno.stat(dir).catch(() => null);
    const age = now - (st?.mtime?.getTime() ?? now);
    if (age > RUN_DIR_KEEP_MS) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      continue;
    }
    const initrd = `${dir}/initrd.cpio`;
    const ist = await Deno.stat(initrd).catch(() => null);
    if (ist && now - (ist.mtime?.getTime() ?? now) > STALE_INITRD_MS) {
      await Deno.remove(initrd).catch(() => {});
    }
  }
}

async function pieceSizes(paths: Paths): Promise<string> {
  const parts: string[] = [];
  for (const name of ["base", "tools", "deno"] as PieceName[]) {
    const st = await Deno.stat(paths.piece(name)).catch(() => null);
    if (st) parts.push(`${name} ${mib(st.size)}`);
  }
  return parts.join(", ");
}

function unique<T>(items: readonly T[]): T[] {
  return [...new Set(items)];
}

function basename(p: string): string {
  return p.slice(p.lastIndexOf("/") + 1);
}

function dirname(p: string): string {
  return p.slice(0, p.lastIndexOf("/")) || "/";
}

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

if (import.meta.main) {
  const args = new Set(Deno.args);
  for (const a of args) {
    if (!["--force", "--no-deno", "--no-apt"].includes(a)) {
      console.error(`Unknown argument ${a}. Usage: setup.ts [--force] [--no-deno] [--no-apt]`);
      Deno.exit(2);
    }
  }
  await setupLab({
    force: args.has("--force") || undefined,
    deno: args.has("--no-deno") ? false : undefined,
    apt: args.has("--no-apt") ? false : undefined,
  });
}

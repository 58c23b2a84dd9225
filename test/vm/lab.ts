/**
 * Where the guest lab keeps its cache, and the manifest that `setup.ts` writes there for
 * `guest.ts` to read.
 *
 * The cache directory is `$SLUICE_LAB` when set, else `var/vm-lab` under the repository root
 * (`/var/` is ignored by git). Layout:
 *
 * ```
 * lab.json            manifest: kernel, boot protocol, initramfs pieces (written last by setup)
 * kernel/<pkg>_<ver>/ dpkg -x of the Debian kernel package
 * vmlinux             uncompressed kernel for PVH boot (+ vmlinux.key)
 * img/*.cpio          initramfs pieces: base, tools, deno (+ *.key input fingerprints)
 * build/              staging for the pieces
 * runs/<name>-<id>/   one directory per guest: serial.log, report.log, qemu.stderr
 * ```
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The initramfs pieces; `base` is always used, the others on request. */
export type PieceName = "base" | "tools" | "deno";

/** What `setup.ts` built, as recorded in `lab.json`. */
export interface LabManifest {
  /** Format of this record; bumped on incompatible changes. */
  format: 1;
  /** Debian package of the kernel, for example `linux-image-6.1.0-56-amd64`. */
  kernelPackage: string;
  /** Version of that package, for example `6.1.192-2`. */
  kernelPackageVersion: string;
  /** Kernel release (`uname -r` in the guest). */
  kernelRelease: string;
  /** Image QEMU boots with `-kernel`. */
  kernelImage: string;
  /** `pvh`: uncompressed vmlinux with a PVH entry; `bzimage`: the bzImage through firmware. */
  bootProtocol: "pvh" | "bzimage";
  /** Initramfs pieces (uncompressed newc cpio); `deno` is null when it was not built. */
  pieces: { base: string; tools: string; deno: string | null };
  /** Kernel modules in the base piece (module names, with their dependencies). */
  modules: string[];
  /** Version of the Deno binary in the deno piece. */
  denoVersion: string | null;
  /** When setup last finished (ISO 8601). */
  updatedAt: string;
}

/** The lab was not set up (or not completely); the message says how to fix it. */
export class LabNotReadyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LabNotReadyError";
  }
}

/** Repository root (two levels above this file). */
export function repoRoot(): string {
  return fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
}

/** The lab cache directory: `$SLUICE_LAB` or `<repo>/var/vm-lab`. */
export function labDir(): string {
  const fromEnv = Deno.env.get("SLUICE_LAB");
  if (fromEnv) return fromEnv.replace(/\/+$/, "") || "/";
  return `${repoRoot()}/var/vm-lab`;
}

/** Fixed paths inside the lab directory `dir`. */
export function labPaths(dir: string = labDir()) {
  return {
    dir,
    manifest: `${dir}/lab.json`,
    lock: `${dir}/setup.lock`,
    kernelRoot: `${dir}/kernel`,
    downloads: `${dir}/downloads`,
    vmlinux: `${dir}/vmlinux`,
    img: `${dir}/img`,
    build: `${dir}/build`,
    runs: `${dir}/runs`,
    piece: (name: PieceName) => `${dir}/img/${name}.cpio`,
  };
}

/** Reads the manifest of the lab in `dir` and checks that the files it names exist. */
export async function readLab(dir: string = labDir()): Promise<LabManifest> {
  const paths = labPaths(dir);
  const hint = `run \`deno task test:vm\` or \`deno run -A test/vm/setup.ts\` (lab: ${dir})`;
  let text: string;
  try {
    text = await Deno.readTextFile(paths.manifest);
  } catch {
    throw new LabNotReadyError(`The guest lab is not set up: ${hint}.`);
  }
  const manifest = JSON.parse(text) as LabManifest;
  if (manifest.format !== 1) {
    throw new LabNotReadyError(`The guest lab manifest has an unknown format: ${hint}.`);
  }
  const files = [manifest.kernelImage, manifest.pieces.base, manifest.pieces.tools];
  if (manifest.pieces.deno) files.push(manifest.pieces.deno);
  for (const f of files) {
    try {
      await Deno.stat(f);
    } catch {
      throw new LabNotReadyError(`The guest lab is missing ${f}: ${hint}.`);
    }
  }
  return manifest;
}

/**
 * Builds the Rust kernels crate (wasm/kernels) into the committed module
 * wasm/dist/sluice_kernels.wasm.
 *
 *   deno run -A wasm/build.ts            build and write wasm/dist/
 *   deno run -A wasm/build.ts --verify   rebuild in a temporary target dir and
 *                                        fail (exit 1) unless the bytes equal
 *                                        the committed file
 *
 * Toolchain: Debian's /usr/bin/cargo and /usr/bin/rustc (1.63) with the
 * wasm32 standard library (package libstd-rust-dev-wasm32), never rustup's.
 * Missing toolchain: as root with apt-get, the packages are installed first
 * (so CI really verifies); otherwise `--verify` prints "skipped: toolchain
 * missing" and exits 0, and a plain build fails.
 *
 * Pipeline: cargo (release profile in Cargo.toml; RUSTFLAGS below), then the
 * `i8x16.swizzle` -> `i8x16.relaxed_swizzle` rewrite of the listed exports
 * (see relax_swizzle.ts), then a compile check with WebAssembly.Module.
 * Reproducibility: see docs/wasm.md.
 *
 * @module
 */

import { relaxSwizzles } from "./relax_swizzle.ts";

const CARGO = "/usr/bin/cargo";
const RUSTC = "/usr/bin/rustc";
const TARGET = "wasm32-unknown-unknown";
const APT_PACKAGES = ["rustc", "cargo", "libstd-rust-dev-wasm32"];
/** Exports whose swizzles become relaxed: their lookup indices are all < 16. */
const RELAXED_SWIZZLE_EXPORTS = ["crc32c", "xts_encrypt", "xts_decrypt"];

const wasmDir = decodeURIComponent(new URL(".", import.meta.url).pathname);
const crateDir = `${wasmDir}kernels`;
const distFile = `${wasmDir}dist/sluice_kernels.wasm`;

function log(message: string): void {
  console.log(`build:wasm: ${message}`);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; quiet?: boolean; cwd?: string } = {},
): Promise<{ ok: boolean; out: string }> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      env: opts.env,
      clearEnv: opts.env !== undefined,
      stdout: opts.quiet ? "piped" : "inherit",
      stderr: opts.quiet ? "piped" : "inherit",
    }).output();
    const text = opts.quiet
      ? new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr)
      : "";
    return { ok: out.success, out: text };
  } catch (err) {
    return { ok: false, out: String(err) };
  }
}

/** Why the toolchain is unusable, or undefined when it is complete. */
async function toolchainProblem(): Promise<string | undefined> {
  if (!exists(CARGO)) return `${CARGO} not found`;
  if (!exists(RUSTC)) return `${RUSTC} not found`;
  const libdir = await run(RUSTC, ["--print", "target-libdir", "--target", TARGET], {
    quiet: true,
  });
  const dir = libdir.out.trim();
  if (!libdir.ok || !exists(dir)) return `no ${TARGET} standard library for ${RUSTC}`;
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.name.startsWith("libcore-") && entry.name.endsWith(".rlib")) return undefined;
  }
  return `no ${TARGET} libcore in ${dir}`;
}

/** Installs the Debian packages when we are root and apt-get exists. */
async function tryInstall(problem: string): Promise<boolean> {
  if (Deno.uid() !== 0 || !exists("/usr/bin/apt-get")) return false;
  log(`${problem}; installing ${APT_PACKAGES.join(" ")} with apt-get...`);
  const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", DEBIAN_FRONTEND: "noninteractive" };
  const install = ["install", "-y", "-qq", "--no-install-recommends", ...APT_PACKAGES];
  let res = await run("/usr/bin/apt-get", install, { env, quiet: true });
  if (!res.ok) {
    // A fresh container may have no package lists yet.
    await run("/usr/bin/apt-get", ["update", "-qq"], { env, quiet: true });
    res = await run("/usr/bin/apt-get", install, { env, quiet: true });
  }
  if (!res.ok) log(`apt-get failed:\n${res.out.trim()}`);
  return res.ok;
}

/** Runs cargo into `targetDir` and returns the raw module bytes. */
async function cargoBuild(targetDir: string): Promise<Uint8Array> {
  const rustflags = [
    "-C",
    "target-feature=+simd128",
    // The default 1 MiB shadow stack is far more than the kernels use.
    "-C",
    "link-arg=-zstack-size=65536",
    // Keep the checkout's absolute path out of the module (panic locations).
    `--remap-path-prefix=${crateDir}=/sluice_kernels`,
  ].join(" ");
  const env = {
    PATH: "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    // An empty CARGO_HOME: no user config can change the build.
    CARGO_HOME: `${targetDir}/cargo-home`,
    CARGO_TARGET_DIR: targetDir,
    RUSTC,
    RUSTFLAGS: rustflags,
  };
  log(`cargo build --release --target ${TARGET} (target dir ${targetDir})`);
  const args = ["build", "--release", "--target", TARGET, "--offline", "--locked"];
  const res = await run(CARGO, args, { env, cwd: crateDir });
  if (!res.ok) throw new Error("cargo build failed (see its output above).");
  return Deno.readFileSync(`${targetDir}/${TARGET}/release/sluice_kernels.wasm`);
}

function postProcess(raw: Uint8Array): Uint8Array<ArrayBuffer> {
  const { bytes, rewritten } = relaxSwizzles(raw, RELAXED_SWIZZLE_EXPORTS);
  for (const [name, n] of Object.entries(rewritten)) {
    // Zero means the kernel moved out of the export (e.g. no longer
    // inlined): the rewrite would silently stop paying, so stop here.
    if (n === 0) throw new Error(`no i8x16.swizzle found in export "${name}".`);
    log(`relaxed ${n} swizzles in "${name}"`);
  }
  new WebAssembly.Module(bytes); // throws CompileError if the rewrite broke it
  return bytes;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function main(args: string[]): Promise<number> {
  const verify = args.includes("--verify");
  let problem = await toolchainProblem();
  if (problem !== undefined && await tryInstall(problem)) problem = await toolchainProblem();
  if (problem !== undefined) {
    if (verify) {
      console.log(`build:wasm: skipped: toolchain missing (${problem})`);
      return 0;
    }
    console.error(`build:wasm: toolchain missing (${problem}); install ${APT_PACKAGES.join(" ")}`);
    return 1;
  }

  if (!verify) {
    const bytes = postProcess(await cargoBuild(`${crateDir}/target`));
    Deno.mkdirSync(`${wasmDir}dist`, { recursive: true });
    Deno.writeFileSync(distFile, bytes);
    log(
      `wrote wasm/dist/sluice_kernels.wasm (${bytes.length} bytes, sha256 ${await sha256(bytes)})`,
    );
    return 0;
  }

  if (!exists(distFile)) {
    console.error("build:wasm: verify failed: wasm/dist/sluice_kernels.wasm is missing.");
    return 1;
  }
  const committed = Deno.readFileSync(distFile);
  const tmp = Deno.makeTempDirSync({ prefix: "sluice_kernels_verify_" });
  try {
    const fresh = postProcess(await cargoBuild(tmp));
    const same = fresh.length === committed.length && fresh.every((b, i) => b === committed[i]);
    if (!same) {
      console.error(
        `build:wasm: verify failed: a fresh build (${fresh.length} bytes, sha256 ` +
          `${await sha256(fresh)}) differs from wasm/dist/sluice_kernels.wasm ` +
          `(${committed.length} bytes, sha256 ${await sha256(committed)}). ` +
          "Run `deno task build:wasm` and commit the result.",
      );
      return 1;
    }
    log(
      `verify ok: wasm/dist/sluice_kernels.wasm matches a fresh build (sha256 ${await sha256(
        fresh,
      )})`,
    );
    return 0;
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(`build:wasm: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}

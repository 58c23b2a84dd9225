/**
 * Intel ISA-L's CRC32C (`crc32_iscsi`, SSE4.2/PCLMUL/AVX-512 inside) through
 * `Deno.dlopen` of Debian's libisal2: the native peer of the WASM CRC32C
 * (wasm/crc32c.ts), with the same calling convention.
 *
 * ISA-L returns the raw CRC register (no final inversion) and takes the
 * register as its seed, so `crc32c(data, seed) = ~crc32_iscsi(data, len,
 * ~seed)`. Checked against the WASM kernel in ffi/isal_test.ts.
 * @module
 */

const ISAL_PATHS = ["libisal.so.2", "/usr/lib/x86_64-linux-gnu/libisal.so.2"];
/** Debian's package that ships libisal.so.2. */
export const ISAL_PACKAGE = "libisal2";

const isalSymbols = {
  // unsigned int crc32_iscsi(unsigned char *buffer, int len, unsigned int init_crc)
  crc32_iscsi: { parameters: ["buffer", "i32", "u32"], result: "u32" },
} as const;

type IsalLib = Deno.DynamicLibrary<typeof isalSymbols>;

let lib: IsalLib | null | undefined;

function open(): IsalLib | null {
  if (lib !== undefined) return lib;
  lib = null;
  for (const path of ISAL_PATHS) {
    try {
      lib = Deno.dlopen(path, isalSymbols);
      break;
    } catch {
      // try the next path
    }
  }
  return lib;
}

/**
 * ISA-L's raw `crc32_iscsi(buf, len, register)` -> register (no inversions:
 * `crc32c(data, seed) = ~f(data, len, ~seed)`), or null when libisal.so.2
 * cannot be loaded. For hot paths that pass whole prebuilt views (no
 * allocation per call); `len` must be at most the view's length.
 */
export function loadIsalCrc32cRaw():
  | ((buf: Uint8Array, len: number, reg: number) => number)
  | null {
  const l = open();
  if (l === null) return null;
  const f = l.symbols.crc32_iscsi;
  return (buf, len, reg) => f(buf as Uint8Array<ArrayBuffer>, len, reg);
}

/** A CRC32C implementation: `(data, seed = 0) -> CRC`, as wasm/crc32c.ts's `crc32c`. */
export type Crc32cFn = (data: Uint8Array, seed?: number) => number;

/** ISA-L's CRC32C, or null when libisal.so.2 cannot be loaded. */
export function loadIsalCrc32c(): Crc32cFn | null {
  const l = open();
  if (l === null) return null;
  const crc32Iscsi = l.symbols.crc32_iscsi;
  // FFI takes at most 2^31-1 bytes per call (the `int len`): larger inputs go in pieces.
  const MAX = 0x4000_0000;
  return (data: Uint8Array, seed = 0): number => {
    if ((seed >>> 0) !== seed) {
      throw new RangeError(`CRC32C seed must be an integer in [0, 2^32), got ${seed}.`);
    }
    let reg = ~seed >>> 0;
    for (let off = 0; off < data.byteLength; off += MAX) {
      const piece = data.byteLength <= MAX ? data : data.subarray(off, off + MAX);
      reg = crc32Iscsi(piece as Uint8Array<ArrayBuffer>, piece.byteLength, reg);
    }
    return ~reg >>> 0;
  };
}

/**
 * Makes libisal2 available for tests and benchmarks: loads it, or as root
 * with apt-get installs the Debian package first. Returns null when the
 * library loads, else why not (for a clear "skipped" message).
 */
export async function ensureIsal(): Promise<string | null> {
  if (open() !== null) return null;
  if (Deno.uid() !== 0) {
    return `libisal.so.2 not found and not root: install it with apt-get install ${ISAL_PACKAGE}`;
  }
  const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", DEBIAN_FRONTEND: "noninteractive" };
  const install = ["install", "-y", "-qq", "--no-install-recommends", ISAL_PACKAGE];
  const run = async (args: string[]) => {
    try {
      return (await new Deno.Command("apt-get", { args, env, stdout: "null", stderr: "null" })
        .output()).success;
    } catch {
      return false;
    }
  };
  if (!await run(install)) {
    await run(["update", "-qq"]);
    if (!await run(install)) return `apt-get install ${ISAL_PACKAGE} failed`;
  }
  lib = undefined; // try again
  return open() === null
    ? `libisal.so.2 still not loadable after installing ${ISAL_PACKAGE}`
    : null;
}

/**
 * CPU masks, as SPDK writes them: a hex mask ("0x3", "3") or a list of
 * cores and ranges in brackets ("[0,2-3]"). `serve --cpumask` names the
 * cores the appliance runs reactors on; a controller's `cpumask` names the
 * reactors it may be placed on.
 * @module
 */
import { BdevInvalidError } from "../bdev/errors.ts";
import { errno, sym } from "../../ffi/libc.ts";
import { errnoName } from "../../ffi/errno.ts";

/** The most cores a mask may name (1024, the kernel's default CPU_SETSIZE). */
export const MAX_CORES = 1024;

/**
 * The cores `mask` names, ascending.
 * @throws {BdevInvalidError} for a malformed or empty mask
 */
export function parseCpumask(mask: string): number[] {
  const bad = (why: string) =>
    new BdevInvalidError(
      `cpumask ${JSON.stringify(mask)}: ${why} (a hex mask such as 0x3, or a list such as [0,2-3])`,
    );
  const m = mask.trim();
  const cores = new Set<number>();
  if (m.startsWith("[")) {
    if (!m.endsWith("]")) throw bad("missing ]");
    for (const part of m.slice(1, -1).split(",")) {
      const r = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
      if (r === null) throw bad(`cannot read "${part}"`);
      const lo = Number(r[1]), hi = r[2] === undefined ? lo : Number(r[2]);
      if (hi < lo || hi >= MAX_CORES) throw bad(`bad range "${part.trim()}"`);
      for (let c = lo; c <= hi; c++) cores.add(c);
    }
  } else {
    const hex = m.replace(/^0x/i, "");
    if (!/^[0-9a-fA-F]{1,256}$/.test(hex)) throw bad("not a hex mask");
    let bits = BigInt(`0x${hex}`);
    for (let c = 0; bits !== 0n; c++, bits >>= 1n) {
      if ((bits & 1n) === 0n) continue;
      if (c >= MAX_CORES) throw bad(`core ${c} is beyond ${MAX_CORES - 1}`);
      cores.add(c);
    }
  }
  if (cores.size === 0) throw bad("names no core");
  return [...cores].sort((a, b) => a - b);
}

/** The hex mask of `cores`, e.g. [0, 1] -> "0x3". */
export function formatCpumask(cores: readonly number[]): string {
  let bits = 0n;
  for (const c of cores) bits |= 1n << BigInt(c);
  return `0x${bits.toString(16)}`;
}

/** The cores this process may run on (sched_getaffinity), ascending. */
export function allowedCores(): number[] {
  const set = new Uint8Array(MAX_CORES / 8);
  // glibc's sched_getaffinity returns 0 and fills the set (the raw syscall returns its size).
  const n = sym.sched_getaffinity(0, BigInt(set.byteLength), set);
  if (n < 0) return [0];
  const out: number[] = [];
  for (let c = 0; c < MAX_CORES; c++) if ((set[c >> 3] as number) & (1 << (c & 7))) out.push(c);
  return out;
}

/**
 * Pins the calling thread to `core` (sched_setaffinity with pid 0 acts on
 * the calling thread only, so a worker pins itself).
 * @throws {Error} when the kernel refuses
 */
export function pinThread(core: number): void {
  const set = new Uint8Array(MAX_CORES / 8);
  set[core >> 3] = 1 << (core & 7);
  if (sym.sched_setaffinity(0, BigInt(set.byteLength), set) !== 0) {
    throw new Error(`cannot pin the reactor thread to core ${core} (${errnoName(errno())})`);
  }
}

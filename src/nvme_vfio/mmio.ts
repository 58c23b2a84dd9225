/**
 * Access to an NVMe controller's registers (BAR0), behind an interface so
 * the driver runs against a real BAR mmapped through VFIO or against the
 * in-memory controller of the unit tests.
 *
 * Every access is one aligned 32-bit load or store: a Uint32Array element
 * is read and written with a single 4-byte instruction, which MMIO needs
 * (a DataView or byte-wise copy may split it). 64-bit registers (CAP, ASQ,
 * ACQ) are accessed as two 32-bit halves, low first, which the spec allows
 * ("Controller Registers": 64-bit registers may be accessed as two dwords).
 * @module
 */
import type { Mapping } from "../../ffi/memory.ts";

/** Register access of one controller. */
export interface NvmeMmio {
  read32(offset: number): number;
  write32(offset: number, value: number): void;
}

/** Reads a 64-bit register as a BigInt (control path). */
export function read64(m: NvmeMmio, offset: number): bigint {
  const lo = m.read32(offset);
  const hi = m.read32(offset + 4);
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Writes a 64-bit register given as a safe integer (low dword first). */
export function write64(m: NvmeMmio, offset: number, value: number): void {
  m.write32(offset, value >>> 0);
  m.write32(offset + 4, Math.floor(value / 0x1_0000_0000) >>> 0);
}

/** The registers of a BAR mapping. */
export class BarMmio implements NvmeMmio {
  readonly #regs: Uint32Array;
  constructor(bar: Mapping) {
    this.#regs = new Uint32Array(bar.buffer, 0, bar.length >>> 2);
  }
  read32(offset: number): number {
    return this.#regs[offset >>> 2] ?? 0xffffffff;
  }
  write32(offset: number, value: number): void {
    this.#regs[offset >>> 2] = value;
  }
}

/**
 * Guest physical memory as the vhost-user front-end shares it: a bounded set
 * of regions, each mapped into this process.
 * @module
 */
import { VirtqueueError } from "./error.ts";

/** At most this many regions (VHOST_USER_MAX_RAM_SLOTS is 509 in QEMU). */
export const GUEST_MEMORY_MAX_REGIONS = 509;

/** One region as the front-end describes it, with our mapping of it. */
export interface GuestMemoryRegionInit {
  /** Guest physical address of the first byte. */
  gpa: number;
  /** Length in bytes; equals `bytes.byteLength`. */
  size: number;
  /** The front-end's virtual address of the first byte (vhost-user ring addresses use these). */
  uva: number;
  /** Our view of the mapping. */
  bytes: Uint8Array;
}

/**
 * Where a guest range lives: filled by {@linkcode GuestMemory.translate}.
 * Reuse one per caller so translation allocates nothing.
 */
export class GuestAddress {
  /** Region index, or -1 when the last translation failed. */
  region = -1;
  /** Byte offset inside the region. */
  offset = 0;
}

function isAddress(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0;
}

/**
 * The guest's memory. Regions are sorted by guest physical address and may
 * not overlap (in guest physical or front-end virtual addresses).
 *
 * @example
 * ```ts
 * const mem = new GuestMemory([{ gpa: 0, size: 4096, uva: 0x7f00_0000_0000, bytes: new Uint8Array(4096) }]);
 * const at = new GuestAddress();
 * mem.translate(16, 16, at); // true: at.region 0, at.offset 16
 * ```
 */
export class GuestMemory {
  readonly #gpa: Float64Array;
  readonly #size: Float64Array;
  readonly #uva: Float64Array;
  readonly #bytes: Uint8Array[];
  readonly #views: DataView[];

  /** Checks the table; throws {@linkcode VirtqueueError} `"memory-region"`. */
  constructor(regions: readonly GuestMemoryRegionInit[]) {
    if (regions.length > GUEST_MEMORY_MAX_REGIONS) {
      throw new VirtqueueError(
        "memory-region",
        `Guest memory has ${regions.length} regions, more than ${GUEST_MEMORY_MAX_REGIONS}`,
      );
    }
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    const n = sorted.length;
    this.#gpa = new Float64Array(n);
    this.#size = new Float64Array(n);
    this.#uva = new Float64Array(n);
    this.#bytes = [];
    this.#views = [];
    for (let i = 0; i < n; i++) {
      const r = sorted[i];
      if (r === undefined) throw new Error("unreachable");
      if (!isAddress(r.gpa) || !isAddress(r.uva) || !isAddress(r.size) || r.size === 0) {
        throw new VirtqueueError(
          "memory-region",
          `Guest memory region ${i} has an address or size that is not a safe positive integer`,
        );
      }
      if (!isAddress(r.gpa + r.size) || !isAddress(r.uva + r.size)) {
        throw new VirtqueueError("memory-region", `Guest memory region ${i} ends past 2^53`);
      }
      if (r.bytes.byteLength !== r.size) {
        throw new VirtqueueError(
          "memory-region",
          `Guest memory region ${i} is ${r.size} bytes but its mapping is ${r.bytes.byteLength}`,
        );
      }
      const prev = i - 1;
      if (prev >= 0 && (this.#gpa[prev] ?? 0) + (this.#size[prev] ?? 0) > r.gpa) {
        throw new VirtqueueError("memory-region", `Guest memory region ${i} overlaps another`);
      }
      this.#gpa[i] = r.gpa;
      this.#size[i] = r.size;
      this.#uva[i] = r.uva;
      this.#bytes.push(r.bytes);
      this.#views.push(new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength));
    }
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const ai = this.#uva[i] ?? 0, aj = this.#uva[j] ?? 0;
        if (ai < aj + (this.#size[j] ?? 0) && aj < ai + (this.#size[i] ?? 0)) {
          throw new VirtqueueError(
            "memory-region",
            `Guest memory regions ${i} and ${j} overlap in front-end addresses`,
          );
        }
      }
    }
  }

  /** How many regions. */
  get regionCount(): number {
    return this.#bytes.length;
  }

  /** The mapping of region `index` (sorted by guest physical address). */
  bytes(index: number): Uint8Array {
    const b = this.#bytes[index];
    if (b === undefined) throw new RangeError(`No guest memory region ${index}`);
    return b;
  }

  /** A DataView of region `index`, made once. */
  view(index: number): DataView {
    const v = this.#views[index];
    if (v === undefined) throw new RangeError(`No guest memory region ${index}`);
    return v;
  }

  /** Guest physical address of region `index`. */
  regionGpa(index: number): number {
    return this.#gpa[index] ?? -1;
  }

  /** Size of region `index`. */
  regionSize(index: number): number {
    return this.#size[index] ?? 0;
  }

  /**
   * Finds the region holding all of `[gpa, gpa + length)`; fills `out` and
   * returns true, or sets `out.region = -1` and returns false. A range must
   * lie inside one region; a zero-length range must start inside one (or at
   * its end). Allocates nothing; never overflows (all values are checked to
   * be safe integers and compared by subtraction).
   */
  translate(gpa: number, length: number, out: GuestAddress): boolean {
    out.region = -1;
    out.offset = 0;
    if (!(gpa >= 0 && gpa <= Number.MAX_SAFE_INTEGER && Number.isInteger(gpa))) return false;
    if (!(length >= 0 && length <= Number.MAX_SAFE_INTEGER && Number.isInteger(length))) {
      return false;
    }
    // Binary search for the last region starting at or below gpa.
    const starts = this.#gpa;
    let lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if ((starts[mid] ?? Infinity) <= gpa) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (found < 0) return false;
    const offset = gpa - (starts[found] ?? 0);
    const size = this.#size[found] ?? 0;
    if (offset > size || length > size - offset) return false;
    out.region = found;
    out.offset = offset;
    return true;
  }

  /**
   * Converts a front-end virtual address range to a guest physical address,
   * or returns -1 when the range is not inside one region. A linear scan:
   * it serves vhost-user SET_VRING_ADDR, not the data path.
   */
  uvaToGpa(uva: number, length: number): number {
    if (!isAddress(uva) || !isAddress(length)) return -1;
    const n = this.#uva.length;
    for (let i = 0; i < n; i++) {
      const start = this.#uva[i] ?? 0;
      const size = this.#size[i] ?? 0;
      if (uva < start) continue;
      const offset = uva - start;
      if (offset > size || length > size - offset) continue;
      return (this.#gpa[i] ?? 0) + offset;
    }
    return -1;
  }
}

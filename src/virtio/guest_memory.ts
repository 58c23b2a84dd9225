/**
 * Guest physical memory as the vhost-user front-end shares it: a bounded set
 * of regions, each mapped into this process, which may be added and removed
 * while the device runs (memory hot-plug).
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

/** A slot's state. */
const FREE = 0;
/** Translatable: part of the guest's memory now. */
const ACTIVE = 1;
/** Removed from the guest's memory, still mapped: requests in flight may hold its index. */
const RETIRED = 2;

/**
 * The guest's memory: regions in numbered slots. A region keeps its slot
 * index from {@linkcode GuestMemory.add} until {@linkcode GuestMemory.release},
 * so requests in flight can hold `(region, offset)` pairs while regions come
 * and go (vhost-user memory hot-plug). Active regions may not overlap (in
 * guest physical or front-end virtual addresses).
 *
 * Removing a region is two steps: {@linkcode GuestMemory.remove} takes it out
 * of translation at once (no new request can reach it), and
 * {@linkcode GuestMemory.release} frees its slot once the owner knows no
 * request in flight still refers to it; only then may the mapping be unmapped.
 *
 * @example
 * ```ts
 * const mem = new GuestMemory([{ gpa: 0, size: 4096, uva: 0x7f00_0000_0000, bytes: new Uint8Array(4096) }]);
 * const at = new GuestAddress();
 * mem.translate(16, 16, at); // true: at.region 0, at.offset 16
 * ```
 */
export class GuestMemory {
  /** Number of slots (active plus retired regions at most). */
  readonly slots: number;
  readonly #gpa: Float64Array;
  readonly #size: Float64Array;
  readonly #uva: Float64Array;
  readonly #state: Uint8Array;
  readonly #bytes: (Uint8Array | null)[];
  readonly #views: (DataView | null)[];
  /** Active slots sorted by guest physical address, `0..#active-1`, and their start addresses. */
  readonly #order: Int32Array;
  readonly #starts: Float64Array;
  #active = 0;

  /**
   * Checks the table; throws {@linkcode VirtqueueError} `"memory-region"`.
   * The initial regions take slots `0..n-1` in guest physical address order.
   * @param slots how many regions may be mapped at once, retired ones included
   */
  constructor(regions: readonly GuestMemoryRegionInit[], slots = GUEST_MEMORY_MAX_REGIONS) {
    if (!Number.isInteger(slots) || slots < 1 || slots > GUEST_MEMORY_MAX_REGIONS) {
      throw new RangeError(`Guest memory slots must be 1..${GUEST_MEMORY_MAX_REGIONS}`);
    }
    if (regions.length > slots) {
      throw new VirtqueueError(
        "memory-region",
        `Guest memory has ${regions.length} regions, more than ${slots}`,
      );
    }
    this.slots = slots;
    this.#gpa = new Float64Array(slots);
    this.#size = new Float64Array(slots);
    this.#uva = new Float64Array(slots);
    this.#state = new Uint8Array(slots);
    this.#bytes = new Array<Uint8Array | null>(slots).fill(null);
    this.#views = new Array<DataView | null>(slots).fill(null);
    this.#order = new Int32Array(slots);
    this.#starts = new Float64Array(slots);
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (const r of sorted) this.add(r);
  }

  /**
   * Adds a region in the lowest free slot and returns the slot index. Throws
   * {@linkcode VirtqueueError} `"memory-region"` when an address or size is
   * not a safe positive integer, the mapping's length differs from the size,
   * it overlaps an active region (guest physical or front-end virtual), or
   * no slot is free.
   */
  add(r: GuestMemoryRegionInit): number {
    const where = `Guest memory region at 0x${
      Number.isFinite(r.gpa) ? r.gpa.toString(16) : String(r.gpa)
    }`;
    if (!isAddress(r.gpa) || !isAddress(r.uva) || !isAddress(r.size) || r.size === 0) {
      throw new VirtqueueError(
        "memory-region",
        `${where} has an address or size that is not a safe positive integer`,
      );
    }
    if (!isAddress(r.gpa + r.size) || !isAddress(r.uva + r.size)) {
      throw new VirtqueueError("memory-region", `${where} ends past 2^53`);
    }
    if (r.bytes.byteLength !== r.size) {
      throw new VirtqueueError(
        "memory-region",
        `${where} is ${r.size} bytes but its mapping is ${r.bytes.byteLength}`,
      );
    }
    for (let k = 0; k < this.#active; k++) {
      const i = this.#order[k] ?? 0;
      const g = this.#gpa[i] ?? 0, u = this.#uva[i] ?? 0, n = this.#size[i] ?? 0;
      if (r.gpa < g + n && g < r.gpa + r.size) {
        throw new VirtqueueError(
          "memory-region",
          `${where} (0x${r.size.toString(16)} bytes) overlaps the region at 0x${g.toString(16)}`,
        );
      }
      if (r.uva < u + n && u < r.uva + r.size) {
        throw new VirtqueueError(
          "memory-region",
          `${where} overlaps the region at 0x${g.toString(16)} in front-end addresses`,
        );
      }
    }
    const slot = this.#state.indexOf(FREE);
    if (slot < 0) {
      throw new VirtqueueError(
        "memory-region",
        `${where}: all ${this.slots} memory slots are in use (removed regions stay until ` +
          `the requests using them complete)`,
      );
    }
    this.#gpa[slot] = r.gpa;
    this.#size[slot] = r.size;
    this.#uva[slot] = r.uva;
    this.#state[slot] = ACTIVE;
    this.#bytes[slot] = r.bytes;
    this.#views[slot] = new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength);
    // Insert into the sorted order.
    let k = this.#active;
    while (k > 0 && (this.#starts[k - 1] ?? 0) > r.gpa) {
      this.#order[k] = this.#order[k - 1] ?? 0;
      this.#starts[k] = this.#starts[k - 1] ?? 0;
      k--;
    }
    this.#order[k] = slot;
    this.#starts[k] = r.gpa;
    this.#active++;
    return slot;
  }

  /**
   * Takes the active region with exactly these guest address, size and
   * front-end address out of translation and returns its slot, now retired:
   * its mapping stays reachable through {@linkcode GuestMemory.bytes} until
   * {@linkcode GuestMemory.release}. Returns -1 when no active region matches.
   */
  remove(gpa: number, size: number, uva: number): number {
    for (let k = 0; k < this.#active; k++) {
      const i = this.#order[k] ?? 0;
      if (this.#gpa[i] === gpa && this.#size[i] === size && this.#uva[i] === uva) {
        this.#order.copyWithin(k, k + 1, this.#active);
        this.#starts.copyWithin(k, k + 1, this.#active);
        this.#active--;
        this.#state[i] = RETIRED;
        return i;
      }
    }
    return -1;
  }

  /** Frees a retired slot: its index may be given to a new region. */
  release(slot: number): void {
    if (this.#state[slot] !== RETIRED) {
      throw new RangeError(`Guest memory slot ${slot} is not a removed region`);
    }
    this.#state[slot] = FREE;
    this.#bytes[slot] = null;
    this.#views[slot] = null;
  }

  /** How many regions are active (translatable). */
  get regionCount(): number {
    return this.#active;
  }

  /** The active slots in guest physical address order (control path: allocates). */
  activeSlots(): number[] {
    return Array.from(this.#order.subarray(0, this.#active));
  }

  /** True when slot `index` holds an active region. */
  isActive(index: number): boolean {
    return this.#state[index] === ACTIVE;
  }

  /** True when slot `index` holds a removed region that is still mapped. */
  isRetired(index: number): boolean {
    return this.#state[index] === RETIRED;
  }

  /** The mapping of the region in slot `index` (active or retired). */
  bytes(index: number): Uint8Array {
    const b = this.#bytes[index];
    if (b === undefined || b === null) throw new RangeError(`No guest memory region ${index}`);
    return b;
  }

  /** A DataView of the region in slot `index`, made once. */
  view(index: number): DataView {
    const v = this.#views[index];
    if (v === undefined || v === null) throw new RangeError(`No guest memory region ${index}`);
    return v;
  }

  /** Guest physical address of the region in slot `index`, or -1. */
  regionGpa(index: number): number {
    return this.#state[index] === FREE || this.#state[index] === undefined
      ? -1
      : this.#gpa[index] ?? -1;
  }

  /** Size of the region in slot `index`, or 0. */
  regionSize(index: number): number {
    return this.#state[index] === FREE || this.#state[index] === undefined
      ? 0
      : this.#size[index] ?? 0;
  }

  /** Front-end virtual address of the region in slot `index`, or -1. */
  regionUva(index: number): number {
    return this.#state[index] === FREE || this.#state[index] === undefined
      ? -1
      : this.#uva[index] ?? -1;
  }

  /**
   * Finds the active region holding all of `[gpa, gpa + length)`; fills
   * `out` and returns true, or sets `out.region = -1` and returns false. A
   * range must lie inside one region; a zero-length range must start inside
   * one (or at its end). Allocates nothing; never overflows (all values are
   * checked to be safe integers and compared by subtraction).
   */
  translate(gpa: number, length: number, out: GuestAddress): boolean {
    out.region = -1;
    out.offset = 0;
    if (!(gpa >= 0 && gpa <= Number.MAX_SAFE_INTEGER && Number.isInteger(gpa))) return false;
    if (!(length >= 0 && length <= Number.MAX_SAFE_INTEGER && Number.isInteger(length))) {
      return false;
    }
    // Binary search for the last active region starting at or below gpa.
    const starts = this.#starts;
    let lo = 0, hi = this.#active - 1, found = -1;
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
    const slot = this.#order[found] ?? 0;
    const offset = gpa - (starts[found] ?? 0);
    const size = this.#size[slot] ?? 0;
    if (offset > size || length > size - offset) return false;
    out.region = slot;
    out.offset = offset;
    return true;
  }

  /**
   * Converts a front-end virtual address range to a guest physical address,
   * or returns -1 when the range is not inside one active region. A linear
   * scan: it serves vhost-user SET_VRING_ADDR, not the data path.
   */
  uvaToGpa(uva: number, length: number): number {
    if (!isAddress(uva) || !isAddress(length)) return -1;
    for (let k = 0; k < this.#active; k++) {
      const i = this.#order[k] ?? 0;
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

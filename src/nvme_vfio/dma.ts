/**
 * DMA memory of the driver: ordinary anonymous memory (no hugepages)
 * mapped in the IOMMU at an IOVA we choose, then carved into queues, PRP
 * lists and bounce buffers. All of it is allocated at attach; the data path
 * allocates nothing.
 *
 * The device reaches only what is mapped in its IOMMU domain. Buffers of
 * bdev callers are ordinary JS memory, not mapped, so the driver copies
 * data through per-command bounce buffers (see docs/nvme.md for the cost
 * and the alternative: callers allocating from the driver's DMA pool, or
 * mapping caller memory on demand, which costs an ioctl per I/O).
 * @module
 */
import { mapAnonymous, type Mapping, PAGE_SIZE } from "../../ffi/memory.ts";
import type { VfioContainer } from "../../ffi/vfio.ts";

/** Maps host memory for a device and gives its IOVA. */
export interface DmaSpace {
  /** Maps `m` (page-aligned, whole pages) and returns the IOVA its first byte has. */
  map(m: Mapping): number;
  /** Undoes {@link map}. */
  unmap(iova: number, size: number): void;
}

/** IOVAs handed out by {@link VfioDmaSpace} start here (below 4 GiB works for every IOMMU). */
export const VFIO_IOVA_BASE = 0x1000_0000;

/** DMA mapping through a VFIO type1 container; IOVAs grow upward from a base. */
export class VfioDmaSpace implements DmaSpace {
  #next: number;
  constructor(readonly container: VfioContainer, base = VFIO_IOVA_BASE) {
    this.#next = base;
  }
  map(m: Mapping): number {
    const size = roundUp(m.length, PAGE_SIZE);
    const iova = this.#next;
    this.container.mapDma(m.address, iova, size);
    // A guard page between regions: a device overrun faults in the IOMMU.
    this.#next += size + PAGE_SIZE;
    return iova;
  }
  unmap(iova: number, size: number): void {
    this.container.unmapDma(iova, roundUp(size, PAGE_SIZE));
  }
}

/** x rounded up to a multiple of `align` (a power of two). */
export function roundUp(x: number, align: number): number {
  return Math.ceil(x / align) * align;
}

/** One piece of a {@link DmaRegion}: bytes for the CPU, an IOVA for the device. */
export interface DmaBuffer {
  bytes: Uint8Array<ArrayBuffer>;
  iova: number;
}

/** One mapped region, carved by a bump allocator (everything is freed together). */
export class DmaRegion {
  readonly mapping: Mapping;
  readonly iova: number;
  #used = 0;
  #space: DmaSpace;
  #closed = false;

  constructor(space: DmaSpace, bytes: number) {
    this.#space = space;
    this.mapping = mapAnonymous(roundUp(bytes, PAGE_SIZE), { populate: true });
    try {
      this.iova = space.map(this.mapping);
    } catch (e) {
      this.mapping.unmap();
      throw e;
    }
  }

  /** `bytes` bytes aligned to `align` (default a page), zeroed. */
  alloc(bytes: number, align = PAGE_SIZE): DmaBuffer {
    const at = roundUp(this.#used, align);
    if (at + bytes > this.mapping.length) {
      throw new Error(`DMA region of ${this.mapping.length} bytes exhausted`);
    }
    this.#used = at + bytes;
    const b = this.mapping.bytes(at, bytes);
    b.fill(0);
    return { bytes: b, iova: this.iova + at };
  }

  /** Unmaps from the IOMMU and frees; drop every view first. */
  free(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#space.unmap(this.iova, this.mapping.length);
    } finally {
      this.mapping.unmap();
    }
  }
}

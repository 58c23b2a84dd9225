/**
 * The WebAssembly descriptor-chain walker (wasm/kernels/src/virtq.rs): the
 * same rules as the TypeScript `SplitVirtqueue.walkChain` plus the
 * virtio-blk read/write header checks of `BlkRequest.parse`, over guest
 * memory that lies inside the module's linear memory.
 *
 * It exists to measure where ring parsing should run (bench/virtq_bench.ts;
 * the answer and the figures are in docs/wasm.md "Ring parsing"), and the
 * tests cross-check it against the TypeScript walker on hostile chains.
 * @module
 */
import { isInWasmMemory, kernels, wasmAlloc } from "./kernels.ts";

/** Layout of `WalkCtx` (repr(C) in virtq.rs). */
const CTX_BYTES = 256;
const REGION_BYTES = 24;
const MAX_REGIONS = 8;
const SEGMENT_BYTES = 24;
const O_REGION_COUNT = 192;
const O_SIZE = 196;
const O_DESC_PTR = 200;
const O_INDIRECT = 204;
const O_CAPACITY = 208;
const O_GEN = 216;
const O_STAMPS_PTR = 220;
const O_SEGS_PTR = 224;
const O_READABLE = 232;
const O_WRITABLE = 236;
const O_BLK_TYPE = 240;
const O_DATA_BYTES = 244;
const O_SECTOR = 248;

/** Why the WASM walker refused a chain (its negative results). */
export const WASM_WALK_ERRORS: Readonly<Record<number, string>> = {
  [-1]: "desc-index",
  [-2]: "chain-loop",
  [-3]: "indirect",
  [-4]: "chain-too-long",
  [-5]: "desc-address",
  [-6]: "order",
  [-7]: "no-status",
  [-8]: "bad-request",
};

/** One guest region placed inside wasm memory. */
export interface WasmGuestRegion {
  gpa: number;
  /** A view of wasm memory holding the region's bytes. */
  bytes: Uint8Array;
  /** The caller's own index for the region (default: its position). */
  index?: number;
}

/** What one queue needs from the walker. */
export interface WasmVirtqWalkerOptions {
  size: number;
  descAddr: number;
  indirectDesc: boolean;
  capacitySectors: number;
  regions: readonly WasmGuestRegion[];
}

/**
 * A walker for one queue at a time; its context, loop stamps and segment
 * table live in wasm memory, sized for `capacity` descriptors. Wasm memory
 * is never freed, so walkers are pooled ({@linkcode acquireVirtqWalker}).
 */
export class WasmVirtqWalker {
  /** Largest queue size this walker serves. */
  readonly capacity: number;
  /**
   * The segments of the last walk as u32 words, 6 per segment: gpa low, gpa
   * high, offset in wasm memory, length, writable, region. For hot loops.
   */
  readonly segWords: Uint32Array;
  /** Per walker region: its wasm offset (to turn a segment's offset into an in-region one). */
  readonly regionPtr: Float64Array = new Float64Array(MAX_REGIONS);
  /** Per walker region: the caller's own index for it (e.g. GuestMemory's). */
  readonly regionIndex: Int32Array = new Int32Array(MAX_REGIONS);
  readonly #ctx: number;
  readonly #view: DataView;
  readonly #segs: DataView;
  readonly #stamps: Uint8Array;

  /** Needs `initWasmMemory` to have run (it allocates from the wasm heap). */
  constructor(capacity: number) {
    this.capacity = capacity;
    const ctx = wasmAlloc(CTX_BYTES, 16);
    this.#stamps = wasmAlloc(8 * capacity, 16);
    const segs = wasmAlloc(SEGMENT_BYTES * capacity, 16);
    this.#ctx = ctx.byteOffset;
    this.#view = new DataView(ctx.buffer, ctx.byteOffset, CTX_BYTES);
    this.#segs = new DataView(segs.buffer, segs.byteOffset, segs.byteLength);
    this.segWords = new Uint32Array(segs.buffer, segs.byteOffset, segs.byteLength / 4);
    const v = this.#view;
    v.setUint32(O_STAMPS_PTR, this.#stamps.byteOffset, true);
    v.setUint32(O_SEGS_PTR, segs.byteOffset, true);
  }

  /**
   * Points the walker at one queue. `regions[i].index` (default i) is
   * reported back through {@linkcode regionIndex}.
   * @throws {RangeError} for more than 8 regions, a region outside wasm
   *   memory, a queue larger than the capacity, or a descriptor table
   *   outside the regions
   */
  configure(o: WasmVirtqWalkerOptions): void {
    if (o.regions.length < 1 || o.regions.length > MAX_REGIONS) {
      throw new RangeError(`1 to ${MAX_REGIONS} regions, got ${o.regions.length}`);
    }
    if (o.size > this.capacity) {
      throw new RangeError(`queue size ${o.size} is over the walker's ${this.capacity}`);
    }
    const v = this.#view;
    let descPtr = -1;
    o.regions.forEach((r, i) => {
      if (!isInWasmMemory(r.bytes)) throw new RangeError(`region ${i} is not in wasm memory`);
      v.setBigUint64(i * REGION_BYTES, BigInt(r.gpa), true);
      v.setBigUint64(i * REGION_BYTES + 8, BigInt(r.bytes.byteLength), true);
      v.setUint32(i * REGION_BYTES + 16, r.bytes.byteOffset, true);
      this.regionPtr[i] = r.bytes.byteOffset;
      this.regionIndex[i] = r.index ?? i;
      const off = o.descAddr - r.gpa;
      if (off >= 0 && off + 16 * o.size <= r.bytes.byteLength) descPtr = r.bytes.byteOffset + off;
    });
    if (descPtr < 0) throw new RangeError("the descriptor table is not inside the regions");
    v.setUint32(O_REGION_COUNT, o.regions.length, true);
    v.setUint32(O_SIZE, o.size, true);
    v.setUint32(O_DESC_PTR, descPtr, true);
    v.setUint32(O_INDIRECT, o.indirectDesc ? 1 : 0, true);
    v.setBigUint64(O_CAPACITY, BigInt(o.capacitySectors), true);
    // Stamps of an earlier queue could equal a future generation: start clean.
    this.#stamps.fill(0);
    v.setUint32(O_GEN, 0, true);
  }

  /** Walks and parses the chain at `head`: segments, or a negative code. */
  walk(head: number): number {
    return kernels.virtq_walk(this.#ctx, head);
  }

  get readableBytes(): number {
    return this.#view.getUint32(O_READABLE, true);
  }
  get writableBytes(): number {
    return this.#view.getUint32(O_WRITABLE, true);
  }
  get blkType(): number {
    return this.#view.getUint32(O_BLK_TYPE, true);
  }
  get dataBytes(): number {
    return this.#view.getUint32(O_DATA_BYTES, true);
  }
  get sector(): number {
    return this.#view.getUint32(O_SECTOR + 4, true) * 0x1_0000_0000 +
      this.#view.getUint32(O_SECTOR, true);
  }
  /** Guest physical address of segment `i` of the last walk. */
  segGpa(i: number): number {
    const o = i * SEGMENT_BYTES;
    return this.#segs.getUint32(o + 4, true) * 0x1_0000_0000 + this.#segs.getUint32(o, true);
  }
  /** Where segment `i` lies in wasm memory (a byte offset). */
  segPtr(i: number): number {
    return this.#segs.getUint32(i * SEGMENT_BYTES + 8, true);
  }
  segLen(i: number): number {
    return this.#segs.getUint32(i * SEGMENT_BYTES + 12, true);
  }
  segWritable(i: number): boolean {
    return this.#segs.getUint32(i * SEGMENT_BYTES + 16, true) === 1;
  }
}

const pool: WasmVirtqWalker[] = [];

/** A walker configured for one queue, from the pool when one is big enough. */
export function acquireVirtqWalker(o: WasmVirtqWalkerOptions): WasmVirtqWalker {
  const i = pool.findIndex((w) => w.capacity >= o.size);
  const w = i >= 0 ? pool.splice(i, 1)[0] as WasmVirtqWalker : new WasmVirtqWalker(o.size);
  try {
    w.configure(o);
  } catch (e) {
    pool.push(w);
    throw e;
  }
  return w;
}

/** Gives a walker back to the pool (the queue it served has stopped). */
export function releaseVirtqWalker(w: WasmVirtqWalker): void {
  if (!pool.includes(w)) pool.push(w);
}

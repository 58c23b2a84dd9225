/**
 * The data buffers of the NVMe/TCP transport: fixed 4 KiB chunks inside the
 * WASM memory (so data digests run on them in place), sized once, shared by
 * every connection, bounded. A command takes the chunks its transfer needs
 * and gives them back when its response has been sent; when the pool is
 * empty, the command waits (the transport queues it), it never fails.
 * @module
 */
import { initWasmMemory, wasmAlloc, wasmMemoryStats } from "../../wasm/mod.ts";

/** Bytes per chunk: the page size, so a 4 KiB I/O is one chunk with no tail view. */
export const CHUNK_BYTES = 4096;

/** Room the rest of the process may take from the WASM heap besides the pool (receive buffers). */
const HEAP_HEADROOM_BYTES = 32 * 1024 * 1024;

/** A fixed set of 4 KiB chunks with a free stack. */
export class ChunkPool {
  readonly chunks: number;
  /** One view per chunk, made once. */
  readonly views: Uint8Array[] = [];
  readonly #free: Int32Array;
  #top: number;
  /** Lowest number of free chunks seen (for sizing). */
  lowWater: number;
  /** Whether the chunks live in WASM memory (digests in place) or plain memory. */
  readonly inWasmMemory: boolean;

  constructor(bytes: number) {
    this.chunks = Math.max(1, Math.floor(bytes / CHUNK_BYTES));
    const need = this.chunks * CHUNK_BYTES;
    const stats = wasmMemoryStats();
    if (stats.heapCapacityBytes === 0) initWasmMemory(need + HEAP_HEADROOM_BYTES);
    const after = wasmMemoryStats();
    let region: Uint8Array;
    if (after.heapCapacityBytes - after.heapUsedBytes >= need + CHUNK_BYTES) {
      region = wasmAlloc(need, CHUNK_BYTES);
      this.inWasmMemory = true;
    } else {
      // Someone reserved a smaller WASM heap first (the heap is set once per
      // process): plain memory works, digests then copy through WASM scratch.
      region = new Uint8Array(need);
      this.inWasmMemory = false;
    }
    for (let i = 0; i < this.chunks; i++) {
      this.views.push(region.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES));
    }
    this.#free = new Int32Array(this.chunks);
    for (let i = 0; i < this.chunks; i++) this.#free[i] = this.chunks - 1 - i;
    this.#top = this.chunks;
    this.lowWater = this.chunks;
  }

  /** Free chunks now. */
  get available(): number {
    return this.#top;
  }

  /**
   * Takes the chunks for `bytes` into `ids` and points `iovs` at them, the
   * last one cut to size. Returns the vector count, or -1 (nothing taken)
   * when the pool cannot cover it now.
   */
  take(bytes: number, ids: Int32Array, iovs: Uint8Array[]): number {
    const n = Math.ceil(bytes / CHUNK_BYTES);
    if (n > this.#top || n > ids.length) return -1;
    for (let i = 0; i < n; i++) {
      const id = this.#free[--this.#top] as number;
      ids[i] = id;
      iovs[i] = this.views[id] as Uint8Array;
    }
    const tail = bytes - (n - 1) * CHUNK_BYTES;
    if (tail !== CHUNK_BYTES) {
      // A transfer that is not a whole number of pages: the one place a view is made.
      iovs[n - 1] = (this.views[ids[n - 1] as number] as Uint8Array).subarray(0, tail);
    }
    if (this.#top < this.lowWater) this.lowWater = this.#top;
    return n;
  }

  /** Gives back `count` chunks listed in `ids`. */
  give(ids: Int32Array, count: number): void {
    for (let i = 0; i < count; i++) this.#free[this.#top++] = ids[i] as number;
  }
}

let shared: ChunkPool | null = null;

/**
 * The process-wide pool: WASM memory is reserved once per process, so
 * every transport in it shares one pool, made by the first caller.
 */
export function sharedChunkPool(bytes: number): ChunkPool {
  shared ??= new ChunkPool(bytes);
  return shared;
}

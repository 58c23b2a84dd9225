/**
 * Loader for wasm/dist/sluice_kernels.wasm and the data-path memory inside it.
 *
 * The module is compiled and instantiated synchronously when this file is
 * imported (the bytes are read next to this file), so every kernel is a
 * plain synchronous call afterwards.
 *
 * Memory design (docs/wasm.md has the why): data-path buffers live INSIDE the
 * module's linear memory, where kernels reach them without a copy. Growing a
 * wasm memory detaches every view of it, so the memory grows exactly once,
 * in {@linkcode initWasmMemory} at start-up, to a configured size; after that
 * nothing grows it and {@linkcode wasmAlloc} fails when the region is full.
 * Views returned by {@linkcode wasmAlloc} therefore stay valid for the life
 * of the process.
 *
 * @module
 */

/** Raised for misuse of the wasm memory: bad sizes, exhaustion, late init. */
export class WasmMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WasmMemoryError";
  }
}

type Fn0 = () => number;
type Fn1 = (a: number) => number;
type Fn2 = (a: number, b: number) => number;
type Fn3 = (a: number, b: number, c: number) => number;
type Fn6 = (a: number, b: number, c: number, d: number, e: number, f: number) => number;

/**
 * The module's raw exports. Pointers are byte offsets into `memory`; every
 * `i32` result arrives as a signed JS number (use `>>> 0` for u32 values).
 */
export interface KernelExports {
  memory: WebAssembly.Memory;
  /** Reserves the heap: 0 ok, -1 already reserved, -2 growth refused. */
  heap_init: Fn1;
  /** `(size, align)` -> offset, or 0 when not reserved/invalid/exhausted. */
  heap_alloc: Fn2;
  heap_used: Fn0;
  heap_capacity: Fn0;
  scratch_ptr: Fn0;
  scratch_bytes: Fn0;
  /** `(seed, ptr, len)` -> CRC32C, SIMD kernel with relaxed swizzles. */
  crc32c: Fn3;
  /** Same SIMD kernel with strict swizzles (benchmark and cross-check). */
  crc32c_strict: Fn3;
  /** Scalar slicing-by-8 kernel (reference). */
  crc32c_scalar: Fn3;
  /** `(ctx, head)` -> segments or a negative code: wasm/kernels/src/virtq.rs, wasm/virtq.ts. */
  virtq_walk: Fn2;
  /** `(slot)` -> 0, or -1 when the key halves are equal: wasm/kernels/src/aes_xts.rs. */
  xts_key_init: Fn1;
  /** `(slot)`: zeroes a key slot. */
  xts_key_wipe: Fn1;
  xts_slot_bytes: Fn0;
  xts_static_slots_ptr: Fn0;
  xts_static_slots: Fn0;
  /** `(slot, src, dst, len, dataUnit, unitPtr)` -> 0 or a negative code; relaxed swizzles. */
  xts_encrypt: Fn6;
  xts_decrypt: Fn6;
  /** The same kernels on strict swizzles (benchmark and cross-check). */
  xts_encrypt_strict: Fn6;
  xts_decrypt_strict: Fn6;
}

/** Where the module is read from. */
export const KERNELS_WASM_URL: URL = new URL("./dist/sluice_kernels.wasm", import.meta.url);

function compile(): WebAssembly.Module {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = Deno.readFileSync(KERNELS_WASM_URL);
  } catch (err) {
    throw new Error(`Cannot read ${KERNELS_WASM_URL.href}: run \`deno task build:wasm\`.`, {
      cause: err,
    });
  }
  try {
    return new WebAssembly.Module(bytes);
  } catch (err) {
    // The module uses wasm SIMD and relaxed SIMD (both on by default in Deno 2.9.6).
    throw new Error(`Cannot compile ${KERNELS_WASM_URL.href} (SIMD and relaxed SIMD needed).`, {
      cause: err,
    });
  }
}

function load(): KernelExports {
  const module = compile();
  const raw = new WebAssembly.Instance(module, {}).exports;
  const fn = <T>(name: string): T => {
    const f = raw[name];
    if (typeof f !== "function") {
      throw new TypeError(`sluice_kernels.wasm lacks the export "${name}".`);
    }
    return f as T;
  };
  const memory = raw.memory;
  if (!(memory instanceof WebAssembly.Memory)) {
    throw new TypeError("sluice_kernels.wasm does not export its memory.");
  }
  return {
    memory,
    heap_init: fn<Fn1>("heap_init"),
    heap_alloc: fn<Fn2>("heap_alloc"),
    heap_used: fn<Fn0>("heap_used"),
    heap_capacity: fn<Fn0>("heap_capacity"),
    scratch_ptr: fn<Fn0>("scratch_ptr"),
    scratch_bytes: fn<Fn0>("scratch_bytes"),
    crc32c: fn<Fn3>("crc32c"),
    crc32c_strict: fn<Fn3>("crc32c_strict"),
    crc32c_scalar: fn<Fn3>("crc32c_scalar"),
    virtq_walk: fn<Fn2>("virtq_walk"),
    xts_key_init: fn<Fn1>("xts_key_init"),
    xts_key_wipe: fn<Fn1>("xts_key_wipe"),
    xts_slot_bytes: fn<Fn0>("xts_slot_bytes"),
    xts_static_slots_ptr: fn<Fn0>("xts_static_slots_ptr"),
    xts_static_slots: fn<Fn0>("xts_static_slots"),
    xts_encrypt: fn<Fn6>("xts_encrypt"),
    xts_decrypt: fn<Fn6>("xts_decrypt"),
    xts_encrypt_strict: fn<Fn6>("xts_encrypt_strict"),
    xts_decrypt_strict: fn<Fn6>("xts_decrypt_strict"),
  };
}

/** The instantiated module (one instance per isolate). */
export const kernels: KernelExports = load();

/** Largest linear memory of a wasm32 module: 65536 pages of 64 KiB. */
const MEMORY_BYTES_MAX = 4 * 1024 * 1024 * 1024;
/** Largest alignment `wasmAlloc` accepts: one wasm page. */
const ALIGN_MAX = 65536;

let heapView = new Uint8Array(kernels.memory.buffer);

/**
 * A byte view of the whole linear memory. Re-derived when the memory has
 * grown (which only `initWasmMemory` does), so never keep the result across
 * that call.
 */
export function wasmMemoryBytes(): Uint8Array {
  if (heapView.buffer !== kernels.memory.buffer) heapView = new Uint8Array(kernels.memory.buffer);
  return heapView;
}

/**
 * Reserves `heapBytes` of linear memory for {@linkcode wasmAlloc}, growing
 * the memory once. Call it once at start-up, before any `wasmAlloc`; views
 * of the memory taken before this call are detached by it.
 *
 * @throws {WasmMemoryError} when already called, when `heapBytes` is not a
 * positive integer that fits in a wasm32 memory, or when the engine refuses
 * to grow the memory.
 *
 * @example
 * ```ts
 * import { initWasmMemory, wasmAlloc } from "./mod.ts";
 * initWasmMemory(64 * 1024 * 1024);
 * const buf = wasmAlloc(4096, 4096); // lives in wasm memory until exit
 * ```
 */
export function initWasmMemory(heapBytes: number): void {
  if (!Number.isSafeInteger(heapBytes) || heapBytes <= 0 || heapBytes >= MEMORY_BYTES_MAX) {
    throw new WasmMemoryError(`Heap size must be an integer in (0, 4 GiB), got ${heapBytes}.`);
  }
  let window = pendingWindowBytes;
  if (heapBytes + window + ALIGN_MAX >= MEMORY_BYTES_MAX - ALIGN_MAX) {
    // The heap comes first: a window that does not fit beside it is dropped (guests are then
    // mapped outside wasm memory and walked in TypeScript).
    window = 0;
  }
  const total = heapBytes + (window > 0 ? window + ALIGN_MAX : 0);
  const rc = kernels.heap_init(total);
  if (rc === -1) throw new WasmMemoryError("The wasm memory is already initialised.");
  if (rc !== 0) {
    throw new WasmMemoryError(
      `The engine refused to grow the wasm memory to hold ${total} bytes.`,
    );
  }
  if (window > 0) {
    const start = kernels.heap_alloc(window, ALIGN_MAX) >>> 0;
    if (start !== 0) windowRegion = { start, size: window };
  }
}

/** The heap {@linkcode ensureWasmMemory} reserves: virtual until used, room for the pools. */
const DEFAULT_HEAP_BYTES = 128 * 1024 * 1024;

/**
 * Initialises the wasm memory with the default heap (and the configured
 * guest window) unless something already did. For users that need the
 * memory to exist but do not size it themselves (the vhost backend).
 */
export function ensureWasmMemory(): void {
  if (kernels.heap_capacity() === 0) initWasmMemory(DEFAULT_HEAP_BYTES);
}

let pendingWindowBytes = 0;
let windowRegion: { start: number; size: number } | null = null;

/**
 * Asks {@linkcode initWasmMemory} to reserve a guest window of `bytes`
 * beside the heap (wasm/guest_window.ts). Call before the memory is
 * initialised; later calls throw. 0 (the default) reserves none.
 */
export function configureGuestWindow(bytes: number): void {
  if (kernels.heap_capacity() !== 0) {
    throw new WasmMemoryError("The guest window must be configured before initWasmMemory().");
  }
  if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % ALIGN_MAX !== 0) {
    throw new WasmMemoryError(`The guest window must be a multiple of 64 KiB, got ${bytes}.`);
  }
  pendingWindowBytes = bytes;
}

/** Where the guest window is in wasm memory, or null when none was reserved. */
export function guestWindowRegion(): { start: number; size: number } | null {
  return windowRegion;
}

/**
 * Allocates `bytes` inside the wasm memory, aligned to `align` (a power of
 * two up to 65536), and returns a view of it; `view.byteOffset` is the
 * pointer kernels take. The buffer lives until the process exits (pools
 * recycle their buffers; there is no free), and the view stays valid
 * because the memory never grows after {@linkcode initWasmMemory}.
 *
 * @throws {WasmMemoryError} before `initWasmMemory`, on a bad size or
 * alignment, or when the reserved region is exhausted.
 */
export function wasmAlloc(bytes: number, align = 16): Uint8Array {
  if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes >= MEMORY_BYTES_MAX) {
    throw new WasmMemoryError(`Allocation size must be an integer in [0, 4 GiB), got ${bytes}.`);
  }
  if (!Number.isInteger(align) || align < 1 || align > ALIGN_MAX || (align & (align - 1)) !== 0) {
    throw new WasmMemoryError(`Alignment must be a power of two up to 65536, got ${align}.`);
  }
  if (kernels.heap_capacity() === 0) {
    throw new WasmMemoryError("Call initWasmMemory() before wasmAlloc().");
  }
  const ptr = kernels.heap_alloc(bytes, align) >>> 0;
  if (ptr === 0) {
    const stats = wasmMemoryStats();
    throw new WasmMemoryError(
      `The wasm heap is exhausted: ${bytes} bytes requested, ` +
        `${stats.heapCapacityBytes - stats.heapUsedBytes} of ${stats.heapCapacityBytes} left.`,
    );
  }
  return new Uint8Array(kernels.memory.buffer, ptr, bytes);
}

/** Sizes of the wasm memory and of its heap region. */
export interface WasmMemoryStats {
  /** Current size of the linear memory. */
  memoryBytes: number;
  /** Reserved heap (0 before `initWasmMemory`). */
  heapCapacityBytes: number;
  /** Heap handed out, alignment padding included. */
  heapUsedBytes: number;
}

/** Reports the memory and heap sizes (for metrics and tests). */
export function wasmMemoryStats(): WasmMemoryStats {
  return {
    memoryBytes: kernels.memory.buffer.byteLength,
    heapCapacityBytes: kernels.heap_capacity() >>> 0,
    heapUsedBytes: kernels.heap_used() >>> 0,
  };
}

/** True when `data` is a view of the wasm memory (kernels read it in place). */
export function isInWasmMemory(data: Uint8Array): boolean {
  return data.buffer === kernels.memory.buffer;
}

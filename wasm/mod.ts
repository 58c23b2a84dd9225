/**
 * sluice's WebAssembly kernels: the module wasm/dist/sluice_kernels.wasm
 * (built from the Rust crate wasm/kernels by wasm/build.ts), loaded
 * synchronously on import, and the data-path memory inside it.
 *
 * - {@linkcode initWasmMemory} once at start-up, then {@linkcode wasmAlloc}
 *   for buffers the kernels read in place.
 * - {@linkcode crc32c}: CRC32C (iSCSI / NVMe/TCP digests).
 *
 * See docs/wasm.md for the build, the memory design and measured speeds.
 *
 * @example
 * ```ts
 * import { crc32c, initWasmMemory, wasmAlloc } from "./mod.ts";
 * initWasmMemory(16 * 1024 * 1024);
 * const block = wasmAlloc(4096, 4096);
 * block.fill(0xab);
 * const digest = crc32c(block); // no copy: block lives in wasm memory
 * ```
 *
 * @module
 */

export { crc32c } from "./crc32c.ts";
export {
  initWasmMemory,
  isInWasmMemory,
  type KernelExports,
  kernels,
  wasmAlloc,
  WasmMemoryError,
  type WasmMemoryStats,
  wasmMemoryStats,
} from "./kernels.ts";

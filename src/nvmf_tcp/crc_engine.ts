/**
 * The CRC32C engine of the NVMe/TCP digests: the WASM SIMD kernel (always
 * there) or Intel ISA-L's `crc32_iscsi` through FFI (Debian's libisal2), by
 * the setting `wasm`, `native` or `auto`. `auto` measures both on a 4 KiB
 * buffer at start-up, takes the faster and logs the figures; without the
 * library it stays with WASM. The native engine is used for whole buffers
 * of 512 bytes or more (see `crc32cUpdate` in pdu.ts), WASM for the rest.
 * @module
 */
import { loadIsalCrc32cRaw } from "../../ffi/isal.ts";
import { ensureWasmMemory, kernels, wasmAlloc } from "../../wasm/kernels.ts";
import type { XtsEngineSetting } from "../crypto/engines.ts";
import { setNativeCrc32c } from "./pdu.ts";

/** Same values as the crypto engine setting. */
export type CrcEngineSetting = XtsEngineSetting;

/** MB/s of `run` over `bytes` for about `ms`. */
function measure(bytes: number, run: () => unknown, ms = 20): number {
  for (let i = 0; i < 100; i++) run(); // warm-up (JIT, FFI fast path)
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ms) {
    for (let i = 0; i < 100; i++) run();
    n += 100;
    t = performance.now();
  }
  return (n * bytes) / ((t - t0) * 1000);
}

/**
 * Applies the setting; returns the engine used ("wasm" or "native").
 * @throws {Error} for `native` when libisal.so.2 cannot be loaded
 */
export function selectCrc32cEngine(
  setting: CrcEngineSetting,
  log: (line: string) => void,
): "wasm" | "native" {
  const native = setting === "wasm" ? null : loadIsalCrc32cRaw();
  if (native === null) {
    if (setting === "native") {
      throw new Error('crc32c engine "native" is unavailable: libisal.so.2 not found (libisal2)');
    }
    setNativeCrc32c(null);
    log(`crc32c: engine wasm (${setting === "wasm" ? "configured" : "auto: libisal2 missing"})`);
    return "wasm";
  }
  if (setting === "native") {
    setNativeCrc32c(native);
    log("crc32c: engine native ISA-L (configured)");
    return "native";
  }
  ensureWasmMemory();
  const buf = wasmAlloc(4096, 4096);
  crypto.getRandomValues(buf);
  // Neither call can be optimised away: both cross into code V8 cannot see.
  const w = measure(4096, () => kernels.crc32c(0, buf.byteOffset, 4096));
  const n = measure(4096, () => native(buf, 4096, 0xffff_ffff));
  const figures = `native ${n.toFixed(0)} MB/s, wasm ${w.toFixed(0)} MB/s at 4 KiB`;
  const useNative = n > w;
  setNativeCrc32c(useNative ? native : null);
  log(`crc32c: engine ${useNative ? "native ISA-L" : "wasm"} (auto: ${figures})`);
  return useNative ? "native" : "wasm";
}

/**
 * Engine choice for AES-256-XTS: the setting `wasm`, `native` or `auto`.
 *
 * - `wasm`: the WASM SIMD engine (src/crypto/wasm_xts.ts), always present.
 * - `native`: OpenSSL's libcrypto through FFI (src/crypto/native_xts.ts,
 *   `createNativeXtsEngine(): XtsEngine | null`); an error when
 *   libcrypto.so.3 cannot be loaded.
 * - `auto`: at start-up, measures both engines briefly on the same 64 KiB
 *   buffer with a throw-away key (4 KiB data units, encrypt and decrypt),
 *   picks the faster, and logs the choice with both figures; WASM when the
 *   native library is missing (logged too).
 *
 * The native engine is loaded lazily by module name, so this file works
 * where native_xts.ts (or libcrypto) is absent.
 * @module
 */

import process from "node:process";
import { createWasmXtsEngine } from "./wasm_xts.ts";
import type { XtsEngine } from "./xts.ts";

/** The engine setting. */
export type XtsEngineSetting = "wasm" | "native" | "auto";

/** Parses a setting (CLI flag or config value). */
export function parseXtsEngineSetting(value: string): XtsEngineSetting {
  if (value === "wasm" || value === "native" || value === "auto") return value;
  throw new RangeError(`crypto engine must be wasm, native or auto, got "${value}"`);
}

/** The module that provides the native engine, and its factory's name. */
const NATIVE_MODULE = "./native_xts.ts";

/** Loads the OpenSSL engine, or null (with why) when the module or the library is missing. */
export async function loadNativeXtsEngine(): Promise<
  { engine: XtsEngine; why?: undefined } | { engine: null; why: string }
> {
  let mod: { createNativeXtsEngine?: () => XtsEngine | null };
  try {
    // A computed specifier: the module may not exist in this build.
    mod = await import(new URL(NATIVE_MODULE, import.meta.url).href);
  } catch (err) {
    const missing = err instanceof Error && err.message.includes("Module not found");
    return {
      engine: null,
      why: missing
        ? "src/crypto/native_xts.ts is not in this build"
        : `src/crypto/native_xts.ts failed to load (${String(err)})`,
    };
  }
  if (typeof mod.createNativeXtsEngine !== "function") {
    return { engine: null, why: "src/crypto/native_xts.ts has no createNativeXtsEngine()" };
  }
  const engine = mod.createNativeXtsEngine();
  if (engine === null) return { engine: null, why: "libcrypto.so.3 (OpenSSL 3) not loadable" };
  return { engine };
}

/**
 * MB/s of `engine` over a 64 KiB buffer in 4 KiB data units, encrypt then
 * decrypt, for about `ms` milliseconds of CPU time (CPU time, not wall
 * time: other processes on the machine do not bias the choice).
 */
export function measureXtsEngine(engine: XtsEngine, ms = 30): number {
  const keyBytes = crypto.getRandomValues(new Uint8Array(64));
  const key = engine.createKey(keyBytes);
  keyBytes.fill(0);
  const buf = crypto.getRandomValues(new Uint8Array(65536));
  try {
    // Warm-up (wasm tier-up, FFI trampolines).
    for (let i = 0; i < 4; i++) key.encrypt(buf, buf, 4096, i);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let bytes = 0;
    while (performance.now() - t0 < ms) {
      key.encrypt(buf, buf, 4096, bytes);
      key.decrypt(buf, buf, 4096, bytes);
      bytes += 2 * buf.length;
    }
    const cpu = process.cpuUsage(c0);
    const seconds = Math.max((cpu.user + cpu.system) / 1e6, 1e-6);
    return bytes / seconds / 1e6;
  } finally {
    key.destroy();
  }
}

/** What {@linkcode selectXtsEngine} chose and why. */
export interface XtsEngineChoice {
  engine: XtsEngine;
  /** One line for the log. */
  reason: string;
}

/**
 * Resolves the setting to an engine. `auto` measures (see the module doc).
 * @throws {Error} for `native` when the native engine is unavailable
 */
export async function selectXtsEngine(
  setting: XtsEngineSetting,
  log: (line: string) => void = console.log,
): Promise<XtsEngineChoice> {
  let choice: XtsEngineChoice;
  if (setting === "wasm") {
    choice = { engine: createWasmXtsEngine(), reason: "wasm (configured)" };
  } else if (setting === "native") {
    const native = await loadNativeXtsEngine();
    if (native.engine === null) {
      throw new Error(`crypto engine "native" is unavailable: ${native.why}`);
    }
    choice = { engine: native.engine, reason: "native (configured)" };
  } else {
    const wasm = createWasmXtsEngine();
    const native = await loadNativeXtsEngine();
    if (native.engine === null) {
      choice = { engine: wasm, reason: `wasm (auto: native engine missing: ${native.why})` };
    } else {
      const w = measureXtsEngine(wasm);
      const n = measureXtsEngine(native.engine);
      const figures = `native ${n.toFixed(0)} MB/s, wasm ${w.toFixed(0)} MB/s`;
      choice = n >= w
        ? { engine: native.engine, reason: `native (auto: ${figures})` }
        : { engine: wasm, reason: `wasm (auto: ${figures})` };
    }
  }
  log(`crypto: AES-XTS engine ${choice.reason}`);
  return choice;
}

/**
 * The WASM SIMD AES-256-XTS engine: constant-time vector-permute AES
 * (wasm/kernels/src/aes_xts.rs) behind {@linkcode XtsEngine}. Key schedules
 * live in pooled slots of the wasm memory, zeroed on destroy
 * (wasm/aes_xts.ts).
 * @module
 */

import { xtsKeyLoad, xtsKeyWipe, xtsRun, type XtsVariant } from "../../wasm/aes_xts.ts";
import type { XtsEngine, XtsKey } from "./xts.ts";

class WasmXtsKey implements XtsKey {
  #slot: number;
  readonly #variant: XtsVariant;

  constructor(slot: number, variant: XtsVariant) {
    this.#slot = slot;
    this.#variant = variant;
  }

  #live(): number {
    if (this.#slot < 0) throw new Error("This XTS key was destroyed.");
    return this.#slot;
  }

  encrypt(src: Uint8Array, dst: Uint8Array, dataUnitSize: number, firstDataUnit: number): void {
    xtsRun(this.#live(), false, src, dst, dataUnitSize, firstDataUnit, this.#variant);
  }

  decrypt(src: Uint8Array, dst: Uint8Array, dataUnitSize: number, firstDataUnit: number): void {
    xtsRun(this.#live(), true, src, dst, dataUnitSize, firstDataUnit, this.#variant);
  }

  destroy(): void {
    if (this.#slot < 0) return;
    xtsKeyWipe(this.#slot);
    this.#slot = -1;
  }
}

/**
 * Creates the WASM engine. `variant` "strict" runs the same kernels without
 * the relaxed-swizzle rewrite (cross-checks and the benchmark only).
 */
export function createWasmXtsEngine(variant: XtsVariant = "relaxed"): XtsEngine {
  return {
    name: "wasm",
    createKey(key: Uint8Array): XtsKey {
      return new WasmXtsKey(xtsKeyLoad(key), variant);
    },
  };
}

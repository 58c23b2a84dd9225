// The memory lifecycle is one-way (reserve once, never grow again), so these
// tests run in order and depend on it; deno test gives this module its own
// isolate, hence its own fresh instance.
import { assert, assertEquals, assertThrows } from "../src/testing/assert.ts";
import { crc32c } from "./crc32c.ts";
import { crc32cTs } from "./crc32c_ts.ts";
import {
  initWasmMemory,
  isInWasmMemory,
  kernels,
  wasmAlloc,
  WasmMemoryError,
  wasmMemoryStats,
} from "./kernels.ts";

const HEAP_BYTES = 1024 * 1024;

Deno.test("kernels: the module loads with typed exports and an exported memory", () => {
  assert(kernels.memory instanceof WebAssembly.Memory);
  assertEquals(kernels.scratch_bytes(), 65536);
  assert(kernels.scratch_ptr() > 0);
});

Deno.test("kernels: before initWasmMemory, CRCs work and wasmAlloc refuses", () => {
  assertEquals(wasmMemoryStats().heapCapacityBytes, 0);
  const data = new TextEncoder().encode("123456789");
  assertEquals(crc32c(data), 0xe3069283);
  assertThrows(() => wasmAlloc(64), WasmMemoryError, "initWasmMemory");
});

Deno.test("kernels: initWasmMemory rejects sizes that are not a positive wasm32 size", () => {
  for (const bad of [0, -1, 1.5, Number.NaN, 4 * 1024 ** 3]) {
    assertThrows(() => initWasmMemory(bad), WasmMemoryError, "Heap size");
  }
  assertEquals(wasmMemoryStats().heapCapacityBytes, 0, "a rejected call reserves nothing");
});

Deno.test("kernels: initWasmMemory grows the memory once and only once", () => {
  const before = wasmMemoryStats().memoryBytes;
  initWasmMemory(HEAP_BYTES);
  const after = wasmMemoryStats();
  assert(after.heapCapacityBytes >= HEAP_BYTES, `capacity ${after.heapCapacityBytes}`);
  assert(after.memoryBytes >= before + HEAP_BYTES, `memory ${before} -> ${after.memoryBytes}`);
  assertEquals(after.heapUsedBytes, 0);
  assertThrows(() => initWasmMemory(HEAP_BYTES), WasmMemoryError, "already");
});

Deno.test("kernels: wasmAlloc returns aligned views inside the wasm memory", () => {
  for (let align = 1; align <= 65536; align *= 2) {
    const view = wasmAlloc(100, align);
    assertEquals(view.byteOffset % align, 0, `align ${align}`);
    assertEquals(view.byteLength, 100);
    assert(isInWasmMemory(view));
  }
  assertEquals(wasmAlloc(0).byteLength, 0);
  for (const bad of [0, 3, 48, 131072, 1.5]) {
    assertThrows(() => wasmAlloc(16, bad), WasmMemoryError, "Alignment");
  }
  for (const bad of [-1, 0.5, 4 * 1024 ** 3]) {
    assertThrows(() => wasmAlloc(bad), WasmMemoryError, "size");
  }
});

Deno.test("kernels: exhaustion fails cleanly and never grows the memory", () => {
  const memoryBytes = wasmMemoryStats().memoryBytes;
  const first = wasmAlloc(4096, 4096);
  first.fill(0x5a);
  const views: Uint8Array[] = [];
  let err: unknown;
  try {
    for (;;) views.push(wasmAlloc(64 * 1024));
  } catch (e) {
    err = e;
  }
  assert(err instanceof WasmMemoryError && err.message.includes("exhausted"), String(err));
  assert(views.length > 0);
  assertEquals(wasmMemoryStats().memoryBytes, memoryBytes, "the memory did not grow");
  // Every view handed out is still attached and still holds its bytes.
  assert(isInWasmMemory(first) && first.byteLength === 4096);
  assert(first.every((b) => b === 0x5a));
  const last = views[views.length - 1] as Uint8Array;
  last.fill(7);
  assertEquals(crc32c(last), crc32cTs(last));
  // Small requests may still fit in what is left.
  const stats = wasmMemoryStats();
  const left = stats.heapCapacityBytes - stats.heapUsedBytes;
  assertEquals(wasmAlloc(left, 1).byteLength, left);
  assertThrows(() => wasmAlloc(1, 1), WasmMemoryError, "exhausted");
});

/**
 * `deno bench -A bench/crc32c_bench.ts`: CRC32C at 4 KiB and 128 KiB, the
 * wasm kernels beside the TypeScript slicing-by-8 peer (the group baseline).
 * For GB/s and ratios in one table run `deno run -A bench/crc32c.ts`.
 * @module
 */
import { crc32c, crc32cScalar, crc32cSimd, crc32cStrict } from "../wasm/crc32c.ts";
import { crc32cTs } from "../wasm/crc32c_ts.ts";
import { initWasmMemory, wasmAlloc, wasmMemoryStats } from "../wasm/kernels.ts";

if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(1024 * 1024);
/** Results land here so no call is optimised away. */
let sink = 0;

for (const size of [4096, 131072]) {
  const onHeap = new Uint8Array(size);
  crypto.getRandomValues(onHeap.subarray(0, Math.min(size, 65536)));
  const inWasm = wasmAlloc(size, 64);
  inWasm.set(onHeap);
  const group = `crc32c ${size / 1024} KiB`;
  const cases: [string, (data: Uint8Array) => number, Uint8Array][] = [
    ["TS slicing-by-8", crc32cTs, onHeap],
    ["wasm scalar slicing-by-8", crc32cScalar, inWasm],
    ["wasm SIMD strict swizzle", crc32cStrict, inWasm],
    ["wasm SIMD relaxed swizzle", crc32cSimd, inWasm],
    ["crc32c() JS-heap input (copy)", crc32c, onHeap],
  ];
  for (const [name, f, data] of cases) {
    Deno.bench({
      name: `${name} ${size / 1024} KiB`,
      group,
      baseline: name === "TS slicing-by-8",
      fn: () => {
        sink ^= f(data);
      },
    });
  }
}

/**
 * CRC32C throughput (not a test): the wasm kernels beside the pure
 * TypeScript slicing-by-8 peer, at header, sector, page and large-PDU sizes.
 *
 * Rows: TS slicing-by-8 (the peer); the three wasm kernels on input in wasm
 * memory (scalar slicing-by-8, SIMD with strict swizzles, SIMD as shipped
 * with relaxed swizzles); then the public `crc32c` on input in wasm memory
 * and on a JS-heap array (which pays the copy into the scratch area; under
 * 128 bytes `crc32c` hashes in TypeScript instead). Each figure is the best
 * of several interleaved rounds, as the 2-core machines are noisy.
 *
 * Run: `deno run -A bench/crc32c.ts`; bench/run.ts calls
 * {@link runCrcBench}. bench/crc32c_bench.ts has the `deno bench` form.
 * @module
 */
import { crc32c, crc32cScalar, crc32cSimd, crc32cStrict } from "../wasm/crc32c.ts";
import { crc32cTs } from "../wasm/crc32c_ts.ts";
import { initWasmMemory, wasmAlloc, wasmMemoryStats } from "../wasm/kernels.ts";

/** One measured figure. */
export interface CrcBenchRow {
  /** Implementation and where its input lives. */
  impl: string;
  sizeBytes: number;
  /** Throughput in GB/s (10^9 bytes per second). */
  gbPerS: number;
  /** `gbPerS` over the TS slicing-by-8 peer's at the same size. */
  ratioVsTs: number;
}

/** Options of {@link runCrcBench}. */
export interface CrcBenchOptions {
  /** Input sizes in bytes. */
  sizes?: number[];
  /** Wall time spent per implementation and size, over all rounds. */
  msPerCase?: number;
  /** Interleaved rounds; the best round counts. */
  rounds?: number;
  /** Print the table (default true). */
  print?: boolean;
}

/**
 * Heap this bench reserves when nobody has called `initWasmMemory` yet. A
 * process that needs a bigger heap must reserve it before calling
 * {@link runCrcBench}: the wasm memory is reserved once per process.
 */
const BENCH_HEAP_BYTES = 1024 * 1024;

type Crc = (data: Uint8Array, seed?: number) => number;

function gbPerS(f: Crc, data: Uint8Array, ms: number): number {
  let iters = 0;
  let sink = 0;
  const t0 = performance.now();
  let t = t0;
  // Check the clock every 16 calls: cheap next to a 64-byte CRC.
  while (t - t0 < ms) {
    for (let i = 0; i < 16; i++) sink ^= f(data);
    iters += 16;
    t = performance.now();
  }
  if (sink === 0.5) console.log(sink); // keep the results observable
  return (iters * data.byteLength) / ((t - t0) * 1e6);
}

function sizeLabel(n: number): string {
  return n % 1024 === 0 ? `${n / 1024} KiB` : `${n} B`;
}

/**
 * Measures every implementation at every size, prints a table of GB/s with
 * the ratio to the TS peer, and returns the rows.
 */
export function runCrcBench(opts: CrcBenchOptions = {}): Promise<CrcBenchRow[]> {
  const sizes = opts.sizes ?? [64, 512, 4096, 131072];
  const rounds = opts.rounds ?? 5;
  const msPerRound = (opts.msPerCase ?? 250) / rounds;
  const maxSize = Math.max(...sizes);

  if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(BENCH_HEAP_BYTES);
  const inWasm = wasmAlloc(maxSize, 64);
  const onHeap = new Uint8Array(maxSize);
  crypto.getRandomValues(onHeap.subarray(0, Math.min(maxSize, 65536)));
  for (let off = 65536; off < maxSize; off += 65536) onHeap.copyWithin(off, 0, 65536);
  inWasm.set(onHeap);

  const impls: [string, Crc, Uint8Array][] = [
    ["TS slicing-by-8 (peer)", crc32cTs, onHeap],
    ["wasm scalar slicing-by-8", crc32cScalar, inWasm],
    ["wasm SIMD, strict swizzle", crc32cStrict, inWasm],
    ["wasm SIMD, relaxed swizzle", crc32cSimd, inWasm],
    ["crc32c(), wasm-memory input", crc32c, inWasm],
    ["crc32c(), JS-heap input (copy)", crc32c, onHeap],
  ];
  const best = new Map<string, number>();
  for (let r = 0; r < rounds; r++) {
    for (const size of sizes) {
      for (const [name, f, buf] of impls) {
        const key = `${name}@${size}`;
        const g = gbPerS(f, buf.subarray(0, size), msPerRound);
        best.set(key, Math.max(best.get(key) ?? 0, g));
      }
    }
  }

  const rows: CrcBenchRow[] = [];
  for (const [name] of impls) {
    for (const size of sizes) {
      const g = best.get(`${name}@${size}`) ?? 0;
      const peer = best.get(`${impls[0]?.[0]}@${size}`) ?? 0;
      rows.push({ impl: name, sizeBytes: size, gbPerS: g, ratioVsTs: peer > 0 ? g / peer : 0 });
    }
  }
  if (opts.print ?? true) printTable(rows, sizes);
  return Promise.resolve(rows);
}

function printTable(rows: CrcBenchRow[], sizes: number[]): void {
  const names = [...new Set(rows.map((r) => r.impl))];
  const header = ["GB/s (x TS peer)", ...sizes.map(sizeLabel)];
  const cells = names.map((name) => [
    name,
    ...sizes.map((size) => {
      const r = rows.find((x) => x.impl === name && x.sizeBytes === size);
      return r ? `${r.gbPerS.toFixed(2)} (${r.ratioVsTs.toFixed(1)}x)` : "-";
    }),
  ]);
  const all = [header, ...cells];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of cells) console.log(line(r));
}

if (import.meta.main) await runCrcBench();

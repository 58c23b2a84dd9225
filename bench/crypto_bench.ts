/**
 * The kernel table of issue 5: AES-256-XTS (encrypt, decrypt) and CRC32C,
 * the WASM kernels beside their native peers (OpenSSL's libcrypto through
 * src/crypto/native_xts.ts; Intel ISA-L's crc32_iscsi from libisal2), at
 * 4 KiB and 128 KiB, with the ratio WASM/native, in one run.
 *
 * Figures are MB/s of CPU time (process user + system), not wall time: the
 * machines are shared, and CPU time is what a kernel costs. Each case is the
 * best of `rounds` interleaved rounds. Both engines read and write the same
 * buffer inside the wasm memory (in place, 4 KiB data units), so neither
 * pays a copy.
 *
 *   deno run -A bench/crypto_bench.ts [--ms N]
 * @module
 */

import process from "node:process";
import { ensureIsal, loadIsalCrc32c } from "../ffi/isal.ts";
import { loadNativeXtsEngine } from "../src/crypto/engines.ts";
import { createWasmXtsEngine } from "../src/crypto/wasm_xts.ts";
import type { XtsKey } from "../src/crypto/xts.ts";
import { crc32c } from "../wasm/crc32c.ts";
import { initWasmMemory, wasmAlloc, wasmMemoryStats } from "../wasm/kernels.ts";

/** One row: a kernel at one size, WASM beside native (0 = not available). */
export interface CryptoBenchRow {
  kernel: string;
  size: number;
  wasmMBps: number;
  nativeMBps: number;
}

/** Result of {@linkcode runCryptoBench}. */
export interface CryptoBenchResult {
  rows: CryptoBenchRow[];
  /** Why a native column is empty, if it is. */
  notes: string[];
}

const BENCH_HEAP_BYTES = 1024 * 1024;
const SIZES = [4096, 131072];

/** MB/s of CPU time for `f` (which processes `bytes` per call), over ~`ms`. */
function rate(f: () => void, bytes: number, ms: number): number {
  f(); // warm-up
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ms) {
    f();
    n += bytes;
  }
  const cpu = process.cpuUsage(c0);
  return n / Math.max((cpu.user + cpu.system) / 1e6, 1e-6) / 1e6;
}

/** Measures every kernel; prints nothing. `msPerCase` is split over `rounds`. */
export async function runCryptoBench(msPerCase = 600, rounds = 3): Promise<CryptoBenchResult> {
  if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(BENCH_HEAP_BYTES);
  const notes: string[] = [];
  const buf = wasmAlloc(Math.max(...SIZES), 64);
  for (let off = 0; off < buf.length; off += 65536) {
    crypto.getRandomValues(buf.subarray(off, off + 65536));
  }
  const keyBytes = crypto.getRandomValues(new Uint8Array(64));
  const wasmKey = createWasmXtsEngine().createKey(keyBytes);
  const native = await loadNativeXtsEngine();
  let nativeKey: XtsKey | null = null;
  if (native.engine !== null) nativeKey = native.engine.createKey(keyBytes);
  else notes.push(`native AES-XTS: skipped: ${native.why}`);
  keyBytes.fill(0);
  const isalMissing = await ensureIsal();
  const isal = isalMissing === null ? loadIsalCrc32c() : null;
  if (isal === null) notes.push(`native CRC32C (ISA-L): skipped: ${isalMissing}`);

  type Case = {
    kernel: string;
    wasm: (b: Uint8Array) => void;
    native: ((b: Uint8Array) => void) | null;
  };
  let sink = 0;
  const cases: Case[] = [
    {
      kernel: "AES-256-XTS encrypt",
      wasm: (b) => wasmKey.encrypt(b, b, 4096, 7),
      native: nativeKey && ((b) => nativeKey.encrypt(b, b, 4096, 7)),
    },
    {
      kernel: "AES-256-XTS decrypt",
      wasm: (b) => wasmKey.decrypt(b, b, 4096, 7),
      native: nativeKey && ((b) => nativeKey.decrypt(b, b, 4096, 7)),
    },
    {
      kernel: "CRC32C",
      wasm: (b) => {
        sink ^= crc32c(b);
      },
      native: isal && ((b) => {
        sink ^= isal(b);
      }),
    },
  ];
  const rows: CryptoBenchRow[] = [];
  const ms = msPerCase / rounds;
  for (const c of cases) {
    for (const size of SIZES) {
      const b = buf.subarray(0, size);
      let w = 0;
      let n = 0;
      for (let r = 0; r < rounds; r++) {
        w = Math.max(w, rate(() => c.wasm(b), size, ms));
        if (c.native) n = Math.max(n, rate(() => c.native?.(b), size, ms));
      }
      rows.push({ kernel: c.kernel, size, wasmMBps: w, nativeMBps: n });
    }
  }
  if (sink === 0.5) console.log(sink); // keep the CRCs observable
  wasmKey.destroy();
  nativeKey?.destroy();
  return { rows, notes };
}

/** Prints the table of {@linkcode runCryptoBench}. */
export function printCryptoBench(result: CryptoBenchResult): void {
  const header = ["kernel", "size", "WASM MB/s", "native MB/s", "WASM/native"];
  const cells = result.rows.map((r) => [
    r.kernel,
    r.size >= 1024 ? `${r.size / 1024} KiB` : `${r.size} B`,
    r.wasmMBps.toFixed(0),
    r.nativeMBps > 0 ? r.nativeMBps.toFixed(0) : "-",
    r.nativeMBps > 0 ? `${(r.wasmMBps / r.nativeMBps).toFixed(2)}x` : "n/a",
  ]);
  const all = [header, ...cells];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  for (const [k, r] of all.entries()) {
    console.log(
      r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  "),
    );
    if (k === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
  console.log("(native: OpenSSL libcrypto EVP aes-256-xts via FFI; ISA-L crc32_iscsi via FFI)");
  for (const note of result.notes) console.log(note);
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--ms");
  const ms = i >= 0 ? Number(Deno.args[i + 1]) : 600;
  printCryptoBench(await runCryptoBench(ms));
}

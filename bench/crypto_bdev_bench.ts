/**
 * The crypto bdev beside its base: random reads and writes through a crypto
 * bdev (AES-256-XTS, native engine) on a RAM disk, and on the RAM disk
 * alone, in the same run, with the ratio. What the ratio shows is the cost
 * of encryption plus the bounce copy per I/O. Not a test: nothing asserts a
 * speed.
 *
 *   deno run -A bench/crypto_bdev_bench.ts [--seconds N]
 * @module
 */
import { BdevRegistry } from "../src/bdev/mod.ts";
import { createMallocBdev } from "../src/bdev_modules/malloc/malloc.ts";
import { createCryptoBdev } from "../src/bdev_modules/crypto/crypto.ts";
import { KeyStore } from "../src/crypto/keys.ts";
import { createNativeXtsEngine } from "../src/crypto/native_xts.ts";
import { Reactor } from "../src/reactor/mod.ts";
import { type BdevPerfRw, measureBdev } from "./bdev_perf.ts";

/** One row: the crypto bdev's and its base's MiB/s for one workload. */
export interface CryptoBdevBenchRow {
  workload: string;
  cryptoMiBps: number;
  baseMiBps: number;
}

/** Runs the workloads; `seconds` each, per bdev. */
export async function runCryptoBdevBench(seconds: number): Promise<CryptoBdevBenchRow[]> {
  if (createNativeXtsEngine() === null) return [];
  const registry = new BdevRegistry();
  const keys = new KeyStore();
  const hex = (n: number) =>
    Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0"))
      .join("");
  keys.create({ name: "bench", cipher: "AES_XTS", key: hex(32), key2: hex(32) });
  const numBlocks = (256 * 2 ** 20) / 4096;
  createMallocBdev(registry, { name: "base", numBlocks, blockSize: 4096 });
  createCryptoBdev(registry, keys, { name: "crypt", baseBdevName: "base", keyName: "bench" });
  // The same kind of disk, unclaimed, for the base figures.
  createMallocBdev(registry, { name: "plain", numBlocks, blockSize: 4096 });
  const reactor = new Reactor();
  const running = reactor.run();
  const rows: CryptoBdevBenchRow[] = [];
  try {
    for (const ioSizeBytes of [4096, 131072]) {
      // Writes first, so reads find written (not all-zero) data on both.
      for (const rw of ["randwrite", "randread"] as BdevPerfRw[]) {
        const run = (name: string) =>
          measureBdev({ registry, name, thread: reactor, seconds, depth: 32, rw, ioSizeBytes });
        const c = await run("crypt");
        const b = await run("plain");
        if (c.errors > 0 || b.errors > 0) throw new Error(`I/O errors in ${rw} ${ioSizeBytes}`);
        rows.push({
          workload: `${rw} ${ioSizeBytes / 1024} KiB QD32`,
          cryptoMiBps: c.mibPerSec,
          baseMiBps: b.mibPerSec,
        });
      }
    }
  } finally {
    await reactor.stop();
    await running;
    reactor.close();
    for (const n of ["crypt", "base", "plain"]) await registry.unregister(n);
    keys.clear();
  }
  return rows;
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--seconds");
  const seconds = i >= 0 ? Number(Deno.args[i + 1]) : 2;
  const rows = await runCryptoBdevBench(seconds);
  if (rows.length === 0) console.log("no libcrypto.so.3: no native AES-XTS engine to measure");
  console.log("workload                 crypto MiB/s  malloc MiB/s  crypto/malloc");
  for (const r of rows) {
    console.log(
      `${r.workload.padEnd(24)} ${r.cryptoMiBps.toFixed(0).padStart(12)}  ${
        r.baseMiBps.toFixed(0).padStart(12)
      }  ${(r.cryptoMiBps / r.baseMiBps).toFixed(2).padStart(12)}x`,
    );
  }
}

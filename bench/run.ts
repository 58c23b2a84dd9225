/**
 * `deno task bench`: every benchmark of the foundation, each figure printed
 * beside its peer measured in the same run on the same machine, with the
 * ratio. Nothing here asserts a speed: a benchmark is not a test.
 *
 *   deno task bench [--seconds N] [--only ffi,reactor,crc,xts,virtq,tcp,bdev]
 *
 * `xts` prints the kernel table of issue 5 (AES-256-XTS and CRC32C, WASM
 * beside native); `--only xts,crc` gives both CRC tables and that one.
 * @module
 */
import { runCrcBench } from "./crc32c.ts";
import { printCryptoBench, runCryptoBench } from "./crypto_bench.ts";
import { runFfiBench } from "./ffi_bench.ts";
import { haveFio, runFio } from "./fio.ts";
import { type BdevPerfRw, measureFileBdev, measureMallocBdev } from "./bdev_perf.ts";
import { runReactorBench } from "./reactor_bench.ts";
import { runVirtqBench } from "./virtq_bench.ts";
import { printTcpBench, runTcpBench } from "./tcp_bench.ts";

const args = Deno.args;
function arg(name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}
const seconds = Number(arg("seconds") ?? "3");
const only = new Set((arg("only") ?? "ffi,reactor,crc,xts,virtq,tcp,bdev").split(","));

function table(header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  for (const [n, r] of cells.entries()) {
    console.log(
      r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  "),
    );
    if (n === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}

const k = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0));
const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : "n/a");

console.log(`sluice bench (${seconds} s per I/O run; 2-core machines: expect 20-50% noise)\n`);

if (only.has("ffi")) {
  console.log("## Deno FFI call cost");
  table(["call", "ns/call"], (await runFfiBench()).map((r) => [r.call, r.nsPerCall.toFixed(1)]));
  console.log();
}

if (only.has("reactor")) {
  console.log("## Reactor: idle CPU and io_uring NOP round trips");
  await runReactorBench(); // prints its own table
  console.log();
}

if (only.has("crc")) {
  console.log("## CRC32C (Castagnoli)");
  await runCrcBench();
  console.log();
}

if (only.has("xts")) {
  console.log("## Kernels: AES-256-XTS and CRC32C, WASM beside native (MB/s of CPU time)");
  printCryptoBench(await runCryptoBench());
  console.log();
}

if (only.has("virtq")) {
  console.log("## virtqueue chain walk + virtio-blk parse: TypeScript beside WASM (ns/request)");
  table(
    ["request", "TS ns", "WASM ns", "TS/WASM"],
    runVirtqBench().map((r) => [
      r.shape,
      r.tsNs.toFixed(0),
      r.wasmNs.toFixed(0),
      ratio(r.tsNs, r.wasmNs),
    ]),
  );
  console.log();
}

if (only.has("tcp")) {
  console.log("## TCP echo on loopback: sluice's io_uring connections beside Deno's own TCP");
  printTcpBench(await runTcpBench(Math.min(seconds, 2)));
  console.log();
}

if (only.has("bdev")) {
  console.log("## 4 KiB random I/O in-process, beside fio --ioengine=io_uring on the same file");
  const dir = "./var/bench";
  await Deno.mkdir(dir, { recursive: true });
  const file = `${dir}/file.img`;
  const sizeMiB = 256;
  await precondition(file, sizeMiB);
  const fio = await haveFio();
  if (!fio) console.log("(fio is not installed: the peer column is empty; apt-get install fio)");
  const rows: (string | number)[][] = [];
  for (const rw of ["randread", "randwrite"] as BdevPerfRw[]) {
    for (const depth of [1, 32]) {
      const m = await measureMallocBdev({ seconds, depth, rw, sizeMiB });
      rows.push([`malloc ${rw} QD${depth}`, k(m.iops), m.latencyUsP50, m.latencyUsP99, "", "", ""]);
      const f = await measureFileBdev({ filename: file, seconds, depth, rw, sizeMiB });
      let peer = { iops: 0, p50Us: 0, p99Us: 0 };
      if (fio) {
        peer = await runFio({
          filename: file,
          rw,
          blockSize: 4096,
          iodepth: depth,
          seconds,
          direct: f.directIo,
          sizeBytes: sizeMiB * 2 ** 20,
        });
      }
      rows.push([
        `file ${rw} QD${depth}${f.directIo ? " O_DIRECT" : " buffered"}`,
        k(f.iops),
        f.latencyUsP50,
        f.latencyUsP99,
        fio ? k(peer.iops) : "-",
        fio ? peer.p50Us.toFixed(1) : "-",
        fio ? ratio(f.iops, peer.iops) : "-",
      ]);
    }
  }
  table(
    ["workload", "sluice IOPS", "p50 us", "p99 us", "fio IOPS", "fio p50 us", "sluice/fio"],
    rows,
  );
  console.log();
}

/** A file fully written once, so reads hit allocated blocks as fio's do. */
async function precondition(path: string, sizeMiB: number): Promise<void> {
  try {
    if ((await Deno.stat(path)).size === sizeMiB * 2 ** 20) return;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const f = await Deno.open(path, { create: true, write: true, truncate: true });
  try {
    const chunk = new Uint8Array(1 << 20);
    for (let i = 0; i < sizeMiB; i++) {
      crypto.getRandomValues(chunk.subarray(0, 65536));
      await f.write(chunk);
    }
    await f.syncData();
  } finally {
    f.close();
  }
}

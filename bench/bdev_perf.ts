/**
 * bdevperf in-process: random 4 KiB reads or writes at a fixed queue depth
 * against any bdev of a registry, with IOPS and latency percentiles. Not a
 * test: bench/run.ts prints these figures beside fio's for the same file.
 *
 * The measured loop allocates nothing per I/O: `depth` BdevIo objects, their
 * buffers (one page-aligned native mapping) and their completion closures
 * are made before the clock starts; latencies go into a preallocated
 * histogram (0.1 us buckets up to 20 ms, then one overflow bucket).
 *
 * Run: `deno run -A bench/bdev_perf.ts --file /var/tmp/perf.img --rw randread --depth 32`
 * (`--malloc` for a RAM disk, `--buffered` for the page-cache path,
 * `--idle-spin-us N` to tune the reactor's spin before parking); the CLI
 * runs fio on the same file beside it when fio is installed.
 * @module
 */
import { BdevIo, BdevIoStatus, BdevRegistry, type IoThread, runIo } from "../src/bdev/mod.ts";
import { Reactor, type ReactorOptions } from "../src/reactor/mod.ts";
import { createFileBdev } from "../src/bdev_modules/file/file.ts";
import { createMallocBdev } from "../src/bdev_modules/malloc/malloc.ts";
import { mapAnonymous } from "../ffi/memory.ts";

/** The access pattern. */
export type BdevPerfRw = "randread" | "randwrite";

/** What {@link measureBdev} drives. */
export interface BdevPerfOptions {
  registry: BdevRegistry;
  /** Name of the bdev to measure. */
  name: string;
  /** The thread the channel lives on; it must be running (e.g. `reactor.run()`). */
  thread: IoThread;
  /** Measured time, after the warm-up. */
  seconds: number;
  /** I/Os kept in flight. */
  depth: number;
  rw: BdevPerfRw;
  /** Bytes per I/O; a multiple of the block size. Default 4096. */
  ioSizeBytes?: number;
  /** Time run but not counted, before the measurement. Default 0.2 s. */
  warmupSeconds?: number;
}

/** Figures of one run. */
export interface BdevPerfResult {
  bdev: string;
  rw: BdevPerfRw;
  depth: number;
  ioSizeBytes: number;
  /** Measured seconds (without the warm-up). */
  seconds: number;
  /** I/Os completed in the measured window. */
  ios: number;
  iops: number;
  mibPerSec: number;
  latencyUsMean: number;
  latencyUsP50: number;
  latencyUsP99: number;
  latencyUsMax: number;
  /** I/Os that failed (any phase); a run with errors is not a valid figure. */
  errors: number;
}

const HIST_BUCKETS_PER_US = 10;
const HIST_MAX_US = 20_000;
/** Most I/Os in flight {@link measureBdev} accepts. */
export const BDEV_PERF_MAX_DEPTH = 4096;

/** Measures `options.name` in `options.registry`; the bdev must be writable for randwrite. */
export async function measureBdev(options: BdevPerfOptions): Promise<BdevPerfResult> {
  const { registry, name, thread, seconds, depth, rw } = options;
  const ioSize = options.ioSizeBytes ?? 4096;
  const warmupMs = (options.warmupSeconds ?? 0.2) * 1000;
  if (!Number.isInteger(depth) || depth < 1 || depth > BDEV_PERF_MAX_DEPTH) {
    throw new RangeError(`depth must be an integer from 1 to ${BDEV_PERF_MAX_DEPTH}, got ${depth}`);
  }
  if (!(seconds > 0)) throw new RangeError(`seconds must be positive, got ${seconds}`);
  const bdev = registry.get(name);
  const bs = bdev.blockSize;
  if (!Number.isInteger(ioSize) || ioSize < bs || ioSize % bs !== 0) {
    throw new RangeError(`ioSizeBytes ${ioSize} is not a multiple of the block size ${bs}`);
  }
  const blocksPerIo = ioSize / bs;
  const slots = Math.floor(bdev.numBlocks / blocksPerIo);
  if (slots < 1) throw new RangeError(`bdev "${name}" is smaller than one I/O`);
  const isRead = rw === "randread";

  const desc = registry.open(name, !isRead);
  const ch = desc.getIoChannel(thread);
  // One page-aligned region for all buffers: O_DIRECT needs no fallback.
  const stride = Math.ceil(ioSize / 4096) * 4096;
  const mem = mapAnonymous(depth * stride, { populate: true });
  const hist = new Uint32Array(HIST_MAX_US * HIST_BUCKETS_PER_US + 1);
  const startMs = new Float64Array(depth);
  const bufs: Uint8Array[] = [];
  const ios: BdevIo[] = [];
  let count = 0, errors = 0;
  // Doubles in closure variables are boxed on every store: keep them in a typed array.
  const acc = new Float64Array(2); // [sum of latencies us, max latency us]
  let measureFrom = 0, stopAt = 0;
  let outstanding = 0;
  let finished: () => void = () => {};
  const done = new Promise<void>((resolve) => (finished = resolve));

  const rng = new Uint32Array([0x9e3779b9]);
  const submit = (j: number): void => {
    const io = ios[j] as BdevIo;
    // xorshift32: Math.random returns a heap number (an allocation) per call.
    let x = rng[0] ?? 1;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    rng[0] = x;
    const lba = ((rng[0] ?? 0) % slots) * blocksPerIo;
    if (isRead) ch.read(io, bufs[j] as Uint8Array, lba, blocksPerIo);
    else ch.write(io, bufs[j] as Uint8Array, lba, blocksPerIo);
  };

  try {
    for (let j = 0; j < depth; j++) {
      const buf = mem.bytes(j * stride, ioSize);
      if (!isRead) buf.fill(0x5a + j);
      bufs.push(buf);
      ios.push(
        new BdevIo((io) => {
          const now = performance.now();
          if (io.status !== BdevIoStatus.Success) errors++;
          else if (now >= measureFrom && now < stopAt) {
            const us = (now - (startMs[j] ?? now)) * 1000;
            const b = Math.min(Math.floor(us * HIST_BUCKETS_PER_US), hist.length - 1);
            hist[b] = (hist[b] ?? 0) + 1;
            count++;
            acc[0] = (acc[0] ?? 0) + us;
            if (us > (acc[1] ?? 0)) acc[1] = us;
          }
          if (now >= stopAt) {
            if (--outstanding === 0) finished();
            return;
          }
          startMs[j] = now;
          submit(j);
        }),
      );
    }
    // One I/O outside the clock: opens files, faults in the channel's state.
    await runIo(ch, (io) => ch.read(io, bufs[0] as Uint8Array, 0, blocksPerIo));

    const t0 = performance.now();
    measureFrom = t0 + warmupMs;
    stopAt = measureFrom + seconds * 1000;
    outstanding = depth;
    for (let j = 0; j < depth; j++) {
      startMs[j] = t0;
      submit(j);
    }
    await done;
  } finally {
    ch.close();
    desc.close();
    bufs.length = 0;
    mem.unmap();
  }

  const sumUs = acc[0] ?? 0, maxUs = acc[1] ?? 0;
  const percentile = (p: number): number => {
    if (count === 0) return 0;
    const want = Math.ceil(count * p);
    let seen = 0;
    for (let b = 0; b < hist.length; b++) {
      seen += hist[b] ?? 0;
      if (seen >= want) return b === hist.length - 1 ? maxUs : (b + 0.5) / HIST_BUCKETS_PER_US;
    }
    return maxUs;
  };
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    bdev: name,
    rw,
    depth,
    ioSizeBytes: ioSize,
    seconds,
    ios: count,
    iops: Math.round(count / seconds),
    mibPerSec: round((count * ioSize) / seconds / 2 ** 20),
    latencyUsMean: round(count > 0 ? sumUs / count : 0),
    latencyUsP50: round(percentile(0.5)),
    latencyUsP99: round(percentile(0.99)),
    latencyUsMax: round(maxUs),
    errors,
  };
}

/** What {@link measureFileBdev} measures. */
export interface FilePerfOptions {
  /** File or block device; a missing file is created (and removed after) with `sizeMiB`. */
  filename: string;
  seconds: number;
  depth: number;
  rw: BdevPerfRw;
  /** Size of a file created for the run. Default 256 MiB. */
  sizeMiB?: number;
  /** O_DIRECT when the filesystem allows (default true), as fio --direct=1. */
  direct?: boolean;
  ioSizeBytes?: number;
  warmupSeconds?: number;
  /**
   * Options of the reactor the run makes. The defaults are the product's;
   * `idleSpinUs` above the device's batch interval (~500 us on a virtio
   * disk at depth 32) keeps the reactor from parking between batches.
   */
  reactor?: ReactorOptions;
}

/** {@link BdevPerfResult} plus whether O_DIRECT was in effect. */
export interface FilePerfResult extends BdevPerfResult {
  directIo: boolean;
}

/** Creates a file bdev on `filename` on its own reactor and measures it. */
export async function measureFileBdev(options: FilePerfOptions): Promise<FilePerfResult> {
  let created = false;
  try {
    await Deno.stat(options.filename);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    await writeTestFile(options.filename, (options.sizeMiB ?? 256) * 2 ** 20);
    created = true;
  }
  const registry = new BdevRegistry({ ioPoolSize: Math.max(64, options.depth) });
  const reactor = new Reactor(options.reactor);
  const running = reactor.run();
  try {
    createFileBdev(registry, {
      name: "perf",
      filename: options.filename,
      direct: options.direct,
      readonly: options.rw === "randread",
    });
    const info = registry.get("perf").toJSON().driver_specific as {
      file?: { direct_io?: boolean };
    };
    const r = await measureBdev({ ...options, registry, name: "perf", thread: reactor });
    return { ...r, directIo: info.file?.direct_io === true };
  } finally {
    if (registry.has("perf")) await registry.unregister("perf");
    await reactor.stop();
    await running;
    reactor.close();
    if (created) await Deno.remove(options.filename);
  }
}

/** Measures a malloc bdev of `sizeMiB` the same way (the in-memory ceiling). */
export async function measureMallocBdev(
  options: Omit<FilePerfOptions, "filename" | "direct">,
): Promise<BdevPerfResult> {
  const registry = new BdevRegistry({ ioPoolSize: Math.max(64, options.depth) });
  const reactor = new Reactor(options.reactor);
  const running = reactor.run();
  try {
    createMallocBdev(registry, {
      name: "perf",
      numBlocks: ((options.sizeMiB ?? 256) * 2 ** 20) / 512,
      blockSize: 512,
    });
    return await measureBdev({ ...options, registry, name: "perf", thread: reactor });
  } finally {
    if (registry.has("perf")) await registry.unregister("perf");
    await reactor.stop();
    await running;
    reactor.close();
  }
}

/** Writes a file of non-zero data (so reads hit allocated blocks, as fio lays out its file). */
async function writeTestFile(path: string, bytes: number): Promise<void> {
  const chunk = new Uint8Array(2 ** 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    for (let off = 0; off < bytes; off += chunk.length) {
      await f.write(chunk.subarray(0, Math.min(chunk.length, bytes - off)));
    }
    await f.syncData();
  } finally {
    f.close();
  }
}

/** fio's io_uring figure for the same job, when fio is installed; null otherwise. */
export async function fioPeer(options: FilePerfOptions): Promise<
  { iops: number; latencyUsP50: number; latencyUsP99: number } | null
> {
  const args = [
    "--name=peer",
    `--filename=${options.filename}`,
    "--ioengine=io_uring",
    `--rw=${options.rw}`,
    `--bs=${options.ioSizeBytes ?? 4096}`,
    `--iodepth=${options.depth}`,
    `--direct=${options.direct === false ? 0 : 1}`,
    // fio drops the file's page cache first by default; we measure what is cached.
    "--invalidate=0",
    `--runtime=${options.seconds}`,
    `--ramp_time=${options.warmupSeconds ?? 0.2}`,
    "--time_based",
    `--size=${options.sizeMiB ?? 256}M`,
    "--output-format=json",
  ];
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("fio", { args, stdout: "piped", stderr: "piped" }).output();
  } catch {
    return null;
  }
  if (!out.success) return null;
  const job = (JSON.parse(new TextDecoder().decode(out.stdout)) as {
    jobs: {
      read: FioSide;
      write: FioSide;
    }[];
  }).jobs[0];
  if (job === undefined) return null;
  const side = options.rw === "randread" ? job.read : job.write;
  const pct = side.clat_ns.percentile ?? {};
  return {
    iops: Math.round(side.iops),
    latencyUsP50: Math.round((pct["50.000000"] ?? 0) / 100) / 10,
    latencyUsP99: Math.round((pct["99.000000"] ?? 0) / 100) / 10,
  };
}

interface FioSide {
  iops: number;
  clat_ns: { percentile?: Record<string, number> };
}

if (import.meta.main) {
  const args = Deno.args;
  const opt = (flag: string, dflt: string): string => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] ?? dflt : dflt;
  };
  const rw = opt("--rw", "randread");
  if (rw !== "randread" && rw !== "randwrite") throw new Error("--rw is randread or randwrite");
  const base = {
    seconds: Number(opt("--seconds", "3")),
    depth: Number(opt("--depth", "32")),
    rw: rw as BdevPerfRw,
    sizeMiB: Number(opt("--size-mib", "256")),
    reactor: args.includes("--idle-spin-us")
      ? { idleSpinUs: Number(opt("--idle-spin-us", "100")) }
      : undefined,
  } as const;
  if (args.includes("--malloc")) {
    console.log("malloc", JSON.stringify(await measureMallocBdev(base)));
  } else {
    const filename = opt("--file", "/var/tmp/sluice_bdev_perf.img");
    const direct = !args.includes("--buffered");
    const ours = await measureFileBdev({ ...base, filename, direct });
    console.log("sluice file bdev", JSON.stringify(ours));
    let createdForFio = false;
    try {
      await Deno.stat(filename);
    } catch {
      await writeTestFile(filename, base.sizeMiB * 2 ** 20);
      createdForFio = true;
    }
    const peer = await fioPeer({ ...base, filename, direct });
    console.log("fio io_uring     ", peer === null ? "(fio not available)" : JSON.stringify(peer));
    if (createdForFio) await Deno.remove(filename);
  }
}

/**
 * The workload engine of `sluice perf` (spdk_nvme_perf's flags and output),
 * independent of the transport: a device only has to start an I/O on a
 * slot and report its completion. Slots, buffers and the latency histogram
 * are allocated once, before the run.
 * @module
 */

/** What the engine drives: one queue of an NVMe/TCP or vhost-user device. */
export interface PerfDevice {
  readonly blockSize: number;
  readonly numBlocks: number;
  /** Starts I/O `slot`; the device calls `onDone(slot, ok)` once it ends. */
  submit(slot: number, write: boolean, lba: number, numBlocks: number, buf: Uint8Array): void;
}

/** The workload, as spdk_nvme_perf's flags say it. */
export interface PerfWorkload {
  /** -w */
  pattern: "read" | "write" | "randread" | "randwrite" | "rw" | "randrw";
  /** -M: percent of reads for rw/randrw. */
  readPercent: number;
  /** -o: bytes per I/O. */
  ioSize: number;
  /** -q: I/Os in flight per queue. */
  depth: number;
  /** -t */
  seconds: number;
  /** --verify: check every read against what this run wrote there. */
  verify: boolean;
}

const SUB_BITS = 4;
const BUCKETS_PER_OCTAVE = 1 << SUB_BITS;
const OCTAVES = 32; // ns up to 2^35 (~34 s): longer lands in the last bucket

/**
 * Log-linear latency histogram in nanoseconds: 16 buckets per power of two
 * (error under 4.5%), fixed size, no allocation per sample.
 */
export class LatencyHistogram {
  readonly counts = new Float64Array(OCTAVES * BUCKETS_PER_OCTAVE);
  total = 0;
  sumNs = 0;
  maxNs = 0;

  record(ns: number): void {
    let b: number;
    if (ns < BUCKETS_PER_OCTAVE) b = ns < 1 ? 1 : Math.floor(ns);
    else if (ns >= 2 ** 32) {
      // Above ~4.3 s (rare): the same definition in floating point.
      const octave = Math.floor(Math.log2(ns));
      b = (octave - 3) * BUCKETS_PER_OCTAVE +
        Math.floor((ns / 2 ** octave - 1) * BUCKETS_PER_OCTAVE);
    } else {
      // Integer arithmetic (Math.log2 and ** cost ~25 ns a sample, this ~2 ns): bucket edges
      // from 16 ns up are whole numbers, so dropping the fraction changes no bucket.
      const v = ns >>> 0;
      const octave = 31 - Math.clz32(v);
      b = (octave - 3) * BUCKETS_PER_OCTAVE +
        ((v >>> (octave - SUB_BITS)) & (BUCKETS_PER_OCTAVE - 1));
    }
    if (b >= this.counts.length) b = this.counts.length - 1;
    this.counts[b] = (this.counts[b] as number) + 1;
    this.total++;
    this.sumNs += ns;
    if (ns > this.maxNs) this.maxNs = ns;
  }

  /** Upper edge of bucket `b` in ns. */
  static bucketNs(b: number): number {
    if (b < BUCKETS_PER_OCTAVE) return b + 1;
    const octave = Math.floor(b / BUCKETS_PER_OCTAVE) + 3;
    const sub = b % BUCKETS_PER_OCTAVE;
    return 2 ** octave * (1 + (sub + 1) / BUCKETS_PER_OCTAVE);
  }

  /** The latency below which a fraction `q` of samples fall, in ns. */
  quantileNs(q: number): number {
    if (this.total === 0) return 0;
    const want = q * this.total;
    let seen = 0;
    for (let b = 0; b < this.counts.length; b++) {
      seen += this.counts[b] as number;
      if (seen >= want) return Math.min(LatencyHistogram.bucketNs(b), this.maxNs);
    }
    return this.maxNs;
  }

  merge(o: LatencyHistogram): void {
    for (let b = 0; b < this.counts.length; b++) {
      this.counts[b] = (this.counts[b] as number) + (o.counts[b] as number);
    }
    this.total += o.total;
    this.sumNs += o.sumNs;
    this.maxNs = Math.max(this.maxNs, o.maxNs);
  }
}

const MODE_READ = 0;
const MODE_WRITE = 1;
const MODE_MIXED = 2;

/** What one queue did. */
export interface PerfResult {
  ios: number;
  bytes: number;
  errors: number;
  verifyErrors: number;
  seconds: number;
  latency: LatencyHistogram;
}

/**
 * Drives one device with `depth` slots until the time is up, then lets the
 * slots drain. For --verify, every block written carries (lba, generation)
 * in its first 16 bytes and a fill derived from them; reads check both
 * against the generation this job last wrote there (0: never written, not
 * checked). Writes to a block wait while a read or write of it is in flight,
 * so a read never races the write it checks.
 */
export class PerfJob {
  readonly #dev: PerfDevice;
  readonly #w: PerfWorkload;
  readonly #blocksPerIo: number;
  readonly #ioCount: number; // how many ioSize-aligned positions fit
  readonly #bufs: Uint8Array[] = [];
  readonly #views: DataView[] = [];
  readonly #startNs: Float64Array;
  readonly #lba: Float64Array;
  readonly #isWrite: Uint8Array;
  /** Generation last written at each I/O position (verify only). */
  readonly #gen: Uint32Array;
  /** Positions with an I/O in flight (verify only). */
  readonly #busy: Uint8Array;
  #nextSeq = 0;
  #seqGen = 1;
  #stopping = false;
  #inFlight = 0;
  /**
   * xorshift32 state and the last clock reading, in typed arrays: a double
   * (or a uint32 above 2^30) kept in a field or passed between functions
   * that V8 does not inline is boxed, one allocation per I/O.
   */
  readonly #rng = new Uint32Array(1);
  readonly #random: boolean;
  readonly #mode: number;
  readonly #clockNs = new Float64Array(1);
  readonly result: PerfResult;
  #resolve: (() => void) | null = null;

  constructor(dev: PerfDevice, w: PerfWorkload, alloc: (bytes: number) => Uint8Array, seed = 1) {
    this.#dev = dev;
    this.#w = w;
    if (w.ioSize % dev.blockSize !== 0) {
      throw new RangeError(`-o ${w.ioSize} is not a multiple of the block size ${dev.blockSize}`);
    }
    this.#blocksPerIo = w.ioSize / dev.blockSize;
    this.#ioCount = Math.floor(dev.numBlocks / this.#blocksPerIo);
    if (this.#ioCount < 1) throw new RangeError("the device is smaller than one I/O");
    for (let i = 0; i < w.depth; i++) {
      const b = alloc(w.ioSize);
      this.#bufs.push(b);
      this.#views.push(new DataView(b.buffer, b.byteOffset, b.byteLength));
    }
    this.#startNs = new Float64Array(w.depth);
    this.#lba = new Float64Array(w.depth);
    this.#isWrite = new Uint8Array(w.depth);
    const n = w.verify ? this.#ioCount : 0;
    this.#gen = new Uint32Array(n);
    this.#busy = new Uint8Array(n);
    this.#rng[0] = seed >>> 0 || 1;
    this.#random = w.pattern.startsWith("rand");
    this.#mode = w.pattern === "read" || w.pattern === "randread"
      ? MODE_READ
      : w.pattern === "write" || w.pattern === "randwrite"
      ? MODE_WRITE
      : MODE_MIXED;
    this.result = {
      ios: 0,
      bytes: 0,
      errors: 0,
      verifyErrors: 0,
      seconds: 0,
      latency: new LatencyHistogram(),
    };
  }

  /** Runs the workload; resolves when the time is up and every slot has drained. */
  run(): Promise<PerfResult> {
    const t0 = performance.now();
    const done = new Promise<void>((r) => (this.#resolve = r));
    for (let s = 0; s < this.#w.depth; s++) this.#start(s, false);
    const timer = setTimeout(() => this.stop(), this.#w.seconds * 1000);
    return done.then(() => {
      clearTimeout(timer);
      this.result.seconds = (performance.now() - t0) / 1000;
      return this.result;
    });
  }

  /**
   * Ends the run early (Ctrl-C, a connection gone): no new I/O starts, and
   * run() resolves once the I/Os in flight have ended.
   */
  stop(): void {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#inFlight === 0) this.#resolve?.();
  }

  /** I/Os started and not yet ended. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** A number below `n` (xorshift32): deterministic, allocation-free for `n` below 2^30. */
  #randBelow(n: number): number {
    let x = this.#rng[0] as number;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#rng[0] = x;
    return (this.#rng[0] as number) % n;
  }

  /** Starts an I/O in `slot`; `clockRead`: the caller has just read the clock into #clockNs. */
  #start(slot: number, clockRead: boolean): void {
    if (this.#stopping) return;
    const w = this.#w;
    const write = this.#mode === MODE_WRITE ||
      (this.#mode === MODE_MIXED && this.#randBelow(100) >= w.readPercent);
    let pos = this.#random ? this.#randBelow(this.#ioCount) : this.#nextSeq++ % this.#ioCount;
    if (w.verify) {
      // Pick a position nobody is using; a bounded probe keeps this O(1).
      let tries = 0;
      while (this.#busy[pos] === 1 && tries++ < 64) pos = (pos + 1) % this.#ioCount;
      if (this.#busy[pos] === 1) {
        // All probed positions busy (tiny device): retry on the next completion.
        this.#retryLater(slot);
        return;
      }
      this.#busy[pos] = 1;
    }
    const lba = pos * this.#blocksPerIo;
    this.#lba[slot] = lba;
    this.#isWrite[slot] = write ? 1 : 0;
    const buf = this.#bufs[slot] as Uint8Array;
    if (write && w.verify) this.#fill(slot, pos);
    this.#inFlight++;
    // performance.now() costs ~100 ns here: a resubmission reuses its completion's reading,
    // unless a verify fill ran since (that time is not the device's).
    this.#startNs[slot] = clockRead && !(write && w.verify)
      ? this.#clockNs[0] as number
      : performance.now() * 1e6;
    this.#dev.submit(slot, write, lba, this.#blocksPerIo, buf);
  }

  /**
   * Starts `slot` again after the current task. Kept out of #start: a closure capturing a
   * parameter can make V8 allocate a context on every call of the function that holds it
   * (measured in NvmeTcpPerfDevice.submit: ~45 bytes per I/O until moved out).
   */
  #retryLater(slot: number): void {
    queueMicrotask(() => this.#start(slot, false));
  }

  #fill(slot: number, pos: number): void {
    const gen = this.#seqGen++ >>> 0 || 1;
    this.#gen[pos] = gen;
    const v = this.#views[slot] as DataView;
    const bs = this.#dev.blockSize;
    for (let off = 0; off < v.byteLength; off += bs) {
      const lba = pos * this.#blocksPerIo + off / bs;
      v.setFloat64(off, lba, true);
      v.setUint32(off + 8, gen, true);
      v.setUint32(off + 12, 0x51ce5eed, true);
      const fill = (lba * 31 + gen) & 0xff;
      (this.#bufs[slot] as Uint8Array).fill(fill, off + 16, off + bs);
    }
  }

  #check(slot: number, pos: number): boolean {
    const gen = this.#gen[pos] as number;
    if (gen === 0) return true; // never written by this run
    const v = this.#views[slot] as DataView;
    const b = this.#bufs[slot] as Uint8Array;
    const bs = this.#dev.blockSize;
    for (let off = 0; off < v.byteLength; off += bs) {
      const lba = pos * this.#blocksPerIo + off / bs;
      if (v.getFloat64(off, true) !== lba || v.getUint32(off + 8, true) !== gen) return false;
      const fill = (lba * 31 + gen) & 0xff;
      // Every byte: --verify is for correctness, so no sampling.
      const word = (fill * 0x01010101) >>> 0;
      let i = off + 16;
      for (; i + 4 <= off + bs; i += 4) if (v.getUint32(i, true) !== word) return false;
      for (; i < off + bs; i++) if (b[i] !== fill) return false;
    }
    return true;
  }

  /** The device reports the end of the I/O in `slot`. */
  readonly onDone = (slot: number, ok: boolean): void => {
    const nowNs = performance.now() * 1e6;
    this.#clockNs[0] = nowNs;
    // Whole nanoseconds: a small integer crosses calls unboxed, a fraction would not.
    const ns = Math.round(nowNs - (this.#startNs[slot] as number));
    const r = this.result;
    this.#inFlight--;
    const pos = (this.#lba[slot] as number) / this.#blocksPerIo;
    if (!ok) r.errors++;
    else {
      r.ios++;
      r.bytes += this.#w.ioSize;
      r.latency.record(ns);
      if (this.#w.verify && this.#isWrite[slot] === 0 && !this.#check(slot, pos)) r.verifyErrors++;
    }
    if (this.#w.verify) this.#busy[pos] = 0;
    if (this.#stopping) {
      if (this.#inFlight === 0) this.#resolve?.();
      return;
    }
    this.#start(slot, true);
  };
}

/** The closing line, as the issue fixes it. */
export function totalLine(results: PerfResult[]): string {
  return summaryLine("Total", results);
}

/**
 * The same figures under another label (`summaryLine("queue 1", [r])` for a
 * per-queue line); errors count failed I/Os and verify mismatches together.
 */
export function summaryLine(label: string, results: PerfResult[]): string {
  const lat = new LatencyHistogram();
  let ios = 0, bytes = 0, errors = 0, seconds = 0;
  for (const r of results) {
    lat.merge(r.latency);
    ios += r.ios;
    bytes += r.bytes;
    errors += r.errors + r.verifyErrors;
    seconds = Math.max(seconds, r.seconds);
  }
  const us = (ns: number) => (ns / 1000).toFixed(1);
  const s = seconds > 0 ? seconds : 1;
  return `${label}: IOPS=${Math.round(ios / s)} MiB/s=${(bytes / s / 2 ** 20).toFixed(1)} avg_us=${
    us(lat.total > 0 ? lat.sumNs / lat.total : 0)
  } p50_us=${us(lat.quantileNs(0.5))} p99_us=${us(lat.quantileNs(0.99))} p999_us=${
    us(lat.quantileNs(0.999))
  } errors=${errors}`;
}

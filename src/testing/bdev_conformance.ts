/**
 * One conformance suite for every bdev module (as hono runs one router
 * suite against every router). A module's test file calls
 * {@link bdevConformance} with a factory that makes a fresh bdev.
 * @module
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import {
  type BdevChannel,
  BdevIo,
  BdevIoError,
  BdevIoStatus,
  BdevIoType,
  BdevRegistry,
  type IoThread,
  runIo,
} from "../bdev/mod.ts";

/** What a module's test supplies. */
export interface ConformanceTarget {
  /** Module name, for test names. */
  module: string;
  /** Makes a thread that runs pollers, and stops it. */
  startThread(): Promise<{ thread: IoThread; stop(): Promise<void> }>;
  /** Creates a fresh bdev of at least 4 MiB in `registry`; returns its name. */
  create(registry: BdevRegistry): Promise<string>;
  /** Removes what `create` made (the registry is thrown away after). */
  destroy(registry: BdevRegistry, name: string): Promise<void>;
  /** Per-channel pool size to use; small values exercise queueing. */
  ioPoolSize?: number;
}

/** A deterministic pattern: block `lba` of generation `gen`, never all zeroes. */
export function fillPattern(buf: Uint8Array, lba: number, blockSize: number, gen: number): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 0; off + 4 <= buf.byteLength; off += 4) {
    // Depends on the absolute position only, so overlapping writes agree.
    const block = lba + Math.floor(off / blockSize);
    const inBlock = off % blockSize;
    view.setUint32(off, (block * 2654435761 + inBlock * 40503 + gen * 97 + 1) >>> 0, true);
  }
}

function alignedBuffer(bytes: number, align = 4096): Uint8Array {
  const raw = new Uint8Array(bytes + align);
  const addr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(raw)));
  const skip = (align - (addr % align)) % align;
  return raw.subarray(skip, skip + bytes);
}

/** Registers the conformance tests for one module. */
export function bdevConformance(target: ConformanceTarget): void {
  const cases: [string, (ch: BdevChannel) => Promise<void>][] = [
    ["data written reads back, first and last blocks too", dataIntegrity],
    ["out-of-range I/O is rejected with a clear error", outOfRange],
    ["malformed requests are rejected", malformed],
    ["unmap reads back zeroes", unmapZeroes],
    ["write_zeroes reads back zeroes", writeZeroes],
    ["flush succeeds", flush],
    ["128 concurrent I/Os, more than the pool holds", concurrent],
    ["vectors crossing block boundaries", vectors],
  ];
  for (const [name, fn] of cases) {
    Deno.test(`bdev conformance [${target.module}]: ${name}`, async () => {
      const registry = new BdevRegistry({ ioPoolSize: target.ioPoolSize ?? 32 });
      const { thread, stop } = await target.startThread();
      const bdevName = await target.create(registry);
      const desc = registry.open(bdevName, true);
      const ch = desc.getIoChannel(thread);
      try {
        await fn(ch);
      } finally {
        ch.close();
        desc.close();
        await target.destroy(registry, bdevName);
        await stop();
      }
    });
  }
  Deno.test(`bdev conformance [${target.module}]: read-only descriptor refuses writes`, async () => {
    const registry = new BdevRegistry();
    const { thread, stop } = await target.startThread();
    const bdevName = await target.create(registry);
    const desc = registry.open(bdevName, false);
    const ch = desc.getIoChannel(thread);
    try {
      const buf = alignedBuffer(ch.bdev.blockSize);
      await runIo(ch, (io) => ch.read(io, buf, 0, 1));
      const err = await assertRejects(
        () => runIo(ch, (io) => ch.write(io, buf, 0, 1)),
        BdevIoError,
      );
      assertEquals(err.status, BdevIoStatus.ReadOnly);
    } finally {
      ch.close();
      desc.close();
      await target.destroy(registry, bdevName);
      await stop();
    }
  });
}

async function writeBlocks(
  ch: BdevChannel,
  lba: number,
  n: number,
  gen: number,
): Promise<Uint8Array> {
  const buf = alignedBuffer(n * ch.bdev.blockSize);
  fillPattern(buf, lba, ch.bdev.blockSize, gen);
  await runIo(ch, (io) => ch.write(io, buf, lba, n));
  return buf;
}

async function readBlocks(ch: BdevChannel, lba: number, n: number): Promise<Uint8Array> {
  const buf = alignedBuffer(n * ch.bdev.blockSize);
  buf.fill(0xa5);
  await runIo(ch, (io) => ch.read(io, buf, lba, n));
  return buf;
}

function assertZero(buf: Uint8Array, what: string): void {
  const i = buf.findIndex((b) => b !== 0);
  assert(i === -1, `${what}: byte ${i} is ${buf[i]}, expected zero`);
}

async function dataIntegrity(ch: BdevChannel): Promise<void> {
  const last = ch.bdev.numBlocks - 1;
  const spots: [number, number][] = [[0, 1], [1, 7], [last, 1], [last - 15, 16], [1000, 64]];
  for (const [lba, n] of spots) await writeBlocks(ch, lba, n, 1);
  for (const [lba, n] of spots) {
    const want = alignedBuffer(n * ch.bdev.blockSize);
    fillPattern(want, lba, ch.bdev.blockSize, 1);
    assertEquals(await readBlocks(ch, lba, n), want, `blocks ${lba}+${n}`);
  }
  // Overwrite part of a range and see both generations where they belong.
  await writeBlocks(ch, 1003, 2, 2);
  const got = await readBlocks(ch, 1000, 8);
  const bs = ch.bdev.blockSize;
  const want1 = alignedBuffer(8 * bs);
  fillPattern(want1, 1000, bs, 1);
  const want2 = alignedBuffer(2 * bs);
  fillPattern(want2, 1003, bs, 2);
  want1.set(want2, 3 * bs);
  assertEquals(got, want1);
}

async function outOfRange(ch: BdevChannel): Promise<void> {
  const n = ch.bdev.numBlocks;
  const buf = alignedBuffer(2 * ch.bdev.blockSize);
  const cases: [number, number][] = [[n, 1], [n - 1, 2], [Number.MAX_SAFE_INTEGER - 1, 1]];
  for (const [lba, count] of cases) {
    const err = await assertRejects(
      () => runIo(ch, (io) => ch.read(io, buf.subarray(0, count * ch.bdev.blockSize), lba, count)),
      BdevIoError,
    );
    assertEquals(err.status, BdevIoStatus.OutOfRange);
    assert(err.message.includes("beyond the end"), err.message);
  }
  const err = await assertRejects(() => runIo(ch, (io) => ch.unmap(io, n - 1, 2)), BdevIoError);
  assertEquals(err.status, BdevIoStatus.OutOfRange);
  const err2 = await assertRejects(() => runIo(ch, (io) => ch.read(io, buf, -1, 2)), BdevIoError);
  assertEquals(err2.status, BdevIoStatus.InvalidParam);
}

async function malformed(ch: BdevChannel): Promise<void> {
  const bs = ch.bdev.blockSize;
  const short = alignedBuffer(bs);
  // One block of buffer for two blocks of I/O.
  const err = await assertRejects(() => runIo(ch, (io) => ch.read(io, short, 0, 2)), BdevIoError);
  assertEquals(err.status, BdevIoStatus.InvalidParam);
  const err2 = await assertRejects(() => runIo(ch, (io) => ch.write(io, short, 0, 0)), BdevIoError);
  assertEquals(err2.status, BdevIoStatus.InvalidParam);
  // A busy request submitted again is a programming error and throws at once.
  const io = new BdevIo();
  ch.read(io, alignedBuffer(bs), 0, 1);
  let threw = false;
  try {
    ch.read(io, alignedBuffer(bs), 0, 1);
  } catch {
    threw = true;
  }
  assert(threw, "second submit of an in-flight BdevIo must throw");
  await new Promise<void>((resolve) => {
    io.onComplete = () => resolve();
    if (!io.inFlight) resolve();
  });
}

async function unmapZeroes(ch: BdevChannel): Promise<void> {
  if (!ch.bdev.ioTypeSupported(BdevIoType.Unmap)) return;
  await writeBlocks(ch, 0, 256, 3);
  await runIo(ch, (io) => ch.unmap(io, 10, 200));
  const got = await readBlocks(ch, 0, 256);
  const bs = ch.bdev.blockSize;
  assertZero(got.subarray(10 * bs, 210 * bs), "unmapped range");
  const want = alignedBuffer(10 * bs);
  fillPattern(want, 0, bs, 3);
  assertEquals(got.subarray(0, 10 * bs), want, "data before the unmapped range survives");
  const after = alignedBuffer(46 * bs);
  fillPattern(after, 210, bs, 3);
  assertEquals(got.subarray(210 * bs), after, "data after the unmapped range survives");
}

async function writeZeroes(ch: BdevChannel): Promise<void> {
  if (!ch.bdev.ioTypeSupported(BdevIoType.WriteZeroes)) return;
  await writeBlocks(ch, 300, 40, 4);
  await runIo(ch, (io) => ch.writeZeroes(io, 301, 38));
  const got = await readBlocks(ch, 300, 40);
  const bs = ch.bdev.blockSize;
  assertZero(got.subarray(bs, 39 * bs), "zeroed range");
  const first = alignedBuffer(bs);
  fillPattern(first, 300, bs, 4);
  assertEquals(got.subarray(0, bs), first);
}

async function flush(ch: BdevChannel): Promise<void> {
  await writeBlocks(ch, 5, 3, 5);
  await runIo(ch, (io) => ch.flush(io));
  await runIo(ch, (io) => ch.flush(io, 5, 3));
}

async function concurrent(ch: BdevChannel): Promise<void> {
  const depth = 128;
  const bs = ch.bdev.blockSize;
  const bufs = Array.from({ length: depth }, () => alignedBuffer(bs));
  const stride = Math.max(1, Math.floor(ch.bdev.numBlocks / depth));
  const lbaOf = (i: number) => (i * stride + (i % 7)) % ch.bdev.numBlocks;
  bufs.forEach((b, i) => fillPattern(b, lbaOf(i), bs, 6));
  let maxInFlight = 0;
  await Promise.all(bufs.map((b, i) =>
    runIo(ch, (io) => {
      ch.write(io, b, lbaOf(i), 1);
      maxInFlight = Math.max(maxInFlight, ch.inFlight);
    })
  ));
  assert(maxInFlight <= ch.poolSize, `in flight ${maxInFlight} exceeded pool ${ch.poolSize}`);
  const reads = Array.from({ length: depth }, () => alignedBuffer(bs));
  await Promise.all(reads.map((b, i) => runIo(ch, (io) => ch.read(io, b, lbaOf(i), 1))));
  reads.forEach((b, i) => assertEquals(b, bufs[i], `block ${lbaOf(i)}`));
  // Modules that finish inside submit free their slot at once; the others
  // fill the pool, and then the overflow must have been queued, not failed.
  if (maxInFlight === ch.poolSize) assert(ch.stats.queued > 0, "a full pool must queue I/Os");
  assertEquals(ch.stats.errors, 0);
}

async function vectors(ch: BdevChannel): Promise<void> {
  const bs = ch.bdev.blockSize;
  const n = 4;
  const whole = alignedBuffer(n * bs);
  fillPattern(whole, 2000, bs, 7);
  // Uneven pieces that straddle block boundaries.
  const cuts = [0, 100, bs + 12, 2 * bs + 512, 2 * bs + 513, n * bs];
  const pieces: Uint8Array[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) pieces.push(whole.slice(cuts[i], cuts[i + 1]));
  await runIo(ch, (io) => ch.writev(io, pieces, pieces.length, 2000, n));
  const back = await readBlocks(ch, 2000, n);
  assertEquals(back, whole);
  // Read back through differently cut vectors.
  const cuts2 = [0, bs - 1, bs + 1, 3 * bs, n * bs];
  const rpieces: Uint8Array[] = [];
  for (let i = 0; i + 1 < cuts2.length; i++) {
    rpieces.push(new Uint8Array((cuts2[i + 1] as number) - (cuts2[i] as number)));
  }
  await runIo(ch, (io) => ch.readv(io, rpieces, rpieces.length, 2000, n));
  let off = 0;
  for (const p of rpieces) {
    assertEquals(p, whole.subarray(off, off + p.byteLength));
    off += p.byteLength;
  }
}

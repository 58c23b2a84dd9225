import { bdevConformance, fillPattern } from "../../testing/bdev_conformance.ts";
import { startReactor } from "../../testing/reactor_thread.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../testing/assert.ts";
import {
  type BdevChannel,
  type BdevDesc,
  BdevError,
  BdevInvalidError,
  BdevIoError,
  BdevIoStatus,
  BdevRegistry,
  type IoThread,
  runIo,
} from "../../bdev/mod.ts";
import { Reactor, type ReactorCqeHandler } from "../../reactor/mod.ts";
import { createMallocBdev } from "../malloc/malloc.ts";
import { createFileBdev, deleteFileBdev, type FileCreateParams } from "./file.ts";

const MiB = 1 << 20;
/** The repo's ./var: a real disk filesystem (ext4 or overlay), ignored by git. */
const DISK_DIR = new URL("../../../var/file_bdev_test/", import.meta.url).pathname;
const SHM_DIR = "/dev/shm";
const hasShm = (() => {
  try {
    return Deno.statSync(SHM_DIR).isDirectory;
  } catch {
    return false;
  }
})();

/** A fresh image file of `bytes` bytes in `dir`; sparse unless `fill` is given. */
async function makeImage(dir: string, bytes: number, fill?: number): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const path = await Deno.makeTempFile({ dir, prefix: "file_bdev_", suffix: ".img" });
  if (fill === undefined) {
    await Deno.truncate(path, bytes);
  } else {
    await Deno.writeFile(path, new Uint8Array(bytes).fill(fill));
  }
  return path;
}

/** A Reactor whose CQE results a test can rewrite: fault injection at the kernel boundary. */
class FaultyReactor extends Reactor {
  /** Given each CQE result of handlers registered later; returns the result to deliver. */
  fault: ((res: number) => number) | null = null;

  override registerCqeHandler(handler: ReactorCqeHandler): number {
    return super.registerCqeHandler((tag, res, flags) =>
      handler(tag, this.fault === null ? res : this.fault(res), flags)
    );
  }
}

function startReactorWith<R extends Reactor>(
  make: () => R,
): Promise<{ thread: R; stop(): Promise<void> }> {
  const reactor = make();
  const running = reactor.run();
  return Promise.resolve({
    thread: reactor,
    async stop() {
      await reactor.stop();
      await running;
      reactor.close();
    },
  });
}

/** Conformance target on a fresh image in `dir`; the image is removed by destroy. */
function fileTarget(
  module: string,
  dir: string,
  extra: Partial<FileCreateParams> = {},
  startThread: () => Promise<{ thread: IoThread; stop(): Promise<void> }> = startReactor,
  ioPoolSize?: number,
) {
  const paths = new Map<string, string>();
  return {
    module,
    startThread,
    ioPoolSize,
    async create(r: BdevRegistry): Promise<string> {
      const path = await makeImage(dir, 8 * MiB);
      const name = createFileBdev(r, { name: "F0", filename: path, ...extra });
      paths.set(name, path);
      const info = r.get(name).toJSON().driver_specific as { file: { direct_io: boolean } };
      if (extra.direct !== false && dir === DISK_DIR) directSeen.add(info.file.direct_io);
      return name;
    },
    async destroy(r: BdevRegistry, name: string): Promise<void> {
      await deleteFileBdev(r, name);
      const path = paths.get(name);
      if (path !== undefined) await Deno.remove(path);
    },
  };
}

/** direct_io values seen on ./var, reported at the end of the run. */
const directSeen = new Set<boolean>();

bdevConformance(fileTarget("file on ./var (O_DIRECT when the fs allows)", DISK_DIR));
bdevConformance(fileTarget("file on ./var, 4K blocks", DISK_DIR, { blockSize: 4096 }));
bdevConformance(fileTarget("file on ./var, buffered", DISK_DIR, { direct: false }));
if (hasShm) bdevConformance(fileTarget("file on tmpfs /dev/shm", SHM_DIR));
// A 4-entry SQ ring with 32 I/Os in flight: the SQ-full queue must carry the load.
bdevConformance(fileTarget(
  "file, 4-entry SQ ring",
  DISK_DIR,
  {},
  () => startReactorWith(() => new Reactor({ entries: 4 })),
  32,
));
// Every transfer comes back short (and misaligned): the remainder must be continued.
bdevConformance(fileTarget("file, short transfers", DISK_DIR, {}, () =>
  startReactorWith(() => {
    const r = new FaultyReactor();
    r.fault = (res) => (res > 1000 ? 1000 : res);
    return r;
  })));

// A block device: a loop device over an image, when this machine lets us make one.
const loopAvailable = (() => {
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return false;
  try {
    Deno.statSync("/dev/loop-control");
    return new Deno.Command("losetup", { args: ["-f"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

async function losetup(image: string, sectorSize = 512): Promise<string> {
  const out = await new Deno.Command("losetup", {
    args: ["-f", "--show", "--sector-size", String(sectorSize), image],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`losetup: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim();
}

async function loDetach(dev: string): Promise<void> {
  await new Deno.Command("losetup", { args: ["-d", dev] }).output();
}

if (loopAvailable) {
  const loops = new Map<string, { dev: string; image: string }>();
  bdevConformance({
    module: "file on a block device (loop)",
    startThread: startReactor,
    async create(r) {
      const image = await makeImage(DISK_DIR, 8 * MiB);
      const dev = await losetup(image);
      const name = createFileBdev(r, { name: "L0", filename: dev });
      loops.set(name, { dev, image });
      return name;
    },
    async destroy(r, name) {
      await deleteFileBdev(r, name);
      const l = loops.get(name);
      if (l !== undefined) {
        await loDetach(l.dev);
        await Deno.remove(l.image);
      }
    },
  });
}

/** Runs `fn` with a writable channel on a file bdev over `path`. */
async function withBdev(
  params: FileCreateParams,
  fn: (ch: BdevChannel, r: BdevRegistry) => Promise<void>,
  thread?: { thread: IoThread; stop(): Promise<void> },
): Promise<void> {
  const t = thread ?? await startReactor();
  const r = new BdevRegistry({ ioPoolSize: 16 });
  let desc: BdevDesc | undefined;
  let ch: BdevChannel | undefined;
  try {
    createFileBdev(r, params);
    desc = r.open(params.name, params.readonly !== true);
    ch = desc.getIoChannel(t.thread);
    await fn(ch, r);
  } finally {
    ch?.close();
    desc?.close();
    if (r.has(params.name)) await deleteFileBdev(r, params.name);
    await t.stop();
  }
}

function pattern(lba: number, blocks: number, gen: number, bs = 512): Uint8Array {
  const buf = new Uint8Array(blocks * bs);
  fillPattern(buf, lba, bs, gen);
  return buf;
}

function info(r: BdevRegistry, name: string): Record<string, unknown> {
  const ds = r.get(name).toJSON().driver_specific as Record<string, Record<string, unknown>>;
  return ds.file ?? {};
}

Deno.test("file bdev: O_DIRECT on ./var is reported, buffered on tmpfs", async () => {
  const disk = await makeImage(DISK_DIR, MiB);
  const r = new BdevRegistry();
  try {
    createFileBdev(r, { name: "D", filename: disk });
    const d = info(r, "D");
    console.log(`  ./var: direct_io=${d.direct_io} ${d.direct_io_off_reason ?? ""}`);
    if (d.direct_io === true) {
      assertEquals(r.get("D").requiredAlignment, d.dio_offset_align);
    } else {
      assertEquals(r.get("D").requiredAlignment, 1);
    }
    if (hasShm) {
      const shm = await makeImage(SHM_DIR, MiB);
      try {
        createFileBdev(r, { name: "S", filename: shm });
        assertEquals(info(r, "S").direct_io, false);
        assert(typeof info(r, "S").direct_io_off_reason === "string");
        await deleteFileBdev(r, "S");
      } finally {
        await Deno.remove(shm);
      }
    }
    createFileBdev(r, { name: "B", filename: disk, direct: false });
    assertEquals(info(r, "B").direct_io, false);
  } finally {
    for (const b of r.list()) await deleteFileBdev(r, b.name);
    await Deno.remove(disk);
  }
});

Deno.test("file bdev: data lands in the file at the right offset", async () => {
  const path = await makeImage(DISK_DIR, 4 * MiB);
  try {
    await withBdev({ name: "F", filename: path }, async (ch) => {
      const a = pattern(7, 3, 1);
      await runIo(ch, (io) => ch.write(io, a, 7, 3));
      // Unaligned vectors go through the buffered descriptor: same file, same place.
      const b = pattern(4000, 2, 2);
      const parts = [b.slice(0, 100), b.slice(100, 700), b.slice(700)];
      await runIo(ch, (io) => ch.writev(io, parts, 3, 4000, 2));
      await runIo(ch, (io) => ch.flush(io));
      const file = await Deno.readFile(path);
      assertEquals(file.byteLength, 4 * MiB);
      assertEquals(file.subarray(7 * 512, 10 * 512), a);
      assertEquals(file.subarray(4000 * 512, 4002 * 512), b);
      assert(file.subarray(0, 7 * 512).every((x) => x === 0), "bytes before the write stay zero");
      assert(file.subarray(10 * 512, 11 * 512).every((x) => x === 0), "bytes after too");
      // And what the file holds reads back through the bdev.
      const onDisk = pattern(100, 4, 9);
      const f = await Deno.open(path, { write: true });
      await f.seek(100 * 512, Deno.SeekMode.Start);
      await f.write(onDisk);
      await f.syncData();
      f.close();
      const got = new Uint8Array(4 * 512);
      await runIo(ch, (io) => ch.read(io, got, 100, 4));
      assertEquals(got, onDisk);
    });
  } finally {
    await Deno.remove(path);
  }
});

for (const [where, dir] of [["./var", DISK_DIR], ["tmpfs", SHM_DIR]] as const) {
  Deno.test({
    name: `file bdev: unmap punches a hole in the file (${where})`,
    ignore: dir === SHM_DIR && !hasShm,
    async fn() {
      const path = await makeImage(dir, 4 * MiB, 0x5a);
      try {
        const before = (await Deno.stat(path)).blocks ?? 0;
        assert(before >= (4 * MiB) / 512, `image not fully allocated: ${before} blocks`);
        await withBdev({ name: "F", filename: path }, async (ch) => {
          await runIo(ch, (io) => ch.unmap(io, 2048, 2048)); // 1 MiB at 1 MiB
          await runIo(ch, (io) => ch.flush(io));
        });
        const st = await Deno.stat(path);
        assertEquals(st.size, 4 * MiB, "unmap keeps the size");
        const freed = before - (st.blocks ?? 0);
        assert(freed >= 2048 - 16, `expected ~2048 512-byte blocks freed, got ${freed}`);
        const file = await Deno.readFile(path);
        assert(file.subarray(MiB, 2 * MiB).every((x) => x === 0), "the hole reads zeroes");
        assertEquals(file[MiB - 1], 0x5a);
        assertEquals(file[2 * MiB], 0x5a);
      } finally {
        await Deno.remove(path);
      }
    },
  });
}

Deno.test("file bdev: bad files and parameters are refused with clear errors", async () => {
  const r = new BdevRegistry();
  const missing = `${DISK_DIR}does-not-exist.img`;
  const e = assertThrows(
    () => createFileBdev(r, { name: "F", filename: missing }),
    BdevError,
    missing,
  );
  assert(e.message.includes("ENOENT"), e.message);
  assertEquals(e.code, -2);

  const odd = await makeImage(DISK_DIR, 1000);
  const odd4k = await makeImage(DISK_DIR, 6144);
  const tiny = await makeImage(DISK_DIR, 0);
  try {
    assertThrows(
      () => createFileBdev(r, { name: "F", filename: odd }),
      BdevInvalidError,
      "(1000 bytes) is not a multiple of block_size 512",
    );
    assertThrows(
      () => createFileBdev(r, { name: "F", filename: odd4k, blockSize: 4096 }),
      BdevInvalidError,
      "not a multiple of block_size 4096",
    );
    assertThrows(
      () => createFileBdev(r, { name: "F", filename: tiny }),
      BdevInvalidError,
      "smaller than one block",
    );
    assertThrows(
      () => createFileBdev(r, { name: "F", filename: odd4k, blockSize: 1000 }),
      BdevInvalidError,
      "block_size",
    );
    assertThrows(
      () => createFileBdev(r, { name: "bad name", filename: odd4k }),
      BdevInvalidError,
      "bdev name",
    );
    assertThrows(
      () => createFileBdev(r, { name: "F", filename: "" }),
      BdevInvalidError,
      "filename",
    );
    assertThrows(
      () => createFileBdev(r, { name: "F", filename: DISK_DIR }),
      BdevError,
      "is a directory",
    );
    assertThrows(
      () => createFileBdev(r, { name: "F", filename: "/dev/null" }),
      BdevInvalidError,
      "not a regular file or a block device",
    );
    // Nothing half-made stays behind, and the name is still free.
    assertEquals(r.list().length, 0);
    createFileBdev(r, { name: "F", filename: odd4k });
    assertEquals(r.get("F").numBlocks, 12);
    createMallocBdev(r, { name: "M", numBlocks: 8, blockSize: 512 });
    await assertRejects(() => deleteFileBdev(r, "M"), BdevInvalidError, "not a file bdev");
    await deleteFileBdev(r, "F");
  } finally {
    for (const p of [odd, odd4k, tiny]) await Deno.remove(p);
  }
});

Deno.test("file bdev: a thread that is not a Reactor is refused", async () => {
  const path = await makeImage(DISK_DIR, MiB);
  const r = new BdevRegistry();
  try {
    createFileBdev(r, { name: "F", filename: path });
    const desc = r.open("F", true);
    const notReactor: IoThread = { addPoller() {}, removePoller() {}, wake() {} };
    assertThrows(() => desc.getIoChannel(notReactor), Error, "needs a Reactor");
    desc.close();
    await deleteFileBdev(r, "F");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("file bdev: config and info", async () => {
  const path = await makeImage(DISK_DIR, MiB);
  const r = new BdevRegistry();
  try {
    const uuid = "0b4e1a7c-1f2d-4c3b-9a8e-7d6c5b4a3f21";
    createFileBdev(r, { name: "F", filename: path, blockSize: 4096, uuid });
    const b = r.get("F");
    assertEquals(b.numBlocks, 256);
    assertEquals(b.writeConfigJson(), {
      method: "bdev_file_create",
      params: { name: "F", filename: path, block_size: 4096, uuid },
    });
    const j = b.toJSON();
    assertEquals(j.product_name, "File disk");
    assertEquals(j.write_cache, true);
    const i = info(r, "F");
    assertEquals(i.filename, path);
    assertEquals(i.block_device, false);
    assertEquals(i.fallocate_punch_hole, true);
    createFileBdev(r, { name: "G", filename: path, readonly: true });
    assertEquals(r.get("G").writeConfigJson()?.params.readonly, true);
    assertEquals(r.get("G").writeConfigJson()?.params.block_size, 512);
    assert(r.get("G").uuid !== uuid);
  } finally {
    for (const b of r.list()) await deleteFileBdev(r, b.name);
    await Deno.remove(path);
  }
});

Deno.test("file bdev: readonly serves reads only", async () => {
  const path = await makeImage(DISK_DIR, MiB, 3);
  try {
    await Deno.chmod(path, 0o444);
    await withBdev({ name: "F", filename: path, readonly: true }, async (ch) => {
      const buf = new Uint8Array(512);
      await runIo(ch, (io) => ch.read(io, buf, 5, 1));
      assert(buf.every((x) => x === 3));
    });
    const r = new BdevRegistry();
    createFileBdev(r, { name: "F", filename: path, readonly: true });
    const desc = r.open("F", true);
    const t = await startReactor();
    const ch = desc.getIoChannel(t.thread);
    const e = await assertRejects(
      () => runIo(ch, (io) => ch.write(io, new Uint8Array(512), 0, 1)),
      BdevIoError,
    );
    assertEquals(e.status, BdevIoStatus.NotSupported);
    await runIo(ch, (io) => ch.flush(io)); // a writable descriptor may flush a read-only file
    ch.close();
    desc.close();
    await deleteFileBdev(r, "F");
    await t.stop();
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("file bdev: an error CQE fails the I/O with its errno", async () => {
  const path = await makeImage(DISK_DIR, MiB);
  const t = await startReactorWith(() => new FaultyReactor());
  const reactor = t.thread;
  try {
    await withBdev({ name: "F", filename: path }, async (ch) => {
      const buf = pattern(3, 1, 1);
      let n = 0;
      reactor.fault = (res) => (n++ === 0 ? -5 : res); // EIO once
      const e = await assertRejects(() => runIo(ch, (io) => ch.write(io, buf, 3, 1)), BdevIoError);
      assertEquals(e.status, BdevIoStatus.Failed);
      assert(e.message.includes("errno 5"), e.message);
      assertEquals(e.code, -5);
      n = 0;
      reactor.fault = (res) => (n++ === 0 ? -28 : res); // ENOSPC on a flush
      const e2 = await assertRejects(() => runIo(ch, (io) => ch.flush(io)), BdevIoError);
      assertEquals(e2.code, -28);
      reactor.fault = null;
      // The channel goes on working after failures.
      await runIo(ch, (io) => ch.write(io, buf, 3, 1));
      const back = new Uint8Array(512);
      await runIo(ch, (io) => ch.read(io, back, 3, 1));
      assertEquals(back, buf);
      assertEquals(ch.stats.errors, 2);
    }, t);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("file bdev: a read past the end of a shrunk file fails with EIO", async () => {
  const path = await makeImage(DISK_DIR, 2 * MiB, 1);
  try {
    await withBdev({ name: "F", filename: path }, async (ch) => {
      await Deno.truncate(path, MiB);
      const buf = new Uint8Array(4096);
      const e = await assertRejects(
        () => runIo(ch, (io) => ch.read(io, buf, (2 * MiB) / 512 - 8, 8)),
        BdevIoError,
      );
      assertEquals(e.status, BdevIoStatus.Failed);
      assertEquals(e.code, -5);
      // Straddling the new end: the first part reads, then EOF.
      const e2 = await assertRejects(
        () => runIo(ch, (io) => ch.read(io, buf, MiB / 512 - 4, 8)),
        BdevIoError,
      );
      assertEquals(e2.code, -5);
      await runIo(ch, (io) => ch.read(io, buf, 0, 8));
      assert(buf.every((x) => x === 1));
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("file bdev: without fallocate support, zeroes are written", async () => {
  const path = await makeImage(DISK_DIR, MiB, 0x77);
  const t = await startReactorWith(() => new FaultyReactor());
  const reactor = t.thread;
  try {
    await withBdev({ name: "F", filename: path }, async (ch, r) => {
      // ZERO_RANGE, then PUNCH_HOLE answer EOPNOTSUPP: the module must write zeroes.
      let n = 0;
      reactor.fault = (res) => (n++ < 2 ? -95 : res);
      await runIo(ch, (io) => ch.writeZeroes(io, 10, 20));
      assertEquals(n > 2, true, "zero writes followed the two refusals");
      const i = info(r, "F");
      assertEquals(i.fallocate_zero_range, false);
      assertEquals(i.fallocate_punch_hole, false);
      reactor.fault = null;
      // Unmap now goes straight to writing zeroes; a large one takes several writes.
      await runIo(ch, (io) => ch.unmap(io, 40, 1500));
      const got = new Uint8Array(MiB);
      await runIo(ch, (io) => ch.read(io, got, 0, 2048));
      assert(got.subarray(10 * 512, 30 * 512).every((x) => x === 0), "written zeroes");
      assert(got.subarray(40 * 512, 1540 * 512).every((x) => x === 0), "unmapped zeroes");
      assertEquals(got[10 * 512 - 1], 0x77);
      assertEquals(got[30 * 512], 0x77);
      assertEquals(got[1540 * 512], 0x77);
    }, t);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test({
  name: "file bdev: block device size and logical block size (loop, 4K sectors)",
  ignore: !loopAvailable,
  async fn() {
    const image = await makeImage(DISK_DIR, 4 * MiB, 0x11);
    const dev = await losetup(image, 4096);
    const r = new BdevRegistry();
    try {
      createFileBdev(r, { name: "L", filename: dev });
      const b = r.get("L");
      assertEquals(b.blockSize, 4096, "defaults to the logical block size");
      assertEquals(b.numBlocks, 1024);
      const i = info(r, "L");
      assertEquals(i.block_device, true);
      assertEquals(i.logical_block_size, 4096);
      assertEquals(b.productName, "File disk (block device)");
      if (i.direct_io === true) {
        assertThrows(
          () => createFileBdev(r, { name: "L5", filename: dev, blockSize: 512 }),
          BdevInvalidError,
          "direct I/O alignment",
        );
      }
      await deleteFileBdev(r, "L");
      await withBdev({ name: "L", filename: dev }, async (ch) => {
        const a = pattern(3, 2, 5, 4096);
        await runIo(ch, (io) => ch.write(io, a, 3, 2));
        await runIo(ch, (io) => ch.unmap(io, 100, 10));
        await runIo(ch, (io) => ch.flush(io));
        const got = new Uint8Array(2 * 4096);
        await runIo(ch, (io) => ch.read(io, got, 3, 2));
        assertEquals(got, a);
        const z = new Uint8Array(10 * 4096).fill(9);
        await runIo(ch, (io) => ch.read(io, z, 100, 10));
        assert(z.every((x) => x === 0), "unmapped blocks read zeroes");
      });
    } finally {
      for (const b of r.list()) await deleteFileBdev(r, b.name);
      await loDetach(dev);
      await Deno.remove(image);
    }
  },
});

Deno.test("file bdev: direct_io seen on ./var (report)", () => {
  // Informational: which path the conformance runs on ./var took.
  console.log(`  ./var conformance ran with direct_io = ${[...directSeen].join(", ")}`);
});

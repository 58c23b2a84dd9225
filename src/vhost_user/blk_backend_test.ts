/**
 * The vhost-user-blk backend's multi-range DISCARD / WRITE_ZEROES and its
 * memory hot-plug (ADD_MEM_REG / REM_MEM_REG, SET_MEM_TABLE while running),
 * driven in this process through the TypeScript front-end over a real
 * AF_UNIX socket (server, session, backend, malloc or error bdev, one
 * reactor).
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { waitFor } from "../testing/wait.ts";
import { type DriverBuffer, VirtioDriver } from "../testing/virtio_driver.ts";
import { BdevRegistry } from "../bdev/mod.ts";
import { createMallocBdev } from "../bdev_modules/malloc/malloc.ts";
import { createErrorBdev, injectError } from "../bdev_modules/error/error.ts";
import {
  featureMask,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_F_VERSION_1,
} from "../virtio/blk.ts";
import { serveVhostBlk } from "../testing/vhost_blk_server.ts";
import {
  FRONTEND_PROTOCOL_FEATURES,
  FrontendMemory,
  VhostUserFrontend,
  VhostUserFrontendError,
} from "./frontend.ts";
import {
  decodeU64,
  encodeConfig,
  encodeSingleMemoryRegion,
  featureBit,
  type MemoryRegion,
  VhostUserProtocolFeature as P,
  VhostUserRequest as R,
} from "./messages.ts";

const SECTOR = 512;
const QUEUE_SIZE = 32;

interface RigOptions {
  blockSize?: number;
  numBlocks?: number;
  /** Serve "EE_M0", an error bdev over M0, to inject failures and delays. */
  errorBdev?: boolean;
}

async function rig(o: RigOptions = {}) {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vhost-blk-" });
  const bdevs = new BdevRegistry();
  const blockSize = o.blockSize ?? 512;
  createMallocBdev(bdevs, { name: "M0", numBlocks: o.numBlocks ?? 2048, blockSize });
  const name = o.errorBdev ? createErrorBdev(bdevs, "M0") : "M0";
  const path = `${dir}/vhost.sock`;
  const server = await serveVhostBlk({ path, registry: bdevs, bdevName: name, numQueues: 1 });
  const logs = server.logs;
  const memories: FrontendMemory[] = [];
  let fe: VhostUserFrontend | null = null;
  return {
    path,
    logs,
    bdevs,
    name,
    /** Guest memory that is closed at the end. */
    memory(size: number, gpaBase: number): FrontendMemory {
      const m = FrontendMemory.create(size, gpaBase);
      memories.push(m);
      return m;
    },
    async connect(protocol = FRONTEND_PROTOCOL_FEATURES): Promise<VhostUserFrontend> {
      fe = VhostUserFrontend.connect(path);
      await fe.negotiate(
        featureMask(VIRTIO_F_VERSION_1, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES),
        protocol,
      );
      return fe;
    },
    /** Connects, shares one region of `size` bytes at GPA 1 MiB, starts queue 0 in it. */
    async connectQueue(size: number): Promise<{ fe: VhostUserFrontend; d: VirtioDriver }> {
      const fe = await this.connect();
      const mem = this.memory(size, 0x10_0000);
      await fe.setMemTable([mem]);
      return { fe, d: await startQueue(fe, mem) };
    },
    async stop() {
      fe?.close();
      await server.stop();
      for (const m of memories) m.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A driver whose rings are at the start of `mem`, started as queue 0. */
async function startQueue(fe: VhostUserFrontend, mem: FrontendMemory): Promise<VirtioDriver> {
  const d = new VirtioDriver({
    queueSize: QUEUE_SIZE,
    bytes: mem.bytes,
    gpaBase: mem.gpaBase,
    uva: mem.uva,
  });
  await fe.setupQueue(0, mem, {
    size: d.size,
    descAddr: d.descAddr,
    availAddr: d.availAddr,
    usedAddr: d.usedAddr,
  });
  return d;
}

function ranges(...rs: [number, number, number][]): Uint8Array {
  const b = new Uint8Array(16 * rs.length);
  const v = new DataView(b.buffer);
  rs.forEach(([sector, n, flags], i) => {
    v.setBigUint64(16 * i, BigInt(sector), true);
    v.setUint32(16 * i + 8, n, true);
    v.setUint32(16 * i + 12, flags, true);
  });
  return b;
}

/** Sends one request and waits for it; returns its status byte and used length. */
async function io(
  fe: VhostUserFrontend,
  d: VirtioDriver,
  type: number,
  sector: number,
  data: DriverBuffer[],
): Promise<{ status: number; len: number; data: { gpa: number; len: number }[] }> {
  const before = d.usedIdx();
  const r = d.addBlkRequest({ type, sector, data });
  fe.kick(0);
  await waitFor(() => d.usedIdx() !== before, `request type ${type} at ${sector} is used`);
  const used = d.readUsed();
  assertEquals(used.length, 1);
  assertEquals(used[0]?.id, r.head);
  return { status: d.read(r.status, 1)[0] ?? -1, len: used[0]?.len ?? -1, data: r.data };
}

function pattern(bytes: number, seed: number): Uint8Array {
  return new Uint8Array(bytes).map((_, i) => ((i >> 9) * 31 + i * 7 + seed) & 0xff | 1);
}

async function readSectors(
  fe: VhostUserFrontend,
  d: VirtioDriver,
  sector: number,
  n: number,
): Promise<Uint8Array> {
  const r = await io(fe, d, VIRTIO_BLK_T_IN, sector, [{ len: n * SECTOR, writable: true }]);
  assertEquals(r.status, VIRTIO_BLK_S_OK);
  return d.read(r.data[0]?.gpa ?? 0, n * SECTOR);
}

/** `expect` with the given sector ranges zeroed. */
function zeroed(expect: Uint8Array, ...rs: [number, number][]): Uint8Array {
  const out = expect.slice();
  for (const [s, n] of rs) out.fill(0, s * SECTOR, (s + n) * SECTOR);
  return out;
}

Deno.test("vhost-blk: WRITE_ZEROES and DISCARD with several ranges", async () => {
  const r = await rig();
  try {
    const { fe, d } = await r.connectQueue(4 << 20);
    const data = pattern(64 * SECTOR, 1);
    const write = () =>
      io(fe, d, VIRTIO_BLK_T_OUT, 0, [{ len: data.length, writable: false, data }]);
    assertEquals((await write()).status, VIRTIO_BLK_S_OK);

    // Four ranges, one of them empty, one with UNMAP (allowed on WRITE_ZEROES).
    const wz = await io(fe, d, VIRTIO_BLK_T_WRITE_ZEROES, 0, [{
      len: 64,
      writable: false,
      data: ranges([0, 8, 0], [16, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP], [30, 0, 0], [40, 4, 0]),
    }]);
    assertEquals([wz.status, wz.len], [VIRTIO_BLK_S_OK, 1]);
    assertEquals(await readSectors(fe, d, 0, 64), zeroed(data, [0, 8], [16, 8], [40, 4]));

    // The most ranges the device offers (max_discard_seg 16), split over two descriptors.
    assertEquals((await write()).status, VIRTIO_BLK_S_OK);
    const sixteen = ranges(
      ...Array.from({ length: 16 }, (_, i): [number, number, number] => [i * 4, 1 + (i % 3), 0]),
    );
    const disc = await io(fe, d, VIRTIO_BLK_T_DISCARD, 0, [
      { len: 80, writable: false, data: sixteen.subarray(0, 80) },
      { len: 176, writable: false, data: sixteen.subarray(80) },
    ]);
    assertEquals(disc.status, VIRTIO_BLK_S_OK);
    assertEquals(
      await readSectors(fe, d, 0, 64),
      zeroed(data, ...Array.from({ length: 16 }, (_, i): [number, number] => [i * 4, 1 + (i % 3)])),
    );

    // Refused requests change nothing, even their valid ranges.
    assertEquals((await write()).status, VIRTIO_BLK_S_OK);
    const refused: [string, number, Uint8Array, number][] = [
      [
        "17 ranges",
        VIRTIO_BLK_T_DISCARD,
        ranges(...Array.from({ length: 17 }, (_, i): [number, number, number] => [i, 1, 0])),
        VIRTIO_BLK_S_UNSUPP,
      ],
      [
        "UNMAP on a discard range",
        VIRTIO_BLK_T_DISCARD,
        ranges([0, 8, 0], [8, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP]),
        VIRTIO_BLK_S_UNSUPP,
      ],
      [
        "a reserved flag",
        VIRTIO_BLK_T_WRITE_ZEROES,
        ranges([0, 8, 0], [8, 8, 2]),
        VIRTIO_BLK_S_UNSUPP,
      ],
      [
        "a range past the capacity",
        VIRTIO_BLK_T_WRITE_ZEROES,
        ranges([0, 8, 0], [8, 8, 0], [2040, 16, 0]),
        VIRTIO_BLK_S_IOERR,
      ],
      [
        "a range starting past 2^53 sectors",
        VIRTIO_BLK_T_WRITE_ZEROES,
        ranges([0, 8, 0], [2 ** 53, 1, 0]),
        VIRTIO_BLK_S_IOERR,
      ],
    ];
    for (const [what, type, payload, status] of refused) {
      const res = await io(fe, d, type, 0, [
        { len: payload.length, writable: false, data: payload },
      ]);
      assertEquals(res.status, status, what);
      assertEquals(await readSectors(fe, d, 0, 64), data, `${what}: nothing changed`);
    }
  } finally {
    await r.stop();
  }
});

Deno.test("vhost-blk: more multi-range requests at once than the range I/O pool holds", async () => {
  const r = await rig();
  try {
    const { fe, d } = await r.connectQueue(4 << 20);
    const data = pattern(256 * SECTOR, 2);
    const w = await io(fe, d, VIRTIO_BLK_T_OUT, 0, [{
      len: data.length,
      writable: false,
      data,
    }]);
    assertEquals(w.status, VIRTIO_BLK_S_OK);
    // 10 requests (3 descriptors each: the 32-entry table holds them all) of 16 ranges, 15 of
    // one sector and an empty one, published together: 140 extra range I/Os wanted, 120 in the
    // pool; the rest go out one after another on each request's own I/O.
    const heads: { head: number; status: number }[] = [];
    const zero: [number, number][] = [];
    const before = d.usedIdx(); // before publishing: the backend may take requests at once
    for (let k = 0; k < 10; k++) {
      const rs = Array.from({ length: 16 }, (_, i): [number, number, number] => {
        const sector = (k * 16 + i) % 256;
        if (i !== 7) zero.push([sector, 1]);
        return [sector, i !== 7 ? 1 : 0, 0];
      });
      const rq = d.addBlkRequest({
        type: k % 2 === 0 ? VIRTIO_BLK_T_DISCARD : VIRTIO_BLK_T_WRITE_ZEROES,
        sector: 0,
        data: [{ len: 256, writable: false, data: ranges(...rs) }],
      });
      heads.push(rq);
    }
    fe.kick(0);
    await waitFor(() => ((d.usedIdx() - before) & 0xffff) === 10, "10 range requests are used");
    d.readUsed();
    for (const h of heads) assertEquals(d.read(h.status, 1)[0], VIRTIO_BLK_S_OK);
    assertEquals(await readSectors(fe, d, 0, 256), zeroed(data, ...zero));
  } finally {
    await r.stop();
  }
});

Deno.test("vhost-blk: one failed range fails the request after all its ranges are done", async () => {
  const r = await rig({ errorBdev: true });
  try {
    const { fe, d } = await r.connectQueue(4 << 20);
    const data = pattern(64 * SECTOR, 3);
    const w = await io(fe, d, VIRTIO_BLK_T_OUT, 0, [{ len: data.length, writable: false, data }]);
    assertEquals(w.status, VIRTIO_BLK_S_OK);
    // The first unmap fails; the other two ranges still run and the status is the worst.
    injectError(r.bdevs, r.name, { ioType: "unmap", errorType: "failure", num: 1 });
    const res = await io(fe, d, VIRTIO_BLK_T_DISCARD, 0, [{
      len: 48,
      writable: false,
      data: ranges([0, 4, 0], [10, 4, 0], [20, 4, 0]),
    }]);
    assertEquals(res.status, VIRTIO_BLK_S_IOERR);
    const back = await readSectors(fe, d, 0, 64);
    assertEquals(back.subarray(10 * SECTOR), zeroed(data, [10, 4], [20, 4]).subarray(10 * SECTOR));
  } finally {
    await r.stop();
  }
});

Deno.test("vhost-blk: ranges must be block-aligned on a 4096-byte bdev; none runs if one is not", async () => {
  const r = await rig({ blockSize: 4096, numBlocks: 256 });
  try {
    const { fe, d } = await r.connectQueue(4 << 20);
    const data = pattern(64 * SECTOR, 4);
    const w = await io(fe, d, VIRTIO_BLK_T_OUT, 0, [{ len: data.length, writable: false, data }]);
    assertEquals(w.status, VIRTIO_BLK_S_OK);
    for (const bad of [ranges([0, 8, 0], [9, 8, 0]), ranges([0, 8, 0], [16, 4, 0])]) {
      const res = await io(fe, d, VIRTIO_BLK_T_WRITE_ZEROES, 0, [
        { len: bad.length, writable: false, data: bad },
      ]);
      assertEquals(res.status, VIRTIO_BLK_S_IOERR);
      assertEquals(await readSectors(fe, d, 0, 64), data);
    }
    const ok = await io(fe, d, VIRTIO_BLK_T_WRITE_ZEROES, 0, [
      { len: 32, writable: false, data: ranges([0, 8, 0], [24, 16, 0]) },
    ]);
    assertEquals(ok.status, VIRTIO_BLK_S_OK);
    assertEquals(await readSectors(fe, d, 0, 64), zeroed(data, [0, 8], [24, 16]));
  } finally {
    await r.stop();
  }
});

// ---- memory hot-plug ----

const HOTPLUG = FRONTEND_PROTOCOL_FEATURES | featureBit(P.CONFIGURE_MEM_SLOTS);

function addMemReg(fe: VhostUserFrontend, m: FrontendMemory, region: MemoryRegion = m.region()) {
  return fe.request(R.ADD_MEM_REG, encodeSingleMemoryRegion(region), [m.fd]);
}

function remMemReg(fe: VhostUserFrontend, m: FrontendMemory) {
  return fe.request(R.REM_MEM_REG, encodeSingleMemoryRegion(m.region()));
}

/** How many mappings of the front-end memfds this process holds (ours and the backend's). */
async function memfdMappings(): Promise<number> {
  const maps = await Deno.readTextFile("/proc/self/maps");
  return maps.split("\n").filter((l) => l.includes("memfd:sluice-vhost-frontend")).length;
}

Deno.test("vhost-blk: ADD_MEM_REG / REM_MEM_REG: I/O in added memory, removed memory unreachable", async () => {
  const r = await rig();
  try {
    const fe = await r.connect(HOTPLUG);
    assert((fe.protocolFeatures & featureBit(P.CONFIGURE_MEM_SLOTS)) !== 0n);
    const slots = await fe.request(R.GET_MAX_MEM_SLOTS);
    assertEquals(decodeU64(slots ?? new Uint8Array(8)), 32n);

    const a = r.memory(1 << 20, 0x10_0000);
    const b = r.memory(256 << 10, 0x100_0000);
    await addMemReg(fe, a);
    await addMemReg(fe, b);
    const d = await startQueue(fe, a);

    // Write from memory B, read back into memory A.
    const data = pattern(8 * SECTOR, 5);
    b.bytes.set(data, 0x1000);
    const w = await io(fe, d, VIRTIO_BLK_T_OUT, 100, [
      { gpa: b.gpaBase + 0x1000, len: data.length, writable: false },
    ]);
    assertEquals(w.status, VIRTIO_BLK_S_OK);
    assertEquals(await readSectors(fe, d, 100, 8), data);

    // Bad regions are refused (REPLY_ACK) with a log line saying why; nothing changes. (A
    // region overlapping another in guest addresses is a protocol error the session catches:
    // it ends the connection.)
    const c = r.memory(64 << 10, 0x200_0000);
    const bad: [string, MemoryRegion, string][] = [
      ["past the fd's end", { ...c.region(), mmapOffset: 0x1000n }, "cannot map"],
      [
        "overlaps A in user addresses",
        { ...c.region(), userspaceAddr: BigInt(a.uva + 0x2000) },
        "front-end addresses",
      ],
    ];
    for (const [what, region, why] of bad) {
      const before = r.logs.length;
      await assertRejects(() => addMemReg(fe, c, region), VhostUserFrontendError, "refused");
      const line = r.logs.slice(before).join("\n");
      assert(line.includes(why), `${what}: ${line}`);
    }

    // Removed: a request with a buffer there fails (used, length 0), the queue goes on.
    await remMemReg(fe, b);
    b.bytes.fill(0x5a);
    const before = r.logs.length;
    const gone = await io(fe, d, VIRTIO_BLK_T_IN, 100, [
      { gpa: b.gpaBase + 0x1000, len: 8 * SECTOR, writable: true },
    ]);
    assertEquals(gone.len, 0);
    assert(r.logs.slice(before).some((l) => l.includes("not inside guest memory")), r.logs.join());
    assert(b.bytes.every((x) => x === 0x5a), "nothing was written into removed memory");
    assertEquals(await readSectors(fe, d, 100, 8), data);

    // Added again (a new slot or the freed one): usable again.
    await addMemReg(fe, b);
    const again = await io(fe, d, VIRTIO_BLK_T_IN, 100, [
      { gpa: b.gpaBase, len: 8 * SECTOR, writable: true },
    ]);
    assertEquals(again.status, VIRTIO_BLK_S_OK);
    assertEquals(b.bytes.subarray(0, 8 * SECTOR), data);

    // Removing the memory the rings live in stops the queue, with a log line.
    const mark = r.logs.length;
    await remMemReg(fe, a);
    assert(
      r.logs.slice(mark).some((l) =>
        l.includes(
          "queue 0 stopped: its descriptor table lies in guest memory removed by REM_MEM_REG",
        )
      ),
      r.logs.slice(mark).join("\n"),
    );
    assertEquals(await fe.getVringBase(0), d.availIdx);
  } finally {
    await r.stop();
  }
});

Deno.test("vhost-blk: a region removed under an I/O in flight stays mapped until it completes", async () => {
  const r = await rig({ errorBdev: true });
  try {
    const fe = await r.connect(HOTPLUG);
    const a = r.memory(1 << 20, 0x10_0000);
    const b = r.memory(256 << 10, 0x100_0000);
    await addMemReg(fe, a);
    await addMemReg(fe, b);
    const d = await startQueue(fe, a);
    const data = pattern(8 * SECTOR, 6);
    const w = await io(fe, d, VIRTIO_BLK_T_OUT, 0, [
      { len: data.length, writable: false, data },
    ]);
    assertEquals(w.status, VIRTIO_BLK_S_OK);
    const mapped = await memfdMappings();

    // A read into B whose completion the error bdev holds back; its status byte is in B too.
    injectError(r.bdevs, r.name, {
      ioType: "read",
      errorType: "delay",
      num: 1,
      delayUs: 3_000_000,
    });
    const hdr = new Uint8Array(16); // type IN (0), sector 0
    b.bytes.set(hdr, 0);
    b.bytes[0x3000] = 0xff;
    d.writeDesc(0, { addr: b.gpaBase, len: 16, flags: 1, next: 1 });
    d.writeDesc(1, { addr: b.gpaBase + 0x1000, len: 8 * SECTOR, flags: 3, next: 2 });
    d.writeDesc(2, { addr: b.gpaBase + 0x3000, len: 1, flags: 2, next: 0 });
    const before = d.usedIdx();
    d.publish(0);
    fe.kick(0);
    await waitFor(() => b.bytes[0x1000] === data[0], "the read reached B");

    await remMemReg(fe, b);
    assertEquals(d.usedIdx(), before, "the read is still in flight (the 3 s delay ran out?)");
    assertEquals(await memfdMappings(), mapped, "B stays mapped while the read is in flight");

    await waitFor(() => d.usedIdx() !== before, "the delayed read completes");
    assertEquals(b.bytes[0x3000], VIRTIO_BLK_S_OK, "its status landed in the removed region");
    assertEquals(b.bytes.subarray(0x1000, 0x1000 + data.length), data);
    assertEquals(await memfdMappings(), mapped - 1, "then the backend unmapped B");
    assertEquals(d.readUsed()[0]?.len, 8 * SECTOR + 1);
  } finally {
    await r.stop();
  }
});

Deno.test("vhost-blk: SET_MEM_TABLE while running keeps unchanged regions and the queues in them", async () => {
  const r = await rig();
  try {
    const fe = await r.connect();
    const a = r.memory(1 << 20, 0x10_0000);
    const b = r.memory(256 << 10, 0x100_0000);
    await fe.setMemTable([a]);
    const d = await startQueue(fe, a);
    const data = pattern(4 * SECTOR, 7);
    b.bytes.set(data);
    await fe.setMemTable([a, b]);
    const mapped = await memfdMappings();
    const w = await io(fe, d, VIRTIO_BLK_T_OUT, 8, [
      { gpa: b.gpaBase, len: data.length, writable: false },
    ]);
    assertEquals(w.status, VIRTIO_BLK_S_OK);
    assertEquals(await readSectors(fe, d, 8, 4), data);
    // The same table again: nothing is remapped.
    await fe.setMemTable([a, b]);
    assertEquals(await memfdMappings(), mapped);
    assertEquals(await readSectors(fe, d, 8, 4), data);
    // A table without the rings' region stops the queue.
    const mark = r.logs.length;
    await fe.setMemTable([b]);
    assert(
      r.logs.slice(mark).some((l) => l.includes("queue 0 stopped") && l.includes("SET_MEM_TABLE")),
      r.logs.slice(mark).join("\n"),
    );
    assertEquals(await memfdMappings(), mapped - 1);
  } finally {
    await r.stop();
  }
});

Deno.test("vhost-blk: a guest flooding bad chains gets 20 log lines a second, the rest counted", async () => {
  const t = await rig();
  try {
    const { fe, d } = await t.connectQueue(1 << 20);
    // 30 looping chains made available at once: one kick, one pass of the backend.
    const start = d.usedIdx();
    for (let i = 0; i < 30; i++) d.addLoop(2);
    fe.kick(0);
    await waitFor(() => ((d.usedIdx() - start) & 0xffff) === 30, "the 30 bad chains are returned");
    d.readUsed();
    const bad = t.logs.filter((l) => l.includes("bad descriptor chain"));
    assertEquals(bad.length, 20, bad.join("\n"));
    // The next second's first line says how many were dropped.
    await new Promise((r) => setTimeout(r, 1100));
    const before = d.usedIdx();
    d.addLoop(2);
    fe.kick(0);
    await waitFor(() => d.usedIdx() !== before, "bad chain after the pause is returned");
    const last = t.logs.filter((l) => l.includes("bad descriptor chain")).at(-1) ?? "";
    assertEquals(last.endsWith("(10 similar line(s) dropped before this one)"), true, last);
  } finally {
    await t.stop();
  }
});

Deno.test("vhost-blk: CONFIG_WCE: write back by default; in write-through mode each write is flushed before it completes", async () => {
  const r = await rig({ errorBdev: true });
  try {
    const fe = VhostUserFrontend.connect(r.path);
    await fe.negotiate(
      featureMask(VIRTIO_F_VERSION_1, VIRTIO_BLK_F_CONFIG_WCE),
      FRONTEND_PROTOCOL_FEATURES,
    );
    const mem = r.memory(4 << 20, 0x10_0000);
    await fe.setMemTable([mem]);
    const d = await startQueue(fe, mem);
    assertEquals((await fe.getConfig(32, 1))[0], 1, "writeback after reset");
    const data = pattern(8 * SECTOR, 5);
    const write = () =>
      io(fe, d, VIRTIO_BLK_T_OUT, 0, [{ len: data.length, writable: false, data }]);
    // Write back: a failing flush is not the write's business.
    injectError(r.bdevs, r.name, { ioType: "flush", errorType: "failure", num: 1 });
    assertEquals((await write()).status, VIRTIO_BLK_S_OK);
    // Write through: the write's flush fails, so does the write.
    await fe.request(
      R.SET_CONFIG,
      encodeConfig({ offset: 32, flags: 0, data: new Uint8Array([0]) }),
    );
    assertEquals((await fe.getConfig(32, 1))[0], 0);
    assert(r.logs.some((l) => l.endsWith("cache mode write through")), r.logs.join("\n"));
    assertEquals((await write()).status, VIRTIO_BLK_S_IOERR);
    // The flush failure was used up: the next write and its flush succeed.
    assertEquals((await write()).status, VIRTIO_BLK_S_OK);
    // Only writeback is writable.
    await assertRejects(
      () =>
        fe.request(R.SET_CONFIG, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(8) })),
      VhostUserFrontendError,
    );
    fe.close();
  } finally {
    await r.stop();
  }
});

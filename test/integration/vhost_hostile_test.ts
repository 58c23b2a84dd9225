/**
 * Hostile rings against a live `sluice serve`: two vhost-user-blk
 * controllers on two RAM bdevs. A well-behaved front-end keeps writing and
 * verifying on vhost.1 the whole time, while a hostile one connects to
 * vhost.0 over and over and builds one bad ring per connection: descriptor
 * loops, addresses outside or overflowing guest memory, huge lengths, chains
 * longer than the queue, bad available heads and indices, bad indirect
 * tables, buffers in the wrong direction, missing or short status bytes.
 *
 * For each the outcome is the one the backend defines: the request is
 * returned with VIRTIO_BLK_S_IOERR / UNSUPP in its status byte, or (no status
 * byte can be trusted) returned with used length 0 and a log line naming the
 * reason, or the entry is dropped with a log line, or the queue is stopped
 * with a log line. Every byte of the hostile guest's memory except the used
 * ring and the status byte the backend may write is compared before and
 * after (a canary area included), the queue is shown to still serve a good
 * request when it was not stopped, the other controller's traffic keeps
 * completing and verifying, and the daemon stays up and exits cleanly.
 * Then hostile memory tables (CONFIGURE_MEM_SLOTS): a region larger than its
 * fd (refused, logged), the rings' region removed under a started queue (the
 * queue stops, logged), an overlapping region (that connection ends), and
 * vhost.0 still serves a well-behaved front-end afterwards.
 *
 * Run: `npx -y deno@2.9.6 test -A test/integration/vhost_hostile_test.ts`.
 */
import { assert, assertEquals, assertRejects } from "../../src/testing/assert.ts";
import { collectLines, startDaemon } from "../../src/testing/daemon.ts";
import { freePort } from "../../src/testing/net.ts";
import { waitFor } from "../../src/testing/wait.ts";
import { VirtioDriver } from "../../src/testing/virtio_driver.ts";
import {
  FRONTEND_PROTOCOL_FEATURES,
  FrontendMemory,
  VhostUserFrontend,
  VhostUserFrontendError,
} from "../../src/vhost_user/frontend.ts";
import {
  encodeSingleMemoryRegion,
  featureBit,
  type MemoryRegion,
  VhostUserProtocolFeature as P,
  VhostUserRequest as R,
} from "../../src/vhost_user/messages.ts";
import {
  featureMask,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../../src/virtio/blk.ts";
import {
  VIRTQ_DESC_BYTES,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/virtio/virtqueue.ts";

const BLOCKS = 8192; // 4 MiB of 512-byte blocks per bdev
const SECTOR = 512;
const GPA_BASE = 0x10_0000;
const MEM_BYTES = 1 << 20;
/** The hostile queue: small, so "longer than the queue" is cheap to build. */
const QSIZE = 8;
const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;

/** The daemon config: Malloc0 behind vhost.0 (hostile), Malloc1 behind vhost.1 (good). */
function config(dir: string) {
  const bdev = (name: string) => ({
    method: "bdev_malloc_create",
    params: { name, num_blocks: BLOCKS, block_size: 512 },
  });
  const ctrlr = (ctrlr: string, dev: string) => ({
    method: "vhost_create_blk_controller",
    params: { ctrlr, dev_name: dev, socket: `${dir}/${ctrlr}.sock`, num_queues: 1 },
  });
  return {
    subsystems: [
      { subsystem: "bdev", config: [bdev("Malloc0"), bdev("Malloc1")] },
      {
        subsystem: "vhost_blk",
        config: [ctrlr("vhost.0", "Malloc0"), ctrlr("vhost.1", "Malloc1")],
      },
    ],
  };
}

function pattern(bytes: number, seed: number): Uint8Array {
  return new Uint8Array(bytes).map((_, i) => (i * 13 + seed * 101 + (i >> 9)) & 0xff);
}

/**
 * One front-end connection with guest memory and a VirtioDriver over it. With
 * `hotplug`, CONFIGURE_MEM_SLOTS is negotiated and the memory given with
 * ADD_MEM_REG, as QEMU does.
 */
async function connect(socket: string, queueSize: number, hotplug = false) {
  const fe = VhostUserFrontend.connect(socket);
  const mem = FrontendMemory.create(MEM_BYTES, GPA_BASE);
  try {
    await fe.negotiate(
      featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC),
      FRONTEND_PROTOCOL_FEATURES | (hotplug ? featureBit(P.CONFIGURE_MEM_SLOTS) : 0n),
    );
    if (hotplug) await addMemReg(fe, mem);
    else await fe.setMemTable([mem]);
    const d = new VirtioDriver({
      queueSize,
      bytes: mem.bytes,
      gpaBase: mem.gpaBase,
      uva: mem.uva,
      indirectDesc: true,
    });
    return { fe, mem, d };
  } catch (e) {
    fe.close();
    mem.close();
    throw e;
  }
}

function addMemReg(fe: VhostUserFrontend, m: FrontendMemory, r: MemoryRegion = m.region()) {
  return fe.request(R.ADD_MEM_REG, encodeSingleMemoryRegion(r), [m.fd]);
}

async function start(c: Awaited<ReturnType<typeof connect>>): Promise<void> {
  await c.fe.setupQueue(0, c.mem, {
    size: c.d.size,
    descAddr: c.d.descAddr,
    availAddr: c.d.availAddr,
    usedAddr: c.d.usedAddr,
  });
}

/**
 * The well-behaved guest: writes a pattern, reads it back, compares, over
 * and over until stopped. `verified` counts round trips that matched.
 */
class GoodTraffic {
  verified = 0;
  error: unknown = null;
  #stop = false;
  #done: Promise<void> = Promise.resolve();

  start(socket: string): void {
    this.#done = this.#run(socket).catch((e) => {
      this.error = e;
    });
  }

  async #run(socket: string): Promise<void> {
    const c = await connect(socket, 16);
    try {
      await start(c);
      const { fe, d } = c;
      for (let k = 0; !this.#stop; k++) {
        d.resetHeap();
        // Before publishing: the daemon may take (and finish) a request as soon as it is
        // published, before our kick, since it also polls the rings while busy.
        const before = d.usedIdx();
        const sectors = 8 + (k % 4) * 8;
        const sector = (k * 40) % (BLOCKS - sectors);
        const data = pattern(sectors * SECTOR, k);
        const w = d.addBlkRequest({
          type: VIRTIO_BLK_T_OUT,
          sector,
          data: [{ len: data.length, writable: false, data }],
        });
        const r = d.addBlkRequest({
          type: VIRTIO_BLK_T_IN,
          sector,
          data: [{ len: data.length, writable: true }],
        });
        fe.kick(0);
        await waitFor(() => ((d.usedIdx() - before) & 0xffff) >= 2, `good round trip ${k}`);
        d.readUsed();
        assertEquals(d.read(w.status, 1)[0], VIRTIO_BLK_S_OK, `good write ${k}`);
        assertEquals(d.read(r.status, 1)[0], VIRTIO_BLK_S_OK, `good read ${k}`);
        assertEquals(d.read(r.data[0]?.gpa ?? 0, data.length), data, `good data ${k}`);
        this.verified++;
      }
    } finally {
      c.fe.close();
      c.mem.close();
    }
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }
}

/** What the backend must do with one hostile ring. */
type Expect =
  /** Returned with used length 0, logged as a bad chain with this text. */
  | { kind: "bad-chain"; log: string }
  /** Returned with this status byte at the address `build` gave. */
  | { kind: "status"; status: number }
  /** Returned with used length 0: the chain ends in no device-writable byte. */
  | { kind: "no-status" }
  /** The available entry is consumed and dropped (nothing to return), logged. */
  | { kind: "dropped"; log: string }
  /** The queue stops, logged. */
  | { kind: "stopped"; log: string };

interface Case {
  name: string;
  /** Writes the bad ring and publishes it; returns the status byte's address for "status". */
  build(d: VirtioDriver): number | void;
  expect: Expect;
}

/** A valid 16-byte request header in fresh memory. */
function header(d: VirtioDriver, type: number, sector = 0): number {
  const gpa = d.alloc(16);
  const h = new Uint8Array(16);
  const v = new DataView(h.buffer);
  v.setUint32(0, type, true);
  v.setBigUint64(8, BigInt(sector), true);
  d.write(gpa, h);
  return gpa;
}

/** The 16 bytes of an OUT header for sector 0. */
function outHeader(): Uint8Array {
  const h = new Uint8Array(16);
  h[0] = VIRTIO_BLK_T_OUT;
  return h;
}

/** `n` valid descriptors as an indirect table's entries: header, data, status. */
function validEntries(d: VirtioDriver, n: number) {
  const entries = [];
  for (let i = 0; i < n; i++) {
    const last = i === n - 1;
    entries.push({
      addr: i === 0 ? header(d, VIRTIO_BLK_T_OUT) : d.alloc(16),
      len: last ? 1 : 16,
      flags: last ? WRITE : NEXT,
      next: i + 1,
    });
  }
  return entries;
}

const CASES: Case[] = [
  {
    name: "a two-descriptor loop",
    build: (d) => void d.addLoop(2),
    expect: { kind: "bad-chain", log: "appears twice in one chain" },
  },
  {
    name: "a descriptor that chains to itself",
    build: (d) => void d.addLoop(1),
    expect: { kind: "bad-chain", log: "appears twice in one chain" },
  },
  {
    name: "a loop inside an indirect table",
    build: (d) => {
      const t = d.writeIndirectTable([
        { addr: header(d, VIRTIO_BLK_T_OUT), len: 16, flags: NEXT, next: 1 },
        { addr: d.alloc(8), len: 8, flags: NEXT, next: 0 },
      ]);
      d.writeDesc(0, { addr: t, len: 32, flags: INDIRECT, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "appears twice in one chain" },
  },
  {
    name: "a buffer running past the end of guest memory",
    build: (d) => void d.addOutOfRange(),
    expect: { kind: "bad-chain", log: "is not inside guest memory" },
  },
  {
    name: "a buffer in the hole below guest memory",
    build: (d) => {
      d.writeDesc(0, { addr: 0x1000, len: 16, flags: 0, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "is not inside guest memory" },
  },
  {
    name: "an address near 2^64",
    build: (d) => {
      d.writeDesc(0, { addr: 0xffff_ffff_ffff_fff0n, len: 32, flags: 0, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "has an address past 2^53" },
  },
  {
    name: "an address plus length that wraps",
    build: (d) => {
      d.writeDesc(0, {
        addr: GPA_BASE + MEM_BYTES - 8,
        len: 0xffff_fff0,
        flags: WRITE,
        next: 0,
      });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "is not inside guest memory" },
  },
  {
    name: "a 4 GiB - 1 length",
    build: (d) => void d.addHugeLength(),
    expect: { kind: "bad-chain", log: "is not inside guest memory" },
  },
  {
    name: "a next index beyond the queue",
    build: (d) => {
      d.writeDesc(0, { addr: header(d, VIRTIO_BLK_T_OUT), len: 16, flags: NEXT, next: 200 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "is not below the queue size 8" },
  },
  {
    name: "a chain longer than the queue (direct then indirect)",
    build: (d) => {
      const t = d.writeIndirectTable(validEntries(d, QSIZE));
      d.writeDesc(0, { addr: header(d, VIRTIO_BLK_T_OUT), len: 16, flags: NEXT, next: 1 });
      d.writeDesc(1, { addr: d.alloc(16), len: 16, flags: NEXT, next: 2 });
      d.writeDesc(2, { addr: t, len: QSIZE * VIRTQ_DESC_BYTES, flags: INDIRECT, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "has more than 8 descriptors" },
  },
  {
    name: "an indirect table longer than the queue",
    build: (d) => {
      const t = d.writeIndirectTable(validEntries(d, QSIZE + 1));
      d.writeDesc(0, { addr: t, len: (QSIZE + 1) * VIRTQ_DESC_BYTES, flags: INDIRECT, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "over 8 descriptors" },
  },
  {
    name: "a nested indirect table",
    build: (d) => void d.addNestedIndirect(),
    expect: { kind: "bad-chain", log: "refers to another one" },
  },
  {
    name: "an indirect table of misaligned length (24 bytes)",
    build: (d) => {
      const t = d.writeIndirectTable(validEntries(d, 2));
      d.writeDesc(0, { addr: t, len: 24, flags: INDIRECT, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "not a multiple of 16" },
  },
  {
    name: "an indirect table of length 0",
    build: (d) => {
      d.writeDesc(0, { addr: d.alloc(16), len: 0, flags: INDIRECT, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "is empty" },
  },
  {
    name: "an indirect table outside guest memory",
    build: (d) => {
      d.writeDesc(0, { addr: GPA_BASE + MEM_BYTES, len: 32, flags: INDIRECT, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "indirect table is not inside guest memory" },
  },
  {
    name: "an indirect descriptor that also has NEXT",
    build: (d) => {
      const t = d.writeIndirectTable(validEntries(d, 2));
      d.writeDesc(0, { addr: t, len: 32, flags: INDIRECT | NEXT, next: 1 });
      d.writeDesc(1, { addr: d.alloc(1), len: 1, flags: WRITE, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "also has VIRTQ_DESC_F_NEXT" },
  },
  {
    name: "a device-readable buffer after a device-writable one",
    build: (d) => {
      d.writeDesc(0, { addr: header(d, VIRTIO_BLK_T_OUT), len: 16, flags: NEXT, next: 1 });
      d.writeDesc(1, { addr: d.alloc(512), len: 512, flags: WRITE | NEXT, next: 2 });
      d.writeDesc(2, { addr: d.alloc(512), len: 512, flags: NEXT, next: 3 });
      d.writeDesc(3, { addr: d.alloc(1), len: 1, flags: WRITE, next: 0 });
      d.publish(0);
    },
    expect: { kind: "bad-chain", log: "device-readable after a device-writable" },
  },
  {
    name: "a write-only header",
    build: (d) =>
      d.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: 0,
        writableHeader: true,
        data: [{ len: 512, writable: true }],
      }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "a header split short (15 readable bytes)",
    build: (d) =>
      d.addChain([
        { len: 15, writable: false, data: new Uint8Array(15) },
        { len: 512, writable: true },
        { len: 1, writable: true, data: new Uint8Array([0xff]) },
      ]).placed[2]?.gpa,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "read-only data for IN",
    build: (d) =>
      d.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: 0,
        data: [{ len: 512, writable: false }],
      }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "write-only data for OUT",
    build: (d) =>
      d.addBlkRequest({
        type: VIRTIO_BLK_T_OUT,
        sector: 0,
        data: [{ len: 512, writable: true }],
      }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "an empty status descriptor after read-only data (no status byte at all)",
    build: (d) => {
      d.addChain([
        { len: 16, writable: false, data: outHeader() },
        { len: 512, writable: false, data: pattern(512, 9) },
        { len: 0, writable: true },
      ]);
    },
    expect: { kind: "no-status" },
  },
  {
    name: "a read-only status byte",
    build: (d) => {
      d.addChain([
        { len: 16, writable: false, data: outHeader() },
        { len: 512, writable: false, data: pattern(512, 9) },
        { len: 1, writable: false, data: new Uint8Array([0xff]) },
      ]);
    },
    expect: { kind: "no-status" },
  },
  {
    name: "an empty status descriptor after IN data (its last byte is the status)",
    build: (d) => {
      const { placed } = d.addChain([
        { len: 16, writable: false, data: new Uint8Array(16) },
        { len: 512, writable: true, data: new Uint8Array(512).fill(0xee) },
        { len: 0, writable: true },
      ]);
      return (placed[1]?.gpa ?? 0) + 511;
    },
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "an IN past the capacity",
    build: (d) =>
      d.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: BLOCKS - 1,
        data: [{ len: 1024, writable: true }],
      }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "an IN at sector 2^64 - 1",
    build: (d) =>
      d.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: 0xffff_ffff_ffff_ffffn,
        data: [{ len: 512, writable: true }],
      }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "data that is not a multiple of 512 bytes",
    build: (d) =>
      d.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: 0,
        data: [{ len: 100, writable: true }],
      }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "an unknown request type",
    build: (d) => d.addBlkRequest({ type: 99, sector: 0, data: [] }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_UNSUPP },
  },
  {
    name: "GET_ID into 4 bytes",
    build: (d) =>
      d.addBlkRequest({
        type: VIRTIO_BLK_T_GET_ID,
        sector: 0,
        data: [{ len: 4, writable: true }],
      }).status,
    expect: { kind: "status", status: VIRTIO_BLK_S_IOERR },
  },
  {
    name: "an available head beyond the queue",
    build: (d) => d.publish(200),
    expect: { kind: "dropped", log: "Head descriptor 200 is not below the queue size 8" },
  },
  {
    name: "an available index jumping past the queue size",
    build: (d) => d.jumpAvailIdx(QSIZE + 1),
    expect: { kind: "stopped", log: "more than the queue size 8" },
  },
  {
    name: "an available index moved back by one (65535 entries ahead)",
    build: (d) => d.setAvailIdx(0xffff),
    expect: { kind: "stopped", log: "65535 entries past 0" },
  },
];

/** Offsets where `a` and `b` differ outside the `allowed` [start, end) offset ranges. */
function changes(a: Uint8Array, b: Uint8Array, allowed: [number, number][]): number[] {
  const out: number[] = [];
  for (let i = 0; i < a.length && out.length < 8; i++) {
    if (a[i] !== b[i] && !allowed.some(([s, e]) => i >= s && i < e)) out.push(i);
  }
  return out;
}

Deno.test("vhost-user-blk: hostile rings fail alone, the other controller and the daemon go on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-hostile-" });
  const lines: string[] = [];
  const daemon = await startDaemon(dir, {
    config: config(dir),
    args: ["--nvmf-listen", `127.0.0.1:${freePort()}`],
    onOutput: collectLines(lines),
  });
  let exited = false;
  daemon.child.status.then(() => (exited = true));
  const good = new GoodTraffic();
  try {
    const hostileSock = `${dir}/vhost.0.sock`;
    good.start(`${dir}/vhost.1.sock`);
    await waitFor(() => good.verified > 0 || good.error !== null, "the good traffic starts");

    const logOf = (from: number) => lines.slice(from).join("\n");
    for (const c of CASES) {
      const conn = await connect(hostileSock, QSIZE);
      const { fe, mem, d } = conn;
      try {
        await start(conn);
        // A canary area nothing points to, then the bad ring.
        const canaryGpa = d.alloc(64 << 10);
        const canary = pattern(64 << 10, 77);
        d.write(canaryGpa, canary);
        const statusGpa = c.build(d);
        const snapshot = mem.bytes.slice();
        const mark = lines.length;
        fe.kick(0);

        const e = c.expect;
        const usedStart = d.usedAddr - GPA_BASE;
        const allowed: [number, number][] = [[usedStart, usedStart + 6 + 8 * QSIZE]];
        if (e.kind === "bad-chain" || e.kind === "no-status" || e.kind === "status") {
          await waitFor(() => d.usedIdx() === 1, `${c.name}: the request is returned`);
          const used = d.readUsed();
          assertEquals(used.length, 1, c.name);
          if (e.kind === "status") {
            assert(typeof statusGpa === "number", c.name);
            assertEquals(used[0]?.len, 1, `${c.name}: used length`);
            assertEquals(d.read(statusGpa, 1)[0], e.status, `${c.name}: status byte`);
            allowed.push([statusGpa - GPA_BASE, statusGpa - GPA_BASE + 1]);
          } else {
            assertEquals(used[0]?.len, 0, `${c.name}: used length`);
          }
          if (e.kind === "bad-chain") {
            await waitFor(
              () => logOf(mark).includes(`bad descriptor chain at head 0: `),
              `${c.name}: a log line`,
            );
            assert(
              logOf(mark).includes(e.log),
              `${c.name}: the log names the reason:\n${logOf(mark)}`,
            );
            assert(logOf(mark).includes("vhost-blk Malloc0: queue 0"), logOf(mark));
          }
        } else {
          const what = e.kind === "dropped"
            ? "queue 0: available entry dropped"
            : "queue 0 stopped";
          await waitFor(() => logOf(mark).includes(e.log), `${c.name}: a log line`);
          assert(logOf(mark).includes(`vhost-blk Malloc0: ${what}`), logOf(mark));
          assertEquals(d.usedIdx(), 0, `${c.name}: nothing is returned`);
        }
        const diff = changes(snapshot, mem.bytes, allowed);
        assertEquals(diff, [], `${c.name}: guest memory changed outside the used ring and status`);
        assertEquals(
          d.read(canaryGpa, canary.length),
          canary,
          `${c.name}: the canary is untouched`,
        );

        if (e.kind === "stopped") {
          // The stopped ring still answers GET_VRING_BASE with where it stopped.
          assertEquals(await fe.getVringBase(0), 0, c.name);
        } else {
          // The queue still serves a good request.
          d.resetHeap();
          const before = d.usedIdx();
          const rd = d.addBlkRequest({
            type: VIRTIO_BLK_T_IN,
            sector: 0,
            data: [{ len: 512, writable: true }],
          });
          fe.kick(0);
          await waitFor(() => d.usedIdx() !== before, `${c.name}: a good request after it`);
          assertEquals(d.read(rd.status, 1)[0], VIRTIO_BLK_S_OK, c.name);
        }
      } finally {
        fe.close();
        mem.close();
      }
      // Meanwhile the other controller's traffic goes on, verified.
      const v = good.verified;
      await waitFor(
        () => good.verified > v || good.error !== null,
        `${c.name}: the good traffic goes on`,
      );
      if (good.error !== null) throw good.error;
      assert(!exited, `${c.name}: the daemon is still running`);
    }

    // One bad chain between two good requests, published together: only it fails.
    {
      const conn = await connect(hostileSock, QSIZE);
      const { fe, mem, d } = conn;
      try {
        await start(conn);
        const data = pattern(1024, 5);
        const w = d.addBlkRequest({
          type: VIRTIO_BLK_T_OUT,
          sector: 64,
          data: [{ len: 1024, writable: false, data }],
        });
        const t = d.writeIndirectTable([{ addr: 0xdead_0000_0000, len: 16, flags: 0, next: 0 }]);
        d.writeDesc(7, { addr: t, len: 16, flags: INDIRECT, next: 0 });
        d.publish(7);
        const rd = d.addBlkRequest({
          type: VIRTIO_BLK_T_IN,
          sector: 64,
          data: [{ len: 1024, writable: true }],
        });
        fe.kick(0);
        await waitFor(() => d.usedIdx() === 3, "three requests returned");
        const used = d.readUsed();
        const lenOf = (head: number) => used.find((u) => u.id === head)?.len;
        assertEquals([lenOf(w.head), lenOf(7), lenOf(rd.head)], [1, 0, 1024 + 1]);
        assertEquals(d.read(rd.data[0]?.gpa ?? 0, 1024), data);
      } finally {
        fe.close();
        mem.close();
      }
    }

    // Rings outside guest memory: the queue is not started, the refusal is reported.
    {
      const conn = await connect(hostileSock, QSIZE);
      try {
        await assertRejects(
          () =>
            conn.fe.setupQueue(0, conn.mem, {
              size: QSIZE,
              descAddr: GPA_BASE,
              availAddr: GPA_BASE + 0x1000,
              usedAddr: GPA_BASE + MEM_BYTES - 16,
            }),
          VhostUserFrontendError,
          "refused SET_VRING_KICK",
        );
      } finally {
        conn.fe.close();
        conn.mem.close();
      }
    }

    // Hostile memory tables (CONFIGURE_MEM_SLOTS).
    const progress = async (what: string) => {
      const v = good.verified;
      await waitFor(() => good.verified > v || good.error !== null, `${what}: good traffic`);
      if (good.error !== null) throw good.error;
      assert(!exited, `${what}: the daemon is still running`);
    };
    {
      // A region larger than its fd: refused and logged; the connection and queue go on.
      const conn = await connect(hostileSock, QSIZE, true);
      const small = FrontendMemory.create(64 << 10, 0x4000_0000);
      try {
        const mark = lines.length;
        await assertRejects(
          () => addMemReg(conn.fe, small, { ...small.region(), memorySize: 1n << 20n }),
          VhostUserFrontendError,
          "refused ADD_MEM_REG",
        );
        await waitFor(() => logOf(mark).includes("memory table refused"), "the refusal is logged");
        assert(logOf(mark).includes("cannot map"), logOf(mark));
        await start(conn);
        const rd = conn.d.addBlkRequest({
          type: VIRTIO_BLK_T_IN,
          sector: 0,
          data: [{ len: 512, writable: true }],
        });
        conn.fe.kick(0);
        await waitFor(() => conn.d.usedIdx() === 1, "a good request after the refusal");
        assertEquals(conn.d.read(rd.status, 1)[0], VIRTIO_BLK_S_OK);

        // The region holding the rings removed under a started queue: the queue stops.
        const mark2 = lines.length;
        await conn.fe.request(R.REM_MEM_REG, encodeSingleMemoryRegion(conn.mem.region()));
        await waitFor(
          () => logOf(mark2).includes("queue 0 stopped: its descriptor table lies in guest memory"),
          "the queue stops",
        );
        assertEquals(await conn.fe.getVringBase(0), 1);
      } finally {
        conn.fe.close();
        conn.mem.close();
        small.close();
      }
      await progress("REM_MEM_REG of the rings");
    }
    {
      // A region overlapping another: a protocol error, this connection ends, others go on.
      const conn = await connect(hostileSock, QSIZE, true);
      const other = FrontendMemory.create(64 << 10, GPA_BASE + 0x8000);
      try {
        const mark = lines.length;
        await assertRejects(() => addMemReg(conn.fe, other), VhostUserFrontendError);
        await waitFor(() => logOf(mark).includes("closing the connection"), "the connection ends");
      } finally {
        conn.fe.close();
        conn.mem.close();
        other.close();
      }
      await progress("an overlapping ADD_MEM_REG");
    }

    // After all that, vhost.0 still serves a well-behaved front-end.
    {
      const conn = await connect(hostileSock, QSIZE, true);
      try {
        await start(conn);
        const data = pattern(4096, 11);
        const w = conn.d.addBlkRequest({
          type: VIRTIO_BLK_T_OUT,
          sector: 200,
          data: [{ len: data.length, writable: false, data }],
        });
        const rd = conn.d.addBlkRequest({
          type: VIRTIO_BLK_T_IN,
          sector: 200,
          data: [{ len: data.length, writable: true }],
        });
        conn.fe.kick(0);
        await waitFor(() => conn.d.usedIdx() === 2, "vhost.0 serves again");
        assertEquals(conn.d.read(w.status, 1)[0], VIRTIO_BLK_S_OK);
        assertEquals(conn.d.read(rd.data[0]?.gpa ?? 0, data.length), data);
      } finally {
        conn.fe.close();
        conn.mem.close();
      }
    }

    await good.stop();
    if (good.error !== null) throw good.error;
    assert(good.verified >= CASES.length, `${good.verified} good round trips`);
    assert(!exited, "the daemon is still running");
  } finally {
    await good.stop();
    const code = await daemon.stop();
    await Deno.remove(dir, { recursive: true });
    assertEquals(code, 0, "the daemon exits cleanly");
  }
});

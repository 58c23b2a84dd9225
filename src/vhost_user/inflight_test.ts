/**
 * Inflight tracking: the region layout and its checks, recovery after a
 * crash at each point of the spec's algorithm (a device model on
 * SplitVirtqueue over the driver model's rings), and the vhost-blk backend
 * in-process: a "killed" backend's requests are resubmitted by the next one,
 * and a clean stop (GET_VRING_BASE) completes what it took instead of
 * dropping it.
 */
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { VirtioDriver } from "../testing/virtio_driver.ts";
import { startReactor } from "../testing/reactor_thread.ts";
import { guard, waitFor } from "../testing/wait.ts";
import {
  InflightArea,
  inflightAreaBytes,
  InflightError,
  InflightQueue,
  inflightQueueBytes,
} from "./inflight.ts";
import { SplitVirtqueue, vringNeedEvent } from "../virtio/virtqueue.ts";
import {
  featureMask,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../virtio/blk.ts";
import { BdevRegistry } from "../bdev/mod.ts";
import { createMallocBdev, deleteMallocBdev } from "../bdev_modules/malloc/malloc.ts";
import { createErrorBdev, deleteErrorBdev, injectError } from "../bdev_modules/error/error.ts";
import { VhostBlkBackend } from "./blk_backend.ts";
import type { VringConfig } from "./session.ts";
import { type Mapping, mapShared, memfdCreate } from "../../ffi/memory.ts";
import { sym } from "../../ffi/libc.ts";

const F_DUPFD_CLOEXEC = 1030;
const EFD_NONBLOCK_CLOEXEC = 0o4000 | 0o2000000;

function dup(fd: number): number {
  const r = sym.fcntl(fd, F_DUPFD_CLOEXEC, 0n);
  assert(r >= 0, "dup failed");
  return r;
}

// ---- the region ----

Deno.test("inflight layout: 16-byte header and entries, regions 64-byte aligned", () => {
  assertEquals(inflightQueueBytes(1), 64);
  assertEquals(inflightQueueBytes(2), 64);
  assertEquals(inflightQueueBytes(4), 128); // 16 + 64 = 80 -> 128
  assertEquals(inflightQueueBytes(128), 2112);
  assertEquals(inflightAreaBytes(2, 128), 4224);
  const bytes = new Uint8Array(inflightAreaBytes(2, 8)).fill(0xee);
  const area = InflightArea.format(bytes, 2, 8);
  const v = new DataView(bytes.buffer);
  const stride = inflightQueueBytes(8);
  for (const q of [0, 1]) {
    assertEquals(v.getUint16(q * stride + 8, true), 0, "version 0 until the queue starts");
    assertEquals(v.getUint16(q * stride + 10, true), 8, "desc_num");
  }
  // First start initialises the region: version 1, used_idx from the ring, no front-end base.
  const q1 = area.queue(1, 8);
  assertEquals(q1.recover(5), null);
  assertEquals(v.getUint16(stride + 8, true), 1);
  assertEquals(q1.usedIdx, 5);
  assertEquals(q1.countInflight(), 0);
  assertEquals(v.getUint16(8, true), 0, "queue 0's region is untouched");
  assertThrows(() => new InflightArea(new Uint8Array(100), 2, 8), RangeError, "smaller");
  assertThrows(() => area.queue(2, 8), InflightError, "no region");
  assertThrows(() => area.queue(0, 16), InflightError, "made for 8");
});

Deno.test("inflight recovery: heads come back in the order they were taken, not by index", () => {
  const bytes = new Uint8Array(inflightAreaBytes(1, 8));
  const q = InflightArea.format(bytes, 1, 8).queue(0, 8);
  q.recover(0);
  for (const h of [5, 2, 7, 0]) q.setInflight(h);
  q.beforeUsed(2);
  q.afterUsed(2, 1);
  const again = new InflightArea(bytes, 1, 8).queue(0, 8);
  assertEquals(again.recover(1), [5, 7, 0]);
  // The counter continues past the largest one found: new heads sort after the old ones.
  again.setInflight(3);
  assertEquals(new InflightArea(bytes, 1, 8).queue(0, 8).recover(1), [5, 7, 0, 3]);
});

Deno.test("inflight recovery refuses bad regions with a clear error", () => {
  const fresh = () => {
    const bytes = new Uint8Array(inflightAreaBytes(1, 8));
    const q = InflightArea.format(bytes, 1, 8).queue(0, 8);
    q.recover(0);
    return {
      bytes,
      v: new DataView(bytes.buffer),
      q: () => new InflightQueue(new DataView(bytes.buffer), 8),
    };
  };
  const cases: [string, (v: DataView) => void, string][] = [
    ["version", (v) => v.setUint16(8, 7, true), "version 7"],
    ["features", (v) => v.setUint8(0, 1), "features"],
    ["desc_num", (v) => v.setUint16(10, 16, true), "desc_num 16"],
    ["flag", (v) => v.setUint8(16 + 3 * 16, 2), "flag of descriptor 3 is 2"],
    ["batch", (v) => v.setUint16(14, 100, true), "more than the queue size"],
    ["batch head", (v) => {
      v.setUint16(14, 0xffff, true); // one behind the ring's 0
      v.setUint16(12, 9, true);
    }, "descriptor 9"],
  ];
  for (const [what, spoil, msg] of cases) {
    const f = fresh();
    spoil(f.v);
    assertThrows(() => f.q().recover(0), InflightError, msg);
    void what;
  }
});

// ---- crash points, with a device model over real rings ----

/** A device using SplitVirtqueue and the inflight region exactly as the backend does. */
class Device {
  readonly q: SplitVirtqueue;
  readonly inflight: InflightQueue;
  constructor(d: VirtioDriver, bytes: Uint8Array, lastAvailIdx: number | null) {
    this.inflight = new InflightArea(bytes, 1, d.size).queue(0, d.size);
    const probe = d.queue();
    const heads = this.inflight.recover(probe.usedIdx);
    this.resubmit = heads ?? [];
    this.q = SplitVirtqueue.create({
      size: d.size,
      descAddr: d.descAddr,
      availAddr: d.availAddr,
      usedAddr: d.usedAddr,
      memory: d.memory,
      eventIdx: false,
      indirectDesc: false,
      lastAvailIdx: heads === null ? (lastAvailIdx ?? 0) : (probe.usedIdx + heads.length) & 0xffff,
    });
  }
  readonly resubmit: number[];
  pop(): number {
    const h = this.q.popAvail();
    if (h >= 0) this.inflight.setInflight(h);
    return h;
  }
  complete(h: number, crashAt: "before" | "between" | "after-used" | "none" = "none"): void {
    if (crashAt === "before") return;
    this.inflight.beforeUsed(h);
    if (crashAt === "between") return;
    this.q.pushUsed(h, 1);
    if (crashAt === "after-used") return;
    this.inflight.afterUsed(h, this.q.usedIdx);
  }
}

Deno.test("inflight: a crash at each point of completing a request loses and repeats nothing", () => {
  for (const crashAt of ["before", "between", "after-used", "none"] as const) {
    const d = new VirtioDriver({ queueSize: 8, memoryBytes: 1 << 16 });
    const region = new Uint8Array(inflightAreaBytes(1, 8));
    InflightArea.format(region, 1, 8);
    const dev = new Device(d, region, 0);
    const heads = [0, 1, 2, 3].map(() => d.addChain([{ len: 8, writable: true }]).head);
    for (const h of heads) assertEquals(dev.pop(), h);
    dev.complete(heads[1] as number);
    dev.complete(heads[3] as number);
    // The crash comes while completing heads[2].
    dev.complete(heads[2] as number, crashAt);
    const onRing = d.readUsed().map((u) => u.id);
    const inUsed = crashAt === "after-used" || crashAt === "none";
    assertEquals(onRing, inUsed ? [heads[1], heads[3], heads[2]] : [heads[1], heads[3]]);
    // The driver adds one more while the device is down.
    const late = d.addChain([{ len: 8, writable: true }]).head;

    const next = new Device(d, region, d.usedIdx()); // QEMU's base after a crash: used.idx
    const expect = inUsed ? [heads[0]] : [heads[0], heads[2]];
    assertEquals(next.resubmit, expect, `crash ${crashAt}`);
    assertEquals(next.inflight.usedIdx, d.usedIdx(), "used_idx repaired");
    // The available ring resumes exactly after what was taken before: the late request next.
    assertEquals(next.pop(), late, `crash ${crashAt}`);
    assertEquals(next.pop(), -1);
    for (const h of [...next.resubmit, late]) next.complete(h);
    const all = [...onRing, ...d.readUsed().map((u) => u.id)];
    assertEquals(all.toSorted(), [...heads, late].toSorted(), "every request once");
    assertEquals(next.inflight.countInflight(), 0);
  }
});

Deno.test("inflight: a crash between taking a head and marking it re-reads that ring entry", () => {
  const d = new VirtioDriver({ queueSize: 8, memoryBytes: 1 << 16 });
  const region = new Uint8Array(inflightAreaBytes(1, 8));
  InflightArea.format(region, 1, 8);
  const dev = new Device(d, region, 0);
  const a = d.addChain([{ len: 8, writable: true }]).head;
  const b = d.addChain([{ len: 8, writable: true }]).head;
  assertEquals(dev.pop(), a);
  assertEquals(dev.q.popAvail(), b); // taken, crash before setInflight
  const next = new Device(d, region, 0);
  assertEquals(next.resubmit, [a]);
  assertEquals(next.pop(), b);
});

// ---- the backend in-process ----

const GPA = 0x10_0000;
const UVA = 0x7f00_0000_0000;
const QSIZE = 16;

interface Rig {
  driver: VirtioDriver;
  guestFd: number;
  guest: Mapping;
  registry: BdevRegistry;
  logs: string[];
  backend(): VhostBlkBackend;
  start(b: VhostBlkBackend, base: number, kickFd: number | null): void;
}

async function withRig(fn: (r: Rig) => Promise<void>): Promise<void> {
  const { thread, stop } = await startReactor();
  const registry = new BdevRegistry();
  createMallocBdev(registry, { name: "M0", numBlocks: 2048, blockSize: 512 });
  const ee = createErrorBdev(registry, "M0");
  const bytes = 1 << 20;
  const guestFd = memfdCreate("guest", bytes);
  const guest = mapShared(guestFd, bytes, 0);
  const driver = new VirtioDriver({ queueSize: QSIZE, bytes: guest.bytes(), gpaBase: GPA });
  const logs: string[] = [];
  const rig: Rig = {
    driver,
    guestFd,
    guest,
    registry,
    logs,
    backend() {
      const b = new VhostBlkBackend({
        registry,
        reactor: thread,
        bdevName: ee,
        numQueues: 1,
        readOnly: false,
        log: (m) => logs.push(m),
        drainTimeoutMs: 5_000,
      });
      b.setFeatures(featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX));
      b.setMemTable([{
        guestPhysAddr: BigInt(GPA),
        memorySize: BigInt(bytes),
        userspaceAddr: BigInt(UVA),
        mmapOffset: 0n,
      }], [dup(guestFd)]);
      return b;
    },
    start(b, base, kickFd) {
      const uva = (gpa: number) => BigInt(gpa - GPA + UVA);
      const vring: VringConfig = {
        num: QSIZE,
        base,
        addr: {
          index: 0,
          flags: 0,
          descUserAddr: uva(driver.descAddr),
          availUserAddr: uva(driver.availAddr),
          usedUserAddr: uva(driver.usedAddr),
          logGuestAddr: 0n,
        },
        kickFd,
        callFd: null,
        errFd: null,
        enabled: true,
      };
      b.startQueue(0, vring);
    },
  };
  try {
    await fn(rig);
  } finally {
    guest.unmap();
    sym.close(guestFd);
    await deleteErrorBdev(registry, ee);
    await deleteMallocBdev(registry, "M0");
    await stop();
  }
}

function addWrite(d: VirtioDriver, sector: number, fill: number) {
  return d.addBlkRequest({
    type: VIRTIO_BLK_T_OUT,
    sector,
    data: [{ len: 512, writable: false, data: new Uint8Array(512).fill(fill) }],
  });
}

Deno.test("vhost-blk: requests of a killed backend are resubmitted by the next one", async () => {
  await withRig(async (rig) => {
    const d = rig.driver;
    const b1 = rig.backend();
    const inf = b1.getInflightFd(1, QSIZE);
    // QEMU hands the area back with SET_INFLIGHT_FD before starting the rings.
    const desc = {
      mmapSize: inf.mmapSize,
      mmapOffset: inf.mmapOffset,
      numQueues: 1,
      queueSize: QSIZE,
    };
    b1.setInflightFd(desc, dup(inf.fd));
    // Every write is held on the bdev: the backend takes them and cannot finish them.
    injectError(rig.registry, "EE_M0", {
      ioType: "all",
      errorType: "delay",
      num: 3,
      delayUs: 200_000,
    });
    const reqs = [1, 2, 3].map((i) => addWrite(d, i, 0x10 + i));
    rig.start(b1, 0, null);
    await waitFor(() => b1.ioInFlight === 3, "three writes on the bdev");
    assertEquals(d.usedIdx(), 0);
    // The crash: the backend stops without completing anything (its completions are dropped,
    // as if the process had died); the area keeps the three heads in flight.
    await guard(b1.close(), "backend 1 let go");
    assertEquals(d.usedIdx(), 0, "nothing completed by the dead backend");
    // One more request while no backend runs.
    const late = addWrite(d, 4, 0x14);

    const b2 = rig.backend();
    b2.setInflightFd(desc, dup(inf.fd));
    sym.close(inf.fd);
    rig.start(b2, d.usedIdx(), null); // QEMU's base after a lost connection: used.idx
    await waitFor(() => d.usedIdx() === 4, "all four requests completed");
    const used = d.readUsed().map((u) => u.id);
    assertEquals(used.slice(0, 3), reqs.map((r) => r.head), "resubmitted first, in order");
    assertEquals(used[3], late.head);
    for (const r of [...reqs, late]) assertEquals(d.read(r.status, 1)[0], VIRTIO_BLK_S_OK);
    assert(
      rig.logs.some((l) => l.includes("resubmitting 3 in-flight request(s)")),
      rig.logs.join("\n"),
    );
    // The data is on the bdev: read it back through the ring.
    const rd = d.addBlkRequest({
      type: VIRTIO_BLK_T_IN,
      sector: 2,
      data: [{ len: 512, writable: true }],
    });
    const kick = sym.eventfd(0, EFD_NONBLOCK_CLOEXEC);
    try {
      // A new kick fd needs a restart of the ring: stop cleanly, then start with the kick.
      await b2.drainQueue(0);
      assertEquals(b2.stopQueue(0), 4);
      rig.start(b2, 4, kick);
      await waitFor(() => d.usedIdx() === 5, "the read completed");
      assertEquals(d.read(rd.data[0]?.gpa as number, 512), new Uint8Array(512).fill(0x12));
      await guard(b2.close(), "backend 2 let go");
    } finally {
      sym.close(kick);
    }
  });
});

Deno.test("vhost-blk: GET_VRING_BASE's drain completes requests on the bdev instead of dropping them", async () => {
  await withRig(async (rig) => {
    const d = rig.driver;
    const b = rig.backend();
    const inf = b.getInflightFd(1, QSIZE);
    b.setInflightFd({
      mmapSize: inf.mmapSize,
      mmapOffset: inf.mmapOffset,
      numQueues: 1,
      queueSize: QSIZE,
    }, inf.fd);
    injectError(rig.registry, "EE_M0", {
      ioType: "all",
      errorType: "delay",
      num: 2,
      delayUs: 200_000,
    });
    addWrite(d, 1, 1);
    addWrite(d, 2, 2);
    rig.start(b, 0, null);
    await waitFor(() => b.ioInFlight === 2, "two writes on the bdev");
    const drained = b.drainQueue(0);
    addWrite(d, 3, 3); // arrives during the stop: must not be taken
    await guard(drained, "drain");
    assertEquals(d.usedIdx(), 2, "both held writes reached the used ring before the reply");
    assertEquals(b.stopQueue(0), 2, "the base is after exactly what was taken");
    assert(rig.logs.some((l) => l.includes("drained 2 request(s)")), rig.logs.join("\n"));
    // The next start takes the third request (no resubmission: nothing was left in flight).
    rig.start(b, 2, null);
    await waitFor(() => d.usedIdx() === 3, "the third write");
    assert(!rig.logs.some((l) => l.includes("resubmitting")), rig.logs.join("\n"));
    await guard(b.close(), "backend let go");
  });
});

Deno.test("vhost-blk: a bad inflight area fails the queue start with a clear error", async () => {
  await withRig(async (rig) => {
    const b = rig.backend();
    const inf = b.getInflightFd(1, QSIZE);
    const m = mapShared(inf.fd, Number(inf.mmapSize), 0);
    try {
      b.setInflightFd(
        { mmapSize: inf.mmapSize, mmapOffset: 0n, numQueues: 1, queueSize: QSIZE },
        dup(inf.fd),
      );
      new DataView(m.buffer).setUint16(8, 9, true); // version 9
      assertThrows(
        () => rig.start(b, 0, null),
        Error,
        "bad inflight area: inflight region version 9",
      );
      // Wrong shapes are refused before anything is mapped.
      assertThrows(
        () =>
          b.setInflightFd(
            { mmapSize: 64n, mmapOffset: 0n, numQueues: 1, queueSize: QSIZE },
            dup(inf.fd),
          ),
        Error,
        "does not fit",
      );
      assertThrows(
        () =>
          b.setInflightFd({
            mmapSize: inf.mmapSize,
            mmapOffset: 0n,
            numQueues: 2,
            queueSize: QSIZE,
          }, dup(inf.fd)),
        Error,
        "the device has 1",
      );
      // An area larger than the file behind the fd would fault us: refused.
      assertThrows(
        () =>
          b.setInflightFd({
            mmapSize: inf.mmapSize,
            mmapOffset: 4096n,
            numQueues: 1,
            queueSize: QSIZE,
          }, dup(inf.fd)),
        RangeError,
        "past the end",
      );
    } finally {
      m.unmap();
      sym.close(inf.fd);
      await guard(b.close(), "backend let go");
    }
  });
});

Deno.test("vhost-blk: an EVENT_IDX driver that kicks only when asked keeps being served after a full queue", async () => {
  await withRig(async (rig) => {
    const d = rig.driver;
    const b = rig.backend();
    const kick = sym.eventfd(0, EFD_NONBLOCK_CLOEXEC);
    const one = new Uint8Array(new BigUint64Array([1n]).buffer);
    // A driver under EVENT_IDX: kicks only when avail_event says the device wants one.
    const publishAndMaybeKick = (sector: number) => {
      const before = d.availIdx;
      const r = addWrite(d, sector, sector);
      if (vringNeedEvent(d.availEvent(), d.availIdx, before)) sym.write(kick, one, 8n);
      return r;
    };
    try {
      rig.start(b, 0, kick);
      // Fill every slot: the device stops taking requests with the queue full, and the RAM
      // bdev then completes them all in one reactor pass (nothing in flight any more).
      for (let i = 0; i < QSIZE; i++) publishAndMaybeKick(i);
      await waitFor(() => d.usedIdx() === QSIZE, "the full queue completed");
      // The driver reuses the descriptors; it kicks only if the device asked for it.
      publishAndMaybeKick(100);
      await waitFor(() => d.usedIdx() === QSIZE + 1, "the request after the full queue");
      await guard(b.close(), "backend let go");
    } finally {
      sym.close(kick);
    }
  });
});

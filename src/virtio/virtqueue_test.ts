import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { VirtioDriver } from "../testing/virtio_driver.ts";
import { VirtqueueError, type VirtqueueErrorKind } from "./error.ts";
import { GuestMemory } from "./guest_memory.ts";
import {
  SplitVirtqueue,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  vringNeedEvent,
} from "./virtqueue.ts";

function kindOf(fn: () => unknown): VirtqueueErrorKind {
  return assertThrows(fn, VirtqueueError).kind;
}

Deno.test("virtqueue: the checking constructor", () => {
  const d = new VirtioDriver({ queueSize: 8 });
  const base = {
    size: 8,
    descAddr: d.descAddr,
    availAddr: d.availAddr,
    usedAddr: d.usedAddr,
    memory: d.memory,
    eventIdx: true,
    indirectDesc: true,
  };
  SplitVirtqueue.create(base);
  for (const size of [0, 3, 65536, 1.5, -8]) {
    assertEquals(kindOf(() => SplitVirtqueue.create({ ...base, size })), "queue-size");
  }
  assertEquals(
    kindOf(() => SplitVirtqueue.create({ ...base, descAddr: d.descAddr + 8 })),
    "queue-alignment",
  );
  assertEquals(
    kindOf(() => SplitVirtqueue.create({ ...base, availAddr: d.availAddr + 1 })),
    "queue-alignment",
  );
  assertEquals(
    kindOf(() => SplitVirtqueue.create({ ...base, usedAddr: d.usedAddr + 2 })),
    "queue-alignment",
  );
  assertEquals(kindOf(() => SplitVirtqueue.create({ ...base, descAddr: 0 })), "queue-address");
  const end = d.gpaBase + d.bytes.byteLength;
  assertEquals(
    kindOf(() => SplitVirtqueue.create({ ...base, usedAddr: end - 64 })),
    "queue-address",
  );
  assertEquals(
    kindOf(() => SplitVirtqueue.create({ ...base, availAddr: 2 ** 60 })),
    "queue-address",
  );
});

Deno.test("virtqueue: direct and indirect chains walk into segments", () => {
  for (const indirect of [false, true]) {
    const d = new VirtioDriver({ queueSize: 16, indirectDesc: true });
    const q = d.queue();
    const { head, placed } = d.addChain([
      { len: 16, writable: false },
      { len: 4096, writable: false },
      { len: 512, writable: true },
      { len: 1, writable: true },
    ], indirect);
    assertEquals(q.popAvail(), head);
    q.walkChain(head);
    assertEquals(q.segCount, 4);
    assertEquals(q.readableBytes, 4112);
    assertEquals(q.writableBytes, 513);
    for (let i = 0; i < 4; i++) {
      const p = placed[i];
      assert(p !== undefined);
      assertEquals(q.segGpa[i], p.gpa);
      assertEquals(q.segLen[i], p.len);
      assertEquals(q.segWritable[i], p.writable ? 1 : 0);
      assertEquals(q.segRegion[i], 0);
      assertEquals(q.segOffset[i], p.gpa - d.gpaBase);
    }
    assertEquals(q.popAvail(), -1);
    q.pushUsed(head, 513);
    assertEquals(d.readUsed(), [{ id: head, len: 513 }]);
  }
});

Deno.test("virtqueue: the rings wrap past 65535", () => {
  const d = new VirtioDriver({ queueSize: 4 });
  const q = d.queue();
  for (let i = 0; i < 70000; i++) {
    const { head } = d.addChain([{ len: 8, writable: true }]);
    assertEquals(q.popAvail(), head);
    q.walkChain(head);
    q.pushUsed(head, 8);
    const used = d.readUsed();
    assertEquals(used.length, 1);
    if (i % 1000 === 0) d.resetHeap();
  }
  assertEquals(q.lastAvailIdx, 70000 & 0xffff);
  assertEquals(q.usedIdx, 70000 & 0xffff);
});

/** Sets up one hostile chain and returns the error kind the walk gives. */
function hostile(
  build: (d: VirtioDriver) => number,
  opts: { indirectDesc?: boolean } = {},
): VirtqueueErrorKind {
  const d = new VirtioDriver({ queueSize: 8, indirectDesc: opts.indirectDesc ?? true });
  const q = d.queue();
  const head = build(d);
  d.publish(head);
  const popped = q.popAvail();
  return kindOf(() => q.walkChain(popped));
}

Deno.test("virtqueue: hostile chains give their documented kind", () => {
  const buf = (d: VirtioDriver) => d.alloc(64);
  const R = 0, W = VIRTQ_DESC_F_WRITE, N = VIRTQ_DESC_F_NEXT, I = VIRTQ_DESC_F_INDIRECT;
  const cases: [string, VirtqueueErrorKind, (d: VirtioDriver) => number, boolean?][] = [
    ["self loop", "chain-loop", (d) => {
      d.writeDesc(0, { addr: buf(d), len: 8, flags: N, next: 0 });
      return 0;
    }],
    ["two-step loop", "chain-loop", (d) => {
      d.writeDesc(0, { addr: buf(d), len: 8, flags: N, next: 1 });
      d.writeDesc(1, { addr: buf(d), len: 8, flags: N, next: 0 });
      return 0;
    }],
    ["next out of range", "desc-index", (d) => {
      d.writeDesc(0, { addr: buf(d), len: 8, flags: N, next: 8 });
      return 0;
    }],
    ["address before memory", "desc-address", (d) => {
      d.writeDesc(0, { addr: 0, len: 8, flags: R, next: 0 });
      return 0;
    }],
    ["address past memory", "desc-address", (d) => {
      d.writeDesc(0, { addr: d.gpaBase + d.bytes.byteLength - 4, len: 8, flags: R, next: 0 });
      return 0;
    }],
    ["address past 2^53", "desc-address", (d) => {
      d.writeDesc(0, { addr: 0xffff_ffff_ffff_fff0n, len: 0x20, flags: R, next: 0 });
      return 0;
    }],
    ["huge length", "desc-address", (d) => {
      d.writeDesc(0, { addr: buf(d), len: 0xffff_ffff, flags: W, next: 0 });
      return 0;
    }],
    ["readable after writable", "order", (d) => {
      d.writeDesc(0, { addr: buf(d), len: 8, flags: W | N, next: 1 });
      d.writeDesc(1, { addr: buf(d), len: 8, flags: R, next: 0 });
      return 0;
    }],
    ["readable after an empty writable", "order", (d) => {
      d.writeDesc(0, { addr: buf(d), len: 0, flags: W | N, next: 1 });
      d.writeDesc(1, { addr: buf(d), len: 8, flags: R, next: 0 });
      return 0;
    }],
    ["indirect without the feature", "indirect-feature", (d) => {
      const t = d.writeIndirectTable([{ addr: buf(d), len: 8, flags: R, next: 0 }]);
      d.writeDesc(0, { addr: t, len: 16, flags: I, next: 0 });
      return 0;
    }, false],
    ["nested indirect", "indirect-nested", (d) => {
      const inner = d.writeIndirectTable([{ addr: buf(d), len: 8, flags: R, next: 0 }]);
      const t = d.writeIndirectTable([{ addr: inner, len: 16, flags: I, next: 0 }]);
      d.writeDesc(0, { addr: t, len: 16, flags: I, next: 0 });
      return 0;
    }],
    ["indirect with next", "indirect-next", (d) => {
      const t = d.writeIndirectTable([{ addr: buf(d), len: 8, flags: R, next: 0 }]);
      d.writeDesc(0, { addr: t, len: 16, flags: I | N, next: 1 });
      return 0;
    }],
    ["indirect table not a multiple of 16", "indirect-size", (d) => {
      const t = d.writeIndirectTable([{ addr: buf(d), len: 8, flags: R, next: 0 }]);
      d.writeDesc(0, { addr: t, len: 24, flags: I, next: 0 });
      return 0;
    }],
    ["empty indirect table", "indirect-size", (d) => {
      d.writeDesc(0, { addr: buf(d), len: 0, flags: I, next: 0 });
      return 0;
    }],
    ["indirect table over the queue size", "indirect-size", (d) => {
      d.writeDesc(0, { addr: d.alloc(16 * 9), len: 16 * 9, flags: I, next: 0 });
      return 0;
    }],
    ["indirect table outside memory", "indirect-address", (d) => {
      d.writeDesc(0, { addr: 0x1000, len: 16, flags: I, next: 0 });
      return 0;
    }],
    ["indirect next out of the table", "desc-index", (d) => {
      const t = d.writeIndirectTable([
        { addr: buf(d), len: 8, flags: N, next: 1 },
        { addr: buf(d), len: 8, flags: N, next: 2 },
      ]);
      d.writeDesc(0, { addr: t, len: 32, flags: I, next: 0 });
      return 0;
    }],
    ["indirect loop", "chain-loop", (d) => {
      const t = d.writeIndirectTable([
        { addr: buf(d), len: 8, flags: N, next: 1 },
        { addr: buf(d), len: 8, flags: N, next: 0 },
      ]);
      d.writeDesc(0, { addr: t, len: 32, flags: I, next: 0 });
      return 0;
    }],
    ["direct then a full indirect table", "chain-too-long", (d) => {
      const t = d.writeIndirectTable(
        Array.from({ length: 8 }, (_, i) => ({ addr: buf(d), len: 8, flags: N, next: i + 1 }))
          .map((e, i) => i === 7 ? { ...e, flags: R } : e),
      );
      d.writeDesc(0, { addr: buf(d), len: 8, flags: N, next: 1 });
      d.writeDesc(1, { addr: t, len: 16 * 8, flags: I, next: 0 });
      return 0;
    }],
  ];
  for (const [name, kind, build, indirect] of cases) {
    assertEquals(hostile(build, { indirectDesc: indirect ?? true }), kind, name);
  }
});

Deno.test("virtqueue: chains longer than 4 GiB in total are refused", () => {
  const d = new VirtioDriver({ queueSize: 8, memoryBytes: 1 << 30 });
  const q = d.queue();
  const big = d.alloc((1 << 30) - (1 << 20));
  for (let i = 0; i < 5; i++) {
    d.writeDesc(i, {
      addr: big,
      len: (1 << 30) - (1 << 20),
      flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
      next: i + 1,
    });
  }
  d.writeDesc(5, { addr: big, len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  d.publish(0);
  assertEquals(kindOf(() => q.walkChain(q.popAvail())), "chain-bytes");
});

Deno.test("virtqueue: a bad avail idx and a bad head", () => {
  const d = new VirtioDriver({ queueSize: 8 });
  const q = d.queue();
  d.publish(8);
  assertEquals(kindOf(() => q.popAvail()), "desc-index");
  assertEquals(q.popAvail(), -1, "the bad entry was consumed");
  assertEquals(kindOf(() => q.walkChain(12)), "desc-index");
  assertEquals(kindOf(() => q.pushUsed(8, 0)), "used-head");
  assert(!q.broken);
  for (const idx of [9 + 1, 0xffff]) {
    const fresh = new VirtioDriver({ queueSize: 8 });
    const fq = fresh.queue();
    fresh.setAvailIdx(idx);
    assertEquals(kindOf(() => fq.popAvail()), "avail-idx");
    assert(fq.broken);
    fresh.setAvailIdx(0);
    assertEquals(kindOf(() => fq.popAvail()), "avail-idx", "stays broken");
  }
  // Exactly a queue's worth ahead is fine.
  const full = new VirtioDriver({ queueSize: 8 });
  const fullQ = full.queue();
  full.setAvailIdx(8);
  assertEquals(fullQ.popAvail(), 0);
});

Deno.test("virtqueue: a failed walk leaves no chain behind", () => {
  const d = new VirtioDriver({ queueSize: 8 });
  const q = d.queue();
  const buf = d.alloc(64);
  d.writeDesc(0, { addr: buf, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
  d.writeDesc(1, { addr: 0, len: 8, flags: 0, next: 0 });
  assertEquals(kindOf(() => q.walkChain(0)), "desc-address");
  assertEquals([q.segCount, q.readableBytes, q.writableBytes], [0, 0, 0]);
});

Deno.test("virtqueue: vringNeedEvent matches the spec's formula across wraparound", () => {
  // Reference: notify when event_idx is in [old, new) modulo 2^16.
  const crossed = (ev: number, nw: number, old: number) => {
    const span = (nw - old + 65536) % 65536;
    const dist = (ev - old + 65536) % 65536;
    return dist < span;
  };
  const samples = [0, 1, 2, 100, 32767, 32768, 65534, 65535];
  for (const old of samples) {
    for (let step = 0; step < 5; step++) {
      const nw = (old + step) & 0xffff;
      for (let ev = (old - 3) & 0xffff, k = 0; k < 10; k++, ev = (ev + 1) & 0xffff) {
        assertEquals(vringNeedEvent(ev, nw, old), crossed(ev, nw, old), `${ev} ${nw} ${old}`);
      }
    }
  }
  assert(vringNeedEvent(65535, 0, 65535));
  assert(!vringNeedEvent(0, 0, 65535));
  assert(vringNeedEvent(0, 1, 65535));
});

Deno.test("virtqueue: EVENT_IDX notification decisions", () => {
  const d = new VirtioDriver({ queueSize: 4, eventIdx: true });
  const q = d.queue();
  const serve = () => {
    const { head } = d.addChain([{ len: 1, writable: true }]);
    q.walkChain(q.popAvail());
    q.pushUsed(head, 1);
  };
  serve();
  assert(q.needsNotification(), "the first one always notifies");
  assert(!q.needsNotification(), "nothing new");
  // Walk the used index across 65535 with used_event set to the next index each time.
  for (let i = 0; i < 70000; i++) {
    d.setUsedEvent(q.usedIdx); // notify me after the next one
    serve();
    assert(q.needsNotification(), `step ${i}`);
    d.readUsed();
    if (i % 1000 === 0) d.resetHeap();
  }
  // used_event far ahead: no notification until it is crossed.
  d.setUsedEvent((q.usedIdx + 2) & 0xffff);
  serve();
  assert(!q.needsNotification());
  serve();
  assert(!q.needsNotification());
  serve();
  assert(q.needsNotification(), "crossed");
  // setAvailEvent writes the used ring's trailing field.
  q.setAvailEvent(0x1234);
  assertEquals(d.availEvent(), 0x1234);
  q.setNoNotify(true);
  assertEquals(d.usedFlags(), 1);
});

Deno.test("virtqueue: NO_INTERRUPT without EVENT_IDX", () => {
  const d = new VirtioDriver({ queueSize: 4 });
  const q = d.queue();
  assert(q.needsNotification());
  d.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  assert(!q.needsNotification());
  q.setAvailEvent(7); // no-op without EVENT_IDX
  assertEquals(d.availEvent(), 0);
});

Deno.test("virtqueue: a buffer spanning two adjacent regions is refused", () => {
  const a = new Uint8Array(0x4000), b = new Uint8Array(0x1000);
  const memory = new GuestMemory([
    { gpa: 0, size: 0x4000, uva: 0x10_0000, bytes: a },
    { gpa: 0x4000, size: 0x1000, uva: 0x20_0000, bytes: b },
  ]);
  const q = SplitVirtqueue.create({
    size: 4,
    descAddr: 0,
    availAddr: 0x100,
    usedAddr: 0x200,
    memory,
    eventIdx: false,
    indirectDesc: false,
  });
  const v = new DataView(a.buffer);
  const desc = (i: number, addr: number, len: number, flags: number, next: number) => {
    v.setBigUint64(16 * i, BigInt(addr), true);
    v.setUint32(16 * i + 8, len, true);
    v.setUint16(16 * i + 12, flags, true);
    v.setUint16(16 * i + 14, next, true);
  };
  desc(0, 0x3ff0, 0x20, 0, 0);
  assertEquals(kindOf(() => q.walkChain(0)), "desc-address");
  desc(0, 0x3ff0, 0x10, VIRTQ_DESC_F_NEXT, 1);
  desc(1, 0x4000, 0x1000, VIRTQ_DESC_F_WRITE, 0);
  q.walkChain(0);
  assertEquals(q.segCount, 2);
  assertEquals([q.segRegion[0], q.segRegion[1], q.segOffset[1]], [0, 1, 0]);
  // The rings themselves must each lie inside one region.
  assertEquals(
    kindOf(() =>
      SplitVirtqueue.create({
        size: 4,
        descAddr: 0x3fe0,
        availAddr: 0x100,
        usedAddr: 0x200,
        memory,
        eventIdx: false,
        indirectDesc: false,
      })
    ),
    "queue-address",
  );
});

Deno.test("virtqueue: resumes from a given last avail index", () => {
  const d = new VirtioDriver({ queueSize: 8 });
  const first = d.addChain([{ len: 8, writable: true }]).head;
  const second = d.addChain([{ len: 8, writable: true }]).head;
  assert(first !== second);
  const q = SplitVirtqueue.create({
    size: 8,
    descAddr: d.descAddr,
    availAddr: d.availAddr,
    usedAddr: d.usedAddr,
    memory: d.memory,
    eventIdx: false,
    indirectDesc: false,
    lastAvailIdx: 1,
  });
  assertEquals(q.popAvail(), second);
  assertEquals(q.popAvail(), -1);
});

Deno.test("virtqueue: the driver model's hostile rings", () => {
  const cases: [VirtqueueErrorKind, (d: VirtioDriver) => void][] = [
    ["chain-loop", (d) => d.addLoop(3)],
    ["desc-address", (d) => d.addOutOfRange()],
    ["desc-address", (d) => d.addHugeLength()],
    ["indirect-nested", (d) => d.addNestedIndirect()],
  ];
  for (const [kind, build] of cases) {
    const d = new VirtioDriver({ queueSize: 8, indirectDesc: true });
    const q = d.queue();
    build(d);
    assertEquals(kindOf(() => q.walkChain(q.popAvail())), kind);
    assertEquals(q.popAvail(), -1);
  }
  const d = new VirtioDriver({ queueSize: 8 });
  const q = d.queue();
  d.jumpAvailIdx(9);
  assertEquals(kindOf(() => q.popAvail()), "avail-idx");
});

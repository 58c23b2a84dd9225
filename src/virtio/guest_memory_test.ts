import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { GUEST_MEMORY_MAX_REGIONS, GuestAddress, GuestMemory } from "./guest_memory.ts";
import { VirtqueueError } from "./error.ts";

function twoRegions(): GuestMemory {
  return new GuestMemory([
    { gpa: 0x10_0000, size: 0x1000, uva: 0x5000_0000, bytes: new Uint8Array(0x1000) },
    { gpa: 0, size: 0x2000, uva: 0x4000_0000, bytes: new Uint8Array(0x2000) },
  ]);
}

Deno.test("guest memory: translate finds the region and offset", () => {
  const m = twoRegions();
  const at = new GuestAddress();
  assert(m.translate(0x10, 0x10, at));
  assertEquals([at.region, at.offset], [0, 0x10]);
  assert(m.translate(0x10_0ff0, 0x10, at));
  assertEquals([at.region, at.offset], [1, 0xff0]);
  assertEquals(m.regionGpa(1), 0x10_0000);
});

Deno.test("guest memory: a range must lie inside one region", () => {
  const m = twoRegions();
  const at = new GuestAddress();
  assert(!m.translate(0x1ff0, 0x11, at));
  assertEquals(at.region, -1);
  assert(!m.translate(0x10_0ff0, 0x11, at));
  assert(!m.translate(0x2000, 1, at), "hole");
  assert(m.translate(0x2000, 0, at), "zero length at the end");
  assert(m.translate(0x10_0000, 0x1000, at));
  assert(!m.translate(0x10_1000, 1, at));
});

Deno.test("guest memory: huge and odd values are refused, never wrap", () => {
  const m = twoRegions();
  const at = new GuestAddress();
  for (
    const [gpa, len] of [
      [Number.MAX_SAFE_INTEGER, 1],
      [2 ** 64, 1],
      [0x10, 2 ** 64],
      [0x10, Number.MAX_SAFE_INTEGER],
      [-1, 1],
      [0x10, -1],
      [0.5, 1],
      [NaN, 1],
      [0, Infinity],
    ]
  ) {
    assert(!m.translate(gpa ?? 0, len ?? 0, at), `${gpa} ${len}`);
  }
});

Deno.test("guest memory: uvaToGpa", () => {
  const m = twoRegions();
  assertEquals(m.uvaToGpa(0x4000_0010, 8), 0x10);
  assertEquals(m.uvaToGpa(0x5000_0ff8, 8), 0x10_0ff8);
  assertEquals(m.uvaToGpa(0x5000_0ff9, 8), -1);
  assertEquals(m.uvaToGpa(0x3000_0000, 1), -1);
});

Deno.test("guest memory: bad tables are refused", () => {
  const r = (gpa: number, size: number, uva: number, bytes = size) => ({
    gpa,
    size,
    uva,
    bytes: new Uint8Array(bytes),
  });
  const bad = [
    [r(0, 0x1000, 0), r(0x800, 0x1000, 0x10000)],
    [r(0, 0x1000, 0), r(0x1000, 0x1000, 0x800)],
    [r(0, 0x1000, 0, 0x800)],
    [r(0, 0, 0)],
    [r(2 ** 53, 0x10, 0)],
    [r(Number.MAX_SAFE_INTEGER - 4, 0x10, 0)],
  ];
  for (const t of bad) {
    const e = assertThrows(() => new GuestMemory(t), VirtqueueError);
    assertEquals(e.kind, "memory-region");
  }
  const many = Array.from(
    { length: GUEST_MEMORY_MAX_REGIONS + 1 },
    (_, i) => ({ gpa: i * 16, size: 16, uva: i * 16, bytes: new Uint8Array(16) }),
  );
  assertEquals(assertThrows(() => new GuestMemory(many), VirtqueueError).kind, "memory-region");
  const most = new GuestMemory(many.slice(1));
  const at = new GuestAddress();
  assert(most.translate(100 * 16 + 3, 13, at));
  assertEquals([at.region, at.offset], [99, 3]);
});

Deno.test("guest memory: hot-plug keeps slot indexes stable", () => {
  const m = new GuestMemory([], 4);
  const at = new GuestAddress();
  const a = new Uint8Array(0x1000), b = new Uint8Array(0x1000), c = new Uint8Array(0x1000);
  assertEquals(m.add({ gpa: 0x10_0000, size: 0x1000, uva: 0x5000_0000, bytes: a }), 0);
  assertEquals(m.add({ gpa: 0, size: 0x1000, uva: 0x4000_0000, bytes: b }), 1);
  assertEquals(m.regionCount, 2);
  assertEquals(m.activeSlots(), [1, 0]);
  assert(m.translate(0x10_0010, 4, at));
  assertEquals([at.region, at.offset], [0, 0x10]);

  // Removed: no longer translatable, but its slot still reaches the mapping.
  assertEquals(m.remove(0x10_0000, 0x1000, 0x5000_0000), 0);
  assert(!m.translate(0x10_0010, 4, at));
  assertEquals(m.uvaToGpa(0x5000_0010, 4), -1);
  assert(m.isRetired(0));
  assert(m.bytes(0) === a);
  assertEquals(m.regionCount, 1);

  // A new region never takes a retired slot, even at the same addresses.
  assertEquals(m.add({ gpa: 0x10_0000, size: 0x1000, uva: 0x5000_0000, bytes: c }), 2);
  assert(m.translate(0x10_0010, 4, at));
  assertEquals(at.region, 2);
  assert(m.bytes(0) === a, "the retired region is still reachable by index");

  m.release(0);
  assertThrows(() => m.bytes(0), RangeError);
  assertThrows(() => m.release(0), RangeError);
  assertThrows(() => m.release(2), RangeError, "not a removed region");
  assertEquals(m.add({ gpa: 0x20_0000, size: 0x1000, uva: 0x6000_0000, bytes: a }), 0);
  assertEquals(m.activeSlots(), [1, 2, 0]);
  assert(m.translate(0x20_0ff0, 0x10, at));
  assertEquals([at.region, at.offset], [0, 0xff0]);
  assertEquals(m.remove(0x20_0000, 0x1000, 0x6000_0001), -1, "must match exactly");
});

Deno.test("guest memory: hot-added regions are validated", () => {
  const m = new GuestMemory([
    { gpa: 0x10_0000, size: 0x1000, uva: 0x5000_0000, bytes: new Uint8Array(0x1000) },
  ], 2);
  const bad = [
    { gpa: 0x10_0800, size: 0x1000, uva: 0x9000_0000 }, // overlaps in guest addresses
    { gpa: 0x0f_f800, size: 0x1000, uva: 0x9000_0000 }, // overlaps from below
    { gpa: 0, size: 0x1000, uva: 0x5000_0800 }, // overlaps in front-end addresses
    { gpa: 0, size: 0, uva: 0x9000_0000 },
    { gpa: -4096, size: 0x1000, uva: 0x9000_0000 },
    { gpa: 2 ** 53 - 0x800, size: 0x1000, uva: 0x9000_0000 },
    { gpa: 0, size: 0x1000, uva: 2 ** 64 },
  ];
  for (const r of bad) {
    const e = assertThrows(
      () => m.add({ ...r, bytes: new Uint8Array(Math.max(r.size, 0)) }),
      VirtqueueError,
    );
    assertEquals(e.kind, "memory-region", JSON.stringify(r));
  }
  const short = assertThrows(
    () => m.add({ gpa: 0, size: 0x1000, uva: 0x9000_0000, bytes: new Uint8Array(0x800) }),
    VirtqueueError,
  );
  assert(short.message.includes("mapping"), short.message);
  assertEquals(m.regionCount, 1, "failed adds change nothing");

  // Slots are bounded; a retired region still holds its slot.
  m.add({ gpa: 0, size: 0x1000, uva: 0x9000_0000, bytes: new Uint8Array(0x1000) });
  assertEquals(m.remove(0, 0x1000, 0x9000_0000), 1);
  const full = assertThrows(
    () => m.add({ gpa: 0x40_0000, size: 0x1000, uva: 0xa000_0000, bytes: new Uint8Array(0x1000) }),
    VirtqueueError,
  );
  assert(full.message.includes("slots"), full.message);
  m.release(1);
  assertEquals(
    m.add({ gpa: 0x40_0000, size: 0x1000, uva: 0xa000_0000, bytes: new Uint8Array(0x1000) }),
    1,
  );
});

Deno.test("guest memory: random add / remove / release agree with a simple model", () => {
  let s = 0x9e37_79b9;
  const rand = (n: number) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
  const SLOTS = 6;
  const m = new GuestMemory([], SLOTS);
  // The model: per slot, the region (or null) and whether it is active.
  const model: ({ gpa: number; size: number; uva: number; active: boolean } | null)[] = new Array(
    SLOTS,
  ).fill(null);
  const at = new GuestAddress();
  for (let iter = 0; iter < 3000; iter++) {
    const op = rand(4);
    if (op === 0) {
      const gpa = rand(64) * 0x1000, size = (1 + rand(8)) * 0x1000, uva = rand(64) * 0x1000;
      const clash = model.some((r) =>
        r !== null && r.active &&
        ((gpa < r.gpa + r.size && r.gpa < gpa + size) ||
          (uva < r.uva + r.size && r.uva < uva + size))
      );
      const free = model.indexOf(null);
      let slot = -1;
      try {
        slot = m.add({ gpa, size, uva, bytes: new Uint8Array(size) });
      } catch (e) {
        assert(e instanceof VirtqueueError);
      }
      if (clash || free < 0) assertEquals(slot, -1, `add ${gpa} ${size} ${uva} must fail`);
      else {
        assertEquals(slot, free, "the lowest free slot");
        model[slot] = { gpa, size, uva, active: true };
      }
    } else if (op === 1) {
      const active = model.flatMap((r, i) => (r?.active ? [i] : []));
      const i = active[rand(Math.max(active.length, 1))];
      const r = i === undefined ? null : model[i];
      if (i !== undefined && r) {
        assertEquals(m.remove(r.gpa, r.size, r.uva), i);
        r.active = false;
      }
    } else if (op === 2) {
      const retired = model.flatMap((r, i) => (r !== null && !r.active ? [i] : []));
      const i = retired[rand(Math.max(retired.length, 1))];
      if (i !== undefined) {
        m.release(i);
        model[i] = null;
      }
    } else {
      const gpa = rand(80) * 0x800, len = rand(0x3000);
      // Where regions touch, an empty range at the boundary belongs to the later one.
      let hit = -1;
      model.forEach((r, i) => {
        if (r === null || !r.active || gpa < r.gpa || gpa + len > r.gpa + r.size) return;
        if (hit < 0 || r.gpa > (model[hit]?.gpa ?? 0)) hit = i;
      });
      assertEquals(m.translate(gpa, len, at), hit >= 0, `translate ${gpa} ${len}`);
      if (hit >= 0) assertEquals([at.region, at.offset], [hit, gpa - (model[hit]?.gpa ?? 0)]);
    }
    assertEquals(m.regionCount, model.filter((r) => r?.active).length);
  }
});

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

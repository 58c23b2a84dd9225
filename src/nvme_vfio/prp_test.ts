import { assertEquals, assertThrows } from "../testing/assert.ts";
import { setPrps } from "./prp.ts";

const PAGE = 4096;

function u64(v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * 0x1_0000_0000;
}

function make() {
  const sqe = new DataView(new ArrayBuffer(64));
  const list = new DataView(new ArrayBuffer(PAGE));
  return { sqe, list };
}

Deno.test("PRP: a transfer inside one page uses PRP1 only", () => {
  const { sqe, list } = make();
  assertEquals(setPrps(sqe, 0x1_0000_0200, 512, PAGE, list, 0x9000), 0);
  assertEquals(u64(sqe, 24), 0x1_0000_0200);
  assertEquals(u64(sqe, 32), 0);
});

Deno.test("PRP: a transfer crossing into a second page puts that page in PRP2", () => {
  const { sqe, list } = make();
  // 4 KiB from offset 0x800: half of page 0, half of page 1.
  assertEquals(setPrps(sqe, 0x20_0800, PAGE, PAGE, list, 0x9000), 0);
  assertEquals(u64(sqe, 24), 0x20_0800);
  assertEquals(u64(sqe, 32), 0x20_1000);
  // Exactly two whole pages.
  assertEquals(setPrps(sqe, 0x20_0000, 2 * PAGE, PAGE, list, 0x9000), 0);
  assertEquals(u64(sqe, 32), 0x20_1000);
});

Deno.test("PRP: more than two pages go through a PRP list of page addresses", () => {
  const { sqe, list } = make();
  // 16 KiB from offset 0x200 touches 5 pages: PRP1 + 4 list entries.
  assertEquals(setPrps(sqe, 0x30_0200, 4 * PAGE, PAGE, list, 0x9000), 4);
  assertEquals(u64(sqe, 24), 0x30_0200);
  assertEquals(u64(sqe, 32), 0x9000);
  for (let i = 0; i < 4; i++) assertEquals(u64(list, i * 8), 0x30_1000 + i * PAGE);
  // Aligned 3 pages: PRP1 + a list of 2.
  assertEquals(setPrps(sqe, 0x30_0000, 3 * PAGE, PAGE, list, 0x9000), 2);
  assertEquals(u64(list, 0), 0x30_1000);
  assertEquals(u64(list, 8), 0x30_2000);
});

Deno.test("PRP: a transfer needing more entries than one list page holds is refused", () => {
  const { sqe } = make();
  const small = new DataView(new ArrayBuffer(16));
  assertThrows(() => setPrps(sqe, 0, 4 * PAGE, PAGE, small, 0x9000), RangeError, "PRP list");
});

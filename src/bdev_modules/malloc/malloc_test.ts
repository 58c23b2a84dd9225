import { bdevConformance } from "../../testing/bdev_conformance.ts";
import { startReactor } from "../../testing/reactor_thread.ts";
import { assertEquals, assertThrows } from "../../testing/assert.ts";
import { BdevExistsError, BdevInvalidError, BdevRegistry } from "../../bdev/mod.ts";
import { createMallocBdev, deleteMallocBdev } from "./malloc.ts";

bdevConformance({
  module: "malloc",
  startThread: startReactor,
  create: (r) =>
    Promise.resolve(createMallocBdev(r, { name: "M0", numBlocks: 8192, blockSize: 512 })),
  destroy: (r, n) => deleteMallocBdev(r, n),
});

bdevConformance({
  module: "malloc 4K blocks",
  startThread: startReactor,
  create: (r) =>
    Promise.resolve(createMallocBdev(r, { name: "M4", numBlocks: 4096, blockSize: 4096 })),
  destroy: (r, n) => deleteMallocBdev(r, n),
});

Deno.test("malloc: bad geometry and duplicate names are refused clearly", async () => {
  const r = new BdevRegistry();
  assertThrows(
    () => createMallocBdev(r, { name: "x", numBlocks: 8, blockSize: 1000 }),
    BdevInvalidError,
    "power of two",
  );
  assertThrows(
    () => createMallocBdev(r, { name: "bad name", numBlocks: 8, blockSize: 512 }),
    BdevInvalidError,
    "bdev name",
  );
  assertThrows(
    () => createMallocBdev(r, { name: "huge", numBlocks: 2 ** 40, blockSize: 4096 }),
    BdevInvalidError,
    "limit",
  );
  createMallocBdev(r, { name: "a", numBlocks: 8, blockSize: 512 });
  assertThrows(
    () => createMallocBdev(r, { name: "a", numBlocks: 8, blockSize: 512 }),
    BdevExistsError,
  );
  assertEquals(r.list().map((b) => b.name), ["a"]);
  await deleteMallocBdev(r, "a");
});

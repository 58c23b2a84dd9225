import { bdevConformance } from "../../testing/bdev_conformance.ts";
import { startReactor } from "../../testing/reactor_thread.ts";
import { assertEquals, assertRejects, assertThrows } from "../../testing/assert.ts";
import { BdevBusyError, BdevNotFoundError, BdevRegistry } from "../../bdev/mod.ts";
import { createMallocBdev, deleteMallocBdev } from "../malloc/malloc.ts";
import { createPassthruBdev, deletePassthruBdev } from "./passthru.ts";

bdevConformance({
  module: "passthru",
  startThread: startReactor,
  ioPoolSize: 16,
  create: (r) => {
    createMallocBdev(r, { name: "M0", numBlocks: 2048, blockSize: 4096 });
    return Promise.resolve(createPassthruBdev(r, { name: "P0", baseBdevName: "M0" }));
  },
  destroy: async (r, n) => {
    await deletePassthruBdev(r, n);
    await deleteMallocBdev(r, "M0");
  },
});

Deno.test("passthru: claims its base; the base cannot be deleted or claimed twice", async () => {
  const r = new BdevRegistry();
  createMallocBdev(r, { name: "M0", numBlocks: 64, blockSize: 512 });
  createPassthruBdev(r, { name: "P0", baseBdevName: "M0" });
  assertEquals(r.get("M0").toJSON()["claimed"], true);
  await assertRejects(
    () => deleteMallocBdev(r, "M0"),
    BdevBusyError,
    'claimed by passthru bdev "P0"',
  );
  assertThrows(() => createPassthruBdev(r, { name: "P1", baseBdevName: "M0" }), BdevBusyError);
  assertThrows(
    () => createPassthruBdev(r, { name: "P2", baseBdevName: "nope" }),
    BdevNotFoundError,
  );
  await deletePassthruBdev(r, "P0");
  assertEquals(r.get("M0").toJSON()["claimed"], false);
  await deleteMallocBdev(r, "M0");
});

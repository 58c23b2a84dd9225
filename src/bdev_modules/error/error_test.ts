import { bdevConformance } from "../../testing/bdev_conformance.ts";
import { startReactor } from "../../testing/reactor_thread.ts";
import { assert, assertEquals, assertRejects } from "../../testing/assert.ts";
import { BdevIoError, BdevIoStatus, BdevRegistry, runIo } from "../../bdev/mod.ts";
import { createMallocBdev, deleteMallocBdev } from "../malloc/malloc.ts";
import { createErrorBdev, deleteErrorBdev, injectError } from "./error.ts";

bdevConformance({
  module: "error",
  startThread: startReactor,
  ioPoolSize: 8,
  create: (r) => {
    createMallocBdev(r, { name: "M0", numBlocks: 8192, blockSize: 512 });
    return Promise.resolve(createErrorBdev(r, "M0"));
  },
  destroy: async (r, n) => {
    await deleteErrorBdev(r, n);
    await deleteMallocBdev(r, "M0");
  },
});

Deno.test("error bdev: fails, delays and corrupts exactly the chosen I/Os", async () => {
  const { thread, stop } = await startReactor();
  const r = new BdevRegistry();
  createMallocBdev(r, { name: "M0", numBlocks: 64, blockSize: 512 });
  const name = createErrorBdev(r, "M0");
  assertEquals(name, "EE_M0");
  const desc = r.open(name, true);
  const ch = desc.getIoChannel(thread);
  const buf = new Uint8Array(512).fill(7);
  try {
    injectError(r, name, { ioType: "write", errorType: "failure", num: 2 });
    for (let i = 0; i < 2; i++) {
      const e = await assertRejects(() => runIo(ch, (io) => ch.write(io, buf, 0, 1)), BdevIoError);
      assertEquals(e.status, BdevIoStatus.Failed);
      assert(e.message.includes("errno 5"), e.message);
    }
    await runIo(ch, (io) => ch.write(io, buf, 0, 1)); // the third write passes
    await runIo(ch, (io) => ch.read(io, buf, 0, 1)); // reads were never armed

    injectError(r, name, { ioType: "read", errorType: "delay", num: 1, delayUs: 200_000 });
    let delayedDone = false;
    const delayed = runIo(ch, (io) => ch.read(io, new Uint8Array(512), 1, 1)).then(() => {
      delayedDone = true;
    });
    await runIo(ch, (io) => ch.write(io, buf, 2, 1)); // others pass while one waits
    assertEquals(delayedDone, false);
    await delayed;

    injectError(r, name, {
      ioType: "read",
      errorType: "corrupt_data",
      num: 1,
      corruptOffset: 3,
      corruptValue: 0x10,
    });
    const got = new Uint8Array(512);
    await runIo(ch, (io) => ch.read(io, got, 0, 1));
    assertEquals(got[3], 7 ^ 0x10);
    assertEquals(got[4], 7);
  } finally {
    ch.close();
    desc.close();
    await deleteErrorBdev(r, name);
    await deleteMallocBdev(r, "M0");
    await stop();
  }
});

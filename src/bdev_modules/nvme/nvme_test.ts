import { bdevConformance, fillPattern } from "../../testing/bdev_conformance.ts";
import { startReactor } from "../../testing/reactor_thread.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../testing/assert.ts";
import { BdevIoError, BdevRegistry, runIo } from "../../bdev/mod.ts";
import { FakeNvmeController, type FakeNvmeOptions } from "../../nvme_vfio/fake_controller.ts";
import { NvmeIoOpcode } from "../../nvme/mod.ts";
import {
  attachNvmeController,
  detachNvmeController,
  getNvmeControllers,
  type NvmeBackend,
  nvmeControllerOf,
} from "./nvme.ts";
import type { NvmeDriverOptions } from "../../nvme_vfio/controller.ts";
import type { Reactor } from "../../reactor/mod.ts";
import { App } from "../../app.ts";
import { eventfd, sym } from "../../../ffi/libc.ts";

function fakeBackend(fake: FakeNvmeController): NvmeBackend & { closed: boolean } {
  const b = {
    mmio: fake,
    dma: fake,
    closed: false,
    describe: () => ({ fake: true }),
    close: () => {
      b.closed = true;
    },
  };
  return b;
}

async function attachFake(
  registry: BdevRegistry,
  fake: FakeNvmeController,
  options: Omit<NvmeDriverOptions, "log"> = {},
  name = "Nvme0",
): Promise<string[]> {
  return await attachNvmeController(
    registry,
    { name, trtype: "PCIe", traddr: "0000:00:04.0", options },
    () => {},
    () => fakeBackend(fake),
  );
}

// The conformance suite on the in-memory controller; test/vm/nvme_vfio_test.ts
// runs the same suite in the guest on QEMU's emulated controller.
bdevConformance({
  module: "nvme (in-memory controller)",
  startThread: startReactor,
  async create(registry) {
    // A small transfer size makes multi-command I/Os and PRP lists common.
    const names = await attachFake(registry, new FakeNvmeController(), {
      ioQueueDepth: 16,
      maxTransferBytes: 16384,
    });
    return names[0] as string;
  },
  async destroy(registry) {
    await detachNvmeController(registry, "Nvme0");
  },
});

bdevConformance({
  module: "nvme (no Write Zeroes, DSM deallocate)",
  startThread: startReactor,
  async create(registry) {
    const fake = new FakeNvmeController({
      oncs: 1 << 2,
      dlfeat: 1,
      blockSize: 4096,
      numBlocks: 2048,
    });
    return (await attachFake(registry, fake))[0] as string;
  },
  async destroy(registry) {
    await detachNvmeController(registry, "Nvme0");
  },
});

bdevConformance({
  module: "nvme (SGL data pointers)",
  startThread: startReactor,
  async create(registry) {
    const fake = new FakeNvmeController({ sgls: 1 });
    return (await attachFake(registry, fake, { maxTransferBytes: 32768 }))[0] as string;
  },
  async destroy(registry) {
    await detachNvmeController(registry, "Nvme0");
  },
});

async function withNvme(
  fakeOpts: FakeNvmeOptions,
  opts: Omit<NvmeDriverOptions, "log">,
  fn: (ctx: {
    fake: FakeNvmeController;
    registry: BdevRegistry;
    reactor: Reactor;
    ch: ReturnType<ReturnType<BdevRegistry["open"]>["getIoChannel"]>;
  }) => Promise<void>,
): Promise<void> {
  const fake = new FakeNvmeController(fakeOpts);
  const registry = new BdevRegistry();
  const { thread, stop } = await startReactor();
  await attachFake(registry, fake, opts);
  const desc = registry.open("Nvme0n1", true);
  const ch = desc.getIoChannel(thread);
  try {
    await fn({ fake, registry, reactor: thread, ch });
  } finally {
    ch.close();
    desc.close();
    await detachNvmeController(registry, "Nvme0");
    await stop();
  }
}

Deno.test("nvme: attach reads identify data; bdev_nvme_get_controllers shows it; detach shuts down and unmaps", async () => {
  const fake = new FakeNvmeController({ blockSize: 4096, numBlocks: 1024 });
  const registry = new BdevRegistry();
  const backend = fakeBackend(fake);
  const names = await attachNvmeController(
    registry,
    { name: "Nvme7", trtype: "pcie", traddr: "0000:00:04.0" },
    () => {},
    () => backend,
  );
  assertEquals(names, ["Nvme7n1"]);
  const b = registry.get("Nvme7n1");
  assertEquals(b.blockSize, 4096);
  assertEquals(b.numBlocks, 1024);
  const [c] = getNvmeControllers(registry);
  assertEquals(c?.name, "Nvme7");
  const ctrlr = (c?.ctrlrs as Record<string, unknown>[])[0] as Record<string, unknown>;
  assertEquals(ctrlr.state, "enabled");
  assertEquals((ctrlr.trid as Record<string, string>).traddr, "0000:00:04.0");
  const driver = ctrlr.driver as Record<string, unknown>;
  assertEquals(driver.model_number, "sluice fake NVMe");
  await assertRejects(
    () =>
      attachNvmeController(
        registry,
        { name: "Nvme8", trtype: "pcie", traddr: "0000:00:04.0" },
        () => {},
        () => backend,
      ),
    Error,
    "already attached",
  );
  await assertRejects(
    () =>
      attachNvmeController(
        registry,
        { name: "X", trtype: "tcp", traddr: "1" },
        () => {},
        () => backend,
      ),
    Error,
    "not supported",
  );
  assert(fake.mappedRegions > 0);
  await detachNvmeController(registry, "Nvme7");
  assertEquals(fake.shutdowns, 1, "CC.SHN written once");
  assertEquals(fake.mappedRegions, 0, "every DMA region unmapped");
  assert(backend.closed);
  assertEquals(registry.has("Nvme7n1"), false);
  assertEquals(getNvmeControllers(registry), []);
});

Deno.test("nvme: a large write uses PRP lists and several commands; data round-trips", async () => {
  await withNvme({}, { maxTransferBytes: 65536 }, async ({ fake, ch }) => {
    const bs = ch.bdev.blockSize;
    const n = 600; // 300 KiB: 5 commands of up to 64 KiB, each with a PRP list
    const buf = new Uint8Array(n * bs);
    fillPattern(buf, 10, bs, 3);
    await runIo(ch, (io) => ch.write(io, buf, 10, n));
    assert(fake.prpListsUsed >= 4, `PRP lists used: ${fake.prpListsUsed}`);
    assertEquals(fake.counts.get(`io:${NvmeIoOpcode.Write}`), 5);
    assertEquals(fake.storage.subarray(10 * bs, (10 + n) * bs), buf);
    const back = new Uint8Array(n * bs);
    await runIo(ch, (io) => ch.read(io, back, 10, n));
    assertEquals(back, buf);
  });
});

Deno.test("nvme: with SGL support a transfer is one Data Block descriptor, no PRP list; useSgl false keeps PRPs", async () => {
  for (const useSgl of [true, false]) {
    await withNvme({ sgls: 1 }, { maxTransferBytes: 65536, useSgl }, async ({ fake, ch }) => {
      const bs = ch.bdev.blockSize;
      const buf = new Uint8Array(64 * bs);
      fillPattern(buf, 3, bs, 4);
      await runIo(ch, (io) => ch.write(io, buf, 3, 64));
      const back = new Uint8Array(buf.length);
      await runIo(ch, (io) => ch.read(io, back, 3, 64));
      assertEquals(back, buf);
      assertEquals(fake.sglsUsed > 0, useSgl);
      assertEquals(fake.prpListsUsed > 0, !useSgl);
    });
  }
});

Deno.test("nvme: a command that never completes is aborted, then the controller is reset; the I/O fails with ETIMEDOUT and the next one works", async () => {
  await withNvme({}, { ioTimeoutMs: 50 }, async ({ fake, registry, ch }) => {
    const ctrl = nvmeControllerOf(registry, "Nvme0");
    fake.stall = (opc) => opc === NvmeIoOpcode.Read;
    const buf = new Uint8Array(ch.bdev.blockSize);
    const err = await assertRejects(() => runIo(ch, (io) => ch.read(io, buf, 0, 1)), BdevIoError);
    assertEquals(err.code, -110);
    await ctrl.settled();
    assertEquals(ctrl.stats.timeouts, 1);
    assertEquals(ctrl.stats.aborts, 1);
    assertEquals(ctrl.stats.resets, 1);
    assertEquals(ctrl.state, "enabled");
    fake.stall = null;
    fillPattern(buf, 0, ch.bdev.blockSize, 9);
    await runIo(ch, (io) => ch.write(io, buf, 0, 1));
    const back = new Uint8Array(buf.length);
    await runIo(ch, (io) => ch.read(io, back, 0, 1));
    assertEquals(back, buf);
  });
});

Deno.test("nvme: controller fatal status fails outstanding I/Os with EIO; the reset brings it back", async () => {
  await withNvme({}, {}, async ({ fake, registry, ch }) => {
    const ctrl = nvmeControllerOf(registry, "Nvme0");
    fake.stall = () => true;
    const buf = new Uint8Array(ch.bdev.blockSize);
    const p = runIo(ch, (io) => ch.read(io, buf, 0, 1));
    await new Promise((r) => setTimeout(r, 20));
    fake.setFatal();
    const err = await assertRejects(() => p, BdevIoError);
    assertEquals(err.code, -5);
    await ctrl.settled();
    assertEquals(ctrl.state, "enabled");
    fake.stall = null;
    await runIo(ch, (io) => ch.read(io, buf, 0, 1));
  });
});

Deno.test("nvme: a removed device fails in-flight and new I/Os with EIO and the app stays up", async () => {
  await withNvme({}, {}, async ({ fake, registry, ch }) => {
    const ctrl = nvmeControllerOf(registry, "Nvme0");
    fake.stall = () => true;
    const buf = new Uint8Array(ch.bdev.blockSize);
    const p = runIo(ch, (io) => ch.read(io, buf, 0, 1));
    await new Promise((r) => setTimeout(r, 20));
    fake.removed = true;
    const err = await assertRejects(() => p, BdevIoError);
    assertEquals(err.code, -5);
    assertEquals(ctrl.state, "removed");
    const err2 = await assertRejects(() => runIo(ch, (io) => ch.write(io, buf, 0, 1)), BdevIoError);
    assertEquals(err2.code, -5);
    fake.removed = false; // let detach run its course
  });
});

Deno.test("nvme: when the kernel asks for the device back, I/O fails with EIO, the device is released, the controller stays listed as removed", async () => {
  const fake = new FakeNvmeController();
  const registry = new BdevRegistry();
  const { thread, stop } = await startReactor();
  let request: (() => void) | null = null;
  const backend = {
    ...fakeBackend(fake),
    watchRemoval(cb: () => void) {
      request = cb;
    },
  };
  let closed = false;
  backend.close = () => {
    closed = true;
  };
  await attachNvmeController(
    registry,
    { name: "Nvme0", trtype: "PCIe", traddr: "0000:00:04.0" },
    () => {},
    () => backend,
  );
  const desc = registry.open("Nvme0n1", true);
  const ch = desc.getIoChannel(thread);
  try {
    const buf = new Uint8Array(512);
    await runIo(ch, (io) => ch.read(io, buf, 0, 1));
    fake.stall = () => true;
    const p = runIo(ch, (io) => ch.read(io, buf, 1, 1));
    assert(request !== null, "the module watches for removal");
    (request as () => void)();
    const err = await assertRejects(() => p, BdevIoError);
    assertEquals(err.code, -5);
    for (let i = 0; i < 50 && !closed; i++) await new Promise((r) => setTimeout(r, 10));
    assert(closed, "the device was released");
    assertEquals(fake.mappedRegions, 0);
    const err2 = await assertRejects(() => runIo(ch, (io) => ch.read(io, buf, 0, 1)), BdevIoError);
    assertEquals(err2.code, -5);
    const [c] = getNvmeControllers(registry);
    assertEquals(
      ((c?.ctrlrs as Record<string, unknown>[])[0] as Record<string, unknown>).state,
      "removed",
    );
  } finally {
    ch.close();
    desc.close();
  }
  await detachNvmeController(registry, "Nvme0");
  assertEquals(registry.has("Nvme0n1"), false);
  await stop();
});

Deno.test("nvme: doorbell stride from CAP.DSTRD and a tiny queue from CAP.MQES: 64 concurrent I/Os still round-trip", async () => {
  await withNvme({ dstrd: 2, mqes: 3 }, {}, async ({ fake, registry, ch }) => {
    assertEquals(nvmeControllerOf(registry, "Nvme0").slots, 3);
    const bs = ch.bdev.blockSize;
    const bufs = Array.from({ length: 64 }, (_, i) => {
      const b = new Uint8Array(bs);
      fillPattern(b, i * 3, bs, 8);
      return b;
    });
    await Promise.all(bufs.map((b, i) => runIo(ch, (io) => ch.write(io, b, i * 3, 1))));
    const back = bufs.map(() => new Uint8Array(bs));
    await Promise.all(back.map((b, i) => runIo(ch, (io) => ch.read(io, b, i * 3, 1))));
    back.forEach((b, i) => assertEquals(b, bufs[i]));
    assert(fake.doorbells > 0);
  });
});

Deno.test("nvme: a channel on a second thread is refused: one I/O queue pair, polled by one reactor", async () => {
  await withNvme({}, {}, async ({ registry }) => {
    const other = await startReactor();
    const desc = registry.open("Nvme0n1", false);
    try {
      assertThrows(
        () => desc.getIoChannel(other.thread),
        Error,
        "already polled by another thread",
      );
    } finally {
      desc.close();
      await other.stop();
    }
  });
});

Deno.test("nvme: save_config emits one bdev_nvme_attach_controller per controller, with its tuning", async () => {
  const app = new App();
  try {
    await attachFake(app.bdevs, new FakeNvmeController(), { ioQueueDepth: 16, ioTimeoutMs: 2500 });
    const saved = await app.call("save_config") as {
      subsystems: { subsystem: string; config: { method: string; params: unknown }[] }[];
    };
    const bdev = saved.subsystems.find((s) => s.subsystem === "bdev");
    const calls = (bdev?.config ?? []).filter((c) => c.method === "bdev_nvme_attach_controller");
    assertEquals(calls, [{
      method: "bdev_nvme_attach_controller",
      params: {
        name: "Nvme0",
        trtype: "PCIe",
        traddr: "0000:00:04.0",
        io_queue_depth: 16,
        timeout_us: 2_500_000,
      },
    }]);
    await detachNvmeController(app.bdevs, "Nvme0");
  } finally {
    await app.shutdown();
  }
});

Deno.test("nvme: with completion interrupts (an eventfd) the reactor parks while a command is outstanding and the interrupt wakes it", async () => {
  const fake = new FakeNvmeController();
  fake.irqFd = eventfd();
  const registry = new BdevRegistry();
  const { thread, stop } = await startReactor();
  const backend = { ...fakeBackend(fake), enableInterrupts: () => fake.irqFd };
  await attachNvmeController(
    registry,
    { name: "Nvme0", trtype: "PCIe", traddr: "0000:00:04.0", options: { interrupts: true } },
    () => {},
    () => backend,
  );
  const ctrl = nvmeControllerOf(registry, "Nvme0");
  assertEquals(ctrl.interrupts, true);
  const desc = registry.open("Nvme0n1", true);
  const ch = desc.getIoChannel(thread);
  try {
    const buf = new Uint8Array(512);
    fake.stall = () => true;
    const parks = thread.stats.idleParks;
    let done = false;
    const p = runIo(ch, (io) => ch.read(io, buf, 0, 1)).then(() => done = true);
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(done, false);
    assert(thread.stats.idleParks > parks, "the reactor parked with the command outstanding");
    assert(thread.parked, "and is parked now");
    fake.stall = null;
    fake.releaseStalled(); // posts the CQE and raises the interrupt
    await p;
    assertEquals(fake.interrupts, 1);
    // Without the interrupt the park would last its timeout (1 s); the I/O completed at once.
  } finally {
    ch.close();
    desc.close();
    await detachNvmeController(registry, "Nvme0");
    sym.close(fake.irqFd);
    await stop();
  }
});

Deno.test("nvme: an idle controller rings no doorbells and the reactor parks", async () => {
  await withNvme({}, {}, async ({ fake, reactor, ch }) => {
    const buf = new Uint8Array(ch.bdev.blockSize);
    await runIo(ch, (io) => ch.read(io, buf, 0, 1));
    const before = fake.doorbells;
    await new Promise((r) => setTimeout(r, 50));
    const busy = reactor.stats.busyIterations;
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(fake.doorbells, before);
    // The poller reports no work when nothing is outstanding: the loop sleeps.
    assertEquals(reactor.stats.busyIterations, busy, "no busy iterations while idle");
    assert(reactor.parked, "the reactor is parked");
    assertEquals(reactor.ioInFlight, 0);
  });
});

/**
 * Data-path workers in one process: an App with a worker reactor, vhost
 * controllers placed on it by cpumask, served from bdev replicas; a
 * vhost-user front-end driven from the main thread's reactor, so every
 * request crosses threads through shared memory and eventfds as a VM's do.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { waitFor } from "../testing/wait.ts";
import { App } from "../app.ts";
import { Reactor } from "../reactor/mod.ts";
import { BdevIo, BdevIoStats, BdevIoType, runIo } from "../bdev/mod.ts";
import { openVhostPerf, type VhostPerfSession } from "../perf/vhost_user_perf.ts";
import type { VhostUserPerfDevice } from "../perf/vhost_user_device.ts";
import { PerfJob } from "../perf/perf.ts";
import { formatCpumask, parseCpumask } from "./cpumask.ts";

const BLOCKS = 8192; // 4 MiB of 512-byte blocks
const KEY = { name: "k0", cipher: "AES_XTS", key: "11".repeat(32), key2: "22".repeat(32) };

async function withWorkerApp(
  fn: (app: App, dir: string, logs: string[]) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-workers-" });
  const logs: string[] = [];
  // The test's front-end polls its used rings (no call eventfd), as `sluice perf` does: the
  // main reactor must keep spinning while requests are out (appliance/perf.ts).
  const app = new App(new Reactor({ inflightSpinUs: 5_000_000 }), (m) => logs.push(m));
  app.start();
  try {
    await app.startWorkers([0, 1], { pin: false, guestWindowBytes: 256 << 20 });
    await fn(app, dir, logs);
  } catch (e) {
    console.error(logs.join("\n"));
    throw e;
  } finally {
    await app.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

/** One request through a perf device; resolves with its success. */
function vhostIo(
  reactor: Reactor,
  dev: VhostUserPerfDevice,
  write: boolean,
  lba: number,
  buf: Uint8Array,
): Promise<boolean> {
  const { promise, resolve } = Promise.withResolvers<boolean>();
  dev.onDone = (_slot, ok) => resolve(ok);
  dev.submit(0, write, lba, buf.byteLength / dev.blockSize, buf);
  // The front-end kicks from its poller: the main reactor may be parked.
  reactor.wake();
  return promise;
}

/** Reads `bytes` at `lba` of bdev `name` on the main thread's reactor. */
async function readOnMain(app: App, name: string, lba: number, bytes: number) {
  const desc = app.bdevs.open(name, false);
  const ch = desc.getIoChannel(app.reactor);
  const out = new Uint8Array(bytes);
  try {
    await runIo(ch, (io: BdevIo) => ch.read(io, out, lba, bytes / desc.bdev.blockSize));
  } finally {
    ch.close();
    desc.close();
  }
  return out;
}

async function writeOnMain(app: App, name: string, lba: number, data: Uint8Array) {
  const desc = app.bdevs.open(name, true);
  const ch = desc.getIoChannel(app.reactor);
  try {
    await runIo(ch, (io: BdevIo) => ch.write(io, data, lba, data.byteLength / desc.bdev.blockSize));
  } finally {
    ch.close();
    desc.close();
  }
}

function pattern(seed: number, bytes: number): Uint8Array {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 7 + seed * 31 + (i >> 9)) & 0xff;
  return b;
}

/** Opens a front-end on `socket`, polled by the main reactor. */
async function frontEnd(app: App, socket: string, queues = 1): Promise<VhostPerfSession> {
  const s = await openVhostPerf({
    path: socket,
    queues,
    depth: 32,
    ioSize: 4096,
    // With verify each queue keeps to its part of the device.
    verify: queues > 1,
    writes: true,
    reactor: app.reactor,
  });
  const tag = ++frontEnds;
  s.devices.forEach((d, i) => app.reactor.addPoller(`test-fe${tag}-q${i}`, d.poll));
  pollers.set(s, tag);
  return s;
}

let frontEnds = 0;
const pollers = new Map<VhostPerfSession, number>();

async function closeFrontEnd(
  app: App,
  s: VhostPerfSession,
): Promise<{ base: number; avail: number }[]> {
  const tag = pollers.get(s);
  s.devices.forEach((_d, i) => app.reactor.removePoller(`test-fe${tag}-q${i}`));
  return await s.close();
}

/** A verified random mix on every queue of `s` at QD32 for half a second. */
async function verifiedMix(app: App, s: VhostPerfSession): Promise<void> {
  const jobs = s.devices.map((dev, i) => {
    const bufs = s.buffers[i] ?? [];
    let n = 0;
    const job = new PerfJob(
      dev,
      { pattern: "randrw", readPercent: 50, ioSize: 4096, depth: 32, seconds: 0.5, verify: true },
      () => bufs[n++] as Uint8Array,
      i + 3,
    );
    dev.onDone = job.onDone;
    return job;
  });
  app.reactor.wake();
  for (const [i, r] of (await Promise.all(jobs.map((j) => j.run()))).entries()) {
    assert(r.ios > 32, `queue ${i}: only ${r.ios} I/Os`);
    assertEquals([r.errors, r.verifyErrors], [0, 0], `queue ${i}`);
  }
}

/** Writes through the worker and reads on main, then the other way round. */
async function crossCheck(app: App, s: VhostPerfSession, bdev: string): Promise<void> {
  const dev = s.devices[0] as VhostUserPerfDevice;
  const buf = s.buffers[0]?.[0] as Uint8Array;
  const a = pattern(1, 4096);
  buf.set(a);
  assert(await vhostIo(app.reactor, dev, true, 8, buf), "write through the worker");
  assertEquals(await readOnMain(app, bdev, 8, 4096), a, "main reads the worker's write");
  const b = pattern(2, 4096);
  await writeOnMain(app, bdev, 16, b);
  buf.fill(0);
  assert(await vhostIo(app.reactor, dev, false, 16, buf), "read through the worker");
  assertEquals(buf.slice(), b, "the worker reads main's write");
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((v, i) => v === b[i]);
}

function statsOf(app: App, name: string): BdevIoStats {
  const s = new BdevIoStats();
  app.bdevs.get(name).addStatsTo(s);
  return s;
}

Deno.test("cpumask: hex masks and lists, formatted back; bad masks refused", () => {
  assertEquals(parseCpumask("0x3"), [0, 1]);
  assertEquals(parseCpumask("6"), [1, 2]);
  assertEquals(parseCpumask("[0,2-3]"), [0, 2, 3]);
  assertEquals(formatCpumask([0, 2, 3]), "0xd");
  for (const bad of ["0x0", "", "zz", "[1-0]", "[a]", "[0", "[2000]"]) {
    let threw = false;
    try {
      parseCpumask(bad);
    } catch {
      threw = true;
    }
    assert(threw, `${JSON.stringify(bad)} accepted`);
  }
});

Deno.test("workers: a controller placed on a worker serves a malloc replica; main sees its writes and counters; the bdev stays until it goes", async () => {
  await withWorkerApp(async (app, dir) => {
    await app.call("bdev_malloc_create", { name: "M0", num_blocks: BLOCKS, block_size: 512 });
    const socket = `${dir}/w.sock`;
    await app.call("vhost_create_blk_controller", {
      ctrlr: "w0",
      dev_name: "M0",
      socket,
      num_queues: 2,
      cpumask: "0x2",
    });
    const [c] = await app.call("vhost_get_controllers") as {
      reactor: number;
      cpumask: string;
      connected: boolean;
    }[];
    assertEquals([c?.reactor, c?.cpumask, c?.connected], [1, "0x2", false]);
    // The worker uses the malloc mapping: deleting it now would pull it away.
    await assertRejects(() => app.call("bdev_malloc_delete", { name: "M0" }), Error, "open by");

    const s = await frontEnd(app, socket, 2);
    try {
      await crossCheck(app, s, "M0");
      const [c2] = await app.call("vhost_get_controllers") as { connected: boolean }[];
      assert(c2?.connected);

      await verifiedMix(app, s);
      // The worker's counters reach the main bdev within its report interval.
      await waitFor(() => statsOf(app, "M0").writeOps > 32, "the worker's counters on main");
    } finally {
      await closeFrontEnd(app, s);
    }
    const before = statsOf(app, "M0");
    await app.call("vhost_delete_controller", { ctrlr: "w0" });
    // Counters survive the replica; the bdev can go now.
    assert(statsOf(app, "M0").writeOps >= before.writeOps);
    assertEquals(app.bdevs.get("M0").remoteStats.size, 0);
    await app.call("bdev_malloc_delete", { name: "M0" });
  });
});

Deno.test("workers: a crypto bdev over malloc on a worker encrypts with the same key as main; a file bdev shares its descriptors", async () => {
  await withWorkerApp(async (app, dir) => {
    await app.call("bdev_malloc_create", { name: "M0", num_blocks: BLOCKS, block_size: 512 });
    await app.call("accel_crypto_key_create", KEY);
    await app.call("bdev_crypto_create", { base_bdev_name: "M0", name: "C0", key_name: "k0" });
    const path = `${dir}/disk.img`;
    await Deno.writeFile(path, new Uint8Array(BLOCKS * 512));
    await app.call("bdev_file_create", { name: "F0", filename: path });
    await app.call("vhost_create_blk_controller", {
      ctrlr: "c",
      dev_name: "C0",
      socket: `${dir}/c.sock`,
      cpumask: "0x2",
    });
    await app.call("vhost_create_blk_controller", {
      ctrlr: "f",
      dev_name: "F0",
      socket: `${dir}/f.sock`,
      cpumask: "[1]",
    });
    const sc = await frontEnd(app, `${dir}/c.sock`);
    const sf = await frontEnd(app, `${dir}/f.sock`);
    try {
      await crossCheck(app, sc, "C0");
      // Below the crypto bdev lies ciphertext, not the plaintext the VM wrote.
      assert(!sameBytes(await readOnMain(app, "M0", 8, 4096), pattern(1, 4096)));
      await crossCheck(app, sf, "F0");
      const file = await Deno.readFile(path);
      assertEquals(file.subarray(8 * 512, 8 * 512 + 4096), pattern(1, 4096));
      // The key is in use by the replica's original: it cannot be destroyed.
      await assertRejects(
        () => app.call("accel_crypto_key_destroy", { key_name: "k0" }),
        Error,
        "used by",
      );
    } finally {
      await closeFrontEnd(app, sc);
      await closeFrontEnd(app, sf);
    }
    await app.call("vhost_delete_controller", { ctrlr: "c" });
    await app.call("vhost_delete_controller", { ctrlr: "f" });
    await app.call("bdev_crypto_delete", { name: "C0" });
    await app.call("bdev_file_delete", { name: "F0" });
  });
});

Deno.test("workers: placement by cpumask, least-loaded with workers first; masks naming no reactor and bdevs that cannot be replicated are refused", async () => {
  await withWorkerApp(async (app, dir) => {
    await app.call("bdev_malloc_create", { name: "M0", num_blocks: BLOCKS, block_size: 512 });
    // A bdev whose module has no replicas (as NVMe: one queue pair, the main thread's).
    app.bdevs.register({
      name: "Plain0",
      module: "plain",
      productName: "plain",
      blockSize: 512,
      numBlocks: BLOCKS,
      ioTypes: [BdevIoType.Read],
      fnTable: {
        getIoChannel: () => ({ destroy() {} }),
        submitRequest: () => {},
        destruct: () => {},
      },
    });
    await assertRejects(
      () =>
        app.call("vhost_create_blk_controller", {
          ctrlr: "x",
          dev_name: "M0",
          socket: `${dir}/x.sock`,
          cpumask: "0x4",
        }),
      Error,
      "names no core with a reactor",
    );
    await assertRejects(
      () =>
        app.call("vhost_create_blk_controller", {
          ctrlr: "e",
          dev_name: "Plain0",
          socket: `${dir}/e.sock`,
          cpumask: "0x2",
        }),
      Error,
      "cannot be served from a data-path worker",
    );
    // Nothing was left open by the refusals.
    assertEquals(app.bdevs.get("Plain0").descs.size, 0);
    // It is served from the main reactor.
    await app.call("vhost_create_blk_controller", {
      ctrlr: "e",
      dev_name: "Plain0",
      socket: `${dir}/e.sock`,
      cpumask: "0x1",
    });
    await app.call("bdev_malloc_create", { name: "M1", num_blocks: BLOCKS, block_size: 512 });
    // No mask: the least loaded; reactor 0 has one, so the worker.
    await app.call("vhost_create_blk_controller", {
      ctrlr: "a",
      dev_name: "M1",
      socket: `${dir}/a.sock`,
    });
    // A tie: the worker first.
    await app.call("vhost_create_blk_controller", {
      ctrlr: "b",
      dev_name: "M1",
      socket: `${dir}/b.sock`,
      readonly: true,
    });
    const reactors = await app.call("framework_get_reactors") as {
      tick_rate: number;
      reactors: { lcore: number; thread: string }[];
    };
    assertEquals(reactors.reactors.map((r) => [r.lcore, r.thread]), [[0, "main"], [1, "worker"]]);
    const got = await app.call("vhost_get_controllers") as { ctrlr: string; reactor: number }[];
    assertEquals(got.map((c) => [c.ctrlr, c.reactor]), [["e", 0], ["a", 1], ["b", 1]]);
    const cfg = await app.call("save_config") as {
      subsystems: { subsystem: string; config: { params: Record<string, unknown> }[] }[];
    };
    const vhost = cfg.subsystems.find((s) => s.subsystem === "vhost_blk");
    assertEquals(vhost?.config.map((c) => c.params["cpumask"]), ["0x1", undefined, undefined]);
    for (const c of ["e", "a", "b"]) await app.call("vhost_delete_controller", { ctrlr: c });
  });
});

Deno.test("workers: a multiqueue controller is spread: queues on the worker and the main reactor, one socket; verified I/O on each, drained bases at stop", async () => {
  await withWorkerApp(async (app, dir, logs) => {
    await app.call("bdev_malloc_create", { name: "M0", num_blocks: BLOCKS, block_size: 512 });
    const socket = `${dir}/spread.sock`;
    await app.call("vhost_create_blk_controller", {
      ctrlr: "spread",
      dev_name: "M0",
      socket,
      num_queues: 4,
    });
    const [c] = await app.call("vhost_get_controllers") as {
      reactor: number;
      queue_reactors: number[];
      cpumask: string;
    }[];
    // Queue by queue to the least loaded reactor, the worker first on a tie.
    assertEquals([c?.reactor, c?.queue_reactors, c?.cpumask], [0, [1, 0, 1, 0], "0x3"]);
    for (let round = 0; round < 2; round++) {
      // Twice: a second front-end on the same socket gets fresh shards.
      const s = await frontEnd(app, socket, 4);
      let stops: { base: number; avail: number }[] = [];
      try {
        await verifiedMix(app, s);
      } finally {
        stops = await closeFrontEnd(app, s);
      }
      // GET_VRING_BASE: each queue, wherever it ran, stopped exactly where the driver left it.
      assertEquals(stops.length, 4);
      for (const st of stops) assertEquals(st.base, st.avail);
    }
    // Both the main thread's backend and the worker's shard mapped the guest memory, each time.
    const maps = logs.filter((l) => l.includes("guest memory added")).length;
    assertEquals(maps, 4, logs.join("\n"));
    await waitFor(() => app.bdevs.get("M0").remoteStats.size === 1, "the worker's counters");
    await app.call("vhost_delete_controller", { ctrlr: "spread" });
    assertEquals(app.bdevs.get("M0").descs.size, 0);
    await app.call("bdev_malloc_delete", { name: "M0" });
  });
});

Deno.test("workers: an error bdev's replica shares its injections: armed on main, they hit the worker's I/O, num times in all", async () => {
  await withWorkerApp(async (app, dir) => {
    await app.call("bdev_malloc_create", { name: "M0", num_blocks: BLOCKS, block_size: 512 });
    await app.call("bdev_error_create", { base_name: "M0" });
    const socket = `${dir}/ee.sock`;
    await app.call("vhost_create_blk_controller", {
      ctrlr: "ee",
      dev_name: "EE_M0",
      socket,
      cpumask: "0x2",
    });
    const s = await frontEnd(app, socket);
    try {
      const dev = s.devices[0] as VhostUserPerfDevice;
      const buf = s.buffers[0]?.[0] as Uint8Array;
      assert(await vhostIo(app.reactor, dev, false, 0, buf), "a read before any injection");
      await app.call("bdev_error_inject_error", {
        name: "EE_M0",
        io_type: "read",
        error_type: "failure",
        num: 2,
      });
      assertEquals(await vhostIo(app.reactor, dev, false, 0, buf), false, "first injected failure");
      assertEquals(
        await vhostIo(app.reactor, dev, false, 0, buf),
        false,
        "second injected failure",
      );
      assert(await vhostIo(app.reactor, dev, false, 0, buf), "the injection is used up");
      const [b] = await app.call("bdev_get_bdevs", { name: "EE_M0" }) as {
        driver_specific: { error: { injected: Record<string, unknown> } };
      }[];
      assertEquals(b?.driver_specific.error.injected, {});
    } finally {
      await closeFrontEnd(app, s);
    }
    await app.call("vhost_delete_controller", { ctrlr: "ee" });
  });
});

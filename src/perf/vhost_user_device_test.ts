/**
 * The vhost-user perf device: against sluice's real vhost-user-blk back-end
 * in this process (verified mixes on direct and indirect chains, the rings
 * stopped where the driver left them), and allocation-free per I/O under
 * V8's GC trace with a hand-played device.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { startReactor } from "../testing/reactor_thread.ts";
import { BdevRegistry } from "../bdev/mod.ts";
import { createMallocBdev } from "../bdev_modules/malloc/malloc.ts";
import { VhostBlkBackend } from "../vhost_user/blk_backend.ts";
import { VhostUserServer } from "../vhost_user/server.ts";
import {
  FrontendMemory,
  splitRingBytes,
  splitRingLayout,
  VhostUserFrontendError,
} from "../vhost_user/frontend.ts";
import { close, eventfd } from "../../ffi/libc.ts";
import { VhostUserPerfDevice } from "./vhost_user_device.ts";
import { PerfJob } from "./perf.ts";
import { openVhostPerf } from "./vhost_user_perf.ts";
import type { Reactor } from "../reactor/reactor.ts";
import { traceGc } from "../testing/gc_trace.ts";

const BLOCKS = 8192; // 4 MiB of 512-byte blocks

async function withBackend(
  fn: (path: string, reactor: Reactor) => Promise<void>,
  readOnly = false,
) {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vhost-perf-dev-" });
  const r = await startReactor();
  const bdevs = new BdevRegistry();
  createMallocBdev(bdevs, { name: "M0", numBlocks: BLOCKS, blockSize: 512 });
  const path = `${dir}/vhost.sock`;
  const server = new VhostUserServer(
    path,
    () =>
      new VhostBlkBackend({
        registry: bdevs,
        reactor: r.thread,
        bdevName: "M0",
        numQueues: 2,
        readOnly,
        log: () => {},
      }),
    () => {},
  );
  try {
    await fn(path, r.thread);
  } finally {
    await server.close();
    await r.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

for (const depth of [8, 400]) {
  Deno.test(`vhost perf device: a verified mix on two queues at QD${depth} against the real back-end`, async () => {
    await withBackend(async (path, reactor) => {
      const s = await openVhostPerf({
        path,
        queues: 2,
        depth,
        ioSize: 4096,
        verify: true,
        writes: true,
        reactor,
      });
      const r = reactor;
      try {
        assertEquals(s.info.capacityBytes, BLOCKS * 512);
        assertEquals(s.info.indirect, depth * 3 > 1024);
        assert(s.info.eventIdx);
        const jobs = s.devices.map((dev, i) => {
          const bufs = s.buffers[i] ?? [];
          let n = 0;
          const job = new PerfJob(
            dev,
            {
              pattern: "randrw",
              readPercent: 50,
              ioSize: 4096,
              depth,
              seconds: 0.4,
              verify: true,
            },
            () => bufs[n++] as Uint8Array,
            i + 7,
          );
          dev.onDone = job.onDone;
          r.addPoller(`test-q${i}`, dev.poll);
          return job;
        });
        r.wake();
        const results = await Promise.all(jobs.map((j) => j.run()));
        for (const [i, res] of results.entries()) {
          assert(res.ios > depth, `queue ${i}: only ${res.ios} I/Os`);
          assertEquals([res.errors, res.verifyErrors], [0, 0], `queue ${i}`);
          // Each queue keeps to its half of the device under --verify.
          assertEquals(s.devices[i]?.numBlocks, BLOCKS / 2);
        }
      } finally {
        r.removePoller("test-q0");
        r.removePoller("test-q1");
        const stops = await s.close();
        // GET_VRING_BASE: the back-end read exactly what the driver published.
        for (const st of stops) assertEquals(st.base, st.avail);
        assertEquals(reactor.ioInFlight, 0);
      }
    });
  });
}

Deno.test("vhost perf device: more queues than the device has, or an I/O size off the block size, is refused", async () => {
  await withBackend(async (path, reactor) => {
    await assertRejects(
      () =>
        openVhostPerf({
          path,
          queues: 3,
          depth: 1,
          ioSize: 4096,
          verify: false,
          writes: false,
          reactor,
        }),
      VhostUserFrontendError,
      "more queues than the device has (2)",
    );
    await assertRejects(
      () =>
        openVhostPerf({
          path,
          queues: 1,
          depth: 1,
          ioSize: 1000,
          verify: false,
          writes: false,
          reactor,
        }),
      VhostUserFrontendError,
      "not a multiple of the device's block size",
    );
  });
});

Deno.test("vhost perf device: job and device allocate nothing per I/O (V8 GC trace)", async () => {
  const script = new URL("./testdata/vhost_alloc.ts", import.meta.url).pathname;
  async function gcEvents(pattern: string, mode: string): Promise<number> {
    return (await traceGc(script, [pattern, mode])).events;
  }
  const control = await gcEvents("randrw", "copy");
  assert(control >= 5, `the control should show allocation (got ${control} GC events)`);
  for (const [pattern, mode] of [["randrw", "steady"], ["randread", "indirect"]]) {
    const n = await gcEvents(pattern as string, mode as string);
    assert(n <= 1, `${pattern} ${mode}: ${n} GC events in 1M I/Os (control: ${control})`);
  }
});

Deno.test("vhost perf device: a read-only device takes reads and refuses a write workload", async () => {
  await withBackend(async (path, reactor) => {
    await assertRejects(
      () =>
        openVhostPerf({
          path,
          queues: 1,
          depth: 4,
          ioSize: 4096,
          verify: false,
          writes: true,
          reactor,
        }),
      VhostUserFrontendError,
      "read-only (VIRTIO_BLK_F_RO)",
    );
    const s = await openVhostPerf({
      path,
      queues: 1,
      depth: 4,
      ioSize: 4096,
      verify: false,
      writes: false,
      reactor,
    });
    try {
      assert(s.info.readOnly);
    } finally {
      await s.close();
    }
  }, true);
});

Deno.test("vhost perf device: a used.idx that moves back or past the requests outstanding ends the run, no flood", () => {
  for (const bad of [5, 0xffff]) {
    const depth = 4;
    const size = VhostUserPerfDevice.queueSize(depth, false);
    const ring = splitRingBytes(size);
    const mem = FrontendMemory.create(ring + 4096 + depth * 4096);
    const kick = eventfd();
    const reactor = { ioInFlight: 0 };
    try {
      const layout = splitRingLayout(0, size);
      const dev = new VhostUserPerfDevice({
        memory: mem,
        layout,
        scratchGpa: ring,
        kickFd: kick,
        eventIdx: true,
        indirect: false,
        blockSize: 512,
        numBlocks: 1024,
        jobDepth: depth,
        reactor,
      });
      const done: [number, boolean][] = [];
      let lost = "";
      dev.onDone = (slot, ok) => done.push([slot, ok]);
      dev.onLost = (why) => (lost = why);
      const buf = (s: number) => mem.bytes.subarray(ring + 4096 + s * 4096, ring + 8192 + s * 4096);
      dev.submit(0, false, 0, 8, buf(0));
      dev.submit(1, true, 8, 8, buf(1));
      assertEquals(dev.poll(), 0);
      // A device writes used.idx = `bad` with two requests out.
      mem.view.setUint16(layout.usedAddr + 2, bad, true);
      assertEquals(dev.poll(), 0);
      assert(lost.includes(`moved used.idx from 0 to ${bad} with only 2 request(s)`), lost);
      assertEquals(done, [[0, false], [1, false]]);
      assertEquals([dev.outstanding, reactor.ioInFlight], [0, 0]);
    } finally {
      close(kick);
      mem.close();
    }
  }
});

Deno.test("vhost perf device: a 16-bit index through a Uint16Array is never torn across processes; through a DataView it is", async () => {
  // Why the device keeps the ring indices in a Uint16Array: V8's DataView moves the two
  // bytes of a 16-bit value separately in its builtins (unoptimized code: the control,
  // run with --jitless to make it certain), so a process on the other side can read one
  // byte old and one new.
  const script = new URL("./testdata/torn_index.ts", import.meta.url).pathname;
  async function torn(
    how: string,
    flags: string[],
  ): Promise<{ reads: number; seen: number; torn: number }> {
    const writer = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...flags, script, "w", how, "-", "2"],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = writer.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let path = "";
    while (!path.includes("\n")) {
      const r = await reader.read();
      if (r.done) break;
      path += r.value;
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...flags, script, "r", how, path.trim(), "1"],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    await reader.cancel();
    assert((await writer.status).success, "writer failed");
    assert(out.success, "reader failed");
    return JSON.parse(new TextDecoder().decode(out.stdout));
  }
  // The control shows the hazard is real, but it needs the two processes to run at the same
  // time on two cores: on a busy machine it may see nothing, which proves nothing either way.
  const control = await torn("dataview", ["--v8-flags=--jitless"]);
  assert(control.seen > 1000, `the control reader saw no writes: ${JSON.stringify(control)}`);
  if (control.torn === 0) {
    console.log(
      `torn-index control saw no torn DataView read this time: ${JSON.stringify(control)}`,
    );
  }
  for (const flags of [[], ["--v8-flags=--jitless"]]) {
    const r = await torn("u16", flags);
    assert(r.seen > 1000, `the reader saw no writes: ${JSON.stringify(r)}`);
    assertEquals(r.torn, 0, `torn Uint16Array reads ${flags.join(" ")}: ${JSON.stringify(r)}`);
  }
});

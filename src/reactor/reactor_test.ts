import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { check, cstr, O_CLOEXEC, O_RDONLY, sym } from "../../ffi/libc.ts";
import { CQE_HANDLER_ID_MAX, Reactor } from "./reactor.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits for `cond`, checking every 5 ms, at most `tries` times. */
async function until(what: string, cond: () => boolean, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return;
    await sleep(5);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A poller with a work queue: `give(n)` queues n units, each call does one. */
function workPoller(): { fn: () => number; give(n: number): void; calls: number; pending: number } {
  const p = {
    calls: 0,
    pending: 0,
    fn: () => {
      p.calls++;
      if (p.pending === 0) return 0;
      p.pending--;
      return 1;
    },
    give(n: number) {
      p.pending += n;
    },
  };
  return p;
}

/** A module Worker from source text (imports must be absolute URLs). */
function inlineWorker(source: string): Worker {
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  try {
    return new Worker(url, { type: "module" });
  } finally {
    URL.revokeObjectURL(url);
  }
}

function nextMessage<T>(worker: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<T>) => resolve(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`worker failed: ${e.message}`));
    };
  });
}

Deno.test("reactor: pollers run while busy and the reactor parks when idle", async () => {
  using reactor = new Reactor({ idleSpinUs: 100, parkTimeoutMs: 10_000 });
  const work = workPoller();
  reactor.addPoller("work", work.fn);
  work.give(5000);
  const done = reactor.run();
  await until("the first park", () => reactor.parked);
  strictEqual(work.pending, 0);
  ok(reactor.stats.busyIterations >= 5000);
  strictEqual(reactor.stats.idleParks, 1);

  // Parked means asleep: over 300 ms the poller is not called again (a
  // busy loop would call it millions of times). A count, not a timing.
  const callsBefore = work.calls;
  await sleep(300);
  ok(reactor.parked);
  ok(work.calls - callsBefore <= 10, `poller called ${work.calls - callsBefore} times while idle`);
  strictEqual(reactor.stats.idleParks, 1);

  await reactor.stop();
  await done;
  ok(!reactor.running);
});

Deno.test("reactor: wake() on the same thread resumes a parked reactor", async () => {
  using reactor = new Reactor({ parkTimeoutMs: 10_000 });
  const work = workPoller();
  reactor.addPoller("work", work.fn);
  const done = reactor.run();
  for (let round = 1; round <= 3; round++) {
    await until("a park", () => reactor.parked && reactor.stats.idleParks === round);
    work.give(100);
    reactor.wake();
    reactor.wake(); // a second wake in the same park writes nothing more
    await until("the work to be done", () => work.pending === 0);
    strictEqual(reactor.stats.wakesSent, round);
  }
  ok(reactor.stats.wakeEvents >= 3);
  await reactor.stop();
  await done;
});

Deno.test("reactor: a Worker writing the eventfd resumes a parked reactor", async () => {
  using reactor = new Reactor({ parkTimeoutMs: 10_000 });
  const work = workPoller();
  reactor.addPoller("work", work.fn);
  const libcUrl = new URL("../../ffi/libc.ts", import.meta.url).href;
  const worker = inlineWorker(`
    import { sym } from ${JSON.stringify(libcUrl)};
    const one = new BigUint64Array([1n]);
    self.onmessage = (e) => {
      const n = Number(sym.write(e.data, one, 8n));
      self.postMessage(n);
    };
  `);
  const done = reactor.run();
  try {
    await until("a park", () => reactor.parked);
    const wakeEvents = reactor.stats.wakeEvents;
    work.give(10);
    const wrote = nextMessage<number>(worker);
    worker.postMessage(reactor.wakeFd);
    strictEqual(await wrote, 8);
    await until("the work to be done", () => work.pending === 0);
    strictEqual(reactor.stats.wakeEvents, wakeEvents + 1);
    strictEqual(reactor.stats.wakesSent, 0, "woken by the worker, not by this thread");
  } finally {
    worker.terminate();
    await reactor.stop();
    await done;
  }
});

Deno.test("reactor: a file read completes through its CQE handler", async () => {
  const path = await Deno.makeTempFile({ prefix: "sluice-reactor-" });
  const data = crypto.getRandomValues(new Uint8Array(16384));
  await Deno.writeFile(path, data);
  const fd = check("open", sym.open(cstr(path), O_RDONLY | O_CLOEXEC, 0), path);
  using reactor = new Reactor();
  const done = reactor.run();
  try {
    const buf = new Uint8Array(4096 * 4);
    const base = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
    const results = new Map<number, number>();
    let allDone: () => void = () => {};
    const finished = new Promise<void>((r) => (allDone = r));
    const id = reactor.registerCqeHandler((tag, res) => {
      results.set(tag, res);
      if (results.size === 4) allDone();
    });

    // A poller that queues four reads in one pass: they go to the kernel in
    // a single io_uring_enter at the end of the iteration.
    let submitCallsAtPrep = -1;
    let submitCallsAfter = -1;
    let sqesAtPrep = -1;
    let pass = 0;
    reactor.addPoller("reads", () => {
      pass++;
      if (pass === 1) {
        submitCallsAtPrep = reactor.stats.submitCalls;
        sqesAtPrep = reactor.stats.sqesSubmitted;
        for (let i = 0; i < 4; i++) {
          // Tags near 2^24 check that the handler id and the tag stay apart.
          reactor.ring.prepRead(
            fd,
            base + i * 4096,
            4096,
            (3 - i) * 4096,
            Reactor.userData(id, 0xfffff0 + i),
          );
        }
        return 4;
      }
      if (pass === 2) submitCallsAfter = reactor.stats.submitCalls;
      return 0;
    });
    reactor.wake();
    await finished;
    strictEqual(submitCallsAfter - submitCallsAtPrep, 1, "one io_uring_enter for the batch");
    ok(reactor.stats.sqesSubmitted - sqesAtPrep >= 4);
    for (let i = 0; i < 4; i++) strictEqual(results.get(0xfffff0 + i), 4096);
    for (let i = 0; i < 4; i++) {
      deepStrictEqual(
        buf.subarray(i * 4096, (i + 1) * 4096),
        data.subarray((3 - i) * 4096, (4 - i) * 4096),
      );
    }
    reactor.unregisterCqeHandler(id);
  } finally {
    await reactor.stop();
    await done;
    sym.close(fd);
    await Deno.remove(path);
  }
});

Deno.test("reactor: timers still run while pollers keep it busy", async () => {
  using reactor = new Reactor({ yieldIntervalMs: 1 });
  reactor.addPoller("spin", () => 1); // never idle
  const done = reactor.run();
  let fired = 0;
  await new Promise<void>((resolve) =>
    setTimeout(() => {
      fired++;
      resolve();
    }, 20)
  );
  strictEqual(fired, 1);
  ok(reactor.stats.yields > 0);
  strictEqual(reactor.stats.idleParks, 0);
  await reactor.stop();
  await done;
});

Deno.test("reactor: runs inside a Worker", async () => {
  const reactorUrl = new URL("./reactor.ts", import.meta.url).href;
  const worker = inlineWorker(`
    import { Reactor } from ${JSON.stringify(reactorUrl)};
    const reactor = new Reactor();
    const id = reactor.registerCqeHandler((tag, res) => {
      reactor.stop().then(() => {
        reactor.close();
        self.postMessage({ tag, res, parks: reactor.stats.idleParks });
      });
    });
    const done = reactor.run();
    // Let it park first, then wake it from this worker's own thread.
    setTimeout(() => {
      reactor.ring.prepNop(Reactor.userData(id, 77));
      reactor.wake();
    }, 20);
    await done;
  `);
  try {
    const msg = await nextMessage<{ tag: number; res: number; parks: number }>(worker);
    strictEqual(msg.tag, 77);
    strictEqual(msg.res, 0);
    ok(msg.parks >= 1);
  } finally {
    worker.terminate();
  }
});

Deno.test("reactor: user_data encoding, handler ids, poller names", () => {
  using reactor = new Reactor({ entries: 8 });
  strictEqual(Reactor.userData(1, 5), 0x01000005);
  strictEqual(Reactor.userData(255, 0xffffff), 0xffffffff);
  const ids = new Set<number>();
  for (let i = 0; i < CQE_HANDLER_ID_MAX; i++) ids.add(reactor.registerCqeHandler(() => {}));
  strictEqual(ids.size, CQE_HANDLER_ID_MAX);
  ok(!ids.has(0), "id 0 is the reactor's own");
  throws(() => reactor.registerCqeHandler(() => {}), /no free CQE handler id/);
  reactor.unregisterCqeHandler(7);
  strictEqual(reactor.registerCqeHandler(() => {}), 7);
  throws(() => reactor.unregisterCqeHandler(0), RangeError);

  reactor.addPoller("a", () => 0);
  reactor.addPoller("b", () => 0);
  throws(() => reactor.addPoller("a", () => 0), /already has a poller/);
  ok(reactor.removePoller("a"));
  ok(!reactor.removePoller("a"));
  deepStrictEqual(reactor.pollerNames(), ["b"]);

  // A CQE for an unregistered id is counted, not fatal.
  reactor.unregisterCqeHandler(9);
  reactor.ring.prepNop(Reactor.userData(9, 1));
  reactor.ring.submitAndWait(1);
  reactor.poll();
  strictEqual(reactor.stats.cqesUnclaimed, 1);
});

Deno.test("reactor: stop and close leave nothing pending", async () => {
  const reactor = new Reactor();
  const done = reactor.run();
  await until("a park", () => reactor.parked);
  throws(() => reactor.close(), /await stop\(\) first/);
  await reactor.stop();
  await done;
  ok(!reactor.parked && !reactor.running);
  reactor.close();
  reactor.close();
  throws(() => reactor.run(), /closed/);
  // stop() on a stopped reactor is a no-op.
  await reactor.stop();
});

import { assert, assertEquals } from "../testing/assert.ts";
import type { IoDone } from "../nvmf_tcp/host.ts";
import { NvmeTcpPerfDevice, type PerfQueue } from "./nvme_tcp_device.ts";
import { PerfJob } from "./perf.ts";
import { traceGc } from "../testing/gc_trace.ts";

/**
 * A queue of `depth` command slots over RAM that completes on a timer tick,
 * like a target would, and checks that no slot is used twice at once.
 */
class FakeQueue implements PerfQueue {
  readonly depth: number;
  open = true;
  onIoDone: IoDone = () => {};
  onClose: (reason: string) => void = () => {};
  readonly data: Uint8Array;
  readonly busy: Uint8Array;
  readonly lbas: number[] = [];
  maxBusy = 0;
  #busyCount = 0;
  constructor(depth: number, blocks: number) {
    this.depth = depth;
    this.busy = new Uint8Array(depth);
    this.data = new Uint8Array(blocks * 512);
  }
  submitIo(slot: number, write: boolean, nsid: number, slba: number, nlb: number, buf: Uint8Array) {
    assertEquals(nsid, 7);
    assert(slot >= 0 && slot < this.depth && this.busy[slot] === 0, `slot ${slot} reused`);
    this.busy[slot] = 1;
    this.maxBusy = Math.max(this.maxBusy, ++this.#busyCount);
    this.lbas.push(slba);
    const off = slba * 512;
    if (write) this.data.set(buf, off);
    else buf.set(this.data.subarray(off, off + nlb * 512));
    setTimeout(() => {
      if (!this.open) return;
      this.busy[slot] = 0;
      this.#busyCount--;
      this.onIoDone(slot, 0, 0);
    }, 0);
  }
  /** What the host does when the connection drops: ends in-flight commands, then reports. */
  drop(): void {
    this.open = false;
    for (let i = 0; i < this.depth; i++) {
      if (this.busy[i] === 1) {
        this.busy[i] = 0;
        this.onIoDone(i, 0xffff, 0);
      }
    }
    this.onClose("peer reset");
  }
}

const workload = {
  pattern: "randrw" as const,
  readPercent: 50,
  ioSize: 4096,
  depth: 8,
  seconds: 0.3,
  verify: true,
};

Deno.test("perf device: a job deeper than the queue waits in the host, verifies, stays in its slice", async () => {
  const q = new FakeQueue(3, 1024);
  const reactor = { ioInFlight: 0 };
  const dev = new NvmeTcpPerfDevice({
    queue: q,
    reactor,
    nsid: 7,
    blockSize: 512,
    numBlocks: 256,
    firstLba: 512,
    jobDepth: workload.depth,
  });
  const job = new PerfJob(dev, workload, (n) => new Uint8Array(n), 3);
  dev.onDone = job.onDone;
  const r = await job.run();
  assert(r.ios >= workload.depth, `only ${r.ios} I/Os`);
  assertEquals([r.errors, r.verifyErrors, dev.failedIos], [0, 0, 0]);
  assertEquals(q.maxBusy, 3);
  assertEquals(dev.queuedMax, 5);
  assertEquals(reactor.ioInFlight, 0);
  assert(q.lbas.every((l) => l >= 512 && l + 8 <= 768), "an I/O left the slice");
});

Deno.test("perf device: a dropped connection ends the run with errors, nothing left in flight", async () => {
  const q = new FakeQueue(4, 1024);
  const reactor = { ioInFlight: 0 };
  const dev = new NvmeTcpPerfDevice({
    queue: q,
    reactor,
    nsid: 7,
    blockSize: 512,
    numBlocks: 1024,
    jobDepth: workload.depth,
  });
  const job = new PerfJob(dev, { ...workload, seconds: 30 }, (n) => new Uint8Array(n), 5);
  dev.onDone = job.onDone;
  let lost = "";
  dev.onLost = (why) => {
    lost = why;
    job.stop();
  };
  const running = job.run();
  setTimeout(() => q.drop(), 50);
  const r = await running;
  assertEquals(lost, "peer reset");
  assert(r.errors >= workload.depth, `${r.errors} errors`);
  assert(dev.failedIos === r.errors && dev.firstFailStatus === 0xffff);
  assertEquals([job.inFlight, reactor.ioInFlight], [0, 0]);
  assert(r.seconds < 30, "the run did not stop at the drop");
});

Deno.test("perf device: job and device allocate nothing per I/O (V8 GC trace)", async () => {
  // A child runs 1M I/Os through PerfJob and the device over a synchronous fake queue
  // under --trace-gc and marks the measured stretch; the control allocates per I/O.
  const script = new URL("./testdata/perf_alloc.ts", import.meta.url).pathname;
  async function gcEvents(pattern: string, mode: string): Promise<number> {
    return (await traceGc(script, [pattern, mode])).events;
  }
  const control = await gcEvents("randrw", "copy");
  assert(control >= 5, `the control should show allocation (got ${control} GC events)`);
  for (const [pattern, mode] of [["randrw", "steady"], ["read", "steady"], ["randrw", "verify"]]) {
    const n = await gcEvents(pattern as string, mode as string);
    assert(n <= 1, `${pattern} ${mode}: ${n} GC events in 1M I/Os (control: ${control})`);
  }
});

/**
 * Reactor measurements (not a test): CPU used by an idle reactor, and the
 * NOP round-trip rate through the reactor, each beside its peer.
 *
 * - Idle CPU over a window: a parked reactor, beside the same Deno process
 *   with no reactor (the floor) and a reactor that never parks (what parking
 *   saves).
 * - NOP rate: through the reactor (CQE handler re-queues the NOP) at queue
 *   depth 1 and 256, beside the bare IoUring loop (prep, submitAndWait,
 *   reap) at the same depths.
 *
 * Run: `deno run -A bench/reactor_bench.ts`; bench/run.ts calls
 * {@link runReactorBench}.
 * @module
 */
import { cpuUsage } from "node:process";
import { IoUring } from "../ffi/io_uring.ts";
import { Reactor } from "../src/reactor/mod.ts";

/** Figures from {@link runReactorBench}. */
export interface ReactorBenchResult {
  /** CPU time (user+system) of the process per second of wall time, in ms, while the reactor is parked. */
  idleParkedCpuMsPerS: number;
  /** The same with no reactor at all (the Deno runtime's own floor). */
  idleNoReactorCpuMsPerS: number;
  /** The same with a reactor that busy-polls and never parks. */
  idleSpinningCpuMsPerS: number;
  /** Parks during the parked window (1 expected: it slept the whole time). */
  idleParks: number;
  /** NOPs per second through the reactor, one in flight. */
  reactorNopQd1PerS: number;
  /** NOPs per second through the reactor, 256 in flight. */
  reactorNopQd256PerS: number;
  /** NOPs per second with the bare ring, one in flight (submitAndWait(1) each). */
  ringNopQd1PerS: number;
  /** NOPs per second with the bare ring, batches of 256. */
  ringNopQd256PerS: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Process CPU (user+system, all threads) per wall second over `windowMs`, in ms/s. */
async function cpuOver(windowMs: number): Promise<number> {
  const c0 = cpuUsage();
  const t0 = performance.now();
  await sleep(windowMs);
  const c1 = cpuUsage(c0);
  const wallS = (performance.now() - t0) / 1000;
  return (c1.user + c1.system) / 1000 / wallS;
}

async function untilParked(reactor: Reactor): Promise<void> {
  for (let i = 0; i < 1000 && !reactor.parked; i++) await sleep(1);
  if (!reactor.parked) throw new Error("reactor did not park");
}

async function reactorNopRate(depth: number, windowMs: number): Promise<number> {
  const reactor = new Reactor({ entries: 1024 });
  let completed = 0;
  let refill = 0;
  const id = reactor.registerCqeHandler(() => {
    completed++;
    refill++;
  });
  const ud = Reactor.userData(id, 0);
  // The poller keeps `depth` NOPs in flight; the reactor flushes them in one
  // io_uring_enter per iteration.
  reactor.addPoller("nop", () => {
    const n = refill;
    for (let i = 0; i < n; i++) reactor.ring.prepNop(ud);
    refill = 0;
    return n;
  });
  refill = depth;
  const done = reactor.run();
  reactor.wake();
  await sleep(50); // warm-up
  const c0 = completed;
  const t0 = performance.now();
  await sleep(windowMs);
  const rate = (completed - c0) / ((performance.now() - t0) / 1000);
  await reactor.stop();
  await done;
  reactor.close();
  return rate;
}

function ringNopRate(depth: number, windowMs: number): number {
  const ring = new IoUring(1024);
  let completed = 0;
  const onCqe = () => {
    completed++;
  };
  const round = () => {
    for (let i = 0; i < depth; i++) ring.prepNop(i);
    ring.submitAndWait(depth);
    ring.reap(onCqe);
  };
  const warm = performance.now();
  while (performance.now() - warm < 50) round();
  const c0 = completed;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < windowMs) {
    for (let i = 0; i < 16; i++) round();
    t = performance.now();
  }
  ring.close();
  return (completed - c0) / ((t - t0) / 1000);
}

/** Runs the measurements, prints them with their peers, returns them. */
export async function runReactorBench(windowMs = 2000): Promise<ReactorBenchResult> {
  const idleNoReactorCpuMsPerS = await cpuOver(windowMs);

  const parked = new Reactor();
  const parkedDone = parked.run();
  await untilParked(parked);
  const parks0 = parked.stats.idleParks;
  const idleParkedCpuMsPerS = await cpuOver(windowMs);
  const idleParks = parked.stats.idleParks - parks0 + 1;
  await parked.stop();
  await parkedDone;
  parked.close();

  const spinning = new Reactor({ idleSpinUs: Number.POSITIVE_INFINITY });
  const spinDone = spinning.run();
  const idleSpinningCpuMsPerS = await cpuOver(Math.min(windowMs, 1000));
  await spinning.stop();
  await spinDone;
  spinning.close();

  const rateWindow = Math.min(windowMs, 1000);
  const reactorNopQd1PerS = await reactorNopRate(1, rateWindow);
  const reactorNopQd256PerS = await reactorNopRate(256, rateWindow);
  const ringNopQd1PerS = ringNopRate(1, rateWindow);
  const ringNopQd256PerS = ringNopRate(256, rateWindow);

  const r: ReactorBenchResult = {
    idleParkedCpuMsPerS,
    idleNoReactorCpuMsPerS,
    idleSpinningCpuMsPerS,
    idleParks,
    reactorNopQd1PerS,
    reactorNopQd256PerS,
    ringNopQd1PerS,
    ringNopQd256PerS,
  };
  const ms = (x: number) => `${x.toFixed(2)} ms CPU/s (${(x / 10).toFixed(2)}% of a core)`;
  const rate = (x: number) => `${(x / 1e6).toFixed(2)} M/s (${(1e9 / x).toFixed(0)} ns/op)`;
  console.log(`reactor idle, ${windowMs} ms window`);
  console.log(`  parked reactor            ${ms(idleParkedCpuMsPerS)}, parks: ${idleParks}`);
  console.log(`  peer: no reactor          ${ms(idleNoReactorCpuMsPerS)}`);
  console.log(`  peer: never-parking loop  ${ms(idleSpinningCpuMsPerS)}`);
  console.log("NOP round trips");
  console.log(`  reactor, 1 in flight      ${rate(reactorNopQd1PerS)}`);
  console.log(`  peer: bare ring, QD1      ${rate(ringNopQd1PerS)}`);
  console.log(`  reactor, 256 in flight    ${rate(reactorNopQd256PerS)}`);
  console.log(`  peer: bare ring, 256      ${rate(ringNopQd256PerS)}`);
  return r;
}

if (import.meta.main) {
  await runReactorBench();
}

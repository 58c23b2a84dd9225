/**
 * Child of stats_test's allocation test: drives reads and writes through a
 * bdev channel with the per-I/O counters and the sampled latency histogram
 * live, and brackets a measured stretch with markers for the GC trace.
 * The module is a null device that completes at once (the bdev layer is
 * measured, not a module; malloc's reads make a subarray view per I/O), on a
 * synchronous in-process thread. `copy` mode allocates per I/O on purpose
 * (the control).
 */
import {
  type BdevCompleter,
  BdevIo,
  BdevIoStatus,
  BdevIoType,
  type BdevModuleChannel,
  BdevRegistry,
  type IoThread,
} from "../../bdev/mod.ts";
import { gcMarker } from "../../testing/gc_trace.ts";

const { mark } = gcMarker();
const mode = Deno.args[0] ?? "steady";
const WARMUP = 200_000;
const MEASURED = 1_000_000;

const pollers = new Map<string, () => number>();
const thread: IoThread = {
  addPoller: (name, fn) => void pollers.set(name, fn),
  removePoller: (name) => pollers.delete(name),
  wake: () => {},
};
const registry = new BdevRegistry();
interface NullChannel extends BdevModuleChannel {
  completer: BdevCompleter;
}
registry.register({
  name: "M0",
  module: "null",
  productName: "Null disk",
  blockSize: 512,
  numBlocks: 1024,
  ioTypes: [BdevIoType.Read, BdevIoType.Write],
  fnTable: {
    getIoChannel: (completer: BdevCompleter): NullChannel => ({ completer, destroy: () => {} }),
    submitRequest: (ch: NullChannel, io: BdevIo) => ch.completer.complete(io, BdevIoStatus.Success),
    destruct: () => {},
  },
});
const desc = registry.open("M0", true);
const ch = desc.getIoChannel(thread);
const buf = new Uint8Array(4096);
let done = 0;
let bad = 0;
const io = new BdevIo((io) => {
  if (io.status !== BdevIoStatus.Success) bad++;
  done++;
});
const poll = [...pollers.values()];
const kept: Uint8Array[] = [];

function run(n: number): void {
  for (let i = 0; i < n; i++) {
    const before = done;
    if (i & 1) ch.write(io, buf, (i & 127) * 8, 8);
    else ch.read(io, buf, (i & 127) * 8, 8);
    if (mode === "copy") kept[i & 7] = new Uint8Array(64).slice(0, 32);
    while (done === before) {
      for (let k = 0; k < poll.length; k++) (poll[k] as () => number)();
    }
  }
}
run(WARMUP);
mark("MEASURE-BEGIN");
run(MEASURED);
mark("MEASURE-END");
const s = ch.stats;
if (bad !== 0) throw new Error(`${bad} I/Os failed`);
if (s.readOps + s.writeOps !== WARMUP + MEASURED) throw new Error("counters off");
if (s.latencySamples === 0) throw new Error("no latency sampled");
console.log(`samples ${s.latencySamples}`);
ch.close();
desc.close();

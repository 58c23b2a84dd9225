/**
 * Helper for memory_test.ts: runs addressOf + setAddress in a hot loop under
 * `--v8-flags=--trace-gc` and brackets the measured loop with markers.
 *
 * The markers go through glibc's stdout FILE (puts + fflush), the same
 * stream V8's --trace-gc lines use, so their order in the output is exact.
 * Argument: "address" (the data-path pattern) or "bigint" (a control that
 * allocates a BigInt per call, proving the measurement can see allocation).
 * @module
 */
import { addressOf, setAddress } from "../memory.ts";
import { gcMarker } from "../../src/testing/gc_trace.ts";

const { mark, close: closeMarker } = gcMarker();

const mode = Deno.args[0] ?? "address";
const backing = new ArrayBuffer(1 << 20);
const views: Uint8Array[] = [];
for (let i = 0; i < 8; i++) views.push(new Uint8Array(backing, i * 4096 + i, 512));
const sqe = new DataView(new ArrayBuffer(64));

function runAddress(n: number): void {
  for (let i = 0; i < n; i++) {
    const v = views[i & 7];
    if (v === undefined) throw new Error("unreachable");
    setAddress(sqe, (i & 7) * 8, addressOf(v));
  }
}

function runBigInt(n: number): void {
  for (let i = 0; i < n; i++) {
    const v = views[i & 7];
    if (v === undefined) throw new Error("unreachable");
    sqe.setBigUint64((i & 7) * 8, BigInt(addressOf(v)), true);
  }
}

const run = mode === "bigint" ? runBigInt : runAddress;
// Warm up until TurboFan has optimized run() and inlined addressOf().
for (let i = 0; i < 30; i++) run(100_000);
mark("MEASURE-BEGIN");
run(5_000_000);
mark("MEASURE-END");
closeMarker();

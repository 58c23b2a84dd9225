/**
 * Where should descriptor-chain walking and virtio-blk header parsing run?
 * The TypeScript walker (src/virtio/virtqueue.ts + blk.ts, what the vhost
 * backend runs, reading guest memory in place through DataViews on the
 * mapping) beside the WASM walker (wasm/kernels/src/virtq.rs, same rules,
 * guest memory placed inside the wasm memory so it too reads in place), on
 * the same chains in the same run. The WASM column includes reading the
 * segments back out of wasm memory, which the backend would have to do to
 * build its iovecs.
 *
 *   deno run -A bench/virtq_bench.ts [--iterations N]
 * @module
 */
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from "../src/virtio/blk.ts";
import { tsWalkParse, type VirtqPair, virtqPair, wasmWalkParse } from "../wasm/virtq_fixture.ts";

/** One shape of request, as a guest driver lays it out. */
interface Shape {
  name: string;
  type: number;
  segments: number;
  indirect: boolean;
}

/** Linux's virtio-blk puts every request with more than one buffer in an indirect table. */
export const VIRTQ_SHAPES: readonly Shape[] = [
  { name: "4 KiB read, indirect (Linux)", type: VIRTIO_BLK_T_IN, segments: 1, indirect: true },
  { name: "4 KiB write, direct chain", type: VIRTIO_BLK_T_OUT, segments: 1, indirect: false },
  {
    name: "128 KiB read, 32 segments, indirect",
    type: VIRTIO_BLK_T_IN,
    segments: 32,
    indirect: true,
  },
];

/** ns per request of each walker on one shape. */
export interface VirtqBenchRow {
  shape: string;
  tsNs: number;
  wasmNs: number;
}

const HEADS = 32;
/** Results land here so no call is optimised away. */
let sink = 0;

function prepare(shape: Shape): { p: VirtqPair; heads: number[] } {
  const p = virtqPair(256, 8 << 20);
  const heads: number[] = [];
  for (let i = 0; i < HEADS; i++) {
    const data = Array.from({ length: shape.segments }, () => ({
      len: 4096,
      writable: shape.type === VIRTIO_BLK_T_IN,
    }));
    heads.push(
      p.driver.addBlkRequest({ type: shape.type, sector: 8 * i, data, indirect: shape.indirect })
        .head,
    );
  }
  p.sync();
  for (const h of heads) {
    if (!tsWalkParse(p, h) || !wasmWalkParse(p, h)) throw new Error(`${shape.name}: refused`);
  }
  return { p, heads };
}

function timeTs(p: VirtqPair, heads: number[], n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    tsWalkParse(p, heads[i & (HEADS - 1)] as number);
    sink += p.req.dataCount;
  }
  return ((performance.now() - t0) * 1e6) / n;
}

function timeWasm(p: VirtqPair, heads: number[], n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const count = p.wasm.walk(heads[i & (HEADS - 1)] as number);
    // What the backend would read back to build its iovecs: where each data segment is, its length.
    const w = p.wasm.segWords;
    for (let s = 1; s < count - 1; s++) sink += (w[6 * s + 2] as number) + (w[6 * s + 3] as number);
  }
  return ((performance.now() - t0) * 1e6) / n;
}

/** Runs every shape; `iterations` walks per walker and shape (after a warm-up). */
export function runVirtqBench(iterations = 1_000_000): VirtqBenchRow[] {
  const rows: VirtqBenchRow[] = [];
  for (const shape of VIRTQ_SHAPES) {
    const { p, heads } = prepare(shape);
    const n = shape.segments > 1 ? Math.max(1, Math.floor(iterations / 8)) : iterations;
    timeTs(p, heads, n / 10);
    timeWasm(p, heads, n / 10);
    rows.push({ shape: shape.name, tsNs: timeTs(p, heads, n), wasmNs: timeWasm(p, heads, n) });
  }
  if (sink === -1) console.log(sink);
  return rows;
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--iterations");
  const rows = runVirtqBench(i >= 0 ? Number(Deno.args[i + 1]) : undefined);
  console.log("walk + parse, ns per request   TS    WASM   TS/WASM");
  for (const r of rows) {
    console.log(
      `${r.shape.padEnd(38)} ${r.tsNs.toFixed(0).padStart(5)} ${
        r.wasmNs.toFixed(0).padStart(6)
      }   ${(r.tsNs / r.wasmNs).toFixed(2)}x`,
    );
  }
}

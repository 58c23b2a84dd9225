/**
 * A virtqueue laid out by the test driver model and copied into wasm
 * memory, with both walkers over the same bytes: the TypeScript one
 * (SplitVirtqueue + BlkRequest, what the vhost backend runs) and the WASM
 * one. Shared by wasm/virtq_test.ts (agreement) and bench/virtq_bench.ts
 * (speed).
 * @module
 */
import { VirtioDriver } from "../src/testing/virtio_driver.ts";
import { GuestMemory } from "../src/virtio/guest_memory.ts";
import { SplitVirtqueue } from "../src/virtio/virtqueue.ts";
import { type BlkLimits, BlkRequest, VIRTIO_BLK_S_OK } from "../src/virtio/blk.ts";
import { VirtqueueError } from "../src/virtio/error.ts";
import { initWasmMemory, wasmAlloc, wasmMemoryStats } from "./kernels.ts";
import { acquireVirtqWalker, type WasmVirtqWalker } from "./virtq.ts";

/** Capacity of the pretend device: 1 GiB. */
export const CAPACITY_SECTORS = 2 * 1024 * 1024;
const GPA_BASE = 0x10_0000;

/** Both walkers over one ring in wasm memory. */
export interface VirtqPair {
  driver: VirtioDriver;
  /** Copies the driver model's memory into the wasm copy both walkers read. */
  sync(): void;
  ts: SplitVirtqueue;
  req: BlkRequest;
  wasm: WasmVirtqWalker;
  limits: BlkLimits;
}

/** Builds the pair; `initWasmMemory` runs here when nothing ran it yet. */
export function virtqPair(size: number, memoryBytes = 1 << 20): VirtqPair {
  if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(32 << 20);
  const driver = new VirtioDriver({
    queueSize: size,
    memoryBytes,
    gpaBase: GPA_BASE,
    indirectDesc: true,
  });
  const bytes = wasmAlloc(memoryBytes, 4096);
  const memory = new GuestMemory([{
    gpa: GPA_BASE,
    size: memoryBytes,
    uva: 0x7f00_0000_0000,
    bytes,
  }]);
  const ts = SplitVirtqueue.create({
    size,
    descAddr: driver.descAddr,
    availAddr: driver.availAddr,
    usedAddr: driver.usedAddr,
    memory,
    eventIdx: false,
    indirectDesc: true,
  });
  const limits: BlkLimits = {
    capacitySectors: CAPACITY_SECTORS,
    readOnly: false,
    flush: true,
    discard: false,
    writeZeroes: false,
    maxDiscardSectors: 0,
    maxDiscardSeg: 1,
    maxWriteZeroesSectors: 0,
    maxWriteZeroesSeg: 1,
  };
  const wasm = acquireVirtqWalker({
    size,
    descAddr: driver.descAddr,
    indirectDesc: true,
    capacitySectors: CAPACITY_SECTORS,
    regions: [{ gpa: GPA_BASE, bytes }],
  });
  return {
    driver,
    sync: () => bytes.set(driver.bytes),
    ts,
    req: new BlkRequest(size, 1),
    wasm,
    limits,
  };
}

/**
 * The TypeScript path on one head: walk, then parse. True when the chain
 * is a valid read or write.
 */
export function tsWalkParse(p: VirtqPair, head: number): boolean {
  try {
    p.ts.walkChain(head);
  } catch (e) {
    if (e instanceof VirtqueueError) return false;
    throw e;
  }
  return p.req.parse(p.ts, p.limits) === VIRTIO_BLK_S_OK && p.req.type <= 1;
}

/** The WASM path on one head. True when the chain is a valid read or write. */
export function wasmWalkParse(p: VirtqPair, head: number): boolean {
  return p.wasm.walk(head) > 0 && p.wasm.blkType <= 1;
}

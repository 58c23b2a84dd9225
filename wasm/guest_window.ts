/**
 * The guest window: a range of the wasm linear memory, reserved once at
 * start-up, into which a VM's memory (the fds a vhost-user front-end sends)
 * is mapped with MAP_FIXED. Guest RAM then lies inside the wasm memory, so
 * the WASM ring walker (wasm/kernels/src/virtq.rs) reads descriptors and
 * request headers in place, without a copy, and the bdev layer still sees
 * ordinary Uint8Array views of it.
 *
 * Why a window and not a mapping anywhere: a wasm module can only address
 * its own linear memory (at most 4 GiB for wasm32). The memory grows once
 * (see kernels.ts), so the window is part of that single growth; its pages
 * cost nothing until a guest region is laid over them. When a region is
 * released, private zero pages are put back over it (Mapping's
 * restoreOnUnmap), so the wasm memory stays valid everywhere.
 *
 * A guest that does not fit (the window is full, or was never reserved)
 * is mapped elsewhere as before and served by the TypeScript walker.
 * @module
 */
import { type Mapping, mapShared, PAGE_SIZE } from "../ffi/memory.ts";
import { addressOf } from "../ffi/memory.ts";
import { guestWindowRegion, wasmMemoryBytes } from "./kernels.ts";

/** Placement granularity: 2 MiB, so guest huge pages could line up. */
const SLOT_ALIGN = 2 * 1024 * 1024;

/** A guest region mapped into the window. */
export interface WindowMapping {
  /** The region's bytes as a view of the wasm memory (byteOffset is the wasm pointer). */
  readonly bytes: Uint8Array;
  /** Puts zero pages back and returns the range to the window. */
  release(): void;
}

interface Extent {
  start: number;
  size: number;
}

/** Free ranges of the window, first fit, coalesced on release. */
export class GuestWindow {
  /** Offset of the window in wasm memory. */
  readonly start: number;
  readonly size: number;
  #free: Extent[];

  constructor(start: number, size: number) {
    this.start = start;
    this.size = size;
    this.#free = [{ start, size }];
  }

  /** Bytes not handed out. */
  get freeBytes(): number {
    return this.#free.reduce((n, e) => n + e.size, 0);
  }

  /**
   * Maps `bytes` of `fd` from `offset` into the window; null when the
   * window has no room (the caller maps elsewhere). `offset` need not be
   * page-aligned. Throws what mmap throws (a bad fd, a range past the file).
   */
  map(fd: number, offset: number, bytes: number): WindowMapping | null {
    const pageOff = offset % PAGE_SIZE;
    const length = Math.ceil((pageOff + bytes) / PAGE_SIZE) * PAGE_SIZE;
    const need = Math.ceil(length / SLOT_ALIGN) * SLOT_ALIGN;
    const i = this.#free.findIndex((e) => e.size >= need);
    const extent = this.#free[i];
    if (extent === undefined) return null;
    const at = extent.start;
    const memory = wasmMemoryBytes();
    const mapping: Mapping = mapShared(fd, length, offset - pageOff, undefined, {
      fixedAddress: addressOf(memory) + at,
      restoreOnUnmap: true,
    });
    extent.start += need;
    extent.size -= need;
    if (extent.size === 0) this.#free.splice(i, 1);
    let released = false;
    return {
      bytes: new Uint8Array(memory.buffer, at + pageOff, bytes),
      release: () => {
        if (released) return;
        released = true;
        mapping.unmap();
        this.#give(at, need);
      },
    };
  }

  #give(start: number, size: number): void {
    this.#free.push({ start, size });
    this.#free.sort((a, b) => a.start - b.start);
    const merged: Extent[] = [];
    for (const e of this.#free) {
      const last = merged[merged.length - 1];
      if (last !== undefined && last.start + last.size === e.start) last.size += e.size;
      else merged.push({ ...e });
    }
    this.#free = merged;
  }
}

let theWindow: GuestWindow | null = null;

/** The process's guest window, or null when none was reserved (configureGuestWindow). */
export function guestWindow(): GuestWindow | null {
  if (theWindow === null) {
    const r = guestWindowRegion();
    if (r !== null) theWindow = new GuestWindow(r.start, r.size);
  }
  return theWindow;
}

import { assert, assertEquals, assertThrows } from "../src/testing/assert.ts";
import { mapShared, memfdCreate } from "../ffi/memory.ts";
import { sym } from "../ffi/libc.ts";
import { configureGuestWindow, initWasmMemory, WasmMemoryError } from "./kernels.ts";
import { guestWindow } from "./guest_window.ts";
import { crc32c } from "./crc32c.ts";
import { crc32cTs } from "./crc32c_ts.ts";

const MIB = 1024 * 1024;

Deno.test("guest window: a memfd mapped into wasm memory is the same memory, read in place", () => {
  configureGuestWindow(16 * MIB);
  initWasmMemory(MIB);
  assertThrows(() => configureGuestWindow(0), WasmMemoryError, "before initWasmMemory");
  const w = guestWindow();
  assert(w !== null, "no window after configureGuestWindow");
  assertEquals(w.freeBytes, 16 * MIB);

  const fd = memfdCreate("guest", 8 * MIB);
  try {
    const other = mapShared(fd, 8 * MIB, 0);
    const pattern = other.bytes(4096, 2 * MIB);
    crypto.getRandomValues(pattern.subarray(0, 65536));
    // An offset that is not page-aligned, as vhost-user's mmap_offset may be.
    const m = w.map(fd, 4096 + 100, MIB);
    assert(m !== null);
    assertEquals(m.bytes.subarray(0, 16), pattern.subarray(100, 116));
    // The WASM kernel reads guest memory where it lies (no copy): same CRC as over the bytes.
    assertEquals(crc32c(m.bytes), crc32cTs(pattern.subarray(100, 100 + MIB)));
    m.bytes[5] = 0x5a;
    assertEquals(pattern[105], 0x5a, "a write through the window reaches the memfd");

    // 2 MiB slots: 1 MiB takes one, the rest fits seven more; the ninth does not fit.
    const more = Array.from({ length: 7 }, () => w.map(fd, 0, MIB));
    assert(more.every((x) => x !== null));
    assertEquals(w.map(fd, 0, MIB), null, "a full window maps nothing");

    const offset = m.bytes.byteOffset;
    const view = new Uint8Array(m.bytes.buffer, offset, 16);
    m.release();
    m.release(); // idempotent
    assertEquals(view[5], 0, "released pages are zero pages again, still valid memory");
    assertEquals(pattern[105], 0x5a, "releasing does not touch the guest's memory");
    for (const x of more) x?.release();
    assertEquals(w.freeBytes, 16 * MIB, "released slots coalesce");
    other.unmap();
  } finally {
    sym.close(fd);
  }
});

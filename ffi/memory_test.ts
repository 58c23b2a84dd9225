import {
  addressOf,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  mapAnonymous,
  Mapping,
  mapShared,
  memfdCreate,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  setAddress,
  unmap,
} from "./memory.ts";
import { close, sym } from "./libc.ts";
import { Errno, ErrnoError } from "./errno.ts";
import { assert, assertEquals, assertThrows } from "../src/testing/assert.ts";
import { openFdCount } from "../src/testing/fds.ts";

Deno.test("mapAnonymous gives zeroed, writable, page-backed memory", () => {
  using m = mapAnonymous(3 * PAGE_SIZE + 5);
  assertEquals(m.length, 3 * PAGE_SIZE + 5);
  assertEquals(m.address % PAGE_SIZE, 0, "page-aligned");
  const u8 = m.bytes();
  assert(u8.every((b) => b === 0), "zeroed");
  u8[u8.length - 1] = 0xab;
  assertEquals(m.bytes(m.length - 1, 1)[0], 0xab);
  assertEquals(m.buffer, m.buffer, "one buffer per mapping");
});

Deno.test("memfd mapped twice: both mappings see the same bytes", () => {
  const before = openFdCount();
  const fd = memfdCreate("memory_test", 2 * PAGE_SIZE);
  const a = mapShared(fd, 2 * PAGE_SIZE);
  const b = mapShared(fd, PAGE_SIZE, PAGE_SIZE); // second page only
  close(fd); // mappings hold their own file reference
  assertEquals(openFdCount(), before);
  assert(a.address !== b.address);
  a.bytes(PAGE_SIZE, 4).set([1, 2, 3, 4]);
  assertEquals([...b.bytes(0, 4)].join(), "1,2,3,4");
  b.bytes()[100] = 77;
  assertEquals(a.bytes()[PAGE_SIZE + 100], 77);
  unmap(a);
  b.unmap();
});

Deno.test("mapShared MAP_FIXED over an anonymous range, restored on unmap", () => {
  using host = mapAnonymous(4 * PAGE_SIZE);
  const hostView = host.bytes();
  hostView[PAGE_SIZE] = 9; // will be replaced by the memfd's page
  const fd = memfdCreate("fixed", PAGE_SIZE);
  const writer = mapShared(fd, PAGE_SIZE);
  writer.bytes()[0] = 42;
  const overlay = mapShared(fd, PAGE_SIZE, 0, undefined, {
    fixedAddress: host.address + PAGE_SIZE,
  });
  close(fd);
  assertEquals(overlay.address, host.address + PAGE_SIZE);
  assertEquals(hostView[PAGE_SIZE], 42, "host view sees the memfd page");
  hostView[PAGE_SIZE + 1] = 43;
  assertEquals(writer.bytes()[1], 43, "memfd sees writes through the host view");
  overlay.unmap();
  // restoreOnUnmap (default for fixed) put zero pages back: the host range stays valid.
  assertEquals(hostView[PAGE_SIZE], 0);
  hostView[PAGE_SIZE] = 1;
  assertEquals(writer.bytes()[0], 42, "no longer shared");
  writer.unmap();
});

Deno.test("unmap is idempotent, marks closed and detaches views", () => {
  const m = mapAnonymous(PAGE_SIZE);
  const view = m.bytes();
  view[0] = 5;
  assert(!m.closed);
  m.unmap();
  assert(m.closed);
  m.unmap(); // no-op
  unmap(m); // no-op
  assertEquals(view.length, 0, "stale view is zero-length, not dangling");
  assertEquals(view[0], undefined);
  assertThrows(() => m.bytes(), Error, "already unmapped");
  assertThrows(() => m.buffer, Error, "already unmapped");
  assertThrows(() => addressOf(view), TypeError, "detached");
});

Deno.test("mapping errors say what failed", () => {
  assertThrows(() => mapAnonymous(0), RangeError, "positive integer");
  assertThrows(() => mapAnonymous(1.5), RangeError, "positive integer");
  const fd = memfdCreate("errors", PAGE_SIZE);
  try {
    assertThrows(() => mapShared(fd, PAGE_SIZE, 100), RangeError, "multiple of 4096");
    assertThrows(() => mapShared(fd, 2 * PAGE_SIZE), RangeError, "past the end of fd");
    assertThrows(() => mapShared(fd, PAGE_SIZE, PAGE_SIZE), RangeError, "past the end");
    assertThrows(
      () => mapShared(fd, PAGE_SIZE, 0, undefined, { fixedAddress: 12345 }),
      RangeError,
      "page-aligned",
    );
    const e = assertThrows(() => mapShared(-1, PAGE_SIZE), ErrnoError, "fd -1");
    assertEquals((e as ErrnoError).errno, Errno.EBADF);
  } finally {
    close(fd);
  }
  // A read-only fd cannot back a writable shared mapping.
  const rw = memfdCreate("ro", PAGE_SIZE);
  const ro = sym.open(new TextEncoder().encode(`/proc/self/fd/${rw}\0`), 0, 0);
  close(rw);
  try {
    assert(ro >= 0);
    const e = assertThrows(() => mapShared(ro, PAGE_SIZE), ErrnoError, "mmap failed");
    assertEquals((e as ErrnoError).errno, Errno.EACCES);
    using m = mapShared(ro, PAGE_SIZE, 0, PROT_READ);
    assertEquals(m.bytes()[0], 0);
  } finally {
    close(ro);
  }
  assertThrows(() => memfdCreate("neg", -1), RangeError, "non-negative");
});

Deno.test("Mapping wraps an existing region and unmaps it", () => {
  const p = sym.mmap(
    null,
    BigInt(PAGE_SIZE),
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0n,
  );
  assert(p !== null);
  const m = new Mapping(p, PAGE_SIZE);
  m.bytes()[0] = 1;
  m.unmap();
  assert(m.closed);
});

Deno.test("addressOf matches Deno.UnsafePointer.of and follows byteOffset", () => {
  const ab = new ArrayBuffer(1024);
  const whole = new Uint8Array(ab);
  const expected = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(whole)));
  assertEquals(addressOf(whole), expected);
  assertEquals(addressOf(whole.subarray(100)), expected + 100);
  assertEquals(addressOf(new Uint32Array(ab, 16, 4)), expected + 16);
  assertEquals(addressOf(new DataView(ab, 8)), expected + 8);
  assertEquals(addressOf(whole.subarray(1024)), expected + 1024, "empty view at the end");

  using m = mapAnonymous(PAGE_SIZE);
  assertEquals(addressOf(m.bytes()), m.address);
  assertEquals(addressOf(m.bytes(10, 5)), m.address + 10);
});

Deno.test("addressOf of a small on-heap typed array is stable and real", () => {
  const small = new Uint8Array(16); // V8 keeps arrays this small on the JS heap at first
  const addr = addressOf(small.subarray(4));
  // Churn the heap so an on-heap array would move; the address must still be right.
  for (let i = 0; i < 200; i++) new Uint8Array(1000).fill(i);
  assertEquals(addressOf(small.subarray(4)), addr);
  const src = new Uint8Array([7, 8, 9]);
  sym.memcpy(Deno.UnsafePointer.create(BigInt(addr)), Deno.UnsafePointer.of(src), 3n);
  assertEquals([...small.subarray(4, 7)].join(), "7,8,9", "native write lands in the array");
});

Deno.test("setAddress stores a little-endian u64", () => {
  const dv = new DataView(new ArrayBuffer(8));
  setAddress(dv, 0, 0x7fff_1234_5678);
  assertEquals(dv.getBigUint64(0, true), 0x7fff_1234_5678n);
});

Deno.test("addressOf + setAddress allocate nothing in steady state (V8 GC trace)", async () => {
  // Run the hot loop in a child under --trace-gc: any per-call allocation
  // shows up as scavenges inside the measured window. The "bigint" control
  // allocates on purpose and must show them, so the probe is known to work.
  const script = new URL("./testdata/addressof_alloc.ts", import.meta.url).pathname;
  async function gcEvents(mode: string): Promise<number> {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", "--v8-flags=--trace-gc", script, mode],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert(out.success, `child failed: ${new TextDecoder().decode(out.stderr)}`);
    const begin = text.indexOf("MEASURE-BEGIN");
    const end = text.indexOf("MEASURE-END");
    assert(begin >= 0 && end > begin, `markers missing in: ${text}`);
    return text.slice(begin, end).split("\n").filter((l) => /Scavenge|Mark-Compact/.test(l))
      .length;
  }
  const [steady, control] = await Promise.all([gcEvents("address"), gcEvents("bigint")]);
  assert(control > 0, "control run should allocate (probe broken?)");
  assertEquals(steady, 0, "GC events during 5M addressOf calls");
});

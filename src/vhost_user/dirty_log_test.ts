import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { mapShared, memfdCreate } from "../../ffi/memory.ts";
import { eventfd, sym } from "../../ffi/libc.ts";
import { openFdCount } from "../testing/fds.ts";
import { VirtioDriver } from "../testing/virtio_driver.ts";
import { startReactor } from "../testing/reactor_thread.ts";
import { BdevRegistry } from "../bdev/mod.ts";
import { createMallocBdev, deleteMallocBdev } from "../bdev_modules/malloc/malloc.ts";
import {
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_F_VERSION_1,
} from "../virtio/blk.ts";
import { DIRTY_LOG_MAX_BYTES, DirtyLog, VHOST_LOG_PAGE } from "./dirty_log.ts";
import { VhostBlkBackend } from "./blk_backend.ts";
import {
  decodeHeader,
  decodeU64,
  encodeLog,
  encodeMemoryTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  featureBit,
  type MemoryRegion,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_REPLY_MASK,
  VhostUserProtocolFeature as P,
  VhostUserRequest as R,
  type VringAddr,
} from "./messages.ts";
import { MessageReader } from "./reader.ts";
import { type SessionOutput, VhostUserSession } from "./session.ts";
import { VhostUserError } from "./errors.ts";
import { traceGc } from "../testing/gc_trace.ts";

const F_DUPFD_CLOEXEC = 1030;

/** A second fd of the same file: DirtyLog.setBase closes the one it is given. */
function dup(fd: number): number {
  const d = sym.fcntl(fd, F_DUPFD_CLOEXEC, 0n);
  assert(d >= 0, "fcntl(F_DUPFD_CLOEXEC) failed");
  return d;
}

/** A memfd of `bytes` and the test's own view of it. */
function sharedFile(bytes: number): { fd: number; bytes: Uint8Array; close(): void } {
  const fd = memfdCreate("dirty-log-test", bytes);
  const m = mapShared(fd, bytes);
  return {
    fd,
    bytes: m.bytes(),
    close() {
      m.unmap();
      sym.close(fd);
    },
  };
}

/** The set bits of a log, as page numbers. */
function dirtyPages(log: Uint8Array): number[] {
  const pages: number[] = [];
  for (let i = 0; i < log.byteLength; i++) {
    const b = log[i] as number;
    for (let bit = 0; bit < 8; bit++) if ((b >> bit) & 1) pages.push(i * 8 + bit);
  }
  return pages;
}

/** Pages of guest range [gpa, gpa + len). */
function pagesOf(gpa: number, len: number): number[] {
  const out: number[] = [];
  for (
    let p = Math.floor(gpa / VHOST_LOG_PAGE);
    p <= Math.floor((gpa + len - 1) / VHOST_LOG_PAGE);
    p++
  ) {
    out.push(p);
  }
  return out;
}

function sorted(pages: Iterable<number>): number[] {
  return [...new Set(pages)].sort((a, b) => a - b);
}

Deno.test("dirty log: page p is bit p % 8 of byte p / 8", () => {
  const f = sharedFile(0x4000);
  const said: string[] = [];
  const log = new DirtyLog("t", (m) => said.push(m));
  log.setBase(dup(f.fd), 0x4000n, 0n);
  assert(log.mark(0, 1));
  assertEquals(f.bytes[0], 0b1);
  assert(log.mark(4095, 1)); // same page
  assertEquals(f.bytes[0], 0b1);
  assert(log.mark(4096, 1));
  assertEquals(f.bytes[0], 0b11);
  assert(log.mark(7 * 4096 + 100, 10));
  assertEquals(f.bytes[0], 0b1000_0011);
  assert(log.mark(8 * 4096, 4096));
  assertEquals(f.bytes[1], 0b1);
  // Page 0x12345: byte 0x2468, bit 5.
  assert(log.mark(0x1234_5fff, 1));
  assertEquals(f.bytes[0x2468], 1 << 5);
  assertEquals(dirtyPages(f.bytes), [0, 1, 7, 8, 0x12345]);
  // Nothing for an empty range.
  assert(log.mark(0x2000_0000, 0));
  assertEquals(dirtyPages(f.bytes).length, 5);
  assertEquals(log.stats.unlogged, 0);
  assertEquals(said, []);
  log.close();
  f.close();
});

Deno.test("dirty log: ranges across page and byte boundaries set exactly their pages", () => {
  const LOG = 512; // 4096 pages, 16 MiB
  const f = sharedFile(LOG);
  const log = new DirtyLog("t", () => {});
  log.setBase(dup(f.fd), BigInt(LOG), 0n);
  // Hand-picked spans: 2 bytes over a page boundary, a range ending on the last byte of a
  // page, one from bit 5 of a byte to bit 2 of the next, a whole byte, many bytes.
  const cases: [number, number][] = [
    [4095, 2],
    [3 * 4096, 4096],
    [13 * 4096 + 1, 5 * 4096],
    [64 * 4096, 8 * 4096],
    [100 * 4096 + 7, 77 * 4096],
  ];
  // And seeded random ones, compared with the spec's one-bit-at-a-time pseudo-code.
  let seed = 42;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let i = 0; i < 300; i++) {
    const gpa = rnd(LOG * 8 * 4096 - 0x40000);
    cases.push([gpa, 1 + rnd(i % 3 === 0 ? 0x40000 : 0x3000)]);
  }
  for (const [gpa, len] of cases) {
    f.bytes.fill(0);
    const reference = new Uint8Array(LOG);
    for (const page of pagesOf(gpa, len)) {
      reference[page >> 3] = (reference[page >> 3] ?? 0) | (1 << (page % 8));
    }
    assert(log.mark(gpa, len));
    assertEquals(dirtyPages(f.bytes), dirtyPages(reference), `mark(0x${gpa.toString(16)}, ${len})`);
  }
  assertEquals(log.stats.writes, cases.length);
  log.close();
  f.close();
});

Deno.test("dirty log: pages past the log are refused, reported once, and nothing outside it is written", () => {
  // The log is 16 bytes at offset 4196 of a 3-page file: the bytes around it must stay zero.
  const f = sharedFile(3 * 4096);
  const said: string[] = [];
  const log = new DirtyLog("vhost-blk t", (m) => said.push(m));
  log.setBase(dup(f.fd), 16n, 4096n + 100n);
  const inLog = () => f.bytes.subarray(4196, 4196 + 16);
  assert(log.mark(127 * 4096, 4096)); // the last page the log covers
  assertEquals(dirtyPages(inLog()), [127]);
  // Pages 126..130: 126 and 127 are marked, the rest cannot be.
  assertEquals(log.mark(126 * 4096, 5 * 4096), false);
  assertEquals(dirtyPages(inLog()), [126, 127]);
  assertEquals(log.mark(2 ** 40, 1), false);
  assertEquals(log.mark(-1, 1), false);
  assertEquals(log.mark(Number.MAX_SAFE_INTEGER, 2), false);
  assertEquals(log.stats.unlogged, 4);
  assertEquals(said.length, 1, said.join("\n"));
  assert(said[0]?.includes("reaches past the log (16 bytes cover 524288 bytes"), said[0]);
  let outside = 0;
  f.bytes.forEach((b, i) => {
    if ((i < 4196 || i >= 4196 + 16) && b !== 0) outside++;
  });
  assertEquals(outside, 0);
  // A new log resets the once-per-log report.
  log.setBase(dup(f.fd), 16n, 0n);
  assertEquals(log.mark(2 ** 30, 1), false);
  assertEquals(said.length, 2);
  log.close();
  // No log at all: nothing to write to, reported.
  const none = new DirtyLog("t", (m) => said.push(m));
  assertEquals(none.mark(0, 1), false);
  assert(said[2]?.includes("no log is mapped"), said[2]);
  f.close();
});

Deno.test("dirty log: SET_LOG_BASE values are checked, the fd is always closed, a failure keeps the old log", () => {
  const f = sharedFile(8192);
  const g = sharedFile(4096);
  const log = new DirtyLog("t", () => {});
  const before = openFdCount();
  assertThrows(() => log.setBase(dup(f.fd), 0n, 0n), RangeError, "must be 1..");
  assertThrows(
    () => log.setBase(dup(f.fd), BigInt(DIRTY_LOG_MAX_BYTES) + 1n, 0n),
    RangeError,
    "must be 1..",
  );
  assertThrows(() => log.setBase(dup(f.fd), 8192n, 1n), RangeError, "past the end");
  assertThrows(() => log.setBase(dup(f.fd), 16n, 1n << 63n), RangeError, "out of range");
  assertEquals(openFdCount(), before);
  assertEquals(log.mapped, false);
  log.setBase(dup(f.fd), 8192n, 0n);
  assertThrows(() => log.setBase(dup(f.fd), 16n, 8190n), RangeError, "past the end");
  assert(log.mark(4096 * 9, 1)); // still the first log
  assertEquals(f.bytes[1], 0b10);
  assertEquals(log.stats.bases, 1);
  // A second log replaces the first: marks go to the new one only.
  log.setBase(dup(g.fd), 4096n, 0n);
  assert(log.mark(0, 1));
  assertEquals(g.bytes[0], 1);
  assertEquals(f.bytes[0], 0);
  assertEquals(log.stats.bases, 2);
  log.close();
  assertEquals(openFdCount(), before);
  f.close();
  g.close();
});

Deno.test("dirty log: SET_LOG_FD's eventfd is signalled once per batch of marks", () => {
  const f = sharedFile(4096);
  const log = new DirtyLog("t", () => {});
  log.setBase(dup(f.fd), 4096n, 0n);
  const efd = eventfd();
  log.setEventFd(dup(efd));
  const count = new BigUint64Array(1);
  const read = () => (sym.read(efd, new Uint8Array(count.buffer), 8n) === 8n ? count[0] : 0n);
  log.signal();
  assertEquals(read(), 0n); // nothing marked yet
  log.mark(0, 1);
  log.mark(4096, 1);
  log.signal();
  log.signal();
  assertEquals(read(), 1n);
  log.close();
  sym.close(efd);
  f.close();
});

Deno.test("dirty log: a second writer of the same byte never erases our mark (atomic OR)", async () => {
  // Two workers (two back-ends of one VM) set different bits of one log byte, each checking
  // that its bit is there right after mark() and clearing it again, as QEMU's collector does.
  // A plain read-OR-write lets one writer store a stale byte over the other's fresh bit (an
  // earlier version of this loop with plain stores lost hundreds in a few million rounds).
  const ITERATIONS = 2_000_000;
  const f = sharedFile(4096);
  const ctl = new SharedArrayBuffer(4);
  const url = new URL("./testdata/dirty_log_worker.ts", import.meta.url);
  const workers = [0, 1].map(() => new Worker(url, { type: "module" }));
  try {
    const lost = await Promise.all(workers.map((w, i) =>
      new Promise<number>((resolve, reject) => {
        w.onmessage = (e: MessageEvent<number>) => resolve(e.data);
        w.onerror = (e) => reject(new Error(e.message));
        w.postMessage({ fd: dup(f.fd), bit: 3 + i, iterations: ITERATIONS, ctl });
      })
    ));
    assertEquals(lost, [0, 0]);
  } finally {
    workers.forEach((w) => w.terminate());
    f.close();
  }
});

Deno.test("dirty log: marking and used-ring logging allocate nothing per write (V8 GC trace)", async () => {
  const script = new URL("./testdata/dirty_log_alloc.ts", import.meta.url).pathname;
  async function gcEvents(mode: string): Promise<number> {
    const { events, after } = await traceGc(script, [mode]);
    assert(after.some((l) => /^pages [1-9]\d* unlogged 0 /.test(l)), after.join("\n"));
    return events;
  }
  const control = await gcEvents("copy");
  assert(control >= 5, `the control should show allocation (got ${control} GC events)`);
  const n = await gcEvents("steady");
  assert(n <= 1, `${n} GC events in 1M writes (control: ${control})`);
});

/** A DirtyPageLog that records its calls. */
class RecordingLog {
  calls: [number, number][] = [];
  mark(gpa: number, length: number): void {
    this.calls.push([gpa, length]);
  }
}

Deno.test("virtqueue: used-ring writes are logged at log_guest_addr while a log is set", () => {
  const d = new VirtioDriver({ queueSize: 8, eventIdx: true });
  const q = d.queue();
  const log = new RecordingLog();
  q.pushUsed(0, 1); // not logged: no log yet
  assertEquals(log.calls, []);
  // log_guest_addr need not be the used ring's address: it is where its first byte is logged.
  const at = 0x4000_0000;
  q.logUsedRing(log, at);
  q.pushUsed(3, 17); // element 1 (used idx was 1), then idx
  assertEquals(log.calls, [[at + 4 + 8 * 1, 8], [at + 2, 2]]);
  q.setAvailEvent(5); // avail_event after the 8 elements
  assertEquals(log.calls.at(-1), [at + 4 + 8 * 8, 2]);
  q.setNoNotify(true); // flags
  assertEquals(log.calls.at(-1), [at, 2]);
  assertEquals(d.readUsed(), [{ id: 0, len: 1 }, { id: 3, len: 17 }]);
  // The element slot wraps with the ring.
  for (let i = 0; i < 7; i++) q.pushUsed(i, 0);
  assertEquals(log.calls.at(-2), [at + 4 + 8 * 0, 8]); // used idx 8 -> slot 0
  q.logUsedRing(null);
  const n = log.calls.length;
  q.pushUsed(1, 0);
  q.setAvailEvent(1);
  assertEquals(log.calls.length, n);
});

/** Waits (without a timing threshold: a guard only) until `cond` holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert(cond(), `gave up waiting for ${what}`);
}

Deno.test("vhost-blk: with VHOST_F_LOG_ALL, IN data, GET_ID, status bytes and the used ring are logged; OUT data is not", async () => {
  const { thread: reactor, stop } = await startReactor();
  const registry = new BdevRegistry();
  createMallocBdev(registry, { name: "Mlog", numBlocks: 4096, blockSize: 512 });
  const said: string[] = [];
  const backend = new VhostBlkBackend({
    registry,
    reactor,
    bdevName: "Mlog",
    numQueues: 1,
    readOnly: false,
    log: (m) => said.push(m),
  });
  const MEM = 4 << 20;
  const GPA = 0x10_0000;
  const UVA = 0x7f00_0000_0000;
  const mem = sharedFile(MEM);
  const logFile = sharedFile(4096); // covers 128 MiB
  const d = new VirtioDriver({ queueSize: 16, bytes: mem.bytes, gpaBase: GPA });
  const kick = eventfd();
  const call = eventfd();
  try {
    assert((backend.features & featureBit(VHOST_F_LOG_ALL)) !== 0n, "VHOST_F_LOG_ALL offered");
    assert((backend.protocolFeatures & featureBit(P.LOG_SHMFD)) !== 0n, "LOG_SHMFD offered");
    const base = featureBit(VIRTIO_F_VERSION_1);
    backend.setFeatures(base);
    const region: MemoryRegion = {
      guestPhysAddr: BigInt(GPA),
      memorySize: BigInt(MEM),
      userspaceAddr: BigInt(UVA),
      mmapOffset: 0n,
    };
    backend.setMemTable([region], [dup(mem.fd)]);
    backend.setLogBase({ mmapSize: 4096n, mmapOffset: 0n }, dup(logFile.fd));
    assert(
      said.some((l) => l.includes("dirty log of 4096 bytes mapped (covers 128 MiB")),
      said.join("\n"),
    );
    // The used ring is logged at a log_guest_addr of our choosing, to see that it is used.
    const LOG_USED = 0x600_0000;
    const addr = (flags: number): VringAddr => ({
      index: 0,
      flags,
      descUserAddr: BigInt(UVA + d.descAddr - GPA),
      usedUserAddr: BigInt(UVA + d.usedAddr - GPA),
      availUserAddr: BigInt(UVA + d.availAddr - GPA),
      logGuestAddr: BigInt(LOG_USED),
    });
    const vring = (flags: number) => ({
      num: 16,
      base: 0,
      addr: addr(flags),
      kickFd: kick,
      callFd: call,
      errFd: null,
      enabled: true,
    });
    backend.startQueue(0, vring(0));
    const one = new Uint8Array(new BigUint64Array([1n]).buffer);
    let used = 0;
    // addBlkRequest makes the chain available; a kick tells the backend.
    const run = async (_r: { head: number }) => {
      sym.write(kick, one, 8n);
      used++;
      await until(() => d.usedIdx() === used, `used idx ${used}`);
    };
    const usedPages = pagesOf(LOG_USED, 4 + 8 * 16);

    // 1. No logging: a write of a pattern leaves the log empty.
    const pattern = new Uint8Array(8192).map((_, i) => (i * 31) & 0xff);
    const out1 = d.addBlkRequest({
      type: VIRTIO_BLK_T_OUT,
      sector: 8,
      data: [{ len: 8192, writable: false, data: pattern }],
    });
    await run(out1);
    assertEquals(dirtyPages(logFile.bytes), []);

    // 2. VHOST_VRING_F_LOG alone: only the used ring.
    backend.updateQueue(0, vring(1));
    const out2 = d.addBlkRequest({
      type: VIRTIO_BLK_T_OUT,
      sector: 64,
      data: [{ len: 512, writable: false, data: pattern.subarray(0, 512) }],
    });
    await run(out2);
    assertEquals(dirtyPages(logFile.bytes), sorted(usedPages));
    logFile.bytes.fill(0);

    // 3. VHOST_F_LOG_ALL too: a read into two buffers that cross page boundaries.
    backend.setFeatures(base | featureBit(VHOST_F_LOG_ALL));
    assert(said.some((l) => l.includes("dirty logging on")), said.join("\n"));
    const bufA = 0x30_0f00; // 0x300 bytes over pages 0x300 and 0x301
    const bufB = 0x35_0800; // 0x1d00 bytes over pages 0x350, 0x351 and 0x352
    const in3 = d.addBlkRequest({
      type: VIRTIO_BLK_T_IN,
      sector: 8,
      data: [
        { gpa: bufA, len: 0x300, writable: true },
        { gpa: bufB, len: 0x1d00, writable: true },
      ],
    });
    await run(in3);
    assertEquals(d.read(bufA, 0x300), pattern.subarray(0, 0x300));
    assertEquals(d.read(bufB, 0x1d00), pattern.subarray(0x300, 0x2000));
    assertEquals(d.read(in3.status, 1)[0], 0); // VIRTIO_BLK_S_OK
    assertEquals(
      dirtyPages(logFile.bytes),
      sorted([
        ...pagesOf(bufA, 0x300),
        ...pagesOf(bufB, 0x1d00),
        ...pagesOf(in3.status, 1),
        ...usedPages,
      ]),
    );
    logFile.bytes.fill(0);

    // 4. An OUT: its data was only read by the device, so only status and used ring.
    const bufC = 0x38_0000;
    d.write(bufC, pattern.subarray(0, 4096));
    const out4 = d.addBlkRequest({
      type: VIRTIO_BLK_T_OUT,
      sector: 128,
      data: [{ gpa: bufC, len: 4096, writable: false }],
    });
    await run(out4);
    assertEquals(dirtyPages(logFile.bytes), sorted([...pagesOf(out4.status, 1), ...usedPages]));
    logFile.bytes.fill(0);

    // 5. GET_ID writes 20 bytes.
    const bufD = 0x3a_0ff8; // crosses into the next page
    const id5 = d.addBlkRequest({
      type: VIRTIO_BLK_T_GET_ID,
      sector: 0,
      data: [{ gpa: bufD, len: 20, writable: true }],
    });
    await run(id5);
    assertEquals(new TextDecoder().decode(d.read(bufD, 4)), "Mlog");
    assertEquals(
      dirtyPages(logFile.bytes),
      sorted([...pagesOf(bufD, 20), ...pagesOf(id5.status, 1), ...usedPages]),
    );
    logFile.bytes.fill(0);

    // 6. Logging off again (migration cancelled): nothing more is marked.
    backend.setFeatures(base);
    backend.updateQueue(0, vring(0));
    const in6 = d.addBlkRequest({
      type: VIRTIO_BLK_T_IN,
      sector: 8,
      data: [{ gpa: bufA, len: 512, writable: true }],
    });
    await run(in6);
    assertEquals(dirtyPages(logFile.bytes), []);
    assert(
      said.some((l) => /dirty logging off \(\d+ writes, \d+ pages marked\)/.test(l)),
      said.join("\n"),
    );
    const s = backend.dirtyLogStats;
    assertEquals(s.unlogged, 0);
    assert(s.pages > 0);
    backend.stopQueue(0);
  } finally {
    backend.close();
    await stop();
    await deleteMallocBdev(registry, "Mlog");
    sym.close(kick);
    sym.close(call);
    mem.close();
    logFile.close();
  }
  assert(said.some((l) => l.includes("dirty log at close:")), said.join("\n"));
});

/** Encodes, reads back through the reader, applies. */
function send(
  s: VhostUserSession,
  request: number,
  payload?: Uint8Array,
  fds: number[] = [],
): SessionOutput {
  const reader = new MessageReader();
  reader.push(encodeMessage(request, payload), fds);
  const m = reader.next();
  assert(m !== null);
  return s.handle(m);
}

/** A backend model that records what the session asks of it. */
function loggingBackend(withLog: boolean) {
  const calls: string[] = [];
  const backend = {
    features: featureBit(VIRTIO_F_VERSION_1) | featureBit(VHOST_F_LOG_ALL),
    protocolFeatures: featureBit(P.REPLY_ACK) | featureBit(P.LOG_SHMFD),
    numQueues: 1,
    maxQueueSize: 256,
    setFeatures: (f: bigint) => void calls.push(`features ${f.toString(16)}`),
    setMemTable: (_r: readonly MemoryRegion[], fds: number[]) => void calls.push(`table ${fds}`),
    addMemRegion: () => {},
    removeMemRegion: () => {},
    startQueue: (i: number, v: { addr: VringAddr }) =>
      void calls.push(`start ${i} flags ${v.addr.flags} log 0x${v.addr.logGuestAddr.toString(16)}`),
    stopQueue: () => 0,
    updateQueue: (i: number, v: { addr: VringAddr }) =>
      void calls.push(
        `update ${i} flags ${v.addr.flags} log 0x${v.addr.logGuestAddr.toString(16)}`,
      ),
    getConfig: () => new Uint8Array(0),
    setConfig: () => {},
    reset: () => {},
    ...(withLog
      ? {
        setLogBase: (l: { mmapSize: bigint; mmapOffset: bigint }, fd: number) =>
          void calls.push(`log ${l.mmapSize} at ${l.mmapOffset} fd ${fd}`),
        setLogFd: (fd: number) => void calls.push(`logfd ${fd}`),
      }
      : {}),
  };
  return { backend, calls };
}

Deno.test("session: LOG_SHMFD, SET_LOG_BASE with its reply, SET_LOG_FD, and SET_VRING_ADDR on a started ring", () => {
  // Without setLogBase the session does not offer LOG_SHMFD, whatever the backend says.
  const plain = new VhostUserSession(loggingBackend(false).backend);
  const offered = (s: VhostUserSession) => {
    const reply = send(s, R.GET_PROTOCOL_FEATURES).reply;
    assert(reply !== null);
    return decodeU64(reply.subarray(12));
  };
  assertEquals(offered(plain) & featureBit(P.LOG_SHMFD), 0n);

  const { backend, calls } = loggingBackend(true);
  const s = new VhostUserSession(backend);
  assert((offered(s) & featureBit(P.LOG_SHMFD)) !== 0n);
  send(s, R.SET_FEATURES, encodeU64(featureBit(VHOST_USER_F_PROTOCOL_FEATURES)));
  send(s, R.SET_PROTOCOL_FEATURES, encodeU64(featureBit(P.LOG_SHMFD) | featureBit(P.REPLY_ACK)));
  send(s, R.SET_OWNER);
  send(
    s,
    R.SET_MEM_TABLE,
    encodeMemoryTable([{
      guestPhysAddr: 0n,
      memorySize: 1n << 20n,
      userspaceAddr: 0x1000_0000n,
      mmapOffset: 0n,
    }]),
    [90],
  );

  // SET_LOG_BASE hands the fd over and answers (QEMU blocks on the answer).
  const r = send(s, R.SET_LOG_BASE, encodeLog({ mmapSize: 4096n, mmapOffset: 64n }), [91]);
  assert(r.reply !== null);
  const h = decodeHeader(r.reply);
  assertEquals(h.request, R.SET_LOG_BASE);
  assertEquals(h.flags, 1 | VHOST_USER_REPLY_MASK);
  assertEquals(decodeU64(r.reply.subarray(12)), 0n);
  assertEquals(calls.at(-1), "log 4096 at 64 fd 91");
  send(s, R.SET_LOG_FD, undefined, [92]);
  assertEquals(calls.at(-1), "logfd 92");

  // Migration starts on a running ring: LOG_ALL, then the ring's F_LOG and log address.
  const a: VringAddr = {
    index: 0,
    flags: 0,
    descUserAddr: 0x1000_0000n,
    availUserAddr: 0x1000_1000n,
    usedUserAddr: 0x1000_2000n,
    logGuestAddr: 0x2000n,
  };
  send(s, R.SET_VRING_NUM, encodeVringState({ index: 0, num: 64 }));
  send(s, R.SET_VRING_ADDR, encodeVringAddr(a));
  send(s, R.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }), [93]);
  assertEquals(calls.at(-1), "start 0 flags 0 log 0x2000");
  send(
    s,
    R.SET_FEATURES,
    encodeU64(featureBit(VHOST_USER_F_PROTOCOL_FEATURES) | featureBit(VHOST_F_LOG_ALL)),
  );
  assertEquals(calls.at(-1), `features ${featureBit(VHOST_F_LOG_ALL).toString(16)}`);
  send(s, R.SET_VRING_ADDR, encodeVringAddr({ ...a, flags: 1, logGuestAddr: 0x2000n }));
  assertEquals(calls.at(-1), "update 0 flags 1 log 0x2000");
  assertEquals(s.vring(0).addr.flags, 1);
  // Moving a running ring is refused; so are flags the protocol does not define.
  const moved = assertThrows(
    () =>
      send(s, R.SET_VRING_ADDR, encodeVringAddr({ ...a, flags: 1, usedUserAddr: 0x1000_3000n })),
    VhostUserError,
  ) as VhostUserError;
  assertEquals(moved.kind, "illegalState");
  const flags = assertThrows(
    () => send(s, R.SET_VRING_ADDR, encodeVringAddr({ ...a, flags: 2 })),
    VhostUserError,
  ) as VhostUserError;
  assertEquals(flags.kind, "badPayload");
  assertEquals(s.close(), [93]);
});

Deno.test("session: SET_LOG_BASE needs LOG_SHMFD negotiated; SET_LOG_FD without a backend hook is closed", () => {
  const { backend } = loggingBackend(false);
  const s = new VhostUserSession(backend);
  send(s, R.SET_OWNER);
  const e = assertThrows(
    () => send(s, R.SET_LOG_BASE, encodeLog({ mmapSize: 4096n, mmapOffset: 0n }), [80]),
    VhostUserError,
  ) as VhostUserError;
  assertEquals(e.kind, "notNegotiated");
  assertEquals([...e.fds], [80]);
  assertEquals(send(s, R.SET_LOG_FD, undefined, [81]).closeFds, [81]);
});

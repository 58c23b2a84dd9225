import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { Errno } from "./errno.ts";
import {
  IORING_CQE_F_MORE,
  IORING_FEAT_EXT_ARG,
  IOSQE_IO_LINK,
  IoUring,
  POLL_EVENTS,
} from "./io_uring.ts";
import {
  check,
  cstr,
  errno,
  eventfd,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  O_CLOEXEC,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  sym,
} from "./libc.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

/** Native address of a view (tests only: allocates a pointer object). */
function addr(view: ArrayBufferView): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view)));
}

/** A `len`-byte view whose address is a multiple of `align` (for O_DIRECT). */
function aligned(len: number, align = 4096): Uint8Array<ArrayBuffer> {
  const backing = new Uint8Array(new ArrayBuffer(len + align));
  const skip = (align - (addr(backing) % align)) % align;
  return backing.subarray(skip, skip + len);
}

function random(len: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(len));
  for (let i = 0; i < len; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

interface Cqe {
  userData: number;
  res: number;
  flags: number;
}

/** Submits, waits for `n` CQEs and returns them keyed by user_data. */
function complete(ring: IoUring, n: number): Map<number, Cqe> {
  ring.submitAndWait(n);
  const out = new Map<number, Cqe>();
  let got = 0;
  while (got < n) {
    got += ring.reap((userData, res, flags) => out.set(userData, { userData, res, flags }));
    if (got < n) ring.submitAndWait(n - got);
  }
  return out;
}

function cqe(m: Map<number, Cqe>, userData: number): Cqe {
  const c = m.get(userData);
  if (c === undefined) throw new Error(`no CQE for user_data ${userData}`);
  return c;
}

async function withTempFile(
  fn: (fd: number, path: string) => void | Promise<void>,
  flags = O_RDWR,
): Promise<void> {
  const path = await Deno.makeTempFile({ prefix: "sluice-io_uring-" });
  const fd = check("open", sym.open(cstr(path), flags | O_CLOEXEC, 0o600), path);
  try {
    await fn(fd, path);
  } finally {
    sym.close(fd);
    await Deno.remove(path);
  }
}

Deno.test("io_uring: a batch of NOPs completes with their user_data", () => {
  using ring = new IoUring(128);
  strictEqual(ring.sqEntries, 128);
  for (let i = 0; i < 100; i++) ok(ring.prepNop(i + 1) >= 0);
  strictEqual(ring.sqPending(), 100);
  strictEqual(ring.submit(), 100);
  strictEqual(ring.sqPending(), 0);
  const seen = complete(ring, 100);
  strictEqual(seen.size, 100);
  for (let i = 1; i <= 100; i++) strictEqual(cqe(seen, i).res, 0);
  strictEqual(ring.cqReady(), 0);
});

Deno.test("io_uring: user_data keeps all 32 bits", () => {
  using ring = new IoUring(4);
  ring.prepNop(0xffffffff);
  ring.prepNop(0x80000000);
  const seen = complete(ring, 2);
  ok(seen.has(0xffffffff));
  ok(seen.has(0x80000000));
});

Deno.test("io_uring: write then read back random blocks at offsets, past 4 GiB too", async () => {
  await withTempFile((fd) => {
    using ring = new IoUring(64);
    const block = 4096;
    // Offsets above 2^32 check the high word of sqe->off.
    const offsets = [0, 3 * block, 7 * block, 2 ** 32 + 5 * block, 5 * 2 ** 30 + block];
    const data = random(block * offsets.length);
    offsets.forEach((off, i) => {
      ring.prepWrite(fd, addr(data) + i * block, block, off, 100 + i);
    });
    const written = complete(ring, offsets.length);
    offsets.forEach((_, i) => strictEqual(cqe(written, 100 + i).res, block));

    const back = new Uint8Array(data.length);
    // Read in reverse order so a wrong offset cannot pass by accident.
    for (let i = offsets.length - 1; i >= 0; i--) {
      ring.prepRead(fd, addr(back) + i * block, block, offsets[i] ?? 0, 200 + i);
    }
    const read = complete(ring, offsets.length);
    offsets.forEach((_, i) => strictEqual(cqe(read, 200 + i).res, block));
    deepStrictEqual(back, data);

    // A read that starts at EOF returns 0 bytes.
    ring.prepRead(fd, addr(back), block, 6 * 2 ** 30, 300);
    strictEqual(cqe(complete(ring, 1), 300).res, 0);
  });
});

Deno.test("io_uring: writev and readv scatter and gather through iovecs", async () => {
  await withTempFile((fd) => {
    using ring = new IoUring(8);
    const parts = [random(512), random(4096), random(1000)];
    const total = parts.reduce((n, p) => n + p.length, 0);
    // struct iovec { void *iov_base; size_t iov_len; } = 16 bytes
    const iov = new DataView(new ArrayBuffer(16 * parts.length));
    const setIov = (bufs: Uint8Array[]) =>
      bufs.forEach((b, i) => {
        const a = addr(b);
        iov.setUint32(i * 16, a >>> 0, true);
        iov.setUint32(i * 16 + 4, Math.floor(a / 2 ** 32), true);
        iov.setUint32(i * 16 + 8, b.length, true);
        iov.setUint32(i * 16 + 12, 0, true);
      });
    setIov(parts);
    ring.prepWritev(fd, addr(iov), parts.length, 8192, 1);
    strictEqual(cqe(complete(ring, 1), 1).res, total);

    const outs = parts.map((p) => new Uint8Array(p.length));
    setIov(outs);
    ring.prepReadv(fd, addr(iov), outs.length, 8192, 2);
    strictEqual(cqe(complete(ring, 1), 2).res, total);
    outs.forEach((o, i) => deepStrictEqual(o, parts[i]));
  });
});

Deno.test("io_uring: fsync and fdatasync succeed, linked after a write", async () => {
  await withTempFile((fd) => {
    using ring = new IoUring(8);
    const data = random(4096);
    const w = ring.prepWrite(fd, addr(data), data.length, 0, 1);
    // IOSQE_IO_LINK: the fsync starts only after the write completed.
    ring.setSqeFlags(w, IOSQE_IO_LINK);
    ring.prepFsync(fd, false, 2);
    ring.prepFsync(fd, true, 3);
    const seen = complete(ring, 3);
    strictEqual(cqe(seen, 1).res, 4096);
    strictEqual(cqe(seen, 2).res, 0);
    strictEqual(cqe(seen, 3).res, 0);
  });
});

Deno.test("io_uring: fallocate PUNCH_HOLE makes the range read as zeros", async () => {
  await withTempFile((fd) => {
    using ring = new IoUring(8);
    const size = 64 * 1024;
    const data = random(size);
    ring.prepFallocate(fd, 0, 0, size, 1);
    strictEqual(cqe(complete(ring, 1), 1).res, 0);
    ring.prepWrite(fd, addr(data), size, 0, 2);
    strictEqual(cqe(complete(ring, 1), 2).res, size);

    ring.prepFallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 16384, 32768, 3);
    const punched = cqe(complete(ring, 1), 3).res;
    if (punched === -Errno.EOPNOTSUPP) {
      console.warn("skipped: this filesystem does not support FALLOC_FL_PUNCH_HOLE");
      return;
    }
    strictEqual(punched, 0);
    const back = new Uint8Array(size);
    ring.prepRead(fd, addr(back), size, 0, 4);
    strictEqual(cqe(complete(ring, 1), 4).res, size, "KEEP_SIZE keeps the file length");
    deepStrictEqual(back.subarray(0, 16384), data.subarray(0, 16384));
    ok(back.subarray(16384, 49152).every((b) => b === 0));
    deepStrictEqual(back.subarray(49152), data.subarray(49152));
  });
});

Deno.test("io_uring: POLL_ADD on an eventfd fires after a write to it", () => {
  using ring = new IoUring(8);
  const efd = eventfd();
  try {
    const one = new BigUint64Array([1n]);
    const sink = new BigUint64Array(1);

    ring.prepPollAdd(efd, POLL_EVENTS.POLLIN, 10);
    ring.submit();
    strictEqual(ring.reap(() => {}), 0, "nothing to read yet, no CQE");
    strictEqual(Number(sym.write(efd, one, 8n)), 8);
    const c = cqe(complete(ring, 1), 10);
    ok((c.res & POLL_EVENTS.POLLIN) !== 0);
    strictEqual(c.flags & IORING_CQE_F_MORE, 0, "one-shot poll ends");
    sym.read(efd, sink, 8n);

    // Multishot: one SQE, a CQE per wake-up, each flagged F_MORE while armed.
    ring.prepPollAdd(efd, POLL_EVENTS.POLLIN, 11, true);
    ring.submit();
    for (let i = 0; i < 3; i++) {
      sym.write(efd, one, 8n);
      const m = cqe(complete(ring, 1), 11);
      ok((m.res & POLL_EVENTS.POLLIN) !== 0);
      ok((m.flags & IORING_CQE_F_MORE) !== 0, "multishot poll stays armed");
      sym.read(efd, sink, 8n);
    }
    ring.prepPollRemove(11, 12);
    const removed = complete(ring, 2);
    strictEqual(cqe(removed, 12).res, 0);
    strictEqual(cqe(removed, 11).res, -Errno.ECANCELED);
  } finally {
    sym.close(efd);
  }
});

Deno.test("io_uring: SEND and RECV over a socketpair", () => {
  using ring = new IoUring(8);
  const sv = new Int32Array(2);
  check("socketpair", sym.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  const [a = -1, b = -1] = sv;
  try {
    const msg = random(3000);
    const got = new Uint8Array(4096);
    // The recv is queued first: it waits (poll-armed) until the send lands.
    ring.prepRecv(b, addr(got), got.length, 0, 2);
    ring.submit();
    ring.prepSend(a, addr(msg), msg.length, 0, 1);
    const seen = complete(ring, 2);
    strictEqual(cqe(seen, 1).res, msg.length);
    strictEqual(cqe(seen, 2).res, msg.length);
    deepStrictEqual(got.subarray(0, msg.length), msg);
  } finally {
    sym.close(a);
    sym.close(b);
  }
});

Deno.test("io_uring: ACCEPT returns the connected socket's fd", () => {
  using ring = new IoUring(8);
  const listener = check("socket", sym.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const client = check("socket", sym.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  let accepted = -1;
  try {
    // Abstract-namespace sockaddr_un: sun_family, then a NUL and the name.
    const name = `sluice-io_uring-test-${Deno.pid}-${Math.random()}`;
    const sa = new Uint8Array(2 + 1 + name.length);
    sa[0] = AF_UNIX;
    new TextEncoder().encodeInto(name, sa.subarray(3));
    check("bind", sym.bind(listener, sa, sa.length));
    check("listen", sym.listen(listener, 4));
    ring.prepAccept(listener, 5);
    ring.submit();
    check("connect", sym.connect(client, sa, sa.length));
    accepted = cqe(complete(ring, 1), 5).res;
    ok(accepted >= 0, `accept result ${accepted}`);
  } finally {
    if (accepted >= 0) sym.close(accepted);
    sym.close(client);
    sym.close(listener);
  }
});

Deno.test("io_uring: errors come back as negative res", async () => {
  using ring = new IoUring(8);
  const buf = new Uint8Array(4096);
  ring.prepRead(999_999, addr(buf), buf.length, 0, 1);
  ring.prepNop(2); // a failed SQE does not stop the rest of the batch
  const seen = complete(ring, 2);
  strictEqual(cqe(seen, 1).res, -Errno.EBADF);
  strictEqual(cqe(seen, 2).res, 0);

  await withTempFile((fd) => {
    ring.prepWrite(fd, addr(buf), buf.length, 0, 3);
    strictEqual(cqe(complete(ring, 1), 3).res, -Errno.EBADF, "write to an O_RDONLY fd");
  }, O_RDONLY);
});

Deno.test("io_uring: O_DIRECT read with an aligned buffer", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-io_uring-" });
  const path = `${dir}/direct`;
  try {
    const data = random(16384);
    await Deno.writeFile(path, data);
    const fd = sym.open(cstr(path), O_RDONLY | O_DIRECT | O_CLOEXEC, 0);
    if (fd < 0) {
      const e = errno();
      if (e === Errno.EINVAL) {
        console.warn(`skipped: the filesystem under ${dir} refuses O_DIRECT (tmpfs?)`);
        return;
      }
      check("open", fd, path);
    }
    try {
      using ring = new IoUring(8);
      const buf = aligned(8192);
      ring.prepRead(fd, addr(buf), buf.length, 4096, 1);
      const res = cqe(complete(ring, 1), 1).res;
      if (res === -Errno.EINVAL) {
        console.warn(`skipped: O_DIRECT reads fail with EINVAL under ${dir}`);
        return;
      }
      strictEqual(res, 8192);
      deepStrictEqual(buf, data.subarray(4096, 12288));

      // Misaligned length: the kernel refuses the direct read.
      ring.prepRead(fd, addr(buf), 100, 0, 2);
      strictEqual(cqe(complete(ring, 1), 2).res, -Errno.EINVAL);
    } finally {
      sym.close(fd);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("io_uring: a full SQ ring makes getSqe return -1 until submitted", () => {
  using ring = new IoUring(8);
  for (let i = 0; i < 8; i++) ok(ring.prepNop(i) >= 0);
  strictEqual(ring.sqSpace(), 0);
  strictEqual(ring.getSqe(), -1);
  strictEqual(ring.prepNop(99), -1);
  strictEqual(complete(ring, 8).size, 8);
  strictEqual(ring.sqSpace(), 8);
  ok(ring.prepNop(8) >= 0);
  strictEqual(complete(ring, 1).size, 1);
});

Deno.test("io_uring: more CQEs than the CQ ring holds are not lost", () => {
  using ring = new IoUring(8, { cqEntries: 8 });
  strictEqual(ring.cqEntries, 8);
  // 3 batches of 8 NOPs without reaping: 16 overflow into the kernel's list.
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 8; i++) ring.prepNop(round * 8 + i);
    ring.submit();
  }
  const seen = new Set<number>();
  for (let spins = 0; seen.size < 24 && spins < 100; spins++) {
    ring.reap((u) => seen.add(u));
    if (seen.size < 24) ring.submitAndWait(1);
  }
  strictEqual(seen.size, 24);
});

Deno.test("io_uring: waitAsync times out, and wakes for a CQE submitted meanwhile", async () => {
  using ring = new IoUring(8);
  if ((ring.features & IORING_FEAT_EXT_ARG) !== 0) {
    strictEqual(await ring.waitAsync(1, 20), 0);
  }
  const waiting = ring.waitAsync(1);
  ok(ring.waiting);
  throws(() => ring.waitAsync(1), /already outstanding/);
  throws(() => ring.close(), /waitAsync is outstanding/);
  // Submitting from this thread while the FFI thread waits on the same ring.
  ring.prepNop(42);
  ring.submit();
  strictEqual(await waiting, 1);
  ok(!ring.waiting);
  let got = -1;
  ring.reap((u) => (got = u));
  strictEqual(got, 42);
  // Already-ready CQEs resolve without a trip to the FFI thread.
  ring.prepNop(43);
  ring.submit();
  strictEqual(await ring.waitAsync(1), 1);
  ring.reap(() => {});
});

Deno.test("io_uring: close is idempotent and a closed ring refuses work", () => {
  const ring = new IoUring(4);
  ring.close();
  ring.close();
  ok(ring.closed);
  throws(() => ring.submit(), /closed/);
  throws(() => new IoUring(0), RangeError);
});

Deno.test("io_uring: prep() covers other opcodes (IORING_OP_TIMEOUT)", () => {
  using ring = new IoUring(4);
  const IORING_OP_TIMEOUT = 11;
  const ETIME = 62;
  // struct __kernel_timespec { s64 tv_sec; s64 tv_nsec; }: 1 ms
  const ts = new BigInt64Array([0n, 1_000_000n]);
  // len 1 = one timespec; off 0 = no completion count, a pure timer.
  ok(ring.prep(IORING_OP_TIMEOUT, -1, 0, addr(ts), 1, 0, 9) >= 0);
  strictEqual(cqe(complete(ring, 1), 9).res, -ETIME);
});

Deno.test("io_uring: a throwing CQE handler still releases the CQEs it saw", () => {
  using ring = new IoUring(4);
  ring.prepNop(1);
  ring.prepNop(2);
  ring.submitAndWait(2);
  throws(() =>
    ring.reap(() => {
      throw new Error("handler bug");
    }), /handler bug/);
  strictEqual(ring.cqReady(), 1, "the first CQE is consumed, the second still there");
  let got = 0;
  ring.reap((u) => (got = u));
  strictEqual(got, 2);
});

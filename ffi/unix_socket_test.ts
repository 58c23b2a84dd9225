import {
  acceptUnix,
  connectUnix,
  ControlTruncatedError,
  listenUnix,
  POLLIN,
  readable,
  recvMsg,
  SCM_MAX_FD,
  sendMsg,
  SHUT_WR,
  socketPair,
  UnixSocket,
} from "./unix_socket.ts";
import { mapShared, memfdCreate, PAGE_SIZE } from "./memory.ts";
import { close, eventfd, sym } from "./libc.ts";
import { Errno, ErrnoError } from "./errno.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../src/testing/assert.ts";
import { openFdCount } from "../src/testing/fds.ts";

/** Runs `fn` and fails if the process holds a different number of fds afterwards. */
async function noFdLeak(fn: () => Promise<void> | void): Promise<void> {
  const before = openFdCount();
  await fn();
  assertEquals(openFdCount(), before, "open fds after the test:");
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const F_GETFD = 1;
const FD_CLOEXEC = 1;

function writeCounter(fd: number, value: bigint): void {
  assertEquals(Number(sym.write(fd, new BigUint64Array([value]), 8n)), 8);
}
function readCounter(fd: number): bigint {
  const v = new BigUint64Array(1);
  assertEquals(Number(sym.read(fd, v, 8n)), 8);
  return v[0] ?? -1n;
}

Deno.test("socketpair passes bytes + a memfd and an eventfd that stay the same objects", async () => {
  await noFdLeak(async () => {
    const [x, y] = UnixSocket.pair();
    using _x = x;
    using _y = y;
    const memfd = memfdCreate("pair", PAGE_SIZE);
    const efd = eventfd();
    await x.sendMsg(encoder.encode("fds!"), [memfd, efd]);

    const buf = new Uint8Array(64);
    const got = await y.recvMsg(buf, 2);
    assertEquals(decoder.decode(buf.subarray(0, got.bytes)), "fds!");
    assertEquals(got.fds.length, 2);
    const [memfd2, efd2] = got.fds as [number, number];
    assert(memfd2 !== memfd && efd2 !== efd, "new descriptor numbers");
    for (const fd of got.fds) {
      assertEquals(sym.fcntl(fd, F_GETFD, 0n) & FD_CLOEXEC, FD_CLOEXEC, "MSG_CMSG_CLOEXEC");
    }

    // Same memory object: write through one fd's mapping, read through the other's.
    {
      using m1 = mapShared(memfd, PAGE_SIZE);
      using m2 = mapShared(memfd2, PAGE_SIZE);
      m1.bytes().set([1, 2, 3]);
      assertEquals([...m2.bytes(0, 3)].join(), "1,2,3");
      m2.bytes()[4000] = 99;
      assertEquals(m1.bytes()[4000], 99);
    }
    // Same eventfd: a counter written through one is read through the other.
    writeCounter(efd, 5n);
    assertEquals(readCounter(efd2), 5n);
    writeCounter(efd2, 7n);
    assertEquals(readCounter(efd), 7n);

    for (const fd of [memfd, efd, memfd2, efd2]) close(fd);
  });
});

Deno.test("sync calls: EAGAIN is null, end of stream is 0 bytes", () => {
  return noFdLeak(() => {
    const [a, b] = socketPair();
    const buf = new Uint8Array(65536);
    assertEquals(recvMsg(a, buf), null, "nothing to read");
    // Fill the send buffer until it would block.
    let sent = 0;
    for (let n = sendMsg(a, buf); n !== null; n = sendMsg(a, buf)) sent += n;
    assert(sent > 0);
    let received = 0;
    for (let r = recvMsg(b, buf); r !== null; r = recvMsg(b, buf)) received += r.bytes;
    assertEquals(received, sent);
    sym.shutdown(a, SHUT_WR);
    assertEquals(recvMsg(b, buf)?.bytes, 0, "EOF");
    close(a);
    close(b);
  });
});

Deno.test("more fds than maxFds: received fds are closed and it throws", async () => {
  await noFdLeak(() => {
    const [a, b] = socketPair();
    const fds = [eventfd(), eventfd(), eventfd()];
    const buf = new Uint8Array(8);
    const baseline = openFdCount();
    try {
      // 3 fds into room for 1 (CMSG_SPACE(4) holds 2): the kernel sets MSG_CTRUNC.
      assertEquals(sendMsg(a, encoder.encode("x"), fds), 1);
      const e = assertThrows(() => recvMsg(b, buf, 1), ControlTruncatedError, "more than 1");
      assertEquals((e as ControlTruncatedError).bytes, 1);
      assertEquals(openFdCount(), baseline, "truncated fds closed");

      // 2 fds fit the padding of CMSG_SPACE(4) without MSG_CTRUNC: still over the limit.
      assertEquals(sendMsg(a, encoder.encode("y"), fds.slice(0, 2)), 1);
      const e2 = assertThrows(() => recvMsg(b, buf, 1), ControlTruncatedError);
      assertEquals((e2 as ControlTruncatedError).received, 2);
      assertEquals(openFdCount(), baseline);

      // maxFds 0 refuses fds outright.
      assertEquals(sendMsg(a, encoder.encode("z"), fds.slice(0, 1)), 1);
      assertThrows(() => recvMsg(b, buf), ControlTruncatedError, "more than 0");
      assertEquals(openFdCount(), baseline);
    } finally {
      for (const fd of [a, b, ...fds]) close(fd);
    }
  });
});

Deno.test("argument errors are RangeErrors", () => {
  const [a, b] = socketPair();
  try {
    assertThrows(() => sendMsg(a, new Uint8Array(0), [a]), RangeError, "at least one data byte");
    const many = new Array<number>(SCM_MAX_FD + 1).fill(a);
    assertThrows(() => sendMsg(a, new Uint8Array(1), many), RangeError, "at most 253");
    assertThrows(() => sendMsg(a, new Uint8Array(1), [-3]), RangeError, "not a file descriptor");
    assertThrows(() => recvMsg(b, new Uint8Array(1), 300), RangeError, "maxFds");
    assertThrows(() => recvMsg(b, new Uint8Array(0)), RangeError, "at least one byte");
    assertThrows(() => connectUnix("/tmp/" + "x".repeat(120)), RangeError, "the limit is 107");
    assertThrows(() => connectUnix(""), RangeError, "non-empty");
  } finally {
    close(a);
    close(b);
  }
});

Deno.test("connect to a missing path: ErrnoError ENOENT naming the path", () => {
  return noFdLeak(() => {
    const path = `/tmp/sluice-missing-${crypto.randomUUID()}.sock`;
    const e = assertThrows(() => connectUnix(path), ErrnoError, path) as ErrnoError;
    assertEquals(e.errno, Errno.ENOENT);
    assertEquals(e.code, "ENOENT");
    assertEquals(e.call, "connect");
  });
});

Deno.test("listen: stale socket replaced, live socket and non-socket refused, unlink on close", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "sluice-unix-" });
  try {
    await noFdLeak(async () => {
      const path = `${dir}/l.sock`;
      close(listenUnix(path)); // leaves a stale socket file behind
      assert(Deno.lstatSync(path).isSocket === true);
      const listener = UnixSocket.listen(path); // stale file removed and rebound
      assertEquals(listener.path, path);
      assertEquals(acceptUnix(listener.fd), null, "no pending connection");

      const e = assertThrows(() => listenUnix(path), ErrnoError, "live listener") as ErrnoError;
      assertEquals(e.errno, Errno.EADDRINUSE);
      // The probe that found the live listener shows up there as a connection closed at once.
      using probe = await listener.accept();
      assertEquals((await probe.recvMsg(new Uint8Array(1))).bytes, 0);

      using client = UnixSocket.connect(path);
      using server = await listener.accept();
      await client.sendMsg(encoder.encode("ping"));
      const buf = new Uint8Array(8);
      const r = await server.recvMsg(buf);
      assertEquals(decoder.decode(buf.subarray(0, r.bytes)), "ping");

      listener.close();
      listener.close(); // idempotent
      assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
      assertThrows(() => listener.fd, Error, "closed");

      const file = `${dir}/plain`;
      Deno.writeTextFileSync(file, "keep me");
      assertThrows(() => listenUnix(file), ErrnoError, "not a socket");
      assertEquals(Deno.readTextFileSync(file), "keep me");
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("waits end on data, shutdown, AbortSignal and close()", async () => {
  await noFdLeak(async () => {
    const [a, b] = UnixSocket.pair();
    const buf = new Uint8Array(8);

    // Data arrives while waiting.
    const pending = a.recvMsg(buf);
    await b.sendMsg(encoder.encode("hi"));
    assertEquals((await pending).bytes, 2);

    // The peer's shutdown wakes a wait on the bare fd: end of stream.
    const waiting = readable(a.fd);
    b.shutdown(SHUT_WR);
    assert(((await waiting) & POLLIN) !== 0);
    assertEquals((await a.recvMsg(buf)).bytes, 0);

    // AbortSignal ends a wait, on the bare fd and on the socket.
    const ac = new AbortController();
    const [c, d] = UnixSocket.pair();
    const bare = readable(c.fd, { signal: ac.signal });
    const method = c.recvMsg(buf, 0, { signal: ac.signal });
    // Both assertions are attached before the abort: each wait rejects at once.
    const bareRejected = assertRejects(() => bare, Error, "stop waiting");
    const methodRejected = assertRejects(() => method, Error, "stop waiting");
    ac.abort(new Error("stop waiting"));
    await bareRejected;
    await methodRejected;
    await assertRejects(() => c.readable({ signal: ac.signal }), Error, "stop waiting");

    // close() cancels pending waits with ECANCELED.
    const accepting = assertRejects(() => c.recvMsg(buf), ErrnoError, "closed");
    const writingRoom = assertRejects(() => c.readable(), ErrnoError, "closed");
    c.close();
    const e = await accepting;
    assertEquals(e.errno, Errno.ECANCELED);
    await writingRoom;
    await assertRejects(() => c.readable(), Error, "is closed");

    for (const s of [a, b, d]) s.close();
  });
});

Deno.test("two processes: memfds pass both ways over a listening socket", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "sluice-unix-" });
  const path = `${dir}/peer.sock`;
  const helper = new URL("./testdata/unix_peer.ts", import.meta.url).pathname;
  const before = openFdCount();
  const listener = UnixSocket.listen(path);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", helper, path],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  // A hung child must fail the test, not hang it.
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new Error("two-process test timed out")), 30_000);
  const options = { signal: deadline.signal };
  let conn: UnixSocket | undefined;
  try {
    conn = await listener.accept(options);
    const buf = new Uint8Array(16);

    // 1. The child's memfd, with data the child wrote before sending it.
    const first = await conn.recvMsg(buf, 1, options);
    assertEquals(first.bytes, 1);
    assertEquals(buf[0], "C".charCodeAt(0));
    assertEquals(first.fds.length, 1);
    const childFd = first.fds[0] ?? -1;
    {
      using m = mapShared(childFd, PAGE_SIZE);
      close(childFd);
      const text = decoder.decode(m.bytes(0, m.bytes().indexOf(0)));
      assertEquals(text, `hello from child ${child.pid}`);
    }

    // 2. Ours to the child; it answers inside the same shared memory.
    const ownFd = memfdCreate("parent", PAGE_SIZE);
    using own = mapShared(ownFd, PAGE_SIZE);
    own.bytes().set(encoder.encode(`hello from parent ${Deno.pid}\0`));
    await conn.sendMsg(encoder.encode("P"), [ownFd], options);
    close(ownFd);
    const ack = await conn.recvMsg(buf, 0, options);
    assertEquals(ack.bytes, 1);
    assertEquals(buf[0], "A".charCodeAt(0));
    const answer = own.bytes(2048);
    assertEquals(
      decoder.decode(answer.subarray(0, answer.indexOf(0))),
      `child ${child.pid} read: hello from parent ${Deno.pid}`,
    );
  } finally {
    clearTimeout(timer);
    conn?.close(); // the child sees end of stream and exits
    listener.close();
    if (deadline.signal.aborted) child.kill("SIGKILL");
    const out = await output;
    Deno.removeSync(dir, { recursive: true });
    assert(out.success, `child exited ${out.code}: ${decoder.decode(out.stderr)}`);
  }
  assertEquals(openFdCount(), before, "open fds after the test:");
});

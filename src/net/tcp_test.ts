import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { Errno, ErrnoError } from "../../ffi/errno.ts";
import { close } from "../../ffi/libc.ts";
import { setLinger, setSendBufferSize, tcpConnect } from "../../ffi/tcp_socket.ts";
import { crc32c } from "../../wasm/crc32c.ts";
import { initWasmMemory, isInWasmMemory, wasmAlloc, wasmMemoryStats } from "../../wasm/mod.ts";
import { Reactor } from "../reactor/reactor.ts";
import {
  connectTcp,
  type ReceiveBufferAllocator,
  ReceiveBufferPool,
  type TcpCloseReason,
  TcpConnection,
  type TcpConnectionOptions,
  TcpListener,
} from "./tcp.ts";
import { openFdCount } from "../testing/fds.ts";
import { traceGc } from "../testing/gc_trace.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits for `cond`, checking every 5 ms; the bound is a hang guard, not a speed limit. */
async function until(what: string, cond: () => boolean, tries = 4000): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return;
    await sleep(5);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Runs `fn` with a running reactor; afterwards nothing may be in flight and
 * every fd opened meanwhile must be closed.
 */
async function withReactor(fn: (reactor: Reactor) => Promise<void>): Promise<void> {
  const fdsBefore = openFdCount();
  const reactor = new Reactor();
  const running = reactor.run();
  try {
    await fn(reactor);
    assertEquals(reactor.ioInFlight, 0, "I/O in flight at the end of the test");
  } finally {
    await reactor.stop();
    await running;
    reactor.close();
  }
  assertEquals(openFdCount(), fdsBefore, "fds left open");
}

interface EchoServer {
  listener: TcpListener;
  conns: TcpConnection[];
  closes: TcpCloseReason[];
}

/** A zero-copy echo: send what arrived from the receive buffer, receive again once it is sent. */
function echoServer(
  reactor: Reactor,
  extra: Partial<TcpConnectionOptions> = {},
  maxConnections?: number,
  host = "127.0.0.1",
): EchoServer {
  const s: EchoServer = {
    conns: [],
    closes: [],
    listener: new TcpListener(reactor, {
      host,
      port: 0,
      maxConnections,
      onConnection(fd, peer) {
        const conn: TcpConnection = new TcpConnection(reactor, fd, {
          peer,
          onData(buffer, length) {
            conn.sendRange(buffer, 0, length);
            conn.pauseReceive();
            return length;
          },
          onSent: () => conn.resumeReceive(),
          onClose: (r) => s.closes.push(r),
          ...extra,
        });
        s.conns.push(conn);
      },
    }),
  };
  return s;
}

/** A client that collects what it receives. */
async function collectingClient(
  reactor: Reactor,
  port: number,
  extra: Partial<TcpConnectionOptions> = {},
): Promise<{ conn: TcpConnection; received: () => Uint8Array; closes: TcpCloseReason[] }> {
  const chunks: Uint8Array[] = [];
  const closes: TcpCloseReason[] = [];
  const conn = await connectTcp(reactor, "127.0.0.1", port, {
    onData(buffer, length) {
      chunks.push(buffer.slice(0, length));
      return length;
    },
    onClose: (r) => closes.push(r),
    ...extra,
  });
  return {
    conn,
    closes,
    received() {
      const total = chunks.reduce((n, c) => n + c.byteLength, 0);
      const out = new Uint8Array(total);
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.byteLength;
      }
      return out;
    },
  };
}

function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = seed | 1;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("tcp: echo server and client on one reactor", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const client = await collectingClient(reactor, server.listener.port);
    assertEquals(client.conn.peer, server.listener.address);
    for (const m of ["hello", " ", "sluice", "!"]) assert(client.conn.send(text(m)));
    await until("the echo", () => client.received().byteLength === 13);
    assertEquals(new TextDecoder().decode(client.received()), "hello sluice!");
    assertEquals(server.conns.length, 1);
    assertEquals(server.conns[0]?.peer, client.conn.local);
    client.conn.close();
    await client.conn.whenClosed;
    await until("the server side to close", () => server.closes.length === 1);
    await server.listener.close();
  });
});

Deno.test("tcp: onSent reports each send call once, in order, with its tag", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const tags: number[] = [];
    const client = await collectingClient(reactor, server.listener.port, {
      onSent: (tag) => tags.push(tag),
    });
    const a = text("abc"), b = text("defg"), c = text("hij");
    client.conn.send(a, 7);
    client.conn.sendv([b, c, a], 3, 8);
    client.conn.sendRange(b, 1, 2, 9);
    client.conn.send(new Uint8Array(0), 10); // empty sends complete too
    await until("all sends", () => tags.length === 4);
    assertEquals(tags, [7, 8, 9, 10]);
    await until("the echo", () => client.received().byteLength === 15);
    assertEquals(new TextDecoder().decode(client.received()), "abcdefghijabcef");
    client.conn.close();
    await client.conn.whenClosed;
    await until("the server side to close", () => server.closes.length === 1);
    await server.listener.close();
  });
});

Deno.test("tcp: sends queued in one reactor pass go out in one SENDMSG", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const client = await collectingClient(reactor, server.listener.port);
    // Five sends in one synchronous turn: the reactor runs no pass meanwhile.
    for (let i = 0; i < 5; i++) client.conn.send(text(`m${i};`));
    assertEquals(client.conn.queuedBuffers, 5);
    await until("the echo", () => client.received().byteLength === 15);
    assertEquals(client.conn.stats.buffersQueued, 5);
    assertEquals(client.conn.stats.sendmsgSubmitted, 1, "one SENDMSG for five sends");
    assertEquals(client.conn.stats.bytesSent, 15);
    assertEquals(new TextDecoder().decode(client.received()), "m0;m1;m2;m3;m4;");

    // Sends made from inside onData during one pass coalesce too.
    const burst = await connectTcp(reactor, "127.0.0.1", server.listener.port, {
      onData(_buffer, length) {
        if (burst.stats.deliveries === 1) { for (let i = 0; i < 10; i++) burst.send(text("x")); }
        return length;
      },
    });
    burst.send(text("go"));
    await until("the burst echo", () => burst.stats.bytesReceived === 12);
    assertEquals(burst.stats.sendmsgSubmitted, 2, "one for 'go', one for the ten sends");
    burst.close();
    client.conn.close();
    await Promise.all([burst.whenClosed, client.conn.whenClosed]);
    await until("the server sides to close", () => server.closes.length === 2);
    await server.listener.close();
  });
});

Deno.test("tcp: 50 connections each exchange data", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor, { receiveBufferBytes: 4096 });
    const clients = await Promise.all(
      Array.from({ length: 50 }, () => collectingClient(reactor, server.listener.port)),
    );
    const expected: Uint8Array[] = [];
    for (const [i, c] of clients.entries()) {
      const data = pattern(1000 + i * 517, i + 1);
      expected.push(data);
      // Several sends per client, some larger than the server's buffer.
      for (let at = 0; at < data.byteLength; at += 3000) {
        c.conn.sendRange(data, at, Math.min(3000, data.byteLength - at));
      }
    }
    await until(
      "all echoes",
      () => clients.every((c, i) => c.received().byteLength === expected[i]?.byteLength),
    );
    for (const [i, c] of clients.entries()) {
      assertEquals(c.received(), expected[i] as Uint8Array, `client ${i}`);
    }
    assertEquals(server.listener.stats.accepted, 50);
    assertEquals(server.listener.active, 50);
    for (const c of clients) c.conn.close();
    await until("the server sides to close", () => server.closes.length === 50);
    assertEquals(server.listener.active, 0, "closed connections leave the listener's count");
    assert(server.closes.every((r) => r.kind === "peer"));
    await server.listener.close();
  });
});

Deno.test("tcp: 64 MiB each way with backpressure, partial sends and a CRC32C check", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const total = 64 * 1024 * 1024;
    const chunk = 1024 * 1024;
    const source = pattern(total, 12345);
    let receivedCrc = 0;
    let received = 0;
    let next = 0;
    let drains = 0;
    const client: TcpConnection = await connectTcp(reactor, "127.0.0.1", server.listener.port, {
      sendQueueBytes: 8 * chunk,
      onData(buffer, length) {
        receivedCrc = crc32c(buffer.subarray(0, length), receivedCrc);
        received += length;
        return length;
      },
      onDrain() {
        drains++;
        pump();
      },
    });
    // A small socket send buffer makes the kernel take less than asked.
    setSendBufferSize(client.fd, 16 * 1024);
    const pump = () => {
      while (client.writable && next < total) {
        client.sendRange(source, next, chunk);
        next += chunk;
      }
    };
    pump();
    assert(!client.writable, "8 MiB queued turns writable off");
    await until("the whole echo", () => received === total, 12_000);
    assertEquals(receivedCrc, crc32c(source));
    assertEquals(client.stats.bytesSent, total);
    assert(client.stats.partialSends > 0, "some SENDMSGs were partial");
    assert(drains > 0, "onDrain resumed the sender");
    const serverConn = server.conns[0];
    assert(serverConn !== undefined);
    assertEquals(serverConn.stats.bytesReceived, total);
    assertEquals(serverConn.stats.bytesSent, total);
    client.close();
    await client.whenClosed;
    await until("the server side to close", () => server.closes.length === 1);
    await server.listener.close();
  });
});

Deno.test("tcp: unconsumed bytes are kept for the next receive (frames straddling reads)", async () => {
  await withReactor(async (reactor) => {
    const frames: string[] = [];
    const closes: TcpCloseReason[] = [];
    let serverConn: TcpConnection | undefined;
    const listener = new TcpListener(reactor, {
      host: "127.0.0.1",
      port: 0,
      onConnection(fd, peer) {
        // A 1-byte length prefix, then the payload; a 40-byte buffer splits frames.
        serverConn = new TcpConnection(reactor, fd, {
          peer,
          receiveBufferBytes: 40,
          onData(buffer, length) {
            let at = 0;
            while (at < length) {
              const n = buffer[at] ?? 0;
              if (at + 1 + n > length) break; // incomplete: keep it
              frames.push(new TextDecoder().decode(buffer.subarray(at + 1, at + 1 + n)));
              at += 1 + n;
            }
            return at;
          },
          onClose: (r) => closes.push(r),
        });
      },
    });
    const client = await connectTcp(reactor, "127.0.0.1", listener.port, {
      onData: (_, n) => n,
      sendQueueEntries: 8192,
    });
    const want: string[] = [];
    const wire: number[] = [];
    for (let i = 0; i < 300; i++) {
      const s = `frame-${i}-${"x".repeat(i % 30)}`;
      want.push(s);
      wire.push(s.length, ...text(s));
    }
    const bytes = new Uint8Array(wire);
    // One byte per send call: the parser sees every possible split.
    for (let i = 0; i < bytes.byteLength; i++) client.sendRange(bytes, i, 1);
    await until("all frames", () => frames.length === want.length);
    assertEquals(frames, want);
    assert(serverConn !== undefined);
    assert(serverConn.stats.bytesMoved > 0, "straddling frames were moved to the buffer start");

    // A frame that cannot fit the buffer ends the connection with EMSGSIZE.
    client.send(new Uint8Array([60, ...new Uint8Array(60)]));
    await until("the oversized frame to close the connection", () => closes.length === 1);
    assertEquals(closes[0]?.kind, "error");
    assertEquals(closes[0]?.errno, 90);
    await client.whenClosed;
    await listener.close();
  });
});

Deno.test("tcp: pauseReceive holds bytes back; resumeReceive delivers them", async () => {
  await withReactor(async (reactor) => {
    let got = 0;
    let serverConn: TcpConnection | undefined;
    const listener = new TcpListener(reactor, {
      host: "127.0.0.1",
      port: 0,
      onConnection(fd, peer) {
        serverConn = new TcpConnection(reactor, fd, {
          peer,
          onData(_buffer, length) {
            got += length;
            return length;
          },
        });
        serverConn.pauseReceive();
      },
    });
    const client = await connectTcp(reactor, "127.0.0.1", listener.port, { onData: (_, n) => n });
    client.send(text("held back"));
    await until("the connection", () => serverConn !== undefined);
    const conn = serverConn as TcpConnection;
    // The receive armed at creation takes the bytes, but they wait undelivered.
    await until("the bytes to arrive", () => conn.stats.bytesReceived === 9);
    await sleep(20);
    assertEquals(got, 0);
    assertEquals(conn.stats.deliveries, 0);
    conn.resumeReceive();
    await until("the delivery", () => got === 9);
    client.send(text("more"));
    await until("more", () => got === 13);
    client.close();
    await until("the server side to close", () => conn.closed);
    await listener.close();
  });
});

Deno.test("tcp: peer close and local close are each reported exactly once", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const client = await collectingClient(reactor, server.listener.port);
    client.conn.send(text("ping"));
    await until("the echo", () => client.received().byteLength === 4);
    client.conn.close();
    client.conn.close(); // idempotent
    assert(!client.conn.send(text("late")), "a closing connection takes no sends");
    const reason = await client.conn.whenClosed;
    assertEquals(reason.kind, "local");
    await until("the server side to close", () => server.closes.length === 1);
    assertEquals(server.closes[0]?.kind, "peer");
    server.conns[0]?.close(); // after the fact: nothing happens
    await sleep(30); // let any duplicate surface
    assertEquals(client.closes.length, 1);
    assertEquals(server.closes.length, 1);
    await server.listener.close();
  });
});

Deno.test("tcp: a reset peer is reported once as ECONNRESET", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const fd = await tcpConnect("127.0.0.1", server.listener.port);
    await until("the connection", () => server.conns.length === 1);
    // SO_LINGER 0: close(2) sends RST.
    setLinger(fd, 0);
    close(fd);
    await until("the reset", () => server.closes.length === 1);
    assertEquals(server.closes[0]?.kind, "error");
    assertEquals(server.closes[0]?.errno, Errno.ECONNRESET);
    await sleep(30);
    assertEquals(server.closes.length, 1);
    // Sending after the reset is refused without an exception.
    assert(!(server.conns[0] as TcpConnection).send(text("x")));
    await server.listener.close();
  });
});

Deno.test("tcp: sending to a peer that reset ends with one error close", async () => {
  await withReactor(async (reactor) => {
    const closes: TcpCloseReason[] = [];
    let conn: TcpConnection | undefined;
    const listener = new TcpListener(reactor, {
      host: "127.0.0.1",
      port: 0,
      onConnection(fd, peer) {
        conn = new TcpConnection(reactor, fd, {
          peer,
          onData: (_, n) => n,
          onClose: (r) => closes.push(r),
        });
        conn.pauseReceive(); // only the send path can notice the reset
      },
    });
    const fd = await tcpConnect("127.0.0.1", listener.port);
    await until("the connection", () => conn !== undefined);
    setLinger(fd, 0);
    close(fd);
    const big = new Uint8Array(1 << 20);
    const c = conn as TcpConnection;
    // The armed receive or the send sees the reset first; either way: one close.
    for (let i = 0; i < 4 && c.open; i++) {
      c.send(big);
      await sleep(10);
    }
    await until("the close", () => closes.length === 1);
    assertEquals(closes[0]?.kind, "error");
    assert(
      closes[0]?.errno === Errno.ECONNRESET || closes[0]?.errno === Errno.EPIPE,
      `errno ${closes[0]?.errno}`,
    );
    await sleep(30);
    assertEquals(closes.length, 1);
    await listener.close();
  });
});

Deno.test("tcp: the listener refuses connections beyond maxConnections", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor, {}, 2);
    const a = await collectingClient(reactor, server.listener.port);
    const b = await collectingClient(reactor, server.listener.port);
    await until("two connections", () => server.listener.active === 2);
    const c = await collectingClient(reactor, server.listener.port);
    await until("the refusal", () => server.listener.stats.refused === 1);
    await until("the refused client to see the close", () => c.closes.length === 1);
    assertEquals(c.closes[0]?.kind, "peer");
    assertEquals(server.listener.stats.accepted, 2);
    // A slot frees when a connection ends.
    a.conn.close();
    await until("the count to drop", () => server.listener.active === 1);
    const d = await collectingClient(reactor, server.listener.port);
    await until("the new connection", () => server.listener.stats.accepted === 3);
    d.conn.send(text("ok"));
    await until("its echo", () => d.received().byteLength === 2);
    b.conn.close();
    d.conn.close();
    await until("the server sides to close", () => server.closes.length === 3);
    await server.listener.close();
  });
});

Deno.test("tcp: closing during pending I/O leaves no fds and nothing in flight", async () => {
  await withReactor(async (reactor) => {
    let serverConn: TcpConnection | undefined;
    const serverCloses: TcpCloseReason[] = [];
    const listener = new TcpListener(reactor, {
      host: "127.0.0.1",
      port: 0,
      onConnection(fd, peer) {
        // Never reads: the client's sends back up into the kernel.
        serverConn = new TcpConnection(reactor, fd, {
          peer,
          onData: () => 0,
          onClose: (r) => serverCloses.push(r),
        });
        serverConn.pauseReceive();
      },
    });
    const sent: number[] = [];
    const client = await connectTcp(reactor, "127.0.0.1", listener.port, {
      onData: (_, n) => n,
      onSent: (tag) => sent.push(tag),
      sendQueueBytes: 64 << 20,
    });
    const big = new Uint8Array(8 << 20);
    for (let i = 0; i < 4; i++) client.send(big, i);
    // The server reads nothing, so once the socket buffers are full a
    // SENDMSG stays in the kernel: the state this test closes in.
    await until("a partial send", () => client.stats.partialSends > 0);
    await until("a send stuck in the kernel", () => client.sending && reactor.ioInFlight > 0);
    client.close();
    const reason = await client.whenClosed;
    assertEquals(reason.kind, "local");
    assert(reason.unsentCalls >= 1, `unsent calls ${reason.unsentCalls}`);
    assert(reason.unsentBytes > 0);
    assertEquals(sent.length + reason.unsentCalls, 4);
    // The server had a receive armed (armed before the pause) and nothing consumed.
    (serverConn as TcpConnection).close();
    await until("the server side to close", () => serverCloses.length === 1);
    await listener.close();
    assertEquals(reactor.ioInFlight, 0);
  });
});

Deno.test("tcp: closing a listener with an accept armed frees everything", async () => {
  await withReactor(async (reactor) => {
    const listener = new TcpListener(reactor, {
      host: "127.0.0.1",
      port: 0,
      onConnection: (fd) => close(fd),
    });
    await sleep(10);
    await listener.close();
    await listener.close(); // idempotent
    // The port is free again.
    await assertRejects(() => tcpConnect("127.0.0.1", listener.port), ErrnoError, "ECONNREFUSED");
    assertEquals(reactor.pollerNames().includes("net:tcp"), false, "the shared poller is gone");
  });
});

Deno.test("tcp: an idle connection lets the reactor park", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const client = await collectingClient(reactor, server.listener.port);
    const parks = reactor.stats.idleParks;
    client.conn.send(text("hi"));
    await until("the echo", () => client.received().byteLength === 2);
    // Both sides have a receive armed; neither counts as I/O in flight.
    await until("a park", () => reactor.stats.idleParks > parks && reactor.parked);
    assertEquals(reactor.ioInFlight, 0);
    // And a send from outside the loop wakes it.
    client.conn.send(text("again"));
    await until("the echo after the park", () => client.received().byteLength === 7);
    client.conn.close();
    await until("the server side to close", () => server.closes.length === 1);
    await server.listener.close();
  });
});

Deno.test("tcp: end() sends everything queued, then closes", async () => {
  await withReactor(async (reactor) => {
    let got = 0;
    const closes: TcpCloseReason[] = [];
    const listener = new TcpListener(reactor, {
      host: "127.0.0.1",
      port: 0,
      onConnection(fd, peer) {
        new TcpConnection(reactor, fd, {
          peer,
          onData(_buffer, length) {
            got += length;
            return length;
          },
          onClose: (r) => closes.push(r),
        });
      },
    });
    const client = await connectTcp(reactor, "127.0.0.1", listener.port, { onData: (_, n) => n });
    const big = new Uint8Array(3 << 20);
    client.send(big);
    client.send(big);
    client.end();
    assert(!client.send(big), "no sends after end()");
    const reason = await client.whenClosed;
    assertEquals(reason.unsentBytes, 0);
    await until("the server to see the close", () => closes.length === 1);
    assertEquals(got, 6 << 20);
    assertEquals(closes[0]?.kind, "peer");
    await listener.close();
  });
});

Deno.test("tcp: send queue limits and bad ranges", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const client = await collectingClient(reactor, server.listener.port, { sendQueueEntries: 4 });
    const b = text("abcd");
    assertThrows(() => client.conn.sendRange(b, 2, 3), RangeError, "outside");
    assertThrows(() => client.conn.sendv([b], 2), RangeError, "count");
    for (let i = 0; i < 4; i++) client.conn.send(b);
    assert(!client.conn.writable, "a full entry queue is not writable");
    assertThrows(() => client.conn.send(b), RangeError, "send queue");
    await until("the echo", () => client.received().byteLength === 16);
    assert(client.conn.writable);
    client.conn.close();
    await client.conn.whenClosed;
    await until("the server side to close", () => server.closes.length === 1);
    await server.listener.close();
  });
});

Deno.test("tcp: receive buffers from a pool (WASM memory) go back to it on close", async () => {
  if (wasmMemoryStats().heapCapacityBytes === 0) initWasmMemory(8 << 20);
  const pool = new ReceiveBufferPool(wasmAlloc, 64);
  const seen: Uint8Array[] = [];
  const recording: ReceiveBufferAllocator = {
    allocate(bytes) {
      const b = pool.allocate(bytes);
      seen.push(b);
      return b;
    },
    release: (b) => pool.release(b),
  };
  await withReactor(async (reactor) => {
    const server = echoServer(reactor, { receiveBuffers: recording, receiveBufferBytes: 65536 });
    for (let round = 0; round < 3; round++) {
      const client = await collectingClient(reactor, server.listener.port);
      const data = pattern(10_000, round + 7);
      client.conn.send(data);
      await until("the echo", () => client.received().byteLength === data.byteLength);
      assertEquals(client.received(), data);
      client.conn.close();
      await until("the server side to close", () => server.closes.length === round + 1);
    }
    await server.listener.close();
  });
  assertEquals(seen.length, 3);
  assertEquals(pool.allocated, 1, "one WASM buffer served all three connections");
  assert(seen.every((b) => b === seen[0]));
  assert(isInWasmMemory(seen[0] as Uint8Array));
});

Deno.test("tcp: connectTcp to a closed port names the address", async () => {
  await withReactor(async (reactor) => {
    const l = new TcpListener(reactor, { host: "127.0.0.1", port: 0, onConnection: close });
    const port = l.port;
    await l.close();
    const e = await assertRejects(
      () => connectTcp(reactor, "127.0.0.1", port, { onData: (_, n) => n }),
      ErrnoError,
      `127.0.0.1:${port}`,
    );
    assertEquals(e.code, "ECONNREFUSED");
  });
});

Deno.test("tcp: many connections share one CQE handler id", async () => {
  await withReactor(async (reactor) => {
    const server = echoServer(reactor);
    const clients = await Promise.all(
      Array.from({ length: 8 }, () => collectingClient(reactor, server.listener.port)),
    );
    // 17 endpoints on this reactor, one handler id: 254 of 255 remain free.
    const ids: number[] = [];
    for (let i = 0; i < 254; i++) ids.push(reactor.registerCqeHandler(() => {}));
    assertThrows(() => reactor.registerCqeHandler(() => {}), Error, "no free CQE handler");
    for (const id of ids) reactor.unregisterCqeHandler(id);
    for (const c of clients) c.conn.close();
    await until("the server sides to close", () => server.closes.length === 8);
    await server.listener.close();
  });
});

Deno.test("tcp: the echo data path allocates nothing per message (V8 GC trace)", async () => {
  // A child runs 400k round trips of 64-byte messages under --trace-gc and
  // marks the measured stretch; the control copies each message, showing
  // the trace sees per-message allocation.
  const script = new URL("./testdata/tcp_alloc.ts", import.meta.url).pathname;
  async function gcEvents(mode: string): Promise<number> {
    return (await traceGc(script, [mode])).events;
  }
  const [steady, control] = [await gcEvents("steady"), await gcEvents("copy")];
  assert(control >= 5, `the control should show allocation (got ${control} GC events)`);
  assert(steady <= 1, `${steady} GC events in 400k round trips (control: ${control})`);
});

Deno.test("tcp: IPv6 loopback echo when the host has it", async () => {
  await withReactor(async (reactor) => {
    let server: EchoServer;
    try {
      server = echoServer(reactor, {}, undefined, "::1");
    } catch (e) {
      if (e instanceof ErrnoError && (e.errno === 97 || e.errno === 99)) return; // no IPv6 here
      throw e;
    }
    assertEquals(server.listener.address, `[::1]:${server.listener.port}`);
    let got = "";
    const client = await connectTcp(reactor, "::1", server.listener.port, {
      onData(buffer, length) {
        got += new TextDecoder().decode(buffer.subarray(0, length));
        return length;
      },
    });
    assertEquals(client.peer, server.listener.address);
    client.send(text("over v6"));
    await until("the echo", () => got === "over v6");
    client.close();
    await until("the server side to close", () => server.conns[0]?.closed === true);
    await server.listener.close();
  });
});

/**
 * The vhost-user server's socket across restarts: a socket file left by a
 * back-end that died is replaced, one a live process accepts on is refused
 * with an error that says so.
 */
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { listenUnix, UnixSocket } from "../../ffi/unix_socket.ts";
import { sym } from "../../ffi/libc.ts";
import { guard, sleep } from "../testing/wait.ts";
import { VhostUserServer } from "./server.ts";
import { encodeMessage, VhostUserRequest as R } from "./messages.ts";
import type { VhostUserBackend } from "./session.ts";

const never = () => {
  throw new Error("no front-end connects in this test");
};

Deno.test("vhost-user server: a stale socket file is replaced, a live one refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vhost-server-" });
  const path = `${dir}/v.sock`;
  try {
    sym.close(listenUnix(path)); // what a killed process leaves: a socket file nobody accepts on
    assert((await Deno.lstat(path)).isSocket);
    const logs: string[] = [];
    const server = new VhostUserServer(path, never, (m) => logs.push(m));
    try {
      const e = assertThrows(
        () => new VhostUserServer(path, never, (m) => logs.push(m)),
        Error,
        "is in use",
      );
      assert(e.message.includes(path) && e.message.includes("another sluice"), e.message);
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The least backend the server needs; `close` resolves when the test says so. */
function fakeBackend(closing: Promise<void>[]): VhostUserBackend & { close(): Promise<void> } {
  return {
    features: 1n << 32n,
    protocolFeatures: 0n,
    numQueues: 1,
    maxQueueSize: 256,
    setFeatures() {},
    setMemTable(_r, fds) {
      for (const fd of fds) sym.close(fd);
    },
    addMemRegion(_r, fd) {
      sym.close(fd);
    },
    removeMemRegion() {},
    startQueue() {},
    stopQueue: () => 0,
    updateQueue() {},
    getConfig: (_o, size) => new Uint8Array(size),
    setConfig() {},
    reset() {},
    close: () => closing.shift() ?? Promise.resolve(),
  };
}

Deno.test("vhost-user server: the next front-end is served once the last backend let go", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-vhost-server-" });
  const path = `${dir}/v.sock`;
  const { promise: firstReleased, resolve: releaseFirst } = Promise.withResolvers<void>();
  const server = new VhostUserServer(path, () => fakeBackend([firstReleased]), () => {});
  try {
    assertEquals(server.connected, false, "connected before any front-end");
    const a = UnixSocket.connect(path);
    await a.sendMsg(encodeMessage(R.GET_FEATURES));
    const buf = new Uint8Array(64);
    assertEquals((await guard(a.recvMsg(buf), "first reply")).bytes, 20);
    assertEquals(server.connected, true, "not connected while a front-end talks to it");
    a.close(); // the first front-end goes; its backend still has bdev I/O (close unresolved)
    const b = UnixSocket.connect(path);
    await b.sendMsg(encodeMessage(R.GET_FEATURES));
    let answered = false;
    const reply = b.recvMsg(buf).then((r) => {
      answered = true;
      return r;
    });
    await sleep(200);
    assertEquals(answered, false, "a new front-end was served before the old backend let go");
    releaseFirst();
    assertEquals((await guard(reply, "second reply")).bytes, 20);
    b.close();
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

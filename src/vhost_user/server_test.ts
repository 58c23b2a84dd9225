/**
 * The vhost-user server's socket across restarts: a socket file left by a
 * back-end that died is replaced, one a live process accepts on is refused
 * with an error that says so.
 */
import { assert, assertThrows } from "../testing/assert.ts";
import { listenUnix } from "../../ffi/unix_socket.ts";
import { sym } from "../../ffi/libc.ts";
import { VhostUserServer } from "./server.ts";

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

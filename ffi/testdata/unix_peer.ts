/**
 * The second process of unix_socket_test.ts's two-process test.
 *
 * Connects to the socket path given as the only argument and:
 * 1. sends "C" with a memfd of its own that holds a greeting naming its pid;
 * 2. receives "P" with the parent's memfd, maps it, checks the parent's
 *    greeting, and writes its answer at offset 2048 of that shared memory;
 * 3. sends "A" (answer ready) and exits 0 when the parent hangs up.
 * Any failure throws, so the exit code and stderr tell the parent why.
 * @module
 */
import { UnixSocket } from "../unix_socket.ts";
import { mapShared, memfdCreate, PAGE_SIZE } from "../memory.ts";
import { close } from "../libc.ts";

const path = Deno.args[0];
if (path === undefined) throw new Error("usage: unix_peer.ts <socket path>");
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return decoder.decode(bytes.subarray(0, end < 0 ? bytes.length : end));
}

using socket = UnixSocket.connect(path);

// 1. Our memfd, with data written before it is sent.
const ownFd = memfdCreate("unix_peer", PAGE_SIZE);
{
  using own = mapShared(ownFd, PAGE_SIZE);
  own.bytes().set(encoder.encode(`hello from child ${Deno.pid}\0`));
}
await socket.sendMsg(encoder.encode("C"), [ownFd]);
close(ownFd);

// 2. The parent's memfd.
const buf = new Uint8Array(16);
const msg = await socket.recvMsg(buf, 1);
if (msg.bytes !== 1 || buf[0] !== "P".charCodeAt(0) || msg.fds.length !== 1) {
  throw new Error(`unexpected message: ${msg.bytes} bytes, ${msg.fds.length} fds`);
}
const parentFd = msg.fds[0] ?? -1;
{
  using shared = mapShared(parentFd, PAGE_SIZE);
  close(parentFd);
  const greeting = cString(shared.bytes(0, 2048));
  if (!greeting.startsWith("hello from parent")) throw new Error(`bad greeting: ${greeting}`);
  shared.bytes(2048).set(encoder.encode(`child ${Deno.pid} read: ${greeting}\0`));
}

// 3. Answer ready; wait for the parent to hang up.
await socket.sendMsg(encoder.encode("A"));
const end = await socket.recvMsg(buf);
if (end.bytes !== 0) throw new Error("expected end of stream");

/**
 * The reader on a real AF_UNIX socketpair: a memory table sent with memfds
 * through SCM_RIGHTS comes back with fds that map the same memory.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import { close, eventfd } from "../../ffi/libc.ts";
import { mapShared, memfdCreate, PAGE_SIZE } from "../../ffi/memory.ts";
import { recvMsg, sendMsg, socketPair } from "../../ffi/unix_socket.ts";
import { VhostUserError } from "./errors.ts";
import {
  encodeMemoryTable,
  encodeMessage,
  encodeU64,
  encodeVringFd,
  MAX_MEM_REGIONS,
  VhostUserRequest as R,
} from "./messages.ts";
import { MessageReader, type VhostUserMessage } from "./reader.ts";

function isOpen(fd: number): boolean {
  try {
    Deno.statSync(`/proc/self/fd/${fd}`);
    return true;
  } catch {
    return false;
  }
}

/** Reads from `fd` into the reader until `count` messages came out. */
function receive(fd: number, reader: MessageReader, count: number): VhostUserMessage[] {
  const buf = new Uint8Array(4096);
  const out: VhostUserMessage[] = [];
  for (let spins = 0; out.length < count && spins < 1000; spins++) {
    const r = recvMsg(fd, buf, MAX_MEM_REGIONS);
    if (r === null) continue;
    assert(r.bytes > 0, "peer closed");
    reader.push(buf.subarray(0, r.bytes), r.fds);
    for (let m = reader.next(); m !== null; m = reader.next()) out.push(m);
  }
  return out;
}

Deno.test("a memory table with memfds crosses a socketpair and maps the same memory", () => {
  const [front, back] = socketPair();
  const size = 4 * PAGE_SIZE;
  const memA = memfdCreate("guest-a", size);
  const memB = memfdCreate("guest-b", 2 * size);
  const kick = eventfd();
  const sentMaps = [mapShared(memA, size), mapShared(memB, size, size)];
  const received: number[] = [];
  try {
    sentMaps[0]?.bytes().fill(0xa5);
    sentMaps[1]?.bytes().fill(0x5a);
    const table = encodeMessage(
      R.SET_MEM_TABLE,
      encodeMemoryTable([
        {
          guestPhysAddr: 0n,
          memorySize: BigInt(size),
          userspaceAddr: 0x7f00_0000_0000n,
          mmapOffset: 0n,
        },
        {
          guestPhysAddr: 0x100000n,
          memorySize: BigInt(size),
          userspaceAddr: 0x7f00_1000_0000n,
          mmapOffset: BigInt(size),
        },
      ]),
    );
    assertEquals(sendMsg(front, encodeMessage(R.GET_FEATURES)), 12);
    assertEquals(sendMsg(front, table, [memA, memB]), table.byteLength);
    const kickMsg = encodeMessage(R.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }));
    assertEquals(sendMsg(front, kickMsg, [kick]), kickMsg.byteLength);

    const reader = new MessageReader();
    const got = receive(back, reader, 3);
    for (const m of got) received.push(...m.fds);
    assertEquals(got.map((m) => m.request), [R.GET_FEATURES, R.SET_MEM_TABLE, R.SET_VRING_KICK]);
    const t = got[1];
    assert(t !== undefined && t.body.type === "memoryTable");
    assertEquals(t.fds.length, 2);
    t.body.regions.forEach((region, i) => {
      const fd = t.fds[i];
      assert(fd !== undefined);
      const m = mapShared(fd, Number(region.memorySize), Number(region.mmapOffset));
      try {
        assertEquals(m.bytes()[0], i === 0 ? 0xa5 : 0x5a);
        m.bytes()[1] = 0x11; // seen by the sender's mapping: same pages
        assertEquals(sentMaps[i]?.bytes()[1], 0x11);
      } finally {
        m.unmap();
      }
    });
    assertEquals(got[2]?.fds.length, 1);
    assertEquals(reader.close(), []);
  } finally {
    for (const m of sentMaps) m?.unmap();
    for (const fd of [...received, memA, memB, kick, front, back]) close(fd);
  }
});

Deno.test("fds of a refused message come back for closing over a real socket", () => {
  const [front, back] = socketPair();
  const efd = eventfd();
  try {
    // SET_FEATURES takes no fd: refused, and the received copy must be handed back.
    assertEquals(sendMsg(front, encodeMessage(R.SET_FEATURES, encodeU64(1n)), [efd]), 20);
    const reader = new MessageReader();
    let error: VhostUserError | undefined;
    try {
      receive(back, reader, 1);
    } catch (e) {
      if (!(e instanceof VhostUserError)) throw e;
      error = e;
    }
    assert(error !== undefined);
    assertEquals(error.kind, "badFdCount");
    assertEquals(error.fds.length, 1);
    const fd = error.fds[0];
    assert(fd !== undefined && fd !== efd && isOpen(fd));
    close(fd);
    assert(!isOpen(fd));
  } finally {
    for (const fd of [efd, front, back]) close(fd);
  }
});

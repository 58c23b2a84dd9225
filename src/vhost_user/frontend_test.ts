/**
 * The front-end against sluice's real vhost-user-blk back-end in this
 * process (server, session, backend, malloc bdev, one reactor), over a real
 * AF_UNIX socket with the memfd and eventfds passed by SCM_RIGHTS.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { waitFor } from "../testing/wait.ts";
import { VirtioDriver } from "../testing/virtio_driver.ts";
import { BdevRegistry } from "../bdev/mod.ts";
import { createMallocBdev } from "../bdev_modules/malloc/malloc.ts";
import {
  featureMask,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
} from "../virtio/blk.ts";
import { serveVhostBlk } from "../testing/vhost_blk_server.ts";
import {
  FrontendMemory,
  splitRingBytes,
  splitRingLayout,
  VhostUserFrontend,
  VhostUserFrontendError,
} from "./frontend.ts";
import {
  encodeMessage,
  encodeU64,
  featureBit,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_REPLY_MASK,
  VhostUserProtocolFeature,
  VhostUserRequest,
} from "./messages.ts";
import { UnixSocket } from "../../ffi/unix_socket.ts";

const BLOCKS = 2048;

async function rig(dir: string) {
  const registry = new BdevRegistry();
  createMallocBdev(registry, { name: "M0", numBlocks: BLOCKS, blockSize: 512 });
  const path = `${dir}/vhost.sock`;
  const server = await serveVhostBlk({ path, registry, bdevName: "M0", numQueues: 2 });
  return { path, logs: server.logs, stop: () => server.stop() };
}

Deno.test("front-end: negotiate, share memory, set up a ring, write and read back, config, stop", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-frontend-" });
  const r = await rig(dir);
  const mem = FrontendMemory.create(1 << 20, 0x10_0000);
  const fe = VhostUserFrontend.connect(r.path);
  try {
    const n = await fe.negotiate(
      featureMask(
        VIRTIO_F_VERSION_1,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_F_EVENT_IDX,
      ),
    );
    assert((n.features & featureMask(VIRTIO_F_VERSION_1)) !== 0n);
    assert((n.features & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n);
    assert((n.protocolFeatures & featureBit(VhostUserProtocolFeature.REPLY_ACK)) !== 0n);
    assertEquals(await fe.getQueueNum(), 2);

    // The config space: capacity in 512-byte sectors, blk_size; 256 bytes asked are answered.
    const cfg = await fe.getConfig(0, 256);
    const cv = new DataView(cfg.buffer);
    assertEquals(Number(cv.getBigUint64(0, true)), BLOCKS);
    assertEquals(cv.getUint32(20, true), 512);

    await fe.setMemTable([mem]);
    const driver = new VirtioDriver({
      queueSize: 16,
      bytes: mem.bytes,
      gpaBase: mem.gpaBase,
      uva: mem.uva,
      eventIdx: true,
    });
    const q = await fe.setupQueue(0, mem, {
      size: driver.size,
      descAddr: driver.descAddr,
      availAddr: driver.availAddr,
      usedAddr: driver.usedAddr,
    });
    assert(q.kickFd >= 0 && q.callFd >= 0);

    const pattern = new Uint8Array(1024).map((_, i) => (i * 7 + 3) & 0xff);
    const w = driver.addBlkRequest({
      type: VIRTIO_BLK_T_OUT,
      sector: 8,
      data: [{ len: 1024, writable: false, data: pattern }],
    });
    fe.kick(0);
    await waitFor(() => driver.usedIdx() === 1, "the write is used");
    assertEquals(driver.read(w.status, 1)[0], VIRTIO_BLK_S_OK);

    const rd = driver.addBlkRequest({
      type: VIRTIO_BLK_T_IN,
      sector: 8,
      data: [{ len: 1024, writable: true }],
    });
    fe.kick(0);
    await waitFor(() => driver.usedIdx() === 2, "the read is used");
    assertEquals(driver.read(rd.status, 1)[0], VIRTIO_BLK_S_OK);
    const got = driver.readUsed();
    assertEquals(got.map((u) => u.id), [w.head, rd.head]);
    assertEquals(got[1]?.len, 1024 + 1);
    const back = driver.read(rd.data[0]?.gpa ?? 0, 1024);
    assertEquals(back, pattern);

    // GET_VRING_BASE stops the ring and tells where the back-end stopped reading.
    assertEquals(await fe.getVringBase(0), 2);
  } finally {
    fe.close();
    await r.stop();
    mem.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("front-end: the ring helpers lay out a split ring on page boundaries", () => {
  const l = splitRingLayout(0x10_0000, 256);
  assertEquals(l.availAddr, 0x10_0000 + 16 * 256);
  assertEquals(l.usedAddr % 4096, 0);
  assert(l.usedAddr >= l.availAddr + 6 + 2 * 256);
  assert(0x10_0000 + splitRingBytes(256) >= l.usedAddr + 6 + 8 * 256);
});

Deno.test("front-end: a socket nobody listens on is a clear error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-frontend-" });
  try {
    let err: unknown;
    try {
      VhostUserFrontend.connect(`${dir}/nothing.sock`);
    } catch (e) {
      err = e;
    }
    assert(err instanceof VhostUserFrontendError);
    assert(err.message.includes(`${dir}/nothing.sock`), err.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("front-end: a refused request (REPLY_ACK) rejects naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-frontend-" });
  const r = await rig(dir);
  const mem = FrontendMemory.create(64 << 10);
  const fe = VhostUserFrontend.connect(r.path);
  try {
    await fe.negotiate(featureMask(VIRTIO_F_VERSION_1));
    await fe.setMemTable([mem]);
    // A used ring running past the end of the shared memory: the back-end cannot start the
    // queue at SET_VRING_KICK and says so through REPLY_ACK.
    await assertRejects(
      () =>
        fe.setupQueue(0, mem, {
          size: 8,
          descAddr: mem.gpaBase,
          availAddr: mem.gpaBase + 128,
          usedAddr: mem.gpaBase + mem.size - 8,
        }),
      VhostUserFrontendError,
      "refused SET_VRING_KICK",
    );
    // The connection still works.
    assertEquals(await fe.getQueueNum(), 2);
  } finally {
    fe.close();
    await r.stop();
    mem.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("front-end: a silent back-end and a wrong reply are errors that end the connection", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-frontend-" });
  const listener = UnixSocket.listen(`${dir}/fake.sock`);
  const peers: UnixSocket[] = [];
  try {
    // Silent: the request is read and never answered.
    const silent = VhostUserFrontend.connect(`${dir}/fake.sock`, { replyTimeoutMs: 100 });
    peers.push(await listener.accept());
    await assertRejects(
      () => silent.getFeatures(),
      VhostUserFrontendError,
      "no reply to GET_FEATURES within 100 ms",
    );
    await assertRejects(() => silent.getFeatures(), VhostUserFrontendError, "connection closed");

    // Wrong: a reply to another request.
    const wrong = VhostUserFrontend.connect(`${dir}/fake.sock`);
    const peer = await listener.accept();
    peers.push(peer);
    const asked = wrong.getProtocolFeatures();
    const buf = new Uint8Array(64);
    await peer.recvMsg(buf);
    await peer.sendMsg(
      encodeMessage(VhostUserRequest.GET_FEATURES, encodeU64(1n), VHOST_USER_REPLY_MASK),
    );
    await assertRejects(
      () => asked,
      VhostUserFrontendError,
      "expected the reply to GET_PROTOCOL_FEATURES",
    );
    await assertRejects(() => wrong.getFeatures(), VhostUserFrontendError, "connection closed");
  } finally {
    for (const p of peers) p.close();
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { VhostUserError } from "./errors.ts";
import {
  decodeHeader,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeMemoryTable,
  encodeMessage,
  encodeSingleMemoryRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  featureBit,
  type MemoryRegion,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VhostUserProtocolFeature as P,
  VhostUserRequest as R,
} from "./messages.ts";
import { MessageReader, type VhostUserMessage } from "./reader.ts";
import {
  type SessionOutput,
  type VhostUserBackend,
  VhostUserSession,
  type VringConfig,
} from "./session.ts";

const VIRTIO_F_VERSION_1 = 32;

class FakeBackend implements VhostUserBackend {
  readonly features = featureBit(VIRTIO_F_VERSION_1) | 1n << 6n;
  readonly protocolFeatures = featureBit(P.MQ) | featureBit(P.REPLY_ACK) | featureBit(P.CONFIG) |
    featureBit(P.CONFIGURE_MEM_SLOTS) | featureBit(P.RESET_DEVICE) | featureBit(P.STATUS) |
    featureBit(P.PAGEFAULT);
  readonly numQueues = 2;
  readonly maxQueueSize = 256;
  readonly maxMemSlots = 3;
  log: string[] = [];
  ownedFds: number[] = [];
  failNext = false;
  config = new Uint8Array(64).map((_, i) => i);
  #fail(): void {
    if (this.failNext) {
      this.failNext = false;
      throw new Error("Mapping failed");
    }
  }
  setFeatures(f: bigint): void {
    this.log.push(`features ${f.toString(16)}`);
  }
  setMemTable(regions: readonly MemoryRegion[], fds: number[]): void {
    this.ownedFds.push(...fds);
    this.#fail();
    this.log.push(`table ${regions.length}`);
  }
  addMemRegion(_r: MemoryRegion, fd: number): void {
    this.ownedFds.push(fd);
    this.log.push("add");
  }
  removeMemRegion(): void {
    this.log.push("rem");
  }
  startQueue(i: number, v: Readonly<VringConfig>): void {
    this.log.push(`start ${i} num ${v.num} base ${v.base} kick ${v.kickFd} en ${v.enabled}`);
  }
  stopQueue(i: number): number {
    this.log.push(`stop ${i}`);
    return 42;
  }
  updateQueue(i: number, v: Readonly<VringConfig>): void {
    this.log.push(`update ${i} call ${v.callFd} en ${v.enabled}`);
  }
  getConfig(offset: number, size: number): Uint8Array {
    return this.config.slice(offset, offset + size);
  }
  setConfig(offset: number, data: Uint8Array): void {
    this.config.set(data, offset);
  }
  reset(): void {
    this.log.push("reset");
  }
}

/** Encodes, reads back through the reader, applies. */
function send(
  s: VhostUserSession,
  request: number,
  payload?: Uint8Array,
  fds: number[] = [],
  flags = 0,
): SessionOutput {
  const reader = new MessageReader();
  reader.push(encodeMessage(request, payload, flags), fds);
  const m: VhostUserMessage | null = reader.next();
  assert(m !== null);
  return s.handle(m);
}

function u64Reply(o: SessionOutput): bigint {
  assert(o.reply !== null);
  assertEquals(decodeHeader(o.reply).flags, 1 | VHOST_USER_REPLY_MASK);
  return decodeU64(o.reply.subarray(12));
}

function expectError(fn: () => unknown, kind: string, fds: number[] = []): void {
  const e = assertThrows(fn, VhostUserError) as VhostUserError;
  assertEquals(e.kind, kind, e.message);
  assertEquals([...e.fds], fds);
}

const region = (gpa: bigint, size: bigint): MemoryRegion => ({
  guestPhysAddr: gpa,
  memorySize: size,
  userspaceAddr: 0x7f00_0000_0000n + gpa,
  mmapOffset: 0n,
});

const addr0 = encodeVringAddr({
  index: 0,
  flags: 0,
  descUserAddr: 0x1000n,
  usedUserAddr: 0x3000n,
  availUserAddr: 0x2000n,
  logGuestAddr: 0n,
});

function negotiated(): { s: VhostUserSession; b: FakeBackend } {
  const b = new FakeBackend();
  const s = new VhostUserSession(b);
  const offered = u64Reply(send(s, R.GET_FEATURES));
  assert((offered & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n);
  const proto = u64Reply(send(s, R.GET_PROTOCOL_FEATURES));
  send(s, R.SET_PROTOCOL_FEATURES, encodeU64(proto));
  send(s, R.SET_OWNER);
  send(s, R.SET_FEATURES, encodeU64(offered));
  return { s, b };
}

Deno.test("features: offered bits plus bit 30, unsupported protocol bits masked, no extras acked", () => {
  const b = new FakeBackend();
  const s = new VhostUserSession(b);
  assertEquals(
    u64Reply(send(s, R.GET_FEATURES)),
    b.features | featureBit(VHOST_USER_F_PROTOCOL_FEATURES),
  );
  const proto = u64Reply(send(s, R.GET_PROTOCOL_FEATURES));
  assertEquals(proto & featureBit(P.PAGEFAULT), 0n);
  assert((proto & featureBit(P.REPLY_ACK)) !== 0n);
  expectError(
    () => send(s, R.SET_PROTOCOL_FEATURES, encodeU64(featureBit(P.PAGEFAULT))),
    "badFeatures",
  );
  expectError(() => send(s, R.SET_FEATURES, encodeU64(1n << 40n)), "badFeatures");
  send(s, R.SET_FEATURES, encodeU64(featureBit(VIRTIO_F_VERSION_1)));
  assertEquals(b.log, ["features 100000000"]);
});

Deno.test("gated requests need their protocol feature, rings need an owner", () => {
  const s = new VhostUserSession(new FakeBackend());
  expectError(() => send(s, R.GET_QUEUE_NUM), "notNegotiated");
  expectError(() => send(s, R.POSTCOPY_ADVISE), "notNegotiated");
  expectError(
    () => send(s, R.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }), [9]),
    "notOwner",
    [9],
  );
  expectError(
    () => send(s, R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 4096n)]), [5]),
    "notOwner",
    [5],
  );
  expectError(
    () => send(s, R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 })),
    "notNegotiated",
  );
});

Deno.test("a queue starts at SET_VRING_KICK once configured and GET_VRING_BASE stops it", () => {
  const { s, b } = negotiated();
  assertEquals(u64Reply(send(s, R.GET_QUEUE_NUM)), 2n);
  send(s, R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 1n << 20n)]), [20]);
  assertEquals(b.ownedFds, [20]);
  send(s, R.SET_VRING_NUM, encodeVringState({ index: 0, num: 128 }));
  send(s, R.SET_VRING_BASE, encodeVringState({ index: 0, num: 7 }));
  send(s, R.SET_VRING_ADDR, addr0);
  assertEquals(
    send(s, R.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: false }), [31]).closeFds,
    [],
  );
  send(s, R.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }), [30]);
  assertEquals(s.vring(0).started, true);
  // Protocol features were acked: the ring starts disabled.
  assertEquals(b.log.slice(-2), ["table 1", "start 0 num 128 base 7 kick 30 en false"]);
  send(s, R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 }));
  assertEquals(b.log.at(-1), "update 0 call 31 en true");
  // A new call fd replaces the old, which comes back for closing.
  assertEquals(send(s, R.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: false }), [32]).closeFds, [
    31,
  ]);
  expectError(
    () => send(s, R.SET_VRING_NUM, encodeVringState({ index: 0, num: 64 })),
    "illegalState",
  );
  const stop = send(s, R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
  assert(stop.reply !== null);
  assertEquals(decodeVringState(stop.reply.subarray(12)), { index: 0, num: 42 });
  assertEquals(stop.closeFds, [30]);
  assertEquals(s.vring(0).started, false);
  assertEquals(b.log.at(-1), "stop 0");
  assertEquals(s.close(), [32]);
});

Deno.test("without VHOST_USER_F_PROTOCOL_FEATURES a ring starts enabled", () => {
  const b = new FakeBackend();
  const s = new VhostUserSession(b);
  send(s, R.SET_OWNER);
  send(s, R.SET_FEATURES, encodeU64(featureBit(VIRTIO_F_VERSION_1)));
  send(s, R.SET_VRING_NUM, encodeVringState({ index: 1, num: 256 }));
  send(
    s,
    R.SET_VRING_ADDR,
    encodeVringAddr({
      ...{ index: 1, flags: 0 },
      descUserAddr: 0n,
      usedUserAddr: 0n,
      availUserAddr: 0n,
      logGuestAddr: 0n,
    }),
  );
  send(s, R.SET_VRING_KICK, encodeVringFd({ index: 1, noFd: false }), [40]);
  assertEquals(b.log.at(-1), "start 1 num 256 base 0 kick 40 en true");
});

Deno.test("bad vring values are refused", () => {
  const { s } = negotiated();
  expectError(
    () => send(s, R.SET_VRING_NUM, encodeVringState({ index: 2, num: 128 })),
    "badQueueIndex",
  );
  expectError(
    () => send(s, R.SET_VRING_NUM, encodeVringState({ index: 0, num: 100 })),
    "badPayload",
  );
  expectError(
    () => send(s, R.SET_VRING_NUM, encodeVringState({ index: 0, num: 512 })),
    "badPayload",
  );
  expectError(
    () => send(s, R.SET_VRING_BASE, encodeVringState({ index: 0, num: 70000 })),
    "badPayload",
  );
  expectError(
    () => send(s, R.SET_VRING_KICK, encodeVringFd({ index: 5, noFd: false }), [9]),
    "badQueueIndex",
    [9],
  );
  expectError(
    () => send(s, R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 2 })),
    "badPayload",
  );
});

Deno.test("REPLY_ACK: 0 on success, 1 when the backend fails, nothing extra for GET_*", () => {
  const { s, b } = negotiated();
  const ok = send(
    s,
    R.SET_VRING_NUM,
    encodeVringState({ index: 0, num: 8 }),
    [],
    VHOST_USER_NEED_REPLY_MASK,
  );
  assertEquals(u64Reply(ok), 0n);
  b.failNext = true;
  const failed = send(
    s,
    R.SET_MEM_TABLE,
    encodeMemoryTable([region(0n, 4096n)]),
    [50],
    VHOST_USER_NEED_REPLY_MASK,
  );
  assertEquals(u64Reply(failed), 1n);
  assertEquals(b.ownedFds, [50]); // the backend owns them even though it failed
  assertEquals(u64Reply(send(s, R.GET_STATUS, undefined, [], VHOST_USER_NEED_REPLY_MASK)), 0n);
  // Without NEED_REPLY a backend failure ends the connection.
  b.failNext = true;
  expectError(
    () => send(s, R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 4096n)]), [51]),
    "backendFailed",
  );
});

Deno.test("memory slots: add, overlap, limit, remove (closing REM_MEM_REG's fd)", () => {
  const { s, b } = negotiated();
  assertEquals(u64Reply(send(s, R.GET_MAX_MEM_SLOTS)), 3n);
  send(s, R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0n, 0x10000n)), [60]);
  send(s, R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0x10000n, 0x10000n)), [61]);
  expectError(
    () => send(s, R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0x8000n, 0x10000n)), [62]),
    "overlappingRegions",
    [62],
  );
  send(s, R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0x20000n, 0x10000n)), [63]);
  expectError(
    () => send(s, R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0x30000n, 0x10000n)), [64]),
    "tooManyRegions",
    [64],
  );
  assertEquals(b.ownedFds, [60, 61, 63]);
  assertEquals(
    send(s, R.REM_MEM_REG, encodeSingleMemoryRegion(region(0x10000n, 0x10000n)), [65]).closeFds,
    [65],
  );
  expectError(
    () => send(s, R.REM_MEM_REG, encodeSingleMemoryRegion(region(0x10000n, 0x10000n))),
    "noSuchRegion",
  );
  send(s, R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0x30000n, 0x10000n)), [66]);
});

Deno.test("config space, status and RESET_DEVICE", () => {
  const { s, b } = negotiated();
  const r = send(s, R.GET_CONFIG, encodeConfig({ offset: 4, flags: 0, data: new Uint8Array(4) }));
  assert(r.reply !== null);
  assertEquals(r.reply.subarray(24), new Uint8Array([4, 5, 6, 7]));
  send(s, R.SET_CONFIG, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array([9]) }));
  assertEquals(b.config[0], 9);
  const bad = send(
    s,
    R.GET_CONFIG,
    encodeConfig({ offset: 100, flags: 0, data: new Uint8Array(4) }),
  );
  assertEquals(bad.reply?.byteLength, 24); // empty config: the read failed
  send(s, R.SET_STATUS, encodeU64(0xfn));
  assertEquals(u64Reply(send(s, R.GET_STATUS)), 0xfn);
  send(s, R.SET_VRING_CALL, encodeVringFd({ index: 1, noFd: false }), [70]);
  const reset = send(s, R.RESET_DEVICE);
  assertEquals(reset.closeFds, [70]);
  assertEquals(b.log.at(-1), "reset");
  assertEquals(u64Reply(send(s, R.GET_STATUS)), 0n);
  assertEquals(s.owner, true);
  send(s, R.RESET_OWNER);
  assertEquals(s.owner, false);
});

Deno.test("handleAsync: GET_VRING_BASE replies only after the backend drained that queue", async () => {
  const { s, b } = negotiated();
  const drains: { index: number; done: () => void }[] = [];
  const backend = b as FakeBackend & { drainQueue(index: number): Promise<void> };
  backend.drainQueue = (index: number) =>
    new Promise<void>((done) => {
      b.log.push(`drain ${index}`);
      drains.push({ index, done });
    });
  send(s, R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 1n << 20n)]), [20]);
  send(s, R.SET_VRING_NUM, encodeVringState({ index: 0, num: 128 }));
  send(s, R.SET_VRING_ADDR, addr0);
  send(s, R.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }), [30]);
  const reader = new MessageReader();
  reader.push(encodeMessage(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 })), []);
  const m = reader.next();
  assert(m !== null);
  let replied = false;
  const out = s.handleAsync(m).then((o) => {
    replied = true;
    return o;
  });
  await Promise.resolve();
  assertEquals(drains.map((d) => d.index), [0]);
  assertEquals(replied, false, "no reply while the queue drains");
  assertEquals(b.log.at(-1), "drain 0", "not stopped before the drain ended");
  drains[0]?.done();
  const o = await out;
  assert(o.reply !== null);
  assertEquals(decodeVringState(o.reply.subarray(12)), { index: 0, num: 42 });
  assertEquals(b.log.slice(-2), ["drain 0", "stop 0"]);
  // A stopped queue is not drained again; quiesce drains only started queues.
  await s.handleAsync(m);
  assertEquals(drains.length, 1);
  await s.quiesce();
  assertEquals(drains.length, 1);
  s.close();
});

import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { VhostUserError, type VhostUserErrorKind } from "./errors.ts";
import {
  encodeConfig,
  encodeInflight,
  encodeLog,
  encodeMemoryTable,
  encodeMessage,
  encodeSingleMemoryRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  featureBit,
  type MemoryRegion,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VhostUserProtocolFeature,
  VhostUserRequest as R,
} from "./messages.ts";
import { MessageReader, type VhostUserMessage } from "./reader.ts";
import {
  needsReplyAck,
  replyAck,
  replyConfig,
  replyInflight,
  replyU64,
  replyVringState,
} from "./reply.ts";

interface Sent {
  bytes: Uint8Array;
  fds: number[];
}

const region = (
  gpa: bigint,
  size: bigint,
  ua = 0x7f00_0000_0000n + gpa,
  off = 0n,
): MemoryRegion => ({
  guestPhysAddr: gpa,
  memorySize: size,
  userspaceAddr: ua,
  mmapOffset: off,
});

const msg = (request: number, payload?: Uint8Array, fds: number[] = [], flags = 0): Sent => ({
  bytes: encodeMessage(request, payload, flags),
  fds,
});

/** A session's worth of messages, with fake fd numbers (the reader never touches them). */
function stream(): Sent[] {
  return [
    msg(R.GET_FEATURES),
    msg(R.SET_OWNER),
    msg(R.GET_PROTOCOL_FEATURES),
    msg(R.SET_PROTOCOL_FEATURES, encodeU64(0x1_0a0bn)),
    msg(R.SET_FEATURES, encodeU64(1n << 32n | 1n << 30n), [], VHOST_USER_NEED_REPLY_MASK),
    msg(R.GET_CONFIG, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(60) })),
    msg(
      R.SET_MEM_TABLE,
      encodeMemoryTable([
        region(0n, 0xa0000n),
        region(0x100000n, 0x7ff00000n, 0x7f10_0000_0000n, 0x100000n),
      ]),
      [100, 101],
    ),
    msg(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 128 })),
    msg(R.SET_VRING_BASE, encodeVringState({ index: 0, num: 0 })),
    msg(
      R.SET_VRING_ADDR,
      encodeVringAddr({
        index: 0,
        flags: 0,
        descUserAddr: 0x7f00_0001_0000n,
        usedUserAddr: 0x7f00_0001_2000n,
        availUserAddr: 0x7f00_0001_1000n,
        logGuestAddr: 0n,
      }),
    ),
    msg(R.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }), [102]),
    msg(R.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: false }), [103]),
    msg(R.SET_VRING_ERR, encodeVringFd({ index: 0, noFd: true })),
    msg(R.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 })),
    msg(
      R.GET_INFLIGHT_FD,
      encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 128 }),
    ),
    msg(
      R.SET_INFLIGHT_FD,
      encodeInflight({ mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 128 }),
      [104],
    ),
    msg(R.SET_LOG_BASE, encodeLog({ mmapSize: 4096n, mmapOffset: 0n }), [105]),
    msg(R.SET_LOG_FD, undefined, [106]),
    msg(R.GET_MAX_MEM_SLOTS),
    msg(R.ADD_MEM_REG, encodeSingleMemoryRegion(region(1n << 32n, 1n << 30n)), [107]),
    msg(R.REM_MEM_REG, encodeSingleMemoryRegion(region(1n << 32n, 1n << 30n))),
    msg(R.REM_MEM_REG, encodeSingleMemoryRegion(region(1n << 32n, 1n << 30n)), [108]),
    msg(R.SET_CONFIG, encodeConfig({ offset: 20, flags: 0, data: new Uint8Array([1]) })),
    msg(R.VRING_KICK, encodeVringState({ index: 0, num: 0 })),
    msg(R.SET_STATUS, encodeU64(0xfn)),
    msg(R.GET_STATUS),
    msg(R.GET_QUEUE_NUM),
    msg(R.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 })),
    msg(R.RESET_DEVICE),
    msg(R.RESET_OWNER),
  ];
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * Cuts the stream into reads at `cuts`, and after every message that carries
 * fds (Linux ends a read there); each read carries the fds of the messages
 * beginning in it.
 */
function split(sent: readonly Sent[], cuts: readonly number[]): Sent[] {
  const all = concat(sent.map((s) => s.bytes));
  const starts: number[] = [];
  const points = new Set<number>(cuts);
  let at = 0;
  for (const s of sent) {
    starts.push(at);
    at += s.bytes.byteLength;
    if (s.fds.length > 0) points.add(at);
  }
  points.add(all.byteLength);
  const sorted = [...points].filter((p) => p > 0 && p <= all.byteLength).sort((a, b) => a - b);
  const reads: Sent[] = [];
  let from = 0;
  for (const to of sorted) {
    if (to <= from) continue;
    const fds: number[] = [];
    sent.forEach((s, i) => {
      const st = starts[i] ?? -1;
      if (st >= from && st < to) fds.push(...s.fds);
    });
    reads.push({ bytes: all.subarray(from, to), fds });
    from = to;
  }
  return reads;
}

function readAll(reads: readonly Sent[], reader = new MessageReader()): VhostUserMessage[] {
  const out: VhostUserMessage[] = [];
  for (const r of reads) {
    reader.push(r.bytes, r.fds);
    for (let m = reader.next(); m !== null; m = reader.next()) out.push(m);
  }
  assertEquals(reader.close(), []);
  return out;
}

Deno.test("a whole stream in one read decodes every message with its fds", () => {
  const sent = stream();
  const got = readAll(split(sent, []));
  assertEquals(got.length, sent.length);
  got.forEach((m, i) => {
    assertEquals(m.fds, sent[i]?.fds, `message ${i} fds`);
    assertEquals(
      encodeMessage(m.request, undefined, m.flags).subarray(0, 8),
      sent[i]?.bytes.subarray(0, 8),
    );
  });
  const table = got[6];
  assert(table !== undefined && table.body.type === "memoryTable");
  assertEquals(table.body.regions.length, 2);
  assertEquals(table.body.regions[1]?.mmapOffset, 0x100000n);
  assertEquals(got[4]?.needReply, true);
  const err = got[12];
  assert(err !== undefined && err.body.type === "vringFd");
  assertEquals(err.body, { type: "vringFd", index: 0, noFd: true });
  const cfg = got[22];
  assert(cfg !== undefined && cfg.body.type === "config");
  assertEquals(cfg.body.config, { offset: 20, flags: 0, data: new Uint8Array([1]) });
});

Deno.test("one byte at a time and every split point give the same messages", () => {
  const sent = stream();
  const whole = readAll(split(sent, []));
  const total = sent.reduce((n, s) => n + s.bytes.byteLength, 0);
  const bytewise = readAll(split(sent, Array.from({ length: total }, (_, i) => i)));
  assertEquals(bytewise, whole);
  for (let p = 1; p < total; p++) {
    assertEquals(readAll(split(sent, [p])), whole, `split at ${p}`);
    assertEquals(readAll(split(sent, [p, p + 5, p + 13])), whole, `split at ${p}+`);
  }
});

Deno.test("random multi-point splits (seeded) give the same messages", () => {
  const sent = stream();
  const whole = readAll(split(sent, []));
  const total = sent.reduce((n, s) => n + s.bytes.byteLength, 0);
  let seed = 0x5eed;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  for (let round = 0; round < 300; round++) {
    const cuts = Array.from({ length: 1 + rand(40) }, () => rand(total));
    assertEquals(readAll(split(sent, cuts)), whole, `cuts ${cuts.join(",")}`);
  }
});

Deno.test("reads of exactly one header then its payload work (fds with the header)", () => {
  const sent = stream();
  const cuts: number[] = [];
  let at = 0;
  for (const s of sent) {
    cuts.push(at + 12);
    at += s.bytes.byteLength;
  }
  assertEquals(readAll(split(sent, cuts)), readAll(split(sent, [])));
});

interface Bad {
  name: string;
  reads: Sent[];
  kind: VhostUserErrorKind;
  maxRegions?: number;
}

function raw(request: number, flags: number, payload: Uint8Array, fds: number[] = []): Sent {
  const bytes = new Uint8Array(12 + payload.byteLength);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.byteLength, true);
  bytes.set(payload, 12);
  return { bytes, fds };
}

const U64_MAX = (1n << 64n) - 1n;
const badCases: Bad[] = [
  { name: "unknown request", reads: [msg(99, undefined, [7])], kind: "unknownRequest" },
  { name: "request 0", reads: [msg(0)], kind: "unknownRequest" },
  { name: "IOTLB", reads: [msg(R.IOTLB_MSG, new Uint8Array(32))], kind: "unsupportedRequest" },
  { name: "version 2", reads: [raw(R.GET_FEATURES, 2, new Uint8Array(0), [7])], kind: "badFlags" },
  {
    name: "reply bit",
    reads: [msg(R.GET_FEATURES, undefined, [], VHOST_USER_REPLY_MASK)],
    kind: "badFlags",
  },
  {
    name: "undefined flag",
    reads: [raw(R.GET_FEATURES, 0x11, new Uint8Array(0))],
    kind: "badFlags",
  },
  { name: "short u64", reads: [msg(R.SET_FEATURES, new Uint8Array(4))], kind: "badSize" },
  { name: "payload on GET", reads: [msg(R.GET_FEATURES, new Uint8Array(8))], kind: "badSize" },
  { name: "huge size", reads: [raw(R.SET_CONFIG, 1, new Uint8Array(400))], kind: "badSize" },
  {
    name: "table size not n regions",
    reads: [msg(R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 4096n)]).subarray(0, 30), [7])],
    kind: "badSize",
  },
  {
    name: "table count disagrees with size",
    reads: [(() => {
      const t = encodeMemoryTable([region(0n, 4096n), region(8192n, 4096n)]);
      t[0] = 3;
      return msg(R.SET_MEM_TABLE, t, [7, 8]);
    })()],
    kind: "badSize",
  },
  {
    name: "kick without fd",
    reads: [msg(R.SET_VRING_KICK, encodeVringFd({ index: 0, noFd: false }))],
    kind: "badFdCount",
  },
  {
    name: "NOFD with an fd",
    reads: [msg(R.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: true }), [7])],
    kind: "badFdCount",
  },
  {
    name: "table with fewer fds than regions",
    reads: [
      msg(R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 4096n), region(8192n, 4096n)]), [7]),
    ],
    kind: "badFdCount",
  },
  { name: "fd on GET_FEATURES", reads: [msg(R.GET_FEATURES, undefined, [7])], kind: "badFdCount" },
  { name: "SET_LOG_FD without fd", reads: [msg(R.SET_LOG_FD)], kind: "badFdCount" },
  {
    name: "inflight without fd",
    reads: [
      msg(
        R.SET_INFLIGHT_FD,
        encodeInflight({ mmapSize: 1n, mmapOffset: 0n, numQueues: 1, queueSize: 1 }),
      ),
    ],
    kind: "badFdCount",
  },
  {
    name: "REM_MEM_REG with two fds",
    reads: [msg(R.REM_MEM_REG, encodeSingleMemoryRegion(region(0n, 4096n)), [7, 8])],
    kind: "badFdCount",
  },
  {
    name: "fds with a continuation read",
    reads: [
      { bytes: encodeMessage(R.SET_FEATURES, encodeU64(1n)).subarray(0, 5), fds: [] },
      { bytes: encodeMessage(R.SET_FEATURES, encodeU64(1n)).subarray(5), fds: [7] },
    ],
    kind: "strayFds",
  },
  {
    name: "nine regions",
    reads: [msg(
      R.SET_MEM_TABLE,
      encodeMemoryTable(Array.from({ length: 9 }, (_, i) => region(BigInt(i) << 20n, 4096n))),
      [1, 2, 3, 4, 5, 6, 7, 8, 9],
    )],
    kind: "tooManyRegions",
  },
  {
    name: "more regions than the slot limit",
    reads: [
      msg(R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 4096n), region(8192n, 4096n)]), [7, 8]),
    ],
    kind: "tooManyRegions",
    maxRegions: 1,
  },
  {
    name: "zero-sized region",
    reads: [
      msg(R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 4096n), region(8192n, 0n)]), [7, 8]),
    ],
    kind: "zeroSizedRegion",
  },
  {
    name: "zero-sized ADD_MEM_REG",
    reads: [msg(R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0n, 0n)), [7])],
    kind: "zeroSizedRegion",
  },
  {
    name: "gpa + size overflows",
    reads: [msg(R.SET_MEM_TABLE, encodeMemoryTable([region(U64_MAX - 4095n, 8192n, 0n)]), [7])],
    kind: "regionOverflow",
  },
  {
    name: "uaddr + size overflows",
    reads: [msg(R.ADD_MEM_REG, encodeSingleMemoryRegion(region(0n, 8192n, U64_MAX)), [7])],
    kind: "regionOverflow",
  },
  {
    name: "mmap offset + size overflows",
    reads: [msg(R.SET_MEM_TABLE, encodeMemoryTable([region(0n, 8192n, 0n, U64_MAX - 1n)]), [7])],
    kind: "regionOverflow",
  },
  {
    name: "overlapping regions",
    reads: [msg(
      R.SET_MEM_TABLE,
      encodeMemoryTable([region(0n, 0x10000n), region(0x20000n, 4096n), region(0xf000n, 0x2000n)]),
      [7, 8, 9],
    )],
    kind: "overlappingRegions",
  },
  {
    name: "config over 256 bytes",
    reads: [(() => {
      const p = encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(256) });
      p[4] = 1;
      p[5] = 1; // size 257
      return msg(R.SET_CONFIG, p);
    })()],
    kind: "badConfig",
  },
  {
    name: "config size disagrees with payload",
    reads: [
      msg(
        R.GET_CONFIG,
        encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(8) }).subarray(0, 16),
      ),
    ],
    kind: "badConfig",
  },
  {
    name: "VRING_KICK with num",
    reads: [msg(R.VRING_KICK, encodeVringState({ index: 0, num: 1 }))],
    kind: "badPayload",
  },
  {
    name: "reserved vring fd bits",
    reads: [msg(R.SET_VRING_KICK, encodeU64(0x1000n), [7])],
    kind: "badPayload",
  },
];

Deno.test("each malformed message gives its kind and hands back every fd", () => {
  for (const c of badCases) {
    const expectedFds = c.reads.flatMap((r) => r.fds).sort();
    for (const bytewise of [false, true]) {
      const reads = bytewise
        ? c.reads.flatMap((r) =>
          Array.from(r.bytes, (b, i) => ({ bytes: new Uint8Array([b]), fds: i === 0 ? r.fds : [] }))
        )
        : c.reads;
      const reader = new MessageReader({ maxRegions: c.maxRegions });
      let error: VhostUserError | undefined;
      try {
        readAll(reads, reader);
      } catch (e) {
        if (!(e instanceof VhostUserError)) throw e;
        error = e;
      }
      assert(error !== undefined, `${c.name}: no error`);
      assertEquals(error.kind, c.kind, `${c.name}: ${error.message}`);
      assert(/^[A-Z0-9]/.test(error.message), `${c.name}: sentence case: ${error.message}`);
      assertEquals([...error.fds].sort(), expectedFds, `${c.name} fds`);
      assertEquals(reader.close(), [], `${c.name}: nothing left`);
      const again = assertThrows(() => reader.next(), VhostUserError);
      assertEquals((again as VhostUserError).kind, "readerFailed");
    }
  }
});

Deno.test("an error hands back fds of earlier unfinished reads too", () => {
  const reader = new MessageReader();
  const good = encodeMessage(R.SET_VRING_CALL, encodeVringFd({ index: 0, noFd: false }));
  reader.push(good.subarray(0, 3), [40]);
  assertEquals(reader.next(), null);
  // More of it arrives with fds of its own: stray, and the held fd comes back too.
  reader.push(good.subarray(3, 6), [41]);
  const e = assertThrows(() => reader.next(), VhostUserError) as VhostUserError;
  assertEquals(e.kind, "strayFds");
  assertEquals([...e.fds].sort(), [40, 41]);
});

Deno.test("close gives back the fds of a message cut short", () => {
  const reader = new MessageReader();
  const m = encodeMessage(R.SET_LOG_FD);
  reader.push(m.subarray(0, 6), [9]);
  assertEquals(reader.next(), null);
  assertEquals(reader.close(), [9]);
});

Deno.test("push before the previous read is consumed is a programming error", () => {
  const reader = new MessageReader();
  reader.push(encodeMessage(R.GET_FEATURES));
  assertThrows(() => reader.push(encodeMessage(R.GET_FEATURES)), Error, "before next()");
  assertThrows(() => new MessageReader({ maxRegions: 9 }), RangeError);
});

Deno.test("replies carry the REPLY flag and REPLY_ACK follows the spec's rule", () => {
  const u = replyU64(R.GET_FEATURES, 1n << 32n);
  assertEquals(new DataView(u.buffer).getUint32(4, true), 0x5);
  assertEquals(u.byteLength, 20);
  assertEquals(replyVringState(R.GET_VRING_BASE, { index: 1, num: 7 }).byteLength, 20);
  assertEquals(replyConfig({ offset: 0, flags: 0, data: new Uint8Array(60) }).byteLength, 12 + 72);
  assertEquals(
    replyInflight({ mmapSize: 1n, mmapOffset: 0n, numQueues: 1, queueSize: 1 }).byteLength,
    36,
  );
  assertEquals(replyAck(R.SET_MEM_TABLE, false).subarray(12), encodeU64(1n));
  assertEquals(replyAck(R.SET_MEM_TABLE, true).subarray(12), encodeU64(0n));
  const ack = featureBit(VhostUserProtocolFeature.REPLY_ACK);
  const reader = new MessageReader();
  reader.push(concat([
    encodeMessage(
      R.SET_VRING_NUM,
      encodeVringState({ index: 0, num: 8 }),
      VHOST_USER_NEED_REPLY_MASK,
    ),
    encodeMessage(R.GET_FEATURES, undefined, VHOST_USER_NEED_REPLY_MASK),
    encodeMessage(R.SET_VRING_NUM, encodeVringState({ index: 0, num: 8 })),
  ]));
  const [a, b, c] = [reader.next(), reader.next(), reader.next()];
  assert(a !== null && b !== null && c !== null);
  assertEquals(needsReplyAck(a, ack), true);
  assertEquals(needsReplyAck(a, 0n), false);
  assertEquals(needsReplyAck(b, ack), false);
  assertEquals(needsReplyAck(c, ack), false);
});

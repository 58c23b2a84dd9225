/**
 * A live NVMe/TCP target under fire: one target, transport and reactor in
 * this process; a well-behaved host (NvmeTcpController, two I/O queues)
 * writes and read-verifies its own LBA range the whole time, while a
 * seeded fuzzer opens raw connections and sends everything a broken or
 * hostile host could: random bytes, mutated PDU streams, truncated PDUs,
 * oversized PLEN, PDUs before the ICReq, H2CData for unknown tags, bad SGL
 * lengths, LBAs past the namespace, unknown opcodes, Connect to unknown
 * NQNs, I/O before Connect, more commands than a queue has entries, and
 * all of it dribbled one byte at a time.
 *
 * What must hold (DESIGN.md: a bad input gets a clear error to its sender
 * and the appliance keeps serving everyone else):
 * - the reactor keeps running and nothing rejects unhandled;
 * - every bad connection is closed by the target (with a C2HTermReq where
 *   the class calls for one) or answered with an error status;
 * - everything the target sends parses;
 * - the good host sees no error and every read-back matches;
 * - at the end no qpair, controller or data chunk is leaked and the
 *   reactor has no I/O in flight.
 *
 * Reproduce one iteration with its printed seed: each iteration draws from
 * its own PRNG seeded from SEED and the iteration number.
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { Reactor } from "../../src/reactor/mod.ts";
import { BdevRegistry } from "../../src/bdev/mod.ts";
import { createMallocBdev } from "../../src/bdev_modules/malloc/malloc.ts";
import { NvmfTarget } from "../../src/nvmf_tcp/target.ts";
import { NvmfTcpTransport } from "../../src/nvmf_tcp/tcp_transport.ts";
import { NvmeTcpController, type NvmeTcpQueue } from "../../src/nvmf_tcp/host.ts";
import { Fes, PduFlag, type PduTxParams, PduType, setLe32 } from "../../src/nvmf_tcp/pdu.ts";
import { generateStream, mutate, Prng, randomPdu } from "../../src/testing/nvme_tcp_pdu_gen.ts";
import {
  NVME_CNTLID_DYNAMIC,
  NVME_FABRICS_OPCODE,
  NvmeAdminOpcode,
  NvmeGenericSc,
  NvmeIoOpcode,
  NvmeReg,
  NvmfConnectData,
  NvmfConnectSqe,
  NvmfFabricsSc,
  NvmfFabricsType,
  statusSc,
  statusSct,
} from "../../src/nvme/mod.ts";
import { freePort } from "../../src/testing/net.ts";
import { guard, waitFor } from "../../src/testing/wait.ts";
import {
  CLOSED,
  type Completion,
  connectData,
  connectSqe,
  propertySet,
  RawConn,
  SGL_IN_CAPSULE,
  SGL_TRANSPORT,
} from "../../src/testing/nvme_tcp_raw_host.ts";

/** Another seed: NVMF_FUZZ_SEED=0x1234 deno test -A test/integration/nvmf_fuzz_test.ts */
const SEED = Number(Deno.env.get("NVMF_FUZZ_SEED") ?? 0x5eed_f00d) >>> 0;
const ITERATIONS = Number(Deno.env.get("NVMF_FUZZ_ITERATIONS") ?? 300);
/** Fuzz connections in flight at once. */
const CONCURRENCY = 6;
const NQN = "nqn.2026-11.dev.sluice:fuzz";
const GOOD_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000600d";
const BLOCK_BYTES = 512;
const NUM_BLOCKS = 32768;
/** Fuzz writes that might ever land go here, away from the good host's range (0-10239). */
const FUZZ_LBA = 20000;
/**
 * Hang guard for "eventually": a correct target answers within
 * milliseconds; this only turns a hang into a failure naming what was awaited.
 */
/** SGL descriptor types (SQE byte 39). */
/** CC: EN, IOSQES 64 B, IOCQES 16 B. */
const CC_ENABLE = 1 | (6 << 16) | (4 << 20);
/** Bytes that push a target out of any PDU state (H2CData of MDTS plus headers), then fail. */
const PROBE = new Uint8Array(136 * 1024).fill(0xff);

const GENERIC = 0;
const CMD_SPECIFIC = 1;

// ---------------------------------------------------------------------------
// Waiting without hanging.

// ---------------------------------------------------------------------------
// A raw host connection: sends exactly the bytes a test builds, records
// everything the target sends, and never gives up on its own (its reader
// records a parse error instead of closing), so a close always means the
// target closed.

/** Read or Write of `nlb` blocks at `slba` on NSID 1; data by transport SGL of `sglBytes`. */
function rwSqe(
  opcode: number,
  slba: number,
  nlb: number,
  sglBytes: number,
  sglType = SGL_TRANSPORT,
): (v: DataView, sqe: Uint8Array) => void {
  return (v, sqe) => {
    v.setUint8(0, opcode);
    v.setUint32(4, 1, true);
    v.setUint32(40, slba % 0x1_0000_0000, true);
    v.setUint32(44, Math.floor(slba / 0x1_0000_0000), true);
    v.setUint16(48, nlb - 1, true);
    v.setUint32(32, sglBytes, true);
    sqe[39] = sglBytes > 0 ? sglType : 0;
  };
}

/** A controller brought up by hand: admin queue (Connect, CC.EN) and I/O queue 1. */
async function rawController(
  reactor: Reactor,
  port: number,
  hostnqn: string,
  o: { hdgst?: boolean; ddgst?: boolean; sqsize?: number } = {},
): Promise<{ admin: RawConn; io: RawConn; cntlid: number }> {
  const admin = await RawConn.open(reactor, port);
  let io: RawConn | null = null;
  try {
    await admin.ic();
    const c = await admin.command(
      connectSqe(0, 31),
      connectData(NQN, hostnqn, NVME_CNTLID_DYNAMIC),
    );
    if (c.status !== 0) throw new Error(`admin Connect: status 0x${c.status.toString(16)}`);
    const cntlid = c.dw0 & 0xffff;
    const en = await admin.command(propertySet(NvmeReg.CC, CC_ENABLE));
    if (en.status !== 0) throw new Error(`Property Set CC: status 0x${en.status.toString(16)}`);
    io = await RawConn.open(reactor, port);
    await io.ic({ hdgst: o.hdgst, ddgst: o.ddgst });
    const q = await io.command(connectSqe(1, o.sqsize ?? 127), connectData(NQN, hostnqn, cntlid));
    if (q.status !== 0) throw new Error(`I/O Connect: status 0x${q.status.toString(16)}`);
    return { admin, io, cntlid };
  } catch (e) {
    admin.close();
    io?.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------
// The fuzz classes. Each opens its own connections, checks what its class
// promises, and returns them (the driver checks they all close).

interface Ctx {
  reactor: Reactor;
  port: number;
  prng: Prng;
  /** A unique host NQN for classes that bring up a controller. */
  hostnqn: string;
  /** Connections opened (the driver awaits and checks each). */
  conns: RawConn[];
}

type Expect =
  /** The target closes the connection (TermReq optional). */
  | "closed"
  /** The target closes it after a C2HTermReq. */
  | "termreq"
  /** Every command is answered with an error status; this side closes. */
  | "error-status"
  /** This side cuts the stream and closes; the target must just let go. */
  | "closed-by-us";

interface FuzzClass {
  name: string;
  expect: Expect;
  /** Runs the class; returns the connections its expectation is about. */
  run(ctx: Ctx): Promise<RawConn[]>;
}

async function open(ctx: Ctx): Promise<RawConn> {
  const rc = await RawConn.open(ctx.reactor, ctx.port);
  ctx.conns.push(rc);
  return rc;
}

async function controller(ctx: Ctx, o: { hdgst?: boolean; ddgst?: boolean } = {}) {
  const c = await rawController(ctx.reactor, ctx.port, ctx.hostnqn, o);
  ctx.conns.push(c.admin, c.io);
  return c;
}

function expectStatus(got: Completion, sct: number, sc: number, what: string): void {
  if (got.status === CLOSED || statusSct(got.status) !== sct || statusSc(got.status) !== sc) {
    throw new Error(
      `${what}: status 0x${got.status.toString(16)}, expected SCT ${sct} SC 0x${sc.toString(16)}`,
    );
  }
}

/** A data PDU or command capsule as a host would send it after the IC exchange. */
function oneValidPdu(prng: Prng, tx: PduTxParams): Uint8Array {
  return generateStream(prng, {
    receiver: "target",
    hdgst: tx.hdgst,
    ddgst: tx.ddgst,
    ic: false,
    count: 1,
    maxData: 8192,
    maxInCapsule: 4096,
  }).bytes;
}

const CLASSES: FuzzClass[] = [
  {
    name: "random bytes",
    expect: "closed",
    async run(ctx) {
      const rc = await open(ctx);
      rc.send(ctx.prng.bytes(ctx.prng.range(8, 600)));
      return [rc];
    },
  },
  {
    name: "random PDU-shaped bytes",
    expect: "closed",
    async run(ctx) {
      const rc = await open(ctx);
      if (ctx.prng.bool()) await rc.ic({ hdgst: ctx.prng.bool(), ddgst: ctx.prng.bool() });
      for (let i = ctx.prng.range(1, 4); i > 0; i--) rc.send(randomPdu(ctx.prng, "target"));
      // Whatever state that left the target in, this ends it.
      rc.send(PROBE);
      return [rc];
    },
  },
  {
    name: "ICReq then mutated PDU stream",
    expect: "closed",
    async run(ctx) {
      const rc = await open(ctx);
      const hdgst = ctx.prng.bool();
      const ddgst = ctx.prng.bool();
      await rc.ic({ hdgst, ddgst });
      const s = generateStream(ctx.prng, {
        receiver: "target",
        hdgst,
        ddgst,
        ic: false,
        count: ctx.prng.range(1, 6),
        maxData: 8192,
        maxInCapsule: 4096,
      });
      const offsets = s.pdus.map((p) => p.offset);
      rc.send(mutate(ctx.prng, s.bytes, ctx.prng.int(5), offsets));
      rc.send(PROBE);
      await rc.untilClosed();
      // Nothing may succeed on a queue that never sent Connect.
      const ok = rc.statuses.filter((st) => st === 0).length;
      if (ok > 0) throw new Error(`${ok} command(s) succeeded before Connect`);
      return [rc];
    },
  },
  {
    name: "truncated PDU then close",
    expect: "closed-by-us",
    async run(ctx) {
      const rc = await open(ctx);
      await rc.ic({ hdgst: ctx.prng.bool(), ddgst: ctx.prng.bool() });
      const pdu = oneValidPdu(ctx.prng, rc.tx);
      await rc.flush(pdu.subarray(0, ctx.prng.range(1, pdu.length - 1)));
      rc.close();
      return [rc];
    },
  },
  {
    name: "oversized PLEN",
    expect: "termreq",
    async run(ctx) {
      const rc = await open(ctx);
      const variant = ctx.prng.int(3);
      const h = new Uint8Array(128);
      const plen = ctx.prng.pick([4096 + 72 + 1, 1 << 20, 1 << 30, 0xffff_ffff]);
      const h2cPlen = ctx.prng.pick([(128 << 10) + 24 + 1, 1 << 20, 1 << 30, 0xffff_ffff]);
      if (variant === 0) {
        // An ICReq whose PLEN is not 128.
        h.set(rc.icReq());
        setLe32(h, 4, plen);
        rc.send(h);
        await rc.untilClosed();
        if (rc.termFes !== Fes.InvalidHeaderField) {
          throw new Error(`TermReq FES ${rc.termFes}, expected Invalid Header Field`);
        }
        return [rc];
      }
      await rc.ic();
      if (variant === 1) {
        // A CapsuleCmd claiming more in-capsule data than the target takes.
        h.set([PduType.CapsuleCmd, 0, 72, 72]);
        setLe32(h, 4, plen);
        rc.send(h.subarray(0, 72));
      } else {
        // An H2CData claiming more than MAXH2CDATA.
        h.set([PduType.H2CData, PduFlag.LAST_PDU, 24, 24]);
        setLe32(h, 4, h2cPlen);
        setLe32(h, 16, h2cPlen - 24); // DATAL agrees with PLEN
        rc.send(h.subarray(0, 24));
      }
      await rc.untilClosed();
      if (rc.termFes !== Fes.DataTransferLimitExceeded) {
        throw new Error(`TermReq FES ${rc.termFes}, expected Data Transfer Limit Exceeded`);
      }
      return [rc];
    },
  },
  {
    name: "PDUs before ICReq",
    expect: "termreq",
    async run(ctx) {
      const rc = await open(ctx);
      if (ctx.prng.bool(0.25)) {
        // A second ICReq is out of sequence too.
        await rc.ic();
        rc.send(rc.icReq());
      } else {
        rc.send(oneValidPdu(ctx.prng, rc.tx));
      }
      await rc.untilClosed();
      if (rc.termFes !== Fes.PduSequenceError) {
        throw new Error(`TermReq FES ${rc.termFes}, expected PDU Sequence Error`);
      }
      return [rc];
    },
  },
  {
    name: "H2CData with unknown TTAG",
    expect: "termreq",
    async run(ctx) {
      const rc = await open(ctx);
      await rc.ic({ hdgst: ctx.prng.bool(), ddgst: ctx.prng.bool() });
      const data = ctx.prng.bytes(ctx.prng.range(1, 4096));
      rc.send(rc.h2cData(ctx.prng.int(0x10000), ctx.prng.int(0x10000), 0, data, true));
      await rc.untilClosed();
      if (rc.termFes !== Fes.InvalidHeaderField) {
        throw new Error(`TermReq FES ${rc.termFes}, expected Invalid Header Field`);
      }
      return [rc];
    },
  },
  {
    name: "bad SGL lengths",
    expect: "error-status",
    async run(ctx) {
      const { io } = await controller(ctx, { hdgst: ctx.prng.bool(), ddgst: ctx.prng.bool() });
      const lba = FUZZ_LBA + ctx.prng.int(1000);
      const S = NvmeGenericSc.DataSglLengthInvalid;
      const cases: [string, (v: DataView, sqe: Uint8Array) => void, Uint8Array | null][] = [
        ["read of 8 blocks with a 512-byte SGL", rwSqe(NvmeIoOpcode.Read, lba, 8, 512), null],
        ["read beyond MDTS", rwSqe(NvmeIoOpcode.Read, lba, 8, 1 << 20), null],
        ["write beyond MDTS via R2T", rwSqe(NvmeIoOpcode.Write, lba, 8, 256 * 1024), null],
        [
          "write with no in-capsule data and no transport SGL",
          rwSqe(NvmeIoOpcode.Write, lba, 8, 4096, 0x00),
          null,
        ],
        [
          "in-capsule data shorter than the SGL",
          (v, sqe) => {
            rwSqe(NvmeIoOpcode.Write, lba, 2, 1024, SGL_IN_CAPSULE)(v, sqe);
          },
          new Uint8Array(512),
        ],
        [
          "in-capsule data on a read",
          (v, sqe) => rwSqe(NvmeIoOpcode.Read, lba, 1, 512, SGL_IN_CAPSULE)(v, sqe),
          new Uint8Array(512),
        ],
      ];
      for (const [what, fill, data] of cases) {
        expectStatus(await io.command(fill, data), GENERIC, S, what);
      }
      // The queue still serves: a valid read of the fuzz range.
      const ok = await io.command(rwSqe(NvmeIoOpcode.Read, lba, 1, 512));
      expectStatus(ok, GENERIC, 0, "valid read after bad SGLs");
      return [io];
    },
  },
  {
    name: "LBA beyond the namespace",
    expect: "error-status",
    async run(ctx) {
      const { io } = await controller(ctx);
      const nlb = ctx.prng.range(1, 8);
      const slba = ctx.prng.pick([
        NUM_BLOCKS,
        NUM_BLOCKS - nlb + 1,
        NUM_BLOCKS + ctx.prng.int(1 << 20),
        0x20_0000 * 0x1_0000_0000, // SLBA high word past 2^53
        2 ** 52,
      ]);
      const S = NvmeGenericSc.LbaOutOfRange;
      expectStatus(
        await io.command(rwSqe(NvmeIoOpcode.Read, slba, nlb, nlb * BLOCK_BYTES)),
        GENERIC,
        S,
        `read at LBA ${slba}`,
      );
      expectStatus(
        await io.command(
          rwSqe(NvmeIoOpcode.Write, slba, nlb, nlb * BLOCK_BYTES, SGL_IN_CAPSULE),
          ctx.prng.bytes(nlb * BLOCK_BYTES),
        ),
        GENERIC,
        S,
        `in-capsule write at LBA ${slba}`,
      );
      expectStatus(
        await io.command((v) => {
          v.setUint8(0, NvmeIoOpcode.WriteZeroes);
          v.setUint32(4, 1, true);
          v.setUint32(40, NUM_BLOCKS - 1, true);
          v.setUint32(48, nlb, true); // nlb + 1 blocks from the last one
        }),
        GENERIC,
        S,
        "Write Zeroes past the end",
      );
      return [io];
    },
  },
  {
    name: "unknown opcodes",
    expect: "error-status",
    async run(ctx) {
      const { admin, io } = await controller(ctx);
      const S = NvmeGenericSc.InvalidOpcode;
      const ioOp = ctx.prng.pick([0x03, 0x04, 0x05, 0x0c, 0x0d, 0x19, 0x7e, 0x80, 0xc3, 0xff]);
      expectStatus(
        await io.command((v) => {
          v.setUint8(0, ioOp);
          v.setUint32(4, 1, true);
        }),
        GENERIC,
        S,
        `I/O opcode 0x${ioOp.toString(16)}`,
      );
      const adminOp = ctx.prng.pick([0x00, 0x01, 0x04, 0x05, 0x0d, 0x10, 0x11, 0x80, 0x84, 0xc1]);
      expectStatus(
        await admin.command((v) => v.setUint8(0, adminOp)),
        GENERIC,
        S,
        `admin opcode 0x${adminOp.toString(16)}`,
      );
      // A Fabrics Property Get belongs on the admin queue only.
      expectStatus(
        await io.command((v) => {
          v.setUint8(0, NVME_FABRICS_OPCODE);
          v.setUint8(4, NvmfFabricsType.PropertyGet);
          v.setUint32(44, NvmeReg.CSTS, true);
        }),
        GENERIC,
        S,
        "Property Get on an I/O queue",
      );
      // Unknown Fabrics command types.
      expectStatus(
        await admin.command((v) => {
          v.setUint8(0, NVME_FABRICS_OPCODE);
          v.setUint8(4, ctx.prng.pick([0x02, 0x03, 0x05, 0x06, 0x7f, 0xc0]));
        }),
        GENERIC,
        S,
        "unknown Fabrics command type",
      );
      return [admin, io];
    },
  },
  {
    name: "Connect to unknown NQNs",
    expect: "error-status",
    async run(ctx) {
      const rc = await open(ctx);
      await rc.ic();
      const bad = `nqn.2026-11.dev.sluice:nope-${ctx.prng.u32().toString(16)}`;
      const CIP = NvmfFabricsSc.ConnectInvalidParameters;
      const variant = ctx.prng.int(5);
      if (variant === 0) {
        const c = await rc.command(connectSqe(0, 31), connectData(bad, GOOD_HOSTNQN, 0xffff));
        expectStatus(c, CMD_SPECIFIC, CIP, "Connect to an unknown subsystem");
      } else if (variant === 1) {
        // The subsystem NQN not NUL-terminated.
        const d = connectData(NQN, GOOD_HOSTNQN, 0xffff);
        d.fill(0x61, NvmfConnectData.SUBNQN, NvmfConnectData.SUBNQN + 256);
        expectStatus(await rc.command(connectSqe(0, 31), d), CMD_SPECIFIC, CIP, "unterminated");
      } else if (variant === 2) {
        // An I/O queue of a controller that does not exist.
        const c = await rc.command(
          connectSqe(1, 31),
          connectData(NQN, ctx.hostnqn, 0x8000 + ctx.prng.int(0x7000)),
        );
        expectStatus(c, CMD_SPECIFIC, CIP, "I/O queue Connect to an unknown controller");
      } else if (variant === 3) {
        const c = await rc.command(
          (v) => {
            connectSqe(0, 31)(v);
            v.setUint16(NvmfConnectSqe.RECFMT, 1, true);
          },
          connectData(NQN, ctx.hostnqn, 0xffff),
        );
        expectStatus(c, CMD_SPECIFIC, NvmfFabricsSc.IncompatibleFormat, "RECFMT 1");
      } else {
        // Connect data shorter than 1024 bytes.
        const c = await rc.command(
          connectSqe(0, 31),
          connectData(bad, GOOD_HOSTNQN, 0xffff).subarray(0, 512),
        );
        expectStatus(c, GENERIC, NvmeGenericSc.DataSglLengthInvalid, "short Connect data");
      }
      return [rc];
    },
  },
  {
    name: "I/O before Connect",
    expect: "error-status",
    async run(ctx) {
      const rc = await open(ctx);
      await rc.ic({ hdgst: ctx.prng.bool(), ddgst: ctx.prng.bool() });
      const S = NvmeGenericSc.CommandSequenceError;
      const lba = FUZZ_LBA + ctx.prng.int(1000);
      const cmds: [string, (v: DataView, sqe: Uint8Array) => void, Uint8Array | null][] = [
        ["Read", rwSqe(NvmeIoOpcode.Read, lba, 8, 4096), null],
        [
          "in-capsule Write",
          rwSqe(NvmeIoOpcode.Write, lba, 1, 512, SGL_IN_CAPSULE),
          new Uint8Array(512),
        ],
        ["Write announced for R2T", rwSqe(NvmeIoOpcode.Write, lba, 8, 4096), null],
        ["Identify", (v, sqe) => {
          v.setUint8(0, NvmeAdminOpcode.Identify);
          v.setUint32(40, 1, true);
          v.setUint32(32, 4096, true);
          sqe[39] = SGL_TRANSPORT;
        }, null],
        ["Keep Alive", (v) => v.setUint8(0, NvmeAdminOpcode.KeepAlive), null],
        ["Property Get", (v) => {
          v.setUint8(0, NVME_FABRICS_OPCODE);
          v.setUint8(4, NvmfFabricsType.PropertyGet);
          v.setUint32(44, NvmeReg.CSTS, true);
        }, null],
      ];
      const start = ctx.prng.int(cmds.length);
      for (let i = 0; i < 3; i++) {
        const [what, fill, data] = cmds[(start + i) % cmds.length] as (typeof cmds)[number];
        expectStatus(await rc.command(fill, data), GENERIC, S, `${what} before Connect`);
      }
      if (rc.r2ts.length > 0) throw new Error(`${rc.r2ts.length} R2T(s) before Connect`);
      return [rc];
    },
  },
  {
    name: "more commands than the queue depth",
    expect: "termreq",
    async run(ctx) {
      const { io } = await controller(ctx);
      // Writes announced for R2T hold their slot until their data comes: it never does.
      const parts: Uint8Array[] = [];
      for (let i = 0; i < 129; i++) {
        parts.push(io.capsule(rwSqe(NvmeIoOpcode.Write, FUZZ_LBA + i * 8, 8, 4096)).bytes);
      }
      for (const p of parts) io.send(p);
      await io.untilClosed();
      if (io.termFes !== Fes.PduSequenceError) {
        throw new Error(`TermReq FES ${io.termFes}, expected PDU Sequence Error`);
      }
      if (io.r2ts.length > 128) throw new Error(`${io.r2ts.length} R2Ts for 128 slots`);
      return [io];
    },
  },
  {
    name: "byte-at-a-time dribble",
    expect: "termreq",
    async run(ctx) {
      const rc = await open(ctx);
      const ic = rc.icReq({ hdgst: ctx.prng.bool(), ddgst: ctx.prng.bool() });
      // Built with the digests the ICReq asks for (the ICResp arrives mid-dribble).
      const ka = rc.capsule((v) => v.setUint8(0, NvmeAdminOpcode.KeepAlive));
      const done = rc.expect(ka.cid);
      // Only the H2CData's header: the target rejects it there (unknown TTAG), and
      // bytes sent after it closed could reset the connection before the
      // C2HTermReq is read.
      const h2c = rc.h2cData(1, 99, 0, ctx.prng.bytes(ctx.prng.range(1, 64)), true)
        .subarray(0, 24 + (rc.tx.hdgst ? 4 : 0));
      for (const part of [ic, ka.bytes, h2c]) {
        for (let i = 0; i < part.length; i++) await rc.flush(part.subarray(i, i + 1));
      }
      expectStatus(await done, GENERIC, NvmeGenericSc.CommandSequenceError, "dribbled Keep Alive");
      await rc.untilClosed();
      if (rc.termFes !== Fes.InvalidHeaderField) {
        throw new Error(`TermReq FES ${rc.termFes}, expected Invalid Header Field`);
      }
      return [rc];
    },
  },
];

interface ClassStats {
  runs: number;
  closedByTarget: number;
  termReqs: number;
  errorStatuses: number;
  closedByUs: number;
  failures: number;
}

/** Runs one iteration; returns a failure message or null. */
async function runOne(
  i: number,
  reactor: Reactor,
  port: number,
  stats: Map<string, ClassStats>,
): Promise<string | null> {
  const cls = CLASSES[i % CLASSES.length] as FuzzClass;
  const seed = (SEED ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0;
  const ctx: Ctx = {
    reactor,
    port,
    prng: new Prng(seed),
    hostnqn: `nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-${
      i.toString(16).padStart(12, "0")
    }`,
    conns: [],
  };
  const st = stats.get(cls.name) ?? {
    runs: 0,
    closedByTarget: 0,
    termReqs: 0,
    errorStatuses: 0,
    closedByUs: 0,
    failures: 0,
  };
  stats.set(cls.name, st);
  st.runs++;
  let failure: string | null = null;
  try {
    const subjects = await cls.run(ctx);
    for (const rc of subjects) {
      if (cls.expect === "closed" || cls.expect === "termreq") {
        await guard(rc.whenClosed, "the target closing the connection");
        if (!rc.closedByTarget) throw new Error("the connection was not closed by the target");
        if (cls.expect === "termreq" && rc.termReqs !== 1) {
          throw new Error(`${rc.termReqs} C2HTermReqs, expected 1`);
        }
      } else if (cls.expect === "error-status") {
        // Answered, not dropped: the target kept the connection open.
        if (rc.closeReason !== null) throw new Error(`closed: ${rc.closeReason.message}`);
        if (rc.errorStatuses === 0) throw new Error("no error status");
      }
    }
    for (const rc of ctx.conns) {
      if (rc.parseError !== null) throw new Error(`the target sent garbage: ${rc.parseError}`);
    }
  } catch (e) {
    failure = `iteration ${i} (${cls.name}, seed 0x${seed.toString(16)}): ${
      e instanceof Error ? e.message : String(e)
    }`;
    st.failures++;
  } finally {
    // Counted before closing any: closing an admin queue makes the target close its I/O queues.
    for (const rc of ctx.conns) {
      if (rc.closedByTarget) st.closedByTarget++;
      else st.closedByUs++;
      if (rc.termReqs > 0) st.termReqs++;
      st.errorStatuses += rc.errorStatuses;
    }
    for (const rc of ctx.conns) {
      rc.close();
      await guard(rc.whenClosed, "connection close");
    }
  }
  return failure;
}

// ---------------------------------------------------------------------------
// The good host.

interface GoodStats {
  rounds: number;
  verified: number;
  mismatches: number;
  errors: string[];
}

/** Per slot transfer sizes: in-capsule, R2T, multi-chunk up to MDTS. */
const GOOD_SIZES = [512, 4096, 8192, 65536, 4096, 1024, 131072, 16384];

function runBatch(q: NvmeTcpQueue, n: number, submit: (slot: number) => void): Promise<number[]> {
  return new Promise((resolve) => {
    const statuses = new Array<number>(n).fill(-1);
    let left = n;
    q.onIoDone = (slot, status) => {
      statuses[slot] = status;
      if (--left === 0) resolve(statuses);
    };
    for (let s = 0; s < n; s++) submit(s);
  });
}

async function goodLoop(
  q: NvmeTcpQueue,
  qi: number,
  stop: () => boolean,
  st: GoodStats,
): Promise<void> {
  const n = GOOD_SIZES.length;
  const wbufs = GOOD_SIZES.map((b) => new Uint8Array(b));
  const rbufs = GOOD_SIZES.map((b) => new Uint8Array(b));
  const lba = (s: number) => qi * 8192 + s * 256;
  q.onClose = (why) => st.errors.push(`queue ${qi} closed: ${why}`);
  for (let round = 1; !stop() && st.errors.length === 0; round++) {
    for (let s = 0; s < n; s++) {
      const w = wbufs[s] as Uint8Array;
      for (let k = 0; k < w.length; k++) w[k] = (k * 13 + round * 7 + s * 31 + qi) & 0xff;
    }
    const ws = await runBatch(q, n, (s) => {
      const w = wbufs[s] as Uint8Array;
      q.submitIo(s, true, 1, lba(s), w.length / BLOCK_BYTES, w);
    });
    ws.forEach((st2, s) => {
      if (st2 !== 0) st.errors.push(`queue ${qi} write slot ${s}: status 0x${st2.toString(16)}`);
    });
    for (const r of rbufs) r.fill(0);
    const rs = await runBatch(q, n, (s) => {
      const r = rbufs[s] as Uint8Array;
      q.submitIo(s, false, 1, lba(s), r.length / BLOCK_BYTES, r);
    });
    for (let s = 0; s < n; s++) {
      if (rs[s] !== 0) {
        st.errors.push(`queue ${qi} read slot ${s}: status 0x${(rs[s] ?? -1).toString(16)}`);
        continue;
      }
      const r = rbufs[s] as Uint8Array;
      const w = wbufs[s] as Uint8Array;
      let same = true;
      for (let k = 0; k < r.length; k++) {
        if (r[k] !== w[k]) {
          same = false;
          break;
        }
      }
      if (same) st.verified++;
      else st.mismatches++;
    }
    st.rounds++;
  }
}

// ---------------------------------------------------------------------------

Deno.test("nvmf tcp fuzz: a live target under fire keeps serving a good host and leaks nothing", async () => {
  const unhandled: string[] = [];
  const onUnhandled = (e: PromiseRejectionEvent) => {
    unhandled.push(String(e.reason));
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);

  const reactor = new Reactor();
  let crash: unknown = null;
  const running = reactor.run().catch((e) => {
    crash = e;
  });
  const bdevs = new BdevRegistry();
  createMallocBdev(bdevs, { name: "M0", numBlocks: NUM_BLOCKS, blockSize: BLOCK_BYTES });
  const target = new NvmfTarget({ bdevs, thread: reactor });
  target.createTransport({});
  const log: string[] = [];
  const transport = new NvmfTcpTransport(target, reactor, (m) => log.push(m));
  const poolStart = transport.pool.available;
  target.createSubsystem({ nqn: NQN, allowAnyHost: true, serialNumber: "SLUICEFUZZ" });
  target.addNamespace(NQN, { bdevName: "M0" });
  const port = freePort();
  await target.addListener(NQN, {
    trtype: "TCP",
    adrfam: "IPv4",
    traddr: "127.0.0.1",
    trsvcid: String(port),
  });

  try {
    const good = await NvmeTcpController.connect(reactor, {
      host: "127.0.0.1",
      port,
      subnqn: NQN,
      hostnqn: GOOD_HOSTNQN,
      ioQueues: 2,
      depth: 16,
    });
    const goodQueues = 1 + good.ioQueues.length;
    assertEquals(transport.connectionCount, goodQueues);

    let fuzzing = true;
    const gst: GoodStats = { rounds: 0, verified: 0, mismatches: 0, errors: [] };
    const loops = good.ioQueues.map((q, qi) => goodLoop(q, qi, () => !fuzzing, gst));

    const stats = new Map<string, ClassStats>();
    const failures: string[] = [];
    let next = 0;
    const workers = Array.from({ length: CONCURRENCY }, async () => {
      while (next < ITERATIONS) {
        const f = await runOne(next++, reactor, port, stats);
        if (f !== null) failures.push(f);
        if (crash !== null) return;
      }
    });
    await Promise.all(workers);
    fuzzing = false;
    await Promise.all(loops);

    console.log(`\nfuzz: ${ITERATIONS} iterations, seed 0x${SEED.toString(16)}`);
    console.log(
      "class".padEnd(38) + "runs  closed-by-target  termreq  error-statuses  closed-by-us  failed",
    );
    for (const [name, s] of stats) {
      console.log(
        name.padEnd(38) + String(s.runs).padStart(4) + String(s.closedByTarget).padStart(18) +
          String(s.termReqs).padStart(9) + String(s.errorStatuses).padStart(16) +
          String(s.closedByUs).padStart(14) + String(s.failures).padStart(8),
      );
    }
    console.log(
      `good host: ${gst.rounds} rounds, ${gst.verified} verified reads, ` +
        `${gst.mismatches} mismatches, ${gst.errors.length} errors`,
    );
    console.log(
      `transport: ${transport.stats.connections} connections, ` +
        `${transport.stats.protocolErrors} protocol errors, ${transport.stats.digestErrors} ` +
        `digest errors, ${transport.stats.bufferWaits} buffer waits; ${log.length} log lines`,
    );

    // The target never crashed and nothing was left unhandled.
    assertEquals(crash, null);
    assert(reactor.running, "the reactor stopped");
    assertEquals(unhandled, []);
    // Every bad connection got what its class promises.
    assertEquals(failures, []);
    for (const cls of CLASSES) {
      assert((stats.get(cls.name)?.runs ?? 0) > 0, `${cls.name} never ran`);
    }
    // The good host saw no error and every read matched.
    assertEquals(gst.errors, []);
    assertEquals(gst.mismatches, 0);
    assert(gst.rounds >= good.ioQueues.length, `the good host did only ${gst.rounds} rounds`);
    assertEquals(gst.verified, gst.rounds * GOOD_SIZES.length);
    assert(good.admin.open && good.ioQueues.every((q) => q.open), "the good host was disconnected");

    // No leaked qpairs, controllers or chunks.
    await waitFor(
      () => transport.connectionCount === goodQueues,
      `connections back to ${goodQueues} (now ${transport.connectionCount})`,
    );
    assertEquals(transport.stats.connections - transport.stats.connectionsClosed, goodQueues);
    assertEquals(target.controllers().map((c) => c.hostnqn), [GOOD_HOSTNQN]);
    await waitFor(
      () => transport.pool.available === poolStart,
      `chunk pool back to ${poolStart} (now ${transport.pool.available})`,
    );
    assert(transport.stats.protocolErrors > 0, "the fuzzer never caused a protocol error");

    const goodClosed = [good.admin, ...good.ioQueues].map((q) =>
      new Promise<void>((r) => (q.onClose = () => r()))
    );
    await good.close();
    await guard(Promise.all(goodClosed), "the good host's connections closing");
  } finally {
    await transport.close();
    await target.shutdown();
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
    const inFlight = reactor.ioInFlight;
    await reactor.stop();
    await running;
    reactor.close();
    assertEquals(inFlight, 0, "reactor I/O in flight after teardown");
    assertEquals(transport.connectionCount, 0);
    assertEquals(transport.pool.available, poolStart);
  }
});

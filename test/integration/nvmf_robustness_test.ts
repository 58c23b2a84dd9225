/**
 * The NVMe/TCP target when hosts go quiet, crowd in, lose a namespace or
 * send corrupted data, each on a real target, transport and reactor in
 * this process over loopback TCP:
 *
 * - keep alive: a silent host is dropped after its KATO, a chatty one is not;
 * - several hosts from different host NQNs on two subsystems (two
 *   namespaces each) through two listeners, verified I/O at once, 128
 *   commands in flight on one queue;
 * - a namespace removed while a host has I/O queued: every I/O ends (none
 *   hangs), those that reach the target after the removal with Invalid
 *   Namespace, and the other namespace and host go on;
 * - a data digest error on in-capsule data or H2CData closes that
 *   connection and the write is not applied.
 *
 * Times appear only as a KATO the target is configured with, a keep-alive
 * interval, an injected bdev delay that keeps I/O in flight, and hang
 * guards; the assertions are on counts and states.
 */
import { assert, assertEquals, assertRejects } from "../../src/testing/assert.ts";
import { Reactor } from "../../src/reactor/mod.ts";
import { BdevRegistry } from "../../src/bdev/mod.ts";
import { createMallocBdev } from "../../src/bdev_modules/malloc/malloc.ts";
import {
  createErrorBdev,
  deleteErrorBdev,
  injectError,
} from "../../src/bdev_modules/error/error.ts";
import { NvmfTarget, type NvmfTransportOptions } from "../../src/nvmf_tcp/target.ts";
import { NvmfTcpTransport } from "../../src/nvmf_tcp/tcp_transport.ts";
import { NvmeCommandError, NvmeTcpController, NvmeTcpQueue } from "../../src/nvmf_tcp/host.ts";
import {
  NVME_CNTLID_DYNAMIC,
  NvmeGenericSc,
  NvmeIoOpcode,
  NvmeReg,
  statusSc,
  statusSct,
} from "../../src/nvme/mod.ts";
import { freePort } from "../../src/testing/net.ts";
import { guard, sleep, waitFor } from "../../src/testing/wait.ts";
import {
  connectData,
  connectSqe,
  propertySet,
  RawConn,
  SGL_IN_CAPSULE,
  SGL_TRANSPORT,
} from "../../src/testing/nvme_tcp_raw_host.ts";

const BLOCK_BYTES = 512;
/** Hang guard: turns a hang into a failure naming what was awaited. */
/** CC: EN, IOSQES 64 B, IOCQES 16 B. */
const CC_ENABLE = 1 | (6 << 16) | (4 << 20);

function hostNqn(name: string): string {
  return `nqn.2026-11.dev.sluice.host:${name}`;
}

// ---------------------------------------------------------------------------
// Waiting without hanging.

// ---------------------------------------------------------------------------
// A rig: target, transport and a running reactor; stop() tears down and
// checks nothing leaked.

interface Rig {
  reactor: Reactor;
  bdevs: BdevRegistry;
  target: NvmfTarget;
  transport: NvmfTcpTransport;
  /** Listens subsystem `nqn` on a fresh loopback port (or on `port`); returns it. */
  listen(nqn: string, port?: number): Promise<number>;
  stop(): Promise<void>;
}

function startRig(
  transportOptions: Partial<NvmfTransportOptions> = {},
  h2cTimeoutMs?: number,
  connectTimeoutMs?: number,
): Rig {
  const reactor = new Reactor();
  let crash: unknown = null;
  const running = reactor.run().catch((e) => {
    crash = e;
  });
  const bdevs = new BdevRegistry();
  const target = new NvmfTarget({ bdevs, thread: reactor });
  target.createTransport(transportOptions);
  const transport = new NvmfTcpTransport(target, reactor, () => {}, {
    h2cTimeoutMs,
    connectTimeoutMs,
  });
  const poolStart = transport.pool.available;
  return {
    reactor,
    bdevs,
    target,
    transport,
    async listen(nqn, port = freePort()) {
      await target.addListener(nqn, {
        trtype: "TCP",
        adrfam: "IPv4",
        traddr: "127.0.0.1",
        trsvcid: String(port),
      });
      return port;
    },
    async stop() {
      try {
        await transport.close();
        await target.shutdown();
      } finally {
        const inFlight = reactor.ioInFlight;
        await reactor.stop();
        await running;
        reactor.close();
        assertEquals(crash, null, "the reactor crashed");
        assertEquals(inFlight, 0, "reactor I/O in flight after teardown");
        assertEquals(transport.connectionCount, 0);
        assertEquals(transport.pool.available, poolStart, "chunks leaked");
      }
    },
  };
}

/** Submits `n` I/Os on `q` (slots 0..n-1) and resolves with their statuses, in slot order. */
function runBatch(q: NvmeTcpQueue, n: number, submit: (slot: number) => void): Promise<number[]> {
  return guard(
    new Promise((resolve) => {
      const statuses = new Array<number>(n).fill(-1);
      let left = n;
      q.onIoDone = (slot, status) => {
        statuses[slot] = status;
        if (--left === 0) resolve(statuses);
      };
      for (let s = 0; s < n; s++) submit(s);
    }),
    `${n} I/Os to complete`,
  );
}

function pattern(bytes: number, seed: number): Uint8Array {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 7 + seed * 13 + (i >> 9)) & 0xff;
  return b;
}

/** Writes then reads back `bufs[s]` at `lba(s)` on `nsid(s)`; returns how many matched. */
async function writeVerify(
  q: NvmeTcpQueue,
  bufs: Uint8Array[],
  lba: (s: number) => number,
  nsid: (s: number) => number,
): Promise<number> {
  const n = bufs.length;
  const ws = await runBatch(q, n, (s) => {
    const b = bufs[s] as Uint8Array;
    q.submitIo(s, true, nsid(s), lba(s), b.length / BLOCK_BYTES, b);
  });
  assertEquals(ws, new Array<number>(n).fill(0), "write statuses");
  const back = bufs.map((b) => new Uint8Array(b.length));
  const rs = await runBatch(q, n, (s) => {
    const b = back[s] as Uint8Array;
    q.submitIo(s, false, nsid(s), lba(s), b.length / BLOCK_BYTES, b);
  });
  assertEquals(rs, new Array<number>(n).fill(0), "read statuses");
  let same = 0;
  for (let s = 0; s < n; s++) {
    assertEquals(back[s], bufs[s], `slot ${s} read back`);
    same++;
  }
  return same;
}

/** Reads `bytes` at `lba` of `nsid` on slot 0. */
async function readBack(
  q: NvmeTcpQueue,
  nsid: number,
  lba: number,
  bytes: number,
): Promise<Uint8Array> {
  const b = new Uint8Array(bytes);
  const [st] = await runBatch(q, 1, () => q.submitIo(0, false, nsid, lba, bytes / BLOCK_BYTES, b));
  assertEquals(st, 0, `read of LBA ${lba}`);
  return b;
}

/** Resolves when the queue's connection ends (replaces its onClose). */
function closed(q: NvmeTcpQueue): Promise<string> {
  return new Promise((r) => (q.onClose = r));
}

// ---------------------------------------------------------------------------
// (a) Keep alive.

Deno.test("nvmf robustness: keep alive drops a silent host and keeps a chatty one", async () => {
  const rig = startRig({ kas: 10, minKato: 1000 });
  const NQN = "nqn.2026-11.dev.sluice:kato";
  createMallocBdev(rig.bdevs, { name: "M0", numBlocks: 4096, blockSize: BLOCK_BYTES });
  rig.target.createSubsystem({ nqn: NQN, allowAnyHost: true });
  rig.target.addNamespace(NQN, { bdevName: "M0" });
  try {
    const port = await rig.listen(NQN);
    const opts = { host: "127.0.0.1", port, subnqn: NQN, ioQueues: 1, katoMs: 1000 };
    const silent = await NvmeTcpController.connect(rig.reactor, {
      ...opts,
      hostnqn: hostNqn("silent"),
    });
    const chatty = await NvmeTcpController.connect(rig.reactor, {
      ...opts,
      hostnqn: hostNqn("chatty"),
    });
    const live = () => rig.target.controllers().map((c) => c.hostnqn).sort();
    assertEquals(live(), [hostNqn("chatty"), hostNqn("silent")]);
    assertEquals(rig.transport.connectionCount, 4);

    const silentClosed = Promise.all([
      closed(silent.admin),
      closed(silent.ioQueues[0] as NvmeTcpQueue),
    ]);
    let chattyDropped = 0;
    chatty.admin.onClose = () => chattyDropped++;
    (chatty.ioQueues[0] as NvmeTcpQueue).onClose = () => chattyDropped++;

    // The chatty host sends a Keep Alive every 300 ms (KATO/3) until told to stop.
    let keepAlives = 0;
    let keepAliveErrors = 0;
    let chatting = true;
    const chatter = (async () => {
      while (chatting) {
        try {
          await chatty.keepAlive();
          keepAlives++;
        } catch {
          keepAliveErrors++;
          return;
        }
        await sleep(300);
      }
    })();

    // Over one window: the silent host is dropped by the target...
    const reasons = await guard(silentClosed, "the silent host being dropped");
    assert(reasons.every((r) => r.length > 0), "close reasons");
    const atDrop = keepAlives;
    // ...and the chatty one, going on past one more KATO, is not.
    await waitFor(() => keepAlives >= atDrop + 5 || keepAliveErrors > 0, "5 more Keep Alives");
    chatting = false;
    await chatter;

    assertEquals(keepAliveErrors, 0);
    assert(atDrop >= 1, `the chatty host sent ${atDrop} Keep Alives before the drop`);
    assertEquals(chattyDropped, 0);
    assert(chatty.admin.open && chatty.ioQueues.every((q) => q.open), "chatty host dropped");
    assert(!silent.admin.open && !silent.ioQueues.some((q) => q.open), "silent host still open");
    // The silent host's controller is gone from the target, the chatty one's stays.
    assertEquals(live(), [hostNqn("chatty")]);
    await waitFor(() => rig.transport.connectionCount === 2, "the silent host's qpairs gone");
    // The chatty host still does I/O.
    const q = chatty.ioQueues[0] as NvmeTcpQueue;
    assertEquals(await writeVerify(q, [pattern(4096, 1)], () => 64, () => 1), 1);

    const chattyClosed = Promise.all([closed(chatty.admin), closed(q)]);
    await chatty.close();
    await guard(chattyClosed, "the chatty host closing");
  } finally {
    await rig.stop();
  }
});

// ---------------------------------------------------------------------------
// (b) Several hosts at once.

Deno.test("nvmf robustness: four hosts on two subsystems and two listeners, verified I/O at once, QD 128", async () => {
  // max_queue_depth 256: a host queue of 128 slots connects with SQSIZE 128 (129 entries).
  const rig = startRig({ maxQueueDepth: 256 });
  const S1 = "nqn.2026-11.dev.sluice:multi-1";
  const S2 = "nqn.2026-11.dev.sluice:multi-2";
  const NUM_BLOCKS = 32768;
  for (const name of ["M0", "M1", "M2", "M3"]) {
    createMallocBdev(rig.bdevs, { name, numBlocks: NUM_BLOCKS, blockSize: BLOCK_BYTES });
  }
  const hosts = [
    { name: "h1", sub: S1, port: 0, depth: 128 },
    { name: "h2", sub: S1, port: 1, depth: 32 },
    { name: "h3", sub: S2, port: 1, depth: 32 },
    { name: "h4", sub: S2, port: 1, depth: 64 },
  ];
  rig.target.createSubsystem({ nqn: S1, allowAnyHost: false });
  rig.target.createSubsystem({ nqn: S2, allowAnyHost: false });
  rig.target.addNamespace(S1, { bdevName: "M0" });
  rig.target.addNamespace(S1, { bdevName: "M1" });
  rig.target.addNamespace(S2, { bdevName: "M2" });
  rig.target.addNamespace(S2, { bdevName: "M3" });
  for (const h of hosts) rig.target.subsystem(h.sub).addHost(hostNqn(h.name));
  try {
    // Port A serves S1 only; port B serves both.
    const portA = await rig.listen(S1);
    const portB = await rig.listen(S1);
    await rig.listen(S2, portB);
    const ports = [portA, portB];

    // Who may connect where is enforced: S2 is not on port A, h1 is not allowed on S2.
    for (const [port, who] of [[portA, "h3"], [portB, "h1"]] as const) {
      await assertRejects(
        () =>
          NvmeTcpController.connect(rig.reactor, {
            host: "127.0.0.1",
            port,
            subnqn: S2,
            hostnqn: hostNqn(who),
          }),
        NvmeCommandError,
        "Connect",
      );
    }

    const ctrls = await Promise.all(hosts.map((h) =>
      NvmeTcpController.connect(rig.reactor, {
        host: "127.0.0.1",
        port: ports[h.port] as number,
        subnqn: h.sub,
        hostnqn: hostNqn(h.name),
        ioQueues: 2,
        depth: h.depth,
      })
    ));
    assertEquals(
      rig.target.controllers().map((c) => c.hostnqn).sort(),
      hosts.map((h) => hostNqn(h.name)).sort(),
    );
    for (const sub of [S1, S2]) assertEquals(rig.target.subsystem(sub).controllers.size, 2);
    assertEquals(rig.transport.connectionCount, 4 * 3);

    // Each host owns a region of both namespaces of its subsystem; every
    // queue fills its slots (128 on h1's first queue) with writes spread over
    // both namespaces and sizes from 512 B (in-capsule) to 64 KiB (R2T), then
    // reads everything back, three rounds, all hosts and queues at once.
    const sizes = [4096, 512, 16384, 65536, 8192, 1024];
    const ROUNDS = 3;
    let verified = 0;
    await Promise.all(ctrls.flatMap((c, hi) =>
      c.ioQueues.map(async (q, qi) => {
        const h = hosts[hi] as (typeof hosts)[number];
        // 4 MiB per queue of each namespace: slots s and s + 1 share an LBA on
        // NSIDs 1 and 2, 64 KiB (128 blocks) apart from the next pair.
        const region = ((hi % 2) * 2 + qi) * 8192;
        const slots = h.depth;
        const place = (s: number) => region + (s >> 1) * 128;
        for (let round = 1; round <= ROUNDS; round++) {
          const bufs = Array.from(
            { length: slots },
            (_, s) =>
              pattern(sizes[s % sizes.length] as number, round * 1000 + hi * 100 + qi * 10 + s),
          );
          // Not `verified += await ...`: that would read `verified` before the await.
          const n = await writeVerify(q, bufs, place, (s) => 1 + (s % 2));
          verified += n;
        }
      })
    ));
    const slotsTotal = hosts.reduce((n, h) => n + 2 * h.depth, 0);
    assertEquals(verified, ROUNDS * slotsTotal);

    // Hosts of one subsystem see each other's writes on its namespaces; the
    // other subsystem's namespaces (other bdevs) never saw them.
    const h1q = ctrls[0]?.ioQueues[0] as NvmeTcpQueue;
    const h2q = ctrls[1]?.ioQueues[0] as NvmeTcpQueue;
    const h3q = ctrls[2]?.ioQueues[0] as NvmeTcpQueue;
    const fromH1 = pattern(4096, ROUNDS * 1000); // h1's last write to LBA 0 of S1's NSID 1
    assertEquals(await readBack(h1q, 1, 0, 4096), fromH1);
    assertEquals(await readBack(h2q, 1, 0, 4096), fromH1);
    const s2 = await readBack(h3q, 1, 0, 4096);
    assertEquals(s2, pattern(4096, ROUNDS * 1000 + 200)); // h3's own, not h1's
    assert(s2.some((x, i) => x !== fromH1[i]), "S2 holds S1's data");

    const allClosed = ctrls.flatMap((c) => [c.admin, ...c.ioQueues].map(closed));
    await Promise.all(ctrls.map((c) => c.close()));
    await guard(Promise.all(allClosed), "every host closing");
    await waitFor(() => rig.target.controllers().length === 0, "controllers gone");
  } finally {
    await rig.stop();
  }
});

// ---------------------------------------------------------------------------
// (c) A namespace removed under I/O.

Deno.test("nvmf robustness: a namespace removed with I/O queued ends every I/O; the rest goes on", async () => {
  const rig = startRig();
  const NQN = "nqn.2026-11.dev.sluice:remove";
  createMallocBdev(rig.bdevs, { name: "M0", numBlocks: 8192, blockSize: BLOCK_BYTES });
  createMallocBdev(rig.bdevs, { name: "M1", numBlocks: 8192, blockSize: BLOCK_BYTES });
  // NSID 2 sits on an error bdev that can hold writes in flight.
  const ee = createErrorBdev(rig.bdevs, "M1");
  rig.target.createSubsystem({ nqn: NQN, allowAnyHost: true });
  rig.target.addNamespace(NQN, { bdevName: "M0", nsid: 1 });
  rig.target.addNamespace(NQN, { bdevName: ee, nsid: 2 });
  try {
    const port = await rig.listen(NQN);
    const opts = { host: "127.0.0.1", port, subnqn: NQN, ioQueues: 1, depth: 64 };
    const a = await NvmeTcpController.connect(rig.reactor, { ...opts, hostnqn: hostNqn("a") });
    const b = await NvmeTcpController.connect(rig.reactor, { ...opts, hostnqn: hostNqn("b") });
    const qa = a.ioQueues[0] as NvmeTcpQueue;
    const qb = b.ioQueues[0] as NvmeTcpQueue;
    const ns2 = rig.target.subsystem(NQN).nsById[2];
    assert(ns2 !== undefined);

    // Host B verifies I/O on NSID 1 for as long as the removal is under way.
    let removing = true;
    let bRounds = 0;
    const bLoop = (async () => {
      while (removing) {
        const bufs = [pattern(4096, bRounds), pattern(512, bRounds + 1)];
        await writeVerify(qb, bufs, (s) => 1000 + s * 8, () => 1);
        bRounds++;
      }
    })();

    // 8 writes to NSID 2 held in the bdev (the delay only keeps them in flight).
    // 1 s only keeps them in flight while the test looks; nothing measures it.
    injectError(rig.bdevs, ee, { ioType: "write", errorType: "delay", num: 8, delayUs: 1_000_000 });
    const N_HELD = 8;
    const N_QUEUED = 24;
    const statuses = new Array<number>(N_HELD + N_QUEUED).fill(-1);
    let left = N_HELD + N_QUEUED;
    const allDone = new Promise<void>((resolve) => {
      qa.onIoDone = (slot, status) => {
        statuses[slot] = status;
        if (--left === 0) resolve();
      };
    });
    const bufs = Array.from({ length: N_HELD + N_QUEUED }, (_, s) => pattern(4096, 50 + s));
    for (let s = 0; s < N_HELD; s++) qa.submitIo(s, true, 2, s * 8, 8, bufs[s] as Uint8Array);
    await waitFor(() => ns2.channel.inFlight === N_HELD, "8 writes in flight on NSID 2");

    // 24 more I/Os to NSID 2 (writes and reads) queued behind them, and in the
    // same turn, before the target has seen any of them, the namespace goes.
    for (let s = N_HELD; s < N_HELD + N_QUEUED; s++) {
      qa.submitIo(s, s % 2 === 0, 2, s * 8, 8, bufs[s] as Uint8Array);
    }
    const removed = rig.target.removeNamespace(NQN, 2);

    await guard(allDone, "every I/O to the removed namespace to end");
    // Those already in the bdev drain and succeed; the rest fail with Invalid Namespace.
    assertEquals(statuses.slice(0, N_HELD), new Array<number>(N_HELD).fill(0));
    for (const [i, st] of statuses.slice(N_HELD).entries()) {
      assertEquals(
        [statusSct(st), statusSc(st)],
        [0, NvmeGenericSc.InvalidNamespaceOrFormat],
        `queued I/O ${N_HELD + i}`,
      );
    }
    await guard(removed, "the namespace removal to finish");
    assertEquals(rig.target.subsystem(NQN).namespaceCount, 1);
    removing = false;
    await bLoop;
    assert(bRounds >= 1, "host B did no I/O during the removal");

    // Host A's queue is fine: NSID 1 works, NSID 2 answers Invalid Namespace at once.
    assertEquals(await writeVerify(qa, [pattern(8192, 7)], () => 2000, () => 1), 1);
    const [gone] = await runBatch(qa, 1, () => qa.submitIo(0, false, 2, 0, 1, new Uint8Array(512)));
    assertEquals(statusSc(gone ?? -1), NvmeGenericSc.InvalidNamespaceOrFormat);
    assert(qa.open && qb.open, "a host was disconnected");
    // The bdev was let go: it can be deleted now.
    await deleteErrorBdev(rig.bdevs, ee);

    const allClosed = [a, b].flatMap((c) => [c.admin, ...c.ioQueues].map(closed));
    await Promise.all([a.close(), b.close()]);
    await guard(Promise.all(allClosed), "hosts closing");
  } finally {
    await rig.stop();
  }
});

// ---------------------------------------------------------------------------
// (d) Data digest errors. A host that corrupts a digest needs a raw
// connection (src/testing/nvme_tcp_raw_host.ts).

/**
 * A controller brought up by hand with data digests on its I/O queues: the
 * admin queue and I/O queues 1..`ioQueues` of 128 entries.
 */
async function rawController(
  reactor: Reactor,
  port: number,
  subnqn: string,
  hostnqn: string,
  ioQueues = 1,
): Promise<{ admin: RawConn; io: RawConn; ios: RawConn[] }> {
  const admin = await RawConn.open(reactor, port);
  await admin.ic();
  const c = await admin.command(
    connectSqe(0, 31),
    connectData(subnqn, hostnqn, NVME_CNTLID_DYNAMIC),
  );
  assertEquals(c.status, 0, "admin Connect");
  const en = await admin.command(propertySet(NvmeReg.CC, CC_ENABLE));
  assertEquals(en.status, 0, "Property Set CC.EN");
  const ios: RawConn[] = [];
  for (let qid = 1; qid <= ioQueues; qid++) {
    const io = await RawConn.open(reactor, port);
    await io.ic({ hdgst: true, ddgst: true });
    const q = await io.command(connectSqe(qid, 127), connectData(subnqn, hostnqn, c.dw0 & 0xffff));
    assertEquals(q.status, 0, `I/O queue ${qid} Connect`);
    ios.push(io);
  }
  return { admin, io: ios[0] as RawConn, ios };
}

/** SQE of a Write of `nlb` blocks at `slba` on NSID 1, data by `sgl` of `bytes`. */
function writeSqe(slba: number, nlb: number, bytes: number, sgl: number) {
  return (v: DataView, sqe: Uint8Array) => {
    v.setUint8(0, NvmeIoOpcode.Write);
    v.setUint32(4, 1, true);
    v.setUint32(40, slba, true);
    v.setUint16(48, nlb - 1, true);
    v.setUint32(32, bytes, true);
    sqe[39] = sgl;
  };
}

Deno.test("nvmf robustness: a data digest error closes the connection and the write is not applied", async () => {
  const rig = startRig();
  const NQN = "nqn.2026-11.dev.sluice:ddgst";
  createMallocBdev(rig.bdevs, { name: "M0", numBlocks: 4096, blockSize: BLOCK_BYTES });
  rig.target.createSubsystem({ nqn: NQN, allowAnyHost: true });
  rig.target.addNamespace(NQN, { bdevName: "M0" });
  try {
    const port = await rig.listen(NQN);
    // The second host: writes the original data and reads it back at the end.
    const good = await NvmeTcpController.connect(rig.reactor, {
      host: "127.0.0.1",
      port,
      subnqn: NQN,
      hostnqn: hostNqn("good"),
      ddgst: true,
    });
    const gq = good.ioQueues[0] as NvmeTcpQueue;
    const IC_LBA = 100; // 1 block, in-capsule
    const R2T_LBA = 200; // 16 blocks, two H2CData PDUs
    const origIc = pattern(512, 1);
    const origR2t = pattern(8192, 2);
    const [w1, w2] = await runBatch(gq, 2, (s) => {
      if (s === 0) gq.submitIo(0, true, 1, IC_LBA, 1, origIc);
      else gq.submitIo(1, true, 1, R2T_LBA, 16, origR2t);
    });
    assertEquals([w1, w2], [0, 0]);
    const digestErrorsBefore = rig.transport.stats.digestErrors;

    // In-capsule write with a bad data digest: the connection goes, no response.
    const c1 = await rawController(rig.reactor, port, NQN, hostNqn("corrupt-1"));
    const icCmd = c1.io.capsule(
      writeSqe(IC_LBA, 1, 512, SGL_IN_CAPSULE),
      pattern(512, 99),
      true,
    );
    c1.io.send(icCmd.bytes);
    await guard(c1.io.whenClosed, "the target closing the in-capsule corrupter");
    assert(c1.io.closedByTarget, "closed by the target");
    assertEquals(c1.io.statuses.length, 1, "only the Connect was answered");
    assertEquals(rig.transport.stats.digestErrors, digestErrorsBefore + 1);

    // A write by R2T: the first H2CData PDU is fine, the last one's digest is bad.
    const c2 = await rawController(rig.reactor, port, NQN, hostNqn("corrupt-2"));
    const r2tCmd = c2.io.capsule(writeSqe(R2T_LBA, 16, 8192, SGL_TRANSPORT));
    const r2t = c2.io.nextR2T();
    c2.io.send(r2tCmd.bytes);
    const got = await r2t;
    assert(got !== null && got.cccid === r2tCmd.cid && got.r2tl === 8192, "R2T for the write");
    const bad = pattern(8192, 98);
    c2.io.send(c2.io.h2cData(got.cccid, got.ttag, 0, bad.subarray(0, 4096), false, false));
    c2.io.send(c2.io.h2cData(got.cccid, got.ttag, 4096, bad.subarray(4096), true, true));
    await guard(c2.io.whenClosed, "the target closing the H2CData corrupter");
    assert(c2.io.closedByTarget, "closed by the target");
    assertEquals(c2.io.statuses.length, 1, "only the Connect was answered");
    assertEquals(rig.transport.stats.digestErrors, digestErrorsBefore + 2);

    assertEquals([c1.io.parseError, c2.io.parseError], [null, null]);
    // The corrupters' admin queues were not touched; their controllers stay.
    assert(c1.admin.closeReason === null && c2.admin.closeReason === null, "admin queue closed");
    // Neither write was applied.
    assertEquals(await readBack(gq, 1, IC_LBA, 512), origIc);
    assertEquals(await readBack(gq, 1, R2T_LBA, 8192), origR2t);
    assert(good.admin.open && gq.open, "the good host was disconnected");

    for (const rc of [c1.admin, c2.admin]) {
      rc.close();
      await guard(rc.whenClosed, "admin close");
    }
    const goodClosed = Promise.all([closed(good.admin), closed(gq)]);
    await good.close();
    await guard(goodClosed, "the good host closing");
  } finally {
    await rig.stop();
  }
});

// ---------------------------------------------------------------------------
// One host must not be able to take every shared data chunk.

Deno.test({
  name: "nvmf robustness: a host that withholds H2C data cannot starve other hosts of buffers",
  // A write announced for R2T holds its chunks until its data comes. Each
  // connection may hold at most the transport's chunkQuota (an eighth of the
  // pool), and data an R2T asked for must come within h2cTimeoutMs, else
  // the connection is dropped and its chunks go back.
  async fn() {
    const rig = startRig({}, 1500);
    const NQN = "nqn.2026-11.dev.sluice:hoard";
    createMallocBdev(rig.bdevs, { name: "M0", numBlocks: 8192, blockSize: BLOCK_BYTES });
    rig.target.createSubsystem({ nqn: NQN, allowAnyHost: true });
    rig.target.addNamespace(NQN, { bdevName: "M0" });
    try {
      const port = await rig.listen(NQN);
      const good = await NvmeTcpController.connect(rig.reactor, {
        host: "127.0.0.1",
        port,
        subnqn: NQN,
        hostnqn: hostNqn("good"),
      });
      const gq = good.ioQueues[0] as NvmeTcpQueue;
      // Enough queues of 128 MDTS writes to cover the whole pool.
      const perQueue = 128 * (131072 / 4096);
      const queues = Math.ceil(rig.transport.pool.available / perQueue) + 1;
      const hoarder = await rawController(rig.reactor, port, NQN, hostNqn("hoarder"), queues);
      for (const io of hoarder.ios) {
        for (let i = 0; i < 128; i++) {
          io.send(io.capsule(writeSqe(0, 256, 131072, SGL_TRANSPORT)).bytes);
        }
      }
      // Each queue holds as many whole 32-chunk writes as its quota allows.
      const held = Math.floor(rig.transport.chunkQuota / 32) * 32;
      await waitFor(
        () => rig.transport.pool.available <= rig.transport.pool.chunks - queues * held,
        "the hoarder holding its quota on every queue",
      );
      assert(rig.transport.pool.available > 0, "the quota must leave chunks for others");
      // The good host must still be served: a 64 KiB write needs 16 chunks.
      const [st] = await runBatch(
        gq,
        1,
        () => gq.submitIo(0, true, 1, 1000, 128, pattern(65536, 5)),
      );
      assertEquals(st, 0);
      // The hoarder never sends the data: past the deadline its I/O queues are dropped.
      for (const io of hoarder.ios) {
        await guard(io.whenClosed, "the target dropping the hoarder's queue");
      }
      for (const rc of [hoarder.admin, ...hoarder.ios]) rc.close();
      await good.close();
    } finally {
      await rig.stop();
    }
  },
});

Deno.test("nvmf robustness: a connection that never completes Connect is dropped; a connected host stays", async () => {
  const rig = startRig({}, undefined, 1000);
  const NQN = "nqn.2026-11.dev.sluice:handshake";
  createMallocBdev(rig.bdevs, { name: "M0", numBlocks: 2048, blockSize: BLOCK_BYTES });
  rig.target.createSubsystem({ nqn: NQN, allowAnyHost: true });
  rig.target.addNamespace(NQN, { bdevName: "M0" });
  try {
    const port = await rig.listen(NQN);
    const good = await NvmeTcpController.connect(rig.reactor, {
      host: "127.0.0.1",
      port,
      subnqn: NQN,
      hostnqn: hostNqn("patient"),
    });
    let goodClosed = false;
    for (const q of [good.admin, ...good.ioQueues]) q.onClose = () => (goodClosed = true);
    // ICReq only, then silence: it holds command slots and must not keep them.
    const idle = await NvmeTcpQueue.connect(rig.reactor, { host: "127.0.0.1", port, depth: 4 });
    await guard(closed(idle), "the target dropping the connection that never sent Connect");
    assertEquals(goodClosed, false);
    assertEquals(rig.transport.connectionCount, 2);
    await good.close();
  } finally {
    await rig.stop();
  }
});

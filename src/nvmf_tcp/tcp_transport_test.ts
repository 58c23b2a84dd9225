/**
 * The TCP transport end to end in one process: the real target core and
 * transport, the NVMe/TCP host of host.ts, over loopback TCP on one reactor.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { startReactor } from "../testing/reactor_thread.ts";
import { BdevRegistry } from "../bdev/mod.ts";
import { createMallocBdev } from "../bdev_modules/malloc/malloc.ts";
import { NvmfTarget } from "./target.ts";
import { NvmfTcpTransport } from "./tcp_transport.ts";
import { NvmeCommandError, NvmeTcpController, NvmeTcpQueue } from "./host.ts";
import type { Reactor } from "../reactor/reactor.ts";
import { freePort } from "../testing/net.ts";

const NQN = "nqn.2026-11.dev.sluice:test";

interface Rig {
  reactor: Reactor;
  target: NvmfTarget;
  transport: NvmfTcpTransport;
  port: number;
  stop(): Promise<void>;
}

async function rig(opts: { allowAnyHost?: boolean } = {}): Promise<Rig> {
  const { thread: reactor, stop } = await startReactor();
  const bdevs = new BdevRegistry();
  createMallocBdev(bdevs, { name: "M0", numBlocks: 32768, blockSize: 512 });
  const target = new NvmfTarget({ bdevs, thread: reactor });
  target.createTransport({});
  const transport = new NvmfTcpTransport(target, reactor);
  target.createSubsystem({
    nqn: NQN,
    allowAnyHost: opts.allowAnyHost ?? true,
    serialNumber: "SLUICE0001",
  });
  target.addNamespace(NQN, { bdevName: "M0" });
  const port = freePort();
  await target.addListener(NQN, {
    trtype: "TCP",
    adrfam: "IPv4",
    traddr: "127.0.0.1",
    trsvcid: String(port),
  });
  return {
    reactor,
    target,
    transport,
    port,
    async stop() {
      await transport.close();
      await target.shutdown();
      await stop();
    },
  };
}

/** Writes `n` blocks of a pattern at `lba` on I/O queue 0 and reads them back. */
async function writeRead(
  c: NvmeTcpController,
  lba: number,
  bytes: number,
  seed: number,
): Promise<void> {
  const q = c.ioQueues[0] as NvmeTcpQueue;
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = (i * 7 + seed) & 0xff;
  const nlb = bytes / c.info.blockSize;
  const done = (slot: number) =>
    new Promise<number>((resolve) => {
      q.onIoDone = (s, status) => {
        if (s === slot) resolve(status);
      };
    });
  let p = done(0);
  q.submitIo(0, true, 1, lba, nlb, out);
  assertEquals(await p, 0, `write of ${bytes} bytes`);
  const back = new Uint8Array(bytes);
  p = done(1);
  q.submitIo(1, false, 1, lba, nlb, back);
  assertEquals(await p, 0, `read of ${bytes} bytes`);
  assertEquals(back, out);
}

for (const [hdgst, ddgst] of [[false, false], [true, true], [true, false]]) {
  Deno.test(`nvmf tcp: connect, identify, write and read back (hdgst=${hdgst} ddgst=${ddgst})`, async () => {
    const r = await rig();
    try {
      const c = await NvmeTcpController.connect(r.reactor, {
        host: "127.0.0.1",
        port: r.port,
        subnqn: NQN,
        hdgst,
        ddgst,
        ioQueues: 2,
      });
      assertEquals(c.info.blockSize, 512);
      assertEquals(c.info.numBlocks, 32768);
      assertEquals(c.info.subnqn, NQN);
      assertEquals(c.info.serialNumber, "SLUICE0001");
      await writeRead(c, 0, 512, 1); // in-capsule
      await writeRead(c, 100, 4096, 2); // in-capsule at the ICD limit
      await writeRead(c, 1000, 65536, 3); // R2T + H2CData
      await writeRead(c, 2000, 131072, 4); // MDTS-sized
      await c.close();
    } finally {
      await r.stop();
    }
  });
}

Deno.test("nvmf tcp: QD32 random writes then reads on two queues verify", async () => {
  const r = await rig();
  try {
    const c = await NvmeTcpController.connect(r.reactor, {
      host: "127.0.0.1",
      port: r.port,
      subnqn: NQN,
      ioQueues: 2,
      depth: 32,
    });
    for (const [qi, q] of c.ioQueues.entries()) {
      const bufs = Array.from({ length: 32 }, (_, i) => new Uint8Array(4096).fill(qi * 64 + i + 1));
      let left = 32;
      const all = new Promise<void>((resolve, reject) => {
        q.onIoDone = (_slot, status) => {
          if (status !== 0) reject(new Error(`status ${status}`));
          if (--left === 0) resolve();
        };
      });
      for (let i = 0; i < 32; i++) {
        q.submitIo(i, true, 1, (qi * 32 + i) * 8, 8, bufs[i] as Uint8Array);
      }
      await all;
      const back = Array.from({ length: 32 }, () => new Uint8Array(4096));
      left = 32;
      const reads = new Promise<void>((resolve, reject) => {
        q.onIoDone = (_slot, status) => {
          if (status !== 0) reject(new Error(`status ${status}`));
          if (--left === 0) resolve();
        };
      });
      for (let i = 0; i < 32; i++) {
        q.submitIo(i, false, 1, (qi * 32 + i) * 8, 8, back[i] as Uint8Array);
      }
      await reads;
      back.forEach((b, i) => assertEquals(b, bufs[i]));
    }
    await c.close();
  } finally {
    await r.stop();
  }
});

Deno.test("nvmf tcp: a host not allowed is refused at Connect; an unknown subsystem too", async () => {
  const r = await rig({ allowAnyHost: false });
  try {
    const e = await assertRejects(
      () => NvmeTcpController.connect(r.reactor, { host: "127.0.0.1", port: r.port, subnqn: NQN }),
      NvmeCommandError,
    );
    assert(e.message.includes("Connect"), e.message);
    await assertRejects(
      () =>
        NvmeTcpController.connect(r.reactor, {
          host: "127.0.0.1",
          port: r.port,
          subnqn: "nqn.2026-11.dev.sluice:nope",
        }),
      NvmeCommandError,
    );
  } finally {
    await r.stop();
  }
});

Deno.test("nvmf tcp: garbage on one connection gets it closed; a good host keeps working", async () => {
  const r = await rig();
  try {
    const good = await NvmeTcpController.connect(r.reactor, {
      host: "127.0.0.1",
      port: r.port,
      subnqn: NQN,
    });
    const bad = await NvmeTcpQueue.connect(r.reactor, {
      host: "127.0.0.1",
      port: r.port,
      depth: 4,
    });
    const closed = new Promise<string>((resolve) => (bad.onClose = resolve));
    // A CapsuleCmd header claiming a 1 GiB PDU.
    const junk = new Uint8Array(72);
    junk[0] = 0x04;
    junk[2] = 72;
    new DataView(junk.buffer).setUint32(4, 1 << 30, true);
    bad.sendRaw(junk);
    const why = await closed;
    assert(
      why.includes("C2HTermReq"),
      `expected the target to answer with a C2HTermReq, got: ${why}`,
    );
    await writeRead(good, 500, 4096, 9);
    await good.close();
  } finally {
    await r.stop();
  }
});

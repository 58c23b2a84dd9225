import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { startReactor } from "../testing/reactor_thread.ts";
import { BdevBusyError, BdevRegistry } from "../bdev/mod.ts";
import { createMallocBdev, deleteMallocBdev } from "../bdev_modules/malloc/malloc.ts";
import { createFileBdev, deleteFileBdev } from "../bdev_modules/file/file.ts";
import {
  commandSpecificStatus,
  genericStatus,
  getString,
  getU64,
  NVME_DISCOVERY_NQN,
  NvmeAdminOpcode,
  NvmeCns,
  NvmeFid,
  NvmeGenericSc,
  NvmeLid,
  NvmeReg,
  NvmfFabricsSc,
  statusDnr,
  uuidBytes,
  viewOf,
} from "../nvme/mod.ts";
import {
  type Completion,
  connect,
  connectAndEnable,
  FakeQpair,
  getFeatures,
  getLogPage,
  identify,
  propertyGet,
  propertySet,
  readWrite,
  setFeatures,
} from "./fake_host.ts";
import { NvmfError, NvmfTarget } from "./target.ts";

const NQN = "nqn.2016-06.io.spdk:cnode1";
const NQN2 = "nqn.2016-06.io.spdk:cnode2";
const HOST = "nqn.2014-08.org.nvmexpress:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8";
const OTHER_HOST = "nqn.2014-08.org.nvmexpress:uuid:00000000-1111-2222-3333-444444444444";
const UUID = "11112222-3333-4444-5555-666677778888";
const LISTEN = { trtype: "TCP", adrfam: "IPv4", traddr: "127.0.0.1", trsvcid: "4420" } as const;

const ok = 0;
const invalidField = genericStatus(NvmeGenericSc.InvalidField);
const invalidNs = genericStatus(NvmeGenericSc.InvalidNamespaceOrFormat);
const invalidOpcode = genericStatus(NvmeGenericSc.InvalidOpcode);

interface Env {
  target: NvmfTarget;
  registry: BdevRegistry;
}

/** Runs `fn` with a target on the real reactor whose subsystem NQN exports Malloc0 as NSID 1. */
async function withTarget(
  fn: (e: Env) => Promise<void>,
  o: { kas?: number; minKato?: number; allowAnyHost?: boolean } = {},
): Promise<void> {
  const { thread, stop } = await startReactor();
  const registry = new BdevRegistry();
  createMallocBdev(registry, { name: "Malloc0", numBlocks: 2048, blockSize: 512, uuid: UUID });
  const target = new NvmfTarget({ bdevs: registry, thread, firmwareRevision: "0.1.0" });
  try {
    target.createTransport({ kas: o.kas ?? 10, minKato: o.minKato ?? 1000 });
    const sub = target.createSubsystem({
      nqn: NQN,
      serialNumber: "SLC0001",
      modelNumber: "sluice test",
      allowAnyHost: o.allowAnyHost ?? false,
    });
    sub.addHost(HOST);
    await target.addListener(NQN, LISTEN);
    target.addNamespace(NQN, { bdevName: "Malloc0" });
    await fn({ target, registry });
  } finally {
    await target.shutdown();
    for (const b of registry.list()) await deleteMallocBdev(registry, b.name);
    await stop();
  }
}

/** An admin queue and one I/O queue of an enabled controller. */
async function hostWithIoQueue(target: NvmfTarget): Promise<{ admin: FakeQpair; io: FakeQpair }> {
  const admin = new FakeQpair();
  const cntlid = await connectAndEnable(target, admin, NQN, HOST);
  const io = new FakeQpair();
  const c = await connect(target, io, { subnqn: NQN, hostnqn: HOST, qid: 1, cntlid, sqsize: 127 });
  assertEquals(c.status, ok, "I/O queue connect");
  return { admin, io };
}

function pattern(bytes: number, seed: number): Uint8Array {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 7 + seed * 13 + 1) & 0xff;
  return b;
}

Deno.test("connect: admin queue gets a dynamic CNTLID; properties enable the controller; I/O queue joins", async () => {
  await withTarget(async ({ target }) => {
    const admin = new FakeQpair();
    // Commands before Connect are a sequence error.
    const early = await identify(target, admin, NvmeCns.Controller);
    assertEquals(early.status, genericStatus(NvmeGenericSc.CommandSequenceError));

    const c = await connect(target, admin, { subnqn: NQN, hostnqn: HOST, katoMs: 5000 });
    assertEquals(c.status, ok);
    const cntlid = c.dw0 & 0xffff;
    assert(cntlid >= 1 && cntlid <= 0xffef, `cntlid ${cntlid}`);
    assertEquals(c.dw0 >> 16, 0, "no authentication requested");
    assertEquals([admin.qid, admin.sqSize, c.sqid, c.sqhd], [0, 32, 0, 1]);

    const cap = await propertyGet(target, admin, NvmeReg.CAP, 8);
    assertEquals(cap.status, ok);
    assertEquals(cap.dw0 & 0xffff, 127, "MQES = max_queue_depth - 1");
    assertEquals((cap.dw0 >> 16) & 1, 1, "CQR");
    assertEquals(cap.dw0 >>> 24, 15, "TO");
    assertEquals((cap.dw1 >> 5) & 0xff, 1, "CSS: NVM command set only");
    assertEquals((cap.dw1 >> 16) & 0xf, 0, "MPSMIN 4 KiB");
    assertEquals((await propertyGet(target, admin, NvmeReg.CAP, 4)).status, invalidField);
    assertEquals((await propertyGet(target, admin, NvmeReg.VS)).dw0, 0x00020000);
    assertEquals((await propertyGet(target, admin, NvmeReg.CSTS)).dw0, 0);

    // Admin commands wait for CC.EN.
    assertEquals(
      (await identify(target, admin, NvmeCns.Controller)).status,
      genericStatus(NvmeGenericSc.CommandSequenceError),
    );
    // Wrong queue entry sizes: Controller Fatal Status.
    await propertySet(target, admin, NvmeReg.CC, 0x00440001);
    assertEquals((await propertyGet(target, admin, NvmeReg.CSTS)).dw0, 2, "CFS");
    await propertySet(target, admin, NvmeReg.CC, 0);
    await propertySet(target, admin, NvmeReg.CC, 0x00460000);
    assertEquals((await propertySet(target, admin, NvmeReg.CC, 0x00460001)).status, ok);
    assertEquals((await propertyGet(target, admin, NvmeReg.CC)).dw0, 0x00460001);
    assertEquals((await propertyGet(target, admin, NvmeReg.CSTS)).dw0 & 1, 1, "RDY");
    assertEquals((await propertySet(target, admin, NvmeReg.VS, 1)).status, invalidField);

    // Number of Queues: asks 4, gets 4; a 5th I/O queue is refused with IPO = QID.
    const nq = await setFeatures(target, admin, NvmeFid.NumberOfQueues, 0x00030003);
    assertEquals([nq.status, nq.dw0], [ok, 0x00030003]);
    const io1 = new FakeQpair();
    const j = await connect(target, io1, { subnqn: NQN, hostnqn: HOST, qid: 1, cntlid });
    assertEquals([j.status, j.dw0, io1.qid, j.sqid], [ok, cntlid, 1, 1]);
    const io5 = await connect(target, new FakeQpair(), {
      subnqn: NQN,
      hostnqn: HOST,
      qid: 5,
      cntlid,
    });
    assertEquals(io5.status, commandSpecificStatus(NvmfFabricsSc.ConnectInvalidParameters));
    assertEquals(io5.dw0, 42, "IATTR 0 (SQE), IPO 42: QID");
    const dup = await connect(target, new FakeQpair(), {
      subnqn: NQN,
      hostnqn: HOST,
      qid: 1,
      cntlid,
    });
    assertEquals(dup.dw0, 42, "QID 1 is taken");
    const badCntlid = await connect(target, new FakeQpair(), {
      subnqn: NQN,
      hostnqn: HOST,
      qid: 2,
      cntlid: cntlid + 100,
    });
    assertEquals(badCntlid.dw0, 0x10010, "IATTR 1 (data), IPO 16: CNTLID");
    // Too late to change the queue count.
    assertEquals(
      (await setFeatures(target, admin, NvmeFid.NumberOfQueues, 0)).status,
      genericStatus(NvmeGenericSc.CommandSequenceError),
    );

    // Shutdown notification completes at once.
    await propertySet(target, admin, NvmeReg.CC, 0x00464001);
    assertEquals((await propertyGet(target, admin, NvmeReg.CSTS)).dw0, 0b1001, "SHST complete");
    // Reset: the I/O queue is disconnected, the admin queue stays.
    await propertySet(target, admin, NvmeReg.CC, 0);
    assert(io1.disconnectReason?.includes("reset"), String(io1.disconnectReason));
    assertEquals(admin.disconnectReason, null);
    assertEquals((await propertyGet(target, admin, NvmeReg.CSTS)).dw0, 0);
  });
});

Deno.test("connect: unknown subsystem, host not allowed, wrong listener, bad fields", async () => {
  await withTarget(async ({ target }) => {
    const unknown = await connect(target, new FakeQpair(), {
      subnqn: "nqn.2016-06.io.spdk:nope",
      hostnqn: HOST,
    });
    assertEquals(unknown.status, commandSpecificStatus(NvmfFabricsSc.ConnectInvalidParameters));
    assert(statusDnr(unknown.status));
    assertEquals(unknown.dw0, 0x10100, "IATTR 1, IPO 256: SUBNQN in the data");

    const denied = await connect(target, new FakeQpair(), { subnqn: NQN, hostnqn: OTHER_HOST });
    assertEquals(denied.status, commandSpecificStatus(NvmfFabricsSc.ConnectInvalidHost));
    assertEquals(denied.status, 0x4184, "SCT 1, SC 84h, DNR");

    const elsewhere = await connect(target, new FakeQpair("127.0.0.1", "4421"), {
      subnqn: NQN,
      hostnqn: HOST,
    });
    assertEquals(elsewhere.status, commandSpecificStatus(NvmfFabricsSc.ConnectInvalidHost));

    const zeroSq = await connect(target, new FakeQpair(), {
      subnqn: NQN,
      hostnqn: HOST,
      sqsize: 0,
    });
    assertEquals(zeroSq.dw0, 44, "IPO 44: SQSIZE");
    const bigSq = await connect(target, new FakeQpair(), {
      subnqn: NQN,
      hostnqn: HOST,
      sqsize: 128,
    });
    assertEquals(bigSq.dw0, 44, "admin queue larger than max_aq_depth");
    const staticCtrl = await connect(target, new FakeQpair(), {
      subnqn: NQN,
      hostnqn: HOST,
      cntlid: 1,
    });
    assertEquals(staticCtrl.dw0, 0x10010, "only the dynamic model");
    // The host list decides; adding the host lets it in.
    target.subsystem(NQN).addHost(OTHER_HOST);
    assertEquals(
      (await connect(target, new FakeQpair(), { subnqn: NQN, hostnqn: OTHER_HOST })).status,
      ok,
    );
  });
});

Deno.test("identify: controller and namespace fields a Linux host reads", async () => {
  await withTarget(async ({ target }) => {
    const admin = new FakeQpair();
    const cntlid = await connectAndEnable(target, admin, NQN, HOST);
    const c = await identify(target, admin, NvmeCns.Controller);
    assertEquals(c.status, ok);
    const b = c.data, v = viewOf(b);
    assertEquals(getString(b, 4, 20), "SLC0001");
    assertEquals(getString(b, 24, 40), "sluice test");
    assertEquals(getString(b, 64, 8), "0.1.0");
    assertEquals(b[76], 0x03, "CMIC: multi-port, multi-controller");
    assertEquals(b[77], 5, "MDTS: 128 KiB in 4 KiB pages");
    assertEquals(v.getUint16(78, true), cntlid, "CNTLID matches Connect");
    assertEquals(v.getUint32(80, true), 0x00020000);
    assertEquals(v.getUint32(92, true), 1 << 8, "OAES: namespace attribute notices");
    assertEquals(v.getUint32(96, true), 0x41, "CTRATT: 128-bit host ID, traffic based keep alive");
    assertEquals(b[111], 1, "CNTRLTYPE: I/O controller");
    assertEquals([b[258], b[259]], [3, 3], "ACL, AERL");
    assertEquals(b[261], 0x07, "LPA");
    assertEquals(v.getUint16(320, true), 10, "KAS: 1 s");
    assertEquals([b[512], b[513]], [0x66, 0x44]);
    assertEquals(v.getUint16(514, true), 128, "MAXCMD");
    assertEquals(v.getUint32(516, true), 32, "NN");
    assertEquals(v.getUint16(520, true), 0x0c, "ONCS: DSM, Write Zeroes");
    assertEquals(b[525], 0x05, "VWC present, no flush broadcast");
    assertEquals(v.getUint32(536, true), (1 << 20) | 1, "SGLS");
    assertEquals(getString(b, 768, 256), NQN);
    assertEquals(v.getUint32(1792, true), 260, "IOCCSZ: SQE + 4 KiB in-capsule data");
    assertEquals(v.getUint32(1796, true), 1, "IORCSZ");
    assertEquals(v.getUint16(1800, true), 0, "ICDOFF");
    assertEquals(b[1803], 1, "MSDBD");

    const ns = await identify(target, admin, NvmeCns.Namespace, 1);
    const n = ns.data, nv = viewOf(n);
    assertEquals([getU64(nv, 0), getU64(nv, 8), getU64(nv, 16)], [2048, 2048, 2048]);
    assertEquals([n[25], n[26], n[30]], [0, 0, 1], "one LBA format, in use; shared");
    assertEquals(n[33], 0x09, "DLFEAT: deallocated reads zeroes, Write Zeroes DEAC");
    assertEquals(n[130], 9, "LBADS: 512-byte blocks");
    assertEquals(n.subarray(104, 120), uuidBytes(UUID), "NGUID from the bdev UUID");
    assertEquals(n[99], 0, "not write protected");
    // An inactive NSID gives zeroes; NSID 0 and FFFFFFFFh are invalid.
    const inactive = await identify(target, admin, NvmeCns.Namespace, 2);
    assertEquals([inactive.status, inactive.data.every((x) => x === 0)], [ok, true]);
    assertEquals((await identify(target, admin, NvmeCns.Namespace, 0xffffffff)).status, invalidNs);
    assertEquals((await identify(target, admin, NvmeCns.Namespace, 33)).status, invalidNs);

    const list = await identify(target, admin, NvmeCns.ActiveNamespaceList, 0);
    assertEquals([viewOf(list.data).getUint32(0, true), viewOf(list.data).getUint32(4, true)], [
      1,
      0,
    ]);
    const desc = await identify(target, admin, NvmeCns.NamespaceIdDescriptorList, 1);
    const d = desc.data;
    assertEquals([d[0], d[1]], [2, 16], "NGUID descriptor");
    assertEquals([d[20], d[21]], [3, 16], "UUID descriptor");
    assertEquals(d.subarray(24, 40), uuidBytes(UUID));
    assertEquals([d[40], d[41], d[44]], [4, 1, 0], "CSI descriptor: NVM");
    assertEquals(
      (await identify(target, admin, NvmeCns.NamespaceIdDescriptorList, 7)).status,
      invalidNs,
    );

    const nvmCtrl = await identify(target, admin, NvmeCns.IoCsController, 0, 0);
    assertEquals(nvmCtrl.status, ok, "CNS 06h CSI 00h: the NVM command set structure");
    assertEquals(nvmCtrl.data.every((x) => x === 0), true, "no limits reported");
    assertEquals(
      (await identify(target, admin, NvmeCns.IoCsController, 0, 2)).status,
      invalidField,
    );
    assertEquals((await identify(target, admin, NvmeCns.IoCsNamespace, 1, 0)).status, ok);
    assertEquals((await identify(target, admin, NvmeCns.IoCsNamespace, 1, 2)).status, invalidField);
    assertEquals((await identify(target, admin, NvmeCns.IoCommandSet)).status, invalidField);
    const indep = await identify(target, admin, NvmeCns.IoCsIndependentNamespace, 1);
    assertEquals([indep.data[1], indep.data[14]], [1, 1], "NMIC shared, NSTAT ready");

    // A short buffer is refused; a longer one is zero-padded (no stale bytes leave).
    const short = await admin.submit(target, (v) => {
      v.setUint8(0, NvmeAdminOpcode.Identify);
      v.setUint32(40, NvmeCns.Controller, true);
    }, 1024);
    assertEquals(short.status, genericStatus(NvmeGenericSc.DataSglLengthInvalid));
    const long = await admin.submit(target, (v) => {
      v.setUint8(0, NvmeAdminOpcode.Identify);
      v.setUint32(40, NvmeCns.Controller, true);
    }, 8192);
    assertEquals(long.status, ok);
    assertEquals(long.data.subarray(4096).every((x) => x === 0), true);
  });
});

Deno.test("I/O: write then read back, out of range, length mismatch, bad NSID, unknown opcodes", async () => {
  await withTarget(async ({ target }) => {
    const { admin, io } = await hostWithIoQueue(target);
    const data = pattern(8 * 512, 1);
    const w = await readWrite(target, io, true, 1, 100, 8, data, { iovSplit: 1000 });
    assertEquals([w.status, w.sqid], [ok, 1]);
    const back = new Uint8Array(8 * 512);
    const r = await readWrite(target, io, false, 1, 100, 8, back, { iovSplit: 3000 });
    assertEquals(r.status, ok);
    assertEquals(back, data);

    const far = await readWrite(target, io, false, 1, 2045, 8, new Uint8Array(4096));
    assertEquals(far.status, genericStatus(NvmeGenericSc.LbaOutOfRange));
    const huge = await readWrite(target, io, false, 1, 2 ** 60, 1, new Uint8Array(512));
    assertEquals(huge.status, genericStatus(NvmeGenericSc.LbaOutOfRange));
    const mismatch = await readWrite(target, io, true, 1, 0, 8, new Uint8Array(512));
    assertEquals(mismatch.status, genericStatus(NvmeGenericSc.DataSglLengthInvalid));
    const badNs = await readWrite(target, io, false, 2, 0, 1, new Uint8Array(512));
    assertEquals(badNs.status, invalidNs);

    const compare = await io.submit(target, (v) => {
      v.setUint8(0, 0x05);
      v.setUint32(4, 1, true);
    });
    assertEquals(compare.status, invalidOpcode, "Compare is not supported");
    const format = await admin.submit(target, (v) => v.setUint8(0, NvmeAdminOpcode.FormatNvm));
    assertEquals(format.status, invalidOpcode);
    const fabricsOnIo = await propertyGet(target, io, NvmeReg.CAP, 8);
    assertEquals(fabricsOnIo.status, invalidOpcode, "Property Get only on the admin queue");

    const flush = await io.submit(target, (v) => v.setUint32(4, 1, true));
    assertEquals(flush.status, ok);
    const flushAll = await io.submit(target, (v) => v.setUint32(4, 0xffffffff, true));
    assertEquals(flushAll.status, invalidNs, "VWC says Flush of every namespace is not supported");

    const abort = await admin.submit(target, (v) => {
      v.setUint8(0, NvmeAdminOpcode.Abort);
      v.setUint32(40, 1 | 5 << 16, true);
    });
    assertEquals([abort.status, abort.dw0 & 1], [ok, 1], "not aborted");

    // Write Zeroes, plain and deallocating.
    const wz = await io.submit(target, (v) => {
      v.setUint8(0, 0x08);
      v.setUint32(4, 1, true);
      v.setUint32(40, 100, true);
      v.setUint32(48, 3 | 1 << 25, true);
    });
    assertEquals(wz.status, ok);
    const after = new Uint8Array(8 * 512);
    await readWrite(target, io, false, 1, 100, 8, after);
    assertEquals(after.subarray(0, 2048).every((x) => x === 0), true);
    assertEquals(after.subarray(2048), data.subarray(2048));

    // Failed commands are in the Error Information log, newest first, and counted in SMART.
    const errors = await getLogPage(target, admin, NvmeLid.ErrorInformation, 64 * 16);
    const ev = viewOf(errors.data);
    assert(getU64(ev, 0) >= 6, "error count");
    assertEquals(ev.getUint16(12, true) >> 1, invalidNs, "newest: the Flush of every namespace");
    assertEquals(ev.getUint16(8, true), 1, "on SQ 1");
    const smart = await getLogPage(target, admin, NvmeLid.SmartHealth, 512);
    const sv = viewOf(smart.data);
    assertEquals(getU64(sv, 48), 1, "data units written (4 KiB rounds up to one)");
    assertEquals(getU64(sv, 80), 1, "host write commands");
    assertEquals(getU64(sv, 176), getU64(ev, 0), "error log entries");
  });
});

Deno.test("Dataset Management deallocate: the ranges read back as zeroes, the rest is kept", async () => {
  await withTarget(async ({ target }) => {
    const { io } = await hostWithIoQueue(target);
    const data = pattern(64 * 512, 3);
    assertEquals((await readWrite(target, io, true, 1, 0, 64, data)).status, ok);
    const ranges = new Uint8Array(3 * 16);
    const rv = viewOf(ranges);
    rv.setUint32(4, 8, true); // range 0: 8 blocks at LBA 4
    rv.setUint32(8, 4, true);
    rv.setUint32(16 + 4, 0, true); // range 1: empty
    rv.setUint32(32 + 4, 2, true); // range 2: 2 blocks at LBA 40
    rv.setUint32(32 + 8, 40, true);
    const dsm = await io.submit(
      target,
      (v) => {
        v.setUint8(0, 0x09);
        v.setUint32(4, 1, true);
        v.setUint32(40, 2, true); // NR: 3 ranges
        v.setUint32(44, 1 << 2, true); // AD
      },
      ranges,
      20,
    );
    assertEquals(dsm.status, ok);
    const back = new Uint8Array(64 * 512);
    await readWrite(target, io, false, 1, 0, 64, back);
    const zero = (from: number, n: number) =>
      back.subarray(from * 512, (from + n) * 512).every((x) => x === 0);
    assert(zero(4, 8) && zero(40, 2), "deallocated ranges read zeroes");
    assertEquals(back.subarray(0, 4 * 512), data.subarray(0, 4 * 512));
    assertEquals(back.subarray(12 * 512, 40 * 512), data.subarray(12 * 512, 40 * 512));
    assertEquals(back.subarray(42 * 512), data.subarray(42 * 512));

    rv.setUint32(8, 2047, true); // range 0 now runs past the end
    const bad = await io.submit(target, (v) => {
      v.setUint8(0, 0x09);
      v.setUint32(4, 1, true);
      v.setUint32(40, 0, true);
      v.setUint32(44, 1 << 2, true);
    }, ranges.slice(0, 16));
    assertEquals(bad.status, genericStatus(NvmeGenericSc.LbaOutOfRange));
  });
});

Deno.test("read-only namespace: writes get Namespace is Write Protected", async () => {
  await withTarget(async ({ target, registry }) => {
    createMallocBdev(registry, { name: "Ro", numBlocks: 64, blockSize: 4096 });
    const nsid = target.addNamespace(NQN, { bdevName: "Ro", readOnly: true });
    assertEquals(nsid, 2);
    const { admin, io } = await hostWithIoQueue(target);
    const w = await readWrite(target, io, true, nsid, 0, 1, new Uint8Array(4096));
    assertEquals(w.status, genericStatus(NvmeGenericSc.NamespaceWriteProtected));
    assertEquals((await readWrite(target, io, false, nsid, 0, 1, new Uint8Array(4096))).status, ok);
    const ns = await identify(target, admin, NvmeCns.Namespace, nsid);
    assertEquals([ns.data[99], ns.data[130]], [1, 12], "NSATTR write protected, 4 KiB blocks");
  });
});

Deno.test("durability: FUA writes, and writes with the cache turned off, flush a caching bdev", async () => {
  await withTarget(async ({ target, registry }) => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/ns.img`;
    await Deno.writeFile(path, new Uint8Array(1 << 20));
    createFileBdev(registry, { name: "File0", filename: path, direct: false });
    try {
      const nsid = target.addNamespace(NQN, { bdevName: "File0" });
      const ns = target.subsystem(NQN).nsById[nsid];
      assert(ns !== undefined && ns.bdev.writeCache);
      const { admin, io } = await hostWithIoQueue(target);
      const data = pattern(4096, 9);
      assertEquals((await readWrite(target, io, true, nsid, 8, 8, data)).status, ok);
      assertEquals(ns.channel.stats.flushOps, 0, "a plain write is not flushed");
      assertEquals((await readWrite(target, io, true, nsid, 8, 8, data, { fua: true })).status, ok);
      assertEquals(ns.channel.stats.flushOps, 1, "FUA: write then flush");
      await setFeatures(target, admin, NvmeFid.VolatileWriteCache, 0);
      assertEquals((await readWrite(target, io, true, nsid, 16, 8, data)).status, ok);
      assertEquals(ns.channel.stats.flushOps, 2, "cache off: every write is flushed");
      // The qpair reuses its request objects: no step state leaks into the next command.
      const back = new Uint8Array(4096);
      assertEquals((await readWrite(target, io, false, nsid, 16, 8, back)).status, ok);
      assertEquals(back, data);
      assertEquals(ns.channel.stats.flushOps, 2);
      await target.removeNamespace(NQN, nsid);
    } finally {
      await deleteFileBdev(registry, "File0");
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("namespaces: claimed while exported, AER on add and remove, changed namespace list", async () => {
  await withTarget(async ({ target, registry }) => {
    const { admin, io } = await hostWithIoQueue(target);
    // The exported bdev cannot be deleted or claimed underneath.
    const busy = await deleteMallocBdev(registry, "Malloc0").then(() => null, (e) => e);
    assert(busy instanceof BdevBusyError, String(busy));

    assertEquals(
      (await setFeatures(target, admin, NvmeFid.AsyncEventConfiguration, 0x1ff)).status,
      ok,
    );
    assertEquals((await getFeatures(target, admin, NvmeFid.AsyncEventConfiguration)).dw0, 0x1ff);
    const aers: Promise<Completion>[] = [];
    for (let i = 0; i < 4; i++) {
      aers.push(admin.submit(target, (v) => v.setUint8(0, NvmeAdminOpcode.AsyncEventRequest)));
    }
    const fifth = await admin.submit(
      target,
      (v) => v.setUint8(0, NvmeAdminOpcode.AsyncEventRequest),
    );
    assertEquals(fifth.status, commandSpecificStatus(0x05), "AER Limit Exceeded");
    assertEquals(admin.outstanding, 4);

    createMallocBdev(registry, { name: "Malloc1", numBlocks: 128, blockSize: 512 });
    assertEquals(target.addNamespace(NQN, { bdevName: "Malloc1", nsid: 5 }), 5);
    const first = await aers[0] as Completion;
    assertEquals(
      [first.status, first.dw0],
      [ok, 0x040002],
      "notice, NS attribute changed, LID 04h",
    );
    // Further changes wait until the host reads the log (they are recorded meanwhile).
    await target.removeNamespace(NQN, 5);
    assertEquals(admin.outstanding, 3);
    const log = await getLogPage(target, admin, NvmeLid.ChangedNamespaceList, 4096);
    const lv = viewOf(log.data);
    assertEquals([lv.getUint32(0, true), lv.getUint32(4, true)], [5, 0], "NSID 5 changed");
    const again = await getLogPage(target, admin, NvmeLid.ChangedNamespaceList, 4096);
    assertEquals(viewOf(again.data).getUint32(0, true), 0, "reading cleared it");
    // Re-armed by the read: the next change completes the next AER.
    target.addNamespace(NQN, { bdevName: "Malloc1" });
    assertEquals((await aers[1] as Completion).dw0, 0x040002);
    assertEquals(admin.outstanding, 2);
    // I/O to a removed NSID fails; the bdev can be deleted once removed.
    await target.removeNamespace(NQN, 2);
    assertEquals(
      (await readWrite(target, io, false, 2, 0, 1, new Uint8Array(512))).status,
      invalidNs,
    );
    await deleteMallocBdev(registry, "Malloc1");
    // Disconnecting the admin queue ends the controller; held AERs come back aborted.
    target.qpairDisconnected(admin);
    const aborted = await aers[2] as Completion;
    assertEquals(aborted.status, genericStatus(NvmeGenericSc.AbortedSqDeletion, false));
    await aers[3];
    assert(io.disconnectReason !== null, "the I/O queue goes with its controller");
    assertEquals(target.subsystem(NQN).controllers.size, 0);
  });
});

Deno.test("keep alive: a silent host is disconnected after KATO; a chatty one stays", async () => {
  await withTarget(async ({ target }) => {
    const silent = new FakeQpair();
    await connectAndEnable(target, silent, NQN, HOST, 300);
    const chatty = new FakeQpair();
    await connectAndEnable(target, chatty, NQN, HOST, 300);
    assertEquals((await getFeatures(target, chatty, NvmeFid.KeepAliveTimer)).dw0, 300);
    const start = performance.now();
    while (silent.disconnectReason === null && performance.now() - start < 5000) {
      await chatty.submit(target, (v) => v.setUint8(0, NvmeAdminOpcode.KeepAlive));
      await new Promise((r) => setTimeout(r, 50));
    }
    const waited = performance.now() - start;
    assert(silent.disconnectReason?.includes("keep alive"), String(silent.disconnectReason));
    assert(waited >= 250, `expired after ${waited.toFixed(0)} ms, before KATO`);
    assertEquals(chatty.disconnectReason, null);
    assertEquals(target.subsystem(NQN).controllers.size, 1);
    // Commands on the dead queue are refused.
    const late = await identify(target, silent, NvmeCns.Controller);
    assertEquals(late.status, genericStatus(NvmeGenericSc.CommandSequenceError));
  }, { kas: 1, minKato: 100 });
});

Deno.test("features: VWC, temperature threshold, host identifier, unsupported and saveable", async () => {
  await withTarget(async ({ target }) => {
    const admin = new FakeQpair();
    await connectAndEnable(target, admin, NQN, HOST);
    assertEquals((await getFeatures(target, admin, NvmeFid.VolatileWriteCache)).dw0, 1);
    assertEquals((await setFeatures(target, admin, NvmeFid.VolatileWriteCache, 0)).status, ok);
    assertEquals((await getFeatures(target, admin, NvmeFid.VolatileWriteCache)).dw0, 0);
    assertEquals((await getFeatures(target, admin, NvmeFid.TemperatureThreshold)).dw0, 343);
    await setFeatures(target, admin, NvmeFid.TemperatureThreshold, 350);
    assertEquals((await getFeatures(target, admin, NvmeFid.TemperatureThreshold)).dw0, 350);
    const hostId = await getFeatures(target, admin, NvmeFid.HostIdentifier, 1, 0, 16);
    assertEquals(hostId.data, Uint8Array.from({ length: 16 }, (_, i) => i + 1));
    assertEquals((await getFeatures(target, admin, NvmeFid.Timestamp)).status, invalidField);
    const saved = await admin.submit(target, (v) => {
      v.setUint8(0, NvmeAdminOpcode.SetFeatures);
      v.setUint32(40, (NvmeFid.Arbitration | 0x8000_0000) >>> 0, true);
    });
    assertEquals(saved.status, commandSpecificStatus(0x0d), "Feature Identifier Not Saveable");
    const caps = await getFeatures(target, admin, NvmeFid.KeepAliveTimer, 0, 3);
    assertEquals(caps.dw0, 4, "changeable");
    const fw = await getLogPage(target, admin, NvmeLid.FirmwareSlot, 512);
    assertEquals([fw.data[0], getString(fw.data, 8, 8)], [1, "0.1.0"]);
    const effects = await getLogPage(target, admin, NvmeLid.CommandsSupportedAndEffects, 4096);
    assertEquals(viewOf(effects.data).getUint32(1024 + 4, true), 3, "Write: supported, LBCC");
    const unknownLog = await getLogPage(target, admin, 0x06, 64);
    assertEquals(unknownLog.status, invalidField);
    const offset = await getLogPage(target, admin, NvmeLid.FirmwareSlot, 8, { offset: 8 });
    assertEquals(getString(offset.data, 0, 8), "0.1.0", "log page offset");
  });
});

Deno.test("discovery: the log lists what the connecting host may reach; GENCTR and AEN follow changes", async () => {
  await withTarget(async ({ target }) => {
    target.createSubsystem({ nqn: NQN2, allowAnyHost: true });
    await target.addListener(NQN2, LISTEN);
    await target.addListener(NQN2, { ...LISTEN, traddr: "0.0.0.0", trsvcid: "4421" });

    const disc = new FakeQpair("10.1.2.3", "4421");
    await connectAndEnable(target, disc, NVME_DISCOVERY_NQN, HOST);
    const id = await identify(target, disc, NvmeCns.Controller);
    assertEquals([id.data[111], getString(id.data, 768, 256)], [2, NVME_DISCOVERY_NQN]);
    assertEquals(viewOf(id.data).getUint32(92, true) >>> 0, 0x8000_0000, "OAES discovery change");
    assertEquals((await identify(target, disc, NvmeCns.Namespace, 1)).status, invalidField);

    const header = await getLogPage(target, disc, NvmeLid.Discovery, 1024, { nsid: 0 });
    const hv = viewOf(header.data);
    const genctr = getU64(hv, 0);
    assertEquals(getU64(hv, 8), 3, "cnode1 (allows HOST) once, cnode2 twice");
    const full = await getLogPage(target, disc, NvmeLid.Discovery, 4096, { nsid: 0 });
    const entry = (i: number) => {
      const e = full.data.subarray(1024 + i * 1024, 2048 + i * 1024);
      const ev = viewOf(e);
      return {
        trtype: e[0],
        adrfam: e[1],
        subtype: e[2],
        portid: ev.getUint16(4, true),
        cntlid: ev.getUint16(6, true),
        asqsz: ev.getUint16(8, true),
        trsvcid: getString(e, 32, 32),
        subnqn: getString(e, 256, 256),
        traddr: getString(e, 512, 256),
        sectype: e[768],
      };
    };
    assertEquals(entry(0), {
      trtype: 3,
      adrfam: 1,
      subtype: 2,
      portid: 0,
      cntlid: 0xffff,
      asqsz: 128,
      trsvcid: "4420",
      subnqn: NQN,
      traddr: "127.0.0.1",
      sectype: 0,
    });
    assertEquals([entry(1).subnqn, entry(1).portid], [NQN2, 0]);
    assertEquals([entry(2).traddr, entry(2).trsvcid, entry(2).portid], ["10.1.2.3", "4421", 1]);

    // Another host sees only what allows any host.
    const other = new FakeQpair("127.0.0.1", "4420");
    await connectAndEnable(target, other, NVME_DISCOVERY_NQN, OTHER_HOST);
    const theirs = await getLogPage(target, other, NvmeLid.Discovery, 1024, { nsid: 0 });
    assertEquals(getU64(viewOf(theirs.data), 8), 2);

    // A change bumps GENCTR and completes an AER of a discovery controller that asked for it.
    await setFeatures(target, disc, NvmeFid.AsyncEventConfiguration, 0x8000_0000);
    const aer = disc.submit(target, (v) => v.setUint8(0, NvmeAdminOpcode.AsyncEventRequest));
    target.subsystem(NQN).addHost(OTHER_HOST);
    assertEquals((await aer).dw0, 0x70f002, "notice, discovery log page change, LID 70h");
    const after = await getLogPage(target, other, NvmeLid.Discovery, 1024, { nsid: 0 });
    assert(getU64(viewOf(after.data), 0) > genctr, "GENCTR moved");
    assertEquals(getU64(viewOf(after.data), 8), 3);
    // Discovery controllers only do discovery things.
    assertEquals((await getLogPage(target, disc, NvmeLid.SmartHealth, 512)).status, invalidField);
    const io = await connect(target, new FakeQpair("10.1.2.3", "4421"), {
      subnqn: NVME_DISCOVERY_NQN,
      hostnqn: HOST,
      qid: 1,
      cntlid: 1,
    });
    assertEquals(io.status, commandSpecificStatus(NvmfFabricsSc.ConnectInvalidParameters));
  });
});

Deno.test("target: bounds and validation of subsystems, namespaces and listeners", async () => {
  await withTarget(async ({ target, registry }) => {
    assertThrows(() => target.createSubsystem({ nqn: "nqn.bad" }), NvmfError, "invalid");
    assertThrows(() => target.createSubsystem({ nqn: NQN }), NvmfError, "already exists");
    assertThrows(
      () => target.createSubsystem({ nqn: NVME_DISCOVERY_NQN }),
      NvmfError,
      "already exists",
    );
    assertThrows(
      () => target.createSubsystem({ nqn: NQN2, serialNumber: "x".repeat(21) }),
      NvmfError,
      "serial_number",
    );
    assertThrows(
      () =>
        target.addNamespace(NQN, {
          bdevName: "Malloc0",
          nsid: 2,
          uuid: "99999999-3333-4444-5555-666677778888",
        }),
      BdevBusyError,
      "already claimed",
    );
    createMallocBdev(registry, { name: "M2", numBlocks: 8, blockSize: 512 });
    assertThrows(() => target.addNamespace(NQN, { bdevName: "M2", nsid: 1 }), NvmfError, "in use");
    assertThrows(() => target.addNamespace(NQN, { bdevName: "M2", nsid: 33 }), NvmfError, "1-32");
    assertThrows(() => target.addNamespace(NQN, { bdevName: "M2", uuid: UUID }), NvmfError, "UUID");
    let added = 0, removed = 0;
    target.onListenerAdded(() => void added++);
    target.onListenerRemoved(() => void removed++);
    const sub2 = target.createSubsystem({ nqn: NQN2 });
    assertEquals(sub2.serialNumber.length, 20, "a generated serial number");
    await target.addListener(NQN2, LISTEN);
    assertEquals(added, 0, "the address was open already");
    await target.addListener(NQN2, { ...LISTEN, trsvcid: "4430" });
    assertEquals(added, 1);
    let threw = false;
    await target.addListener(NQN2, { ...LISTEN, traddr: "300.1.1.1" }).catch(() => threw = true);
    assert(threw, "bad IPv4 address");
    await target.deleteSubsystem(NQN2);
    assertEquals(removed, 1, "4430 had only cnode2");
    assertEquals(target.listeners().map((l) => l.trsvcid), ["4420"]);
  });
});

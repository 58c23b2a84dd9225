import { assert, assertEquals } from "../testing/assert.ts";
import { viewOf } from "./bytes.ts";
import {
  cqeCid,
  cqeDw0,
  cqePhase,
  cqeSetCid,
  cqeSetDw0,
  cqeSetDw1,
  cqeSetSqhd,
  cqeSetSqid,
  cqeSetStatus,
  cqeSqhd,
  cqeSqid,
  cqeStatus,
} from "./cqe.ts";
import { connectInvalidParameterDw0, propertySize } from "./fabrics.ts";
import { asyncEventDw0, NvmeAsyncEventType, NvmeAsyncNotice } from "./features.ts";
import { isValidNqn, nqnProblem } from "./nqn.ts";
import { NvmeDataDirection, nvmeDataDirection, nvmeOpcodeName } from "./opcodes.ts";
import {
  buildCap,
  buildCc,
  ccEn,
  ccIocqes,
  ccIosqes,
  ccMps,
  ccShn,
  cstsShst,
  nvmeVersion,
  nvmeVersionText,
  parseCap,
} from "./registers.ts";
import {
  sqeCdw,
  sqeCid,
  sqeNlb,
  sqeNsid,
  sqeOpcode,
  sqeSetCdw,
  sqeSetCid,
  sqeSetNsid,
  sqeSetOpcode,
  sqeSetSgl1,
  sqeSetSlba,
  sqeSgl1Address,
  sqeSgl1Length,
  sqeSgl1Subtype,
  sqeSgl1Type,
  sqeSlba,
} from "./sqe.ts";
import {
  commandSpecificStatus,
  genericStatus,
  NvmeGenericSc,
  nvmeStatus,
  nvmeStatusText,
  NvmfFabricsSc,
  statusDnr,
  statusMore,
  statusSc,
  statusSct,
} from "./status.ts";

Deno.test("status field: SCT/SC/DNR/More layout and the CQE's shift by one", () => {
  const s = nvmeStatus(1, 0x84, true, true);
  assertEquals(s, 0x6184);
  assertEquals([statusSct(s), statusSc(s), statusDnr(s), statusMore(s)], [1, 0x84, true, true]);
  assertEquals(genericStatus(NvmeGenericSc.InvalidOpcode), 0x4001);
  assertEquals(genericStatus(NvmeGenericSc.InternalError, false), 0x0006);
  assert(nvmeStatusText(commandSpecificStatus(NvmfFabricsSc.ConnectInvalidHost)).includes("Host"));

  const c = new Uint8Array(16), v = viewOf(c);
  cqeSetDw0(v, 0xdeadbeef);
  cqeSetDw1(v, 1);
  cqeSetSqhd(v, 7);
  cqeSetSqid(v, 2);
  cqeSetCid(v, 0xabcd);
  cqeSetStatus(v, s, 1);
  assertEquals(v.getUint16(14, true), (0x6184 << 1) | 1, "DW3 bits 31:17 status, bit 16 phase");
  assertEquals([cqeDw0(v), cqeSqhd(v), cqeSqid(v), cqeCid(v)], [0xdeadbeef, 7, 2, 0xabcd]);
  assertEquals([cqeStatus(v), cqePhase(v)], [0x6184, 1]);
  assertEquals(Array.from(c.subarray(4, 14)), [1, 0, 0, 0, 7, 0, 2, 0, 0xcd, 0xab]);
});

Deno.test("SQE accessors: CID, NSID, CDWs, SGL1, SLBA/NLB", () => {
  const b = new Uint8Array(64), v = viewOf(b);
  sqeSetOpcode(v, 0x02);
  sqeSetCid(v, 0x1234);
  sqeSetNsid(v, 1);
  sqeSetSgl1(v, 0x5, 0xa, 0, 8192);
  sqeSetSlba(v, 2 ** 33 + 1);
  sqeSetCdw(v, 12, 15);
  assertEquals([sqeOpcode(v), sqeCid(v), sqeNsid(v)], [2, 0x1234, 1]);
  assertEquals([b[2], b[3], b[4]], [0x34, 0x12, 1]);
  assertEquals([sqeSgl1Type(v), sqeSgl1Subtype(v), sqeSgl1Length(v)], [5, 0xa, 8192]);
  assertEquals(b[39], 0x5a, "SGL identifier at byte 39");
  assertEquals(sqeSgl1Address(v), 0);
  assertEquals(sqeSlba(v), 2 ** 33 + 1);
  assertEquals(sqeCdw(v, 11), 2);
  assertEquals(sqeNlb(v), 16, "NLB is 0's based");
  sqeSetCdw(v, 11, 0x0020_0000);
  assertEquals(sqeSlba(v), -1, "beyond 2^53");
});

Deno.test("data direction from opcode bits, or FCTYPE for Fabrics", () => {
  const sqe = new Uint8Array(64);
  const dir = (opc: number, fctype = 0) => {
    sqe[0] = opc;
    sqe[4] = fctype;
    return nvmeDataDirection(sqe);
  };
  assertEquals(dir(0x01), NvmeDataDirection.HostToController);
  assertEquals(dir(0x02), NvmeDataDirection.ControllerToHost);
  assertEquals(dir(0x06), NvmeDataDirection.ControllerToHost);
  assertEquals(dir(0x09), NvmeDataDirection.HostToController);
  assertEquals(dir(0x00), NvmeDataDirection.None);
  assertEquals(dir(0x7f, 0x01), NvmeDataDirection.HostToController, "Connect");
  assertEquals(dir(0x7f, 0x04), NvmeDataDirection.None, "Property Get");
  assertEquals(dir(0x7f, 0x06), NvmeDataDirection.ControllerToHost, "Auth Receive");
  assertEquals(nvmeOpcodeName(sqe, true), "Fabrics AuthenticationReceive");
});

Deno.test("registers: CAP fields, VS, CC and CSTS", () => {
  const cap = buildCap({
    mqes: 127,
    cqr: true,
    ams: 0,
    to: 15,
    dstrd: 0,
    nssrs: false,
    css: 1,
    bps: false,
    mpsmin: 0,
    mpsmax: 4,
    crms: 0,
  });
  assertEquals(cap & 0xffffn, 127n);
  assertEquals((cap >> 16n) & 1n, 1n);
  assertEquals((cap >> 24n) & 0xffn, 15n);
  assertEquals((cap >> 37n) & 0xffn, 1n, "CSS bit 37: NVM command set");
  assertEquals((cap >> 52n) & 0xfn, 4n);
  assertEquals(parseCap(cap).mqes, 127);
  assertEquals(parseCap(cap).css, 1);
  assertEquals(nvmeVersion(1, 4, 1), 0x00010401);
  assertEquals(nvmeVersionText(0x00020000), "2.0.0");
  const cc = buildCc({ en: true, iosqes: 6, iocqes: 4, shn: 1, mps: 0 });
  assertEquals(cc, 0x00464001);
  assertEquals([ccEn(cc), ccIosqes(cc), ccIocqes(cc), ccShn(cc), ccMps(cc)], [true, 6, 4, 1, 0]);
  assertEquals(cstsShst(0b1001), 2);
});

Deno.test("fabrics and async event values", () => {
  assertEquals(connectInvalidParameterDw0(true, 256), 0x10100);
  assertEquals(connectInvalidParameterDw0(false, 44), 44);
  assertEquals([propertySize(0), propertySize(1), propertySize(2)], [4, 8, -1]);
  assertEquals(
    asyncEventDw0(NvmeAsyncEventType.Notice, NvmeAsyncNotice.NamespaceAttributeChanged, 0x04),
    0x040002,
  );
  assertEquals(
    asyncEventDw0(NvmeAsyncEventType.Notice, NvmeAsyncNotice.DiscoveryLogPageChange, 0x70),
    0x70f002,
  );
});

Deno.test("NQN validation: date form, UUID form, discovery NQN, limits", () => {
  for (
    const ok of [
      "nqn.2016-06.io.spdk:cnode1",
      "nqn.2014-08.org.nvmexpress.discovery",
      "nqn.2014-08.org.nvmexpress:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
      "nqn.2024-01.com.example-1.storage:disk/é",
    ]
  ) assertEquals(nqnProblem(ok), null, ok);
  for (
    const bad of [
      "iqn.2016-06.io.spdk:x",
      "nqn.2016-13.io.spdk:x",
      "nqn.2016-06.io.spdk",
      "nqn.2016-06.io.spdk:",
      "nqn.2016-06.1io.spdk:x",
      "nqn.2016-06.io-.spdk:x",
      "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
      "nqn.2016-06.io.spdk:" + "x".repeat(210),
    ]
  ) assertEquals(isValidNqn(bad), false, bad);
});

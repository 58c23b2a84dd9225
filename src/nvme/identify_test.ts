import { assertEquals } from "../testing/assert.ts";
import { getString, getU64, uuidBytes, viewOf } from "./bytes.ts";
import {
  buildActiveNamespaceList,
  buildIdentifyController,
  buildIdentifyIndependentNamespace,
  buildIdentifyNamespace,
  buildIdentifyNvmController,
  buildNamespaceIdDescriptorList,
  identifyCns,
  identifyCntid,
  identifyCsi,
  NVME_IDENTIFY_BYTES,
  NvmeControllerType,
  NvmeNidt,
} from "./identify.ts";
import { nvmeVersion } from "./registers.ts";

Deno.test("identify controller: field offsets match NVMe Base 2.0", () => {
  const b = new Uint8Array(NVME_IDENTIFY_BYTES).fill(0xee);
  buildIdentifyController(b, {
    vid: 0x1b36,
    ssvid: 0x1af4,
    serialNumber: "SN123",
    modelNumber: "sluice",
    firmwareRevision: "0.1.0",
    rab: 6,
    ieee: 0x0a0b0c,
    cmic: 0x03,
    mdts: 5,
    cntlid: 0x1234,
    ver: nvmeVersion(2, 0, 0),
    oaes: 1 << 8,
    ctratt: 0x41,
    cntrltype: NvmeControllerType.Io,
    oacs: 0,
    acl: 3,
    aerl: 3,
    frmw: 0x03,
    lpa: 0x07,
    elpe: 15,
    kas: 10,
    sqes: 0x66,
    cqes: 0x44,
    maxcmd: 128,
    nn: 32,
    oncs: 0x0c,
    vwc: 0x05,
    sgls: 0x100001,
    mnan: 32,
    subnqn: "nqn.2016-06.io.spdk:cnode1",
    fabrics: { ioccsz: 260, iorcsz: 1, icdoff: 0, fcatt: 0, msdbd: 1 },
  });
  const v = viewOf(b);
  assertEquals(v.getUint16(0, true), 0x1b36);
  assertEquals(v.getUint16(2, true), 0x1af4);
  assertEquals(getString(b, 4, 20), "SN123");
  assertEquals(b[23], 0x20, "SN is space padded");
  assertEquals(getString(b, 24, 40), "sluice");
  assertEquals(b[63], 0x20);
  assertEquals(getString(b, 64, 8), "0.1.0");
  assertEquals(b[72], 6);
  assertEquals([b[73], b[74], b[75]], [0x0c, 0x0b, 0x0a]);
  assertEquals(b[76], 0x03);
  assertEquals(b[77], 5);
  assertEquals(v.getUint16(78, true), 0x1234);
  assertEquals(v.getUint32(80, true), 0x00020000);
  assertEquals(v.getUint32(92, true), 0x100);
  assertEquals(v.getUint32(96, true), 0x41);
  assertEquals(b[111], 1);
  assertEquals(b[100], 0, "reserved bytes are zeroed");
  assertEquals(b[258], 3);
  assertEquals(b[259], 3);
  assertEquals(b[260], 3);
  assertEquals(b[261], 7);
  assertEquals(b[262], 15);
  assertEquals(v.getUint16(320, true), 10);
  assertEquals(b[512], 0x66);
  assertEquals(b[513], 0x44);
  assertEquals(v.getUint16(514, true), 128);
  assertEquals(v.getUint32(516, true), 32);
  assertEquals(v.getUint16(520, true), 0x0c);
  assertEquals(b[525], 0x05);
  assertEquals(v.getUint32(536, true), 0x100001);
  assertEquals(v.getUint32(540, true), 32);
  assertEquals(getString(b, 768, 256), "nqn.2016-06.io.spdk:cnode1");
  assertEquals(b[768 + 26], 0, "SUBNQN is NUL terminated");
  assertEquals(v.getUint32(1792, true), 260);
  assertEquals(v.getUint32(1796, true), 1);
  assertEquals(v.getUint16(1800, true), 0);
  assertEquals(b[1803], 1);
  assertEquals(b[4095], 0);
});

Deno.test("identify namespace: sizes, LBA format, identifiers at their offsets", () => {
  const b = new Uint8Array(NVME_IDENTIFY_BYTES).fill(0xee);
  const nguid = uuidBytes("00112233-4455-6677-8899-aabbccddeeff");
  const eui64 = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  buildIdentifyNamespace(b, {
    nsze: 2 ** 40 + 5,
    ncap: 2 ** 40 + 5,
    nuse: 7,
    nmic: 1,
    dlfeat: 0x09,
    nsattr: 1,
    nguid,
    eui64,
    lbaf0Lbads: 12,
  });
  const v = viewOf(b);
  assertEquals(getU64(v, 0), 2 ** 40 + 5);
  assertEquals(getU64(v, 8), 2 ** 40 + 5);
  assertEquals(getU64(v, 16), 7);
  assertEquals(b[25], 0, "NLBAF: one format");
  assertEquals(b[26], 0, "FLBAS: format 0");
  assertEquals(b[30], 1);
  assertEquals(b[33], 0x09);
  assertEquals(b[99], 1);
  assertEquals(b.subarray(104, 120), nguid);
  assertEquals(b.subarray(120, 128), eui64);
  assertEquals(v.getUint16(128, true), 0, "LBAF0 MS");
  assertEquals(b[130], 12, "LBAF0 LBADS");
  assertEquals(b[132], 0, "LBAF1 unused");
});

Deno.test("identify: active namespace list, descriptor list, NVM and independent structures", () => {
  const b = new Uint8Array(NVME_IDENTIFY_BYTES).fill(0xee);
  buildActiveNamespaceList(b, [1, 2, 5, 9], 2);
  const v = viewOf(b);
  assertEquals([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)], [5, 9, 0]);

  const uuid = uuidBytes("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
  buildNamespaceIdDescriptorList(b, { nguid: uuid, uuid, csi: 0 });
  assertEquals([b[0], b[1]], [NvmeNidt.Nguid, 16]);
  assertEquals(b.subarray(4, 20), uuid);
  assertEquals([b[20], b[21]], [NvmeNidt.Uuid, 16]);
  assertEquals(b.subarray(24, 40), uuid);
  assertEquals([b[40], b[41], b[44]], [NvmeNidt.Csi, 1, 0]);
  assertEquals(b[45], 0, "list ends with a zero NIDL");

  buildIdentifyNvmController(b, { wzsl: 3, dmrl: 2, dmrsl: 0x100, dmsl: 0x200 });
  assertEquals([b[0], b[1], b[2], b[3]], [0, 3, 0, 2]);
  assertEquals(v.getUint32(4, true), 0x100);
  assertEquals(getU64(v, 8), 0x200);

  buildIdentifyIndependentNamespace(b, { nmic: 1, nsattr: 1, nstat: 1 });
  assertEquals([b[0], b[1], b[8], b[14]], [0, 1, 1, 1]);

  assertEquals(identifyCns(0x00120006), 6);
  assertEquals(identifyCntid(0x00120006), 0x12);
  assertEquals(identifyCsi(0x02000000), 2);
});

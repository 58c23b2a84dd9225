import { assertEquals } from "../testing/assert.ts";
import { getString, getU64, viewOf } from "./bytes.ts";
import {
  discoveryLogBytes,
  NvmfAdrfam,
  NvmfSubtype,
  NvmfTrtype,
  writeDiscoveryLogEntry,
  writeDiscoveryLogHeader,
} from "./discovery_log.ts";
import {
  buildChangedNamespaceList,
  buildEffectsLog,
  buildFirmwareSlotLog,
  buildSmartLog,
  NVME_ERROR_LOG_ENTRY_BYTES,
  NvmeEffects,
  parseGetLogPage,
  smartDataUnits,
  writeErrorLogEntry,
} from "./log_pages.ts";
import { genericStatus, NvmeGenericSc } from "./status.ts";

Deno.test("get log page: NUMD, offset, RAE and CSI are read from CDW10-14", () => {
  const sqe = new Uint8Array(64);
  const v = viewOf(sqe);
  v.setUint32(40, 0x03ff_8002, true); // NUMDL 3FFh, RAE, LID 02h
  v.setUint32(44, 0x0007_0001, true); // LSI 7, NUMDU 1
  v.setUint32(48, 0x200, true);
  v.setUint32(52, 1, true);
  v.setUint32(56, 0x0080_0000, true);
  const f = parseGetLogPage(v);
  assertEquals(f.lid, 2);
  assertEquals(f.rae, true);
  assertEquals(f.bytes, (0x1_03ff + 1) * 4);
  assertEquals(f.offset, 0x1_0000_0200);
  assertEquals(f.lsi, 7);
  assertEquals(f.ot, true);
  assertEquals(f.csi, 0);
});

Deno.test("error information entry: count, queue, status and NSID at their offsets", () => {
  const b = new Uint8Array(2 * NVME_ERROR_LOG_ENTRY_BYTES);
  const v = viewOf(b);
  writeErrorLogEntry(v, 64, {
    errorCount: 9,
    sqid: 1,
    cid: 0x42,
    status: genericStatus(NvmeGenericSc.LbaOutOfRange),
    parameterErrorLocation: 0xffff,
    lba: 1000,
    nsid: 3,
    trtype: 3,
  });
  assertEquals(getU64(v, 64), 9);
  assertEquals(v.getUint16(72, true), 1);
  assertEquals(v.getUint16(74, true), 0x42);
  assertEquals(v.getUint16(76, true) >> 1, 0x4080);
  assertEquals(v.getUint16(78, true), 0xffff);
  assertEquals(getU64(v, 80), 1000);
  assertEquals(v.getUint32(88, true), 3);
  assertEquals(b[93], 3);
});

Deno.test("SMART, firmware slot, changed namespace list and effects logs", () => {
  const b = new Uint8Array(4096);
  const v = viewOf(b);
  buildSmartLog(b, {
    temperatureK: 313,
    availableSparePct: 100,
    availableSpareThresholdPct: 10,
    percentageUsed: 0,
    dataUnitsRead: smartDataUnits(512_001),
    dataUnitsWritten: 2,
    hostReadCommands: 3,
    hostWriteCommands: 4,
    errorLogEntries: 5,
  });
  assertEquals(v.getUint16(1, true), 313);
  assertEquals([b[3], b[4], b[5]], [100, 10, 0]);
  assertEquals(getU64(v, 32), 2, "data units round up");
  assertEquals(getU64(v, 48), 2);
  assertEquals(getU64(v, 64), 3);
  assertEquals(getU64(v, 80), 4);
  assertEquals(getU64(v, 176), 5);

  buildFirmwareSlotLog(b, 1, ["0.1.0"]);
  assertEquals(b[0], 1);
  assertEquals(getString(b, 8, 8), "0.1.0");
  assertEquals(b[16], 0);

  buildChangedNamespaceList(b, [4, 2]);
  assertEquals([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)], [4, 2, 0]);
  buildChangedNamespaceList(b, Array.from({ length: 1025 }, (_, i) => i + 1));
  assertEquals([v.getUint32(0, true), v.getUint32(4, true)], [0xffffffff, 0]);

  buildEffectsLog(
    b,
    new Map([[0x06, NvmeEffects.Csupp]]),
    new Map([[0x01, NvmeEffects.Csupp | NvmeEffects.Lbcc]]),
  );
  assertEquals(v.getUint32(6 * 4, true), 1);
  assertEquals(v.getUint32(1024 + 4, true), 3);
});

Deno.test("discovery log page: header and entry field offsets (NVMe-oF 1.1)", () => {
  const b = new Uint8Array(discoveryLogBytes(2));
  const v = viewOf(b);
  writeDiscoveryLogHeader(b, 7, 2);
  writeDiscoveryLogEntry(b, 1, {
    trtype: NvmfTrtype.Tcp,
    adrfam: NvmfAdrfam.Ipv4,
    subtype: NvmfSubtype.Nvme,
    treq: 2,
    portid: 5,
    cntlid: 0xffff,
    asqsz: 128,
    trsvcid: "4420",
    subnqn: "nqn.2016-06.io.spdk:cnode1",
    traddr: "10.0.0.1",
    sectype: 0,
  });
  assertEquals(getU64(v, 0), 7);
  assertEquals(getU64(v, 8), 2);
  assertEquals(v.getUint16(16, true), 0);
  const e = 2048;
  assertEquals([b[e], b[e + 1], b[e + 2], b[e + 3]], [3, 1, 2, 2]);
  assertEquals(v.getUint16(e + 4, true), 5);
  assertEquals(v.getUint16(e + 6, true), 0xffff);
  assertEquals(v.getUint16(e + 8, true), 128);
  assertEquals(getString(b, e + 32, 32), "4420");
  assertEquals(b[e + 36], 0x20, "TRSVCID is space padded");
  assertEquals(getString(b, e + 256, 256), "nqn.2016-06.io.spdk:cnode1");
  assertEquals(getString(b, e + 512, 256), "10.0.0.1");
  assertEquals(b[e + 768], 0);
});

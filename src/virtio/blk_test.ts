import { assert, assertEquals } from "../testing/assert.ts";
import { VirtioDriver } from "../testing/virtio_driver.ts";
import {
  BLK_NO_STATUS,
  type BlkLimits,
  BlkRequest,
  encodeBlkConfig,
  featureMask,
  VIRTIO_BLK_CONFIG_BYTES,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_GET_LIFETIME,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
} from "./blk.ts";

const LIMITS: BlkLimits = {
  capacitySectors: 1 << 20,
  readOnly: false,
  flush: true,
  discard: true,
  writeZeroes: true,
  maxDiscardSectors: 1 << 16,
  maxDiscardSeg: 4,
  maxWriteZeroesSectors: 1 << 16,
  maxWriteZeroesSeg: 4,
};

function setup(indirect = false) {
  const d = new VirtioDriver({ queueSize: 16, indirectDesc: indirect });
  const q = d.queue();
  const req = new BlkRequest(16, 4);
  const parse = (limits: BlkLimits = LIMITS) => {
    const head = q.popAvail();
    q.walkChain(head);
    return req.parse(q, limits);
  };
  return { d, q, req, parse };
}

function range(sector: number, n: number, flags: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, n, true);
  v.setUint32(12, flags, true);
  return b;
}

Deno.test("blk: IN and OUT parse, direct and indirect, split header", () => {
  for (const indirect of [false, true]) {
    for (const splitHeader of [false, true]) {
      const { d, q, req, parse } = setup(indirect);
      const r = d.addBlkRequest({
        type: VIRTIO_BLK_T_IN,
        sector: 100,
        splitHeader,
        indirect,
        data: [{ len: 512, writable: true }, { len: 1024, writable: true }],
      });
      assertEquals(parse(), VIRTIO_BLK_S_OK);
      assertEquals([req.type, req.sector, req.dataBytes, req.dataCount], [0, 100, 1536, 2]);
      assertEquals(req.dataOffset[0], (r.data[0]?.gpa ?? 0) - d.gpaBase);
      assertEquals(req.dataLen[1], 1024);
      req.writeStatus(q.memory, VIRTIO_BLK_S_OK);
      assertEquals(d.read(r.status, 1)[0], 0);
      assertEquals(req.usedLength(VIRTIO_BLK_S_OK), 1537);

      const w = d.addBlkRequest({
        type: VIRTIO_BLK_T_OUT,
        sector: (1 << 20) - 8,
        splitHeader,
        indirect,
        data: [{ len: 4096, writable: false }],
      });
      assertEquals(parse(), VIRTIO_BLK_S_OK);
      assertEquals([req.type, req.sector, req.dataBytes, req.dataCount], [
        1,
        (1 << 20) - 8,
        4096,
        1,
      ]);
      assertEquals(req.dataOffset[0], (w.data[0]?.gpa ?? 0) - d.gpaBase);
      assertEquals(req.usedLength(VIRTIO_BLK_S_OK), 1);
    }
  }
});

Deno.test("blk: FLUSH, GET_ID, DISCARD, WRITE_ZEROES parse", () => {
  const { d, q, req, parse } = setup();
  d.addBlkRequest({ type: VIRTIO_BLK_T_FLUSH, sector: 0 });
  assertEquals(parse(), VIRTIO_BLK_S_OK);
  assertEquals(req.type, VIRTIO_BLK_T_FLUSH);

  const id = d.addBlkRequest({
    type: VIRTIO_BLK_T_GET_ID,
    sector: 0,
    data: [{ len: 20, writable: true }],
  });
  assertEquals(parse(), VIRTIO_BLK_S_OK);
  req.writeId(q.memory, new TextEncoder().encode("sluice-1"));
  const got = d.read(id.data[0]?.gpa ?? 0, 20);
  assertEquals(new TextDecoder().decode(got.subarray(0, 8)), "sluice-1");
  assertEquals(got.subarray(8), new Uint8Array(12));
  assertEquals(req.usedLength(VIRTIO_BLK_S_OK), 21);

  d.addBlkRequest({
    type: VIRTIO_BLK_T_DISCARD,
    sector: 0,
    data: [{ len: 16, writable: false, data: range(8, 16, 0) }, {
      len: 16,
      writable: false,
      data: range(1000, 1, 0),
    }],
  });
  assertEquals(parse(), VIRTIO_BLK_S_OK);
  assertEquals(req.rangeCount, 2);
  assertEquals([req.rangeSector[0], req.rangeSectors[0], req.rangeSector[1]], [8, 16, 1000]);

  const both = new Uint8Array(32);
  both.set(range(5, 7, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP));
  both.set(range(50, 70, 0), 16);
  d.addBlkRequest({
    type: VIRTIO_BLK_T_WRITE_ZEROES,
    sector: 0,
    data: [{ len: 32, writable: false, data: both }],
  });
  assertEquals(parse(), VIRTIO_BLK_S_OK);
  assertEquals(req.rangeCount, 2);
  assertEquals([req.rangeSector[0], req.rangeSectors[0], req.rangeFlags[0]], [5, 7, 1]);
  assertEquals([req.rangeSector[1], req.rangeSectors[1], req.rangeFlags[1]], [50, 70, 0]);
});

Deno.test("blk: invalid requests map to IOERR, UNSUPP or no status", () => {
  const R = (len: number, data?: Uint8Array) => ({ len, writable: false, data });
  const W = (len: number) => ({ len, writable: true });
  const cases: [
    string,
    number,
    Parameters<VirtioDriver["addBlkRequest"]>[0],
    Partial<BlkLimits>?,
  ][] = [
    ["missing status byte", BLK_NO_STATUS, { type: 4, sector: 0, noStatus: true }],
    // A guest that drops the status after writable data gives up a data byte instead.
    ["status taken from read data", VIRTIO_BLK_S_IOERR, {
      type: 0,
      sector: 0,
      data: [W(512)],
      noStatus: true,
    }],
    ["readable last byte", BLK_NO_STATUS, {
      type: 1,
      sector: 0,
      data: [R(512)],
      noStatus: true,
    }],
    ["writable header", VIRTIO_BLK_S_IOERR, { type: 0, sector: 0, writableHeader: true }],
    ["read into readable data", VIRTIO_BLK_S_IOERR, { type: 0, sector: 0, data: [R(512)] }],
    ["write from writable data", VIRTIO_BLK_S_IOERR, { type: 1, sector: 0, data: [W(512)] }],
    ["not a multiple of 512", VIRTIO_BLK_S_IOERR, { type: 0, sector: 0, data: [W(513)] }],
    ["past capacity", VIRTIO_BLK_S_IOERR, { type: 0, sector: (1 << 20) - 1, data: [W(1024)] }],
    ["sector past 2^64", VIRTIO_BLK_S_IOERR, {
      type: 0,
      sector: 0xffff_ffff_ffff_ffffn,
      data: [W(512)],
    }],
    ["write to read-only", VIRTIO_BLK_S_IOERR, { type: 1, sector: 0, data: [R(512)] }, {
      readOnly: true,
    }],
    ["flush not negotiated", VIRTIO_BLK_S_UNSUPP, { type: 4, sector: 0 }, { flush: false }],
    ["flush with data", VIRTIO_BLK_S_IOERR, { type: 4, sector: 0, data: [W(512)] }],
    ["short GET_ID", VIRTIO_BLK_S_IOERR, { type: 8, sector: 0, data: [W(19)] }],
    ["GET_LIFETIME", VIRTIO_BLK_S_UNSUPP, { type: VIRTIO_BLK_T_GET_LIFETIME, sector: 0 }],
    ["unknown type", VIRTIO_BLK_S_UNSUPP, { type: 0xdead, sector: 0 }],
    ["discard not negotiated", VIRTIO_BLK_S_UNSUPP, {
      type: 11,
      sector: 0,
      data: [R(16, range(0, 1, 0))],
    }, { discard: false }],
    ["discard with unmap", VIRTIO_BLK_S_UNSUPP, {
      type: 11,
      sector: 0,
      data: [R(16, range(0, 1, 1))],
    }],
    ["unknown segment flag", VIRTIO_BLK_S_UNSUPP, {
      type: 13,
      sector: 0,
      data: [R(16, range(0, 1, 2))],
    }],
    ["too many segments", VIRTIO_BLK_S_UNSUPP, { type: 13, sector: 0, data: [R(80)] }],
    ["segment not 16 bytes", VIRTIO_BLK_S_IOERR, { type: 13, sector: 0, data: [R(15)] }],
    ["no segment", VIRTIO_BLK_S_IOERR, { type: 11, sector: 0 }],
    ["too many sectors", VIRTIO_BLK_S_IOERR, {
      type: 13,
      sector: 0,
      data: [R(16, range(0, (1 << 16) + 1, 0))],
    }],
    ["segment past capacity", VIRTIO_BLK_S_IOERR, {
      type: 11,
      sector: 0,
      data: [R(16, range(1 << 20, 1, 0))],
    }],
  ];
  for (const [name, status, r, limits] of cases) {
    const { d, q, req, parse } = setup();
    const placed = d.addBlkRequest(r);
    const got = parse({ ...LIMITS, ...limits });
    assertEquals(got, status, name);
    assert(req.reason.length > 0, name);
    req.writeStatus(q.memory, got);
    if (placed.status >= 0) assertEquals(d.read(placed.status, 1)[0], got, name);
    assertEquals(req.usedLength(got), got === BLK_NO_STATUS ? 0 : 1, name);
  }
});

Deno.test("blk: config space layout", () => {
  const b = encodeBlkConfig({
    capacitySectors: 2 ** 40 + 3,
    sizeMax: 0x1000,
    segMax: 126,
    geometry: { cylinders: 0x1234, heads: 16, sectors: 63 },
    blkSize: 4096,
    topology: { physicalBlockExp: 3, alignmentOffset: 1, minIoSize: 8, optIoSize: 256 },
    writeback: 1,
    numQueues: 4,
    maxDiscardSectors: 0xaaaa,
    maxDiscardSeg: 1,
    discardSectorAlignment: 8,
    maxWriteZeroesSectors: 0xbbbb,
    maxWriteZeroesSeg: 2,
    writeZeroesMayUnmap: 1,
  });
  assertEquals(b.byteLength, VIRTIO_BLK_CONFIG_BYTES);
  const v = new DataView(b.buffer);
  assertEquals(v.getBigUint64(0, true), 2n ** 40n + 3n);
  assertEquals(v.getUint32(8, true), 0x1000);
  assertEquals(v.getUint32(12, true), 126);
  assertEquals([v.getUint16(16, true), b[18], b[19]], [0x1234, 16, 63]);
  assertEquals(v.getUint32(20, true), 4096);
  assertEquals([b[24], b[25], v.getUint16(26, true), v.getUint32(28, true)], [3, 1, 8, 256]);
  assertEquals([b[32], v.getUint16(34, true)], [1, 4]);
  assertEquals(
    [36, 40, 44, 48, 52].map((o) => v.getUint32(o, true)),
    [0xaaaa, 1, 8, 0xbbbb, 2],
  );
  assertEquals(b[56], 1);
  assertEquals(
    featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX, VIRTIO_BLK_F_FLUSH),
    0x1_2000_0200n,
  );
  assertEquals(featureMask(VIRTIO_BLK_F_RO), 0x20n);
});

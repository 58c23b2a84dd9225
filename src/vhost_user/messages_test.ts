import { assertEquals, assertThrows } from "../testing/assert.ts";
import {
  decodeConfig,
  decodeHeader,
  decodeInflight,
  decodeLog,
  decodeMemoryTable,
  decodeSingleMemoryRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfig,
  encodeHeader,
  encodeInflight,
  encodeLog,
  encodeMemoryTable,
  encodeMessage,
  encodeSingleMemoryRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  HEADER_SIZE,
  type MemoryRegion,
  requestName,
  VHOST_USER_NEED_REPLY_MASK,
  VhostUserRequest,
} from "./messages.ts";

const region = (gpa: bigint, size: bigint, ua: bigint, off: bigint): MemoryRegion => ({
  guestPhysAddr: gpa,
  memorySize: size,
  userspaceAddr: ua,
  mmapOffset: off,
});

Deno.test("header round-trips and the request names are the spec's", () => {
  const out = new Uint8Array(HEADER_SIZE);
  encodeHeader({ request: 5, flags: 0x9, size: 264 }, out);
  assertEquals(decodeHeader(out), { request: 5, flags: 0x9, size: 264 });
  assertEquals(VhostUserRequest.GET_MAX_MEM_SLOTS, 36);
  assertEquals(VhostUserRequest.GET_STATUS, 40);
  assertEquals(requestName(37), "ADD_MEM_REG");
  assertEquals(requestName(999), undefined);
  const m = encodeMessage(VhostUserRequest.SET_FEATURES, encodeU64(3n), VHOST_USER_NEED_REPLY_MASK);
  assertEquals(decodeHeader(m), { request: 2, flags: 0x9, size: 8 });
});

Deno.test("every payload codec round-trips", () => {
  assertEquals(decodeU64(encodeU64(0xffff_ffff_ffff_ffffn)), 0xffff_ffff_ffff_ffffn);
  assertEquals(decodeVringState(encodeVringState({ index: 1, num: 256 })), { index: 1, num: 256 });
  const addr = {
    index: 2,
    flags: 1,
    descUserAddr: 0x7f00_0000_1000n,
    usedUserAddr: 0x7f00_0000_2000n,
    availUserAddr: 0x7f00_0000_3000n,
    logGuestAddr: 0x1234n,
  };
  assertEquals(decodeVringAddr(encodeVringAddr(addr)), addr);
  const regions = [
    region(0n, 0xa0000n, 0x7f00_0000_0000n, 0n),
    region(0x100000n, 1n << 30n, 2n, 4096n),
  ];
  assertEquals(encodeMemoryTable(regions).byteLength, 8 + 64);
  assertEquals(decodeMemoryTable(encodeMemoryTable(regions)), regions);
  const r = region(1n << 32n, 1n << 20n, 0x7f12_0000_0000n, 8192n);
  assertEquals(decodeSingleMemoryRegion(encodeSingleMemoryRegion(r)), r);
  const c = { offset: 20, flags: 1, data: new Uint8Array([1, 2, 3, 4]) };
  assertEquals(decodeConfig(encodeConfig(c)), c);
  const l = { mmapSize: 4096n, mmapOffset: 0n };
  assertEquals(decodeLog(encodeLog(l)), l);
  const inf = { mmapSize: 8192n, mmapOffset: 4096n, numQueues: 4, queueSize: 128 };
  assertEquals(encodeInflight(inf).byteLength, 24);
  assertEquals(decodeInflight(encodeInflight(inf)), inf);
  assertEquals(decodeVringFd(encodeVringFd({ index: 3, noFd: true })), {
    index: 3,
    noFd: true,
    reserved: 0n,
  });
  assertEquals(decodeVringFd(encodeVringFd({ index: 255, noFd: false })).noFd, false);
  assertEquals(decodeVringFd(encodeU64(0x203n)).reserved, 0x200n);
});

Deno.test("codecs refuse short buffers and out-of-range values", () => {
  assertThrows(() => decodeU64(new Uint8Array(7)), RangeError);
  assertThrows(() => decodeVringAddr(new Uint8Array(39)), RangeError);
  assertThrows(() => decodeMemoryTable(new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0])), RangeError);
  assertThrows(() => encodeVringFd({ index: 256, noFd: false }), RangeError);
});

/**
 * vhost-user wire structs: request numbers, header flags, feature bits and
 * the payload codecs. Numbers are little-endian (the machine order of every
 * host sluice runs on). Pure: no sockets, no state.
 * @module
 */

/** Requests the front-end sends to the back-end, by number. */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;

/** The highest request number defined. */
export const MAX_REQUEST = 43;

/** Name of a request number, for messages and logs ("SET_MEM_TABLE"), or undefined. */
export function requestName(request: number): string | undefined {
  for (const [name, value] of Object.entries(VhostUserRequest)) {
    if (value === request) return name;
  }
  return undefined;
}

/** The protocol version, in the two low bits of the header flags. */
export const VHOST_USER_VERSION = 0x1;
/** Mask of the version bits in the header flags. */
export const VHOST_USER_VERSION_MASK = 0x3;
/** Header flag: this message is a reply from the back-end. */
export const VHOST_USER_REPLY_MASK = 0x1 << 2;
/** Header flag: the front-end wants a REPLY_ACK (when that protocol feature is negotiated). */
export const VHOST_USER_NEED_REPLY_MASK = 0x1 << 3;

/** Virtio feature bit 30, reused by vhost-user to announce protocol feature negotiation. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** Virtio feature bit 26: the back-end can log dirty pages for migration. */
export const VHOST_F_LOG_ALL = 26;

/** Protocol feature bit numbers (GET/SET_PROTOCOL_FEATURES). */
export const VhostUserProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** A feature bit number as a 64-bit mask. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

/** Size of the message header: request, flags, size (three u32). */
export const HEADER_SIZE = 12;
/** Memory regions a SET_MEM_TABLE may carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_REGIONS = 8;
/** Size of one memory region on the wire. */
export const MEMORY_REGION_SIZE = 32;
/** Size of the memory table payload before its regions (nregions, padding). */
export const MEMORY_TABLE_HEADER_SIZE = 8;
/** Size of a single memory region payload (ADD/REM_MEM_REG): padding + region. */
export const SINGLE_MEMORY_REGION_SIZE = 8 + MEMORY_REGION_SIZE;
/** Size of a vring state payload. */
export const VRING_STATE_SIZE = 8;
/** Size of a vring address payload. */
export const VRING_ADDR_SIZE = 40;
/** Size of a log description payload. */
export const LOG_SIZE = 16;
/** Size of an inflight description payload (two u64, two u16, padded to 8). */
export const INFLIGHT_SIZE = 24;
/** Size of the config space payload before its data (offset, size, flags). */
export const CONFIG_HEADER_SIZE = 12;
/** Largest config space access (VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;
/** Largest payload of any accepted message (a full config space access). */
export const MAX_PAYLOAD_SIZE = CONFIG_HEADER_SIZE + MAX_CONFIG_SIZE;
/** Vring flag in SET_VRING_ADDR: log writes to the used ring. */
export const VHOST_VRING_F_LOG = 0;
/** In a kick/call/err u64: bits holding the vring index. */
export const VHOST_USER_VRING_INDEX_MASK = 0xff;
/** In a kick/call/err u64: no file descriptor accompanies the message. */
export const VHOST_USER_VRING_NOFD_MASK = 0x100;

/** The 12-byte header. */
export interface MessageHeader {
  /** Request number. */
  request: number;
  /** Version, REPLY and NEED_REPLY bits. */
  flags: number;
  /** Payload size in bytes. */
  size: number;
}

/** A vring state description (SET_VRING_NUM/BASE, GET_VRING_BASE, SET_VRING_ENABLE). */
export interface VringState {
  index: number;
  num: number;
}

/** A vring address description (SET_VRING_ADDR). */
export interface VringAddr {
  index: number;
  flags: number;
  descUserAddr: bigint;
  usedUserAddr: bigint;
  availUserAddr: bigint;
  logGuestAddr: bigint;
}

/** One region of guest memory. */
export interface MemoryRegion {
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
  mmapOffset: bigint;
}

/** A config space access (GET/SET_CONFIG). */
export interface ConfigSpace {
  offset: number;
  /** 0: writable fields; 1: live migration. */
  flags: number;
  /** The bytes (its length is the wire's size field). */
  data: Uint8Array;
}

/** A log description (SET_LOG_BASE). */
export interface LogDescription {
  mmapSize: bigint;
  mmapOffset: bigint;
}

/** An inflight description (GET/SET_INFLIGHT_FD). */
export interface InflightDescription {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}

/** A vring index and NOFD flag carried in a u64 (SET_VRING_KICK/CALL/ERR). */
export interface VringFd {
  index: number;
  noFd: boolean;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function need(b: Uint8Array, size: number, what: string): void {
  if (b.byteLength < size) {
    throw new RangeError(`A ${what} needs ${size} bytes, got ${b.byteLength}`);
  }
}

/** Writes a header at the start of `out` (at least 12 bytes). */
export function encodeHeader(h: MessageHeader, out: Uint8Array): void {
  need(out, HEADER_SIZE, "header");
  const v = view(out);
  v.setUint32(0, h.request, true);
  v.setUint32(4, h.flags, true);
  v.setUint32(8, h.size, true);
}

/** Reads a header from the start of `b`. */
export function decodeHeader(b: Uint8Array): MessageHeader {
  need(b, HEADER_SIZE, "header");
  const v = view(b);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

/** Encodes a u64 payload. */
export function encodeU64(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setBigUint64(0, BigInt.asUintN(64, value), true);
  return out;
}

/** Decodes a u64 payload. */
export function decodeU64(b: Uint8Array): bigint {
  need(b, 8, "u64");
  return view(b).getBigUint64(0, true);
}

/** Encodes a vring state description. */
export function encodeVringState(s: VringState): Uint8Array {
  const out = new Uint8Array(VRING_STATE_SIZE);
  const v = view(out);
  v.setUint32(0, s.index, true);
  v.setUint32(4, s.num, true);
  return out;
}

/** Decodes a vring state description. */
export function decodeVringState(b: Uint8Array): VringState {
  need(b, VRING_STATE_SIZE, "vring state");
  const v = view(b);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

/** Encodes a vring address description. */
export function encodeVringAddr(a: VringAddr): Uint8Array {
  const out = new Uint8Array(VRING_ADDR_SIZE);
  const v = view(out);
  v.setUint32(0, a.index, true);
  v.setUint32(4, a.flags, true);
  v.setBigUint64(8, a.descUserAddr, true);
  v.setBigUint64(16, a.usedUserAddr, true);
  v.setBigUint64(24, a.availUserAddr, true);
  v.setBigUint64(32, a.logGuestAddr, true);
  return out;
}

/** Decodes a vring address description. */
export function decodeVringAddr(b: Uint8Array): VringAddr {
  need(b, VRING_ADDR_SIZE, "vring address");
  const v = view(b);
  return {
    index: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    descUserAddr: v.getBigUint64(8, true),
    usedUserAddr: v.getBigUint64(16, true),
    availUserAddr: v.getBigUint64(24, true),
    logGuestAddr: v.getBigUint64(32, true),
  };
}

function writeRegion(v: DataView, at: number, r: MemoryRegion): void {
  v.setBigUint64(at, r.guestPhysAddr, true);
  v.setBigUint64(at + 8, r.memorySize, true);
  v.setBigUint64(at + 16, r.userspaceAddr, true);
  v.setBigUint64(at + 24, r.mmapOffset, true);
}

function readRegion(v: DataView, at: number): MemoryRegion {
  return {
    guestPhysAddr: v.getBigUint64(at, true),
    memorySize: v.getBigUint64(at + 8, true),
    userspaceAddr: v.getBigUint64(at + 16, true),
    mmapOffset: v.getBigUint64(at + 24, true),
  };
}

/** Encodes a memory table: nregions, padding, then exactly the regions given. */
export function encodeMemoryTable(regions: readonly MemoryRegion[]): Uint8Array {
  const out = new Uint8Array(MEMORY_TABLE_HEADER_SIZE + regions.length * MEMORY_REGION_SIZE);
  const v = view(out);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => writeRegion(v, MEMORY_TABLE_HEADER_SIZE + i * MEMORY_REGION_SIZE, r));
  return out;
}

/** Decodes a memory table; the region count comes from the payload and must fit in `b`. */
export function decodeMemoryTable(b: Uint8Array): MemoryRegion[] {
  need(b, MEMORY_TABLE_HEADER_SIZE, "memory table");
  const v = view(b);
  const n = v.getUint32(0, true);
  need(b, MEMORY_TABLE_HEADER_SIZE + n * MEMORY_REGION_SIZE, "memory table");
  const regions: MemoryRegion[] = [];
  for (let i = 0; i < n; i++) {
    regions.push(readRegion(v, MEMORY_TABLE_HEADER_SIZE + i * MEMORY_REGION_SIZE));
  }
  return regions;
}

/** Encodes a single memory region description (ADD/REM_MEM_REG). */
export function encodeSingleMemoryRegion(r: MemoryRegion): Uint8Array {
  const out = new Uint8Array(SINGLE_MEMORY_REGION_SIZE);
  writeRegion(view(out), 8, r);
  return out;
}

/** Decodes a single memory region description. */
export function decodeSingleMemoryRegion(b: Uint8Array): MemoryRegion {
  need(b, SINGLE_MEMORY_REGION_SIZE, "single memory region");
  return readRegion(view(b), 8);
}

/** Encodes a config space access (12 bytes + data). */
export function encodeConfig(c: ConfigSpace): Uint8Array {
  const out = new Uint8Array(CONFIG_HEADER_SIZE + c.data.byteLength);
  const v = view(out);
  v.setUint32(0, c.offset, true);
  v.setUint32(4, c.data.byteLength, true);
  v.setUint32(8, c.flags, true);
  out.set(c.data, CONFIG_HEADER_SIZE);
  return out;
}

/** Decodes a config space access; the data is a copy of `size` bytes. */
export function decodeConfig(b: Uint8Array): ConfigSpace {
  need(b, CONFIG_HEADER_SIZE, "config space");
  const v = view(b);
  const size = v.getUint32(4, true);
  need(b, CONFIG_HEADER_SIZE + size, "config space");
  return {
    offset: v.getUint32(0, true),
    flags: v.getUint32(8, true),
    data: b.slice(CONFIG_HEADER_SIZE, CONFIG_HEADER_SIZE + size),
  };
}

/** Encodes a log description. */
export function encodeLog(l: LogDescription): Uint8Array {
  const out = new Uint8Array(LOG_SIZE);
  const v = view(out);
  v.setBigUint64(0, l.mmapSize, true);
  v.setBigUint64(8, l.mmapOffset, true);
  return out;
}

/** Decodes a log description. */
export function decodeLog(b: Uint8Array): LogDescription {
  need(b, LOG_SIZE, "log description");
  const v = view(b);
  return { mmapSize: v.getBigUint64(0, true), mmapOffset: v.getBigUint64(8, true) };
}

/** Encodes an inflight description (24 bytes, the last 4 padding). */
export function encodeInflight(d: InflightDescription): Uint8Array {
  const out = new Uint8Array(INFLIGHT_SIZE);
  const v = view(out);
  v.setBigUint64(0, d.mmapSize, true);
  v.setBigUint64(8, d.mmapOffset, true);
  v.setUint16(16, d.numQueues, true);
  v.setUint16(18, d.queueSize, true);
  return out;
}

/** Decodes an inflight description. */
export function decodeInflight(b: Uint8Array): InflightDescription {
  need(b, INFLIGHT_SIZE, "inflight description");
  const v = view(b);
  return {
    mmapSize: v.getBigUint64(0, true),
    mmapOffset: v.getBigUint64(8, true),
    numQueues: v.getUint16(16, true),
    queueSize: v.getUint16(18, true),
  };
}

/** Encodes a vring index and NOFD flag as the u64 of SET_VRING_KICK/CALL/ERR. */
export function encodeVringFd(f: VringFd): Uint8Array {
  if (!Number.isInteger(f.index) || f.index < 0 || f.index > VHOST_USER_VRING_INDEX_MASK) {
    throw new RangeError(`A vring index must be 0..255, got ${f.index}`);
  }
  return encodeU64(BigInt(f.index | (f.noFd ? VHOST_USER_VRING_NOFD_MASK : 0)));
}

/**
 * Decodes the u64 of SET_VRING_KICK/CALL/ERR. Bits above NOFD are reserved and
 * returned in `reserved` so the caller can refuse them.
 */
export function decodeVringFd(b: Uint8Array): VringFd & { reserved: bigint } {
  const u = decodeU64(b);
  return {
    index: Number(u & BigInt(VHOST_USER_VRING_INDEX_MASK)),
    noFd: (u & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n,
    reserved: u & ~BigInt(VHOST_USER_VRING_INDEX_MASK | VHOST_USER_VRING_NOFD_MASK),
  };
}

/** Builds one whole message: header (version 1 plus `flags`) and payload. */
export function encodeMessage(
  request: number,
  payload: Uint8Array = new Uint8Array(0),
  flags = 0,
): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  encodeHeader({ request, flags: VHOST_USER_VERSION | flags, size: payload.byteLength }, out);
  out.set(payload, HEADER_SIZE);
  return out;
}

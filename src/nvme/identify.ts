/**
 * Identify data structures (NVMe Base 2.0 "Identify command"; NVM Command
 * Set 1.0 for the namespace structures). Each builder zeroes the 4096-byte
 * buffer it is given and fills the fields; offsets are the specification's
 * byte offsets.
 * @module
 */
import { allZero, putAscii, putUtf8, setU64, viewOf } from "./bytes.ts";

/** Bytes of every Identify data structure. */
export const NVME_IDENTIFY_BYTES = 4096;

/** Controller or Namespace Structure values (CDW10 bits 7:0). */
export const NvmeCns = {
  Namespace: 0x00,
  Controller: 0x01,
  ActiveNamespaceList: 0x02,
  NamespaceIdDescriptorList: 0x03,
  NvmSetList: 0x04,
  IoCsNamespace: 0x05,
  IoCsController: 0x06,
  IoCsActiveNamespaceList: 0x07,
  IoCsIndependentNamespace: 0x08,
  AllocatedNamespaceList: 0x10,
  AllocatedNamespace: 0x11,
  NamespaceControllerList: 0x12,
  ControllerList: 0x13,
  PrimaryControllerCapabilities: 0x14,
  SecondaryControllerList: 0x15,
  NamespaceGranularityList: 0x16,
  UuidList: 0x17,
  DomainList: 0x18,
  EnduranceGroupList: 0x19,
  IoCsAllocatedNamespaceList: 0x1a,
  IoCsAllocatedNamespace: 0x1b,
  IoCommandSet: 0x1c,
} as const;

/** Command Set Identifiers (CDW11 bits 31:24). */
export const NvmeCsi = {
  Nvm: 0x00,
  KeyValue: 0x01,
  Zoned: 0x02,
} as const;

/** CNS (CDW10 bits 7:0). */
export function identifyCns(cdw10: number): number {
  return cdw10 & 0xff;
}

/** CNTID (CDW10 bits 31:16). */
export function identifyCntid(cdw10: number): number {
  return cdw10 >>> 16;
}

/** CSI (CDW11 bits 31:24). */
export function identifyCsi(cdw11: number): number {
  return cdw11 >>> 24;
}

/** Controller types (Identify Controller CNTRLTYPE, byte 111). */
export const NvmeControllerType = {
  NotReported: 0,
  Io: 1,
  Discovery: 2,
  Administrative: 3,
} as const;

/** CMIC bits (byte 76). */
export const NvmeCmic = {
  MultiPort: 1 << 0,
  MultiController: 1 << 1,
  Sriov: 1 << 2,
  AnaReporting: 1 << 3,
} as const;

/** OAES bits (bytes 92-95): asynchronous events the controller can send. */
export const NvmeOaes = {
  NamespaceAttribute: 1 << 8,
  FirmwareActivation: 1 << 9,
  AnaChange: 1 << 11,
  DiscoveryLogChange: 1 << 31,
} as const;

/** CTRATT bits (bytes 96-99). */
export const NvmeCtratt = {
  HostId128Bit: 1 << 0,
  NonOperationalPowerStatePermissive: 1 << 1,
  NvmSets: 1 << 2,
  ReadRecoveryLevels: 1 << 3,
  EnduranceGroups: 1 << 4,
  PredictableLatency: 1 << 5,
  /** Traffic Based Keep Alive: any command restarts the keep alive timer. */
  TrafficBasedKeepAlive: 1 << 6,
  NamespaceGranularity: 1 << 7,
  SqAssociations: 1 << 8,
  UuidList: 1 << 9,
  ExtendedLbaFormats: 1 << 15,
} as const;

/** LPA bits (byte 261). */
export const NvmeLpa = {
  SmartPerNamespace: 1 << 0,
  CommandsSupportedAndEffects: 1 << 1,
  ExtendedData: 1 << 2,
  Telemetry: 1 << 3,
  PersistentEventLog: 1 << 4,
} as const;

/** ONCS bits (bytes 520-521). */
export const NvmeOncs = {
  Compare: 1 << 0,
  WriteUncorrectable: 1 << 1,
  DatasetManagement: 1 << 2,
  WriteZeroes: 1 << 3,
  SaveSelect: 1 << 4,
  Reservations: 1 << 5,
  Timestamp: 1 << 6,
  Verify: 1 << 7,
  Copy: 1 << 8,
} as const;

/** VWC (byte 525): bit 0 present; bits 2:1 Flush with NSID FFFFFFFFh. */
export const NvmeVwc = {
  Present: 1 << 0,
  FlushBroadcastNotSupported: 2 << 1,
  FlushBroadcastSupported: 3 << 1,
} as const;

/** SGLS bits (bytes 536-539). */
export const NvmeSgls = {
  /** SGLs supported, no alignment requirement (bits 1:0 = 01b). */
  Supported: 1 << 0,
  /** SGLs supported, dword alignment required (bits 1:0 = 10b). */
  SupportedDwordAligned: 2 << 0,
  KeyedDataBlock: 1 << 2,
  BitBucket: 1 << 16,
  /** SGL Offset supported: in-capsule data addressed by offset (fabrics). */
  Offset: 1 << 20,
  TransportDataBlock: 1 << 21,
} as const;

/** The fields of Identify Controller (CNS 01h) this project fills. */
export interface IdentifyControllerFields {
  /** PCI Vendor ID (bytes 0-1) and Subsystem Vendor ID (2-3). */
  vid?: number;
  ssvid?: number;
  /** Serial Number, ASCII, space padded (bytes 4-23). */
  serialNumber: string;
  /** Model Number, ASCII, space padded (bytes 24-63). */
  modelNumber: string;
  /** Firmware Revision, ASCII, space padded (bytes 64-71). */
  firmwareRevision: string;
  /** Recommended Arbitration Burst (byte 72). */
  rab?: number;
  /** IEEE OUI (bytes 73-75), stored least significant byte first. */
  ieee?: number;
  cmic?: number;
  /** Maximum Data Transfer Size: 2^MDTS minimum pages; 0 is no limit (byte 77). */
  mdts: number;
  cntlid: number;
  /** Version (bytes 80-83), as the VS register. */
  ver: number;
  rtd3r?: number;
  rtd3e?: number;
  oaes?: number;
  ctratt?: number;
  cntrltype: number;
  oacs?: number;
  /** Abort Command Limit, 0's based (byte 258). */
  acl?: number;
  /** Asynchronous Event Request Limit, 0's based (byte 259). */
  aerl?: number;
  frmw?: number;
  lpa?: number;
  /** Error Log Page Entries, 0's based (byte 262). */
  elpe?: number;
  npss?: number;
  /** Warning and critical composite temperature thresholds, kelvin (266-269). */
  wctemp?: number;
  cctemp?: number;
  /** Keep Alive Support: granularity in 100 ms units; 0 unsupported (bytes 320-321). */
  kas?: number;
  /** SQ/CQ entry sizes: required (bits 3:0) and maximum (7:4), log2 (bytes 512-513). */
  sqes?: number;
  cqes?: number;
  /** Maximum Outstanding Commands (bytes 514-515). */
  maxcmd?: number;
  /** Number of Namespaces: the largest valid NSID (bytes 516-519). */
  nn?: number;
  oncs?: number;
  fuses?: number;
  fna?: number;
  vwc?: number;
  awun?: number;
  awupf?: number;
  /** I/O Command Set Vendor Specific Command Configuration (byte 530). */
  icsvscc?: number;
  nwpc?: number;
  acwu?: number;
  sgls?: number;
  /** Maximum Number of Allowed Namespaces (bytes 540-543). */
  mnan?: number;
  /** NVM Subsystem NQN, UTF-8, NUL padded (bytes 768-1023). */
  subnqn: string;
  /** NVMe over Fabrics fields (bytes 1792-2047). */
  fabrics?: {
    /** I/O Queue Command Capsule Supported Size, 16-byte units (1792-1795). */
    ioccsz: number;
    /** I/O Queue Response Capsule Supported Size, 16-byte units (1796-1799). */
    iorcsz: number;
    /** In Capsule Data Offset, 16-byte units (1800-1801). */
    icdoff: number;
    /** Fabrics Controller Attributes: bit 0 static controller model (1802). */
    fcatt: number;
    /** Maximum SGL Data Block Descriptors (1803). */
    msdbd: number;
    /** Discovery Controller Type (1806). */
    dctype?: number;
  };
  /** Power State Descriptor 0 maximum power, centiwatts (bytes 2048-2049). */
  psd0MaxPowerCw?: number;
}

/** Builds Identify Controller (CNS 01h) into `out` (4096 bytes). */
export function buildIdentifyController(out: Uint8Array, f: IdentifyControllerFields): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_IDENTIFY_BYTES);
  v.setUint16(0, f.vid ?? 0, true);
  v.setUint16(2, f.ssvid ?? 0, true);
  putAscii(out, 4, 20, f.serialNumber);
  putAscii(out, 24, 40, f.modelNumber);
  putAscii(out, 64, 8, f.firmwareRevision);
  v.setUint8(72, f.rab ?? 0);
  const ieee = f.ieee ?? 0;
  v.setUint8(73, ieee & 0xff);
  v.setUint8(74, (ieee >> 8) & 0xff);
  v.setUint8(75, (ieee >> 16) & 0xff);
  v.setUint8(76, f.cmic ?? 0);
  v.setUint8(77, f.mdts);
  v.setUint16(78, f.cntlid, true);
  v.setUint32(80, f.ver >>> 0, true);
  v.setUint32(84, f.rtd3r ?? 0, true);
  v.setUint32(88, f.rtd3e ?? 0, true);
  v.setUint32(92, (f.oaes ?? 0) >>> 0, true);
  v.setUint32(96, (f.ctratt ?? 0) >>> 0, true);
  v.setUint8(111, f.cntrltype);
  v.setUint16(256, f.oacs ?? 0, true);
  v.setUint8(258, f.acl ?? 0);
  v.setUint8(259, f.aerl ?? 0);
  v.setUint8(260, f.frmw ?? 0);
  v.setUint8(261, f.lpa ?? 0);
  v.setUint8(262, f.elpe ?? 0);
  v.setUint8(263, f.npss ?? 0);
  v.setUint16(266, f.wctemp ?? 0, true);
  v.setUint16(268, f.cctemp ?? 0, true);
  v.setUint16(320, f.kas ?? 0, true);
  v.setUint8(512, f.sqes ?? 0);
  v.setUint8(513, f.cqes ?? 0);
  v.setUint16(514, f.maxcmd ?? 0, true);
  v.setUint32(516, f.nn ?? 0, true);
  v.setUint16(520, f.oncs ?? 0, true);
  v.setUint16(522, f.fuses ?? 0, true);
  v.setUint8(524, f.fna ?? 0);
  v.setUint8(525, f.vwc ?? 0);
  v.setUint16(526, f.awun ?? 0, true);
  v.setUint16(528, f.awupf ?? 0, true);
  v.setUint8(530, f.icsvscc ?? 0);
  v.setUint8(531, f.nwpc ?? 0);
  v.setUint16(532, f.acwu ?? 0, true);
  v.setUint32(536, (f.sgls ?? 0) >>> 0, true);
  v.setUint32(540, f.mnan ?? 0, true);
  putUtf8(out, 768, 256, f.subnqn);
  if (f.fabrics !== undefined) {
    v.setUint32(1792, f.fabrics.ioccsz, true);
    v.setUint32(1796, f.fabrics.iorcsz, true);
    v.setUint16(1800, f.fabrics.icdoff, true);
    v.setUint8(1802, f.fabrics.fcatt);
    v.setUint8(1803, f.fabrics.msdbd);
    v.setUint8(1806, f.fabrics.dctype ?? 0);
  }
  v.setUint16(2048, f.psd0MaxPowerCw ?? 0, true);
}

/** NSFEAT bits (Identify Namespace byte 24). */
export const NvmeNsfeat = {
  ThinProvisioning: 1 << 0,
  NamespaceAtomics: 1 << 1,
  DeallocatedError: 1 << 2,
  UidReuse: 1 << 3,
  OptimalPerformance: 1 << 4,
} as const;

/** DLFEAT (byte 33): what reads of deallocated blocks return, and Write Zeroes DEAC. */
export const NvmeDlfeat = {
  ReadNotReported: 0,
  ReadsZeroes: 1,
  ReadsOnes: 2,
  WriteZeroesDeallocate: 1 << 3,
  GuardCrc: 1 << 4,
} as const;

/** The fields of Identify Namespace (CNS 00h, NVM command set) this project fills. */
export interface IdentifyNamespaceFields {
  /** Namespace Size, Capacity and Utilization in blocks (bytes 0-23). */
  nsze: number;
  ncap: number;
  nuse: number;
  nsfeat?: number;
  /** Number of LBA formats, 0's based (byte 25); one format, index 0, here. */
  nlbaf?: number;
  flbas?: number;
  /** Namespace Multi-path I/O and Sharing: bit 0 shared (byte 30). */
  nmic?: number;
  dlfeat?: number;
  /** NVM Capacity in bytes (bytes 48-63). */
  nvmcapBytes?: number;
  anagrpid?: number;
  /** Namespace Attributes: bit 0 write protected (byte 99). */
  nsattr?: number;
  /** 16 bytes (bytes 104-119). */
  nguid?: Uint8Array;
  /** 8 bytes (bytes 120-127). */
  eui64?: Uint8Array;
  /** LBA Format 0: data size as log2 (byte 130), metadata size (128-129). */
  lbaf0Lbads: number;
  lbaf0Ms?: number;
  lbaf0Rp?: number;
}

/** Builds Identify Namespace (CNS 00h) into `out` (4096 bytes). */
export function buildIdentifyNamespace(out: Uint8Array, f: IdentifyNamespaceFields): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_IDENTIFY_BYTES);
  setU64(v, 0, f.nsze);
  setU64(v, 8, f.ncap);
  setU64(v, 16, f.nuse);
  v.setUint8(24, f.nsfeat ?? 0);
  v.setUint8(25, f.nlbaf ?? 0);
  v.setUint8(26, f.flbas ?? 0);
  v.setUint8(30, f.nmic ?? 0);
  v.setUint8(33, f.dlfeat ?? 0);
  if (f.nvmcapBytes !== undefined) setU64(v, 48, f.nvmcapBytes);
  v.setUint32(92, f.anagrpid ?? 0, true);
  v.setUint8(99, f.nsattr ?? 0);
  if (f.nguid !== undefined) out.set(f.nguid.subarray(0, 16), 104);
  if (f.eui64 !== undefined) out.set(f.eui64.subarray(0, 8), 120);
  v.setUint16(128, f.lbaf0Ms ?? 0, true);
  v.setUint8(130, f.lbaf0Lbads);
  v.setUint8(131, (f.lbaf0Rp ?? 0) & 3);
}

/**
 * Builds the Active Namespace ID list (CNS 02h, and 07h for the NVM command
 * set): up to 1024 NSIDs greater than `after`, ascending, zero filled.
 * `nsids` must be ascending.
 */
export function buildActiveNamespaceList(
  out: Uint8Array,
  nsids: Iterable<number>,
  after: number,
): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_IDENTIFY_BYTES);
  let i = 0;
  for (const nsid of nsids) {
    if (nsid <= after) continue;
    if (i === 1024) break;
    v.setUint32(i * 4, nsid, true);
    i++;
  }
}

/** Namespace Identifier Types (descriptor NIDT). */
export const NvmeNidt = {
  Eui64: 1,
  Nguid: 2,
  Uuid: 3,
  Csi: 4,
} as const;

/** Builds the Namespace Identification Descriptor list (CNS 03h). */
export function buildNamespaceIdDescriptorList(out: Uint8Array, ids: {
  eui64?: Uint8Array;
  nguid?: Uint8Array;
  uuid?: Uint8Array;
  csi?: number;
}): void {
  out.fill(0, 0, NVME_IDENTIFY_BYTES);
  let off = 0;
  const put = (type: number, value: Uint8Array) => {
    out[off] = type;
    out[off + 1] = value.byteLength;
    out.set(value, off + 4);
    off += 4 + value.byteLength;
  };
  if (ids.eui64 !== undefined && !allZero(ids.eui64)) put(NvmeNidt.Eui64, ids.eui64);
  if (ids.nguid !== undefined && !allZero(ids.nguid)) put(NvmeNidt.Nguid, ids.nguid);
  if (ids.uuid !== undefined && !allZero(ids.uuid)) put(NvmeNidt.Uuid, ids.uuid);
  if (ids.csi !== undefined) put(NvmeNidt.Csi, Uint8Array.of(ids.csi));
}

/**
 * Builds the NVM command set's I/O Command Set specific Identify
 * Controller (CNS 06h, CSI 00h): VSL (byte 0), WZSL (1), WUSL (2), DMRL (3),
 * DMRSL (4-7), DMSL (8-15). Zero means "no limit reported".
 */
export function buildIdentifyNvmController(out: Uint8Array, f: {
  vsl?: number;
  wzsl?: number;
  wusl?: number;
  dmrl?: number;
  dmrsl?: number;
  dmsl?: number;
} = {}): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_IDENTIFY_BYTES);
  v.setUint8(0, f.vsl ?? 0);
  v.setUint8(1, f.wzsl ?? 0);
  v.setUint8(2, f.wusl ?? 0);
  v.setUint8(3, f.dmrl ?? 0);
  v.setUint32(4, f.dmrsl ?? 0, true);
  setU64(v, 8, f.dmsl ?? 0);
}

/**
 * Builds the NVM command set's I/O Command Set specific Identify Namespace
 * (CNS 05h, CSI 00h): LBSTM (bytes 0-7), PIC (8), ELBAF0.. (12..). With no
 * protection information and no storage tag every field is zero.
 */
export function buildIdentifyNvmNamespace(out: Uint8Array): void {
  out.fill(0, 0, NVME_IDENTIFY_BYTES);
}

/** Builds the I/O Command Set Independent Identify Namespace (CNS 08h). */
export function buildIdentifyIndependentNamespace(out: Uint8Array, f: {
  nsfeat?: number;
  nmic?: number;
  anagrpid?: number;
  nsattr?: number;
  /** Namespace Status: bit 0 ready (byte 14). */
  nstat?: number;
}): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_IDENTIFY_BYTES);
  v.setUint8(0, f.nsfeat ?? 0);
  v.setUint8(1, f.nmic ?? 0);
  v.setUint32(4, f.anagrpid ?? 0, true);
  v.setUint8(8, f.nsattr ?? 0);
  v.setUint8(14, f.nstat ?? 0);
}

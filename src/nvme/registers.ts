/**
 * Controller registers (NVMe Base 2.0, "Controller Registers"), which
 * NVMe over Fabrics exposes as properties read and written with Property
 * Get/Set at the same offsets. CAP is 8 bytes; VS, CC and CSTS are 4.
 * @module
 */

/** Register (property) offsets. */
export const NvmeReg = {
  CAP: 0x00,
  VS: 0x08,
  INTMS: 0x0c,
  INTMC: 0x10,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
  AQA: 0x24,
  ASQ: 0x28,
  ACQ: 0x30,
  CMBLOC: 0x38,
  CMBSZ: 0x3c,
  BPINFO: 0x40,
  BPRSEL: 0x44,
  BPMBL: 0x48,
  CMBMSC: 0x50,
  CMBSTS: 0x58,
  CRTO: 0x68,
} as const;

/** The fields of CAP (Controller Capabilities). */
export interface NvmeCap {
  /** Maximum Queue Entries Supported, 0's based (bits 15:0). */
  mqes: number;
  /** Contiguous Queues Required (bit 16). */
  cqr: boolean;
  /** Arbitration Mechanism Supported (bits 18:17). */
  ams: number;
  /** Timeout, worst-case time to CSTS.RDY, in 500 ms units (bits 31:24). */
  to: number;
  /** Doorbell Stride (bits 35:32). */
  dstrd: number;
  /** NVM Subsystem Reset Supported (bit 36). */
  nssrs: boolean;
  /** Command Sets Supported (bits 44:37); bit 0 NVM, bit 6 I/O command sets, bit 7 admin only. */
  css: number;
  /** Boot Partition Support (bit 45). */
  bps: boolean;
  /** Memory Page Size Minimum, 2^(12+MPSMIN) (bits 51:48). */
  mpsmin: number;
  /** Memory Page Size Maximum (bits 55:52). */
  mpsmax: number;
  /** Controller Ready Modes Supported (bits 60:59). */
  crms: number;
}

/** CAP.CSS bits. */
export const NvmeCapCss = {
  Nvm: 1 << 0,
  IoCommandSets: 1 << 6,
  AdminOnly: 1 << 7,
} as const;

/** Builds the 64-bit CAP value. */
export function buildCap(c: NvmeCap): bigint {
  const lo = (c.mqes & 0xffff) | (c.cqr ? 1 << 16 : 0) | ((c.ams & 3) << 17) |
    ((c.to & 0xff) << 24);
  const hi = (c.dstrd & 0xf) | (c.nssrs ? 1 << 4 : 0) | ((c.css & 0xff) << 5) |
    (c.bps ? 1 << 13 : 0) | ((c.mpsmin & 0xf) << 16) | ((c.mpsmax & 0xf) << 20) |
    ((c.crms & 3) << 27);
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Splits CAP into its fields. */
export function parseCap(cap: bigint): NvmeCap {
  const lo = Number(cap & 0xffffffffn), hi = Number(cap >> 32n);
  return {
    mqes: lo & 0xffff,
    cqr: (lo & (1 << 16)) !== 0,
    ams: (lo >> 17) & 3,
    to: (lo >>> 24) & 0xff,
    dstrd: hi & 0xf,
    nssrs: (hi & (1 << 4)) !== 0,
    css: (hi >> 5) & 0xff,
    bps: (hi & (1 << 13)) !== 0,
    mpsmin: (hi >> 16) & 0xf,
    mpsmax: (hi >> 20) & 0xf,
    crms: (hi >> 27) & 3,
  };
}

/** VS value for major.minor.tertiary. */
export function nvmeVersion(major: number, minor: number, tertiary = 0): number {
  return ((major & 0xffff) << 16 | (minor & 0xff) << 8 | (tertiary & 0xff)) >>> 0;
}

/** "2.0.0" from a VS value. */
export function nvmeVersionText(vs: number): string {
  return `${vs >>> 16}.${(vs >> 8) & 0xff}.${vs & 0xff}`;
}

/** CC (Controller Configuration) bits and fields. */
export const NvmeCc = {
  EN: 1 << 0,
  CSS_SHIFT: 4,
  MPS_SHIFT: 7,
  AMS_SHIFT: 11,
  SHN_SHIFT: 14,
  IOSQES_SHIFT: 16,
  IOCQES_SHIFT: 20,
  CRIME: 1 << 24,
} as const;

/** CC.CSS values. */
export const NvmeCcCss = {
  Nvm: 0,
  AllIoCommandSets: 6,
  AdminOnly: 7,
} as const;

/** CC.SHN values (shutdown notification). */
export const NvmeShn = {
  None: 0,
  Normal: 1,
  Abrupt: 2,
} as const;

/** CC.EN. */
export function ccEn(cc: number): boolean {
  return (cc & NvmeCc.EN) !== 0;
}

/** CC.CSS (bits 6:4). */
export function ccCss(cc: number): number {
  return (cc >> NvmeCc.CSS_SHIFT) & 7;
}

/** CC.MPS (bits 10:7): memory page size is 2^(12+MPS). */
export function ccMps(cc: number): number {
  return (cc >> NvmeCc.MPS_SHIFT) & 0xf;
}

/** CC.AMS (bits 13:11). */
export function ccAms(cc: number): number {
  return (cc >> NvmeCc.AMS_SHIFT) & 7;
}

/** CC.SHN (bits 15:14). */
export function ccShn(cc: number): number {
  return (cc >> NvmeCc.SHN_SHIFT) & 3;
}

/** CC.IOSQES (bits 19:16): I/O SQ entry size is 2^IOSQES. */
export function ccIosqes(cc: number): number {
  return (cc >> NvmeCc.IOSQES_SHIFT) & 0xf;
}

/** CC.IOCQES (bits 23:20): I/O CQ entry size is 2^IOCQES. */
export function ccIocqes(cc: number): number {
  return (cc >> NvmeCc.IOCQES_SHIFT) & 0xf;
}

/** Builds a CC value. */
export function buildCc(f: {
  en: boolean;
  css?: number;
  mps?: number;
  ams?: number;
  shn?: number;
  iosqes?: number;
  iocqes?: number;
}): number {
  return ((f.en ? NvmeCc.EN : 0) | ((f.css ?? 0) & 7) << NvmeCc.CSS_SHIFT |
    ((f.mps ?? 0) & 0xf) << NvmeCc.MPS_SHIFT | ((f.ams ?? 0) & 7) << NvmeCc.AMS_SHIFT |
    ((f.shn ?? 0) & 3) << NvmeCc.SHN_SHIFT | ((f.iosqes ?? 0) & 0xf) << NvmeCc.IOSQES_SHIFT |
    ((f.iocqes ?? 0) & 0xf) << NvmeCc.IOCQES_SHIFT) >>> 0;
}

/** CSTS (Controller Status) bits. */
export const NvmeCsts = {
  RDY: 1 << 0,
  CFS: 1 << 1,
  SHST_SHIFT: 2,
  SHST_MASK: 3 << 2,
  NSSRO: 1 << 4,
  PP: 1 << 5,
  ST: 1 << 6,
} as const;

/** CSTS.SHST values. */
export const NvmeShst = {
  Normal: 0,
  Occurring: 1,
  Complete: 2,
} as const;

/** CSTS.RDY. */
export function cstsRdy(csts: number): boolean {
  return (csts & NvmeCsts.RDY) !== 0;
}

/** CSTS.CFS. */
export function cstsCfs(csts: number): boolean {
  return (csts & NvmeCsts.CFS) !== 0;
}

/** CSTS.SHST. */
export function cstsShst(csts: number): number {
  return (csts >> NvmeCsts.SHST_SHIFT) & 3;
}

/** The SQE and CQE sizes as CC.IOSQES/IOCQES and Identify SQES/CQES encode them (log2). */
export const NVME_SQES_LOG2 = 6;
export const NVME_CQES_LOG2 = 4;

/**
 * The Discovery log page (LID 70h, NVMe over Fabrics 1.1 "Discovery Log
 * Page"): a 1024-byte header, then one 1024-byte entry per way to reach a
 * subsystem.
 * @module
 */
import { putAscii, putUtf8, setU64, viewOf } from "./bytes.ts";

/** Bytes of the header and of each entry. */
export const NVMF_DISCOVERY_HEADER_BYTES = 1024;
export const NVMF_DISCOVERY_ENTRY_BYTES = 1024;

/** Transport types (TRTYPE). */
export const NvmfTrtype = {
  Rdma: 1,
  FibreChannel: 2,
  Tcp: 3,
  IntraHost: 0xfe,
} as const;

/** Address families (ADRFAM). */
export const NvmfAdrfam = {
  Pci: 0,
  Ipv4: 1,
  Ipv6: 2,
  InfiniBand: 3,
  FibreChannel: 4,
  IntraHost: 0xfe,
} as const;

/** Subsystem types (SUBTYPE). */
export const NvmfSubtype = {
  /** A referral to another discovery service. */
  DiscoveryReferral: 1,
  Nvme: 2,
  CurrentDiscovery: 3,
} as const;

/** Transport Requirements (TREQ): secure channel (1:0) and SQ flow control disable (2). */
export const NvmfTreq = {
  SecureChannelNotSpecified: 0,
  SecureChannelRequired: 1,
  SecureChannelNotRequired: 2,
  DisableSqFlowControlSupported: 1 << 2,
} as const;

/** NVMe/TCP Transport Specific Address Subtype, SECTYPE (TSAS byte 0). */
export const NvmfTcpSectype = {
  None: 0,
  Tls12: 1,
  Tls13: 2,
} as const;

/** One Discovery log entry. */
export interface DiscoveryLogEntry {
  trtype: number;
  adrfam: number;
  subtype: number;
  treq: number;
  portid: number;
  /** FFFFh: the dynamic controller model. */
  cntlid: number;
  /** Admin Max SQ Size (bytes 8-9). */
  asqsz: number;
  eflags?: number;
  /** Transport Service Identifier: the TCP port as text (bytes 32-63). */
  trsvcid: string;
  /** NVM Subsystem Qualified Name (bytes 256-511). */
  subnqn: string;
  /** Transport Address (bytes 512-767). */
  traddr: string;
  /** TCP: SECTYPE (byte 768). */
  sectype: number;
}

/** Writes the header: GENCTR (bytes 0-7), NUMREC (8-15), RECFMT 0 (16-17). */
export function writeDiscoveryLogHeader(out: Uint8Array, genctr: number, numrec: number): void {
  const v = viewOf(out);
  out.fill(0, 0, NVMF_DISCOVERY_HEADER_BYTES);
  setU64(v, 0, genctr);
  setU64(v, 8, numrec);
  v.setUint16(16, 0, true);
}

/** Writes entry `index` (0-based) after the header. */
export function writeDiscoveryLogEntry(out: Uint8Array, index: number, e: DiscoveryLogEntry): void {
  const off = NVMF_DISCOVERY_HEADER_BYTES + index * NVMF_DISCOVERY_ENTRY_BYTES;
  const v = viewOf(out);
  out.fill(0, off, off + NVMF_DISCOVERY_ENTRY_BYTES);
  v.setUint8(off + 0, e.trtype);
  v.setUint8(off + 1, e.adrfam);
  v.setUint8(off + 2, e.subtype);
  v.setUint8(off + 3, e.treq);
  v.setUint16(off + 4, e.portid, true);
  v.setUint16(off + 6, e.cntlid, true);
  v.setUint16(off + 8, e.asqsz, true);
  v.setUint16(off + 10, e.eflags ?? 0, true);
  // TRSVCID and TRADDR are ASCII strings (space padded); SUBNQN is a NUL-terminated NQN.
  putAscii(out, off + 32, 32, e.trsvcid);
  putUtf8(out, off + 256, 256, e.subnqn);
  putAscii(out, off + 512, 256, e.traddr);
  v.setUint8(off + 768, e.sectype);
}

/** Bytes of a log page with `entries` entries. */
export function discoveryLogBytes(entries: number): number {
  return NVMF_DISCOVERY_HEADER_BYTES + entries * NVMF_DISCOVERY_ENTRY_BYTES;
}

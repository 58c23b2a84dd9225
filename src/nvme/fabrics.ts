/**
 * NVMe over Fabrics 1.1 command layouts: Connect (command and its 1024
 * bytes of data), Property Get/Set, and the values their completions
 * carry.
 * @module
 */

/** NQN of the discovery subsystem every target offers. */
export const NVME_DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery";
/** Connect data CNTLID asking for any controller (the dynamic model). */
export const NVME_CNTLID_DYNAMIC = 0xffff;
/** Highest controller ID a subsystem may hand out (FFF0h-FFFEh are reserved). */
export const NVME_CNTLID_MAX = 0xffef;

/** Byte offsets in the Connect command SQE. */
export const NvmfConnectSqe = {
  /** Record Format (bytes 40-41); 0 is the only format. */
  RECFMT: 40,
  /** Queue ID (bytes 42-43): 0 is the admin queue. */
  QID: 42,
  /** Submission Queue Size, 0's based (bytes 44-45). */
  SQSIZE: 44,
  /** Connect Attributes (byte 46): bits 1:0 priority, bit 2 disable SQ flow control. */
  CATTR: 46,
  /** Keep Alive Timeout in milliseconds (bytes 48-51); admin queue only. */
  KATO: 48,
} as const;

/** CATTR bit 2: the host does not use SQ flow control (SQHD is FFFFh). */
export const NVMF_CATTR_DISABLE_SQ_FLOW_CONTROL = 1 << 2;

/** Bytes of the Connect command's data. */
export const NVMF_CONNECT_DATA_BYTES = 1024;

/** Byte offsets in the Connect data. */
export const NvmfConnectData = {
  /** Host Identifier, 16 bytes. */
  HOSTID: 0,
  /** Controller ID (bytes 16-17): FFFFh for the admin queue of a dynamic controller. */
  CNTLID: 16,
  /** Subsystem NQN, 256 bytes, NUL terminated. */
  SUBNQN: 256,
  /** Host NQN, 256 bytes, NUL terminated. */
  HOSTNQN: 512,
} as const;

/** Bytes of an NQN field. */
export const NVMF_NQN_FIELD_BYTES = 256;

/**
 * Connect completion DW0 for Connect Invalid Parameters: IPO, the byte
 * offset of the bad field (15:0), and IATTR (16): 0 in the SQE, 1 in the data.
 */
export function connectInvalidParameterDw0(inData: boolean, offset: number): number {
  return ((offset & 0xffff) | (inData ? 1 << 16 : 0)) >>> 0;
}

/** Connect success DW0: CNTLID (15:0) and AUTHREQ (17:16, 0: no authentication). */
export function connectSuccessDw0(cntlid: number): number {
  return cntlid & 0xffff;
}

/** Byte offsets in Property Get / Property Set. */
export const NvmfPropertySqe = {
  /** Attributes (byte 40): bits 2:0 size, 0 = 4 bytes, 1 = 8 bytes. */
  ATTRIB: 40,
  /** Offset of the property (bytes 44-47). */
  OFST: 44,
  /** Value to set (bytes 48-55); Property Set only. */
  VALUE: 48,
} as const;

/** Property size in bytes from ATTRIB; -1 when reserved. */
export function propertySize(attrib: number): number {
  const s = attrib & 7;
  return s === 0 ? 4 : s === 1 ? 8 : -1;
}

/**
 * Command opcodes: the Admin command set and the NVM I/O command set (NVMe
 * Base 2.0 and NVM Command Set 1.0), the Fabrics command type (FCTYPE) of
 * opcode 7Fh (NVMe over Fabrics 1.1), and the data direction both encode in
 * their two low bits.
 * @module
 */

/** Admin command opcodes (NVMe Base 2.0, figure "Opcodes for Admin Commands"). */
export const NvmeAdminOpcode = {
  DeleteIoSq: 0x00,
  CreateIoSq: 0x01,
  GetLogPage: 0x02,
  DeleteIoCq: 0x04,
  CreateIoCq: 0x05,
  Identify: 0x06,
  Abort: 0x08,
  SetFeatures: 0x09,
  GetFeatures: 0x0a,
  AsyncEventRequest: 0x0c,
  NamespaceManagement: 0x0d,
  FirmwareCommit: 0x10,
  FirmwareImageDownload: 0x11,
  DeviceSelfTest: 0x14,
  NamespaceAttachment: 0x15,
  KeepAlive: 0x18,
  DirectiveSend: 0x19,
  DirectiveReceive: 0x1a,
  VirtualizationManagement: 0x1c,
  NvmeMiSend: 0x1d,
  NvmeMiReceive: 0x1e,
  CapacityManagement: 0x20,
  Lockdown: 0x24,
  DoorbellBufferConfig: 0x7c,
  /** Fabrics commands share this opcode; FCTYPE (byte 4) says which. */
  Fabrics: 0x7f,
  FormatNvm: 0x80,
  SecuritySend: 0x81,
  SecurityReceive: 0x82,
  Sanitize: 0x84,
  GetLbaStatus: 0x86,
} as const;

/** NVM command set I/O opcodes (NVM Command Set 1.0). */
export const NvmeIoOpcode = {
  Flush: 0x00,
  Write: 0x01,
  Read: 0x02,
  WriteUncorrectable: 0x04,
  Compare: 0x05,
  WriteZeroes: 0x08,
  DatasetManagement: 0x09,
  Verify: 0x0c,
  ReservationRegister: 0x0d,
  ReservationReport: 0x0e,
  ReservationAcquire: 0x11,
  ReservationRelease: 0x15,
  Copy: 0x19,
} as const;

/** The opcode of every Fabrics command (SQE byte 0). */
export const NVME_FABRICS_OPCODE = 0x7f;

/** Fabrics command types (SQE byte 4 of opcode 7Fh; NVMe over Fabrics 1.1). */
export const NvmfFabricsType = {
  PropertySet: 0x00,
  Connect: 0x01,
  PropertyGet: 0x04,
  AuthenticationSend: 0x05,
  AuthenticationReceive: 0x06,
  Disconnect: 0x08,
} as const;

/** Data transfer direction: opcode bits 1:0 (for Fabrics commands, FCTYPE bits 1:0). */
export const NvmeDataDirection = {
  None: 0,
  HostToController: 1,
  ControllerToHost: 2,
  Bidirectional: 3,
} as const;
/** A value of {@link NvmeDataDirection}. */
export type NvmeDataDirection = typeof NvmeDataDirection[keyof typeof NvmeDataDirection];

/**
 * The direction of data a command moves, from its opcode's two low bits, or
 * for a Fabrics command (opcode 7Fh, whose low bits are 11b) from FCTYPE's.
 * Allocation-free: the transport calls it once per command.
 */
export function nvmeDataDirection(sqe: Uint8Array): NvmeDataDirection {
  const opc = sqe[0] as number;
  const bits = opc === NVME_FABRICS_OPCODE ? (sqe[4] as number) & 3 : opc & 3;
  return bits as NvmeDataDirection;
}

const adminNames = nameTable(NvmeAdminOpcode);
const ioNames = nameTable(NvmeIoOpcode);
const fabricsNames = nameTable(NvmfFabricsType);

/** A readable name for a command (logs, errors); control path only. */
export function nvmeOpcodeName(sqe: Uint8Array, admin: boolean): string {
  const opc = sqe[0] as number;
  if (opc === NVME_FABRICS_OPCODE) {
    const t = sqe[4] as number;
    return `Fabrics ${fabricsNames.get(t) ?? `FCTYPE ${hex2(t)}`}`;
  }
  return (admin ? adminNames : ioNames).get(opc) ?? `opcode ${hex2(opc)}`;
}

function nameTable(o: Record<string, number>): Map<number, string> {
  return new Map(Object.entries(o).map(([k, v]) => [v, k]));
}

function hex2(n: number): string {
  return `${n.toString(16).padStart(2, "0")}h`;
}

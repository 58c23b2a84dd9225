/**
 * Get Log Page (NVMe Base 2.0 "Get Log Page command" and "Log Page
 * Identifiers"): the command's fields and builders for the log pages this
 * project serves. The Discovery log page (70h) is in `discovery_log.ts`.
 * @module
 */
import { setU64, viewOf } from "./bytes.ts";

/** Log Page Identifiers. */
export const NvmeLid = {
  SupportedLogPages: 0x00,
  ErrorInformation: 0x01,
  SmartHealth: 0x02,
  FirmwareSlot: 0x03,
  ChangedNamespaceList: 0x04,
  CommandsSupportedAndEffects: 0x05,
  DeviceSelfTest: 0x06,
  TelemetryHostInitiated: 0x07,
  TelemetryControllerInitiated: 0x08,
  EnduranceGroupInformation: 0x09,
  AsymmetricNamespaceAccess: 0x0c,
  PersistentEventLog: 0x0d,
  LbaStatusInformation: 0x0e,
  FeatureIdentifiersSupportedAndEffects: 0x12,
  Discovery: 0x70,
  ReservationNotification: 0x80,
  SanitizeStatus: 0x81,
} as const;

/** The fields of a Get Log Page command. */
export interface GetLogPageFields {
  lid: number;
  /** Log Specific Parameter (CDW10 bits 14:8). */
  lsp: number;
  /** Retain Asynchronous Event (CDW10 bit 15). */
  rae: boolean;
  /** Bytes to return: (NUMDU:NUMDL + 1) * 4. */
  bytes: number;
  /** Log Page Offset in bytes (CDW13:CDW12). */
  offset: number;
  /** Log Specific Identifier (CDW11 bits 31:16). */
  lsi: number;
  /** Offset Type (CDW14 bit 23): the offset is an index, not bytes. */
  ot: boolean;
  /** Command Set Identifier (CDW14 bits 31:24). */
  csi: number;
}

/** Reads the Get Log Page fields from CDW10-14 (allocates the result; control path). */
export function parseGetLogPage(v: DataView): GetLogPageFields {
  const cdw10 = v.getUint32(40, true), cdw11 = v.getUint32(44, true);
  const numd = (((cdw11 & 0xffff) * 0x10000) + (cdw10 >>> 16)) + 1;
  return {
    lid: cdw10 & 0xff,
    lsp: (cdw10 >> 8) & 0x7f,
    rae: (cdw10 & (1 << 15)) !== 0,
    bytes: numd * 4,
    offset: v.getUint32(48, true) + v.getUint32(52, true) * 0x1_0000_0000,
    lsi: cdw11 >>> 16,
    ot: (v.getUint32(56, true) & (1 << 23)) !== 0,
    csi: v.getUint32(56, true) >>> 24,
  };
}

/** Bytes of one Error Information log entry. */
export const NVME_ERROR_LOG_ENTRY_BYTES = 64;

/** One Error Information log entry (LID 01h). */
export interface ErrorLogEntry {
  /** Unique, incrementing; 0 marks an unused entry (bytes 0-7). */
  errorCount: number;
  sqid: number;
  cid: number;
  /** Status field value (`status.ts`); stored with the phase bit below it (bytes 12-13). */
  status: number;
  /** Parameter Error Location: byte (7:0) and bit (10:8) in the command; FFFFh if n/a. */
  parameterErrorLocation: number;
  lba: number;
  nsid: number;
  /** Transport Type (byte 29), as the discovery log's TRTYPE. */
  trtype: number;
  csi?: number;
}

/** Writes an Error Information entry at `off` of `out` (allocation-free). */
export function writeErrorLogEntry(v: DataView, off: number, e: ErrorLogEntry): void {
  for (let i = 0; i < NVME_ERROR_LOG_ENTRY_BYTES; i += 4) v.setUint32(off + i, 0, true);
  setU64(v, off, e.errorCount);
  v.setUint16(off + 8, e.sqid, true);
  v.setUint16(off + 10, e.cid, true);
  v.setUint16(off + 12, (e.status & 0x7fff) << 1, true);
  v.setUint16(off + 14, e.parameterErrorLocation, true);
  setU64(v, off + 16, e.lba);
  v.setUint32(off + 24, e.nsid, true);
  v.setUint8(off + 29, e.trtype);
  v.setUint8(off + 30, e.csi ?? 0);
}

/** Bytes of the SMART / Health Information log page. */
export const NVME_SMART_LOG_BYTES = 512;

/** Critical Warning bits (SMART byte 0). */
export const NvmeCriticalWarning = {
  SpareBelowThreshold: 1 << 0,
  Temperature: 1 << 1,
  ReliabilityDegraded: 1 << 2,
  ReadOnly: 1 << 3,
  VolatileBackupFailed: 1 << 4,
  PersistentMemoryReadOnly: 1 << 5,
} as const;

/** The SMART / Health Information fields (LID 02h). 128-bit counters are given as safe integers. */
export interface SmartLogFields {
  criticalWarning?: number;
  /** Composite Temperature in kelvin (bytes 1-2). */
  temperatureK: number;
  availableSparePct: number;
  availableSpareThresholdPct: number;
  percentageUsed: number;
  /** In thousands of 512-byte units, rounded up (bytes 32-47). */
  dataUnitsRead: number;
  dataUnitsWritten: number;
  hostReadCommands: number;
  hostWriteCommands: number;
  controllerBusyTimeMin?: number;
  powerCycles?: number;
  powerOnHours?: number;
  unsafeShutdowns?: number;
  mediaErrors?: number;
  /** Number of Error Information Log Entries over the controller's life (bytes 176-191). */
  errorLogEntries: number;
}

/** Builds the SMART / Health Information log page into `out` (512 bytes). */
export function buildSmartLog(out: Uint8Array, f: SmartLogFields): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_SMART_LOG_BYTES);
  v.setUint8(0, f.criticalWarning ?? 0);
  v.setUint16(1, f.temperatureK, true);
  v.setUint8(3, f.availableSparePct);
  v.setUint8(4, f.availableSpareThresholdPct);
  v.setUint8(5, f.percentageUsed);
  setU64(v, 32, f.dataUnitsRead);
  setU64(v, 48, f.dataUnitsWritten);
  setU64(v, 64, f.hostReadCommands);
  setU64(v, 80, f.hostWriteCommands);
  setU64(v, 96, f.controllerBusyTimeMin ?? 0);
  setU64(v, 112, f.powerCycles ?? 0);
  setU64(v, 128, f.powerOnHours ?? 0);
  setU64(v, 144, f.unsafeShutdowns ?? 0);
  setU64(v, 160, f.mediaErrors ?? 0);
  setU64(v, 176, f.errorLogEntries);
}

/** SMART "Data Units": thousands of 512-byte units, rounded up. */
export function smartDataUnits(bytes: number): number {
  return Math.ceil(bytes / 512 / 1000);
}

/** Bytes of the Firmware Slot Information log page. */
export const NVME_FIRMWARE_SLOT_LOG_BYTES = 512;

/** Builds the Firmware Slot Information log page (LID 03h): one slot, active. */
export function buildFirmwareSlotLog(
  out: Uint8Array,
  activeSlot: number,
  revisions: string[],
): void {
  out.fill(0, 0, NVME_FIRMWARE_SLOT_LOG_BYTES);
  out[0] = activeSlot & 7;
  revisions.slice(0, 7).forEach((rev, i) => {
    for (let j = 0; j < 8; j++) {
      const c = j < rev.length ? rev.charCodeAt(j) : 0x20;
      out[8 + i * 8 + j] = c >= 0x20 && c <= 0x7e ? c : 0x3f;
    }
  });
}

/** Entries in the Changed Namespace List log page. */
export const NVME_CHANGED_NS_LIST_MAX = 1024;
/** Bytes of the Changed Namespace List log page. */
export const NVME_CHANGED_NS_LIST_BYTES = NVME_CHANGED_NS_LIST_MAX * 4;

/**
 * Builds the Changed Namespace List (LID 04h). More than 1024 changes are
 * reported as a first entry of FFFFFFFFh and zeroes.
 */
export function buildChangedNamespaceList(out: Uint8Array, nsids: readonly number[]): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_CHANGED_NS_LIST_BYTES);
  if (nsids.length > NVME_CHANGED_NS_LIST_MAX) {
    v.setUint32(0, 0xffffffff, true);
    return;
  }
  nsids.forEach((n, i) => v.setUint32(i * 4, n, true));
}

/** Bytes of the Commands Supported and Effects log page. */
export const NVME_EFFECTS_LOG_BYTES = 4096;

/** Commands Supported and Effects entry bits. */
export const NvmeEffects = {
  /** Command Supported. */
  Csupp: 1 << 0,
  /** Logical Block Content Change. */
  Lbcc: 1 << 1,
  /** Namespace Capability Change. */
  Ncc: 1 << 2,
  /** Namespace Inventory Change. */
  Nic: 1 << 3,
  /** Controller Capability Change. */
  Ccc: 1 << 4,
} as const;

/** Builds the Commands Supported and Effects log page (LID 05h). */
export function buildEffectsLog(
  out: Uint8Array,
  admin: ReadonlyMap<number, number>,
  io: ReadonlyMap<number, number>,
): void {
  const v = viewOf(out);
  out.fill(0, 0, NVME_EFFECTS_LOG_BYTES);
  for (const [opc, bits] of admin) v.setUint32(opc * 4, bits >>> 0, true);
  for (const [opc, bits] of io) v.setUint32(1024 + opc * 4, bits >>> 0, true);
}

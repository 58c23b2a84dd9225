/**
 * Completion status (NVMe Base 2.0, "Completion Queue Entry: Status Field").
 *
 * A status is carried here as one number laid out like the CQE's 15-bit
 * Status Field: SC in bits 7:0, SCT in bits 10:8, CRD in bits 12:11, More
 * in bit 13 and DNR in bit 14. The CQE stores it shifted left by one, above
 * the Phase Tag (see `cqe.ts`). Zero is success.
 * @module
 */

/** Status Code Type values (SCT). */
export const NvmeSct = {
  Generic: 0,
  CommandSpecific: 1,
  MediaError: 2,
  Path: 3,
  VendorSpecific: 7,
} as const;

/** Generic command status codes (SCT 0). */
export const NvmeGenericSc = {
  Success: 0x00,
  InvalidOpcode: 0x01,
  InvalidField: 0x02,
  CommandIdConflict: 0x03,
  DataTransferError: 0x04,
  AbortedPowerLoss: 0x05,
  InternalError: 0x06,
  AbortRequested: 0x07,
  AbortedSqDeletion: 0x08,
  AbortedFailedFused: 0x09,
  AbortedMissingFused: 0x0a,
  InvalidNamespaceOrFormat: 0x0b,
  CommandSequenceError: 0x0c,
  InvalidSglSegmentDescriptor: 0x0d,
  InvalidNumberOfSglDescriptors: 0x0e,
  DataSglLengthInvalid: 0x0f,
  MetadataSglLengthInvalid: 0x10,
  SglDescriptorTypeInvalid: 0x11,
  InvalidUseOfCmb: 0x12,
  PrpOffsetInvalid: 0x13,
  AtomicWriteUnitExceeded: 0x14,
  OperationDenied: 0x15,
  SglOffsetInvalid: 0x16,
  HostIdentifierInconsistentFormat: 0x18,
  KeepAliveTimerExpired: 0x19,
  KeepAliveTimeoutInvalid: 0x1a,
  AbortedPreemptAndAbort: 0x1b,
  SanitizeFailed: 0x1c,
  SanitizeInProgress: 0x1d,
  SglDataBlockGranularityInvalid: 0x1e,
  CommandNotSupportedForQueueInCmb: 0x1f,
  NamespaceWriteProtected: 0x20,
  CommandInterrupted: 0x21,
  TransientTransportError: 0x22,
  ProhibitedByLockdown: 0x23,
  AdminCommandMediaNotReady: 0x24,
  // NVM command set specific values of the generic type.
  LbaOutOfRange: 0x80,
  CapacityExceeded: 0x81,
  NamespaceNotReady: 0x82,
  ReservationConflict: 0x83,
  FormatInProgress: 0x84,
} as const;

/** Command specific status codes (SCT 1) of admin and NVM commands. */
export const NvmeCommandSpecificSc = {
  CompletionQueueInvalid: 0x00,
  InvalidQueueIdentifier: 0x01,
  InvalidQueueSize: 0x02,
  AbortCommandLimitExceeded: 0x03,
  AsyncEventRequestLimitExceeded: 0x05,
  InvalidFirmwareSlot: 0x06,
  InvalidFirmwareImage: 0x07,
  InvalidInterruptVector: 0x08,
  InvalidLogPage: 0x09,
  InvalidFormat: 0x0a,
  InvalidQueueDeletion: 0x0c,
  FeatureIdentifierNotSaveable: 0x0d,
  FeatureNotChangeable: 0x0e,
  FeatureNotNamespaceSpecific: 0x0f,
  OverlappingRange: 0x14,
  NamespaceInsufficientCapacity: 0x15,
  NamespaceIdentifierUnavailable: 0x16,
  NamespaceAlreadyAttached: 0x18,
  NamespaceIsPrivate: 0x19,
  NamespaceNotAttached: 0x1a,
  ControllerListInvalid: 0x1c,
  InvalidControllerIdentifier: 0x1f,
  IoCommandSetNotSupported: 0x29,
  IoCommandSetNotEnabled: 0x2a,
  InvalidIoCommandSet: 0x2c,
  // NVM command set specific.
  ConflictingAttributes: 0x80,
  InvalidProtectionInformation: 0x81,
  AttemptedWriteToReadOnlyRange: 0x82,
} as const;

/** Fabrics command specific status codes (SCT 1; NVMe over Fabrics 1.1). */
export const NvmfFabricsSc = {
  IncompatibleFormat: 0x80,
  ControllerBusy: 0x81,
  ConnectInvalidParameters: 0x82,
  ConnectRestartDiscovery: 0x83,
  ConnectInvalidHost: 0x84,
  InvalidQueueType: 0x85,
  DiscoverRestart: 0x90,
  AuthenticationRequired: 0x91,
} as const;

/** Media and data integrity errors (SCT 2). */
export const NvmeMediaSc = {
  WriteFault: 0x80,
  UnrecoveredReadError: 0x81,
  EndToEndGuardCheckError: 0x82,
  EndToEndApplicationTagCheckError: 0x83,
  EndToEndReferenceTagCheckError: 0x84,
  CompareFailure: 0x85,
  AccessDenied: 0x86,
  DeallocatedOrUnwrittenBlock: 0x87,
  EndToEndStorageTagCheckError: 0x88,
} as const;

/** Path related status codes (SCT 3). */
export const NvmePathSc = {
  InternalPathError: 0x00,
  AsymmetricAccessPersistentLoss: 0x01,
  AsymmetricAccessInaccessible: 0x02,
  AsymmetricAccessTransition: 0x03,
  ControllerPathingError: 0x60,
  HostPathingError: 0x70,
  CommandAbortedByHost: 0x71,
} as const;

/** Do Not Retry (bit 14 of the status field). */
export const NVME_STATUS_DNR = 1 << 14;
/** More: the Error Information log page has more (bit 13). */
export const NVME_STATUS_MORE = 1 << 13;
/** Successful completion. */
export const NVME_STATUS_SUCCESS = 0;

/** Builds a status field value. */
export function nvmeStatus(sct: number, sc: number, dnr = false, more = false): number {
  return ((sct & 7) << 8) | (sc & 0xff) | (dnr ? NVME_STATUS_DNR : 0) |
    (more ? NVME_STATUS_MORE : 0);
}

/** The Status Code Type of a status field value. */
export function statusSct(status: number): number {
  return (status >> 8) & 7;
}

/** The Status Code of a status field value. */
export function statusSc(status: number): number {
  return status & 0xff;
}

/** Command Retry Delay index (bits 12:11). */
export function statusCrd(status: number): number {
  return (status >> 11) & 3;
}

/** Is Do Not Retry set? */
export function statusDnr(status: number): boolean {
  return (status & NVME_STATUS_DNR) !== 0;
}

/** Is More set? */
export function statusMore(status: number): boolean {
  return (status & NVME_STATUS_MORE) !== 0;
}

/** Shorthand: a generic (SCT 0) status. */
export function genericStatus(sc: number, dnr = true): number {
  return nvmeStatus(NvmeSct.Generic, sc, dnr);
}

/** Shorthand: a command specific (SCT 1) status. */
export function commandSpecificStatus(sc: number, dnr = true): number {
  return nvmeStatus(NvmeSct.CommandSpecific, sc, dnr);
}

/** Shorthand: a media and data integrity (SCT 2) status. */
export function mediaStatus(sc: number, dnr = false): number {
  return nvmeStatus(NvmeSct.MediaError, sc, dnr);
}

const names: readonly (Map<number, string> | undefined)[] = [
  new Map(Object.entries(NvmeGenericSc).map(([k, v]) => [v, k])),
  new Map([
    ...Object.entries(NvmeCommandSpecificSc).map(([k, v]) => [v, k] as [number, string]),
    ...Object.entries(NvmfFabricsSc).map(([k, v]) => [v, k] as [number, string]),
  ]),
  new Map(Object.entries(NvmeMediaSc).map(([k, v]) => [v, k])),
  new Map(Object.entries(NvmePathSc).map(([k, v]) => [v, k])),
];

/**
 * Readable text for a status (logs, tests); control path only. Command
 * specific codes 80h-91h are named as Fabrics codes and NVM codes alike:
 * which applies depends on the command.
 */
export function nvmeStatusText(status: number): string {
  const sct = statusSct(status), sc = statusSc(status);
  const name = names[sct]?.get(sc);
  const flags = `${statusDnr(status) ? " DNR" : ""}${statusMore(status) ? " M" : ""}`;
  return `${name ?? "unknown"} (SCT ${sct} SC ${sc.toString(16).padStart(2, "0")}h${flags})`;
}

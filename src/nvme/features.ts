/**
 * Set Features / Get Features (NVMe Base 2.0 "Features") and the
 * Asynchronous Event Request completion they configure.
 * @module
 */

/** Feature Identifiers. */
export const NvmeFid = {
  Arbitration: 0x01,
  PowerManagement: 0x02,
  LbaRangeType: 0x03,
  TemperatureThreshold: 0x04,
  ErrorRecovery: 0x05,
  VolatileWriteCache: 0x06,
  NumberOfQueues: 0x07,
  InterruptCoalescing: 0x08,
  InterruptVectorConfiguration: 0x09,
  WriteAtomicityNormal: 0x0a,
  AsyncEventConfiguration: 0x0b,
  AutonomousPowerStateTransition: 0x0c,
  HostMemoryBuffer: 0x0d,
  Timestamp: 0x0e,
  KeepAliveTimer: 0x0f,
  HostControlledThermalManagement: 0x10,
  NonOperationalPowerStateConfig: 0x11,
  ReadRecoveryLevelConfig: 0x12,
  PredictableLatencyModeConfig: 0x13,
  PredictableLatencyModeWindow: 0x14,
  HostBehaviorSupport: 0x16,
  SanitizeConfig: 0x17,
  EnduranceGroupEventConfig: 0x18,
  IoCommandSetProfile: 0x19,
  SoftwareProgressMarker: 0x80,
  HostIdentifier: 0x81,
  ReservationNotificationMask: 0x82,
  ReservationPersistence: 0x83,
  NamespaceWriteProtectionConfig: 0x84,
} as const;

/** Get Features Select (CDW10 bits 10:8). */
export const NvmeFeatureSel = {
  Current: 0,
  Default: 1,
  Saved: 2,
  SupportedCapabilities: 3,
} as const;

/** Capability bits returned in DW0 for SEL = Supported Capabilities. */
export const NvmeFeatureCapability = {
  Saveable: 1 << 0,
  NamespaceSpecific: 1 << 1,
  Changeable: 1 << 2,
} as const;

/** FID (CDW10 bits 7:0). */
export function featureFid(cdw10: number): number {
  return cdw10 & 0xff;
}

/** Get Features SEL (CDW10 bits 10:8). */
export function featureSel(cdw10: number): number {
  return (cdw10 >> 8) & 7;
}

/** Set Features SV, save across resets (CDW10 bit 31). */
export function featureSave(cdw10: number): boolean {
  return (cdw10 & 0x8000_0000) !== 0;
}

/** Asynchronous Event Configuration bits (Feature 0Bh, CDW11). */
export const NvmeAec = {
  /** SMART / Health critical warnings (bits 7:0). */
  SmartCriticalWarnings: 0xff,
  NamespaceAttribute: 1 << 8,
  FirmwareActivation: 1 << 9,
  TelemetryLog: 1 << 10,
  AnaChange: 1 << 11,
  DiscoveryLogChange: 1 << 31,
} as const;

/** Asynchronous Event Types (AER completion DW0 bits 2:0). */
export const NvmeAsyncEventType = {
  Error: 0,
  SmartHealth: 1,
  Notice: 2,
  Immediate: 3,
  IoCommandSpecific: 6,
  VendorSpecific: 7,
} as const;

/** Asynchronous Event Information values of Notice events (DW0 bits 15:8). */
export const NvmeAsyncNotice = {
  NamespaceAttributeChanged: 0x00,
  FirmwareActivationStarting: 0x01,
  TelemetryLogChanged: 0x02,
  AnaChange: 0x03,
  PredictableLatencyAggregateLogChange: 0x04,
  LbaStatusAlert: 0x05,
  EnduranceGroupEventAggregateLogChange: 0x06,
  DiscoveryLogPageChange: 0xf0,
} as const;

/** AER completion DW0: type (2:0), information (15:8), associated log page (23:16). */
export function asyncEventDw0(type: number, info: number, lid: number): number {
  return ((type & 7) | (info & 0xff) << 8 | (lid & 0xff) << 16) >>> 0;
}

/** Number of Queues (Feature 07h) DW0/CDW11: NSQ (15:0) and NCQ (31:16), both 0's based. */
export function numberOfQueuesDw(nsqZeroBased: number, ncqZeroBased: number): number {
  return ((nsqZeroBased & 0xffff) | (ncqZeroBased & 0xffff) << 16) >>> 0;
}

/** Host Identifier feature: CDW11 bit 0 asks for the 128-bit identifier. */
export const NVME_HOST_ID_EXHID = 1 << 0;

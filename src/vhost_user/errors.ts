/**
 * The one error type of the vhost_user package.
 * @module
 */

/**
 * Why a message from the front-end was refused. Every kind ends the
 * connection: the stream can no longer be trusted.
 */
export type VhostUserErrorKind =
  /** The request number is not one the protocol defines. */
  | "unknownRequest"
  /** The request is defined but this back-end does not accept it (crypto, GPU, IOTLB...). */
  | "unsupportedRequest"
  /** The flags are not version 1, carry the reply bit, or set undefined bits. */
  | "badFlags"
  /** The size field does not match what the request's payload must be. */
  | "badSize"
  /** The message carried a different number of file descriptors than the request allows. */
  | "badFdCount"
  /** The payload has reserved bits set or a field out of its range. */
  | "badPayload"
  /** File descriptors arrived with a read in which no message began. */
  | "strayFds"
  /** A memory table lists more regions than the slot limit (8 unless configured). */
  | "tooManyRegions"
  /** A memory region has size 0. */
  | "zeroSizedRegion"
  /** A memory region's guest address, user address or mmap offset plus its size passes 2^64. */
  | "regionOverflow"
  /** Two memory regions of one table overlap in guest physical addresses. */
  | "overlappingRegions"
  /** A config space message's size field exceeds 256 bytes or disagrees with the payload. */
  | "badConfig"
  /** SET_FEATURES or SET_PROTOCOL_FEATURES acked a bit the back-end did not offer. */
  | "badFeatures"
  /** The request needs a protocol feature (or VHOST_USER_F_PROTOCOL_FEATURES) not negotiated. */
  | "notNegotiated"
  /** The request needs an owner and SET_OWNER has not been received. */
  | "notOwner"
  /** A vring index is not below the device's queue count. */
  | "badQueueIndex"
  /** The request is not legal in the queue's or session's current state (e.g. resizing a started ring). */
  | "illegalState"
  /** REM_MEM_REG names a region that is not in the memory table. */
  | "noSuchRegion"
  /** The back-end failed a request that has no REPLY_ACK to carry the failure. */
  | "backendFailed"
  /** The reader was used after it had already failed or been closed. */
  | "readerFailed";

/** A message from the front-end was malformed; close the connection. */
export class VhostUserError extends Error {
  /** What was wrong, for logs and tests. */
  readonly kind: VhostUserErrorKind;
  /**
   * File descriptors that came with the rejected message (or were held by the
   * reader when it failed). The caller owns them and must close them.
   */
  readonly fds: readonly number[];

  constructor(kind: VhostUserErrorKind, message: string, fds: readonly number[] = []) {
    super(message);
    this.name = "VhostUserError";
    this.kind = kind;
    this.fds = fds;
  }
}

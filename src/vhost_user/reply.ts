/**
 * Replies from the back-end: header with the REPLY flag, and the REPLY_ACK rule.
 * @module
 */

import {
  type ConfigSpace,
  encodeConfig,
  encodeInflight,
  encodeMessage,
  encodeU64,
  encodeVringState,
  featureBit,
  type InflightDescription,
  VHOST_USER_REPLY_MASK,
  VhostUserProtocolFeature,
  VhostUserRequest as R,
  type VringState,
} from "./messages.ts";
import type { VhostUserMessage } from "./reader.ts";

/** Requests whose reply is their own payload, so NEED_REPLY asks for nothing more. */
const EXPLICIT_REPLY: ReadonlySet<number> = new Set([
  R.GET_FEATURES,
  R.GET_PROTOCOL_FEATURES,
  R.GET_VRING_BASE,
  R.SET_LOG_BASE,
  R.GET_QUEUE_NUM,
  R.GET_CONFIG,
  R.POSTCOPY_ADVISE,
  R.POSTCOPY_END,
  R.GET_INFLIGHT_FD,
  R.GET_MAX_MEM_SLOTS,
  R.GET_STATUS,
]);

/** True if the request is answered with its own reply body. */
export function hasExplicitReply(request: number): boolean {
  return EXPLICIT_REPLY.has(request);
}

/**
 * True if `message` must be answered with a REPLY_ACK u64: NEED_REPLY was
 * set, REPLY_ACK is among the negotiated protocol features, and the request
 * has no reply body of its own.
 */
export function needsReplyAck(message: VhostUserMessage, protocolFeatures: bigint): boolean {
  return message.needReply &&
    (protocolFeatures & featureBit(VhostUserProtocolFeature.REPLY_ACK)) !== 0n &&
    !hasExplicitReply(message.request);
}

/** A reply message: version 1 and the REPLY flag. */
export function encodeReply(request: number, payload?: Uint8Array): Uint8Array {
  return encodeMessage(request, payload, VHOST_USER_REPLY_MASK);
}

/** A reply carrying a u64 (GET_FEATURES, GET_QUEUE_NUM, GET_STATUS, ...). */
export function replyU64(request: number, value: bigint): Uint8Array {
  return encodeReply(request, encodeU64(value));
}

/** A reply carrying a vring state (GET_VRING_BASE). */
export function replyVringState(request: number, state: VringState): Uint8Array {
  return encodeReply(request, encodeVringState(state));
}

/** The reply to GET_CONFIG. */
export function replyConfig(config: ConfigSpace): Uint8Array {
  return encodeReply(R.GET_CONFIG, encodeConfig(config));
}

/** The reply to GET_INFLIGHT_FD (send the inflight memfd with it). */
export function replyInflight(inflight: InflightDescription): Uint8Array {
  return encodeReply(R.GET_INFLIGHT_FD, encodeInflight(inflight));
}

/** A REPLY_ACK: u64 0 on success, 1 on failure. */
export function replyAck(request: number, ok: boolean): Uint8Array {
  return replyU64(request, ok ? 0n : 1n);
}

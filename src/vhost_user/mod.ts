/**
 * vhost-user wire layer: message structs and codecs (messages.ts), the
 * validating reader (reader.ts), back-end replies (reply.ts) and the one
 * error type (errors.ts). Dispatch and the backend live apart from these.
 * @module
 */
export * from "./errors.ts";
export * from "./messages.ts";
export * from "./reader.ts";
export * from "./reply.ts";
export * from "./session.ts";

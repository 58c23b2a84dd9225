/**
 * JSON-RPC errors. Codes: the JSON-RPC 2.0 reserved codes, plus negative
 * errno values for operating errors (as SPDK returns, e.g. -19 for a
 * missing bdev), so scripts written for SPDK read the same codes.
 * @module
 */

/** JSON-RPC 2.0 reserved error codes. */
export const RpcErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
} as const;

/** An error returned to the RPC caller with its code and message. */
export class RpcError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.name = "RpcError";
    this.code = code;
  }
}

/** A parameter is missing, of the wrong type, or out of range. */
export class RpcParamsError extends RpcError {
  constructor(message: string) {
    super(RpcErrorCode.InvalidParams, `Invalid parameters: ${message}`);
    this.name = "RpcParamsError";
  }
}

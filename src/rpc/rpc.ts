/**
 * The RPC table: every management operation is a named method here, and
 * every front end (the Unix-socket JSON-RPC server, the CLI, later the web
 * admin) calls through it, so nothing is implemented twice. Method names
 * follow SPDK's `<subsystem>_<object>_<verb>`.
 * @module
 */
import { BdevError } from "../bdev/errors.ts";
import { RpcError, RpcErrorCode } from "./errors.ts";
import { Params } from "./params.ts";

/** A method handler: validated params in, JSON-serializable result out. */
export type RpcHandler<Ctx> = (params: Params, ctx: Ctx) => unknown | Promise<unknown>;

/** How a method is registered. */
export interface RpcMethodInfo {
  /** One line shown by `rpc_get_methods` callers and `sluice rpc --help`. */
  help: string;
  /** Does a successful call change the configuration (so it is saved)? */
  mutating?: boolean;
}

interface Entry<Ctx> extends RpcMethodInfo {
  name: string;
  handler: RpcHandler<Ctx>;
  aliasOf?: string;
}

/** A JSON-RPC 2.0 response object. */
export interface RpcResponse {
  jsonrpc: "2.0";
  id: string | number | null;
  result?: unknown;
  error?: { code: number; message: string };
}

/** The method table and JSON-RPC 2.0 dispatch. */
export class RpcTable<Ctx> {
  readonly #methods = new Map<string, Entry<Ctx>>();

  /** Adds a method; names are unique. */
  register(name: string, info: RpcMethodInfo, handler: RpcHandler<Ctx>): void {
    if (this.#methods.has(name)) throw new Error(`RPC method "${name}" registered twice`);
    this.#methods.set(name, { ...info, name, handler });
  }

  /** Adds `alias` as another name of `target` (e.g. SPDK's deprecated names). */
  alias(alias: string, target: string): void {
    const t = this.#methods.get(target);
    if (t === undefined) throw new Error(`RPC alias "${alias}" of unknown method "${target}"`);
    this.#methods.set(alias, { ...t, name: alias, aliasOf: target });
  }

  /** Method names, sorted; aliases only when asked. */
  methods(includeAliases = false): string[] {
    return [...this.#methods.values()]
      .filter((m) => includeAliases || m.aliasOf === undefined)
      .map((m) => m.name)
      .sort();
  }

  /** The registration of `name`, if any. */
  info(name: string): RpcMethodInfo | undefined {
    return this.#methods.get(name);
  }

  /** Calls a method directly (CLI, web, load_config); throws RpcError. */
  async call(method: string, params: unknown, ctx: Ctx): Promise<unknown> {
    const m = this.#methods.get(method);
    if (m === undefined) {
      throw new RpcError(RpcErrorCode.MethodNotFound, `Method not found: ${method}`);
    }
    const p = new Params(params);
    try {
      const result = await m.handler(p, ctx);
      return result === undefined ? true : result;
    } catch (e) {
      throw toRpcError(e);
    }
  }

  /**
   * Handles one parsed JSON-RPC request (or batch). Returns the response,
   * or null for a notification (no id). Never throws.
   */
  async handle(
    request: unknown,
    ctx: Ctx,
    onMutated?: (method: string) => void | Promise<void>,
  ): Promise<RpcResponse | RpcResponse[] | null> {
    if (Array.isArray(request)) {
      if (request.length === 0) return invalid(null, "Invalid request: empty batch");
      const out: RpcResponse[] = [];
      for (const r of request) {
        const resp = await this.#handleOne(r, ctx, onMutated);
        if (resp !== null) out.push(resp);
      }
      return out.length > 0 ? out : null;
    }
    return await this.#handleOne(request, ctx, onMutated);
  }

  async #handleOne(
    req: unknown,
    ctx: Ctx,
    onMutated?: (method: string) => void | Promise<void>,
  ): Promise<RpcResponse | null> {
    if (typeof req !== "object" || req === null || Array.isArray(req)) {
      return invalid(null, "Invalid request: not an object");
    }
    const r = req as Record<string, unknown>;
    const rawId = r["id"];
    const id = typeof rawId === "string" || typeof rawId === "number" ? rawId : null;
    if (rawId !== undefined && rawId !== null && id === null) {
      return invalid(null, "Invalid request: id must be a string or number");
    }
    if (r["jsonrpc"] !== "2.0") return invalid(id, 'Invalid request: jsonrpc must be "2.0"');
    const method = r["method"];
    if (typeof method !== "string") return invalid(id, "Invalid request: method must be a string");
    const isNotification = !("id" in r);
    try {
      const result = await this.call(method, r["params"], ctx);
      if (this.#methods.get(method)?.mutating && onMutated) await onMutated(method);
      return isNotification ? null : { jsonrpc: "2.0", id, result };
    } catch (e) {
      const err = toRpcError(e);
      return isNotification ? null : {
        jsonrpc: "2.0",
        id,
        error: { code: err.code, message: err.message },
      };
    }
  }
}

function invalid(id: string | number | null, message: string): RpcResponse {
  return { jsonrpc: "2.0", id, error: { code: RpcErrorCode.InvalidRequest, message } };
}

/** Maps any thrown value to an RpcError with a caller-facing message. */
export function toRpcError(e: unknown): RpcError {
  if (e instanceof RpcError) return e;
  if (e instanceof BdevError) return new RpcError(e.code, e.message);
  if (e instanceof Error && "errno" in e && typeof e.errno === "number") {
    return new RpcError(-e.errno, e.message);
  }
  if (e instanceof Deno.errors.NotFound) return new RpcError(-2, e.message);
  if (e instanceof Deno.errors.PermissionDenied) return new RpcError(-13, e.message);
  const msg = e instanceof Error ? e.message : String(e);
  return new RpcError(RpcErrorCode.InternalError, `Internal error: ${msg}`);
}

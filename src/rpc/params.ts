/**
 * Validation of RPC params: every field is checked for type and range, and
 * unknown fields are refused (as SPDK's JSON decoder does), so a typo in a
 * script is an error, not a silently ignored setting.
 * @module
 */
import { RpcParamsError } from "./errors.ts";

type Json = unknown;

/** Range limits for integers. */
export interface IntLimits {
  min?: number;
  max?: number;
}

/** A checked view of one request's params object. */
export class Params {
  readonly #obj: Record<string, Json>;
  readonly #seen = new Set<string>();

  constructor(params: Json) {
    if (params === undefined || params === null) {
      this.#obj = {};
    } else if (typeof params === "object" && !Array.isArray(params)) {
      this.#obj = params as Record<string, Json>;
    } else {
      throw new RpcParamsError("params must be an object");
    }
  }

  /** The raw params object, for methods that take a document (load_config). */
  raw(): Record<string, Json> {
    for (const k of Object.keys(this.#obj)) this.#seen.add(k);
    return this.#obj;
  }

  #get(name: string): Json {
    this.#seen.add(name);
    return this.#obj[name];
  }

  /** A required string. */
  str(name: string, pattern?: RegExp, what?: string): string {
    const v = this.optStr(name, pattern, what);
    if (v === undefined) throw new RpcParamsError(`"${name}" is required`);
    return v;
  }

  /** An optional string; non-empty, at most 4096 characters. */
  optStr(name: string, pattern?: RegExp, what?: string): string | undefined {
    const v = this.#get(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || v.length === 0 || v.length > 4096) {
      throw new RpcParamsError(`"${name}" must be a non-empty string, got ${show(v)}`);
    }
    if (pattern !== undefined && !pattern.test(v)) {
      throw new RpcParamsError(`"${name}" must be ${what ?? `like ${pattern}`}, got ${show(v)}`);
    }
    return v;
  }

  /** A required integer within limits. */
  int(name: string, limits: IntLimits = {}): number {
    const v = this.optInt(name, limits);
    if (v === undefined) throw new RpcParamsError(`"${name}" is required`);
    return v;
  }

  /** An optional integer within limits. */
  optInt(name: string, limits: IntLimits = {}): number | undefined {
    const v = this.#get(name);
    if (v === undefined || v === null) return undefined;
    const min = limits.min ?? Number.MIN_SAFE_INTEGER;
    const max = limits.max ?? Number.MAX_SAFE_INTEGER;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
      throw new RpcParamsError(
        `"${name}" must be an integer from ${min} to ${max}, got ${show(v)}`,
      );
    }
    return v;
  }

  /** An optional boolean. */
  optBool(name: string): boolean | undefined {
    const v = this.#get(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") {
      throw new RpcParamsError(`"${name}" must be true or false, got ${show(v)}`);
    }
    return v;
  }

  /** An optional value from a fixed set of strings. */
  optEnum<T extends string>(name: string, values: readonly T[]): T | undefined {
    const v = this.#get(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || !(values as readonly string[]).includes(v)) {
      throw new RpcParamsError(`"${name}" must be one of ${values.join(", ")}; got ${show(v)}`);
    }
    return v as T;
  }

  /** An optional RFC 4122 UUID string. */
  optUuid(name: string): string | undefined {
    return this.optStr(name, UUID_RE, "a UUID like 8-4-4-4-12 hex digits");
  }

  /**
   * A parameter SPDK defines that sluice does not implement: accepted when
   * absent or at one of its neutral `values` (rpc.py sends defaults), refused
   * with a clear error otherwise, never silently ignored.
   */
  neutral(name: string, values: readonly unknown[], what: string): void {
    const v = this.#get(name);
    if (v === undefined || v === null || values.includes(v)) return;
    throw new RpcParamsError(
      `"${name}" = ${show(v)} is not supported: ${what} (accepted: ${values.map(show).join(", ")})`,
    );
  }

  /** Refuses any param that no accessor asked for. Call after reading all. */
  done(): void {
    for (const k of Object.keys(this.#obj)) {
      if (!this.#seen.has(k)) throw new RpcParamsError(`unknown parameter "${k}"`);
    }
  }
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function show(v: Json): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}

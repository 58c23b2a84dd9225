/**
 * JSON-RPC 2.0 over a Unix stream socket, wire-compatible with SPDK's
 * rpc.py: requests may be pretty-printed and unframed; each response is one
 * JSON object followed by a newline.
 * @module
 */
import { JsonStreamSplitter, JsonTooLargeError } from "./json_stream.ts";
import { RpcErrorCode } from "./errors.ts";
import type { RpcResponse, RpcTable } from "./rpc.ts";

/** Options of {@link RpcServer}. */
export interface RpcServerOptions<Ctx> {
  path: string;
  table: RpcTable<Ctx>;
  ctx: Ctx;
  /** Called after each successful mutating method (saves the config). */
  onMutated?: (method: string) => void | Promise<void>;
  /** Most simultaneous connections; more are refused. */
  maxConnections?: number;
  /** Largest single request in bytes. */
  maxRequestBytes?: number;
  log?: (msg: string) => void;
  /** Shared with other front ends (the web admin) so their calls never interleave either. */
  queue?: RpcQueue;
}

/** Runs calls one at a time, in order: configuration changes never interleave. */
export class RpcQueue {
  #tail: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after every call queued before it has settled. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn, fn);
    this.#tail = run.catch(() => {});
    return run;
  }
}

/** Serves the RPC table on a Unix socket. */
export class RpcServer<Ctx> {
  readonly path: string;
  readonly #opts: RpcServerOptions<Ctx>;
  readonly #listener: Deno.UnixListener;
  readonly #conns = new Set<Deno.UnixConn>();
  readonly #done: Promise<void>;
  /** Requests run one at a time across all connections: config changes never interleave. */
  readonly #queue: RpcQueue;

  constructor(opts: RpcServerOptions<Ctx>) {
    this.#opts = opts;
    this.#queue = opts.queue ?? new RpcQueue();
    this.path = opts.path;
    removeStaleSocket(opts.path);
    this.#listener = Deno.listen({ transport: "unix", path: opts.path });
    Deno.chmodSync(opts.path, 0o600);
    this.#done = this.#acceptLoop();
  }

  async #acceptLoop(): Promise<void> {
    const max = this.#opts.maxConnections ?? 64;
    try {
      for await (const conn of this.#listener) {
        if (this.#conns.size >= max) {
          this.#opts.log?.(`rpc: refusing connection: ${max} connections open`);
          conn.close();
          continue;
        }
        this.#conns.add(conn);
        this.#serve(conn).finally(() => this.#conns.delete(conn));
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) throw e;
    }
  }

  async #serve(conn: Deno.UnixConn): Promise<void> {
    const splitter = new JsonStreamSplitter(this.#opts.maxRequestBytes);
    const buf = new Uint8Array(64 * 1024);
    const enc = new TextEncoder();
    const send = async (resp: RpcResponse | RpcResponse[]) => {
      const bytes = enc.encode(JSON.stringify(resp) + "\n");
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    };
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        let texts: string[];
        try {
          texts = splitter.push(buf.subarray(0, n));
        } catch (e) {
          if (!(e instanceof JsonTooLargeError)) throw e;
          await send(errorResponse(RpcErrorCode.InvalidRequest, `Invalid request: ${e.message}`));
          break;
        }
        for (const text of texts) {
          let req: unknown;
          try {
            req = JSON.parse(text);
          } catch {
            // After unparseable input the stream position is lost: answer and hang up.
            await send(
              errorResponse(RpcErrorCode.ParseError, "Parse error: request is not valid JSON"),
            );
            return;
          }
          const resp = await this.#enqueue(() =>
            this.#opts.table.handle(req, this.#opts.ctx, this.#opts.onMutated)
          );
          if (resp !== null) await send(resp);
        }
      }
    } catch (e) {
      if (
        !(e instanceof Deno.errors.BadResource || e instanceof Deno.errors.BrokenPipe ||
          e instanceof Deno.errors.ConnectionReset)
      ) {
        this.#opts.log?.(`rpc: connection error: ${e instanceof Error ? e.message : e}`);
      }
    } finally {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    return this.#queue.run(fn);
  }

  /** Stops listening, closes connections and removes the socket file. */
  async close(): Promise<void> {
    this.#listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    await this.#done;
    try {
      Deno.removeSync(this.path);
    } catch { /* gone already */ }
  }
}

function errorResponse(code: number, message: string): RpcResponse {
  return { jsonrpc: "2.0", id: null, error: { code, message } };
}

/** Removes a socket file left by a dead process; refuses to remove anything else. */
function removeStaleSocket(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch {
    return;
  }
  if (!info.isSocket) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  Deno.removeSync(path);
}

/** Sends one request to a socket and returns the result; throws RpcClientError on error. */
export async function rpcCall(path: string, method: string, params?: unknown): Promise<unknown> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    throw new RpcClientError(
      `cannot connect to ${path}: ${e instanceof Error ? e.message : e}. Is sluice running?`,
      0,
    );
  }
  try {
    const req = { jsonrpc: "2.0", id: 1, method, ...(params === undefined ? {} : { params }) };
    await conn.write(new TextEncoder().encode(JSON.stringify(req)));
    const splitter = new JsonStreamSplitter();
    const buf = new Uint8Array(64 * 1024);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) throw new RpcClientError("connection closed before the response", 0);
      const texts = splitter.push(buf.subarray(0, n));
      if (texts.length > 0) {
        const resp = JSON.parse(texts[0] as string) as RpcResponse;
        if (resp.error) throw new RpcClientError(resp.error.message, resp.error.code);
        return resp.result;
      }
    }
  } finally {
    conn.close();
  }
}

/** An error response (or a failure to reach the server), seen by a client. */
export class RpcClientError extends Error {
  readonly code: number;
  constructor(message: string, code: number) {
    super(message);
    this.name = "RpcClientError";
    this.code = code;
  }
}

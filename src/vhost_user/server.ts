/**
 * A vhost-user server socket: accepts one front-end at a time (QEMU
 * reconnects after a restart), reads messages with their fds, runs them
 * through the session and sends the replies. Control path only: messages
 * are rare, so the async socket calls are fine here.
 * @module
 */
import { UnixSocket } from "../../ffi/unix_socket.ts";
import { sym } from "../../ffi/libc.ts";
import { MessageReader } from "./reader.ts";
import { VhostUserSession } from "./session.ts";
import { VhostUserError } from "./errors.ts";
import type { VhostUserBackend } from "./session.ts";
import { requestName } from "./messages.ts";

/** SLUICE_VHOST_TRACE=1 logs every message: for debugging a front-end. */
const TRACE = Deno.env.get("SLUICE_VHOST_TRACE") === "1";

/** Makes a fresh backend for each front-end connection. */
export type BackendFactory = () => VhostUserBackend & { close(): void };

/** Serves one vhost-user socket. */
export class VhostUserServer {
  readonly path: string;
  readonly #listener: UnixSocket;
  readonly #factory: BackendFactory;
  readonly #log: (msg: string) => void;
  #conn: UnixSocket | null = null;
  #closed = false;
  readonly #done: Promise<void>;

  constructor(path: string, factory: BackendFactory, log: (msg: string) => void) {
    this.path = path;
    this.#factory = factory;
    this.#log = log;
    this.#listener = UnixSocket.listen(path);
    this.#done = this.#acceptLoop();
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#closed) {
      let conn: UnixSocket;
      try {
        conn = await this.#listener.accept();
      } catch (e) {
        if (this.#closed) return;
        this.#log(`vhost-user ${this.path}: accept: ${e instanceof Error ? e.message : e}`);
        continue;
      }
      this.#conn = conn;
      await this.#serve(conn);
      this.#conn = null;
    }
  }

  async #serve(conn: UnixSocket): Promise<void> {
    const backend = this.#factory();
    const session = new VhostUserSession(backend);
    const reader = new MessageReader();
    const buf = new Uint8Array(4096);
    try {
      for (;;) {
        const r = await conn.recvMsg(buf, 8);
        if (r.bytes === 0) break; // the front-end went away
        reader.push(buf.subarray(0, r.bytes), r.fds);
        for (let msg = reader.next(); msg !== null; msg = reader.next()) {
          const out = session.handle(msg);
          if (TRACE) {
            this.#log(
              `vhost-user trace: ${requestName(msg.request) ?? msg.request} -> ${
                out.reply?.byteLength ?? "no"
              } reply bytes`,
            );
          }
          if (out.reply !== null) await conn.sendMsg(out.reply, out.replyFds);
          for (const fd of out.replyFds) sym.close(fd);
          for (const fd of out.closeFds) sym.close(fd);
        }
      }
    } catch (e) {
      if (e instanceof VhostUserError) {
        for (const fd of e.fds) sym.close(fd);
        this.#log(`vhost-user ${this.path}: ${e.message}; closing the connection`);
      } else if (!this.#closed) {
        this.#log(
          `vhost-user ${this.path}: ${e instanceof Error ? e.message : e}; closing the connection`,
        );
      }
    } finally {
      for (const fd of reader.close()) sym.close(fd);
      for (const fd of session.close()) sym.close(fd);
      backend.close();
      conn.close();
    }
  }

  /** Stops listening and drops the front-end. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#conn?.close();
    this.#listener.close();
    await this.#done.catch(() => {});
  }
}

/**
 * A vhost-user server socket: accepts one front-end at a time (QEMU
 * reconnects after a restart), reads messages with their fds, runs them
 * through the session and sends the replies. Control path only: messages
 * are rare, so the async socket calls are fine here.
 * @module
 */
import { UnixSocket } from "../../ffi/unix_socket.ts";
import { sym } from "../../ffi/libc.ts";
import { Errno, ErrnoError } from "../../ffi/errno.ts";
import { MessageReader } from "./reader.ts";
import { VhostUserSession } from "./session.ts";
import { VhostUserError } from "./errors.ts";
import type { VhostUserBackend } from "./session.ts";
import { requestName } from "./messages.ts";

/** SLUICE_VHOST_TRACE=1 logs every message: for debugging a front-end. */
const TRACE = Deno.env.get("SLUICE_VHOST_TRACE") === "1";

/**
 * Makes a fresh backend for each front-end connection. `close` may return a
 * promise that settles once the backend has let go of everything (its last
 * bdev I/O came back): the next front-end is served only after that, so a
 * late write of the old connection cannot land after the new one resubmitted
 * and completed it.
 */
export type BackendFactory = () => VhostUserBackend & { close(): void | Promise<void> };

/** A graceful close waits this long for the backend to let go before giving up on it. */
const CLOSE_WAIT_MS = 15_000;
/** While the previous backend still has bdev I/O, say so this often. */
const RELEASE_LOG_MS = 10_000;

/** Serves one vhost-user socket. */
export class VhostUserServer {
  readonly path: string;
  readonly #listener: UnixSocket;
  readonly #factory: BackendFactory;
  readonly #log: (msg: string) => void;
  #conn: UnixSocket | null = null;
  #session: VhostUserSession | null = null;
  #closed = false;
  readonly #done: Promise<void>;

  constructor(path: string, factory: BackendFactory, log: (msg: string) => void) {
    this.path = path;
    this.#factory = factory;
    this.#log = log;
    try {
      // A socket file left by a sluice that died (SIGKILL, crash) is replaced; one that a live
      // process still accepts on is not: two back-ends on one socket would share a guest.
      this.#listener = UnixSocket.listen(path);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.EADDRINUSE) {
        throw new Error(
          `vhost-user socket ${path} is in use (${e.message}); is another sluice serving it?`,
        );
      }
      throw e;
    }
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
      this.#session = null;
    }
  }

  async #serve(conn: UnixSocket): Promise<void> {
    const backend = this.#factory();
    const session = new VhostUserSession(backend);
    this.#session = session;
    const reader = new MessageReader();
    const buf = new Uint8Array(4096);
    try {
      for (;;) {
        const r = await conn.recvMsg(buf, 8);
        if (r.bytes === 0) break; // the front-end went away
        reader.push(buf.subarray(0, r.bytes), r.fds);
        for (let msg = reader.next(); msg !== null; msg = reader.next()) {
          // One message at a time: GET_VRING_BASE may wait for its queue to drain.
          const out = await session.handleAsync(msg);
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
      conn.close();
      await this.#released(backend.close());
    }
  }

  /** Waits for a closed backend's last bdev I/O (logging while it takes long). */
  async #released(done: void | Promise<void>): Promise<void> {
    if (done === undefined) return;
    let settled = false;
    const p = done.then(() => {
      settled = true;
    });
    for (let waited = 0; !settled; waited += RELEASE_LOG_MS) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([p, new Promise((r) => (timer = setTimeout(r, RELEASE_LOG_MS)))]);
      clearTimeout(timer);
      if (settled) break;
      if (this.#closed && waited + RELEASE_LOG_MS >= CLOSE_WAIT_MS) {
        this.#log(`vhost-user ${this.path}: closing with bdev I/O of the last front-end pending`);
        return;
      }
      this.#log(
        `vhost-user ${this.path}: the last front-end's bdev I/O has not come back after ` +
          `${(waited + RELEASE_LOG_MS) / 1000} s; the next front-end waits for it`,
      );
    }
  }

  /** True while a front-end (a VM's QEMU) is connected. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /**
   * Drops the connected front-end, as if it had gone away (its backend is
   * closed the usual way); the socket keeps listening, so a QEMU with
   * `reconnect` comes back. False when none is connected.
   */
  disconnect(): boolean {
    if (this.#conn === null) return false;
    this.#conn.close();
    return true;
  }

  /**
   * Stops listening and lets the front-end go cleanly: every request taken
   * from its rings is completed onto the used rings first (bounded by the
   * backend's drain timeout), so a front-end with `reconnect` resumes on the
   * next back-end with nothing to resubmit. This is the upgrade path.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#listener.close();
    const session = this.#session;
    if (session !== null) await session.quiesce();
    this.#conn?.close();
    await this.#done.catch(() => {});
  }
}

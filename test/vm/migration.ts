/**
 * Live migration between two QEMU processes for guest tests: a small QMP
 * client and {@linkcode migrate}, which moves a running guest from a source
 * QEMU to a destination QEMU started with `-incoming defer` (see
 * `GuestOptions.qmp` and `GuestOptions.incoming` in guest.ts).
 *
 * @example
 * ```ts
 * const src = runGuest({ ..., qmp: `${dir}/src.qmp` });
 * const dst = runGuest({ ..., qmp: `${dir}/dst.qmp`, incoming: "defer" });
 * const info = await migrate(`${dir}/src.qmp`, `${dir}/dst.qmp`, `unix:${dir}/mig.sock`);
 * ```
 * @module
 */

/** What QMP answers to `query-migrate` (the fields used here). */
export interface MigrationInfo {
  status: string;
  /** Milliseconds from start to completion. */
  "total-time"?: number;
  /** Milliseconds the guest was stopped for the switch-over. */
  downtime?: number;
  ram?: {
    transferred: number;
    total: number;
    "dirty-sync-count": number;
    "pages-per-second"?: number;
  };
  "error-desc"?: string;
}

/** A QMP command failed. */
export class QmpError extends Error {
  constructor(command: string, readonly qmpClass: string, desc: string) {
    super(`QMP ${command}: ${qmpClass}: ${desc}`);
    this.name = "QmpError";
  }
}

const CONNECT_TRIES = 600;
const CONNECT_PAUSE_MS = 100;

/**
 * One QMP connection. Commands run one at a time; events are kept in
 * `events` (name and data) as they arrive.
 */
export class Qmp {
  readonly events: { event: string; data?: unknown }[] = [];
  readonly #conn: Deno.UnixConn;
  readonly #lines: AsyncIterator<string>;
  #busy: Promise<unknown> = Promise.resolve();

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#lines = readLines(conn);
  }

  /**
   * Connects to QEMU's QMP socket (retrying while QEMU starts, up to about
   * a minute), reads the greeting and enters command mode.
   */
  static async connect(path: string): Promise<Qmp> {
    let conn: Deno.UnixConn | undefined;
    let last: unknown;
    for (let i = 0; i < CONNECT_TRIES && conn === undefined; i++) {
      try {
        conn = await Deno.connect({ transport: "unix", path });
      } catch (e) {
        last = e;
        await new Promise((r) => setTimeout(r, CONNECT_PAUSE_MS));
      }
    }
    if (conn === undefined) throw new Error(`QMP ${path}: cannot connect: ${last}`);
    const q = new Qmp(conn);
    const greeting = await q.#next();
    if (!("QMP" in greeting)) {
      throw new Error(`QMP ${path}: no greeting: ${JSON.stringify(greeting)}`);
    }
    await q.execute("qmp_capabilities");
    return q;
  }

  /** Runs one command and returns its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const run = this.#busy.then(async () => {
      const msg = JSON.stringify(
        args === undefined ? { execute: command } : {
          execute: command,
          arguments: args,
        },
      );
      await writeAll(this.#conn, new TextEncoder().encode(msg + "\n"));
      for (;;) {
        const r = await this.#next();
        if ("event" in r) {
          this.events.push({ event: String(r.event), data: r.data });
          continue;
        }
        if ("error" in r) {
          const e = r.error as { class?: string; desc?: string };
          throw new QmpError(command, e.class ?? "?", e.desc ?? JSON.stringify(r.error));
        }
        if ("return" in r) return r.return as T;
      }
    });
    this.#busy = run.catch(() => {});
    return run;
  }

  /** Closes the connection (QEMU keeps running). */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  async #next(): Promise<Record<string, unknown>> {
    for (;;) {
      const r = await this.#lines.next();
      if (r.done) throw new Error("QMP connection closed");
      const line = r.value.trim();
      if (line === "") continue;
      return JSON.parse(line) as Record<string, unknown>;
    }
  }
}

async function* readLines(conn: Deno.UnixConn): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const buf = new Uint8Array(64 * 1024);
  let partial = "";
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return;
    partial += decoder.decode(buf.subarray(0, n), { stream: true });
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    yield* lines;
  }
}

async function writeAll(conn: Deno.UnixConn, data: Uint8Array): Promise<void> {
  let at = 0;
  while (at < data.length) at += await conn.write(data.subarray(at));
}

/** Options of {@linkcode migrate}. */
export interface MigrateOptions {
  /** Bytes per second (QEMU's default of 128 MiB/s is slow for a test); default 4 GiB/s. */
  maxBandwidth?: number;
  /** Called once the migration has started (the source accepted `migrate`). */
  onStarted?: () => void;
  /** Give up after this long; default 600 s. A guard, not a measurement. */
  guardSec?: number;
}

const POLL_MS = 200;

/**
 * Migrates the guest of the QEMU behind `sourceQmp` to the one behind
 * `destQmp` (started with `-incoming defer`) through `uri` (e.g.
 * `unix:/tmp/x/mig.sock`), and waits until the source reports
 * "completed". Returns the source's final `query-migrate`. Throws when the
 * migration fails or is cancelled, with QEMU's reason.
 */
export async function migrate(
  sourceQmp: string,
  destQmp: string,
  uri: string,
  o: MigrateOptions = {},
): Promise<MigrationInfo> {
  const dst = await Qmp.connect(destQmp);
  const src = await Qmp.connect(sourceQmp);
  try {
    const status = await dst.execute<{ status: string }>("query-status");
    if (status.status !== "inmigrate") {
      throw new Error(`the destination is "${status.status}", not waiting for a migration`);
    }
    // The destination listens before the source connects.
    await dst.execute("migrate-incoming", { uri });
    await src.execute("migrate-set-parameters", { "max-bandwidth": o.maxBandwidth ?? 4 << 30 });
    await src.execute("migrate", { uri });
    o.onStarted?.();
    const deadline = Date.now() + (o.guardSec ?? 600) * 1000;
    for (;;) {
      const info = await src.execute<MigrationInfo>("query-migrate");
      if (info.status === "completed") return info;
      if (info.status === "failed" || info.status === "cancelled") {
        throw new Error(`migration ${info.status}: ${info["error-desc"] ?? "(no reason given)"}`);
      }
      if (Date.now() > deadline) {
        await src.execute("migrate_cancel").catch(() => {});
        throw new Error(`migration still "${info.status}" after ${o.guardSec ?? 600} s`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    src.close();
    dst.close();
  }
}

/** Asks the QEMU behind `qmpPath` to quit (for a source left paused after migrating away). */
export async function quitQemu(qmpPath: string): Promise<void> {
  const q = await Qmp.connect(qmpPath);
  try {
    await q.execute("quit");
  } catch (e) {
    // QEMU may close the socket before the answer arrives: it is quitting either way.
    if (!(e instanceof Error && e.message === "QMP connection closed")) throw e;
  } finally {
    q.close();
  }
}

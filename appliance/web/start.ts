/**
 * Starts the web admin inside `sluice serve`: opens (or creates)
 * `<state-dir>/admin.json`, prints a new password once, and serves the
 * admin app with Deno.serve on the main thread.
 * @module
 */
import { AdminAuth } from "./auth.ts";
import type { LogRing } from "./log_ring.ts";
import { type AdminEngine, type AdminServer, createAdminApp, serveAdmin } from "./app.ts";

/** Options of {@link startAdmin}. */
export interface StartAdminOptions {
  stateDir: string;
  hostname: string;
  /** 0: any free port (the log line says which). */
  port: number;
  engine: AdminEngine;
  log: (msg: string) => void;
  /** Recent log lines for the Logs page. */
  logs?: LogRing;
  /**
   * Was the address asked for? Then failing to listen is an error; with the
   * default address a taken port only skips the admin (a second appliance on
   * the same host keeps serving its volumes).
   */
  required: boolean;
}

/** Starts the admin; null when the default port was taken. */
export async function startAdmin(o: StartAdminOptions): Promise<AdminServer | null> {
  const { auth, initialPassword } = await AdminAuth.open(`${o.stateDir}/admin.json`);
  const ac = new AbortController();
  const app = createAdminApp({
    engine: o.engine,
    auth,
    log: o.log,
    signal: ac.signal,
    loopbackOnly: /^(127\.|::1$|localhost$)/.test(o.hostname),
    ...(o.logs === undefined ? {} : { logs: o.logs }),
  });
  let server: AdminServer;
  try {
    server = serveAdmin(app, o.hostname, o.port, o.log, ac);
  } catch (e) {
    // A new password that was never shown must not stay behind: the next start makes another.
    if (initialPassword !== undefined) await Deno.remove(auth.path).catch(() => {});
    if (o.required || !(e instanceof Deno.errors.AddrInUse)) throw e;
    o.log(`web admin not started: ${o.hostname}:${o.port} is in use (set --admin-listen)`);
    return null;
  }
  const url = `http://${
    server.addr.hostname.includes(":") ? `[${server.addr.hostname}]` : server.addr.hostname
  }:${server.addr.port}/`;
  o.log(`web admin on ${url}`);
  if (initialPassword !== undefined) {
    // The only time it is ever shown: admin.json holds its hash.
    console.log(
      `sluice: web admin password (shown once; change it under Settings): ${initialPassword}`,
    );
  }
  return server;
}

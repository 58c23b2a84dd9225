/**
 * The web admin: pages, a JSON API and `/metrics`, on hono. Every action
 * goes through the appliance's RPC table (the same methods as the Unix
 * socket and the CLI): nothing is implemented twice here.
 *
 * Authentication: a session cookie (HttpOnly, SameSite=Strict) after a
 * password login, with a CSRF token required on every POST; or a bearer
 * token (scripts, Prometheus). See docs/admin.md.
 * @module
 */
import { type Context, Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { streamSSE } from "hono/streaming";
import type { AppContext } from "../../src/rpc/context.ts";
import { RpcError, RpcErrorCode } from "../../src/rpc/errors.ts";
import type { RpcResponse, RpcTable } from "../../src/rpc/rpc.ts";
import { RpcQueue } from "../../src/rpc/server.ts";
import { formatPrometheus, type StatsSnapshot } from "../../src/stats/stats.ts";
import { type AdminAuth, passwordProblem, randomToken, sameSecret, type Session } from "./auth.ts";
import { openApiDocument } from "./openapi.ts";
import { setupStatus } from "../setup.ts";
import type { LogRing } from "./log_ring.ts";
import {
  APP_JS,
  type BdevView,
  connectionsPage,
  type ConnectionsView,
  dashboardPage,
  type ExportsForm,
  exportsPage,
  loginPage,
  logsPage,
  type MoreVolumeForms,
  type NvmeCtrlrView,
  settingsPage,
  STYLESHEET,
  type SubsystemView,
  type VhostView,
  volumesPage,
} from "./pages.ts";

/** The cookie that carries the session id. */
export const SESSION_COOKIE = "sluice_session";
/** The cookie of the login form's CSRF token (there is no session yet). */
export const LOGIN_CSRF_COOKIE = "sluice_login_csrf";
/** The header that carries the CSRF token of a page's API calls. */
export const CSRF_HEADER = "X-CSRF-Token";

/** What the admin needs of the engine. */
export interface AdminEngine {
  table: RpcTable<AppContext>;
  ctx: AppContext;
  /** After a successful mutating method (saves the config), as the socket server does. */
  onMutated?: (method: string) => void | Promise<void>;
  /** The socket server's queue: web and socket calls never interleave. */
  queue?: RpcQueue;
}

/** Options of {@link createAdminApp}. */
export interface AdminAppOptions {
  engine: AdminEngine;
  auth: AdminAuth;
  log?: (msg: string) => void;
  /** The period of the dashboard's server-sent events (default 1000 ms). */
  eventIntervalMs?: number;
  /** Aborted when the server shuts down: event streams end so shutdown need not wait. */
  signal?: AbortSignal;
  /** Recent log lines for the Logs page (none: the page says so). */
  logs?: LogRing;
  /**
   * Served on a loopback address: refuse requests whose Host is not a
   * loopback name, so a web page whose DNS name is rebound to 127.0.0.1
   * cannot talk to the admin (not even to try passwords).
   */
  loopbackOnly?: boolean;
}

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** The host name of a Host header, without the port. */
function hostName(host: string): string {
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d+)?$/.exec(host.toLowerCase());
  return m?.[1] ?? "";
}

/** Bindings given by the server: the client's address (for the login limit). */
export interface AdminBindings {
  remoteAddr?: string;
}

type Env = {
  Bindings: AdminBindings;
  Variables: { session: Session | null };
};

const MAX_BODY = 1024 * 1024;
const MIB = 1024 * 1024;

/** A JSON error body: `{ error: { code, message } }`. */
function jsonError(c: Context<Env>, status: 400 | 401 | 403 | 404 | 413 | 429, message: string) {
  return c.json({ error: { code: status, message } }, status);
}

function isApi(path: string): boolean {
  return path.startsWith("/api/") || path === "/metrics" || path === "/events";
}

/** Builds the admin application (serve it with `app.fetch`; test it with `app.request`). */
export function createAdminApp(opts: AdminAppOptions): Hono<Env> {
  const { engine, auth } = opts;
  const log = opts.log ?? (() => {});
  const app = new Hono<Env>();
  /** Calls run one at a time, with the socket's when shared: config changes never interleave. */
  const queue = engine.queue ?? new RpcQueue();
  const handle = (req: unknown) =>
    queue.run(() => engine.table.handle(req, engine.ctx, engine.onMutated));
  /** One call through the same dispatch as the socket; throws RpcError. */
  const call = async (method: string, params?: unknown): Promise<unknown> => {
    const resp = await handle({
      jsonrpc: "2.0",
      id: 1,
      method,
      ...(params === undefined ? {} : { params }),
    }) as RpcResponse;
    if (resp.error) throw new RpcError(resp.error.code, resp.error.message);
    return resp.result;
  };
  const addr = (c: Context<Env>) => c.env?.remoteAddr ?? "unknown";

  app.use("*", async (c, next) => {
    await next();
    c.header("Cache-Control", "no-store");
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    c.header("X-Frame-Options", "DENY");
    c.header(
      "Content-Security-Policy",
      "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
  });
  if (opts.loopbackOnly) {
    app.use("*", async (c, next) => {
      const host = c.req.header("Host") ?? new URL(c.req.url).host;
      if (!LOOPBACK_HOSTS.has(hostName(host))) {
        return jsonError(c, 403, "this admin answers only to localhost, 127.0.0.1 or [::1]");
      }
      return await next();
    });
  }
  app.use("*", bodyLimit({ maxSize: MAX_BODY, onError: (c) => c.text("request too large", 413) }));
  app.onError((e, c) => {
    // Handlers' own errors are answered where they happen; this is a bug's last stop.
    log(`web: ${c.req.method} ${c.req.path}: ${e instanceof Error ? e.message : e}`);
    return c.json({ error: { code: 500, message: "internal error" } }, 500);
  });
  app.notFound((c) => jsonError(c, 404, `no such page: ${c.req.path}`));

  // --- public -----------------------------------------------------------------
  app.get("/static/style.css", (c) => c.body(STYLESHEET, 200, { "Content-Type": "text/css" }));
  app.get(
    "/static/app.js",
    (c) => c.body(APP_JS, 200, { "Content-Type": "text/javascript; charset=utf-8" }),
  );
  app.get("/api/openapi.json", (c) => c.json(openApiDocument(engine.ctx.version)));

  const showLogin = (c: Context<Env>, error: string | null, status: 200 | 401 | 403 | 429) => {
    // Keep a token the browser already has: it may load /login again in the background
    // (Chromium does), and a new cookie would no longer match the form on screen.
    const had = getCookie(c, LOGIN_CSRF_COOKIE);
    const csrf = had !== undefined && /^[A-Za-z0-9_-]{32}$/.test(had) ? had : randomToken(24);
    setCookie(c, LOGIN_CSRF_COOKIE, csrf, {
      httpOnly: true,
      sameSite: "Strict",
      path: "/login",
    });
    return c.html(loginPage(csrf, error), status);
  };
  app.get("/login", (c) => showLogin(c, null, 200));
  app.post("/login", async (c) => {
    const form = await c.req.parseBody();
    const csrf = form["_csrf"];
    const cookie = getCookie(c, LOGIN_CSRF_COOKIE);
    if (typeof csrf !== "string" || cookie === undefined || !sameSecret(csrf, cookie)) {
      return showLogin(c, "The form expired; please try again.", 403);
    }
    const wait = auth.loginRetryAfterS(addr(c));
    if (wait > 0) {
      c.header("Retry-After", String(wait));
      return showLogin(c, `Too many failed logins; try again in ${wait} s.`, 429);
    }
    const pw = form["password"];
    if (typeof pw !== "string" || !(await auth.verifyPassword(pw))) {
      auth.loginFailed(addr(c));
      log(`web: failed login from ${addr(c)}`);
      return showLogin(c, "Wrong password.", 401);
    }
    auth.loginSucceeded(addr(c));
    const s = auth.createSession();
    deleteCookie(c, LOGIN_CSRF_COOKIE, { path: "/login" });
    setCookie(c, SESSION_COOKIE, s.id, { httpOnly: true, sameSite: "Strict", path: "/" });
    log(`web: login from ${addr(c)}`);
    return c.redirect("/", 303);
  });

  // --- everything else needs a session or a bearer token --------------------------
  const authenticate: MiddlewareHandler<Env> = async (c, next) => {
    // Tokens added or revoked with `sluice admin-token` while we run count at once.
    await auth.refresh();
    const authz = c.req.header("Authorization");
    if (authz !== undefined) {
      const m = /^Bearer ([A-Za-z0-9_-]{1,200})$/.exec(authz);
      if (m === null || !(await auth.verifyToken(m[1] as string))) {
        c.header("WWW-Authenticate", 'Bearer realm="sluice"');
        return jsonError(c, 401, "invalid bearer token");
      }
      // No ambient credential: a cross-site page cannot send this header, so no CSRF check.
      c.set("session", null);
      return await next();
    }
    const s = auth.session(getCookie(c, SESSION_COOKIE));
    if (s === undefined) {
      if (isApi(c.req.path)) {
        c.header("WWW-Authenticate", 'Bearer realm="sluice"');
        return jsonError(c, 401, "log in or send a bearer token");
      }
      return c.redirect("/login", 303);
    }
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      const origin = c.req.header("Origin");
      if (origin !== undefined && origin !== "null") {
        let host: string | null = null;
        try {
          host = new URL(origin).host;
        } catch { /* refused below */ }
        if (host !== c.req.header("Host")) return jsonError(c, 403, "cross-origin request refused");
      }
      let token = c.req.header(CSRF_HEADER);
      const type = c.req.header("Content-Type") ?? "";
      if (
        token === undefined &&
        (type.startsWith("application/x-www-form-urlencoded") ||
          type.startsWith("multipart/form-data"))
      ) {
        const v = (await c.req.parseBody())["_csrf"];
        if (typeof v === "string") token = v;
      }
      if (token === undefined || !sameSecret(token, s.csrf)) {
        log(`web: ${c.req.method} ${c.req.path} without a valid CSRF token refused`);
        return jsonError(c, 403, "missing or wrong CSRF token");
      }
    }
    c.set("session", s);
    return await next();
  };
  app.use("*", authenticate);

  const csrfOf = (c: Context<Env>): string => {
    const s = c.get("session");
    if (s === null) throw new Error("pages need a session");
    return s.csrf;
  };
  // Pages and their forms are for browsers: a bearer token reaches only the API.
  app.use("*", async (c, next) => {
    if (!isApi(c.req.path) && c.get("session") === null) {
      return jsonError(c, 403, "pages need a browser session");
    }
    return await next();
  });

  app.post("/logout", (c) => {
    const s = c.get("session");
    if (s !== null) auth.endSession(s.id);
    deleteCookie(c, SESSION_COOKIE, { path: "/" });
    return c.redirect("/login", 303);
  });

  // --- API ------------------------------------------------------------------------
  app.post("/api/rpc", async (c) => {
    let req: unknown;
    try {
      req = await c.req.json();
    } catch {
      return c.json({
        jsonrpc: "2.0",
        id: null,
        error: { code: RpcErrorCode.ParseError, message: "Parse error: request is not valid JSON" },
      });
    }
    const resp = await handle(req);
    return resp === null ? c.body(null, 204) : c.json(resp);
  });
  const rest = (path: string, method: string) =>
    app.get(path, async (c) => {
      try {
        return c.json(await call(method));
      } catch (e) {
        const err = e instanceof RpcError ? e : new RpcError(-32603, "internal error");
        return c.json({ error: { code: err.code, message: err.message } }, 500);
      }
    });
  rest("/api/bdevs", "bdev_get_bdevs");
  rest("/api/subsystems", "nvmf_get_subsystems");
  rest("/api/vhost", "vhost_get_controllers");
  rest("/api/stats", "sluice_get_stats");
  app.get("/metrics", async (c) => {
    const s = await call("sluice_get_stats") as StatsSnapshot;
    return c.body(formatPrometheus(s), 200, {
      "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
    });
  });
  app.get("/events", (c) =>
    streamSSE(c, async (stream) => {
      let open = true;
      stream.onAbort(() => {
        open = false;
      });
      while (open && !opts.signal?.aborted) {
        const s = await call("sluice_get_stats") as StatsSnapshot;
        // The served vhost-user sockets too, so the dashboard's list follows them live.
        const vhost = await call("vhost_get_controllers");
        await stream.writeSSE({ event: "stats", data: JSON.stringify({ ...s, vhost }) });
        await stream.sleep(opts.eventIntervalMs ?? 1000);
      }
    }));

  // --- pages ----------------------------------------------------------------------
  /** Every NVMe subsystem's controllers (the hosts connected). */
  const controllersBySubsystem = async (): Promise<ConnectionsView[]> => {
    const subs = (await call("nvmf_get_subsystems") as SubsystemView[]).filter((s) =>
      s.subtype === "NVMe"
    );
    const views: ConnectionsView[] = [];
    for (const s of subs) {
      views.push({
        nqn: s.nqn,
        controllers: await call("nvmf_subsystem_get_controllers", {
          nqn: s.nqn,
        }) as ConnectionsView["controllers"],
      });
    }
    return views;
  };
  app.get("/", async (c) => {
    const status = await call("sluice_get_status") as { version: string; uptime_s: number };
    const stats = await call("sluice_get_stats") as StatsSnapshot;
    return c.html(
      dashboardPage(
        csrfOf(c),
        status,
        await call("bdev_get_bdevs") as BdevView[],
        stats.nvmf_tcp?.connections_open ?? 0,
        stats.vhost_controllers,
        await controllersBySubsystem(),
        await call("vhost_get_controllers") as VhostView[],
      ),
    );
  });

  const volumes = async (
    c: Context<Env>,
    form: { error: string | null; name?: string; sizeMiB?: string },
    deleteError: { name: string; error: string } | null,
    status: 200 | 400 = 200,
    more: Omit<MoreVolumeForms, "keys" | "controllers"> = {},
  ) => {
    const keys = (await call("accel_crypto_keys_get") as { name: string }[]).map((k) => k.name);
    const controllers = await call("bdev_nvme_get_controllers") as NvmeCtrlrView[];
    let pciDrives: MoreVolumeForms["pciDrives"] = [];
    try {
      // sysfs, as `sluice setup status` reads it: the drives one can attach with one click.
      pciDrives = (await setupStatus()).devices.map((d) => ({
        address: d.address,
        driver: d.driver,
        inUse: d.inUse,
      }));
    } catch { /* no sysfs here: no list */ }
    return c.html(
      volumesPage(csrfOf(c), await call("bdev_get_bdevs") as BdevView[], form, deleteError, {
        ...more,
        keys,
        controllers,
        pciDrives,
      }),
      status,
    );
  };
  app.post("/volumes/create-file", async (c) => {
    const f = strings(await c.req.parseBody());
    try {
      await call("bdev_file_create", {
        name: f["name"] ?? "",
        filename: f["filename"] ?? "",
        block_size: Number(f["block_size"]),
      });
    } catch (e) {
      const values = { file_name: f["name"] ?? "", filename: f["filename"] ?? "" };
      return volumes(c, { error: null }, null, 400, { fileError: errorText(e), values });
    }
    return c.redirect("/volumes", 303);
  });
  app.post("/volumes/create-crypto", async (c) => {
    const f = strings(await c.req.parseBody());
    try {
      await call("bdev_crypto_create", {
        name: f["name"] ?? "",
        base_bdev_name: f["base_bdev_name"] ?? "",
        key_name: f["key_name"] ?? "",
      });
    } catch (e) {
      const values = {
        crypto_name: f["name"] ?? "",
        base_bdev_name: f["base_bdev_name"] ?? "",
        key_name: f["key_name"] ?? "",
      };
      return volumes(c, { error: null }, null, 400, { cryptoError: errorText(e), values });
    }
    return c.redirect("/volumes", 303);
  });
  app.post("/volumes/create-nvme", async (c) => {
    const f = strings(await c.req.parseBody());
    try {
      // The RPC checks trtype (PCIe only) and the address, then opens the device through VFIO.
      await call("bdev_nvme_attach_controller", {
        name: f["name"] ?? "",
        trtype: f["trtype"] ?? "PCIe",
        traddr: (f["traddr"] ?? "").trim(),
      });
    } catch (e) {
      const values = { nvme_name: f["name"] ?? "", traddr: f["traddr"] ?? "" };
      return volumes(c, { error: null }, null, 400, { nvmeError: errorText(e), values });
    }
    return c.redirect("/volumes", 303);
  });
  app.post("/volumes/detach-nvme", async (c) => {
    const f = strings(await c.req.parseBody());
    const name = f["name"] ?? "";
    if (f["confirm"] !== name) {
      return volumes(c, { error: null }, null, 400, {
        detachError: { name, error: "Type the controller's name to confirm the detach." },
      });
    }
    try {
      await call("bdev_nvme_detach_controller", { name });
    } catch (e) {
      return volumes(c, { error: null }, null, 400, {
        detachError: { name, error: errorText(e) },
      });
    }
    return c.redirect("/volumes", 303);
  });
  app.get("/volumes", (c) => volumes(c, { error: null }, null));
  app.post("/volumes/create", async (c) => {
    const f = await c.req.parseBody();
    const name = typeof f["name"] === "string" ? f["name"] : "";
    const sizeMiB = typeof f["size_mib"] === "string" ? f["size_mib"] : "";
    const blockSize = Number(f["block_size"]);
    const size = Number(sizeMiB);
    if (!Number.isInteger(size) || size < 1) {
      return volumes(
        c,
        { error: "The size must be a whole number of MiB, 1 or more.", name, sizeMiB },
        null,
        400,
      );
    }
    if (blockSize !== 512 && blockSize !== 4096) {
      return volumes(c, { error: "The block size must be 512 or 4096.", name, sizeMiB }, null, 400);
    }
    try {
      await call("bdev_malloc_create", {
        name,
        num_blocks: (size * MIB) / blockSize,
        block_size: blockSize,
      });
    } catch (e) {
      return volumes(c, { error: errorText(e), name, sizeMiB }, null, 400);
    }
    return c.redirect("/volumes", 303);
  });
  app.post("/volumes/delete", async (c) => {
    const f = await c.req.parseBody();
    const name = typeof f["name"] === "string" ? f["name"] : "";
    if (f["confirm"] !== name) {
      return volumes(c, { error: null }, {
        name,
        error: "Type the volume's name to confirm the deletion.",
      }, 400);
    }
    try {
      const [b] = await call("bdev_get_bdevs", { name }) as {
        product_name: string;
        driver_specific: Record<string, unknown>;
      }[];
      const module = Object.keys(b?.driver_specific ?? {})[0] ?? "";
      const method = `bdev_${module}_delete`;
      if (module === "nvme") {
        // A namespace is not deleted on its own: its controller is detached (all namespaces).
        throw new Error("an NVMe namespace goes away when its controller is detached (below)");
      }
      if (engine.table.info(method) === undefined) {
        throw new Error(`volumes of type ${module} cannot be deleted here`);
      }
      await call(method, { name });
    } catch (e) {
      return volumes(c, { error: null }, { name, error: errorText(e) }, 400);
    }
    return c.redirect("/volumes", 303);
  });

  const exportsView = async (c: Context<Env>, form: ExportsForm = {}, status: 200 | 400 = 200) =>
    c.html(
      exportsPage(
        csrfOf(c),
        await call("nvmf_get_subsystems") as SubsystemView[],
        await call("vhost_get_controllers") as VhostView[],
        (await call("bdev_get_bdevs") as BdevView[]).map((b) => b.name),
        form,
      ),
      status,
    );
  app.get("/exports", (c) => exportsView(c));
  app.post("/exports/nvmf/create", async (c) => {
    const values = strings(await c.req.parseBody());
    const nqn = values["nqn"] ?? "";
    const listen = /^(.+):(\d{1,5})$/.exec(values["listen"] ?? "");
    if (listen === null) {
      return exportsView(c, { nvmfError: "Listen on ADDRESS:PORT.", values }, 400);
    }
    let created = false;
    try {
      const transports = await call("nvmf_get_transports") as unknown[];
      if (transports.length === 0) await call("nvmf_create_transport", { trtype: "TCP" });
      const hosts = (values["hosts"] ?? "").split(/[\s,]+/).filter((h) => h !== "");
      await call("nvmf_create_subsystem", { nqn, allow_any_host: hosts.length === 0 });
      created = true;
      for (const host of hosts) await call("nvmf_subsystem_add_host", { nqn, host });
      await call("nvmf_subsystem_add_ns", { nqn, namespace: { bdev_name: values["bdev"] ?? "" } });
      await call("nvmf_subsystem_add_listener", {
        nqn,
        listen_address: {
          trtype: "TCP",
          adrfam: (listen[1] as string).includes(":") ? "IPv6" : "IPv4",
          traddr: (listen[1] as string).replace(/^\[(.*)\]$/, "$1"),
          trsvcid: listen[2],
        },
      });
    } catch (e) {
      // All or nothing: a half-made subsystem would only confuse.
      if (created) await call("nvmf_delete_subsystem", { nqn }).catch(() => {});
      return exportsView(c, { nvmfError: errorText(e), values }, 400);
    }
    return c.redirect("/exports", 303);
  });
  app.post("/exports/nvmf/delete", async (c) => {
    const f = strings(await c.req.parseBody());
    const nqn = f["nqn"] ?? "";
    if (f["confirm"] !== nqn) {
      return exportsView(c, { deleteError: { key: nqn, error: "Type the NQN to confirm." } }, 400);
    }
    try {
      await call("nvmf_delete_subsystem", { nqn });
    } catch (e) {
      return exportsView(c, { deleteError: { key: nqn, error: errorText(e) } }, 400);
    }
    return c.redirect("/exports", 303);
  });
  app.post("/exports/vhost/create", async (c) => {
    const values = strings(await c.req.parseBody());
    const queues = Number(values["num_queues"] ?? "1");
    try {
      await call("vhost_create_blk_controller", {
        ctrlr: values["ctrlr"] ?? "",
        dev_name: values["vhost_bdev"] ?? "",
        ...(values["socket"] ? { socket: values["socket"] } : {}),
        num_queues: Number.isInteger(queues) ? queues : values["num_queues"],
      });
    } catch (e) {
      return exportsView(c, { vhostError: errorText(e), values }, 400);
    }
    return c.redirect("/exports", 303);
  });
  app.post("/exports/vhost/delete", async (c) => {
    const f = strings(await c.req.parseBody());
    const ctrlr = f["ctrlr"] ?? "";
    if (f["confirm"] !== ctrlr) {
      return exportsView(c, {
        deleteError: { key: ctrlr, error: "Type the controller's name to confirm." },
      }, 400);
    }
    try {
      await call("vhost_delete_controller", { ctrlr });
    } catch (e) {
      return exportsView(c, { deleteError: { key: ctrlr, error: errorText(e) } }, 400);
    }
    return c.redirect("/exports", 303);
  });

  const settings = (
    c: Context<Env>,
    msg: Parameters<typeof settingsPage>[2],
    status: 200 | 400 | 401 = 200,
  ) => c.html(settingsPage(csrfOf(c), auth.listTokens(), msg), status);
  app.get("/settings", (c) => settings(c, {}));
  app.post("/settings/password", async (c) => {
    const f = await c.req.parseBody();
    const current = typeof f["current"] === "string" ? f["current"] : "";
    const next = typeof f["new"] === "string" ? f["new"] : "";
    const wait = auth.loginRetryAfterS(addr(c));
    if (wait > 0) {
      return settings(c, { passwordError: `Too many failed attempts; wait ${wait} s.` }, 400);
    }
    if (!(await auth.verifyPassword(current))) {
      // Guessing through this form counts against the same limit as the login.
      auth.loginFailed(addr(c));
      return settings(c, { passwordError: "The current password is wrong." }, 401);
    }
    const problem = passwordProblem(next);
    if (problem !== null) return settings(c, { passwordError: `Not changed: ${problem}.` }, 400);
    await auth.setPassword(next, c.get("session")?.id);
    log("web: admin password changed");
    return settings(c, { passwordOk: true });
  });
  app.get("/settings/config.json", async (c) => {
    const cfg = await call("save_config");
    return c.body(JSON.stringify(cfg, null, 2) + "\n", 200, {
      "Content-Type": "application/json",
      "Content-Disposition": 'attachment; filename="sluice-config.json"',
    });
  });
  app.post("/settings/config", async (c) => {
    const f = await c.req.parseBody();
    const file = f["config"];
    let doc: unknown;
    try {
      const text = file instanceof File ? await file.text() : typeof file === "string" ? file : "";
      doc = JSON.parse(text);
    } catch {
      return settings(c, { configError: "The file is not JSON (save_config's format)." }, 400);
    }
    try {
      const r = await call("load_config", doc) as { applied: number };
      log(`web: configuration applied (${r.applied} calls)`);
      return settings(c, { configOk: `Applied: ${r.applied} call(s).` });
    } catch (e) {
      return settings(c, { configError: errorText(e) }, 400);
    }
  });
  const connections = async (c: Context<Env>, error: string | null, status: 200 | 400 = 200) => {
    const views = await controllersBySubsystem();
    return c.html(
      connectionsPage(csrfOf(c), views, await call("vhost_get_controllers") as VhostView[], error),
      status,
    );
  };
  app.get("/connections", (c) => connections(c, null));
  app.post("/connections/disconnect", async (c) => {
    const f = strings(await c.req.parseBody());
    try {
      await call("nvmf_subsystem_disconnect_controller", {
        nqn: f["nqn"] ?? "",
        cntlid: Number(f["cntlid"]),
      });
    } catch (e) {
      return connections(c, errorText(e), 400);
    }
    return c.redirect("/connections", 303);
  });
  app.post("/connections/vhost-disconnect", async (c) => {
    const f = strings(await c.req.parseBody());
    try {
      await call("vhost_controller_disconnect", { ctrlr: f["ctrlr"] ?? "" });
    } catch (e) {
      return connections(c, errorText(e), 400);
    }
    return c.redirect("/connections", 303);
  });
  app.get("/logs", (c) => {
    const q = c.req.query("q") ?? "";
    return c.html(logsPage(csrfOf(c), opts.logs?.lines(q) ?? [], q));
  });
  app.post("/settings/tokens", async (c) => {
    const f = await c.req.parseBody();
    try {
      const { token } = await auth.createToken(typeof f["name"] === "string" ? f["name"] : "");
      log("web: API token created");
      return settings(c, { newToken: token });
    } catch (e) {
      return settings(c, { tokenError: errorText(e) }, 400);
    }
  });
  app.post("/settings/tokens/revoke", async (c) => {
    const f = await c.req.parseBody();
    await auth.revokeToken(typeof f["id"] === "string" ? f["id"] : "");
    return c.redirect("/settings", 303);
  });
  return app;
}

/** The string fields of a parsed form (files and repeated fields dropped). */
function strings(f: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(f)) if (typeof v === "string" && k !== "_csrf") out[k] = v;
  return out;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A running admin server. */
export interface AdminServer {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  close(): Promise<void>;
}

/** Serves the admin app on `hostname:port` (Deno.serve, on this thread). */
export function serveAdmin(
  app: Hono<Env>,
  hostname: string,
  port: number,
  log: (msg: string) => void = () => {},
  /** Aborted by close(); give the same one to createAdminApp so event streams end. */
  ac: AbortController = new AbortController(),
): AdminServer {
  const server = Deno.serve({
    hostname,
    port,
    signal: ac.signal,
    onListen: () => {},
    onError: (e) => {
      log(`web: ${e instanceof Error ? e.message : e}`);
      return new Response("internal error", { status: 500 });
    },
  }, (req, info) => {
    const remote = info.remoteAddr as Deno.NetAddr;
    return app.fetch(req, { remoteAddr: remote.hostname } satisfies AdminBindings);
  });
  return {
    addr: server.addr,
    close: async () => {
      ac.abort();
      await server.finished;
    },
  };
}

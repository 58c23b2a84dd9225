import { assert, assertEquals } from "../../src/testing/assert.ts";
import { App } from "../../src/app.ts";
import { parsePrometheusText } from "../../src/stats/prometheus_parse.ts";
import { AdminAuth } from "./auth.ts";
import { createAdminApp, CSRF_HEADER, LOGIN_CSRF_COOKIE, SESSION_COOKIE } from "./app.ts";
import { freePort } from "../../src/testing/net.ts";
import { LogRing } from "./log_ring.ts";
import { connectAndEnable, FakeQpair } from "../../src/nvmf_tcp/fake_host.ts";
import { nvmfTarget } from "../../src/nvmf_tcp/nvmf_rpc.ts";
import { RpcQueue } from "../../src/rpc/server.ts";
import { UnixSocket } from "../../ffi/unix_socket.ts";
import { encodeMessage, VhostUserRequest } from "../../src/vhost_user/messages.ts";
import { guard, sleep } from "../../src/testing/wait.ts";

interface Harness {
  app: App;
  web: ReturnType<typeof createAdminApp>;
  auth: AdminAuth;
  password: string;
  dir: string;
  clock: { ms: number };
  mutated: string[];
  logs: string[];
  ring: LogRing;
}

async function withWeb(fn: (h: Harness) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-" });
  const app = new App();
  app.start();
  const clock = { ms: 1_000_000 };
  const logs: string[] = [];
  const mutated: string[] = [];
  try {
    const { auth, initialPassword } = await AdminAuth.open(`${dir}/admin.json`, {
      iterations: 1000,
      now: () => clock.ms,
    });
    assert(initialPassword !== undefined);
    const ring = new LogRing(100);
    const web = createAdminApp({
      engine: { table: app.rpc, ctx: app, onMutated: (m) => void mutated.push(m) },
      auth,
      log: (m) => {
        logs.push(m);
        ring.push(m);
      },
      eventIntervalMs: 20,
      logs: ring,
    });
    await fn({ app, web, auth, password: initialPassword, dir, clock, mutated, logs, ring });
  } finally {
    await app.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

function cookies(r: Response): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of r.headers.getSetCookie()) {
    const [kv = ""] = c.split(";");
    const i = kv.indexOf("=");
    out.set(kv.slice(0, i), kv.slice(i + 1));
  }
  return out;
}

const ENV = { remoteAddr: "192.0.2.7" };

/** Logs in through the form; returns the session cookie and the page's CSRF token. */
async function login(
  h: Harness,
  password = h.password,
  env = ENV,
): Promise<{ status: number; cookie?: string; csrf?: string; body: string; res: Response }> {
  const page = await h.web.request("/login", {}, env);
  const loginCsrf = cookies(page).get(LOGIN_CSRF_COOKIE) as string;
  const body = new URLSearchParams({ _csrf: loginCsrf, password });
  const res = await h.web.request("/login", {
    method: "POST",
    body,
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Cookie: `${LOGIN_CSRF_COOKIE}=${loginCsrf}`,
    },
  }, env);
  const text = await res.text();
  const sid = cookies(res).get(SESSION_COOKIE);
  if (sid === undefined || sid === "") return { status: res.status, body: text, res };
  const cookie = `${SESSION_COOKIE}=${sid}`;
  const dash = await h.web.request("/", { headers: { Cookie: cookie } }, env);
  const html = await dash.text();
  const csrf = /<meta name="csrf-token" content="([^"]+)"/.exec(html)?.[1];
  return { status: res.status, cookie, csrf, body: html, res };
}

function form(cookie: string, fields: Record<string, string>): RequestInit {
  return {
    method: "POST",
    body: new URLSearchParams(fields),
    headers: { "Content-Type": "application/x-www-form-urlencoded", Cookie: cookie },
  };
}

Deno.test("web: login sets an HttpOnly SameSite=Strict session; a wrong password is refused", async () => {
  await withWeb(async (h) => {
    const bad = await login(h, "not-the-password");
    assertEquals(bad.status, 401);
    assert(bad.cookie === undefined, "no session for a wrong password");
    assert(bad.body.includes("Wrong password"));

    const ok = await login(h);
    assertEquals(ok.status, 303);
    const set = ok.res.headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`));
    assert(set !== undefined && /HttpOnly/i.test(set) && /SameSite=Strict/i.test(set), set);
    assert(ok.body.includes("Dashboard") && ok.csrf !== undefined);
    assert(!ok.body.includes(h.password), "the password is never in a page");
    assert(!h.logs.join("\n").includes(h.password), "nor in a log line");

    // A login form posted without its CSRF cookie (e.g. from another site) is refused.
    const forged = await h.web.request("/login", {
      method: "POST",
      body: new URLSearchParams({ _csrf: "x", password: h.password }),
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    }, ENV);
    assertEquals(forged.status, 403);

    // Logged out, the cookie no longer works.
    const out = await h.web.request(
      "/logout",
      form(ok.cookie as string, { _csrf: ok.csrf as string }),
      ENV,
    );
    assertEquals(out.status, 303);
    const after = await h.web.request("/", { headers: { Cookie: ok.cookie as string } }, ENV);
    assertEquals(after.status, 303);
    assertEquals(after.headers.get("Location"), "/login");
  });
});

Deno.test("web: without a session or token, pages redirect and the API answers 401 JSON", async () => {
  await withWeb(async (h) => {
    for (const p of ["/api/bdevs", "/api/stats", "/metrics", "/events"]) {
      const r = await h.web.request(p, {}, ENV);
      assertEquals(r.status, 401, p);
      const j = await r.json() as { error: { message: string } };
      assert(j.error.message.length > 0);
    }
    const rpc = await h.web.request("/api/rpc", {
      method: "POST",
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "bdev_get_bdevs" }),
      headers: { "Content-Type": "application/json" },
    }, ENV);
    assertEquals(rpc.status, 401);
    const page = await h.web.request("/volumes", {}, ENV);
    assertEquals(page.status, 303);
    const badToken = await h.web.request("/api/bdevs", {
      headers: { Authorization: "Bearer sluice_nope" },
    }, ENV);
    assertEquals(badToken.status, 401);
    // The OpenAPI description is public and lists the API.
    const doc = await (await h.web.request("/api/openapi.json", {}, ENV)).json() as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    assert(doc.openapi.startsWith("3."));
    for (
      const p of [
        "/api/rpc",
        "/api/bdevs",
        "/api/subsystems",
        "/api/vhost",
        "/api/stats",
        "/metrics",
      ]
    ) {
      assert(p in doc.paths, p);
    }
  });
});

Deno.test("web: POSTs without the CSRF token are refused; with it the RPC table runs", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    const create = { name: "Web0", size_mib: "4", block_size: "512" };
    const none = await h.web.request("/volumes/create", form(cookie, create), ENV);
    assertEquals(none.status, 403);
    const wrong = await h.web.request(
      "/volumes/create",
      form(cookie, { ...create, _csrf: "x" + csrf }),
      ENV,
    );
    assertEquals(wrong.status, 403);
    assertEquals(h.app.bdevs.list().length, 0, "nothing was created");

    const rpcBody = JSON.stringify({ jsonrpc: "2.0", id: 7, method: "bdev_get_bdevs" });
    const noHeader = await h.web.request("/api/rpc", {
      method: "POST",
      body: rpcBody,
      headers: { "Content-Type": "application/json", Cookie: cookie },
    }, ENV);
    assertEquals(noHeader.status, 403);
    const crossSite = await h.web.request("http://127.0.0.1:8080/api/rpc", {
      method: "POST",
      body: rpcBody,
      headers: {
        "Content-Type": "application/json",
        Cookie: cookie,
        [CSRF_HEADER]: csrf,
        Origin: "http://evil.example",
        Host: "127.0.0.1:8080",
      },
    }, ENV);
    assertEquals(crossSite.status, 403);

    const ok = await h.web.request(
      "/volumes/create",
      form(cookie, { ...create, _csrf: csrf }),
      ENV,
    );
    assertEquals(ok.status, 303);
    const b = h.app.bdevs.get("Web0");
    assertEquals(b.sizeBytes, 4 * 1024 * 1024);
    assertEquals(h.mutated, ["bdev_malloc_create"], "the config is saved as after a socket call");

    const viaApi = await h.web.request("/api/rpc", {
      method: "POST",
      body: rpcBody,
      headers: { "Content-Type": "application/json", Cookie: cookie, [CSRF_HEADER]: csrf },
    }, ENV);
    assertEquals(viaApi.status, 200);
    const resp = await viaApi.json() as { id: number; result: { name: string }[] };
    assertEquals(resp.id, 7);
    assertEquals(resp.result.map((x) => x.name), ["Web0"]);
  });
});

Deno.test("web: volume forms show RPC errors next to the form; delete needs the name typed", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    const mk = (name: string, size = "2") =>
      h.web.request(
        "/volumes/create",
        form(cookie, { _csrf: csrf, name, size_mib: size, block_size: "4096" }),
        ENV,
      );
    assertEquals((await mk("V1")).status, 303);
    const dup = await mk("V1");
    assertEquals(dup.status, 400);
    const dupHtml = await dup.text();
    assert(/id="create-error">[^<]*V1[^<]*exists/i.test(dupHtml), dupHtml);
    const badSize = await mk("V2", "0");
    assertEquals(badSize.status, 400);
    assert((await badSize.text()).includes("whole number of MiB"));
    const badName = await mk("bad name<script>");
    assertEquals(badName.status, 400);
    const badHtml = await badName.text();
    assert(!badHtml.includes("<script>"), "values are escaped");

    const list = await (await h.web.request("/volumes", { headers: { Cookie: cookie } }, ENV))
      .text();
    assert(list.includes('data-bdev="V1"'));

    const unconfirmed = await h.web.request(
      "/volumes/delete",
      form(cookie, { _csrf: csrf, name: "V1", confirm: "V" }),
      ENV,
    );
    assertEquals(unconfirmed.status, 400);
    assert((await unconfirmed.text()).includes("Type the volume"));
    assertEquals(h.app.bdevs.list().length, 1);
    const del = await h.web.request(
      "/volumes/delete",
      form(cookie, { _csrf: csrf, name: "V1", confirm: "V1" }),
      ENV,
    );
    assertEquals(del.status, 303);
    assertEquals(h.app.bdevs.list().length, 0);
  });
});

Deno.test("web: failed logins are limited per address; the limit lifts after the window", async () => {
  await withWeb(async (h) => {
    for (let i = 0; i < 5; i++) assertEquals((await login(h, "wrong-password")).status, 401);
    const limited = await login(h);
    assertEquals(limited.status, 429, "even the right password waits");
    assert(Number(limited.res.headers.get("Retry-After")) > 0);
    // Another address is not limited by this one's failures.
    assertEquals((await login(h, h.password, { remoteAddr: "192.0.2.8" })).status, 303);
    h.clock.ms += 61_000;
    assertEquals((await login(h)).status, 303);
  });
});

Deno.test("web: bearer tokens work without CSRF, are stored hashed, and can be revoked", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    const made = await h.web.request(
      "/settings/tokens",
      form(cookie, { _csrf: csrf, name: "prometheus" }),
      ENV,
    );
    assertEquals(made.status, 200);
    const token = /id="new-token">([^<]+)</.exec(await made.text())?.[1];
    assert(token !== undefined);
    const file = await Deno.readTextFile(`${h.dir}/admin.json`);
    assert(!file.includes(token) && !file.includes(h.password), "secrets stored only hashed");
    assertEquals(((await Deno.stat(`${h.dir}/admin.json`)).mode ?? 0) & 0o777, 0o600);

    const auth = { Authorization: `Bearer ${token}` };
    await h.app.call("bdev_malloc_create", { name: "T0", num_blocks: 16, block_size: 512 });
    const rpc = await h.web.request("/api/rpc", {
      method: "POST",
      body: JSON.stringify([
        { jsonrpc: "2.0", id: 1, method: "bdev_get_bdevs", params: { name: "T0" } },
        { jsonrpc: "2.0", id: 2, method: "no_such_method" },
        { jsonrpc: "2.0", id: 3, method: "bdev_malloc_create", params: { name: "T1" } },
      ]),
      headers: { "Content-Type": "application/json", ...auth },
    }, ENV);
    assertEquals(rpc.status, 200);
    const out = await rpc.json() as { id: number; result?: unknown; error?: { code: number } }[];
    assertEquals(out.map((r) => r.error?.code ?? 0), [0, -32601, -32602]);
    const parse = await h.web.request("/api/rpc", {
      method: "POST",
      body: "{not json",
      headers: { "Content-Type": "application/json", ...auth },
    }, ENV);
    assertEquals((await parse.json() as { error: { code: number } }).error.code, -32700);

    const bdevs = await (await h.web.request("/api/bdevs", { headers: auth }, ENV)).json() as {
      name: string;
    }[];
    assertEquals(bdevs.map((b) => b.name), ["T0"]);
    const stats = await (await h.web.request("/api/stats", { headers: auth }, ENV)).json() as {
      bdevs: unknown[];
    };
    assertEquals(stats.bdevs.length, 1);
    assertEquals((await h.web.request("/api/subsystems", { headers: auth }, ENV)).status, 200);
    assertEquals((await h.web.request("/api/vhost", { headers: auth }, ENV)).status, 200);

    const metrics = await h.web.request("/metrics", { headers: auth }, ENV);
    assert(metrics.headers.get("Content-Type")?.startsWith("text/plain; version=0.0.4"));
    const fams = parsePrometheusText(await metrics.text());
    assert(fams.get("sluice_bdev_io_ops_total")?.samples.some((s) => s.labels["bdev"] === "T0"));

    // Pages are for browsers: a token does not open them.
    assertEquals((await h.web.request("/volumes", { headers: auth }, ENV)).status, 403);

    const settings = await (await h.web.request("/settings", { headers: { Cookie: cookie } }, ENV))
      .text();
    assert(!settings.includes(token), "the token is shown only once");
    const id = /name="id" value="([^"]+)"/.exec(settings)?.[1] as string;
    const revoked = await h.web.request(
      "/settings/tokens/revoke",
      form(cookie, { _csrf: csrf, id }),
      ENV,
    );
    assertEquals(revoked.status, 303);
    assertEquals((await h.web.request("/api/bdevs", { headers: auth }, ENV)).status, 401);
  });
});

Deno.test("web: changing the password ends other sessions; the old one no longer logs in", async () => {
  await withWeb(async (h) => {
    const a = await login(h);
    const b = await login(h);
    assert(a.cookie && a.csrf && b.cookie);
    const wrong = await h.web.request(
      "/settings/password",
      form(a.cookie, { _csrf: a.csrf, current: "nope", new: "a-new-long-password" }),
      ENV,
    );
    assertEquals(wrong.status, 401);
    const short = await h.web.request(
      "/settings/password",
      form(a.cookie, { _csrf: a.csrf, current: h.password, new: "short" }),
      ENV,
    );
    assertEquals(short.status, 400);
    const ok = await h.web.request(
      "/settings/password",
      form(a.cookie, { _csrf: a.csrf, current: h.password, new: "a-new-long-password" }),
      ENV,
    );
    assertEquals(ok.status, 200);
    assertEquals((await h.web.request("/", { headers: { Cookie: a.cookie } }, ENV)).status, 200);
    assertEquals((await h.web.request("/", { headers: { Cookie: b.cookie } }, ENV)).status, 303);
    assertEquals((await login(h)).status, 401);
    assertEquals((await login(h, "a-new-long-password")).status, 303);
    // The file survives a restart with the new password.
    const reopened = await AdminAuth.open(`${h.dir}/admin.json`);
    assertEquals(reopened.initialPassword, undefined);
    assert(await reopened.auth.verifyPassword("a-new-long-password"));
  });
});

Deno.test("web: the dashboard's event stream sends a stats snapshot every period", async () => {
  await withWeb(async (h) => {
    const { cookie } = await login(h);
    assert(cookie !== undefined);
    await h.app.call("bdev_malloc_create", { name: "E0", num_blocks: 16, block_size: 512 });
    await h.app.call("vhost_create_blk_controller", {
      ctrlr: "vhost.E0",
      dev_name: "E0",
      socket: `${h.dir}/E0.sock`,
    });
    const r = await h.web.request("/events", { headers: { Cookie: cookie } }, ENV);
    assertEquals(r.status, 200);
    assert(r.headers.get("Content-Type")?.startsWith("text/event-stream"));
    const reader = (r.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream())
      .getReader();
    let text = "";
    while ((text.match(/event: stats/g) ?? []).length < 2) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    await reader.cancel();
    const data = /data: (.*)\n/.exec(text)?.[1] as string;
    const s = JSON.parse(data) as {
      bdevs: { name: string }[];
      vhost: { ctrlr: string; socket: string }[];
    };
    assertEquals(s.bdevs.map((b) => b.name), ["E0"]);
    // The served vhost-user sockets ride along, for the dashboard's live list.
    assertEquals(s.vhost.map((v) => [v.ctrlr, v.socket]), [["vhost.E0", `${h.dir}/E0.sock`]]);
  });
});

Deno.test("web: admin.json readable by others is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-" });
  try {
    const path = `${dir}/admin.json`;
    await AdminAuth.open(path, { iterations: 1000 });
    await Deno.chmod(path, 0o644);
    let msg = "";
    try {
      await AdminAuth.open(path);
    } catch (e) {
      msg = e instanceof Error ? e.message : String(e);
    }
    assert(msg.includes("chmod 600"), msg);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web: exports forms make and remove NVMe/TCP subsystems and vhost controllers, all or nothing", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    await h.app.call("bdev_malloc_create", { name: "X0", num_blocks: 64, block_size: 512 });
    const nqn = "nqn.2026-11.dev.sluice:webtest";
    const port = String(freePort());
    const post = async (path: string, f: Record<string, string>): Promise<Response> =>
      await h.web.request(path, form(cookie, { _csrf: csrf, ...f }), ENV);

    // A missing volume fails at the namespace step: the subsystem made before it is removed.
    const bad = await post("/exports/nvmf/create", {
      nqn,
      bdev: "nope",
      listen: `127.0.0.1:${port}`,
    });
    assertEquals(bad.status, 400);
    assert((await bad.text()).includes('id="nvmf-error"'));
    const subs = () =>
      h.app.call("nvmf_get_subsystems") as Promise<{ nqn: string; subtype: string }[]>;
    assertEquals((await subs()).filter((s) => s.subtype === "NVMe").length, 0);

    const ok = await post("/exports/nvmf/create", { nqn, bdev: "X0", listen: `127.0.0.1:${port}` });
    assertEquals(ok.status, 303);
    const page = await (await h.web.request("/exports", { headers: { Cookie: cookie } }, ENV))
      .text();
    assert(page.includes(`data-nqn="${nqn}"`) && page.includes(`127.0.0.1:${port}`), page);
    const [made] = await h.app.call("nvmf_get_subsystems", { nqn }) as {
      allow_any_host: boolean;
    }[];
    assertEquals(made?.allow_any_host, true, "no hosts given: any host");

    // With allowed hosts: only those; a bad host NQN undoes the whole export.
    const nqn2 = `${nqn}2`;
    await h.app.call("bdev_malloc_create", { name: "X1", num_blocks: 64, block_size: 512 });
    const host = "nqn.2014-08.org.nvmexpress:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    const port2 = String(freePort());
    const badHost = await post("/exports/nvmf/create", {
      nqn: nqn2,
      bdev: "X1",
      listen: `127.0.0.1:${port2}`,
      hosts: `${host}, not-an-nqn`,
    });
    assertEquals(badHost.status, 400);
    assertEquals((await subs()).filter((s) => s.nqn === nqn2).length, 0);
    const withHost = await post("/exports/nvmf/create", {
      nqn: nqn2,
      bdev: "X1",
      listen: `127.0.0.1:${port2}`,
      hosts: host,
    });
    assertEquals(
      withHost.status,
      303,
      /id="nvmf-error">([^<]*)/.exec(await withHost.clone().text())?.[1],
    );
    const [sub2] = await h.app.call("nvmf_get_subsystems", { nqn: nqn2 }) as {
      allow_any_host: boolean;
      hosts: { nqn: string }[];
    }[];
    assertEquals([sub2?.allow_any_host, sub2?.hosts.map((x) => x.nqn)], [false, [host]]);
    assertEquals((await post("/exports/nvmf/delete", { nqn: nqn2, confirm: nqn2 })).status, 303);
    const unconfirmed = await post("/exports/nvmf/delete", { nqn, confirm: "x" });
    assertEquals(unconfirmed.status, 400);
    assertEquals(
      await post("/exports/nvmf/delete", { nqn, confirm: nqn }).then((r) => r.status),
      303,
    );
    assertEquals((await subs()).filter((s) => s.subtype === "NVMe").length, 0);

    const sock = `${h.dir}/vh0.sock`;
    const vh = await post("/exports/vhost/create", {
      ctrlr: "vh0",
      vhost_bdev: "X0",
      socket: sock,
    });
    assertEquals(vh.status, 303);
    const dup = await post("/exports/vhost/create", {
      ctrlr: "vh0",
      vhost_bdev: "X0",
      socket: sock,
    });
    assertEquals(dup.status, 400);
    assert((await dup.text()).includes('id="vhost-error"'));
    assertEquals(
      await post("/exports/vhost/delete", { ctrlr: "vh0", confirm: "vh0" }).then((r) => r.status),
      303,
    );
    assertEquals((await h.app.call("vhost_get_controllers") as unknown[]).length, 0);
  });
});

Deno.test("web: config download and upload go through save_config and load_config; logs page filters", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    await h.app.call("bdev_malloc_create", { name: "C0", num_blocks: 64, block_size: 512 });
    const dl = await h.web.request("/settings/config.json", { headers: { Cookie: cookie } }, ENV);
    assertEquals(dl.status, 200);
    assert(dl.headers.get("Content-Disposition")?.includes("attachment"));
    const cfg = await dl.json() as {
      subsystems: { subsystem: string; config: { method: string }[] }[];
    };
    const bdev = cfg.subsystems.find((s) => s.subsystem === "bdev");
    assert(bdev?.config.some((c) => c.method === "bdev_malloc_create"), JSON.stringify(cfg));

    // Upload it into an appliance where C0 is gone: C0 comes back.
    await h.app.call("bdev_malloc_delete", { name: "C0" });
    const upload = async (text: string): Promise<Response> => {
      const fd = new FormData();
      fd.set("_csrf", csrf);
      fd.set("config", new File([text], "c.json", { type: "application/json" }));
      return await h.web.request("/settings/config", {
        method: "POST",
        body: fd,
        headers: { Cookie: cookie },
      }, ENV);
    };
    const ok = await upload(JSON.stringify(cfg));
    assertEquals(ok.status, 200, await ok.clone().text());
    assert((await ok.text()).includes('id="config-ok"'));
    assertEquals(h.app.bdevs.get("C0").numBlocks, 64);
    const notJson = await upload("{nope");
    assertEquals(notJson.status, 400);
    assert((await notJson.text()).includes("not JSON"));
    const again = await upload(JSON.stringify(cfg));
    assertEquals(again.status, 400, "C0 exists already: load_config's error is shown");
    assert((await again.text()).includes('id="config-error"'));
    // A multipart upload without the CSRF field is refused like any other form.
    const fd = new FormData();
    fd.set("config", new File([JSON.stringify(cfg)], "c.json"));
    const forged = await h.web.request("/settings/config", {
      method: "POST",
      body: fd,
      headers: { Cookie: cookie },
    }, ENV);
    assertEquals(forged.status, 403);

    h.ring.push("nvmf: host nqn.x connected");
    const logs =
      await (await h.web.request("/logs?q=CONNECTED", { headers: { Cookie: cookie } }, ENV))
        .text();
    assert(logs.includes("nvmf: host nqn.x connected"), logs);
    assert(!logs.includes("configuration applied"), "filtered out");
    const all = await (await h.web.request("/logs", { headers: { Cookie: cookie } }, ENV)).text();
    assert(all.includes("configuration applied"), all);
    assert(!all.includes(h.password));
  });
});

Deno.test("web: calls wait for the socket server's queue (the two never interleave)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-" });
  const app = new App();
  app.start();
  try {
    const { auth } = await AdminAuth.open(`${dir}/admin.json`, { iterations: 1000 });
    const queue = new RpcQueue();
    const web = createAdminApp({ engine: { table: app.rpc, ctx: app, queue }, auth });
    const { token } = await auth.createToken("t");
    const release = Promise.withResolvers<void>();
    const order: string[] = [];
    const socketCall = queue.run(async () => {
      await release.promise;
      order.push("socket");
    });
    const webCall = Promise.resolve(web.request("/api/rpc", {
      method: "POST",
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "bdev_malloc_create",
        params: { name: "Q0", num_blocks: 8, block_size: 512 },
      }),
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    }, ENV)).then((r) => {
      order.push("web");
      return r;
    });
    // Let the web request run as far as it can: it must be parked behind the socket's call.
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
    assertEquals(order, []);
    assertEquals(app.bdevs.list().length, 0);
    release.resolve();
    await socketCall;
    assertEquals((await webCall).status, 200);
    assertEquals(order, ["socket", "web"]);
    assertEquals(app.bdevs.get("Q0").numBlocks, 8);
  } finally {
    await app.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web: Connections lists NVMe/TCP controllers and disconnects one on request", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    const nqn = "nqn.2016-06.io.spdk:cnode1";
    const host = "nqn.2014-08.org.nvmexpress:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    await h.app.call("nvmf_create_transport", { trtype: "TCP" });
    await h.app.call("nvmf_create_subsystem", { nqn, allow_any_host: true });
    const port = String(freePort());
    await h.app.call("nvmf_subsystem_add_listener", {
      nqn,
      listen_address: { trtype: "TCP", adrfam: "IPv4", traddr: "127.0.0.1", trsvcid: port },
    });
    // A host through the target's entry point (the fake host of the target's own tests).
    const admin = new FakeQpair("127.0.0.1", port);
    const cntlid = await connectAndEnable(nvmfTarget(h.app), admin, nqn, host);
    const page = await (await h.web.request("/connections", { headers: { Cookie: cookie } }, ENV))
      .text();
    assert(page.includes(`data-cntlid="${cntlid}"`) && page.includes(host), page);
    const dash = await (await h.web.request("/", { headers: { Cookie: cookie } }, ENV)).text();
    const hostsList = /<ul id="hosts">[\s\S]*?<\/ul>/.exec(dash)?.[0] ?? "";
    assert(hostsList.includes(host) && hostsList.includes(`controller ${cntlid}`), hostsList);
    const { token } = await h.auth.createToken("m");
    const metrics = parsePrometheusText(
      await (await h.web.request(
        "/metrics",
        { headers: { Authorization: `Bearer ${token}` } },
        ENV,
      ))
        .text(),
    );
    const q = metrics.get("sluice_nvmf_host_io_queues")?.samples ?? [];
    assertEquals(q.map((x) => [x.labels["hostnqn"], x.labels["cntlid"], x.value]), [[
      host,
      String(cntlid),
      0,
    ]]);

    const bad = await h.web.request(
      "/connections/disconnect",
      form(cookie, { _csrf: csrf, nqn, cntlid: String(cntlid + 1) }),
      ENV,
    );
    assertEquals(bad.status, 400);
    assert((await bad.text()).includes(`no controller ${cntlid + 1}`));
    const ok = await h.web.request(
      "/connections/disconnect",
      form(cookie, { _csrf: csrf, nqn, cntlid: String(cntlid) }),
      ENV,
    );
    assertEquals(ok.status, 303);
    assertEquals(admin.disconnectReason, "disconnected by the operator");
    assertEquals(await h.app.call("nvmf_subsystem_get_controllers", { nqn }), []);
  });
});

Deno.test("web: file and encrypted volumes from their forms; errors next to the form, no key shown", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    const post = async (path: string, f: Record<string, string>): Promise<Response> =>
      await h.web.request(path, form(cookie, { _csrf: csrf, ...f }), ENV);
    const img = `${h.dir}/f0.img`;
    await Deno.writeFile(img, new Uint8Array(1024 * 1024));
    const missing = await post("/volumes/create-file", {
      name: "F0",
      filename: `${h.dir}/none.img`,
      block_size: "512",
    });
    assertEquals(missing.status, 400);
    const missingHtml = await missing.text();
    assert(/id="file-error">[^<]*none\.img/.test(missingHtml), missingHtml);
    assertEquals(
      (await post("/volumes/create-file", { name: "F0", filename: img, block_size: "512" })).status,
      303,
    );
    assertEquals(h.app.bdevs.get("F0").numBlocks, 2048);

    const page = await (await h.web.request("/volumes", { headers: { Cookie: cookie } }, ENV))
      .text();
    assert(page.includes("No crypto key is loaded"), "no key: the form says where keys come from");
    const key = "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f";
    const key2 = "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    await h.app.call("accel_crypto_key_create", { name: "k0", cipher: "AES_XTS", key, key2 });
    const nokey = await post("/volumes/create-crypto", {
      name: "C1",
      base_bdev_name: "F0",
      key_name: "k9",
    });
    assertEquals(nokey.status, 400);
    assert((await nokey.text()).includes('id="crypto-error"'));
    const ok = await post("/volumes/create-crypto", {
      name: "C1",
      base_bdev_name: "F0",
      key_name: "k0",
    });
    assertEquals(ok.status, 303);
    const list = await (await h.web.request("/volumes", { headers: { Cookie: cookie } }, ENV))
      .text();
    assert(list.includes('data-bdev="C1"'));
    for (const k of [key, key2]) {
      assert(!list.toLowerCase().includes(k.slice(0, 16)), "no key bytes");
    }
    // The layering shows: F0's row names the bdev built on it.
    const f0 = /<tr data-bdev="F0">[\s\S]*?<\/tr>/.exec(list)?.[0] ?? "";
    assert(f0.includes("<td>C1</td>"), f0);
  });
});

Deno.test("web: on loopback, a Host that is not a loopback name is refused (DNS rebinding)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-" });
  const app = new App();
  try {
    const { auth } = await AdminAuth.open(`${dir}/admin.json`, { iterations: 1000 });
    const web = createAdminApp({ engine: { table: app.rpc, ctx: app }, auth, loopbackOnly: true });
    for (const host of ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST"]) {
      const r = await web.request("http://x/login", { headers: { Host: host } }, ENV);
      assertEquals(r.status, 200, host);
    }
    for (const host of ["evil.example:8080", "127.0.0.1.evil.example", "localhost.evil:8080"]) {
      const r = await web.request("http://x/login", { headers: { Host: host } }, ENV);
      assertEquals(r.status, 403, host);
    }
  } finally {
    await app.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web: the login limit's memory stays bounded under many client addresses", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-" });
  try {
    const clock = { ms: 0 };
    const { auth } = await AdminAuth.open(`${dir}/admin.json`, {
      iterations: 1000,
      now: () => clock.ms,
    });
    for (let i = 0; i < 12_000; i++) auth.loginFailed(`198.51.${i >> 8}.${i & 255}`);
    // The address failing now is remembered (the oldest are forgotten first) and limited.
    for (let i = 0; i < 5; i++) auth.loginFailed("203.0.113.9");
    assertEquals(auth.loginRetryAfterS("203.0.113.9"), 60);
    assert(auth.trackedAddresses() <= 10_001, `${auth.trackedAddresses()} addresses tracked`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web: the NVMe form attaches through bdev_nvme_attach_controller; its errors next to the form", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    const page = await (await h.web.request("/volumes", { headers: { Cookie: cookie } }, ENV))
      .text();
    assert(
      page.includes('action="/volumes/create-nvme"') && page.includes('id="nvme-controllers"'),
    );
    const attach = (fields: Record<string, string>) =>
      h.web.request("/volumes/create-nvme", form(cookie, { _csrf: csrf, ...fields }), ENV);
    const errorOf = (html: string) => /id="nvme-error">([^<]*)</.exec(html)?.[1] ?? "";

    // No such PCI function on this machine (nor any VFIO device): the RPC's clear error.
    const missing = await attach({ name: "N1", trtype: "PCIe", traddr: "0000:fe:1f.7" });
    assertEquals(missing.status, 400);
    const missingHtml = await missing.text();
    assert(errorOf(missingHtml).includes("no PCI device 0000:fe:1f.7"), errorOf(missingHtml));
    assert(missingHtml.includes('value="0000:fe:1f.7"'), "the address typed is kept");
    const badAddr = await attach({ name: "N1", trtype: "PCIe", traddr: "nope" });
    assertEquals(badAddr.status, 400);
    assert(errorOf(await badAddr.text()).includes("PCI address"));
    const tcp = await attach({ name: "N1", trtype: "TCP", traddr: "0000:fe:1f.7" });
    assertEquals(tcp.status, 400);
    assert(errorOf(await tcp.text()).includes("&quot;trtype&quot; must be &quot;PCIe&quot;"));
    assertEquals(h.app.bdevs.list().length, 0);
    assertEquals(h.mutated, [], "nothing changed, nothing saved");

    // Without the CSRF token the form is refused before the RPC runs.
    const forged = await h.web.request(
      "/volumes/create-nvme",
      form(cookie, { name: "N1", trtype: "PCIe", traddr: "0000:fe:1f.7" }),
      ENV,
    );
    assertEquals(forged.status, 403);

    const unconfirmed = await h.web.request(
      "/volumes/detach-nvme",
      form(cookie, { _csrf: csrf, name: "N1", confirm: "N" }),
      ENV,
    );
    assertEquals(unconfirmed.status, 400);
    assert((await unconfirmed.text()).includes("Type the controller"));
    const unknown = await h.web.request(
      "/volumes/detach-nvme",
      form(cookie, { _csrf: csrf, name: "N1", confirm: "N1" }),
      ENV,
    );
    assertEquals(unknown.status, 400);
    assert(
      /id="detach-error">[^<]*no nvme controller named &quot;N1&quot;/.test(await unknown.text()),
    );
  });
});

Deno.test("web: Connections shows a VM on a vhost-user socket and disconnects it on request", async () => {
  await withWeb(async (h) => {
    const { cookie, csrf } = await login(h);
    assert(cookie !== undefined && csrf !== undefined);
    await h.app.call("bdev_malloc_create", { name: "M0", num_blocks: 2048, block_size: 512 });
    const socket = `${h.dir}/vhost.0.sock`;
    await h.app.call("vhost_create_blk_controller", { ctrlr: "vhost.0", dev_name: "M0", socket });
    const page = async () =>
      await (await h.web.request("/connections", { headers: { Cookie: cookie } }, ENV)).text();
    assert((await page()).includes("no VM connected"));
    // Not connected: a clear error next to the list.
    const none = await h.web.request(
      "/connections/vhost-disconnect",
      form(cookie, { _csrf: csrf, ctrlr: "vhost.0" }),
      ENV,
    );
    assertEquals(none.status, 400);
    assert((await none.text()).includes("no VM is connected to vhost controller vhost.0"));

    // A front-end (what QEMU does first): GET_FEATURES, and the reply.
    const fe = UnixSocket.connect(socket);
    try {
      await fe.sendMsg(encodeMessage(VhostUserRequest.GET_FEATURES));
      const buf = new Uint8Array(64);
      assertEquals((await guard(fe.recvMsg(buf), "GET_FEATURES reply")).bytes, 20);
      assert((await page()).includes("a VM is connected"));
      const ok = await h.web.request(
        "/connections/vhost-disconnect",
        form(cookie, { _csrf: csrf, ctrlr: "vhost.0" }),
        ENV,
      );
      assertEquals(ok.status, 303);
      assertEquals((await guard(fe.recvMsg(buf), "end of the connection")).bytes, 0);
      let gone = false;
      for (let i = 0; i < 200 && !gone; i++) {
        gone = (await page()).includes("no VM connected");
        if (!gone) await sleep(25);
      }
      assert(gone, "the page still shows the VM after the disconnect");
    } finally {
      fe.close();
    }
  });
});

Deno.test("web: token ids are hex, so a command line never reads one as an option", async () => {
  await withWeb(async (h) => {
    for (let i = 0; i < 20; i++) {
      const { id } = await h.auth.createToken(`t${i}`);
      assert(/^[0-9a-f]{12}$/.test(id), id);
    }
  });
});

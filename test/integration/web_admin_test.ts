/**
 * The web admin as served by `sluice serve`: the password printed once at
 * the first start and stored only hashed, a login over real HTTP, a volume
 * made from the Volumes form, live counters in /metrics while `sluice perf`
 * runs against the default export, and a clean SIGTERM with the dashboard's
 * event stream still open.
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { startDaemon } from "../../src/testing/daemon.ts";
import { freePort } from "../../src/testing/net.ts";
import { parsePrometheusText } from "../../src/stats/prometheus_parse.ts";

const MAIN = new URL("../../appliance/main.ts", import.meta.url).pathname;
const DEFAULT_NQN = "nqn.2026-11.dev.sluice:default";

function cookieOf(r: Response, name: string): string | undefined {
  for (const c of r.headers.getSetCookie()) {
    const kv = c.split(";")[0] ?? "";
    if (kv.startsWith(`${name}=`)) return kv;
  }
  return undefined;
}

function formPost(url: string, cookie: string, fields: Record<string, string>): Promise<Response> {
  return fetch(url, {
    method: "POST",
    body: new URLSearchParams(fields),
    headers: { "Content-Type": "application/x-www-form-urlencoded", Cookie: cookie },
    redirect: "manual",
  });
}

Deno.test("web admin in sluice serve: login, create a volume, live /metrics under perf, clean stop", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-it-" });
  const nvmfPort = freePort();
  const args = ["--nvmf-listen", `127.0.0.1:${nvmfPort}`, "--admin-listen", "127.0.0.1:0"];
  let d = await startDaemon(dir, { args });
  try {
    const log = d.log.join("\n");
    const base = /web admin on (http:\/\/127\.0\.0\.1:\d+)\//.exec(log)?.[1];
    const password = /web admin password \(shown once[^)]*\): (\S+)/.exec(log)?.[1];
    assert(base !== undefined && password !== undefined, log);
    const file = await Deno.readTextFile(`${dir}/admin.json`);
    assert(!file.includes(password), "admin.json holds only a hash");
    assertEquals(((await Deno.stat(`${dir}/admin.json`)).mode ?? 0) & 0o777, 0o600);

    // Log in as a browser does: the form's CSRF cookie, then the session cookie.
    const page = await fetch(`${base}/login`);
    await page.body?.cancel();
    const loginCookie = cookieOf(page, "sluice_login_csrf") as string;
    const wrong = await formPost(`${base}/login`, loginCookie, {
      _csrf: loginCookie.split("=")[1] as string,
      password: "wrong password",
    });
    assertEquals(wrong.status, 401);
    await wrong.body?.cancel();
    const ok = await formPost(`${base}/login`, loginCookie, {
      _csrf: loginCookie.split("=")[1] as string,
      password,
    });
    await ok.body?.cancel();
    assertEquals(ok.status, 303);
    const session = cookieOf(ok, "sluice_session") as string;
    const dash = await (await fetch(`${base}/`, { headers: { Cookie: session } })).text();
    const csrf = /<meta name="csrf-token" content="([^"]+)"/.exec(dash)?.[1] as string;
    assert(dash.includes('data-bdev="default"'), "the dashboard lists the default volume");

    const made = await formPost(`${base}/volumes/create`, session, {
      _csrf: csrf,
      name: "WebRam0",
      size_mib: "8",
      block_size: "4096",
    });
    await made.body?.cancel();
    assertEquals(made.status, 303);
    const viaSocket = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "rpc", "bdev_get_bdevs", "--name", "WebRam0", "-s", d.socket],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assertEquals(viaSocket.code, 0, "the CLI sees the volume the web made: one RPC table");

    // Open the event stream, then drive I/O through NVMe/TCP.
    const events = await fetch(`${base}/events`, { headers: { Cookie: session } });
    const reader = (events.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream())
      .getReader();
    const first = await reader.read();
    assert(first.value?.includes("event: stats"), first.value);

    const perf = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "perf",
        "-r",
        `trtype:TCP traddr:127.0.0.1 trsvcid:${nvmfPort} subnqn:${DEFAULT_NQN}`,
        "-q",
        "4",
        "-o",
        "4096",
        "-w",
        "randrw",
        "-M",
        "50",
        "-t",
        "1",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(perf.code, 0, new TextDecoder().decode(perf.stderr));

    const metrics = await fetch(`${base}/metrics`, { headers: { Cookie: session } });
    assertEquals(metrics.status, 200);
    const fams = parsePrometheusText(await metrics.text());
    const ops = (type: string) =>
      fams.get("sluice_bdev_io_ops_total")?.samples.find((s) =>
        s.labels["bdev"] === "default" && s.labels["type"] === type
      )?.value ?? 0;
    assert(ops("read") > 0 && ops("write") > 0, `read ${ops("read")} write ${ops("write")}`);
    const opened = fams.get("sluice_nvmf_tcp_connections_opened_total")?.samples[0]?.value ?? 0;
    assert(opened >= 1, `connections opened: ${opened}`);

    // SIGTERM with the stream still open: the daemon stops, and cleanly.
    assertEquals(await d.stop(), 0);
    await reader.cancel().catch(() => {});

    // A second start keeps the password: none is printed.
    d = await startDaemon(dir, { args });
    assert(!d.log.join("\n").includes("web admin password"), d.log.join("\n"));
  } finally {
    await d.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web admin: --admin-listen off serves no admin; a bad address is a usage error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-it-" });
  try {
    const d = await startDaemon(dir, {
      args: ["--nvmf-listen", `127.0.0.1:${freePort()}`, "--admin-listen", "off"],
    });
    const log = d.log.join("\n");
    assertEquals(await d.stop(), 0);
    assert(!log.includes("web admin"), log);
    const bad = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "serve", "--state-dir", dir, "--admin-listen", "8080"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(bad.code, 2);
    assert(new TextDecoder().decode(bad.stderr).includes("--admin-listen must be ADDRESS:PORT"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web admin: sluice admin-token makes and revokes tokens a running appliance honours", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-it-" });
  const cli = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "admin-token", ...args, "--state-dir", dir],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const dec = new TextDecoder();
  try {
    // No admin.json yet: the CLI does not make one (its password would never be shown).
    const early = await cli(["list"]);
    assertEquals(early.code, 1);
    assert(dec.decode(early.stderr).includes("start sluice serve once"));

    const d = await startDaemon(dir, {
      args: ["--nvmf-listen", `127.0.0.1:${freePort()}`, "--admin-listen", "127.0.0.1:0"],
    });
    try {
      const base = /web admin on (http:\/\/127\.0\.0\.1:\d+)\//.exec(d.log.join("\n"))?.[1];
      assert(base !== undefined);
      const made = await cli(["create", "ci job"]);
      assertEquals(made.code, 0, dec.decode(made.stderr));
      const token = dec.decode(made.stdout).trim();
      assert(/^sluice_[A-Za-z0-9_-]+$/.test(token), token);
      assert(!(await Deno.readTextFile(`${dir}/admin.json`)).includes(token));
      const get = () =>
        fetch(`${base}/api/bdevs`, { headers: { Authorization: `Bearer ${token}` } });
      const ok = await get();
      assertEquals(ok.status, 200);
      assertEquals((await ok.json() as { name: string }[]).map((b) => b.name), ["default"]);

      const list = dec.decode((await cli(["list"])).stdout);
      const id = /^(\S+)\s+\S+\s+ci job$/m.exec(list)?.[1];
      assert(id !== undefined, list);
      assertEquals((await cli(["revoke", id])).code, 0);
      const gone = await get();
      assertEquals(gone.status, 401);
      await gone.body?.cancel();
      assertEquals((await cli(["revoke", id])).code, 1);
      assertEquals((await cli(["frobnicate"])).code, 2);
    } finally {
      assertEquals(await d.stop(), 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

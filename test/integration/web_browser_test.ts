/**
 * The web admin in a real browser: Debian's Chromium driven by
 * playwright-core. Logs in (after a refused wrong password), creates a RAM
 * volume, exports it over NVMe/TCP, sees it on the dashboard and its IOPS
 * chart move while `sluice perf` runs against it, checks that a request
 * without the CSRF token is refused, deletes the export and the volume.
 * Screenshots go to var/artifacts/web/ (or $SLUICE_ARTIFACTS/web/).
 *
 * Set-up: Chromium comes from Debian (`apt-get install chromium`), which
 * this test runs itself when it is missing and we are root; otherwise the
 * test is skipped with a message.
 */
import { chromium } from "playwright-core";
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { startDaemon } from "../../src/testing/daemon.ts";
import { freePort } from "../../src/testing/net.ts";
import { GUARD_MS, sleep } from "../../src/testing/wait.ts";

const CHROMIUM = "/usr/bin/chromium";
const NVMF_FORM = 'form[action="/exports/nvmf/create"]';
const MAIN = new URL("../../appliance/main.ts", import.meta.url).pathname;
const ARTIFACTS = `${
  Deno.env.get("SLUICE_ARTIFACTS") ?? new URL("../../var/artifacts", import.meta.url).pathname
}/web`;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function ensureChromium(): Promise<boolean> {
  if (exists(CHROMIUM)) return true;
  if (Deno.uid() !== 0) return false;
  const apt = (args: string[]) =>
    new Deno.Command("apt-get", {
      args,
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdout: "null",
      stderr: "inherit",
    }).output();
  let r = await apt(["install", "-y", "--no-install-recommends", "chromium"]);
  if (!r.success) {
    await apt(["update"]);
    r = await apt(["install", "-y", "--no-install-recommends", "chromium"]);
  }
  return r.success && exists(CHROMIUM);
}

const haveChromium = await ensureChromium();
if (!haveChromium) {
  console.error(`web_browser_test: ${CHROMIUM} missing and not root to install it: skipped`);
}

Deno.test({
  name: "web in Chromium: login, RAM volume, NVMe/TCP export, live IOPS chart, CSRF, delete",
  ignore: !haveChromium,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-web-browser-" });
    await Deno.mkdir(ARTIFACTS, { recursive: true });
    const d = await startDaemon(dir, {
      args: ["--nvmf-listen", `127.0.0.1:${freePort()}`, "--admin-listen", "127.0.0.1:0"],
    });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Chromium's sandbox cannot run as root (CI containers); elsewhere keep it.
      args: Deno.uid() === 0 ? ["--no-sandbox"] : [],
      timeout: GUARD_MS,
    });
    try {
      const log = d.log.join("\n");
      const base = /web admin on (http:\/\/127\.0\.0\.1:\d+)\//.exec(log)?.[1] as string;
      const password = /web admin password \(shown once[^)]*\): (\S+)/.exec(log)?.[1] as string;
      assert(base && password, log);
      const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
      page.setDefaultTimeout(GUARD_MS);

      // A wrong password is refused.
      await page.goto(`${base}/`);
      assertEquals(new URL(page.url()).pathname, "/login");
      await page.fill('input[name="password"]', "not the password");
      await page.click("button");
      assertEquals((await page.textContent("#login-error"))?.trim(), "Wrong password.");
      await page.screenshot({ path: `${ARTIFACTS}/login-refused.png` });

      await page.fill('input[name="password"]', password);
      await page.click("button");
      await page.waitForSelector("h1:text('Dashboard')");

      // A RAM volume from the Volumes form.
      await page.click('header a[href="/volumes"]');
      await page.fill('form[action="/volumes/create"] input[name="name"]', "BrowserRam");
      await page.fill('form[action="/volumes/create"] input[name="size_mib"]', "32");
      await page.click('form[action="/volumes/create"] button');
      await page.waitForSelector('tr[data-bdev="BrowserRam"]');

      // Exported over NVMe/TCP from the Exports form.
      const nqn = "nqn.2026-11.dev.sluice:browser";
      const port = freePort();
      await page.click('header a[href="/exports"]');
      await page.fill(`${NVMF_FORM} input[name="nqn"]`, nqn);
      await page.selectOption(`${NVMF_FORM} select[name="bdev"]`, "BrowserRam");
      await page.fill(`${NVMF_FORM} input[name="listen"]`, `127.0.0.1:${port}`);
      await page.click(`${NVMF_FORM} button`);
      await page.waitForSelector(`tr[data-nqn="${nqn}"]`);
      await page.screenshot({ path: `${ARTIFACTS}/exports.png`, fullPage: true });

      // The dashboard shows it; its chart moves while perf runs.
      await page.click('header a[href="/"]');
      await page.waitForSelector('tr[data-bdev="BrowserRam"]');
      const perf = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          MAIN,
          "perf",
          "-r",
          `trtype:TCP traddr:127.0.0.1 trsvcid:${port} subnqn:${nqn}`,
          "-q",
          "8",
          "-o",
          "4096",
          "-w",
          "randrw",
          "-M",
          "50",
          "-t",
          "6",
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      try {
        // Read through locators (not page-side eval, which the admin's CSP forbids).
        const start = performance.now();
        for (;;) {
          const w = Number(await page.textContent('tr[data-bdev="BrowserRam"] .w'));
          const chart = Number(await page.getAttribute("#iops-chart", "data-last-iops") ?? "0");
          const points = Number(await page.getAttribute("#iops-chart", "data-points") ?? "0");
          // A few seconds of history so the screenshot shows a line, not a dot.
          const p50 = await page.textContent('tr[data-bdev="BrowserRam"] .p50') ?? "";
          // The latency chart's newest p99 point, and perf's host added to the list live
          // (the page was loaded before perf connected).
          const lat = JSON.parse(
            await page.getAttribute("#latency-chart", "data-last") ?? "{}",
          ) as Record<string, number | null>;
          const p99 = lat["BrowserRam p99"] ?? null;
          const hosts = await page.textContent("#hosts") ?? "";
          if (
            w > 0 && chart > 0 && points >= 3 && p50.startsWith("<") && p99 !== null &&
            p99 > 0 && hosts.includes(`NVMe/TCP `) && hosts.includes(nqn)
          ) break;
          if (performance.now() - start > GUARD_MS) {
            throw new Error(
              `the charts never moved (write IOPS ${w}, chart ${chart}, p99 ${p99}, hosts ${hosts})`,
            );
          }
          await sleep(200);
        }
        await page.screenshot({ path: `${ARTIFACTS}/dashboard.png`, fullPage: true });
      } finally {
        const out = await perf.output();
        assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      }

      // The API refuses a page's POST without the CSRF header, accepts it with.
      // The API refuses a POST with the browser's session cookie but no CSRF header.
      const rpc = { jsonrpc: "2.0", id: 1, method: "bdev_get_bdevs" };
      const without = await page.request.post(`${base}/api/rpc`, { data: rpc });
      const token = await page.getAttribute('meta[name="csrf-token"]', "content") ?? "";
      const withIt = await page.request.post(`${base}/api/rpc`, {
        data: rpc,
        headers: { "X-CSRF-Token": token },
      });
      const statuses = [without.status(), withIt.status()];
      assertEquals(statuses, [403, 200]);

      // Delete the export, then the volume (typing its name).
      await page.click('header a[href="/exports"]');
      await page.fill(`tr[data-nqn="${nqn}"] input[name="confirm"]`, nqn);
      await page.click(`tr[data-nqn="${nqn}"] button`);
      await page.waitForSelector(`tr[data-nqn="${nqn}"]`, { state: "detached" });
      await page.click('header a[href="/volumes"]');
      await page.fill('tr[data-bdev="BrowserRam"] input[name="confirm"]', "BrowserRam");
      await page.click('tr[data-bdev="BrowserRam"] button');
      await page.waitForSelector('tr[data-bdev="BrowserRam"]', { state: "detached" });
      await page.screenshot({ path: `${ARTIFACTS}/volumes.png`, fullPage: true });
    } finally {
      await browser.close();
      assertEquals(await d.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * `sluice top` against `sluice serve`: it reads sluice_get_stats over the
 * socket and prints one screen per refresh (no screen clearing into a pipe).
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { startDaemon } from "../../src/testing/daemon.ts";
import { freePort } from "../../src/testing/net.ts";

const MAIN = new URL("../../appliance/main.ts", import.meta.url).pathname;

function sluice(args: string[]): Promise<Deno.CommandOutput> {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("top: two refreshes from a running appliance; bad arguments exit 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-top-" });
  const d = await startDaemon(dir, {
    args: ["--nvmf-listen", `127.0.0.1:${freePort()}`, "--admin-listen", "off"],
  });
  try {
    const out = await sluice(["top", "-s", d.socket, "-n", "2", "-d", "0.2"]);
    const text = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assert(!text.includes("\x1b["), "no terminal escapes into a pipe");
    assertEquals((text.match(/^VOLUME /gm) ?? []).length, 2, text);
    assert(/^default\s+file\s/m.test(text), text);
    assert(text.includes("rates over the last"), text);

    assertEquals((await sluice(["top", "-d", "0"])).code, 2);
    assertEquals((await sluice(["top", "--bogus"])).code, 2);
    const none = await sluice(["top", "-s", `${dir}/nothing.sock`, "-n", "1"]);
    assertEquals(none.code, 1);
    assert(new TextDecoder().decode(none.stderr).includes("Is sluice running?"));
  } finally {
    await d.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

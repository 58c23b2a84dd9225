import { assert, assertEquals, assertRejects } from "../../src/testing/assert.ts";
import { App } from "../../src/app.ts";
import { startAdmin } from "./start.ts";
import { exists } from "../fs.ts";

Deno.test("web start: a taken port leaves no admin.json behind, so the password is not lost", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-web-start-" });
  const app = new App();
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  const logs: string[] = [];
  const opts = {
    stateDir: dir,
    hostname: "127.0.0.1",
    port,
    engine: { table: app.rpc, ctx: app },
    log: (m: string) => void logs.push(m),
  };
  try {
    // The default address taken: no admin, no file, a log line saying why.
    assertEquals(await startAdmin({ ...opts, required: false }), null);
    assert(!(await exists(`${dir}/admin.json`)), "a never-shown password was kept");
    assert(logs.some((l) => l.includes("is in use")), logs.join("\n"));
    // An address asked for: an error, and still no file.
    await assertRejects(() => startAdmin({ ...opts, required: true }), Deno.errors.AddrInUse);
    assert(!(await exists(`${dir}/admin.json`)));
    busy.close();
    const server = await startAdmin({ ...opts, required: true });
    assert(server !== null && (await exists(`${dir}/admin.json`)));
    await server.close();
  } finally {
    try {
      busy.close();
    } catch { /* closed above */ }
    await app.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

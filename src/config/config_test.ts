import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { withApp } from "../testing/app.ts";
import { RpcError } from "../rpc/errors.ts";
import { buildConfig, ConfigError, validateConfig } from "./config.ts";

Deno.test("config: what save_config writes, load_config rebuilds on a fresh appliance", async () => {
  let saved: unknown;
  await withApp(async (app) => {
    // The params SPDK's rpc.py sends, defaults included.
    await app.call("bdev_malloc_create", {
      num_blocks: 2048,
      block_size: 4096,
      name: "Malloc0",
      md_interleave: false,
      dif_is_head_of_md: false,
    });
    await app.call("bdev_passthru_create", { base_bdev_name: "Malloc0", name: "Pass0" });
    await app.call("bdev_error_create", { base_name: "Pass0" });
    saved = await app.call("save_config");
    // rpc.py's client-side save_config: subsystems, then each one's config.
    assertEquals(await app.call("framework_get_subsystems"), [
      { subsystem: "accel", depends_on: [] },
      { subsystem: "bdev", depends_on: ["accel"] },
      { subsystem: "nvmf", depends_on: ["accel", "bdev"] },
      { subsystem: "vhost_blk", depends_on: ["accel", "bdev", "nvmf"] },
    ]);
    const cfg = buildConfig(app);
    assertEquals(
      await app.call("framework_get_config", { name: "bdev" }),
      cfg.subsystems[0]?.config,
    );
  });
  await withApp(async (app) => {
    assertEquals(await app.call("load_config", saved), { applied: 3 });
    const bdevs = (await app.call("bdev_get_bdevs")) as { name: string; uuid: string }[];
    assertEquals(bdevs.map((b) => b.name), ["Malloc0", "Pass0", "EE_Pass0"]);
    assertEquals(await app.call("save_config"), saved, "uuids and geometry survive the round trip");
  });
});

Deno.test("config: SPDK options at non-neutral values and malformed documents are refused clearly", async () => {
  await withApp(async (app) => {
    const e = await assertRejects(
      () => app.call("bdev_malloc_create", { num_blocks: 8, md_size: 8 }),
      RpcError,
    );
    assertEquals(e.code, -32602);
    assert(e.message.includes('"md_size" = 8 is not supported'), e.message);
    const bad = await assertRejects(
      () =>
        app.call("load_config", {
          subsystems: [{ subsystem: "bdev", config: [{ method: "bdev_get_bdevs" }] }],
        }),
      RpcError,
    );
    assert(bad.message.includes("bdev.config[0]"), bad.message);
    assert(bad.message.includes("not a configuration method"), bad.message);
    const failing = await assertRejects(
      () =>
        app.call("load_config", {
          subsystems: [{
            subsystem: "bdev",
            config: [{ method: "bdev_malloc_create", params: { num_blocks: 8, name: "a" } }, {
              method: "bdev_passthru_create",
              params: { base_bdev_name: "missing", name: "p" },
            }],
          }],
        }),
      RpcError,
    );
    assert(
      failing.message.includes("bdev.config[1] bdev_passthru_create: No bdev named"),
      failing.message,
    );
  });
  for (
    const [doc, msg] of [
      [[], "must be an object"],
      [{ subsystems: {} }, '"subsystems" must be an array'],
      [
        { subsystems: [{ subsystem: "iscsi", config: [] }] },
        "subsystems[0].subsystem must be one of",
      ],
      [
        { subsystems: [{ subsystem: "bdev", config: [{ params: {} }] }] },
        "config[0].method must be a string",
      ],
    ] as const
  ) {
    let threw = false;
    try {
      validateConfig(doc);
    } catch (e) {
      threw = e instanceof ConfigError && e.message.includes(msg);
      assert(threw, `${String(e)} should mention ${msg}`);
    }
    assert(threw, `no error for ${JSON.stringify(doc)}`);
  }
});

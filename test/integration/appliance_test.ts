/**
 * The daemon and the CLI as an operator uses them: `sluice serve` on a
 * fresh state dir, `sluice rpc` and `sluice status` against it, the config
 * surviving a restart, a clean stop on SIGTERM.
 */
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { sluice } from "../../src/testing/cli.ts";
import { type Daemon, startDaemon } from "../../src/testing/daemon.ts";
import { freePort } from "../../src/testing/net.ts";

const dec = new TextDecoder();

/** `sluice serve` on `dir` with NVMe/TCP on a free port. */
function startServe(dir: string): Promise<Daemon> {
  return startDaemon(dir, { args: ["--nvmf-listen", `127.0.0.1:${freePort()}`] });
}

Deno.test("appliance: default volume, CLI RPCs, config kept across a restart", async () => {
  const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "sluice-app-" });
  const sock = `${dir}/sluice.sock`;
  try {
    const first = await startServe(dir);
    try {
      assert(first.log.some((l) => l.includes("bdev default: file, 1 GiB")), first.log.join("\n"));
      assert(
        first.log.some((l) =>
          l.includes("nvmf nqn.2026-11.dev.sluice:default: 1 namespace(s) on 127.0.0.1:")
        ),
        first.log.join("\n"),
      );
      assertEquals((await Deno.stat(`${dir}/default.img`)).size, 1024 ** 3);
      assert(
        (await Deno.stat(`${dir}/vhost-default.sock`)).isSocket,
        "the default vhost-user socket",
      );

      const bdevs = await sluice(["rpc", "bdev_get_bdevs", "-s", sock]);
      assertEquals(bdevs.code, 0, dec.decode(bdevs.stderr));
      const list = JSON.parse(dec.decode(bdevs.stdout)) as { name: string; num_blocks: number }[];
      assertEquals(list.map((b) => [b.name, b.num_blocks]), [["default", 2 * 1024 * 1024]]);

      const made = await sluice([
        "rpc",
        "bdev_malloc_create",
        "--num-blocks",
        "2048",
        "--name",
        "ram0",
        "-s",
        sock,
      ]);
      assertEquals(made.code, 0, dec.decode(made.stderr));
      assertEquals(JSON.parse(dec.decode(made.stdout)), "ram0");

      // A bad parameter is the caller's error, with the parameter named; the daemon carries on.
      const bad = await sluice(["rpc", "bdev_malloc_create", "--num_blocks", "-5", "-s", sock]);
      assertEquals(bad.code, 1);
      assert(
        dec.decode(bad.stderr).includes('"num_blocks" must be an integer'),
        dec.decode(bad.stderr),
      );
      const missing = await sluice(["rpc", "bdev_malloc_delete", "--name", "nope", "-s", sock]);
      assert(
        dec.decode(missing.stderr).includes('No bdev named "nope" (code -19)'),
        dec.decode(missing.stderr),
      );

      const status = await sluice(["status", "-s", sock]);
      assertEquals(status.code, 0);
      const text = dec.decode(status.stdout);
      assert(text.includes("default") && text.includes("ram0"), text);

      // A second daemon on the same state dir refuses to start.
      const twice = await sluice(["serve", "--state-dir", dir]);
      assertEquals(twice.code, 1);
      assert(dec.decode(twice.stderr).includes("already serving"), dec.decode(twice.stderr));
    } finally {
      assertEquals(await first.stop(), 0);
    }

    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const methods = cfg.subsystems[0].config.map((c: { method: string }) => c.method);
    assertEquals(methods, ["bdev_file_create", "bdev_malloc_create"]);
    const nvmf = cfg.subsystems[1].config.map((c: { method: string }) => c.method);
    assertEquals(nvmf, [
      "nvmf_create_transport",
      "nvmf_create_subsystem",
      "nvmf_subsystem_add_ns",
      "nvmf_subsystem_add_listener",
    ]);
    assertEquals(cfg.subsystems[2].config.map((c: { method: string }) => c.method), [
      "vhost_create_blk_controller",
    ]);

    const second = await startServe(dir);
    try {
      assert(second.log.some((l) => l.includes("loaded")), second.log.join("\n"));
      const out = await sluice(["rpc", "bdev_get_bdevs", "--name", "ram0", "-s", sock]);
      assertEquals(JSON.parse(dec.decode(out.stdout))[0].num_blocks, 2048);
    } finally {
      assertEquals(await second.stop(), 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: --help for every command, usage errors exit 2", async () => {
  for (const cmd of [["--help"], ["serve", "--help"], ["rpc", "--help"], ["status", "--help"]]) {
    const out = await sluice(cmd);
    assertEquals(out.code, 0, cmd.join(" "));
    assert(dec.decode(out.stdout).includes("Usage: sluice"), cmd.join(" "));
  }
  const bad = await sluice(["frobnicate"]);
  assertEquals(bad.code, 2);
  assert(dec.decode(bad.stderr).includes("unknown command 'frobnicate'"));
  const noServer = await sluice(["status", "-s", "/nonexistent/sluice.sock"]);
  assertEquals(noServer.code, 1);
  assert(dec.decode(noServer.stderr).includes("Is sluice running?"));
});

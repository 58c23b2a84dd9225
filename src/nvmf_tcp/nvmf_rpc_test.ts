import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import type { App } from "../app.ts";
import { withApp as withAppBase } from "../testing/app.ts";
import { RpcError } from "../rpc/errors.ts";
import { commandSpecificStatus, getString, NvmeCns, NvmfFabricsSc } from "../nvme/mod.ts";
import { connect, connectAndEnable, FakeQpair, identify } from "./fake_host.ts";
import { nvmfTarget, shutdownNvmfTarget } from "./nvmf_rpc.ts";
import type { NvmfListener } from "./target.ts";

const NQN = "nqn.2016-06.io.spdk:cnode1";
const HOST = "nqn.2014-08.org.nvmexpress:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8";
const ADDR = { trtype: "TCP", adrfam: "IPv4", traddr: "127.0.0.1", trsvcid: "4420" };

/** An App around `fn`; the NVMe/TCP target's listeners are closed before it shuts down. */
function withApp(fn: (app: App) => Promise<void>): Promise<void> {
  return withAppBase(fn, shutdownNvmfTarget);
}

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  return await assertRejects(() => p, RpcError);
}

/** The calls rpc.py sends to build a target, its defaults included. */
async function build(app: App): Promise<void> {
  await app.call("bdev_malloc_create", { num_blocks: 2048, block_size: 512, name: "Malloc0" });
  await app.call("bdev_malloc_create", { num_blocks: 64, block_size: 4096, name: "Malloc1" });
  await app.call("nvmf_create_transport", {
    trtype: "tcp",
    max_queue_depth: 64,
    in_capsule_data_size: 8192,
    kas: 5,
    no_srq: false,
    c2h_success: true,
    zcopy: false,
    dif_insert_or_strip: false,
  });
  await app.call("nvmf_create_subsystem", {
    nqn: NQN,
    serial_number: "SPDK00000000000001",
    model_number: "SPDK bdev Controller",
    allow_any_host: false,
    max_namespaces: 8,
    ana_reporting: false,
    passthrough: false,
    enable_nssr: false,
  });
  await app.call("nvmf_subsystem_add_host", { nqn: NQN, host: HOST });
  assertEquals(
    await app.call("nvmf_subsystem_add_ns", {
      nqn: NQN,
      namespace: { bdev_name: "Malloc0", no_auto_visible: false, hide_metadata: false },
    }),
    1,
  );
  assertEquals(
    await app.call("nvmf_subsystem_add_ns", {
      nqn: NQN,
      namespace: {
        bdev_name: "Malloc1",
        nsid: 3,
        eui64: "0011223344556677",
        nguid: "000102030405060708090A0B0C0D0E0F",
        read_only: true,
      },
    }),
    3,
  );
  await app.call("nvmf_subsystem_add_listener", {
    nqn: NQN,
    listen_address: ADDR,
    secure_channel: false,
  });
  await app.call("nvmf_subsystem_add_listener", {
    nqn: "nqn.2014-08.org.nvmexpress.discovery",
    listen_address: { ...ADDR, trsvcid: "8009" },
  });
}

Deno.test("nvmf RPCs: SPDK's calls build a target; the transport hears of listeners", async () => {
  await withApp(async (app) => {
    const opened: NvmfListener[] = [];
    nvmfTarget(app).onListenerAdded((l) => void opened.push(l));
    await build(app);
    assertEquals(opened.map((l) => [l.traddr, l.trsvcid, l.portid]), [
      ["127.0.0.1", "4420", 0],
      ["127.0.0.1", "8009", 1],
    ]);
    assertEquals((await rpcError(app.call("nvmf_create_transport", { trtype: "TCP" }))).code, -17);
    assertEquals(await app.call("nvmf_get_transports"), [{
      trtype: "TCP",
      max_queue_depth: 64,
      max_io_qpairs_per_ctrlr: 127,
      in_capsule_data_size: 8192,
      max_io_size: 131072,
      io_unit_size: 131072,
      max_aq_depth: 128,
      num_shared_buffers: 511,
      buf_cache_size: 32,
      sock_priority: 0,
      abort_timeout_sec: 1,
      control_msg_num: 32,
      kas: 5,
      min_kato: 1000,
      dif_insert_or_strip: false,
      c2h_success: true,
      zcopy: false,
    }]);
    const subs = await app.call("nvmf_get_subsystems") as Record<string, unknown>[];
    assertEquals(subs[0], {
      nqn: "nqn.2014-08.org.nvmexpress.discovery",
      subtype: "Discovery",
      listen_addresses: [{ ...ADDR, trsvcid: "8009" }],
      allow_any_host: true,
      hosts: [],
    });
    assertEquals(subs[1], {
      nqn: NQN,
      subtype: "NVMe",
      listen_addresses: [ADDR],
      allow_any_host: false,
      hosts: [{ nqn: HOST }],
      serial_number: "SPDK00000000000001",
      model_number: "SPDK bdev Controller",
      max_namespaces: 8,
      min_cntlid: 1,
      max_cntlid: 0xffef,
      namespaces: [
        {
          nsid: 1,
          bdev_name: "Malloc0",
          name: "Malloc0",
          nguid: (subs[1]?.namespaces as { nguid: string }[])[0]?.nguid,
          uuid: (subs[1]?.namespaces as { uuid: string }[])[0]?.uuid,
        },
        {
          nsid: 3,
          bdev_name: "Malloc1",
          name: "Malloc1",
          nguid: "000102030405060708090A0B0C0D0E0F",
          eui64: "0011223344556677",
          uuid: (subs[1]?.namespaces as { uuid: string }[])[1]?.uuid,
          read_only: true,
        },
      ],
    });
    assertEquals(await app.call("nvmf_get_subsystems", { nqn: NQN }), [subs[1]]);

    // A host connects through the transport's entry point; the RPC sees its controller.
    const target = nvmfTarget(app);
    const admin = new FakeQpair();
    const cntlid = await connectAndEnable(target, admin, NQN, HOST);
    await connect(target, new FakeQpair(), { subnqn: NQN, hostnqn: HOST, qid: 1, cntlid });
    const id = await identify(target, admin, NvmeCns.Controller);
    assertEquals(getString(id.data, 4, 20), "SPDK00000000000001");
    assertEquals(new DataView(id.data.buffer).getUint32(1792, true), (64 + 8192) / 16, "IOCCSZ");
    assertEquals(new DataView(id.data.buffer).getUint16(320, true), 5, "KAS");
    assertEquals(await app.call("nvmf_subsystem_get_controllers", { nqn: NQN }), [{
      cntlid,
      cntrltype: "io",
      hostnqn: HOST,
      hostid: "01020304-0506-0708-090a-0b0c0d0e0f10",
      num_io_qpairs: 1,
    }]);

    // Exported bdevs cannot be deleted underneath.
    const busy = await rpcError(app.call("bdev_malloc_delete", { name: "Malloc0" }));
    assertEquals(busy.code, -16);
    assert(busy.message.includes("nvmf"), busy.message);

    // Removing the host disconnects it; allow_any_host lets everyone in again.
    await app.call("nvmf_subsystem_remove_host", { nqn: NQN, host: HOST });
    assert(admin.disconnectReason !== null);
    const denied = await connect(target, new FakeQpair(), { subnqn: NQN, hostnqn: HOST });
    assertEquals(denied.status, commandSpecificStatus(NvmfFabricsSc.ConnectInvalidHost));
    await app.call("nvmf_subsystem_allow_any_host", { nqn: NQN, allow_any_host: true });
    assertEquals(
      (await connect(target, new FakeQpair(), { subnqn: NQN, hostnqn: HOST })).status,
      0,
    );

    await app.call("nvmf_subsystem_remove_ns", { nqn: NQN, nsid: 3 });
    assertEquals(await app.call("bdev_malloc_delete", { name: "Malloc1" }), true);
    await app.call("nvmf_subsystem_remove_listener", { nqn: NQN, listen_address: ADDR });
    await app.call("nvmf_delete_subsystem", { nqn: NQN });
    assertEquals((await app.call("nvmf_get_subsystems") as unknown[]).length, 1);
    assertEquals(await app.call("bdev_malloc_delete", { name: "Malloc0" }), true);
  });
});

Deno.test("nvmf RPCs: save_config writes the target, load_config rebuilds it identically", async () => {
  let saved: unknown;
  let subsystems: unknown;
  await withApp(async (app) => {
    await build(app);
    saved = await app.call("save_config");
    subsystems = await app.call("nvmf_get_subsystems");
    const nvmf = (saved as {
      subsystems: { subsystem: string; config: { method: string; params: unknown }[] }[];
    })
      .subsystems.find((s) => s.subsystem === "nvmf");
    assertEquals(nvmf?.config.map((c) => c.method), [
      "nvmf_create_transport",
      "nvmf_create_subsystem",
      "nvmf_subsystem_add_host",
      "nvmf_subsystem_add_ns",
      "nvmf_subsystem_add_ns",
      "nvmf_subsystem_add_listener",
      "nvmf_subsystem_add_listener",
    ]);
    assertEquals(nvmf?.config[0], {
      method: "nvmf_create_transport",
      params: { trtype: "TCP", max_queue_depth: 64, in_capsule_data_size: 8192, kas: 5 },
    });
    assertEquals(
      await app.call("framework_get_config", { name: "nvmf" }),
      nvmf?.config,
      "rpc.py's client-side save_config sees the same",
    );
  });
  await withApp(async (app) => {
    const opened: string[] = [];
    nvmfTarget(app).onListenerAdded((l) => void opened.push(l.trsvcid));
    await app.call("load_config", saved);
    assertEquals(opened, ["4420", "8009"]);
    assertEquals(await app.call("save_config"), saved);
    assertEquals(await app.call("nvmf_get_subsystems"), subsystems, "serials, UUIDs, NGUIDs kept");
  });
});

Deno.test("nvmf RPCs: bad params and operating errors are refused clearly", async () => {
  await withApp(async (app) => {
    const e1 = await rpcError(app.call("nvmf_create_transport", { trtype: "RDMA" }));
    assertEquals(e1.code, -32602);
    const e2 = await rpcError(app.call("nvmf_create_transport", { trtype: "TCP", no_srq: true }));
    assert(e2.message.includes('"no_srq"'), e2.message);
    const e3 = await rpcError(app.call("nvmf_create_subsystem", { nqn: "nqn.2016-06.io.spdk" }));
    assertEquals(e3.code, -22);
    assert(e3.message.includes("name after"), e3.message);
    await app.call("nvmf_create_subsystem", { nqn: NQN });
    const e4 = await rpcError(app.call("nvmf_create_subsystem", { nqn: NQN }));
    assertEquals(e4.code, -17);
    const e5 = await rpcError(
      app.call("nvmf_subsystem_add_listener", { nqn: NQN, listen_address: ADDR }),
    );
    assert(e5.message.includes("nvmf_create_transport"), e5.message);
    await app.call("nvmf_create_transport", { trtype: "TCP" });
    const e6 = await rpcError(
      app.call("nvmf_subsystem_add_listener", {
        nqn: NQN,
        listen_address: { trtype: "TCP", traddr: "127.0.0.1" },
      }),
    );
    assertEquals(e6.code, -32602);
    assert(e6.message.includes("listen_address") && e6.message.includes("trsvcid"), e6.message);
    const e7 = await rpcError(
      app.call("nvmf_subsystem_add_ns", { nqn: NQN, namespace: { bdev_name: "nope" } }),
    );
    assertEquals(e7.code, -19);
    const e8 = await rpcError(app.call("nvmf_subsystem_remove_ns", { nqn: NQN, nsid: 4 }));
    assertEquals(e8.code, -2);
    const e9 = await rpcError(app.call("nvmf_delete_subsystem", { nqn: "nqn.2016-06.io.x:y" }));
    assertEquals(e9.code, -19);
    const e10 = await rpcError(
      app.call("nvmf_subsystem_add_host", { nqn: NQN, host: HOST, dhchap_key: "key0" }),
    );
    assertEquals(e10.code, -32602);
    const e11 = await rpcError(app.call("nvmf_get_subsystems", { tgt_name: "other" }));
    assertEquals(e11.code, -32602);
  });
});

/**
 * RPCs of the NVMe-oF target, with SPDK's names, params and result shapes
 * (`scripts/rpc.py nvmf_*` works unchanged for what is implemented), and
 * the config writer that saves them for `save_config`.
 *
 * The target of an appliance is made on first use from its bdev registry
 * and reactor: {@link nvmfTarget} gives it to the TCP transport too.
 * @module
 */
import type { RpcCall } from "../bdev/mod.ts";
import type { AppContext } from "../rpc/context.ts";
import { RpcParamsError } from "../rpc/errors.ts";
import { Params } from "../rpc/params.ts";
import type { RpcTable } from "../rpc/rpc.ts";
import { bytesHex } from "../nvme/mod.ts";
import {
  DEFAULT_TCP_TRANSPORT_OPTIONS,
  type NvmfListenAddress,
  NvmfTarget,
  type NvmfTransportOptions,
} from "./target.ts";
import { NvmfTcpTransport } from "./tcp_transport.ts";

/** SPDK's default target name; the only one here. */
export const NVMF_TARGET_NAME = "nvmf_tgt";

const targets = new WeakMap<AppContext, NvmfTarget>();

/** The NVMe-oF target of an appliance, made on first use. */
export function nvmfTarget(ctx: AppContext): NvmfTarget {
  let t = targets.get(ctx);
  if (t === undefined) {
    t = new NvmfTarget({ bdevs: ctx.bdevs, thread: ctx.reactor, firmwareRevision: ctx.version });
    targets.set(ctx, t);
  }
  return t;
}

const transports = new WeakMap<AppContext, NvmfTcpTransport>();

/** The appliance's TCP transport, once `nvmf_create_transport` has made it. */
export function nvmfTcpTransport(ctx: AppContext): NvmfTcpTransport | undefined {
  return transports.get(ctx);
}

/** Shuts the appliance's target down if it was made (disconnects hosts, closes namespaces). */
export async function shutdownNvmfTarget(ctx: AppContext): Promise<void> {
  const tr = transports.get(ctx);
  if (tr !== undefined) {
    transports.delete(ctx);
    await tr.close();
  }
  const t = targets.get(ctx);
  if (t === undefined) return;
  targets.delete(ctx);
  await t.shutdown();
}

type IntOption = {
  [K in keyof NvmfTransportOptions]: NvmfTransportOptions[K] extends number ? K : never;
}[keyof NvmfTransportOptions];
type BoolOption = {
  [K in keyof NvmfTransportOptions]: NvmfTransportOptions[K] extends boolean ? K : never;
}[keyof NvmfTransportOptions];

/** nvmf_create_transport integer params: SPDK name, option, limits. */
const TRANSPORT_INTS: readonly [string, IntOption, number, number][] = [
  ["max_queue_depth", "maxQueueDepth", 2, 65536],
  ["max_io_qpairs_per_ctrlr", "maxIoQpairsPerCtrlr", 1, 65534],
  ["in_capsule_data_size", "inCapsuleDataSize", 0, 131072],
  ["max_io_size", "maxIoSize", 4096, 2 ** 30],
  ["io_unit_size", "ioUnitSize", 512, 2 ** 30],
  ["max_aq_depth", "maxAqDepth", 2, 4096],
  ["num_shared_buffers", "numSharedBuffers", 0, 2 ** 24],
  ["buf_cache_size", "bufCacheSize", 0, 0xffffffff],
  ["sock_priority", "sockPriority", 0, 16],
  ["abort_timeout_sec", "abortTimeoutSec", 0, 3600],
  ["control_msg_num", "controlMsgNum", 1, 0xffff],
  ["kas", "kas", 1, 0xffff],
  ["min_kato", "minKato", 1, 0xffffffff],
];
const TRANSPORT_BOOLS: readonly [string, BoolOption][] = [
  ["dif_insert_or_strip", "difInsertOrStrip"],
  ["c2h_success", "c2hSuccess"],
  ["zcopy", "zcopy"],
];
const RDMA_VFIO_FLAGS = [
  "no_srq",
  "no_wr_batching",
  "disable_mappable_bar0",
  "disable_adaptive_irq",
  "disable_shadow_doorbells",
];
const RDMA_NUMBERS = ["num_cqe", "max_srq_depth", "acceptor_backlog", "data_wr_pool_size"];

function checkTgtName(p: Params): void {
  const name = p.optStr("tgt_name");
  if (name !== undefined && name !== NVMF_TARGET_NAME) {
    throw new RpcParamsError(
      `NVMf target "${name}" not found (the target is "${NVMF_TARGET_NAME}")`,
    );
  }
}

const NQN_LIKE = /^nqn\./;

/** Splits a params object: the nested object `name` apart from the rest. */
function splitNested(p: Params, name: string): { rest: Params; nested: Params | undefined } {
  const raw = { ...p.raw() };
  const value = raw[name];
  delete raw[name];
  if (value === undefined || value === null) return { rest: new Params(raw), nested: undefined };
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new RpcParamsError(`"${name}" must be an object`);
  }
  return { rest: new Params(raw), nested: nestedParams(value, name) };
}

function nestedParams(value: unknown, name: string): Params {
  try {
    return new Params(value);
  } catch {
    throw new RpcParamsError(`"${name}" must be an object`);
  }
}

/** Runs `fn` on a nested object, naming it in any param error. */
function inNested<T>(name: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof RpcParamsError) {
      throw new RpcParamsError(`${name}: ${e.message.replace(/^Invalid parameters: /, "")}`);
    }
    throw e;
  }
}

/** The listen_address object of `p`, and the rest of the params. */
function listenAddress(p: Params): { addr: NvmfListenAddress; rest: Params } {
  const { rest, nested } = splitNested(p, "listen_address");
  if (nested === undefined) throw new RpcParamsError('"listen_address" is required');
  const addr = inNested("listen_address", () => {
    const trtype = nested.str("trtype");
    if (trtype.toUpperCase() !== "TCP") {
      throw new RpcParamsError(`"trtype" must be TCP (the only transport), got "${trtype}"`);
    }
    const adrfam = (nested.optStr("adrfam") ?? "IPv4").toLowerCase();
    if (adrfam !== "ipv4" && adrfam !== "ipv6") {
      throw new RpcParamsError(`"adrfam" must be IPv4 or IPv6, got "${adrfam}"`);
    }
    const traddr = nested.str("traddr");
    const trsvcid = nested.str("trsvcid");
    nested.done();
    return {
      trtype: "TCP",
      adrfam: adrfam === "ipv4" ? "IPv4" : "IPv6",
      traddr,
      trsvcid,
    } satisfies NvmfListenAddress;
  });
  return { addr, rest };
}

/** Registers the nvmf_* methods. */
export function registerNvmfRpcs(table: RpcTable<AppContext>): void {
  table.register("nvmf_create_transport", {
    help: "Create the NVMe-oF TCP transport (params: trtype, max_queue_depth, max_io_size, " +
      "in_capsule_data_size, max_aq_depth, max_io_qpairs_per_ctrlr, kas, min_kato, ...)",
    mutating: true,
  }, (p, ctx) => {
    const trtype = p.str("trtype");
    if (trtype.toUpperCase() !== "TCP") {
      throw new RpcParamsError(`"trtype" must be TCP (the only transport), got "${trtype}"`);
    }
    checkTgtName(p);
    const opts: Partial<NvmfTransportOptions> = {};
    for (const [name, key, min, max] of TRANSPORT_INTS) {
      const v = p.optInt(name, { min, max });
      if (v !== undefined) opts[key] = v;
    }
    for (const [name, key] of TRANSPORT_BOOLS) {
      const v = p.optBool(name);
      if (v !== undefined) opts[key] = v;
    }
    // What rpc.py sends for other transports, at values that change nothing here.
    for (const name of RDMA_VFIO_FLAGS) p.neutral(name, [false], "RDMA and vfio-user only");
    for (const name of RDMA_NUMBERS) p.neutral(name, [], "RDMA only");
    p.neutral("disable_command_passthru", [false, true], "there is no command passthrough");
    p.neutral("ack_timeout", [0], "RDMA only");
    p.neutral("acceptor_poll_rate", [], "the transport accepts from the reactor's io_uring");
    p.neutral("iobuf_small_cache_size", [], "data buffers are per queue pair");
    p.neutral("iobuf_large_cache_size", [], "data buffers are per queue pair");
    p.neutral("masked_oncs", [], "use the optional commands as reported");
    p.neutral("masked_fuses", [], "no fused commands");
    p.done();
    const t = nvmfTarget(ctx);
    t.createTransport(opts);
    // As in SPDK, the transport exists from here on: it opens the listeners.
    if (!transports.has(ctx)) transports.set(ctx, new NvmfTcpTransport(t, ctx.reactor, ctx.log));
  });

  table.register("nvmf_get_transports", {
    help: "List NVMe-oF transports and their options (params: trtype)",
  }, (p, ctx) => {
    p.optStr("trtype");
    checkTgtName(p);
    p.done();
    const t = nvmfTarget(ctx);
    return t.transportCreated ? [transportParams(t.transportOptions)] : [];
  });

  table.register("nvmf_create_subsystem", {
    help: "Create an NVM subsystem (params: nqn, serial_number, model_number, allow_any_host, " +
      "max_namespaces, min_cntlid, max_cntlid)",
    mutating: true,
  }, (p, ctx) => {
    const nqn = p.str("nqn", NQN_LIKE, 'an NQN ("nqn.yyyy-mm.domain:name")');
    checkTgtName(p);
    const serialNumber = p.optStr("serial_number");
    const modelNumber = p.optStr("model_number");
    const allowAnyHost = p.optBool("allow_any_host");
    const maxNamespaces = p.optInt("max_namespaces", { min: 0, max: 1024 });
    const minCntlid = p.optInt("min_cntlid", { min: 1, max: 0xffef });
    const maxCntlid = p.optInt("max_cntlid", { min: 1, max: 0xffef });
    p.neutral("ana_reporting", [false], "no ANA reporting");
    p.neutral("passthrough", [false], "namespaces are bdevs");
    p.neutral("enable_nssr", [false], "no NVM subsystem reset");
    p.neutral("dmrsl", [0], "no Dataset Management range size limit");
    p.neutral("wzsl", [0], "no Write Zeroes size limit");
    p.neutral("max_discard_size_kib", [0], "no discard size limit");
    p.neutral("max_write_zeroes_size_kib", [0], "no Write Zeroes size limit");
    p.neutral("admin_label", [], "no extended discovery log entries");
    p.done();
    nvmfTarget(ctx).createSubsystem({
      nqn,
      serialNumber,
      modelNumber,
      allowAnyHost,
      maxNamespaces,
      minCntlid,
      maxCntlid,
    });
  });

  table.register("nvmf_delete_subsystem", {
    help: "Delete an NVM subsystem, disconnecting its hosts (params: nqn)",
    mutating: true,
  }, async (p, ctx) => {
    const nqn = p.str("nqn");
    checkTgtName(p);
    p.done();
    await nvmfTarget(ctx).deleteSubsystem(nqn);
  });

  table.register("nvmf_get_subsystems", {
    help: "List subsystems with listeners, hosts and namespaces (params: nqn)",
  }, (p, ctx) => {
    const nqn = p.optStr("nqn");
    checkTgtName(p);
    p.done();
    const t = nvmfTarget(ctx);
    if (nqn !== undefined) return [t.subsystem(nqn).toJSON()];
    return [t.discovery.toJSON(), ...t.subsystems().map((s) => s.toJSON())];
  });

  for (
    const [method, adding] of [["nvmf_subsystem_add_listener", true], [
      "nvmf_subsystem_remove_listener",
      false,
    ]] as const
  ) {
    table.register(method, {
      help: `${adding ? "Add" : "Remove"} a listen address of a subsystem ` +
        "(params: nqn, listen_address {trtype, adrfam, traddr, trsvcid})",
      mutating: true,
    }, async (p, ctx) => {
      const { addr, rest } = listenAddress(p);
      const nqn = rest.str("nqn");
      checkTgtName(rest);
      if (adding) {
        rest.neutral("secure_channel", [false], "no TLS");
        rest.neutral("ana_state", ["optimized"], "no ANA reporting");
        rest.neutral("sock_impl", [], "sockets are the reactor's io_uring");
        rest.neutral("numa_id", [-1], "vfio-user only");
      }
      rest.done();
      const t = nvmfTarget(ctx);
      if (adding) await t.addListener(nqn, addr);
      else await t.removeListener(nqn, addr);
    });
  }

  table.register("nvmf_subsystem_add_ns", {
    help: "Add a namespace backed by a bdev; returns its NSID " +
      "(params: nqn, namespace {bdev_name, nsid, uuid, nguid, eui64, read_only})",
    mutating: true,
  }, (p, ctx) => {
    const { rest, nested } = splitNested(p, "namespace");
    if (nested === undefined) throw new RpcParamsError('"namespace" is required');
    const nqn = rest.str("nqn");
    checkTgtName(rest);
    rest.neutral("no_auto_visible", [false], "every namespace is visible to every host");
    rest.done();
    const opts = inNested("namespace", () => {
      const o = {
        bdevName: nested.str("bdev_name"),
        nsid: nested.optInt("nsid", { min: 0, max: 0xfffffffe }),
        uuid: nested.optUuid("uuid"),
        nguid: nested.optStr("nguid", /^[0-9a-fA-F-]{32,36}$/, "32 hex digits"),
        eui64: nested.optStr("eui64", /^[0-9a-fA-F-]{16,19}$/, "16 hex digits"),
        readOnly: nested.optBool("read_only"),
      };
      nested.neutral("no_auto_visible", [false], "every namespace is visible to every host");
      nested.neutral("hide_metadata", [false], "bdevs here have no metadata");
      nested.neutral("ptpl_file", [], "no persistent reservations");
      nested.neutral("anagrpid", [], "no ANA reporting");
      nested.done();
      return o;
    });
    return nvmfTarget(ctx).addNamespace(nqn, opts);
  });

  table.register("nvmf_subsystem_remove_ns", {
    help: "Remove a namespace once its I/O drained (params: nqn, nsid)",
    mutating: true,
  }, async (p, ctx) => {
    const nqn = p.str("nqn");
    const nsid = p.int("nsid", { min: 1, max: 0xfffffffe });
    checkTgtName(p);
    p.done();
    await nvmfTarget(ctx).removeNamespace(nqn, nsid);
  });

  table.register("nvmf_subsystem_add_host", {
    help: "Allow a host NQN to connect to a subsystem (params: nqn, host)",
    mutating: true,
  }, (p, ctx) => {
    const nqn = p.str("nqn");
    const host = p.str("host");
    checkTgtName(p);
    p.done();
    nvmfTarget(ctx).subsystem(nqn).addHost(host);
  });

  table.register("nvmf_subsystem_remove_host", {
    help: "Stop allowing a host NQN; its controllers are disconnected (params: nqn, host)",
    mutating: true,
  }, (p, ctx) => {
    const nqn = p.str("nqn");
    const host = p.str("host");
    checkTgtName(p);
    p.done();
    nvmfTarget(ctx).subsystem(nqn).removeHost(host);
  });

  table.register("nvmf_subsystem_allow_any_host", {
    help: "Let any host connect, or only allowed hosts (params: nqn, allow_any_host)",
    mutating: true,
  }, (p, ctx) => {
    const nqn = p.str("nqn");
    const allow = p.optBool("allow_any_host");
    if (allow === undefined) throw new RpcParamsError('"allow_any_host" is required');
    checkTgtName(p);
    p.done();
    nvmfTarget(ctx).subsystem(nqn).setAllowAnyHost(allow);
  });

  table.register("nvmf_subsystem_get_controllers", {
    help: "List the controllers hosts hold on a subsystem (params: nqn)",
  }, (p, ctx) => {
    const nqn = p.str("nqn");
    checkTgtName(p);
    p.done();
    return [...nvmfTarget(ctx).subsystem(nqn).controllers.values()].map((c) => c.toJSON());
  });
}

function transportParams(t: Readonly<NvmfTransportOptions>): Record<string, unknown> {
  const out: Record<string, unknown> = { trtype: t.trtype };
  for (const [name, key] of TRANSPORT_INTS) out[name] = t[key];
  for (const [name, key] of TRANSPORT_BOOLS) out[name] = t[key];
  return out;
}

/**
 * The calls that rebuild the target, in SPDK's order: transport,
 * subsystems, hosts, namespaces, listeners (listeners last, so hosts can
 * only connect to a complete subsystem). Empty when the target was never made.
 */
export function nvmfConfigCalls(ctx: AppContext): RpcCall[] {
  const t = targets.get(ctx);
  if (t === undefined) return [];
  const calls: RpcCall[] = [];
  if (t.transportCreated) {
    const params = transportParams(t.transportOptions);
    // Only what differs from the defaults besides trtype, as bdev_set_options is saved.
    for (const [k, v] of Object.entries(params)) {
      if (k !== "trtype" && v === transportParams(DEFAULT_TCP_TRANSPORT_OPTIONS)[k]) {
        delete params[k];
      }
    }
    calls.push({ method: "nvmf_create_transport", params });
  }
  const subs = t.subsystems();
  for (const s of subs) {
    calls.push({
      method: "nvmf_create_subsystem",
      params: {
        nqn: s.nqn,
        serial_number: s.serialNumber,
        model_number: s.modelNumber,
        allow_any_host: s.allowAnyHost,
        max_namespaces: s.maxNamespaces,
        min_cntlid: s.minCntlid,
        max_cntlid: s.maxCntlid,
      },
    });
  }
  for (const s of subs) {
    for (const host of s.hosts) {
      calls.push({ method: "nvmf_subsystem_add_host", params: { nqn: s.nqn, host } });
    }
  }
  for (const s of subs) {
    for (const ns of s.namespaces()) {
      const namespace: Record<string, unknown> = {
        bdev_name: ns.bdev.name,
        nsid: ns.nsid,
        uuid: ns.uuid,
        nguid: bytesHex(ns.nguid),
      };
      if (ns.eui64 !== null) namespace["eui64"] = bytesHex(ns.eui64);
      if (ns.options.readOnly === true) namespace["read_only"] = true;
      calls.push({ method: "nvmf_subsystem_add_ns", params: { nqn: s.nqn, namespace } });
    }
  }
  // In port ID order, so the reloaded target hands out the same port IDs.
  const listens = [t.discovery, ...subs].flatMap((s) => s.listeners.map((l) => ({ s, l })));
  listens.sort((a, b) => a.l.portid - b.l.portid);
  for (const { s, l } of listens) {
    const { trtype, adrfam, traddr, trsvcid } = l;
    calls.push({
      method: "nvmf_subsystem_add_listener",
      params: { nqn: s.nqn, listen_address: { trtype, adrfam, traddr, trsvcid } },
    });
  }
  return calls;
}

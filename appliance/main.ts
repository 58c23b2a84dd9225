/**
 * The sluice command: the daemon (`serve`) and the CLI (`rpc`, `status`).
 *
 *   sluice serve                 run the appliance (state in ./var)
 *   sluice rpc <method> [--p v]  call a JSON-RPC method on a running appliance
 *   sluice status                what a running appliance is serving
 * @module
 */
import { resolve } from "node:path";
import { App } from "../src/app.ts";
import {
  applyConfig,
  buildConfig,
  ConfigError,
  readConfigFile,
  writeConfigFile,
} from "../src/config/config.ts";
import { rpcCall, RpcClientError, RpcQueue, RpcServer } from "../src/rpc/server.ts";
import { VERSION } from "../src/version.ts";
import { perf, PERF_USAGE } from "./perf.ts";
import { dd, DD_USAGE } from "./dd.ts";
import { top, TOP_USAGE } from "./top.ts";
import { ADMIN_TOKEN_USAGE, adminToken } from "./web/token_cli.ts";
import { setup, SETUP_USAGE } from "./setup.ts";
import { STATUS_SCREEN_USAGE, statusScreen } from "./status_screen.ts";
import { exists, isServing } from "./fs.ts";
import { keyStoreOf } from "../src/crypto/crypto_rpc.ts";
import { selectCrc32cEngine } from "../src/nvmf_tcp/crc_engine.ts";
import {
  parseXtsEngineSetting,
  selectXtsEngine,
  type XtsEngineSetting,
} from "../src/crypto/engines.ts";
import { loadKeyFile } from "../src/crypto/keys.ts";
import { configureGuestWindow } from "../wasm/kernels.ts";
import { allowedCores, formatCpumask, parseCpumask } from "../src/worker/cpumask.ts";
import type { startAdmin as StartAdmin } from "./web/start.ts";
import { LogRing } from "./web/log_ring.ts";

/** The wasm guest window of `serve` (wasm/guest_window.ts), in MiB. */
const DEFAULT_GUEST_WINDOW_MIB = 2048;

const DEFAULT_STATE_DIR = "./var";
const DEFAULT_VOLUME_BYTES = 1024 ** 3;
const DEFAULT_NQN = "nqn.2026-11.dev.sluice:default";
const DEFAULT_NVMF_LISTEN = "127.0.0.1:4420";
const DEFAULT_ADMIN_LISTEN = "127.0.0.1:8080";

const USAGE = `sluice ${VERSION}: fast, safe virtual disks (vhost-user-blk, NVMe/TCP)

Usage: sluice <command> [options]

Commands:
  serve     Run the appliance (the default config serves a 1 GiB volume from ./var)
  rpc       Call a JSON-RPC method on a running appliance
  status    Show what a running appliance is serving
  top       Live per-volume IOPS and throughput of a running appliance (sluice top --help)
  admin-token  Create, list and revoke the web admin's bearer tokens for scripts
  perf      Measure an NVMe-oF target as spdk_nvme_perf does (sluice perf --help)
  dd        Copy between files and bdevs offline, as spdk_dd does (sluice dd --help)
  setup     Bind NVMe devices to vfio-pci and back, as SPDK's setup.sh (sluice setup --help)
  status-screen  The appliance console's status (admin URL, first-boot password, volumes)
  help      Show this help, or a command's: sluice help <command>

Run 'sluice <command> --help' for a command's options.`;

const SERVE_USAGE = `Usage: sluice serve [options]

Runs the appliance in the foreground until SIGINT or SIGTERM.

Options:
  --state-dir DIR     Where state lives (default ./var)
  --rpc-socket PATH   JSON-RPC Unix socket (default <state-dir>/sluice.sock)
  --config FILE       Config to load and keep up to date (default <state-dir>/config.json).
                      When it does not exist, the embedded default is used: a 1 GiB
                      file-backed bdev "default" on <state-dir>/default.img, exported
                      over NVMe/TCP as namespace 1 of ${DEFAULT_NQN} and to VMs on
                      the vhost-user-blk socket <state-dir>/vhost-default.sock.
  --key-file FILE     Crypto keys for encrypted bdevs, loaded before the config (default
                      <state-dir>/keys.json when it exists; must be mode 0600; docs/crypto.md)
  --crypto-engine E   AES-XTS engine: wasm, native (OpenSSL's libcrypto) or auto (default:
                      measure both at start-up, take the faster, WASM when libcrypto is missing)
  --crc-engine E      CRC32C engine of the NVMe/TCP digests: wasm, native (ISA-L, Debian's
                      libisal2) or auto (default: the faster at start-up; WASM without libisal2)
  --nvmf-listen A:P   Where the default config listens for NVMe/TCP (default 127.0.0.1:4420;
                      loopback unless you say otherwise). Only used when creating the default.
  --guest-window-mib N
                      Address space (MiB, default ${DEFAULT_GUEST_WINDOW_MIB}) reserved in the WebAssembly
                      memory for VM memory shared over vhost-user, so rings are parsed in WASM
                      in place. Virtual only: it costs no RAM. VMs that do not fit are served
                      all the same, with rings parsed in TypeScript. 0 turns it off.
  --cpumask MASK      Cores to run data-path reactors on, as a hex mask (0x3) or a list
                      ([0,2-3]); "all" is every core this process may use. The first core's
                      reactor is the main thread's (it also runs RPC, the web admin and the
                      NVMe/TCP target); each further core gets a data-path worker pinned to it,
                      where vhost-user-blk controllers are placed (their cpumask picks one).
                      Default 0x1: one reactor. docs/architecture.md "Data-path workers".
  --main-core N       Which core of --cpumask is the main thread's (default: the lowest)
  --admin-listen A:P  Where the web admin listens (default ${DEFAULT_ADMIN_LISTEN}); "off" turns it
                      off. Its password is printed once at the first start (docs/admin.md).
                      When the default port is taken, the appliance serves without it.
  -h, --help          Show this help`;

const RPC_USAGE = `Usage: sluice rpc <method> [--param value ...] [options]

Calls one JSON-RPC method and prints the result as JSON. Parameters are
given as --name value; values that parse as JSON (numbers, true/false,
objects) are sent as such, others as strings. Dashes in names become
underscores (--num-blocks = --num_blocks).

Options:
  --params JSON       The whole params object as JSON (overrides --name value pairs)
  -s, --rpc-socket P  Socket of the appliance (default ./var/sluice.sock)
  -h, --help          Show this help; 'sluice rpc rpc_get_methods' lists the methods

Examples:
  sluice rpc bdev_malloc_create --name Malloc0 --num_blocks 32768 --block_size 512
  sluice rpc bdev_get_bdevs
  sluice rpc save_config > my-config.json`;

const STATUS_USAGE = `Usage: sluice status [options]

Shows the version, uptime, bdevs and data-path counters of a running appliance.

Options:
  -s, --rpc-socket P  Socket of the appliance (default ./var/sluice.sock)
  -h, --help          Show this help`;

/** The parts of nvmf_get_subsystems the banner prints. */
interface NvmfSubsystemView {
  nqn: string;
  subtype: string;
  listen_addresses: { traddr: string; trsvcid: string }[];
  namespaces: unknown[];
}

/** A command-line usage mistake: printed with a hint, exit status 2. */
class UsageError extends Error {}

interface ParsedArgs {
  positional: string[];
  options: Map<string, string | true>;
}

function parseArgs(args: string[]): ParsedArgs {
  const positional: string[] = [];
  const options = new Map<string, string | true>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "-h") options.set("help", true);
    else if (a === "-s") {
      const v = args[++i];
      if (v === undefined) throw new UsageError("-s needs a socket path");
      options.set("rpc-socket", v);
    } else if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      if (eq > 0) options.set(a.slice(2, eq), a.slice(eq + 1));
      else {
        const next = args[i + 1];
        if (next === undefined || next.startsWith("--")) options.set(a.slice(2), true);
        else {
          options.set(a.slice(2), next);
          i++;
        }
      }
    } else positional.push(a);
  }
  return { positional, options };
}

function optString(p: ParsedArgs, name: string): string | undefined {
  const v = p.options.get(name);
  if (v === true) throw new UsageError(`--${name} needs a value`);
  p.options.delete(name);
  return v;
}

function rejectUnknown(p: ParsedArgs, command: string): void {
  for (const k of p.options.keys()) {
    throw new UsageError(`unknown option --${k} for '${command}'`);
  }
}

/** The last log lines, for the web admin's Logs page. */
const logRing = new LogRing(1000);

function log(msg: string): void {
  console.log(`sluice: ${msg}`);
  logRing.push(msg);
}

/**
 * The web admin's module (hono, from npm), loaded only when the admin is on,
 * so the rest of sluice runs where npm packages cannot be fetched (a guest
 * without network, a minimal image). The specifier is built at run time so
 * Deno does not fetch it with the main module. Null when it cannot be loaded
 * and the admin was not asked for explicitly (then sluice serves without it);
 * undefined when it was asked for (the caller stops).
 */
async function loadAdmin(required: boolean): Promise<typeof StartAdmin | null | undefined> {
  const specifier = new URL("./web/start.ts", import.meta.url).href;
  try {
    const mod = await import(specifier) as { startAdmin: typeof StartAdmin };
    return mod.startAdmin;
  } catch (e) {
    if (required) {
      console.error(`sluice: web admin: cannot load it: ${errorText(e)}`);
      return undefined;
    }
    log(`web admin unavailable (${errorText(e).split("\n")[0]}); serving without it`);
    return null;
  }
}

/**
 * `--cpumask`: the reactors' cores, each one this process may run on.
 * Workers are pinned only when the operator named the cores.
 */
function parseServeCpumask(
  opt: string | undefined,
  mainCore: string | undefined,
): { list: number[]; pin: boolean } {
  const allowed = allowedCores();
  if (opt === undefined) {
    if (mainCore !== undefined) throw new UsageError("--main-core needs --cpumask");
    return { list: [allowed[0] ?? 0], pin: false };
  }
  let list: number[];
  try {
    list = opt === "all" ? allowed : parseCpumask(opt);
  } catch (e) {
    throw new UsageError(`--cpumask: ${errorText(e)}`);
  }
  if (mainCore !== undefined) {
    const m = Number(mainCore);
    if (!list.includes(m)) {
      throw new UsageError(`--main-core ${mainCore} is not a core of --cpumask ${opt}`);
    }
    list = [m, ...list.filter((c) => c !== m)];
  }
  const missing = list.filter((c) => !allowed.includes(c));
  if (missing.length > 0) {
    throw new UsageError(
      `--cpumask ${opt}: core(s) ${missing.join(", ")} not available to this process (it may use ${
        formatCpumask(allowed)
      })`,
    );
  }
  return { list, pin: true };
}

async function serve(p: ParsedArgs): Promise<number> {
  if (p.options.has("help")) {
    console.log(SERVE_USAGE);
    return 0;
  }
  const stateDir = resolve(optString(p, "state-dir") ?? DEFAULT_STATE_DIR);
  const socketPath = resolve(optString(p, "rpc-socket") ?? `${stateDir}/sluice.sock`);
  const configPath = resolve(optString(p, "config") ?? `${stateDir}/config.json`);
  const keyFileOpt = optString(p, "key-file");
  const keyFile = resolve(keyFileOpt ?? `${stateDir}/keys.json`);
  let engineSetting: XtsEngineSetting;
  let crcSetting: XtsEngineSetting;
  try {
    engineSetting = parseXtsEngineSetting(optString(p, "crypto-engine") ?? "auto");
    crcSetting = parseXtsEngineSetting(optString(p, "crc-engine") ?? "auto");
  } catch (e) {
    throw new UsageError(`--crypto-engine / --crc-engine: ${errorText(e)}`);
  }
  const listen = parseListen(optString(p, "nvmf-listen") ?? DEFAULT_NVMF_LISTEN);
  const adminOpt = optString(p, "admin-listen");
  const adminListen = adminOpt === "off"
    ? null
    : parseListen(adminOpt ?? DEFAULT_ADMIN_LISTEN, "--admin-listen", true);
  const windowMiB = Number(optString(p, "guest-window-mib") ?? DEFAULT_GUEST_WINDOW_MIB);
  if (!Number.isInteger(windowMiB) || windowMiB < 0 || windowMiB > 3072) {
    throw new UsageError("--guest-window-mib must be an integer from 0 to 3072");
  }
  const cores = parseServeCpumask(optString(p, "cpumask"), optString(p, "main-core"));
  rejectUnknown(p, "serve");
  configureGuestWindow(windowMiB * 1024 * 1024);
  if (p.positional.length > 0) throw new UsageError(`unexpected argument '${p.positional[0]}'`);

  await Deno.mkdir(stateDir, { recursive: true });
  if (await isServing(socketPath)) {
    console.error(`sluice: another appliance is already serving ${socketPath}`);
    return 1;
  }

  const app = new App(undefined, log);
  app.start();
  try {
    if (cores.list.length > 1) {
      await app.startWorkers(cores.list, {
        pin: cores.pin,
        guestWindowBytes: windowMiB * 1024 * 1024,
      });
      log(
        `reactors on cores ${cores.list.join(", ")}: the main thread's on ${
          cores.list[0]
        }, data-path workers on the others${cores.pin ? " (pinned)" : ""}`,
      );
    }
    keyStoreOf(app).setEngine((await selectXtsEngine(engineSetting, log)).engine);
    selectCrc32cEngine(crcSetting, log);
    // Keys first: crypto bdevs in the config name them.
    if (keyFileOpt !== undefined || await exists(keyFile)) {
      const names = await loadKeyFile(keyStoreOf(app), keyFile);
      log(`loaded ${names.length} crypto key(s) from ${keyFile}`);
    }
    if (await exists(configPath)) {
      const cfg = await readConfigFile(configPath);
      const n = await applyConfig(app.rpc, app, cfg, configPath);
      log(`loaded ${configPath} (${n} call${n === 1 ? "" : "s"})`);
    } else {
      await createDefault(app, stateDir, listen);
      await writeConfigFile(configPath, buildConfig(app));
      log(`wrote the default config to ${configPath}`);
    }
  } catch (e) {
    console.error(`sluice: ${e instanceof ConfigError ? "" : "start-up failed: "}${errorText(e)}`);
    await app.shutdown();
    return 1;
  }

  const onMutated = () => writeConfigFile(configPath, buildConfig(app));
  const queue = new RpcQueue();
  const server = new RpcServer({
    path: socketPath,
    table: app.rpc,
    ctx: app,
    onMutated,
    log,
    queue,
  });
  let admin: Awaited<ReturnType<typeof StartAdmin>> = null;
  const startAdmin = adminListen === null ? null : await loadAdmin(adminOpt !== undefined);
  if (adminListen !== null && startAdmin === undefined) {
    await server.close();
    await app.shutdown();
    return 1;
  }
  if (adminListen !== null && startAdmin !== null && startAdmin !== undefined) {
    try {
      admin = await startAdmin({
        stateDir,
        hostname: adminListen.traddr,
        port: Number(adminListen.trsvcid),
        engine: { table: app.rpc, ctx: app, onMutated, queue },
        log,
        logs: logRing,
        required: adminOpt !== undefined,
      });
    } catch (e) {
      console.error(`sluice: web admin: ${errorText(e)}`);
      await server.close();
      await app.shutdown();
      return 1;
    }
  }
  for (const b of app.bdevs.list()) {
    log(
      `bdev ${b.name}: ${b.module}, ${
        formatBytes(b.sizeBytes)
      } (${b.numBlocks} x ${b.blockSize} B)`,
    );
  }
  for (const sub of (await app.call("nvmf_get_subsystems")) as NvmfSubsystemView[]) {
    if (sub.subtype !== "NVMe") continue;
    const at = sub.listen_addresses.map((a) => `${a.traddr}:${a.trsvcid}`).join(", ") ||
      "no listener";
    log(`nvmf ${sub.nqn}: ${sub.namespaces.length} namespace(s) on ${at}`);
  }
  // Handlers before "ready": a supervisor may send SIGTERM as soon as it reads that line.
  const { promise: stopped, resolve: stop } = Promise.withResolvers<string>();
  const onSignal = (sig: Deno.Signal) => () => stop(sig);
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
  ];
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  log(`JSON-RPC on ${socketPath}; ready (pid ${Deno.pid})`);
  const sig = await stopped;
  log(`${sig}: shutting down`);
  for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  await admin?.close();
  await server.close();
  await app.shutdown();
  log("stopped");
  return 0;
}

/** ADDRESS:PORT; port 0 (any free port) only where `anyPort` says so. */
function parseListen(
  s: string,
  option = "--nvmf-listen",
  anyPort = false,
): { traddr: string; trsvcid: string } {
  const i = s.lastIndexOf(":");
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < (anyPort ? 0 : 1) || port > 65535) {
    throw new UsageError(`${option} must be ADDRESS:PORT, got '${s}'`);
  }
  return { traddr: s.slice(0, i), trsvcid: String(port) };
}

/** The embedded default: a 1 GiB file-backed volume, created on first start, exported over NVMe/TCP. */
async function createDefault(
  app: App,
  stateDir: string,
  listen: { traddr: string; trsvcid: string },
): Promise<void> {
  const image = `${stateDir}/default.img`;
  if (!(await exists(image))) {
    const f = await Deno.open(image, { create: true, write: true, mode: 0o600 });
    try {
      await f.truncate(DEFAULT_VOLUME_BYTES);
    } finally {
      f.close();
    }
    log(`created ${image} (${formatBytes(DEFAULT_VOLUME_BYTES)}, sparse)`);
  }
  await app.call("bdev_file_create", { name: "default", filename: image, block_size: 512 });
  await app.call("nvmf_create_transport", { trtype: "TCP" });
  await app.call("nvmf_create_subsystem", {
    nqn: DEFAULT_NQN,
    allow_any_host: true,
    serial_number: "SLUICE00000000000001",
    model_number: "sluice volume",
  });
  await app.call("nvmf_subsystem_add_ns", {
    nqn: DEFAULT_NQN,
    namespace: { bdev_name: "default" },
  });
  await app.call("nvmf_subsystem_add_listener", {
    nqn: DEFAULT_NQN,
    listen_address: { trtype: "TCP", adrfam: "IPv4", ...listen },
  });
  await app.call("vhost_create_blk_controller", {
    ctrlr: "vhost-default",
    dev_name: "default",
    socket: `${stateDir}/vhost-default.sock`,
  });
}

async function rpc(p: ParsedArgs): Promise<number> {
  const [method, ...rest] = p.positional;
  if (p.options.has("help") || method === undefined) {
    console.log(RPC_USAGE);
    return method === undefined && !p.options.has("help") ? 2 : 0;
  }
  if (rest.length > 0) throw new UsageError(`unexpected argument '${rest[0]}'`);
  const socketPath = optString(p, "rpc-socket") ?? `${DEFAULT_STATE_DIR}/sluice.sock`;
  let params: Record<string, unknown> | undefined;
  const json = optString(p, "params");
  if (json !== undefined) {
    try {
      params = JSON.parse(json);
    } catch {
      throw new UsageError("--params must be a JSON object");
    }
  } else if (p.options.size > 0) {
    params = {};
    for (const [k, v] of p.options) params[k.replaceAll("-", "_")] = v === true ? true : jsonish(v);
  }
  const result = await rpcCall(socketPath, method, params);
  console.log(JSON.stringify(result, null, 2));
  return 0;
}

function jsonish(v: string): unknown {
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

async function status(p: ParsedArgs): Promise<number> {
  if (p.options.has("help")) {
    console.log(STATUS_USAGE);
    return 0;
  }
  const socketPath = optString(p, "rpc-socket") ?? `${DEFAULT_STATE_DIR}/sluice.sock`;
  rejectUnknown(p, "status");
  const s = await rpcCall(socketPath, "sluice_get_status") as {
    version: string;
    pid: number;
    uptime_s: number;
    bdevs: {
      name: string;
      module: string;
      size_bytes: number;
      block_size: number;
      claimed: boolean;
    }[];
    reactor: Record<string, number>;
  };
  console.log(`sluice ${s.version}, pid ${s.pid}, up ${s.uptime_s} s, RPC ${socketPath}`);
  console.log(`bdevs (${s.bdevs.length}):`);
  for (const b of s.bdevs) {
    console.log(
      `  ${b.name.padEnd(20)} ${b.module.padEnd(9)} ${
        formatBytes(b.size_bytes).padStart(10)
      }  ${b.block_size} B blocks${b.claimed ? "  (claimed)" : ""}`,
    );
  }
  console.log(
    `reactor: ${Object.entries(s.reactor).map(([k, v]) => `${k}=${v}`).join(" ")}`,
  );
  return 0;
}

function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1 && n % 1024 === 0) {
    n /= 1024;
    i++;
  }
  return `${n} ${units[i]}`;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Runs the command line; returns the exit status. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "serve":
        return await serve(parseArgs(rest));
      case "rpc":
        return await rpc(parseArgs(rest));
      case "status":
        return await status(parseArgs(rest));
      case "perf":
        return await perf(rest);
      case "dd":
        return await dd(rest);
      case "top":
        return await top(rest);
      case "admin-token":
        return await adminToken(rest);
      case "setup":
        return await setup(rest);
      case "status-screen":
        return await statusScreen(rest);
      case "--version":
      case "version":
        console.log(`sluice ${VERSION}`);
        return 0;
      case undefined:
      case "help":
      case "--help":
      case "-h": {
        const topic = rest[0];
        const usage = topic === "serve"
          ? SERVE_USAGE
          : topic === "rpc"
          ? RPC_USAGE
          : topic === "status"
          ? STATUS_USAGE
          : topic === "perf"
          ? PERF_USAGE
          : topic === "dd"
          ? DD_USAGE
          : topic === "top"
          ? TOP_USAGE
          : topic === "admin-token"
          ? ADMIN_TOKEN_USAGE
          : topic === "setup"
          ? SETUP_USAGE
          : topic === "status-screen"
          ? STATUS_SCREEN_USAGE
          : USAGE;
        console.log(usage);
        return command === undefined ? 2 : 0;
      }
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`sluice: ${e.message}\nRun 'sluice --help' for usage.`);
      return 2;
    }
    if (e instanceof RpcClientError) {
      console.error(`sluice: error: ${e.message}${e.code ? ` (code ${e.code})` : ""}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

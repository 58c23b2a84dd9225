/**
 * `sluice status-screen`: what the appliance's console shows instead of a login prompt (the
 * bootable image runs it on tty1, and once on the serial console when sluice is ready): the
 * admin URL for each address, the first-boot admin password while it is still the password,
 * the volumes, the NVMe/TCP exports and the NVMe drives.
 * @module
 */
import { rpcCall } from "../src/rpc/server.ts";
import { VERSION } from "../src/version.ts";
import { AdminAuth } from "./web/auth.ts";
import { setupStatus } from "./setup.ts";

export const STATUS_SCREEN_USAGE = `Usage: sluice status-screen [options]

Prints the appliance's status for its console: admin URL, first-boot password (while it is
still the admin password), volumes, NVMe/TCP exports, NVMe drives.

Options:
  --state-dir DIR     The appliance's state (default /var/lib/sluice)
  --admin-port N      The web admin's port (default 8080)
  --interval S        Redraw every S seconds until stopped (default: print once)
  --once              Print once (the default)
  --wait S            Wait up to S seconds for the appliance to answer before printing
  -h, --help          Show this help

The first-boot password is read from the journal of sluice.service (kept in RAM on the
appliance, so it is gone after a reboot) and shown only while it still opens admin.json.`;

/** What the screen shows; gathered by {@linkcode gatherStatus}. */
export interface StatusView {
  version: string;
  hostname: string;
  addresses: string[];
  adminPort: number;
  /** The first-boot password while it is still the admin password. */
  initialPassword: string | null;
  /** null: the appliance did not answer on its RPC socket. */
  serving: null | {
    uptimeS: number;
    volumes: { name: string; module: string; sizeBytes: number }[];
    exports: { nqn: string; listen: string[]; namespaces: string[] }[];
    drives: { name: string; traddr: string; state: string }[];
  };
  /** The node's NVMe controllers (sysfs), attached or not. */
  pciDrives: { address: string; driver: string | null; inUse: string[] }[];
  /** An error to show (the appliance not answering). */
  problem: string | null;
  /** The service's last log lines, shown while it does not answer. */
  recentLog: string[];
}

function formatSize(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

/** The screen's text (lines end with "\n"). */
export function renderStatus(v: StatusView): string {
  const out: string[] = [];
  out.push(`sluice ${v.version} storage appliance - ${v.hostname}`);
  out.push("");
  if (v.addresses.length === 0) out.push("Network: no address yet (DHCP)");
  for (const a of v.addresses) {
    const host = a.includes(":") ? `[${a}]` : a;
    out.push(`Web admin: http://${host}:${v.adminPort}/`);
  }
  if (v.initialPassword !== null) {
    out.push(`Admin password (first boot; change it under Settings): ${v.initialPassword}`);
  }
  out.push("");
  if (v.serving === null) {
    out.push(`sluice is not answering${v.problem ? `: ${v.problem}` : ""}`);
    if (v.recentLog.length > 0) out.push("", "Last log lines of sluice.service:");
    for (const l of v.recentLog) out.push(`  ${l}`);
  } else {
    const s = v.serving;
    out.push(`Up ${Math.floor(s.uptimeS / 60)} min`);
    out.push(`Volumes (${s.volumes.length}):`);
    for (const b of s.volumes) {
      out.push(`  ${b.name.padEnd(24)} ${b.module.padEnd(8)} ${formatSize(b.sizeBytes)}`);
    }
    out.push(`NVMe/TCP exports (${s.exports.length}):`);
    for (const e of s.exports) {
      out.push(`  ${e.nqn}`);
      out.push(`    on ${e.listen.join(", ") || "no listener"}; ${e.namespaces.join(", ") || "-"}`);
    }
  }
  const attached = new Map((v.serving?.drives ?? []).map((d) => [d.traddr, d]));
  out.push(`NVMe drives (${v.pciDrives.length}):`);
  for (const d of v.pciDrives) {
    const a = attached.get(d.address);
    const what = a !== undefined
      ? `attached as ${a.name} (${a.state})`
      : d.inUse.length > 0
      ? `in use by the system: ${d.inUse[0]}`
      : d.driver === "vfio-pci"
      ? "free: attach it in the web admin (Volumes)"
      : `not on vfio-pci (${d.driver ?? "no driver"}): sluice setup bind ${d.address}`;
    out.push(`  ${d.address}  ${what}`);
  }
  return out.map((l) => l + "\n").join("");
}

/** Non-loopback IPv4 addresses (the appliance's admin listens on 0.0.0.0). */
function addresses(): string[] {
  let ifs: Deno.NetworkInterfaceInfo[] = [];
  try {
    ifs = Deno.networkInterfaces();
  } catch {
    return [];
  }
  const v4 = ifs.filter((i) => i.family === "IPv4" && !i.address.startsWith("127."));
  return [...new Set(v4.map((i) => i.address))];
}

/** What sluice.service logged (the journal), "" without journalctl. */
async function serviceLog(): Promise<string> {
  try {
    const out = await new Deno.Command("journalctl", {
      args: ["-u", "sluice.service", "-o", "cat", "--no-pager", "-q"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout);
  } catch {
    return "";
  }
}

const PASSWORD_LINE = /web admin password \(shown once[^)]*\): (\S+)/g;

/** The first-boot password sluice printed, from its log (null if none). */
export function passwordFromLog(text: string): string | null {
  return [...text.matchAll(PASSWORD_LINE)].at(-1)?.[1] ?? null;
}

/** Caches the (slow, PBKDF2) check of a password against admin.json by the file's version. */
const checked = new Map<string, boolean>();

async function stillValid(stateDir: string, password: string): Promise<boolean> {
  const path = `${stateDir}/admin.json`;
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch {
    return false;
  }
  const key = `${st.ino}:${st.mtime?.getTime()}:${st.size}:${password}`;
  const known = checked.get(key);
  if (known !== undefined) return known;
  let ok = false;
  try {
    const { auth } = await AdminAuth.open(path, { create: false });
    ok = await auth.verifyPassword(password);
  } catch {
    ok = false;
  }
  checked.set(key, ok);
  return ok;
}

/** Everything the screen shows, from the system and the appliance's RPC socket. */
export async function gatherStatus(stateDir: string, adminPort: number): Promise<StatusView> {
  const sock = `${stateDir}/sluice.sock`;
  let hostname = "sluice";
  try {
    hostname = Deno.hostname();
  } catch { /* keep the default */ }
  const view: StatusView = {
    version: VERSION,
    hostname,
    addresses: addresses(),
    adminPort,
    initialPassword: null,
    serving: null,
    problem: null,
    recentLog: [],
    pciDrives: [],
  };
  try {
    view.pciDrives = (await setupStatus()).devices.map((d) => ({
      address: d.address,
      driver: d.driver,
      inUse: d.inUse,
    }));
  } catch { /* no sysfs: no list */ }
  const journal = await serviceLog();
  const pw = passwordFromLog(journal);
  if (pw !== null && await stillValid(stateDir, pw)) view.initialPassword = pw;
  try {
    const status = await rpcCall(sock, "sluice_get_status") as {
      uptime_s: number;
      bdevs: { name: string; module: string; size_bytes: number }[];
    };
    const subs = await rpcCall(sock, "nvmf_get_subsystems") as {
      nqn: string;
      subtype: string;
      listen_addresses: { traddr: string; trsvcid: string }[];
      namespaces: { nsid: number; bdev_name: string }[];
    }[];
    const ctrls = await rpcCall(sock, "bdev_nvme_get_controllers") as {
      name: string;
      ctrlrs: { state: string; trid: { traddr: string } }[];
    }[];
    view.serving = {
      uptimeS: status.uptime_s,
      volumes: status.bdevs.map((b) => ({
        name: b.name,
        module: b.module,
        sizeBytes: b.size_bytes,
      })),
      exports: subs.filter((s) => s.subtype === "NVMe").map((s) => ({
        nqn: s.nqn,
        listen: s.listen_addresses.map((a) => `${a.traddr}:${a.trsvcid}`),
        namespaces: s.namespaces.map((n) => `ns${n.nsid}=${n.bdev_name}`),
      })),
      drives: ctrls.flatMap((c) =>
        c.ctrlrs.map((r) => ({ name: c.name, traddr: r.trid.traddr, state: r.state }))
      ),
    };
  } catch (e) {
    view.problem = e instanceof Error ? e.message : String(e);
    // The last lines, never the password line (shown above while it is valid).
    view.recentLog = journal.split("\n").filter((l) => l.trim() !== "" && !/password/.test(l))
      .slice(-8).map((l) => l.slice(0, 200));
  }
  return view;
}

/** Does the web admin answer on this host? (Its OpenAPI document needs no login.) */
async function adminAnswers(port: number): Promise<boolean> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/api/openapi.json`, {
      signal: AbortSignal.timeout(5000),
    });
    await r.body?.cancel();
    return r.status === 200;
  } catch {
    return false;
  }
}

/**
 * Was admin.json made in this boot, less than 30 s ago? Then sluice printed a new password and
 * it is worth waiting for it to reach the journal.
 */
async function passwordPending(stateDir: string): Promise<boolean> {
  try {
    const st = await Deno.stat(`${stateDir}/admin.json`);
    const made = st.birthtime ?? st.mtime;
    const uptimeS = Number((await Deno.readTextFile("/proc/uptime")).split(" ")[0]);
    const bootMs = Date.now() - uptimeS * 1000;
    return made !== null && made.getTime() > bootMs && Date.now() - made.getTime() < 30_000;
  } catch {
    return false;
  }
}

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith("--")) throw new Error(`--${name} needs a value`);
  args.splice(i, 2);
  return v;
}

/** The command; returns the exit status. */
export async function statusScreen(argv: string[]): Promise<number> {
  const args = [...argv];
  if (args.includes("--help") || args.includes("-h")) {
    console.log(STATUS_SCREEN_USAGE);
    return 0;
  }
  let stateDir: string, port: number, interval: number | null, waitS: number;
  try {
    stateDir = option(args, "state-dir") ?? "/var/lib/sluice";
    port = Number(option(args, "admin-port") ?? "8080");
    const iv = option(args, "interval");
    interval = iv === undefined ? null : Number(iv);
    waitS = Number(option(args, "wait") ?? "0");
    const once = args.indexOf("--once");
    if (once >= 0) {
      args.splice(once, 1);
      interval = null;
    }
    if (args.length > 0) throw new Error(`unexpected argument '${args[0]}'`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error("bad --admin-port");
    if (interval !== null && !(interval >= 1)) throw new Error("--interval must be >= 1");
    if (!(waitS >= 0)) throw new Error("--wait must be >= 0");
  } catch (e) {
    console.error(`sluice: status-screen: ${e instanceof Error ? e.message : e}`);
    return 2;
  }
  const enc = new TextEncoder();
  const deadline = Date.now() + waitS * 1000;
  let view = await gatherStatus(stateDir, port);
  // Ready means the web admin answers too (sluice opens its RPC socket first), and, at a first
  // start, the password it prints just after has reached the journal.
  while (
    (view.serving === null || !(await adminAnswers(port)) ||
      (view.initialPassword === null && await passwordPending(stateDir))) &&
    Date.now() < deadline
  ) {
    await new Promise((r) => setTimeout(r, 2000));
    view = await gatherStatus(stateDir, port);
  }
  if (interval === null) {
    await Deno.stdout.write(enc.encode("\n" + renderStatus(view)));
    return view.serving === null ? 1 : 0;
  }
  for (;;) {
    // Clear the screen and home the cursor, then draw.
    await Deno.stdout.write(enc.encode("\x1b[H\x1b[2J" + renderStatus(view)));
    await new Promise((r) => setTimeout(r, interval * 1000));
    view = await gatherStatus(stateDir, port);
  }
}

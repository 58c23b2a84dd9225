/**
 * The appliance image booted in QEMU (TCG), as an operator would use it (issue 8):
 *
 * 1. BIOS boot with two emulated NVMe drives and user networking; wait for the web admin on the
 *    forwarded port; read the first-boot password and admin URL from the serial console.
 * 2. Log in over HTTP (login form, session cookie, CSRF token), attach one drive with the
 *    Volumes page's one-click Attach form (it was bound to vfio-pci at boot), create a volume on
 *    it (a passthru bdev on the namespace) and export it over NVMe/TCP through /api/rpc.
 * 3. A lab guest (test/vm) connects with nvme-cli through the host and runs fio with crc32c
 *    verification.
 * 4. Power the appliance off (ACPI) and boot it again: the volume, the export and the data are
 *    back (the lab guest's fio verifies the blocks the first run wrote); the password still works.
 * 5. UEFI boot (OVMF) of a fresh raw copy whose boot partition holds a static address and a
 *    host name (sluice/network/*.network, sluice/hostname): the admin answers on that address.
 *
 * Prints the image's sizes and each boot's time to the admin API. Needs `deno task image` first
 * (dist/sluice-<version>.img) and the guest lab (SLUICE_LAB). Run: `deno task test:image`.
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { VERSION } from "../src/version.ts";
import { freePort } from "../src/testing/net.ts";
import { outputTail, runGuest } from "../test/vm/guest.ts";
import { runChecked } from "../test/vm/exec.ts";
import { DISK } from "./layout.ts";
import { ApplianceVm, nvmePciAddress, overlay, OVMF_CODE, OVMF_VARS } from "./vm.ts";
import { exists } from "../appliance/fs.ts";

const REPO = fileURLToPath(new URL("../", import.meta.url)).replace(/\/$/, "");
const DIST = Deno.env.get("SLUICE_IMAGE_DIST") ?? `${REPO}/dist`;
const RAW = `${DIST}/sluice-${VERSION}.img`;
const NQN = "nqn.2026-11.dev.sluice:image-test";
const BOOT_TIMEOUT_MS = 15 * 60_000;
const NVME_BYTES = 256 * 1024 * 1024;

function log(msg: string): void {
  console.log(`image test: ${msg}`);
}

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

async function sizes(): Promise<void> {
  const st = await Deno.stat(RAW);
  const du = new TextDecoder().decode(
    (await new Deno.Command("du", { args: ["-B1", RAW], stdout: "piped" }).output()).stdout,
  );
  const parts = [`raw ${mib(st.size)} (${mib(Number(du.split("\t")[0]))} allocated)`];
  for (const [label, p] of [["qcow2", `${DIST}/sluice-${VERSION}.qcow2`], ["zstd", `${RAW}.zst`]]) {
    try {
      parts.push(`${label} ${mib((await Deno.stat(p as string)).size)}`);
    } catch {
      parts.push(`${label} missing`);
    }
  }
  log(`image size: ${parts.join(", ")}`);
}

/** Waits until the admin answers on `port` (its OpenAPI document needs no login); ms taken. */
async function waitForAdmin(vm: ApplianceVm, port: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!vm.running) {
      throw new Error(`the appliance stopped while booting:\n${tail(await vm.console(), 60)}`);
    }
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/openapi.json`, {
        signal: AbortSignal.timeout(5000),
      });
      await r.body?.cancel();
      if (r.status === 200) return performance.now() - vm.started;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 2000));
  }
  throw new Error(`no web admin within ${timeoutMs / 1000} s:\n${tail(await vm.console(), 60)}`);
}

/** Waits for a console line matching `re`; returns the match. */
async function waitForConsole(
  vm: ApplianceVm,
  re: RegExp,
  timeoutMs: number,
): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = (await vm.console()).match(re);
    if (m !== null) return m;
    if (Date.now() > deadline || !vm.running) {
      throw new Error(`console never showed ${re}:\n${tail(await vm.console(), 60)}`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function tail(text: string, lines: number): string {
  return text.split("\n").slice(-lines).join("\n");
}

function cookie(r: Response, name: string): string {
  for (const c of r.headers.getSetCookie()) {
    const m = new RegExp(`^${name}=([^;]*)`).exec(c);
    if (m && m[1]) return m[1];
  }
  throw new Error(`no ${name} cookie (status ${r.status})`);
}

/** A logged-in admin session over HTTP, calling JSON-RPC through /api/rpc. */
class AdminClient {
  constructor(readonly base: string, readonly session: string, readonly csrf: string) {}

  static async login(base: string, password: string): Promise<AdminClient> {
    const page = await fetch(`${base}/login`);
    await page.body?.cancel();
    const loginCsrf = cookie(page, "sluice_login_csrf");
    const r = await fetch(`${base}/login`, {
      method: "POST",
      redirect: "manual",
      headers: {
        "Content-Type": "application/x-www-form-urlencoded",
        Cookie: `sluice_login_csrf=${loginCsrf}`,
      },
      body: new URLSearchParams({ _csrf: loginCsrf, password }).toString(),
    });
    await r.body?.cancel();
    assert.equal(r.status, 303, "login answers with a redirect to the dashboard");
    const session = cookie(r, "sluice_session");
    const dash = await fetch(`${base}/`, { headers: { Cookie: `sluice_session=${session}` } });
    const html = await dash.text();
    const m = /<meta name="csrf-token" content="([^"]+)"/.exec(html);
    assert.ok(m?.[1], "the dashboard carries the session's CSRF token");
    return new AdminClient(base, session, m[1]);
  }

  async page(path: string): Promise<string> {
    const r = await fetch(`${this.base}${path}`, {
      headers: { Cookie: `sluice_session=${this.session}` },
    });
    assert.equal(r.status, 200, `GET ${path}`);
    return await r.text();
  }

  /** Posts a page's form (with the session's CSRF token, as the page's hidden field). */
  async form(path: string, fields: Record<string, string>): Promise<Response> {
    return await fetch(`${this.base}${path}`, {
      method: "POST",
      redirect: "manual",
      headers: {
        "Content-Type": "application/x-www-form-urlencoded",
        Cookie: `sluice_session=${this.session}`,
      },
      body: new URLSearchParams({ _csrf: this.csrf, ...fields }).toString(),
    });
  }

  async rpc(method: string, params?: unknown): Promise<unknown> {
    const r = await fetch(`${this.base}/api/rpc`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Cookie: `sluice_session=${this.session}`,
        "X-CSRF-Token": this.csrf,
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    });
    const body = await r.json() as { result?: unknown; error?: { message: string } };
    if (r.status !== 200 || body.error) {
      throw new Error(
        `${method}: HTTP ${r.status}: ${body.error?.message ?? JSON.stringify(body)}`,
      );
    }
    return body.result;
  }
}

interface Boot {
  vm: ApplianceVm;
  readyMs: number;
}

async function boot(
  dir: string,
  firmware: "bios" | "uefi",
  disk: string,
  nvme: string[],
  ports: { admin: number; nvmf: number },
  name: string,
  extra: {
    diskFormat?: "qcow2" | "raw";
    guestAddr?: string;
    sshPort?: number;
    extraDisks?: string[];
  } = {},
): Promise<Boot> {
  const serialLog = `${dir}/${name}.serial.log`;
  let ovmfVars: string | undefined;
  if (firmware === "uefi") {
    ovmfVars = `${dir}/${name}.OVMF_VARS.fd`;
    await Deno.copyFile(OVMF_VARS, ovmfVars);
  }
  const vm = new ApplianceVm({
    disk,
    nvme,
    firmware,
    ...(ovmfVars === undefined ? {} : { ovmfVars }),
    adminPort: ports.admin,
    nvmfPort: ports.nvmf,
    serialLog,
    monitor: `${dir}/${name}.mon`,
    ...extra,
  });
  try {
    const readyMs = await waitForAdmin(vm, ports.admin, BOOT_TIMEOUT_MS);
    log(`${name} (${firmware}): web admin answering ${(readyMs / 1000).toFixed(1)} s after start`);
    return { vm, readyMs };
  } catch (e) {
    await vm.kill();
    log(`${name}: serial console in ${serialLog}`);
    throw e;
  }
}

async function labGuest(port: number, mode: "write" | "verify"): Promise<void> {
  const r = await runGuest({
    name: `image-nvmf-${mode}`,
    script: new URL("./guest/nvmf_fio.sh", import.meta.url),
    net: true,
    modules: ["nvme_tcp"],
    env: { ADDR: "10.0.2.2", PORT: String(port), NQN, MODE: mode },
    timeoutSec: 600,
  });
  assert.equal(r.exitCode, 0, outputTail(r.output, 40));
  for (const step of ["connect", `fio-${mode}`, "disconnect"]) {
    assert.ok(r.output.includes(`STEP ${step} OK`), `step ${step}:\n${outputTail(r.output, 30)}`);
  }
}

interface BdevView {
  name: string;
  product_name: string;
  num_blocks: number;
}
interface SubsystemView {
  nqn: string;
  listen_addresses: { traddr: string; trsvcid: string }[];
  namespaces: { nsid: number; bdev_name: string }[];
}

Deno.test({
  name: "image: BIOS boot, admin login, NVMe attach, NVMe/TCP export with fio, reboot keeps it",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await Deno.stat(RAW).catch(() => {
    throw new Error(`${RAW} is missing: run \`deno task image\` first`);
  });
  await sizes();
  const dir = await Deno.makeTempDir({ prefix: "sluice-image-test-" });
  const disk = `${dir}/disk.qcow2`;
  await overlay(RAW, disk, 8);
  const nvme = [`${dir}/nvme0.raw`, `${dir}/nvme1.raw`];
  for (const p of nvme) {
    const f = await Deno.open(p, { create: true, write: true });
    await f.truncate(NVME_BYTES);
    f.close();
  }
  const ports = { admin: freePort(), nvmf: freePort() };
  const base = `http://127.0.0.1:${ports.admin}`;
  let current: ApplianceVm | null = null;
  try {
    // --- first boot ---------------------------------------------------------------
    const first = await boot(dir, "bios", disk, nvme, ports, "boot1");
    current = first.vm;
    const shown = await waitForConsole(
      first.vm,
      /Web admin: (http:\/\/\S+)[\s\S]*?Admin password \(first boot[^)]*\): (\S+)/,
      10 * 60_000,
    );
    const url = shown[1] as string;
    const password = shown[2] as string;
    const screen = (await first.vm.console()).slice(shown.index);
    for (const i of [0, 1]) {
      assert.match(
        screen,
        new RegExp(`${nvmePciAddress(i)} +free: attach it in the web admin`),
        "the status lists both drives, bound to vfio-pci at boot",
      );
    }
    log(`console shows the admin at ${url} and the first-boot password`);
    assert.match(url, /^http:\/\/10\.0\.2\.15:8080\/$/, "the DHCP address from QEMU's user net");
    assert.match(
      await first.vm.console(),
      /sluice: growing the data partition \/dev\/vda5 \(partition 5 of \/dev\/vda\)/,
      "the initramfs grows the data partition into the 8 GiB disk",
    );
    const admin = await AdminClient.login(base, password);

    // One drive, attached with one click on the Volumes page (the admin lists the node's NVMe
    // drives; sluice setup bound them to vfio-pci at boot): the button's form, as a browser
    // would post it.
    const page = await admin.page("/volumes");
    const row = new RegExp(
      `<tr data-pci="${nvmePciAddress(0)}">[\\s\\S]*?name="name" value="([^"]+)"[\\s\\S]*?` +
        `name="traddr" value="([^"]+)"><button>Attach as`,
    ).exec(page);
    assert.ok(row, `the Volumes page offers to attach ${nvmePciAddress(0)}:\n${page}`);
    assert.equal(row[1], "Nvme0");
    assert.equal(row[2], nvmePciAddress(0));
    const attach = await admin.form("/volumes/create-nvme", {
      name: row[1] as string,
      trtype: "PCIe",
      traddr: row[2] as string,
    });
    const answer = await attach.text();
    assert.equal(attach.status, 303, `attach answered ${attach.status}: ${answer}`);
    // A reactor per vCPU (--cpumask all): the main thread's and a data-path worker, which
    // serves a vhost-user-blk controller placed on it from its replica of a RAM volume.
    const reactors = await admin.rpc("framework_get_reactors") as {
      reactors: { lcore: number; thread: string }[];
    };
    assert.deepEqual(reactors.reactors.map((r) => [r.lcore, r.thread]), [
      [0, "main"],
      [1, "worker"],
    ]);
    await admin.rpc("bdev_malloc_create", { name: "ram0", num_blocks: 2048, block_size: 512 });
    await admin.rpc("vhost_create_blk_controller", {
      ctrlr: "vm0",
      dev_name: "ram0",
      socket: "/var/lib/sluice/vm0.sock",
      cpumask: "0x2",
    });
    const [vm0] = await admin.rpc("vhost_get_controllers", { name: "vm0" }) as {
      reactor: number;
    }[];
    assert.equal(vm0?.reactor, 1, "the controller is on the worker");
    await admin.rpc("vhost_delete_controller", { ctrlr: "vm0" });
    await admin.rpc("bdev_malloc_delete", { name: "ram0" });
    const attached = await admin.rpc("bdev_get_bdevs") as BdevView[];
    assert.ok(attached.some((b) => b.name === "Nvme0n1"), "the drive's namespace is a volume");
    await admin.rpc("bdev_passthru_create", { base_bdev_name: "Nvme0n1", name: "vol0" });
    await admin.rpc("nvmf_create_transport", { trtype: "TCP" });
    await admin.rpc("nvmf_create_subsystem", {
      nqn: NQN,
      allow_any_host: true,
      serial_number: "SLUICEIMG0001",
      model_number: "sluice image test",
    });
    await admin.rpc("nvmf_subsystem_add_ns", { nqn: NQN, namespace: { bdev_name: "vol0" } });
    await admin.rpc("nvmf_subsystem_add_listener", {
      nqn: NQN,
      listen_address: { trtype: "TCP", adrfam: "IPv4", traddr: "0.0.0.0", trsvcid: "4420" },
    });
    log("attached Nvme0 (0000:00:04.0) with one click, volume vol0 on it, exported over NVMe/TCP");

    await labGuest(ports.nvmf, "write");
    log("lab guest: nvme connect, fio randwrite + crc32c verify of 32 MiB: ok");

    // --- reboot (clean power cycle) -------------------------------------------------
    assert.ok(await first.vm.powerdown(5 * 60_000), "the appliance powers off on ACPI");
    log("appliance powered off cleanly");
    const second = await boot(dir, "bios", disk, nvme, ports, "boot2");
    current = second.vm;
    assert.doesNotMatch(await second.vm.console(), /growing the data partition/, "grown once");
    const again = await AdminClient.login(base, password);
    const bdevs = await again.rpc("bdev_get_bdevs") as BdevView[];
    assert.ok(bdevs.some((b) => b.name === "vol0"), `vol0 is back: ${bdevs.map((b) => b.name)}`);
    assert.ok(bdevs.some((b) => b.name === "Nvme0n1"), "the drive is attached again");
    const subs = await again.rpc("nvmf_get_subsystems") as SubsystemView[];
    const sub = subs.find((s) => s.nqn === NQN);
    assert.ok(sub, "the export is back");
    assert.deepEqual(sub.namespaces.map((n) => n.bdev_name), ["vol0"]);
    assert.deepEqual(sub.listen_addresses.map((a) => a.trsvcid), ["4420"]);
    log("after reboot: vol0 on Nvme0n1 and the export are back; the password still logs in");
    await labGuest(ports.nvmf, "verify");
    log("lab guest: fio verify-only of the first boot's 32 MiB after the reboot: ok");
    const ok = await second.vm.powerdown(5 * 60_000);
    assert.ok(ok, "the appliance powers off on ACPI");
    current = null;
    log(
      `boot to admin API: first ${(first.readyMs / 1000).toFixed(1)} s, ` +
        `second ${(second.readyMs / 1000).toFixed(1)} s (TCG)`,
    );
  } finally {
    if (current !== null) await current.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test({
  name: "image: UEFI boot (OVMF); a static address and host name from the boot partition",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  if (Deno.uid() === 0 && !(await exists(OVMF_CODE))) {
    await runChecked(["apt-get", "install", "-y", "--no-install-recommends", "ovmf"]);
  }
  const dir = await Deno.makeTempDir({ prefix: "sluice-image-uefi-" });
  // A raw copy (sparse), so the operator's files can be put on its ESP with mtools as one would
  // on a written disk: the ESP starts at 2 MiB.
  const disk = `${dir}/disk.img`;
  await runChecked(["cp", "--sparse=always", RAW, disk]);
  const network = `${dir}/static.network`;
  await Deno.writeTextFile(
    network,
    "[Match]\nName=en*\n\n[Network]\nAddress=10.0.2.77/24\nGateway=10.0.2.2\n",
  );
  const hostname = `${dir}/hostname`;
  await Deno.writeTextFile(hostname, "node-uefi\n");
  const esp = `${disk}@@${DISK.espStartMiB}M`;
  const env = { MTOOLS_SKIP_CHECK: "1" };
  await runChecked(["mcopy", "-i", esp, network, "::/sluice/network/static.network"], { env });
  await runChecked(["mcopy", "-i", esp, hostname, "::/sluice/hostname"], { env });
  const ports = { admin: freePort(), nvmf: freePort() };
  let vm: ApplianceVm | null = null;
  try {
    // The forwards go to 10.0.2.77: the admin answers only if the static address was applied.
    const b = await boot(dir, "uefi", disk, [], ports, "uefi", {
      diskFormat: "raw",
      guestAddr: "10.0.2.77",
    });
    vm = b.vm;
    const m = await waitForConsole(
      b.vm,
      /storage appliance - (\S+)\n\nWeb admin: (http:\/\/\S+)[\s\S]*?Admin password \(first boot/,
      10 * 60_000,
    );
    assert.equal(m[1], "node-uefi", "the host name from the boot partition");
    assert.equal(m[2], "http://10.0.2.77:8080/", "the static address from the boot partition");
    log("UEFI: static address 10.0.2.77 and host name node-uefi from the ESP, admin answering");
    assert.ok(await b.vm.powerdown(5 * 60_000), "the appliance powers off on ACPI");
    vm = null;
  } finally {
    if (vm !== null) await vm.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** Runs a command on the appliance over ssh as root with the test's key. */
async function ssh(key: string, port: number, command: string): Promise<Deno.CommandOutput> {
  return await new Deno.Command("ssh", {
    args: [
      ...["-i", key, "-p", String(port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=60"],
      ...["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-q"],
      "root@127.0.0.1",
      command,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
}

async function sshText(key: string, port: number, command: string): Promise<string> {
  const r = await ssh(key, port, command);
  const out = new TextDecoder().decode(r.stdout);
  assert.equal(r.code, 0, `ssh ${command}: ${out}${new TextDecoder().decode(r.stderr)}`);
  return out;
}

Deno.test({
  name: "image: ssh from boot-partition keys; sluice restarts when killed; A/B upgrade to slot B",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  if (Deno.uid() === 0 && !(await exists("/usr/bin/ssh"))) {
    await runChecked(["apt-get", "install", "-y", "--no-install-recommends", "openssh-client"]);
  }
  const dir = await Deno.makeTempDir({ prefix: "sluice-image-ab-" });
  const disk = `${dir}/disk.img`;
  await runChecked(["cp", "--sparse=always", RAW, disk]);
  const key = `${dir}/key`;
  await runChecked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key]);
  const esp = `${disk}@@${DISK.espStartMiB}M`;
  await runChecked(["mcopy", "-i", esp, `${key}.pub`, "::/sluice/authorized_keys"], {
    env: { MTOOLS_SKIP_CHECK: "1" },
  });
  // The "new" root: slot A's file system of the built image, as a bare file system on a
  // second disk (a whole image there would bring a second data partition with the same label).
  const newRoot = `${dir}/new-root.ext4`;
  await runChecked([
    "dd",
    `if=${RAW}`,
    `of=${newRoot}`,
    "bs=1M",
    `skip=${DISK.rootAStartMiB}`,
    `count=${DISK.rootMiB}`,
    "conv=sparse",
    "status=none",
  ]);
  const ports = { admin: freePort(), nvmf: freePort() };
  const sshPort = freePort();
  let vm: ApplianceVm | null = null;
  try {
    const b = await boot(dir, "bios", disk, [], ports, "ab", {
      diskFormat: "raw",
      sshPort,
      extraDisks: [newRoot],
    });
    vm = b.vm;
    // ssh is on because the boot partition has keys; slot A booted.
    assert.match(await sshText(key, sshPort, "cat /proc/cmdline"), /sluice\.slot=a /);
    // sluice.service restarts on failure: kill it, the admin comes back.
    await sshText(key, sshPort, "systemctl kill -s KILL sluice.service");
    let restarts = "";
    for (let i = 0; i < 90 && !/^NRestarts=[1-9]/m.test(restarts); i++) {
      await new Promise((r) => setTimeout(r, 2000));
      restarts = await sshText(key, sshPort, "systemctl show -p NRestarts sluice.service");
    }
    assert.match(restarts, /^NRestarts=1$/m, "systemd restarted the killed sluice once");
    await waitForAdmin(b.vm, ports.admin, 5 * 60_000);
    log("sluice killed with SIGKILL: systemd restarted it, the admin answers again");
    const up = await sshText(key, sshPort, "/usr/lib/sluice/upgrade /dev/vdb 2>&1");
    assert.match(up, /slot b boots once at the next reboot/);
    await ssh(key, sshPort, "systemctl reboot");
    await waitForConsole(b.vm, /Command line: .*sluice\.slot=b /, 5 * 60_000);
    await waitForConsole(b.vm, /root slot b booted and serves: it is now the default/, 10 * 60_000);
    const env = await sshText(key, sshPort, "cat /boot/efi/grub/grubenv; cat /proc/cmdline");
    assert.match(env, /^sluice_slot=b$/m, "slot b is GRUB's default now");
    assert.doesNotMatch(env, /sluice_next=/, "GRUB cleared the one-time choice");
    assert.match(env, /sluice\.slot=b /);
    await waitForAdmin(b.vm, ports.admin, BOOT_TIMEOUT_MS);
    log("A/B: upgrade wrote slot b over ssh, slot b booted once, serves, and is the default");
    assert.ok(await b.vm.powerdown(5 * 60_000), "the appliance powers off on ACPI");
    vm = null;
  } finally {
    if (vm !== null) await vm.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

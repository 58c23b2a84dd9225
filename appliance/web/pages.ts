/**
 * The admin pages, rendered on the server with hono's `html` template
 * (every interpolated value is HTML-escaped). No inline script: the
 * Content-Security-Policy allows only /static/app.js.
 * @module
 */
import { html } from "hono/html";
import { hostLines, intervalQuantileUs, latencyText, vmLines } from "./dashboard_js.ts";

/** What `html` returns. */
export type Html = ReturnType<typeof html>;

/** The subset of `bdev_get_bdevs` the pages show. */
export interface BdevView {
  name: string;
  product_name: string;
  block_size: number;
  num_blocks: number;
  claimed: boolean;
  claimed_by?: string;
  driver_specific: Record<string, unknown>;
}

/** The subset of `nvmf_get_subsystems` the pages show. */
export interface SubsystemView {
  nqn: string;
  subtype: string;
  allow_any_host?: boolean;
  hosts?: { nqn: string }[];
  listen_addresses: { trtype: string; traddr: string; trsvcid: string }[];
  namespaces?: { nsid: number; bdev_name: string }[];
}

/** The subset of `vhost_get_controllers` the pages show. */
export interface VhostView {
  ctrlr: string;
  socket: string;
  /** A front-end (a VM's QEMU) is connected. */
  connected?: boolean;
  backend_specific: { block: { bdev: string; readonly: boolean; num_queues: number } };
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1c2430;background:#f6f7f9}
header{background:#1c2430;color:#fff;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header a.on{color:#fff;font-weight:600}
header form{margin-left:auto}main{padding:1em 1.5em;max-width:70em}
table{border-collapse:collapse;background:#fff;margin:.5em 0 1.5em}
th,td{border:1px solid #d5d9e0;padding:.3em .6em;text-align:left}th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
fieldset{border:1px solid #d5d9e0;background:#fff;margin:.5em 0 1.5em;max-width:40em}
label{display:inline-block;margin:.2em 1em .2em 0}
.error{color:#b00020;font-weight:600}.ok{color:#116b2f}
canvas{background:#fff;border:1px solid #d5d9e0}
`;

function nav(active: string, csrf: string | null): Html {
  const link = (href: string, name: string) =>
    html`<a href="${href}" class="${active === href ? "on" : ""}">${name}</a>`;
  return html`<header><strong>sluice</strong>${link("/", "Dashboard")}${
    link("/volumes", "Volumes")
  }${link("/exports", "Exports")}${link("/connections", "Connections")}${link("/logs", "Logs")}${
    link("/settings", "Settings")
  }${
    csrf === null ? "" : html`<form method="post" action="/logout"><input type="hidden"
      name="_csrf" value="${csrf}"><button>Log out</button></form>`
  }</header>`;
}

/** The frame of every page; `csrf` null on the login page. */
export function layout(title: string, active: string, csrf: string | null, body: Html): Html {
  return html`
    <!doctype html>
    <html lang="en">
      <head><meta charset="utf-8"><title>${title} · sluice</title>
    <meta name="viewport" content="width=device-width,initial-scale=1">
    ${csrf === null ? "" : html`<meta name="csrf-token" content="${csrf}">`}
    <link rel="stylesheet" href="/static/style.css"></head>
      <body>${nav(active, csrf)}<main><h1>${title}</h1>${body}</main>
    <script src="/static/app.js" defer></script></body>
    </html>
  `;
}

/** The stylesheet (served from /static so the CSP needs no inline styles). */
export const STYLESHEET = STYLE;

/** The login form. */
export function loginPage(csrf: string, error: string | null): Html {
  return html`
    <!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <title>Log in · sluice</title>
        <link rel="stylesheet" href="/static/style.css">
      </head>
      <body>
        <header><strong>sluice</strong></header>
        <main>
          <h1>Log in</h1>
          <form method="post" action="/login"><input type="hidden" name="_csrf" value="${csrf}">
    <label>Admin password <input type="password" name="password" autocomplete="current-password"
    required autofocus></label> <button>Log in</button>
    ${error === null ? "" : html`<p class="error" id="login-error">${error}</p>`}</form>
          <p>The password was printed once on the appliance's console at its first start.</p>
        </main>
      </body>
    </html>
  `;
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

/** The dashboard: health and live per-volume IOPS (fed by /events). */
export function dashboardPage(
  csrf: string,
  status: { version: string; uptime_s: number },
  bdevs: BdevView[],
  connections: number,
  vhost: number,
  hosts: ConnectionsView[] = [],
  vms: VhostView[] = [],
): Html {
  // The same words as the live list the script draws from each stats snapshot.
  const hostRows = hosts.flatMap((s) =>
    s.controllers.map((c) => ({
      nqn: s.nqn,
      hostnqn: c.hostnqn,
      cntlid: c.cntlid,
      io_queues: c.num_io_qpairs,
    }))
  );
  return layout(
    "Dashboard",
    "/",
    csrf,
    html`
      <p id="health" class="ok">Serving: sluice ${status.version}, up <span id="uptime">${status
        .uptime_s}</span> s,
      ${bdevs
        .length} volume(s), <span id="connections">${connections}</span> NVMe/TCP connection(s),
      ${vhost} vhost-user controller(s).</p>
      <h2>IOPS (updated every second)</h2>
      <canvas id="iops-chart" width="800" height="200" aria-label="IOPS per volume"></canvas>
      <h2>Throughput (MiB/s, read + write)</h2>
      <canvas id="mbps-chart" width="800" height="160" aria-label="MiB/s per volume"></canvas>
      <h2>Latency (µs, p50 and p99 of the I/Os sampled each second)</h2>
      <canvas id="latency-chart" width="800" height="160"
        aria-label="Latency p50 and p99 per volume"></canvas>
      <table id="iops">
        <thead>
          <tr>
            <th>Volume</th>
            <th>Read IOPS</th>
            <th>Write IOPS</th>
            <th>Read MiB/s</th>
            <th>Write MiB/s</th>
            <th>Latency p50</th>
            <th>p99</th>
          </tr>
        </thead>
        <tbody>${bdevs.map((b) =>
          html`
            <tr data-bdev="${b.name}">
              <td>${b.name}</td>
              <td class="num r">0</td>
              <td class="num w">0</td>
              <td class="num rb">0</td>
              <td class="num wb">0</td>
              <td class="num p50">-</td>
              <td class="num p99">-</td>
            </tr>
          `
        )}</tbody>
      </table>
      <h2>Connected NVMe/TCP hosts; vhost-user sockets served to VMs</h2>
      <ul id="hosts">${hostLines(hostRows).map((line) =>
        html`<li class="nvmf-host">${line}</li>`
      )}${vmLines(vms).map((line) =>
        html`<li class="vm">${line}</li>`
      )}<li class="none" ${hostRows.length + vms.length === 0 ? "" : "hidden"}>none</li></ul>
      <h2>Data-path reactors</h2>
      <p id="reactor">busy <span id="busy">0</span> % of the last second, per reactor (the main
      thread's, then each data-path worker's; polling or working, the rest parked in the kernel,
      using no CPU)</p>
    `,
  );
}

/** The volumes: list with layering, create malloc, delete with confirmation. */
export function volumesPage(
  csrf: string,
  bdevs: BdevView[],
  form: { error: string | null; name?: string; sizeMiB?: string },
  deleteError: { name: string; error: string } | null,
  more: MoreVolumeForms = { keys: [] },
): Html {
  return layout(
    "Volumes",
    "/volumes",
    csrf,
    html`
      <table id="volumes">
        <thead>
          <tr>
            <th>Name</th>
            <th>Type</th>
            <th>Size</th>
            <th>Block</th>
            <th>Used by</th>
            <th>Delete</th>
          </tr>
        </thead>
        <tbody>${bdevs.map((b) =>
          html`
            <tr data-bdev="${b.name}">
              <td>${b.name}</td>
              <td>${b.product_name}</td>
              <td class="num">${bytes(b.block_size * b.num_blocks)}</td>
              <td class="num">${b.block_size} B</td>
              <td>${b.claimed_by ?? ""}</td>
              <td>
                <form method="post" action="/volumes/delete">
            <input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="name" value="${b
              .name}">
            <label>Type the name to confirm <input name="confirm" required size="12"></label>
            <button>Delete</button>${deleteError?.name === b.name
              ? html`<span class="error delete-error">${deleteError.error}</span>`
              : ""}</form>
              </td>
            </tr>
          `
        )}</tbody>
      </table>
      <form method="post" action="/volumes/create">
        <fieldset><legend>Create a RAM volume (malloc)</legend>
      <input type="hidden" name="_csrf" value="${csrf}">
      <label>Name <input name="name" required pattern="[A-Za-z0-9_.:+\\-]{1,128}" value="${form
        .name ?? ""}"></label>
      <label>Size (MiB) <input name="size_mib" type="number" min="1" required value="${form
        .sizeMiB ?? "64"}"></label>
      <label>Block size <select name="block_size"><option>512</option><option>4096</option></select></label>
      <button>Create</button>
      ${form.error === null ? "" : html`<p class="error" id="create-error">${form.error}</p>`}
        </fieldset>
      </form>
      ${moreVolumeForms(csrf, bdevs, more)} ${nvmeForms(csrf, more)}
    `,
  );
}

/** Crypto key names for the encrypted-volume form, and that form's and the file form's state. */
export interface MoreVolumeForms {
  keys: string[];
  fileError?: string;
  cryptoError?: string;
  /** The NVMe form's error (bdev_nvme_attach_controller). */
  nvmeError?: string;
  /** Attached NVMe controllers (bdev_nvme_get_controllers) and a detach error. */
  controllers?: NvmeCtrlrView[];
  detachError?: { name: string; error: string };
  values?: Record<string, string>;
  /** The node's NVMe controllers from sysfs (`sluice setup status`), attached or not. */
  pciDrives?: { address: string; driver: string | null; inUse: string[] }[];
}

/** The first NvmeN name no attached controller has. */
function freeControllerName(ctrlrs: NvmeCtrlrView[]): string {
  const taken = new Set(ctrlrs.map((c) => c.name));
  let i = 0;
  while (taken.has(`Nvme${i}`)) i++;
  return `Nvme${i}`;
}

/** The node's NVMe drives, each free one with a one-click Attach (a prefilled attach form). */
function pciDriveTable(csrf: string, m: MoreVolumeForms): Html {
  const drives = m.pciDrives ?? [];
  const ctrlrs = m.controllers ?? [];
  const attached = new Map(
    ctrlrs.flatMap((c) => c.ctrlrs.map((x) => [x.trid.traddr, c.name] as const)),
  );
  const name = freeControllerName(ctrlrs);
  return html`
    <h2>NVMe drives in this node</h2>
    <table id="nvme-drives">
      <thead>
        <tr>
          <th>PCI address</th>
          <th>Driver</th>
          <th>State</th>
        </tr>
      </thead>
      <tbody>${drives.map((d) => {
        const ctrl = attached.get(d.address);
        const state = ctrl !== undefined
          ? html`attached as ${ctrl}`
          : d.inUse.length > 0
          ? html`in use by the system: ${d.inUse[0]}`
          : d.driver === "vfio-pci"
          ? html`<form method="post" action="/volumes/create-nvme">
          <input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="name" value="${name}"><input
            type="hidden" name="trtype" value="PCIe"><input type="hidden" name="traddr" value="${d.address}"><button>Attach as ${name}</button></form>`
          : html`not on vfio-pci: run <code>sluice setup bind ${d.address}</code>`;
        return html`
          <tr data-pci="${d.address}">
            <td>${d.address}</td>
            <td>${d.driver ??
              "none"}</td>
            <td>${state}</td>
          </tr>
        `;
      })}</tbody>
    </table>
    ${drives.length === 0 ? html`<p>No NVMe controller found in this node.</p>` : ""}
  `;
}

/** The subset of `bdev_nvme_get_controllers` the Volumes page shows. */
export interface NvmeCtrlrView {
  name: string;
  ctrlrs: { state: string; trid: { trtype: string; traddr: string }; bdevs: string[] }[];
}

function nvmeForms(csrf: string, m: MoreVolumeForms): Html {
  const v = m.values ?? {};
  const ctrlrs = m.controllers ?? [];
  return html`
    ${pciDriveTable(csrf, m)}
    <h2>Local NVMe controllers</h2>
    <table id="nvme-controllers">
      <thead>
        <tr>
          <th>Controller</th>
          <th>Transport</th>
          <th>PCI address</th>
          <th>State</th>
          <th>Volumes (namespaces)</th>
          <th>Detach</th>
        </tr>
      </thead>
      <tbody>${ctrlrs.map((c) => {
        const x = c.ctrlrs[0];
        return html`
          <tr data-nvme="${c.name}">
            <td>${c.name}</td>
            <td>${x?.trid.trtype ?? ""}</td>
            <td>${x?.trid.traddr ?? ""}</td>
            <td>${x?.state ?? ""}</td>
            <td>${(x?.bdevs ?? []).join(", ")}</td>
            <td>
              <form method="post" action="/volumes/detach-nvme">
          <input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="name" value="${c
            .name}">
          <label>Type the name to confirm <input name="confirm" required size="12"></label>
          <button>Detach</button>${m.detachError?.name === c.name
            ? html`<span class="error detach-error">${m.detachError.error}</span>`
            : ""}</form>
            </td>
          </tr>
        `;
      })}</tbody>
    </table>
    ${m.detachError !== undefined && !ctrlrs.some((c) => c.name === m.detachError?.name)
      ? html`<p class="error" id="detach-error">${m.detachError.error}</p>`
      : ""}
    <form method="post" action="/volumes/create-nvme">
      <fieldset>
    <legend>Create volumes on a local NVMe SSD (attach its controller: a volume per namespace)</legend>
    <input type="hidden" name="_csrf" value="${csrf}">
    <label>Controller name <input name="name" required value="${v["nvme_name"] ?? ""}"></label>
    <label>Transport <select name="trtype"><option>PCIe</option></select></label>
    <label>PCI address <input name="traddr" required placeholder="0000:00:04.0" value="${v[
      "traddr"
    ] ?? ""}"></label>
    <button>Attach</button>
    <p>The device must be bound to vfio-pci (docs/nvme.md); volumes are named CONTROLLERn1, n2, ….</p>
    ${m.nvmeError ? html`<p class="error" id="nvme-error">${m.nvmeError}</p>` : ""}
      </fieldset>
    </form>
  `;
}

function moreVolumeForms(csrf: string, bdevs: BdevView[], m: MoreVolumeForms): Html {
  const v = m.values ?? {};
  const unclaimed = bdevs.filter((b) => !b.claimed).map((b) => b.name);
  return html`
    <form method="post" action="/volumes/create-file">
      <fieldset>
    <legend>Create a volume on a file or block device (file)</legend>
    <input type="hidden" name="_csrf" value="${csrf}">
    <label>Name <input name="name" required value="${v["file_name"] ?? ""}"></label>
    <label>Path on the appliance <input name="filename" required size="30" value="${v["filename"] ??
      ""}"></label>
    <label>Block size <select name="block_size"><option>512</option><option>4096</option></select></label>
    <button>Create</button>
    ${m.fileError ? html`<p class="error" id="file-error">${m.fileError}</p>` : ""}
      </fieldset>
    </form>
    <form method="post" action="/volumes/create-crypto">
      <fieldset>
    <legend>Create an encrypted volume on another (crypto, AES-XTS)</legend>
    <input type="hidden" name="_csrf" value="${csrf}">
    <label>Name <input name="name" required value="${v["crypto_name"] ?? ""}"></label>
    <label>On <select name="base_bdev_name" required>${unclaimed.map((b) =>
      html`<option ${v["base_bdev_name"] === b ? "selected" : ""}>${b}</option>`
    )}</select></label>
    <label>Key <select name="key_name" required>${m.keys.map((k) =>
      html`<option ${v["key_name"] === k ? "selected" : ""}>${k}</option>`
    )}</select></label>
    <button>Create</button>
    ${m.keys.length === 0
      ? html`<p>No crypto key is loaded: keys come from the key file (docs/crypto.md), never through this page.</p>`
      : ""}
    ${m.cryptoError ? html`<p class="error" id="crypto-error">${m.cryptoError}</p>` : ""}
      </fieldset>
    </form>
  `;
}

/** Errors and kept values of the Exports forms. */
export interface ExportsForm {
  nvmfError?: string;
  vhostError?: string;
  deleteError?: { key: string; error: string };
  values?: Record<string, string>;
}

function confirmDelete(
  csrf: string,
  action: string,
  field: string,
  value: string,
  form: ExportsForm,
): Html {
  return html`<form method="post" action="${action}"><input type="hidden" name="_csrf" value="${csrf}">
<input type="hidden" name="${field}" value="${value}"><label>Type <code>${value}</code> to confirm
<input name="confirm" required size="12"></label><button>Delete</button>${
    form.deleteError?.key === value
      ? html`<span class="error delete-error">${form.deleteError.error}</span>`
      : ""
  }</form>`;
}

/** NVMe/TCP subsystems and vhost-user controllers: list, create, delete. */
export function exportsPage(
  csrf: string,
  subs: SubsystemView[],
  vhost: VhostView[],
  bdevNames: string[],
  form: ExportsForm = {},
): Html {
  const v = form.values ?? {};
  const bdevSelect = (name: string) =>
    html`<select name="${name}" required>${
      bdevNames.map((b) => html`<option ${v[name] === b ? "selected" : ""}>${b}</option>`)
    }</select>`;
  return layout(
    "Exports",
    "/exports",
    csrf,
    html`
      <h2>NVMe/TCP subsystems</h2>
      <table id="subsystems">
        <thead>
          <tr>
            <th>NQN</th>
            <th>Listeners</th>
            <th>Namespaces</th>
            <th>Hosts</th>
            <th>Delete</th>
          </tr>
        </thead>
        <tbody>${subs.filter((s) => s.subtype === "NVMe").map((s) =>
          html`
            <tr data-nqn="${s.nqn}">
              <td>${s.nqn}</td>
              <td>${s.listen_addresses.map((l) => `${l.trtype} ${l.traddr}:${l.trsvcid}`).join(
                ", ",
              )}</td>
              <td>${(s.namespaces ?? []).map((n) => `${n.nsid}: ${n.bdev_name}`).join(", ")}</td>
              <td>${s.allow_any_host ? "any" : (s.hosts ?? []).map((h) => h.nqn).join(", ")}</td>
              <td>${confirmDelete(csrf, "/exports/nvmf/delete", "nqn", s.nqn, form)}</td>
            </tr>
          `
        )}</tbody>
      </table>
      <form method="post" action="/exports/nvmf/create">
        <fieldset><legend>Export a volume over NVMe/TCP</legend>
      <input type="hidden" name="_csrf" value="${csrf}">
      <label>Subsystem NQN <input name="nqn" required size="40" value="${v["nqn"] ??
        "nqn.2026-11.dev.sluice:"}"></label>
      <label>Volume ${bdevSelect("bdev")}</label>
      <label>Listen on <input name="listen" required value="${v["listen"] ??
        "127.0.0.1:4420"}" placeholder="ADDRESS:PORT"></label>
      <label>Allowed host NQNs (spaces or commas between; empty: any host) <input name="hosts"
      size="60" value="${v["hosts"] ?? ""}"></label>
      <button>Export</button>
      ${form.nvmfError ? html`<p class="error" id="nvmf-error">${form.nvmfError}</p>` : ""}
        </fieldset>
      </form>
      <h2>vhost-user-blk controllers</h2>
      <table id="vhost">
        <thead>
          <tr>
            <th>Controller</th>
            <th>Socket</th>
            <th>Volume</th>
            <th>Queues</th>
            <th>Read-only</th>
            <th>Delete</th>
          </tr>
        </thead>
        <tbody>${vhost.map((c) =>
          html`
            <tr data-ctrlr="${c.ctrlr}">
              <td>${c.ctrlr}</td>
              <td>${c.socket}</td>
              <td>${c.backend_specific.block.bdev}</td>
              <td class="num">${c.backend_specific.block.num_queues}</td>
              <td>${c.backend_specific.block.readonly ? "yes" : "no"}</td>
              <td>${confirmDelete(csrf, "/exports/vhost/delete", "ctrlr", c.ctrlr, form)}</td>
            </tr>
          `
        )}</tbody>
      </table>
      <form method="post" action="/exports/vhost/create">
        <fieldset><legend>Serve a volume to VMs (vhost-user-blk)</legend>
      <input type="hidden" name="_csrf" value="${csrf}">
      <label>Controller <input name="ctrlr" required value="${v["ctrlr"] ?? ""}"></label>
      <label>Volume ${bdevSelect("vhost_bdev")}</label>
      <label>Socket path <input name="socket" size="30" value="${v["socket"] ??
        ""}" placeholder="default: var/CONTROLLER.sock"></label>
      <label>Queues <input name="num_queues" type="number" min="1" max="64" value="${v[
        "num_queues"
      ] ?? "1"}"></label>
      <button>Create</button>
      ${form.vhostError ? html`<p class="error" id="vhost-error">${form.vhostError}</p>` : ""}
        </fieldset>
      </form>
    `,
  );
}

/** Settings: change the password, bearer tokens. */
export function settingsPage(
  csrf: string,
  tokens: { id: string; name: string; created: string }[],
  msg: {
    passwordError?: string;
    passwordOk?: boolean;
    tokenError?: string;
    newToken?: string;
    configError?: string;
    configOk?: string;
  },
): Html {
  return layout(
    "Settings",
    "/settings",
    csrf,
    html`
        <form method="post" action="/settings/password">
        <fieldset><legend>Change the admin password</legend>
        <input type="hidden" name="_csrf" value="${csrf}">
        <label>Current <input type="password" name="current" required autocomplete="current-password"></label>
        <label>New (12 characters or more) <input type="password" name="new" required minlength="12"
        autocomplete="new-password"></label><button>Change</button>
        ${msg.passwordError
          ? html`<p class="error" id="password-error">${msg.passwordError}</p>`
          : ""}
        ${msg.passwordOk
          ? html`<p class="ok">Password changed; other sessions were logged out.</p>`
          : ""}
          </fieldset>
      </form>
        <h2>API tokens (for scripts: <code>Authorization: Bearer &lt;token&gt;</code>)</h2>
        ${msg.newToken
          ? html`<p class="ok">New token (shown only now, copy it): <code id="new-token">${msg.newToken}</code></p>`
          : ""}
        <table id="tokens">
        <thead>
          <tr>
            <th>Name</th>
            <th>Created</th>
            <th></th>
          </tr>
        </thead>
        <tbody>${tokens.map((t) =>
          html`
            <tr>
              <td>${t.name}</td>
              <td>${t.created}</td>
              <td>
                <form method="post"
                  action="/settings/tokens/revoke"><input type="hidden" name="_csrf" value="${csrf}">
            <input type="hidden" name="id" value="${t.id}"><button>Revoke</button></form>
              </td>
            </tr>
          `
        )}</tbody>
      </table>
        <form method="post" action="/settings/tokens">
        <fieldset><legend>Create a token</legend>
        <input type="hidden" name="_csrf" value="${csrf}"><label>Name <input name="name" required></label>
        <button>Create</button>
        ${msg.tokenError ? html`<p class="error" id="token-error">${msg.tokenError}</p>` : ""}
          </fieldset>
      </form>
      ${configSection(csrf, msg)}
    `,
  );
}

/**
 * The dashboard's script: reads /events (one stats snapshot a second),
 * turns counter differences into rates and draws the last minute.
 */
export const APP_JS = `"use strict";
(() => {
  ${intervalQuantileUs.toString()}
  ${latencyText.toString()}
  ${hostLines.toString()}
  ${vmLines.toString()}
  const chart = document.getElementById("iops-chart");
  if (!chart) return;
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
  // A line per volume over the last minute, newest point at the right edge.
  const lineChart = (canvas, unit) => {
    const ctx = canvas.getContext("2d");
    const history = new Map();
    const draw = () => {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      let max = 10;
      for (const h of history.values()) for (const v of h) if (v !== null) max = Math.max(max, v);
      let i = 0;
      ctx.font = "12px sans-serif";
      const step = (canvas.width - 10) / 59;
      for (const [name, h] of history) {
        const color = colors[i % colors.length];
        ctx.strokeStyle = color;
        ctx.fillStyle = color;
        ctx.lineWidth = 2;
        const at = (v, x) => [
          canvas.width - 5 - (h.length - 1 - x) * step,
          canvas.height - 5 - (v / max) * (canvas.height - 25),
        ];
        // A null point (no I/O sampled that second) is a gap in the line.
        ctx.beginPath();
        let pen = false;
        h.forEach((v, x) => {
          if (v === null) {
            pen = false;
            return;
          }
          const [px, py] = at(v, x);
          if (!pen) ctx.moveTo(px, py); else ctx.lineTo(px, py);
          pen = true;
        });
        ctx.stroke();
        h.forEach((v, x) => {
          if (v === null) return;
          const [px, py] = at(v, x);
          ctx.fillRect(px - 2, py - 2, 4, 4);
        });
        ctx.fillText(name, 8 + 120 * i, 14);
        i++;
      }
      // The latest point of each line, for tests and for anyone inspecting the page.
      canvas.dataset.last = JSON.stringify(
        Object.fromEntries([...history].map(([k, h]) => [k, h[h.length - 1]])),
      );
      ctx.fillStyle = "#555";
      ctx.fillText((max >= 100 ? Math.round(max) : max.toFixed(1)) + " " + unit, canvas.width - 100, 14);
    };
    const add = (name, v) => {
      const h = history.get(name) || [];
      h.push(v);
      if (h.length > 60) h.shift();
      history.set(name, h);
    };
    return { history, draw, add };
  };
  const iops = lineChart(chart, "IOPS");
  const mbpsCanvas = document.getElementById("mbps-chart");
  const mbps = mbpsCanvas ? lineChart(mbpsCanvas, "MiB/s") : null;
  const latCanvas = document.getElementById("latency-chart");
  const lat = latCanvas ? lineChart(latCanvas, "\u00b5s") : null;
  const history = iops.history;
  let prev = null;
  const draw = () => {
    iops.draw();
    if (mbps) mbps.draw();
    if (lat) lat.draw();
  };
  // The connected NVMe/TCP hosts and the served vhost-user sockets, from each snapshot.
  const showHosts = (hosts, vms) => {
    const ul = document.getElementById("hosts");
    if (!ul) return;
    for (const li of ul.querySelectorAll("li.nvmf-host, li.vm")) li.remove();
    const none = ul.querySelector("li.none");
    const put = (className, line) => {
      const li = document.createElement("li");
      li.className = className;
      li.textContent = line;
      ul.insertBefore(li, none);
    };
    for (const line of hostLines(hosts)) put("nvmf-host", line);
    for (const line of vmLines(vms)) put("vm", line);
    if (none) none.hidden = ul.querySelectorAll("li.nvmf-host, li.vm").length > 0;
  };
  const es = new EventSource("/events");
  es.addEventListener("stats", (ev) => {
    const s = JSON.parse(ev.data);
    const up = document.getElementById("uptime");
    if (up) up.textContent = String(s.uptime_s);
    const conns = document.getElementById("connections");
    if (conns) conns.textContent = String(s.nvmf_tcp ? s.nvmf_tcp.connections_open : 0);
    showHosts(s.nvmf_hosts || [], s.vhost || []);
    if (prev) {
      const dt = (s.taken_ms - prev.taken_ms) / 1000;
      if (dt > 0) {
        // One figure per reactor (0: the main thread's, then the data-path workers').
        const busy = s.reactors.map((r1) => {
          const r0 = prev.reactors.find((r) => r.id === r1.id);
          const ran = r1.running_ms - (r0 ? r0.running_ms : 0);
          const parked = (r1.stats.parkedMs || 0) - (r0 ? r0.stats.parkedMs || 0 : 0);
          return ran > 0 ? Math.max(0, 100 * (1 - parked / ran)).toFixed(1) : "0.0";
        });
        const b = document.getElementById("busy");
        if (b) b.textContent = busy.join("% / ");
        for (const v of s.bdevs) {
          const p = prev.bdevs.find((x) => x.name === v.name);
          if (!p) continue;
          const rate = (k) => (v[k] - p[k]) / dt;
          iops.add(v.name, rate("read_ops") + rate("write_ops"));
          if (mbps) mbps.add(v.name, (rate("read_bytes") + rate("write_bytes")) / 1048576);
          // Quantiles of the I/Os sampled in this interval (bucket upper bounds).
          const p50 = intervalQuantileUs(p.latency.buckets, v.latency.buckets, 0.5);
          const p99 = intervalQuantileUs(p.latency.buckets, v.latency.buckets, 0.99);
          if (lat) {
            // The unbounded last bucket is drawn at the largest finite bound.
            const top = Math.max(...v.latency.buckets.map((b) => b[0] === null ? 0 : b[0]));
            const plot = (us) => us === Infinity ? top : us;
            lat.add(v.name + " p50", plot(p50));
            lat.add(v.name + " p99", plot(p99));
          }
          const row = document.querySelector('tr[data-bdev="' + CSS.escape(v.name) + '"]');
          if (row) {
            row.querySelector(".r").textContent = Math.round(rate("read_ops"));
            row.querySelector(".w").textContent = Math.round(rate("write_ops"));
            row.querySelector(".rb").textContent = (rate("read_bytes") / 1048576).toFixed(1);
            row.querySelector(".wb").textContent = (rate("write_bytes") / 1048576).toFixed(1);
            row.querySelector(".p50").textContent = latencyText(p50);
            row.querySelector(".p99").textContent = latencyText(p99);
          }
        }
        let total = 0;
        for (const h of history.values()) total += h[h.length - 1] || 0;
        // Read by the browser test: the chart's latest point, all volumes together.
        chart.dataset.lastIops = String(Math.round(total));
        chart.dataset.points = String(Math.max(0, ...[...history.values()].map((h) => h.length)));
        draw();
      }
    }
    prev = s;
  });
})();
`;

/** Recent log lines, filtered by a substring. */
export function logsPage(csrf: string, lines: { t: number; msg: string }[], filter: string): Html {
  return layout(
    "Logs",
    "/logs",
    csrf,
    html`
      <form method="get" action="/logs"><label>Show lines containing
      <input name="q" value="${filter}"></label> <button>Filter</button></form>
      <p>${lines.length} line(s), oldest first.</p>
      <table id="logs">
        <thead>
          <tr>
            <th>Time (UTC)</th>
            <th>Message</th>
          </tr>
        </thead>
        <tbody>${lines.map((l) =>
          html`
            <tr>
              <td>${new Date(l.t).toISOString()}</td>
              <td><code>${l.msg}</code></td>
            </tr>
          `
        )}</tbody>
      </table>
    `,
  );
}

/** The configuration part of Settings: download and upload. */
export function configSection(
  csrf: string,
  msg: { configError?: string; configOk?: string },
): Html {
  return html`
    <h2>Configuration</h2>
    <p><a href="/settings/config.json" download="sluice-config.json">Download the running configuration</a>
    (<code>save_config</code>; crypto keys are never in it).</p>
    <form method="post" action="/settings/config" enctype="multipart/form-data">
      <fieldset>
    <legend>Apply a configuration (<code>load_config</code>: its calls are added to what runs)</legend>
    <input type="hidden" name="_csrf" value="${csrf}"><input type="file" name="config" accept=".json,application/json" required>
    <button>Apply</button>
    ${msg.configError ? html`<p class="error" id="config-error">${msg.configError}</p>` : ""}
    ${msg.configOk ? html`<p class="ok" id="config-ok">${msg.configOk}</p>` : ""}
      </fieldset>
    </form>
  `;
}

/** One subsystem's controllers, as nvmf_subsystem_get_controllers lists them. */
export interface ConnectionsView {
  nqn: string;
  controllers: { cntlid: number; hostnqn: string; hostid: string; num_io_qpairs: number }[];
}

/** NVMe/TCP hosts (controllers and queues) with a disconnect button; vhost-user controllers. */
export function connectionsPage(
  csrf: string,
  subs: ConnectionsView[],
  vhost: VhostView[],
  error: string | null,
): Html {
  return layout(
    "Connections",
    "/connections",
    csrf,
    html`
      <h2>NVMe/TCP hosts</h2>
      ${error === null ? "" : html`<p class="error" id="disconnect-error">${error}</p>`}
      <table id="controllers">
        <thead>
          <tr>
            <th>Subsystem</th>
            <th>Controller</th>
            <th>Host NQN</th>
            <th>Host ID</th>
            <th>I/O queues</th>
            <th></th>
          </tr>
        </thead>
        <tbody>${subs.flatMap((s) =>
          s.controllers.map((c) =>
            html`
              <tr data-cntlid="${c.cntlid}">
                <td>${s.nqn}</td>
                <td class="num">${c.cntlid}</td>
                <td>${c.hostnqn}</td>
                <td>${c.hostid}</td>
                <td class="num">${c.num_io_qpairs}</td>
                <td>
                  <form method="post"
                    action="/connections/disconnect"><input type="hidden" name="_csrf" value="${csrf}">
              <input type="hidden" name="nqn" value="${s
                .nqn}"><input type="hidden" name="cntlid" value="${c.cntlid}">
              <button>Disconnect</button></form>
                </td>
              </tr>
            `
          )
        )}</tbody>
      </table>
      <h2>vhost-user-blk controllers</h2>
      <p>Served sockets (a VM's front-end connects to one at a time):</p>
      <ul>${vhost.map((v) =>
        html`<li data-ctrlr="${v.ctrlr}">${v.ctrlr}: ${v.socket} (${v.backend_specific.block.bdev}): ${
          v.connected
            ? html`
              a VM is connected <form method="post" action="/connections/vhost-disconnect"
                style="display:inline"><input type="hidden" name="_csrf" value="${csrf}"><input
                            type="hidden" name="ctrlr" value="${v
                              .ctrlr}"><button>Disconnect</button></form>
            `
            : "no VM connected"
        }</li>`
      )}</ul>
    `,
  );
}

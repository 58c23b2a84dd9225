import assert from "node:assert/strict";
import { passwordFromLog, renderStatus, type StatusView } from "./status_screen.ts";

const base: StatusView = {
  version: "0.1.0",
  hostname: "node1",
  addresses: ["192.0.2.10"],
  adminPort: 8080,
  initialPassword: null,
  serving: {
    uptimeS: 125,
    volumes: [{ name: "vol0", module: "passthru", sizeBytes: 256 * 1024 * 1024 }],
    exports: [{
      nqn: "nqn.2026-11.dev.sluice:a",
      listen: ["0.0.0.0:4420"],
      namespaces: ["ns1=vol0"],
    }],
    drives: [{ name: "Nvme0", traddr: "0000:00:04.0", state: "enabled" }],
  },
  problem: null,
  recentLog: [],
  pciDrives: [
    { address: "0000:00:03.0", driver: "nvme", inUse: ["/dev/nvme0n1p3 is mounted on /"] },
    { address: "0000:00:04.0", driver: "vfio-pci", inUse: [] },
    { address: "0000:00:05.0", driver: "vfio-pci", inUse: [] },
  ],
};

Deno.test("status screen: admin URL per address, volumes, exports, drives", () => {
  const text = renderStatus(base);
  assert.match(text, /^Web admin: http:\/\/192\.0\.2\.10:8080\/$/m);
  assert.match(text, /vol0 +passthru +256 MiB/);
  assert.match(text, /nqn\.2026-11\.dev\.sluice:a\n +on 0\.0\.0\.0:4420; ns1=vol0/);
  assert.match(text, /NVMe drives \(3\):/);
  assert.match(text, /0000:00:03\.0 +in use by the system: \/dev\/nvme0n1p3 is mounted on \//);
  assert.match(text, /0000:00:04\.0 +attached as Nvme0 \(enabled\)/);
  assert.match(text, /0000:00:05\.0 +free: attach it in the web admin/);
  assert.match(text, /Up 2 min/);
  assert.ok(!text.includes("password"), "no password line without a first-boot password");
});

Deno.test("status screen: the first-boot password while valid; log lines when not serving", () => {
  const withPw = renderStatus({ ...base, initialPassword: "abcDEF123" });
  assert.match(withPw, /Admin password \(first boot; change it under Settings\): abcDEF123/);
  const down = renderStatus({
    ...base,
    addresses: [],
    serving: null,
    problem: "cannot connect",
    recentLog: ["sluice: start-up failed: boom"],
  });
  assert.match(down, /Network: no address yet \(DHCP\)/);
  assert.match(down, /sluice is not answering: cannot connect/);
  assert.match(down, / {2}sluice: start-up failed: boom/);
});

Deno.test("status screen: the password is taken from sluice's last first-start line", () => {
  const log = [
    "sluice: web admin on http://0.0.0.0:8080/",
    "sluice: web admin password (shown once; change it under Settings): first111",
    "sluice: SIGTERM: shutting down",
    "sluice: web admin password (shown once; change it under Settings): second22",
  ].join("\n");
  assert.equal(passwordFromLog(log), "second22");
  assert.equal(passwordFromLog("sluice: ready"), null);
});

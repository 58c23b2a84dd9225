/**
 * `sluice setup` against a fake sysfs/procfs/devtmpfs tree: listing, in-use detection and the
 * checks that must fail cleanly before anything is written. Binding for real (the kernel moving
 * the device) is tested in the guest: test/vm/vfio_lab_test.ts.
 */
import assert from "node:assert/strict";
import {
  bindVfio,
  formatStatus,
  normalizePciAddress,
  setup,
  SetupError,
  type SetupHost,
  setupStatus,
  unbindVfio,
} from "./setup.ts";

interface FakeDevice {
  address: string;
  cls?: string;
  driver?: string;
  group?: number;
  /** Controller name -> namespaces (nvme0 -> [nvme0n1]). */
  nvme?: Record<string, string[]>;
}

/** Builds a fake tree; returns a host rooted in it and the modprobe calls it saw. */
async function fakeHost(opts: {
  devices: FakeDevice[];
  vfioPci?: boolean;
  type1?: boolean;
  container?: boolean;
  mountinfo?: string;
  swaps?: string;
  /** Block devices: name -> major:minor; partitions as "nvme0n1/nvme0n1p1". */
  blocks?: Record<string, string>;
  holders?: Record<string, string[]>;
  /** What modprobe makes appear. */
  loadable?: string[];
}): Promise<{ host: SetupHost; root: string; modprobed: string[] }> {
  const root = await Deno.makeTempDir({ prefix: "sluice-setup-test-" });
  const sys = `${root}/sys`;
  const mk = (p: string) => Deno.mkdir(p, { recursive: true });
  await mk(`${sys}/bus/pci/devices`);
  await mk(`${sys}/bus/pci/drivers/nvme`);
  await mk(`${sys}/kernel/iommu_groups`);
  await mk(`${sys}/block`);
  await mk(`${root}/proc/self`);
  await mk(`${root}/dev/vfio`);
  if (opts.vfioPci) await mk(`${sys}/bus/pci/drivers/vfio-pci`);
  if (opts.type1) await mk(`${sys}/module/vfio_iommu_type1`);
  if (opts.container) await Deno.writeTextFile(`${root}/dev/vfio/vfio`, "");
  for (const d of opts.devices) {
    const dir = `${sys}/bus/pci/devices/${d.address}`;
    await mk(dir);
    await Deno.writeTextFile(`${dir}/class`, `${d.cls ?? "0x010802"}\n`);
    await Deno.writeTextFile(`${dir}/vendor`, "0x1b36\n");
    await Deno.writeTextFile(`${dir}/device`, "0x0010\n");
    if (d.driver) {
      await mk(`${sys}/bus/pci/drivers/${d.driver}`);
      await Deno.symlink(`${sys}/bus/pci/drivers/${d.driver}`, `${dir}/driver`);
    }
    if (d.group !== undefined) {
      const g = `${sys}/kernel/iommu_groups/${d.group}`;
      await mk(`${g}/devices`);
      await Deno.symlink(g, `${dir}/iommu_group`);
      await Deno.symlink(dir, `${g}/devices/${d.address}`);
    }
    for (const [ctrl, nss] of Object.entries(d.nvme ?? {})) {
      for (const ns of nss) await mk(`${dir}/nvme/${ctrl}/${ns}`);
    }
  }
  for (const [name, devNo] of Object.entries(opts.blocks ?? {})) {
    await mk(`${sys}/block/${name}/holders`);
    await Deno.writeTextFile(`${sys}/block/${name}/dev`, `${devNo}\n`);
  }
  for (const [name, hs] of Object.entries(opts.holders ?? {})) {
    for (const h of hs) await mk(`${sys}/block/${name}/holders/${h}`);
  }
  await Deno.writeTextFile(`${root}/proc/self/mountinfo`, opts.mountinfo ?? "");
  await Deno.writeTextFile(
    `${root}/proc/swaps`,
    "Filename\tType\tSize\tUsed\tPriority\n" + (opts.swaps ?? ""),
  );
  const modprobed: string[] = [];
  const host: SetupHost = {
    sys,
    dev: `${root}/dev`,
    proc: `${root}/proc`,
    settleMs: 100,
    modprobe: async (name) => {
      modprobed.push(name);
      if (!(opts.loadable ?? []).includes(name)) return false;
      if (name === "vfio-pci") await mk(`${sys}/bus/pci/drivers/vfio-pci`);
      if (name === "vfio_iommu_type1") await mk(`${sys}/module/vfio_iommu_type1`);
      return true;
    },
  };
  return { host, root, modprobed };
}

const A = "0000:00:04.0";
const B = "0000:00:05.0";
const quiet = () => {};

Deno.test("setup: PCI addresses are normalized, malformed ones refused", () => {
  assert.equal(normalizePciAddress("00:04.0"), A);
  assert.equal(normalizePciAddress("0000:5E:00.1"), "0000:5e:00.1");
  for (const bad of ["", "04.0", "0000:00:04", "0000:00:20.0", "0000:00:04.8", "x:00:04.0"]) {
    assert.throws(() => normalizePciAddress(bad), SetupError, bad);
  }
});

Deno.test("setup: status lists NVMe controllers with driver, group, namespaces and what uses them", async () => {
  const { host, root } = await fakeHost({
    devices: [
      { address: A, driver: "nvme", group: 1, nvme: { nvme0: ["nvme0n1"] } },
      // native multipath: the controller's entry is nvme1c1n1, the disk nvme1n1
      { address: B, driver: "nvme", group: 2, nvme: { nvme1: ["nvme1c1n1"] } },
      { address: "0000:00:1f.2", cls: "0x010601", driver: "ahci", group: 3 }, // SATA: not listed
      { address: "0000:00:06.0", group: 4 },
    ],
    blocks: {
      nvme0n1: "259:0",
      "nvme0n1/nvme0n1p1": "259:1",
      "nvme0n1/nvme0n1p2": "259:2",
      nvme1n1: "259:3",
    },
    holders: { nvme1n1: ["dm-0"] },
    mountinfo: "22 1 259:1 / /srv\\040data rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n",
    swaps: "/dev/nvme0n1p2                          partition\t1048572\t0\t-2\n",
    type1: true,
  });
  try {
    const s = await setupStatus(host);
    assert.equal(s.iommuGroups, 4);
    assert.deepEqual([s.vfioPci, s.vfioIommuType1, s.vfioContainer], [false, true, false]);
    assert.deepEqual(s.devices.map((d) => d.address), [A, B, "0000:00:06.0"]);
    const [a, b, c] = s.devices;
    assert.deepEqual(a?.blockDevices, ["nvme0n1"]);
    assert.deepEqual(a?.inUse, [
      "/dev/nvme0n1p1 is mounted on /srv data",
      "/dev/nvme0n1p2 is used as swap",
    ]);
    assert.deepEqual(b?.blockDevices, ["nvme1n1"]);
    assert.deepEqual(b?.inUse, ["nvme1n1 held by dm-0"]);
    assert.deepEqual([c?.driver, c?.iommuGroup, c?.blockDevices, c?.inUse], [null, 4, [], []]);
    const table = formatStatus(s);
    assert.match(table, /IOMMU groups: 4; vfio-pci: no; vfio_iommu_type1: yes/);
    assert.match(table, /0000:00:04\.0 +1b36:0010 +nvme +1 +nvme0n1 +\/dev\/nvme0n1p1 is mounted/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("setup: bind without an IOMMU fails with what to enable, and writes nothing", async () => {
  const { host, root } = await fakeHost({
    devices: [{ address: A, driver: "nvme", nvme: { nvme0: ["nvme0n1"] } }],
    vfioPci: true,
    type1: true,
    container: true,
  });
  try {
    await assert.rejects(bindVfio([A], host, quiet), (e: Error) => {
      assert.ok(e instanceof SetupError);
      assert.match(e.message, /no IOMMU/);
      assert.match(e.message, /intel_iommu=on/);
      assert.match(e.message, /intel-iommu,intremap=on/);
      return true;
    });
    await assert.rejects(Deno.stat(`${host.sys}/bus/pci/devices/${A}/driver_override`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("setup: bind loads vfio-pci and vfio_iommu_type1, and says so when it cannot", async () => {
  const dev: FakeDevice = { address: A, driver: "nvme", group: 1 };
  const missing = await fakeHost({ devices: [dev], container: true });
  try {
    await assert.rejects(bindVfio([A], missing.host, quiet), /vfio-pci driver is missing/);
    assert.deepEqual(missing.modprobed, ["vfio-pci"]);
  } finally {
    await Deno.remove(missing.root, { recursive: true });
  }
  const noType1 = await fakeHost({ devices: [dev], container: true, loadable: ["vfio-pci"] });
  try {
    await assert.rejects(bindVfio([A], noType1.host, quiet), /vfio_iommu_type1 module is missing/);
    assert.deepEqual(noType1.modprobed, ["vfio-pci", "vfio_iommu_type1"]);
  } finally {
    await Deno.remove(noType1.root, { recursive: true });
  }
  const noNode = await fakeHost({ devices: [dev], loadable: ["vfio-pci", "vfio_iommu_type1"] });
  try {
    await assert.rejects(bindVfio([A], noNode.host, quiet), /\/dev\/vfio\/vfio is missing/);
  } finally {
    await Deno.remove(noNode.root, { recursive: true });
  }
});

Deno.test("setup: bind refuses a named device in use, non-NVMe and unknown devices; skips in-use ones when none is named", async () => {
  const { host, root } = await fakeHost({
    devices: [
      { address: A, driver: "nvme", group: 1, nvme: { nvme0: ["nvme0n1"] } },
      { address: "0000:00:1f.2", cls: "0x010601", driver: "ahci", group: 3 },
    ],
    blocks: { nvme0n1: "259:0" },
    mountinfo: "22 1 259:0 / /mnt rw - ext4 /dev/nvme0n1 rw\n",
    vfioPci: true,
    type1: true,
    container: true,
  });
  try {
    await assert.rejects(bindVfio([A], host, quiet), /in use: \/dev\/nvme0n1 is mounted on \/mnt/);
    await assert.rejects(
      bindVfio(["00:1f.2"], host, quiet),
      /0000:00:1f\.2 is not an NVMe controller \(PCI class 0x010601/,
    );
    await assert.rejects(bindVfio(["0000:00:09.0"], host, quiet), /no PCI device 0000:00:09\.0/);
    const said: string[] = [];
    await bindVfio([], host, (l) => said.push(l));
    assert.deepEqual(said, ["0000:00:04.0 is in use: /dev/nvme0n1 is mounted on /mnt: skipped"]);
    await assert.rejects(Deno.stat(`${host.sys}/bus/pci/devices/${A}/driver_override`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("setup: bind refuses a group shared with a device a kernel driver has", async () => {
  const { host, root } = await fakeHost({
    devices: [{ address: A, driver: "nvme", group: 1 }],
    vfioPci: true,
    type1: true,
    container: true,
  });
  try {
    const other = `${host.sys}/bus/pci/devices/0000:00:04.1`;
    await Deno.mkdir(other);
    await Deno.writeTextFile(`${other}/class`, "0x020000\n");
    await Deno.mkdir(`${host.sys}/bus/pci/drivers/e1000e`);
    await Deno.symlink(`${host.sys}/bus/pci/drivers/e1000e`, `${other}/driver`);
    await Deno.symlink(other, `${host.sys}/kernel/iommu_groups/1/devices/0000:00:04.1`);
    await assert.rejects(
      bindVfio([A], host, quiet),
      /IOMMU group 1 of 0000:00:04\.0 also holds 0000:00:04\.1 \(e1000e\)/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("setup: bind writes driver_override, unbind and drivers_probe, and reports a driver that did not take the device", async () => {
  const { host, root } = await fakeHost({
    devices: [{ address: A, driver: "nvme", group: 1 }],
    vfioPci: true,
    type1: true,
    container: true,
  });
  try {
    // The fake kernel does not move the device: bind must notice instead of claiming success.
    await assert.rejects(
      bindVfio([A], host, quiet),
      /0000:00:04\.0 did not bind to vfio-pci \(now: nvme\)/,
    );
    const read = (p: string) => Deno.readTextFile(`${host.sys}/bus/pci/${p}`);
    assert.equal(await read(`devices/${A}/driver_override`), "vfio-pci");
    assert.equal(await read("drivers/nvme/unbind"), A);
    assert.equal(await read("drivers_probe"), A);
    // Unbind clears the override (a lone newline) and probes again.
    await Deno.remove(`${host.sys}/bus/pci/devices/${A}/driver`);
    await Deno.symlink(
      `${host.sys}/bus/pci/drivers/vfio-pci`,
      `${host.sys}/bus/pci/devices/${A}/driver`,
    );
    await assert.rejects(unbindVfio([A], host, quiet), /did not bind to nvme \(now: vfio-pci\)/);
    assert.equal(await read(`devices/${A}/driver_override`), "\n");
    assert.equal(await read("drivers/vfio-pci/unbind"), A);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("setup: command line: help, usage errors, status --json", async () => {
  const { host, root } = await fakeHost({
    devices: [{ address: A, driver: "nvme", group: 1, nvme: { nvme0: ["nvme0n1"] } }],
  });
  const log = console.log;
  const err = console.error;
  const out: string[] = [];
  console.log = (s: string) => out.push(s);
  console.error = (s: string) => out.push(s);
  try {
    assert.equal(await setup(["--help"], host), 0);
    assert.match(out.join("\n"), /Usage: sluice setup/);
    assert.equal(await setup(["--frob"], host), 2);
    assert.equal(await setup(["bind", "04.0"], host), 2);
    assert.equal(await setup(["bind", "--json"], host), 2);
    out.length = 0;
    assert.equal(await setup(["status", "--json"], host), 0);
    const s = JSON.parse(out.join("\n")) as { devices: { address: string; driver: string }[] };
    assert.deepEqual(s.devices.map((d) => [d.address, d.driver]), [[A, "nvme"]]);
    out.length = 0;
    assert.equal(await setup(["bind", A], host), 1); // no vfio-pci in this tree
    assert.match(out.join("\n"), /^sluice setup: the vfio-pci driver is missing/);
  } finally {
    console.log = log;
    console.error = err;
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("setup: wired into the sluice command with --help", async () => {
  const main = new URL("./main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "setup", "--help"],
    stdout: "piped",
  }).output();
  assert.equal(out.code, 0);
  assert.match(
    new TextDecoder().decode(out.stdout),
    /Usage: sluice setup \[status\|bind\|unbind\]/,
  );
});

Deno.test("setup: unbind refuses a device whose VFIO group a process has open, and skips it when none is named", async () => {
  const { host, root } = await fakeHost({
    devices: [{ address: A, driver: "vfio-pci", group: 1 }],
    vfioPci: true,
    type1: true,
    container: true,
  });
  try {
    await Deno.writeTextFile(`${host.dev}/vfio/1`, "");
    await Deno.mkdir(`${host.proc}/4242/fd`, { recursive: true });
    await Deno.writeTextFile(`${host.proc}/4242/comm`, "deno\n");
    await Deno.symlink(`${host.dev}/vfio/1`, `${host.proc}/4242/fd/7`);
    await assert.rejects(
      unbindVfio([A], host, quiet),
      /0000:00:04\.0 is in use: .*\/vfio\/1 is open in pid 4242 \(deno\)/,
    );
    const said: string[] = [];
    await unbindVfio([], host, (l) => said.push(l));
    assert.equal(said.length, 1);
    assert.match(said[0] ?? "", /is open in pid 4242 \(deno\): skipped$/);
    await assert.rejects(Deno.stat(`${host.sys}/bus/pci/devices/${A}/driver_override`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

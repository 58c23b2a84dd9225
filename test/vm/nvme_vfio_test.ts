/**
 * sluice's user-space NVMe driver in the VFIO lab (test/vm/vfio.ts): a q35 guest with an emulated
 * intel-iommu and two emulated NVMe controllers backed by files here. In the guest
 * (guest/nvme_vfio.sh) `sluice setup bind` gives both to vfio-pci, then `deno test` runs
 * guest/nvme_vfio_in_guest_test.ts:
 *
 * - the block device conformance suite on the nvme bdev of the first controller;
 * - on the second, through the App's RPCs: attach, the bytes the host wrote into the image before
 *   boot read back through the driver, a write, a 1 MiB transfer split into commands with PRP
 *   lists, flush, detach with the shutdown notification.
 *
 * Then the second controller goes back to the kernel's nvme driver, which must read the driver's
 * write, and the host finds it in its image file.
 *
 * Run with `deno task test:vm nvme_vfio`.
 */
import assert from "node:assert/strict";
import { outputTail } from "./guest.ts";
import { createDiskImage, parseReport, runUnplugGuest, runVfioGuest } from "./vfio.ts";

const HOST_TOKEN = "SLUICE-HOST-BYTES-FOR-THE-VFIO-DRIVER";
const HOST_TOKEN_AT = 8 << 20;
const GUEST_TOKEN = "SLUICE-USERSPACE-NVME-DRIVER-WROTE-THIS";
const GUEST_TOKEN_AT = 12 << 20;

/** ANSI colour escapes (deno test colours its output), built without a control-character literal. */
const COLOURS = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");

function stripColours(s: string): string {
  return s.replace(COLOURS, "");
}

Deno.test("nvme_vfio: the user-space driver passes the bdev conformance suite on QEMU's NVMe behind an IOMMU, and its writes reach the host's file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-nvme-vfio-" });
  try {
    const conf = await createDiskImage(`${dir}/conf.img`, 64);
    const data = await createDiskImage(`${dir}/data.img`, 64, {
      at: HOST_TOKEN_AT,
      bytes: new TextEncoder().encode(HOST_TOKEN),
    });
    const r = await runVfioGuest({
      name: "nvme-vfio",
      disks: [{ path: conf }, { path: data }],
      script: new URL("./guest/nvme_vfio.sh", import.meta.url),
      env: {
        HOST_TOKEN,
        HOST_TOKEN_AT: String(HOST_TOKEN_AT),
        GUEST_TOKEN,
        GUEST_TOKEN_AT: String(GUEST_TOKEN_AT),
      },
      timeoutSec: 900,
    });
    const tail = outputTail(r.output, 80);
    // The guest's test cases and facts, for the log of this run.
    for (const line of stripColours(r.output).split("\n")) {
      if (/ \.\.\. (ok|FAILED)|^NVME_FACT |^Nvme|: shutdown/.test(line)) {
        console.log(`  guest: ${line}`);
      }
    }
    assert.equal(r.exitCode, 0, tail);
    const rep = parseReport(r.report);
    const get = (k: string) => {
      const v = rep.get(k);
      assert.ok(v !== undefined, `no ${k} in the report:\n${r.report}\n${tail}`);
      return v;
    };
    assert.equal(get("BIND_RC"), "0", tail);
    assert.equal(get("DRIVERS"), "vfio-pci,vfio-pci", tail);
    assert.equal(get("NVME_TEST_RC"), "0", tail);
    // 9 conformance cases and the RPC/data test, all passed.
    assert.match(get("NVME_TEST_SUMMARY"), /^ok \| 10 passed \| 0 failed/, tail);
    assert.equal(get("NVME_TEST_CASES"), "10", tail);
    assert.equal(get("DMAR_FAULTS"), "0", tail);
    assert.equal(get("UNBIND_RC"), "0", tail);
    assert.equal(get("GUEST_TOKEN_KERNEL"), GUEST_TOKEN, tail);
    const onHost = await Deno.readFile(data);
    assert.equal(
      new TextDecoder().decode(
        onHost.subarray(GUEST_TOKEN_AT, GUEST_TOKEN_AT + GUEST_TOKEN.length),
      ),
      GUEST_TOKEN,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nvme_vfio: inside the guest sluice serves the nvme bdev over NVMe/TCP to the guest's kernel initiator; fio verify passes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-nvme-export-" });
  try {
    const img = await createDiskImage(`${dir}/export.img`, 64);
    const r = await runVfioGuest({
      name: "nvme-export",
      disks: [{ path: img }],
      modules: ["nvme-tcp"],
      script: new URL("./guest/nvme_export.sh", import.meta.url),
      timeoutSec: 900,
    });
    const tail = outputTail(r.output, 80);
    for (const line of stripColours(r.output).split("\n")) {
      if (/^NVME_FACT |^Nvme|IOPS=|err=/.test(line)) console.log(`  guest: ${line}`);
    }
    assert.equal(r.exitCode, 0, tail);
    const rep = parseReport(r.report);
    const get = (k: string) => {
      const v = rep.get(k);
      assert.ok(v !== undefined, `no ${k} in the report:\n${r.report}\n${tail}`);
      return v;
    };
    assert.equal(get("BIND_RC"), "0", tail);
    assert.equal(get("SERVING"), "1", tail);
    assert.equal(get("CONNECT_RC"), "0", tail);
    assert.match(get("EXPORT_DEV"), /^\/dev\/nvme\d+n1$/, tail);
    assert.equal(get("FIO_RC"), "0", tail);
    assert.equal(get("FIO_ERR0"), "1", tail);
    assert.equal(get("FIO_BIG_RC"), "0", tail);
    assert.equal(get("DISCONNECT_RC"), "0", tail);
    assert.equal(get("EXPORT_RC"), "0", tail);
    assert.equal(get("SHUTDOWN_COMPLETE"), "1", tail);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nvme_vfio: faults: on a throttled controller the reactor sleeps on MSI-X while commands wait; commands slowed past the timeout by QEMU throttling are aborted, the controller reset, the I/Os fail with ETIMEDOUT; then the PCI device is removed under I/O: EIO, the driver releases it; the appliance stays up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-nvme-fault-" });
  try {
    const img = await createDiskImage(`${dir}/slow.img`, 64);
    const r = await runVfioGuest({
      name: "nvme-fault",
      disks: [{ path: img, driveProps: "throttling.iops-total=2" }],
      script: new URL("./guest/nvme_fault.sh", import.meta.url),
      timeoutSec: 900,
    });
    const tail = outputTail(r.output, 80);
    for (const line of stripColours(r.output).split("\n")) {
      if (/ \.\.\. (ok|FAILED)|^NVME_FACT |^Nvme0/.test(line)) console.log(`  guest: ${line}`);
    }
    assert.equal(r.exitCode, 0, tail);
    const rep = parseReport(r.report);
    assert.equal(rep.get("BIND_RC"), "0", tail);
    assert.equal(rep.get("FAULT_TEST_RC"), "0", tail);
    assert.match(rep.get("FAULT_TEST_SUMMARY") ?? "", /^ok \| 3 passed \| 0 failed/, tail);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nvme_vfio: faults: the host removes the controller (QMP device_del) under reads: EIO, the driver lets go, the removal completes, the appliance stays up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-nvme-unplug-" });
  try {
    const { r, rep, tail } = await runUnplugGuest({
      dir,
      name: "nvme-unplug",
      script: new URL("./guest/nvme_unplug.sh", import.meta.url),
      timeoutSec: 600,
      tailLines: 60,
    });
    for (const line of stripColours(r.output).split("\n")) {
      if (/^Nvme0|vfio-pci|pciehp/.test(line)) console.log(`  guest: ${line}`);
    }
    assert.equal(r.exitCode, 0, tail);
    console.log(`  report: ${r.report.replace(/\n/g, " ")}`);
    assert.equal(rep.get("BIND_RC"), "0", tail);
    assert.equal(rep.get("FAILURE"), "-5", tail);
    assert.ok(Number(rep.get("READS_OK")) >= 50, tail);
    assert.equal(rep.get("RELEASED"), "1", tail);
    assert.equal(rep.get("STATE"), "removed", tail);
    assert.equal(rep.get("MALLOC_OK"), "1", tail);
    assert.equal(rep.get("DETACH_OK"), "1", tail);
    assert.equal(rep.get("UNPLUG_RC"), "0", tail);
    assert.equal(rep.get("GONE"), "1", tail);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

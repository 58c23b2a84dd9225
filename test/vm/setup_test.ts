import assert from "node:assert/strict";
import { moduleName, parseModuleIndex, resolveModules } from "./setup.ts";

const index = parseModuleIndex({
  dep: [
    "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio.ko:",
    "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz",
    "kernel/fs/jbd2/jbd2.ko.xz:",
    "kernel/fs/mbcache.ko.xz:",
    "kernel/crypto/crc32c_generic.ko:",
    "kernel/arch/x86/crypto/crc32c-intel.ko:",
    "kernel/drivers/nvme/host/nvme-tcp.ko: kernel/drivers/nvme/host/nvme-core.ko",
    "kernel/drivers/nvme/host/nvme-core.ko:",
  ].join("\n"),
  alias: [
    "alias crc32c crc32c_generic",
    "alias crc32c crc32c_intel",
    "alias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk",
  ].join("\n"),
  softdep: "# Soft dependencies\nsoftdep ext4 pre: crc32c\nsoftdep virtio_blk post: not_here",
  builtin: "kernel/fs/configfs/configfs.ko\n",
});

Deno.test("modules: names drop the suffix and use underscores", () => {
  assert.equal(moduleName("kernel/drivers/nvme/host/nvme-tcp.ko.xz"), "nvme_tcp");
  assert.equal(moduleName("vfio-pci"), "vfio_pci");
});

Deno.test("modules: dependencies, soft dependencies and aliases come along", () => {
  assert.deepEqual(resolveModules(index, ["ext4", "virtio_blk", "nvme-tcp"]), [
    "crc32c_generic",
    "crc32c_intel",
    "ext4",
    "jbd2",
    "mbcache",
    "nvme_core",
    "nvme_tcp",
    "virtio",
    "virtio_blk",
    "virtio_ring",
  ]);
  assert.equal(index.path.get("ext4"), "kernel/fs/ext4/ext4.ko.xz");
});

Deno.test("modules: built-in modules are skipped and unknown ones are errors", () => {
  assert.deepEqual(resolveModules(index, ["configfs"]), []);
  assert.throws(() => resolveModules(index, ["no_such_module"]), /neither a module nor built in/);
});

#!/bin/sh
# mmdebstrap --customize-hook: runs after every package is installed ($1 is the new root).
# Trims what a storage node does not need and makes the tree the same on every build.
set -eu
root="$1"
kver=$(ls "$root/lib/modules" | sort | tail -n 1)
mods="$root/lib/modules/$kver/kernel"
# Kernel modules a headless storage node never loads: sound, graphics beyond the console,
# cameras/TV, wireless, bluetooth, staging drivers. (The framebuffer console stays built in.)
for d in sound drivers/gpu drivers/media drivers/net/wireless net/wireless net/mac80211 \
  drivers/bluetooth net/bluetooth drivers/staging drivers/iio drivers/input/joystick \
  drivers/input/tablet drivers/input/touchscreen drivers/isdn drivers/hid/amd-sfh-hid \
  drivers/infiniband drivers/net/ethernet/mellanox/mlx4 net/sunrpc/xprtrdma drivers/atm \
  drivers/net/can net/can drivers/usb/gadget drivers/platform/chrome drivers/mfd; do
  rm -rf "${mods:?}/$d"
done
chroot "$root" depmod -a "$kver"
# Grow the data partition to the end of the disk in the initramfs, before anything is mounted.
here=$(dirname "$0")
install -m 0755 "$here/../initramfs/hook" "$root/etc/initramfs-tools/hooks/sluice"
install -m 0755 "$here/../initramfs/grow-data" \
  "$root/etc/initramfs-tools/scripts/local-premount/sluice-grow-data"
chroot "$root" update-initramfs -u -k "$kver"
# Host keys are made on the node at first start (docs/install.md), never shipped in the image.
rm -f "$root"/etc/ssh/ssh_host_*
# nvme-cli's postinst makes a random NVMe host identity; per node, and this node is a target:
# without them nvme-cli derives one from the firmware's system UUID when it needs one.
rm -f "$root/etc/nvme/hostid" "$root/etc/nvme/hostnqn"
# Per-node identity is made at boot: an empty machine-id is "not yet initialized".
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Files that differ on each build and that nothing reads at run time.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
  "$root"/var/cache/ldconfig/aux-cache "$root"/etc/initramfs-tools/conf.d/resume
rm -f "$root/etc/hostname"
echo sluice > "$root/etc/hostname"

#!/bin/sh
# Guest side of test/vm/vfio_lab_test.ts: `sluice setup` moves an emulated NVMe controller to
# vfio-pci and back, Deno opens its VFIO group, and the kernel sees the host's data afterwards.
# Two controllers: NVME_BDFS="0000:00:04.0 0000:00:05.0"; the second gets a mounted ext4 so that
# bind must refuse (named) or skip (unnamed) it.
# Env: HOST_TOKEN (written by the host at HOST_TOKEN_AT), GUEST_TOKEN (written here at
# GUEST_TOKEN_AT through the kernel before binding; the host checks its file afterwards).
# Results go to /dev/report as KEY=value lines.
. /sluice/test/vm/guest/vfio_lib.sh
set -u
report() { echo "$*" >/dev/report; }
set -- $NVME_BDFS
A=$1 B=$2

wait_for 10 -n "$(nvme_ns1_of "$A")" || { echo "no namespace on $A"; exit 10; }
wait_for 10 -n "$(nvme_ns1_of "$B")" || { echo "no namespace on $B"; exit 10; }
DEV_A=$(nvme_ns1_of "$A") DEV_B=$(nvme_ns1_of "$B")
report "BEFORE_DRIVER=$(driver_of "$A")"
report "HOST_TOKEN_BEFORE=$(dd if="$DEV_A" bs=4096 skip=$((HOST_TOKEN_AT / 4096)) count=1 2>/dev/null | head -c ${#HOST_TOKEN})"
printf %s "$GUEST_TOKEN" | dd of="$DEV_A" bs=4096 seek=$((GUEST_TOKEN_AT / 4096)) conv=sync oflag=direct 2>/dev/null ||
  { echo "guest write failed"; exit 11; }

mkfs.ext4 -q "$DEV_B" && mkdir -p /mnt/b && mount -t ext4 "$DEV_B" /mnt/b || { echo "mount failed"; exit 12; }

echo "--- deno test runs sluice's unit tests in the guest (offline; type-checked on the host)"
deno test -A --no-check "$SLUICE/appliance/setup_test.ts"; report "DENO_TEST_RC=$?"

echo "--- bind of a mounted device must be refused"
sluice setup bind "$B" 2>/tmp/err; report "BIND_MOUNTED_RC=$?"
cat /tmp/err; grep -q "is mounted on /mnt/b" /tmp/err && report "BIND_MOUNTED_MSG=ok"

echo "--- bad addresses"
deno run -A "$SLUICE/appliance/setup.ts" bind 00:1f.9 2>/dev/null; report "BAD_ADDR_RC=$?"
deno run -A "$SLUICE/appliance/setup.ts" bind 0000:00:00.0 2>/tmp/err; report "NOT_NVME_RC=$?"
cat /tmp/err; grep -q "not an NVMe controller" /tmp/err && report "NOT_NVME_MSG=ok"

echo "--- bind every unused NVMe device"
sluice setup bind; report "BIND_RC=$?"
sluice setup status
deno run -A "$SLUICE/appliance/setup.ts" status --json >/tmp/status.json; report "STATUS_RC=$?"
report "STATUS_BOUND=$(tr -d '\n' </tmp/status.json)"
report "DEV_VFIO_GROUP=$(iommu_group_of "$A")"
ls -l /dev/vfio

echo "--- Deno opens the VFIO group and the device"
deno run -A "$SLUICE/test/vm/guest/vfio_check.ts" "$(iommu_group_of "$A")" "$A" >/tmp/check.json
report "VFIO_CHECK_RC=$?"
report "VFIO_CHECK=$(cat /tmp/check.json)"
dmesg | grep -iE 'DMAR.*fault|vfio' | tail -5

echo "--- unbind refuses while a process holds the group (the kernel would block)"
G=$(iommu_group_of "$A")
exec 9<>"/dev/vfio/$G"
deno run -A "$SLUICE/appliance/setup.ts" unbind "$A" 2>/tmp/err; report "UNBIND_HELD_RC=$?"
cat /tmp/err; grep -q "/dev/vfio/$G is open in pid $$ " /tmp/err && report "UNBIND_HELD_MSG=ok"
exec 9<&-

echo "--- unbind: back to the kernel's nvme driver"
umount /mnt/b
sluice setup unbind "$A"; report "UNBIND_RC=$?"
report "AFTER_DRIVER=$(driver_of "$A")"
wait_for 10 -n "$(nvme_ns1_of "$A")" && report "NS_BACK=$(nvme_ns1_of "$A")"
DEV_A=$(nvme_ns1_of "$A")
report "HOST_TOKEN_AFTER=$(dd if="$DEV_A" bs=4096 skip=$((HOST_TOKEN_AT / 4096)) count=1 iflag=direct 2>/dev/null | head -c ${#HOST_TOKEN})"
report "GUEST_TOKEN_AFTER=$(dd if="$DEV_A" bs=4096 skip=$((GUEST_TOKEN_AT / 4096)) count=1 iflag=direct 2>/dev/null | head -c ${#GUEST_TOKEN})"
sluice setup status
deno run -A "$SLUICE/appliance/setup.ts" unbind; report "UNBIND_NONE_RC=$?"
sync
exit 0

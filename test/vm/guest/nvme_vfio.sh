#!/bin/sh
# Guest side of test/vm/nvme_vfio_test.ts: both emulated NVMe controllers go to vfio-pci, sluice's
# user-space driver runs the conformance suite on the first and the RPC/data test on the second
# (guest/nvme_vfio_in_guest_test.ts), then the second goes back to the kernel, which must read
# what the driver wrote. Results go to /dev/report as KEY=value lines.
. /sluice/test/vm/guest/vfio_lib.sh
set -u
report() { echo "$*" >/dev/report; }
set -- $NVME_BDFS
A=$1 B=$2
wait_for 10 -n "$(nvme_ns1_of "$A")" || { echo "no namespace on $A"; exit 10; }
wait_for 10 -n "$(nvme_ns1_of "$B")" || { echo "no namespace on $B"; exit 10; }

sluice setup bind "$A" "$B"; report "BIND_RC=$?"
report "DRIVERS=$(driver_of "$A"),$(driver_of "$B")"

echo "--- deno test: the driver in the guest"
export NVME_CONF_BDF=$A NVME_DATA_BDF=$B
deno test -A --no-check "$SLUICE/test/vm/guest/nvme_vfio_in_guest_test.ts" >/tmp/test.log 2>&1
report "NVME_TEST_RC=$?"
cat /tmp/test.log
# deno colours its output; strip the escapes for the report.
report "NVME_TEST_SUMMARY=$(sed 's/\x1b\[[0-9;]*m//g' /tmp/test.log | grep -E '^(ok|FAILED) \|' | tail -1)"
sed 's/\x1b\[[0-9;]*m//g' /tmp/test.log | grep -E ' \.\.\. (ok|FAILED)' | sed 's/ ([0-9.]*m\?s)$//' >/tmp/cases
report "NVME_TEST_CASES=$(wc -l </tmp/cases)"
sed 's/\x1b\[[0-9;]*m//g' /tmp/test.log | grep '^NVME_FACT ' | head -3
dmesg | grep -iE 'DMAR.*fault|dmar.*fault' | tail -5
report "DMAR_FAULTS=$(dmesg | grep -ciE 'DMAR.*fault')"

echo "--- the kernel reads what the driver wrote"
sluice setup unbind "$B"; report "UNBIND_RC=$?"
wait_for 10 -n "$(nvme_ns1_of "$B")" || { echo "namespace of $B did not come back"; exit 11; }
DEV_B=$(nvme_ns1_of "$B")
report "GUEST_TOKEN_KERNEL=$(dd if="$DEV_B" bs=4096 skip=$((GUEST_TOKEN_AT / 4096)) count=1 iflag=direct 2>/dev/null | head -c ${#GUEST_TOKEN})"
sync
exit 0

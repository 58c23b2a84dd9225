#!/bin/sh
# Guest side of the unplug test in test/vm/vfio_lab_test.ts: the second controller (behind a PCIe
# root port) is bound to vfio-pci, then the host removes it (QMP device_del) when this script
# prints READY_FOR_UNPLUG; `sluice setup` must then list only the first one.
. /sluice/test/vm/guest/vfio_lib.sh
set -u
report() { echo "$*" >/dev/report; }
set -- $NVME_BDFS
A=$1 B=$2
wait_for 10 -n "$(nvme_ns1_of "$B")" || { echo "no namespace on $B"; exit 10; }
deno run -A "$SLUICE/appliance/setup.ts" bind "$B"; report "BIND_RC=$?"
report "BOUND_DRIVER=$(driver_of "$B")"
echo READY_FOR_UNPLUG
wait_for 60 ! -e "/sys/bus/pci/devices/$B" && report "GONE=1"
deno run -A "$SLUICE/appliance/setup.ts" status --json >/tmp/status.json; report "STATUS_RC=$?"
report "STATUS=$(tr -d '\n' </tmp/status.json)"
deno run -A "$SLUICE/appliance/setup.ts" unbind "$B" 2>/tmp/err; report "UNBIND_GONE_RC=$?"
cat /tmp/err
dmesg | tail -5
exit 0

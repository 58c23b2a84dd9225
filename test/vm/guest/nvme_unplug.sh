#!/bin/sh
# Guest side of the device_del case of test/vm/nvme_vfio_test.ts (guest/nvme_unplug.ts).
. /sluice/test/vm/guest/vfio_lib.sh
set -u
report() { echo "$*" >/dev/report; }
set -- $NVME_BDFS
B=$2
wait_for 10 -n "$(nvme_ns1_of "$B")" || { echo "no namespace on $B"; exit 10; }
deno run -A "$SLUICE/appliance/setup.ts" bind "$B"; report "BIND_RC=$?"
deno run -A "$SLUICE/test/vm/guest/nvme_unplug.ts" "$B"; report "UNPLUG_RC=$?"
wait_for 30 ! -e "/sys/bus/pci/devices/$B" && report "GONE=1"
dmesg | grep -iE 'vfio|pciehp' | tail -8
exit 0

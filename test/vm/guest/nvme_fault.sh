#!/bin/sh
# Guest side of the timeout case of test/vm/nvme_vfio_test.ts (guest/nvme_fault_in_guest_test.ts
# on a throttled controller). Results go to /dev/report as KEY=value lines.
. /sluice/test/vm/guest/vfio_lib.sh
set -u
report() { echo "$*" >/dev/report; }
wait_for 10 -n "$(nvme_ns1_of "$NVME_BDF")" || { echo "no namespace on $NVME_BDF"; exit 10; }
sluice setup bind "$NVME_BDF"; report "BIND_RC=$?"
deno test -A --no-check "$SLUICE/test/vm/guest/nvme_fault_in_guest_test.ts" >/tmp/test.log 2>&1
report "FAULT_TEST_RC=$?"
cat /tmp/test.log
report "FAULT_TEST_SUMMARY=$(sed 's/\x1b\[[0-9;]*m//g' /tmp/test.log | grep -E '^(ok|FAILED) \|' | tail -1)"
exit 0

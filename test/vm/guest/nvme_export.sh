#!/bin/sh
# Guest side of the export case of test/vm/nvme_vfio_test.ts: sluice drives the emulated NVMe at
# NVME_BDF from user space and serves it over NVMe/TCP on 127.0.0.1:4420 (guest/nvme_export.ts);
# the guest's own kernel initiator connects and fio writes with crc32c verify.
# Results go to /dev/report as KEY=value lines.
. /sluice/test/vm/guest/vfio_lib.sh
set -u
report() { echo "$*" >/dev/report; }
NQN=nqn.2016-06.io.sluice:vfio-export
A=$NVME_BDF
wait_for 10 -n "$(nvme_ns1_of "$A")" || { echo "no namespace on $A"; exit 10; }
sluice setup bind "$A"; report "BIND_RC=$?"

deno run -A "$SLUICE/test/vm/guest/nvme_export.ts" "$A" "$NQN" >/tmp/export.log 2>&1 &
PID=$!
wait_for 180 -e /tmp/export.ready || { cat /tmp/export.log; echo "sluice did not start serving"; exit 11; }
report "SERVING=1"

nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" >/tmp/conn.txt 2>&1; report "CONNECT_RC=$?"
cat /tmp/conn.txt
dev=""
i=0
while [ -z "$dev" ] && [ "$i" -lt 200 ]; do
  dev=$(ls /dev/nvme*n1 2>/dev/null | head -1) || true
  [ -n "$dev" ] || sleep 0.1
  i=$((i + 1))
done
report "EXPORT_DEV=$dev"
nvme list
if [ -n "$dev" ]; then
  fio --name=verify --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --numjobs=2 --size=4M --offset_increment=4M --verify=crc32c --do_verify=1 \
    --group_reporting --eta=never --output=/tmp/fio.txt >/dev/null 2>&1
  report "FIO_RC=$?"
  cat /tmp/fio.txt
  grep -q "err= 0" /tmp/fio.txt && report "FIO_ERR0=1"
  fio --name=big --filename="$dev" --ioengine=io_uring --direct=1 --rw=write --bs=256k \
    --iodepth=4 --size=8M --offset=16M --verify=md5 --do_verify=1 --eta=never \
    --output=/tmp/fio2.txt >/dev/null 2>&1
  report "FIO_BIG_RC=$?"
  nvme disconnect -n "$NQN"; report "DISCONNECT_RC=$?"
fi
touch /tmp/export.stop
wait $PID; report "EXPORT_RC=$?"
cat /tmp/export.log
sed 's/\x1b\[[0-9;]*m//g' /tmp/export.log | grep -q "shutdown complete" && report "SHUTDOWN_COMPLETE=1"
sync
exit 0

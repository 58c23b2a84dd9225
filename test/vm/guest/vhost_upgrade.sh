#!/bin/sh
# Guest side of vhost_upgrade_test.ts: fio with verify on a vhost-user-blk disk whose backend (sluice
# on the host) is killed or restarted in the middle of the run. The disk must simply stall while the
# backend is away: fio finishes with no error and every block verifies.
#   NUM_BLOCKS     expected size of /dev/vda in 512-byte sectors
#   FIO_SIZE_MIB   region of each of fio's 4 jobs (job n starts at n * FIO_SIZE_MIB)
# Console: "FIO_RUNNING" just before fio starts, "INFLIGHT r w done n" every
# half second (the block layer's requests in flight on vda, read and write, and how many have
# completed so far; the host acts on these), then STEP lines.
# Report (/dev/report): {"fioRc": N, "fioErr": N, "ioErrors": N, "writeIos": N, "readIos": N}
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }

dev=/dev/vda
for _ in $(seq 100); do [ -b "$dev" ] && break; sleep 0.1; done
[ -b "$dev" ] || fail device "no $dev" 10
size=$(cat /sys/block/vda/size)
[ "$size" = "$NUM_BLOCKS" ] || fail device "size $size, expected $NUM_BLOCKS" 11
step device

# What the block layer has outstanding on the disk, while fio runs (shows the stall).
(while :; do
  echo "INFLIGHT $(cat /sys/block/vda/inflight) done $(awk '{print $1 + $5}' /sys/block/vda/stat)"
  sleep 0.5
done) &
watcher=$!

echo FIO_RUNNING
rc=0
fio --name=upgrade --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
  --iodepth=32 --numjobs=4 --size="${FIO_SIZE_MIB}M" --offset_increment="${FIO_SIZE_MIB}M" \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting --eta=never \
  --output=/tmp/fio.txt >/tmp/fio.stderr 2>&1 || rc=$?
kill "$watcher" 2>/dev/null || true
echo "FIO_DONE rc=$rc"
cat /tmp/fio.stderr
grep -E "IOPS=|err=|verify|issued rwts" /tmp/fio.txt || true

err=$(sed -n 's/.*err= *\([0-9-]*\).*/\1/p' /tmp/fio.txt | head -1)
[ -n "$err" ] || err=-1
# Every I/O error the kernel logged for the disk (the driver's or the block layer's).
ioerr=$(dmesg | grep -ciE "I/O error|blk_update_request|critical medium|vda.*error" || true)
dmesg | grep -iE "I/O error|blk_update_request|vda.*error" || true
writes=$(awk '{print $5}' /sys/block/vda/stat)
reads=$(awk '{print $1}' /sys/block/vda/stat)
printf '{"fioRc": %s, "fioErr": %s, "ioErrors": %s, "writeIos": %s, "readIos": %s}\n' \
  "$rc" "$err" "$ioerr" "$writes" "$reads" >/dev/report

[ "$rc" = 0 ] || fail fio "fio exit $rc: $(tail -20 /tmp/fio.txt)" 50
[ "$err" = 0 ] || fail fio "fio err=$err" 51
step fio
[ "$ioerr" = 0 ] || fail dmesg "$ioerr I/O error line(s) in dmesg" 60
step dmesg
echo ALL_STEPS_OK

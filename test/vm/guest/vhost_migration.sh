#!/bin/sh
# Guest side of vhost_migration_test.ts: Linux's virtio-blk driver on a vhost-user-blk-pci device
# served by sluice, in a guest that the host live-migrates to a second QEMU while fio runs. The
# script starts on the source QEMU and ends on the destination (whose console gets the rest).
#   NUM_BLOCKS     expected size of /dev/vda in 512-byte sectors
#   PATTERN_MIB    offset of a 48 MiB random pattern, in MiB (past fio's regions)
#   FIO_JOBS       fio writer jobs, each on its own FIO_SIZE_MIB region
#   FIO_SIZE_MIB   region of each job
#   FIO_RUNTIME    seconds fio runs (the migration must complete inside them)
# Every step prints STEP <name> OK; the first failure exits non-zero with its step's code.
# FIO_RUNNING tells the host to migrate now; FIO_DONE that fio has ended.
# Report (/dev/report): {"fioErr": N, "rereads": N, "writeIos": N, "verifyIos": N}
PATTERN_BLOCKS=12 # of 4 MiB: a dd of the pattern lasts longer than the migration
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }

dev=/dev/vda
for _ in $(seq 100); do [ -b "$dev" ] && break; sleep 0.1; done
[ -b "$dev" ] || fail device "no $dev; /sys/block: $(ls /sys/block | tr '\n' ' ')" 10
size=$(cat /sys/block/vda/size)
[ "$size" = "$NUM_BLOCKS" ] || fail device "/sys/block/vda/size is $size, expected $NUM_BLOCKS" 11
step device

# 48 MiB of random bytes, written once and read back before the migration.
head -c $((PATTERN_BLOCKS * 4 * 1048576)) /dev/urandom >/tmp/pattern
want=$(md5sum </tmp/pattern | cut -d' ' -f1)
dd if=/tmp/pattern of="$dev" bs=4M seek="$((PATTERN_MIB / 4))" oflag=direct conv=fsync \
  2>/tmp/dd.txt || fail pattern "write: $(cat /tmp/dd.txt)" 20
rm /tmp/pattern
got=$(dd if="$dev" bs=4M count="$PATTERN_BLOCKS" skip="$((PATTERN_MIB / 4))" iflag=direct \
  2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail pattern "read back as $got, wrote $want" 21
echo "pattern md5=$want at $PATTERN_MIB MiB"
step pattern

# fio: random 4k writes at QD32 in FIO_JOBS jobs for FIO_RUNTIME seconds; every 256 writes a job
# reads them back and checks their crc32c headers (verify_backlog), so reads into guest memory
# run all through the migration, and the last blocks are checked when fio ends.
cat >/tmp/job.fio <<EOF
[global]
filename=$dev
ioengine=io_uring
direct=1
bs=4k
iodepth=32
time_based=1
runtime=$FIO_RUNTIME
verify=crc32c
verify_backlog=256
verify_fatal=1
group_reporting=1

[migrate]
rw=randwrite
numjobs=$FIO_JOBS
size=${FIO_SIZE_MIB}M
offset_increment=${FIO_SIZE_MIB}M
EOF
fio /tmp/job.fio --eta=never --output=/tmp/fio.txt >/dev/null 2>&1 &
fio_pid=$!
# Wait until fio has its jobs running and has done I/O (its disk stats move), then tell the host.
reads0=$(awk '{print $1 + $5}' /sys/block/vda/stat)
for _ in $(seq 300); do
  kill -0 "$fio_pid" 2>/dev/null || break
  [ "$(awk '{print $1 + $5}' /sys/block/vda/stat)" -gt "$((reads0 + 1000))" ] && break
  sleep 0.1
done
kill -0 "$fio_pid" 2>/dev/null || { wait "$fio_pid" || true; fail fio "fio ended early: $(tail -20 /tmp/fio.txt)" 30; }

# A reader that reads the pattern back again and again until told to stop. Each dd reads it 1 MiB
# at a time into one buffer that only the device writes (O_DIRECT) and the CPU only reads (the
# pipe to md5sum). The host migrates while the first dd runs, whose buffer the guest touched
# before the migration began: the migration sends it once, and afterwards only sluice's dirty
# log can tell QEMU that it changed. Without that log the destination gets the buffer as it was
# first sent, and the checksum of the dd under way at the switch-over does not match.
reader() {
  n=0
  while [ ! -e /tmp/stop ]; do
    echo "$n" >/tmp/reading
    got=$(dd if="$dev" bs=1M count="$((PATTERN_BLOCKS * 4))" skip="$PATTERN_MIB" iflag=direct \
      2>/tmp/dd.txt | md5sum | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
      echo "pattern read back as $got after $n good reads: $(cat /tmp/dd.txt)" >/tmp/reader.bad
      return 1
    fi
    n=$((n + 1))
    echo "$n" >/tmp/rereads
  done
}
reader &
reader_pid=$!
for _ in $(seq 100); do [ -e /tmp/reading ] && break; sleep 0.1; done
sleep 0.5 # the first dd has its buffer now
echo "FIO_RUNNING"

rc=0
wait "$fio_pid" || rc=$?
touch /tmp/stop
reader_rc=0
wait "$reader_pid" || reader_rc=$?
rereads=$(cat /tmp/rereads 2>/dev/null || echo 0)
echo "FIO_DONE rc=$rc rereads=$rereads"
[ "$rc" = 0 ] || fail fio "fio exit $rc: $(tail -30 /tmp/fio.txt)" 50
grep -q "err= 0" /tmp/fio.txt || fail fio "$(grep -E 'err=|verify' /tmp/fio.txt)" 51
if grep -q "err= *[1-9]" /tmp/fio.txt; then fail fio "$(grep err= /tmp/fio.txt)" 52; fi
grep -E "IOPS=|err=|issued rwts" /tmp/fio.txt || true
step fio
[ "$reader_rc" = 0 ] || fail reread "$(cat /tmp/reader.bad)" 41
[ "$rereads" -gt 1 ] || fail reread "only $rereads pattern reads completed while fio ran" 42
step reread

# fio's "issued rwts: total=R,W,..." line: reads are its verify reads.
totals=$(sed -n 's/.*issued rwts: total=\([0-9]*\),\([0-9]*\),.*/\1 \2/p' /tmp/fio.txt | head -1)
verify_ios=${totals% *}
write_ios=${totals#* }
printf '{"fioErr": 0, "rereads": %s, "writeIos": %s, "verifyIos": %s}\n' \
  "$rereads" "${write_ios:-0}" "${verify_ios:-0}" >/dev/report
echo ALL_STEPS_OK

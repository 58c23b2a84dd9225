#!/bin/sh
# Guest side of vhost_migration_test.ts: Linux's virtio-blk driver on a vhost-user-blk-pci device
# served by sluice, in a guest that the host live-migrates to a second QEMU while fio runs. The
# script starts on the source QEMU and ends on the destination (whose console gets the rest).
#   NUM_BLOCKS     expected size of /dev/vda in 512-byte sectors
#   PATTERN_MIB    offset of two 2 MiB random patterns, A then B, in MiB (past fio's regions)
#   FIO_JOBS       fio writer jobs, each on its own FIO_SIZE_MIB region
#   FIO_SIZE_MIB   region of each job
#   FIO_RUNTIME    seconds fio runs (the migration must complete inside them)
# Every step prints STEP <name> OK; the first failure exits non-zero with its step's code.
# FIO_RUNNING tells the host to migrate now; FIO_DONE that fio has ended.
# Report (/dev/report): {"fioErr": N, "rereads": N, "writeIos": N, "verifyIos": N}
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }

dev=/dev/vda
for _ in $(seq 100); do [ -b "$dev" ] && break; sleep 0.1; done
[ -b "$dev" ] || fail device "no $dev; /sys/block: $(ls /sys/block | tr '\n' ' ')" 10
size=$(cat /sys/block/vda/size)
[ "$size" = "$NUM_BLOCKS" ] || fail device "/sys/block/vda/size is $size, expected $NUM_BLOCKS" 11
step device

# Two different 2 MiB patterns: the reader below alternates between them, so a stale page left
# by a read that was not logged holds the other pattern (or older bytes), never the right one.
for p in a b; do
  dd if=/dev/urandom of=/tmp/pattern.$p bs=1M count=2 2>/dev/null
done
sha_a=$(sha256sum /tmp/pattern.a | cut -d' ' -f1)
sha_b=$(sha256sum /tmp/pattern.b | cut -d' ' -f1)
dd if=/tmp/pattern.a of="$dev" bs=1M seek="$PATTERN_MIB" oflag=direct conv=fsync 2>/tmp/dd.txt ||
  fail pattern "write A: $(cat /tmp/dd.txt)" 20
dd if=/tmp/pattern.b of="$dev" bs=1M seek="$((PATTERN_MIB + 2))" oflag=direct conv=fsync \
  2>/tmp/dd.txt || fail pattern "write B: $(cat /tmp/dd.txt)" 21
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
echo "FIO_RUNNING"

# Meanwhile, read the patterns back again and again (1 MiB O_DIRECT reads into fresh buffers).
rereads=0
while kill -0 "$fio_pid" 2>/dev/null; do
  if [ $((rereads % 2)) = 0 ]; then p=a; skip=$PATTERN_MIB; want=$sha_a
  else p=b; skip=$((PATTERN_MIB + 2)); want=$sha_b; fi
  dd if="$dev" of=/tmp/back bs=1M count=2 skip="$skip" iflag=direct 2>/tmp/dd.txt ||
    fail reread "dd: $(cat /tmp/dd.txt)" 40
  got=$(sha256sum /tmp/back | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail reread "pattern $p read back $got after $rereads reads" 41
  rereads=$((rereads + 1))
done
rc=0
wait "$fio_pid" || rc=$?
echo "FIO_DONE rc=$rc rereads=$rereads"
[ "$rc" = 0 ] || fail fio "fio exit $rc: $(tail -30 /tmp/fio.txt)" 50
grep -q "err= 0" /tmp/fio.txt || fail fio "$(grep -E 'err=|verify' /tmp/fio.txt)" 51
if grep -q "err= *[1-9]" /tmp/fio.txt; then fail fio "$(grep err= /tmp/fio.txt)" 52; fi
grep -E "IOPS=|err=|issued rwts" /tmp/fio.txt || true
step fio
[ "$rereads" -gt 0 ] || fail reread "no pattern read completed while fio ran" 42
step reread

# fio's "issued rwts: total=R,W,..." line: reads are its verify reads.
totals=$(sed -n 's/.*issued rwts: total=\([0-9]*\),\([0-9]*\),.*/\1 \2/p' /tmp/fio.txt | head -1)
verify_ios=${totals% *}
write_ios=${totals#* }
printf '{"fioErr": 0, "rereads": %s, "writeIos": %s, "verifyIos": %s}\n' \
  "$rereads" "${write_ios:-0}" "${verify_ios:-0}" >/dev/report
echo ALL_STEPS_OK

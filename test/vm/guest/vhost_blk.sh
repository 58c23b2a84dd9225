#!/bin/sh
# Guest side of vhost_blk_test.ts: Linux's virtio-blk driver on a vhost-user-blk-pci device whose
# backend is sluice on the host (a vhost-user controller over a malloc bdev).
#   NUM_BLOCKS     expected size of /dev/vda in 512-byte sectors
#   NUM_QUEUES     virtqueues QEMU was given (num-queues); with smp >= NUM_QUEUES the driver
#                  makes one blk-mq hardware queue per virtqueue
#   PATTERN_MIB    offset of the 4 MiB random pattern, in MiB (past fio's region)
#   FIO_SIZE_MIB   size of each of fio's two jobs' regions (job 1 starts where job 0 ends)
#   MODE           "write": every step below; "reread": size and queues, then read the pattern
#                  back and compare it with EXPECT_SHA (written by an earlier guest)
#   EXPECT_SHA     sha256 of the pattern (MODE=reread)
# Every step prints STEP <name> OK; the first failure exits non-zero with its step's code.
# Report (/dev/report): {"sizeBlocks": N, "queues": N, "patternSha256": "...", "fioErr": N}
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }

dev=/dev/vda
for _ in $(seq 100); do [ -b "$dev" ] && break; sleep 0.1; done
[ -b "$dev" ] || fail device "no $dev; /sys/block: $(ls /sys/block | tr '\n' ' ')" 10
step device

size=$(cat /sys/block/vda/size)
[ "$size" = "$NUM_BLOCKS" ] || fail size "/sys/block/vda/size is $size, expected $NUM_BLOCKS" 20
lbs=$(cat /sys/block/vda/queue/logical_block_size)
[ "$lbs" = 512 ] || fail size "logical_block_size is $lbs, expected 512" 21
echo "$dev: $size sectors ($((size / 2048)) MiB), logical block $lbs"
step size

# VIRTIO_BLK_F_MQ and num_queues come from the backend's features and config space: without MQ
# the driver uses one queue whatever QEMU's num-queues says.
queues=$(ls /sys/block/vda/mq | wc -l)
[ "$queues" = "$NUM_QUEUES" ] || fail queues "$queues blk-mq queues, expected $NUM_QUEUES" 30
step queues


if [ "$MODE" = reread ]; then
  echo 3 >/proc/sys/vm/drop_caches
  dd if="$dev" of=/tmp/back bs=1M count=4 skip="$PATTERN_MIB" iflag=direct 2>/tmp/dd.txt ||
    fail reread "dd: $(cat /tmp/dd.txt)" 70
  got=$(sha256sum /tmp/back | cut -d' ' -f1)
  [ "$got" = "$EXPECT_SHA" ] || fail reread "pattern sha256 $got, expected $EXPECT_SHA" 71
  step reread
  printf '{"sizeBlocks": %s, "queues": %s, "patternSha256": "%s"}\n' "$size" "$queues" "$got" \
    >/dev/report
  echo ALL_STEPS_OK
  exit 0
fi

# 4 MiB of random bytes at PATTERN_MIB, written and read back with O_DIRECT (the page cache is
# dropped as well, so the read must come from the backend).
dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null
sha=$(sha256sum /tmp/pattern | cut -d' ' -f1)
dd if=/tmp/pattern of="$dev" bs=1M seek="$PATTERN_MIB" oflag=direct conv=fsync 2>/tmp/dd.txt ||
  fail pattern "write: $(cat /tmp/dd.txt)" 40
echo 3 >/proc/sys/vm/drop_caches
dd if="$dev" of=/tmp/back bs=1M count=4 skip="$PATTERN_MIB" iflag=direct 2>/tmp/dd.txt ||
  fail pattern "read: $(cat /tmp/dd.txt)" 41
got=$(sha256sum /tmp/back | cut -d' ' -f1)
[ "$got" = "$sha" ] || fail pattern "read back sha256 $got, wrote $sha" 42
echo "pattern sha256=$sha at $PATTERN_MIB MiB"
step pattern

# Two jobs of 4k random writes at QD16 on adjacent regions, then fio reads every block back and
# checks its crc32c header.
fio --name=verify --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
  --iodepth=16 --numjobs=2 --size="${FIO_SIZE_MIB}M" --offset_increment="${FIO_SIZE_MIB}M" \
  --verify=crc32c --do_verify=1 --group_reporting --eta=never --output=/tmp/fio.txt \
  >/dev/null 2>&1 || fail fio "$(tail -20 /tmp/fio.txt)" 50
grep -q "err= 0" /tmp/fio.txt || fail fio "$(grep err= /tmp/fio.txt)" 51
if grep -q "err= *[1-9]" /tmp/fio.txt; then fail fio "$(grep err= /tmp/fio.txt)" 52; fi
grep -E "IOPS=|err=" /tmp/fio.txt || true
step fio

# The pattern is outside fio's region: still there after fio.
dd if="$dev" of=/tmp/back bs=1M count=4 skip="$PATTERN_MIB" iflag=direct 2>/dev/null
[ "$(sha256sum /tmp/back | cut -d' ' -f1)" = "$sha" ] || fail after-fio "pattern changed" 60
step after-fio

printf '{"sizeBlocks": %s, "queues": %s, "patternSha256": "%s", "fioErr": 0}\n' \
  "$size" "$queues" "$sha" >/dev/report
echo ALL_STEPS_OK

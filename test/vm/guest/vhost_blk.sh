#!/bin/sh
# Guest side of vhost_blk_test.ts: Linux's virtio-blk driver on a vhost-user-blk-pci device whose
# backend is sluice on the host (a vhost-user controller over a malloc bdev).
#   NUM_BLOCKS     expected size of /dev/vda in 512-byte sectors
#   NUM_QUEUES     virtqueues QEMU was given (num-queues); with smp >= NUM_QUEUES the driver
#                  makes one blk-mq hardware queue per virtqueue
#   PATTERN_MIB    offset of the 4 MiB random pattern, in MiB (past fio's region)
#   FIO_SIZE_MIB   size of each of fio's two jobs' regions (job 1 starts where job 0 ends)
#   ZERO_MIB       3 MiB for the discard, write-zeroes and write-through checks
#   FS_MIB         start of the 40 MiB ext4 filesystem (on a loop device at that offset)
#   MODE           "write": every step below; "reread": size and queues, then read the pattern
#                  back and compare it with EXPECT_SHA (written by an earlier guest)
#   EXPECT_SHA     sha256 of the pattern (MODE=reread)
# Every step prints STEP <name> OK; the first failure exits non-zero with its step's code.
# Report (/dev/report): {"sizeBlocks": N, "queues": N, "patternSha256": "...", "fsSha256": "...",
# "fioErr": N} (fsSha256: of the sha256sum listing of the filesystem's files)
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
  losetup -o $((FS_MIB << 20)) /dev/loop0 "$dev" || fail refs "losetup" 72
  mkdir -p /mnt/v
  mount -t ext4 /dev/loop0 /mnt/v || fail refs "mount" 73
  (cd /mnt/v && sha256sum f1 f2 f3) >/tmp/sums
  umount /mnt/v
  fs_sha=$(sha256sum /tmp/sums | cut -d' ' -f1)
  step refs
  printf '{"sizeBlocks": %s, "queues": %s, "patternSha256": "%s", "fsSha256": "%s"}\n' \
    "$size" "$queues" "$got" "$fs_sha" >/dev/report
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

# DISCARD and WRITE_ZEROES (blkdiscard -z is BLKZEROOUT, sent as WRITE_ZEROES when the device offers
# it): 1 MiB each at ZERO_MIB and ZERO_MIB+1, random first, then read back as zeroes.
wz=$(cat /sys/block/vda/queue/write_zeroes_max_bytes)
dz=$(cat /sys/block/vda/queue/discard_max_bytes)
[ "$wz" -gt 0 ] && [ "$dz" -gt 0 ] || fail zeroes "discard_max_bytes $dz, write_zeroes_max_bytes $wz" 61
dd if=/dev/urandom of="$dev" bs=1M count=2 seek="$ZERO_MIB" oflag=direct 2>/dev/null
/usr/sbin/blkdiscard -f -o $((ZERO_MIB << 20)) -l $((1 << 20)) "$dev" || fail zeroes "blkdiscard" 62
/usr/sbin/blkdiscard -f -z -o $(((ZERO_MIB + 1) << 20)) -l $((1 << 20)) "$dev" ||
  fail zeroes "blkdiscard -z" 63
dd if=/dev/zero of=/tmp/zero bs=1M count=2 2>/dev/null
dd if="$dev" of=/tmp/z bs=1M count=2 skip="$ZERO_MIB" iflag=direct 2>/dev/null
cmp -s /tmp/z /tmp/zero || fail zeroes "discarded / zeroed range does not read back as zeroes" 64
step zeroes

# The cache mode (VIRTIO_BLK_F_CONFIG_WCE): write back from the backend, switched to write through
# (QEMU forwards it with SET_CONFIG; sluice then flushes after each write).
[ "$(cat /sys/block/vda/cache_type)" = "write back" ] ||
  fail cache "cache_type is $(cat /sys/block/vda/cache_type)" 65
echo "write through" >/sys/block/vda/cache_type
[ "$(cat /sys/block/vda/cache_type)" = "write through" ] || fail cache "cache_type not switched" 66
dd if=/dev/urandom of="$dev" bs=4k count=64 seek=$(((ZERO_MIB + 2) * 256)) oflag=direct 2>/dev/null ||
  fail cache "write in write-through mode" 67
echo "write back" >/sys/block/vda/cache_type
step cache

# ext4 on a loop device over [FS_MIB, FS_MIB + 40 MiB) of the disk (the pattern stays where it
# is): files written, checksummed, unmounted; the next guest mounts it and checks them.
losetup -o $((FS_MIB << 20)) /dev/loop0 "$dev" || fail filesystem "losetup" 70
mkfs.ext4 -q -F /dev/loop0 40M >/tmp/mkfs.txt 2>&1 || fail filesystem "$(cat /tmp/mkfs.txt)" 71
mkdir -p /mnt/v
mount -t ext4 /dev/loop0 /mnt/v || fail filesystem "mount" 72
for i in 1 2 3; do dd if=/dev/urandom of=/mnt/v/f$i bs=64k count=$((i * 8)) 2>/dev/null; done
(cd /mnt/v && sha256sum f1 f2 f3) >/tmp/sums
umount /mnt/v
losetup -d /dev/loop0
fs_sha=$(sha256sum /tmp/sums | cut -d' ' -f1)
step filesystem

printf '{"sizeBlocks": %s, "queues": %s, "patternSha256": "%s", "fsSha256": "%s", "fioErr": 0}\n' \
  "$size" "$queues" "$sha" "$fs_sha" >/dev/report
echo ALL_STEPS_OK

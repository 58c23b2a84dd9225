#!/bin/sh
# Guest side of crypto_test.ts: an ext4 filesystem on an encrypted sluice volume (crypto bdev over
# a file bdev), exported as a vhost-user-blk device (/dev/vda) or over NVMe/TCP (/dev/nvme0n1).
#   EXPORT       "vhost" or "nvmf"; for nvmf: ADDR PORT NQN of the target
#   MODE         "write": mkfs.ext4 (which discards the device first), mount, write a text file of
#                a known marker and 8 MiB of random bytes, unmount; "verify": mount and check both
#                against EXPECT_MARKER_SHA and EXPECT_SHA (written by an earlier guest).
# Every step prints STEP <name> OK; the first failure exits non-zero with its step's code.
# Report (/dev/report): {"markerSha256": "...", "randomSha256": "..."}
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }

if [ "$EXPORT" = nvmf ]; then
  dev=/dev/nvme0n1
  nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" >/tmp/conn.txt 2>&1 ||
    fail device "nvme connect: $(cat /tmp/conn.txt)" 11
else
  dev=/dev/vda
fi
for _ in $(seq 200); do [ -b "$dev" ] && break; sleep 0.1; done
[ -b "$dev" ] || fail device "no $dev; /sys/block: $(ls /sys/block | tr '\n' ' ')" 10
step device
mkdir -p /mnt/c

if [ "$MODE" = write ]; then
  mkfs.ext4 -q -F "$dev" >/tmp/mkfs.txt 2>&1 || fail mkfs "$(cat /tmp/mkfs.txt)" 20
  step mkfs
  mount -t ext4 "$dev" /mnt/c || fail mount "mount after mkfs" 21
  step mount
  yes SLUICE-PLAINTEXT-MARKER | head -c 4194304 >/mnt/c/marker.txt
  dd if=/dev/urandom of=/mnt/c/random.bin bs=1M count=8 2>/dev/null
  sync
  marker=$(sha256sum /mnt/c/marker.txt | cut -d' ' -f1)
  random=$(sha256sum /mnt/c/random.bin | cut -d' ' -f1)
  umount /mnt/c || fail write "umount" 30
  # Read back through the device after dropping caches: the data comes from the backend.
  echo 3 >/proc/sys/vm/drop_caches
  mount -t ext4 -o ro "$dev" /mnt/c || fail write "remount" 31
  [ "$(sha256sum /mnt/c/random.bin | cut -d' ' -f1)" = "$random" ] || fail write "random.bin differs" 32
  umount /mnt/c
  step write
else
  mount -t ext4 "$dev" /mnt/c || fail mount "mount after restart" 40
  step mount
  marker=$(sha256sum /mnt/c/marker.txt | cut -d' ' -f1)
  random=$(sha256sum /mnt/c/random.bin | cut -d' ' -f1)
  [ "$marker" = "$EXPECT_MARKER_SHA" ] || fail verify "marker.txt sha256 $marker" 41
  [ "$random" = "$EXPECT_SHA" ] || fail verify "random.bin sha256 $random" 42
  umount /mnt/c
  step verify
fi

if [ "$EXPORT" = nvmf ]; then nvme disconnect -n "$NQN" >/dev/null 2>&1 || true; fi
printf '{"markerSha256": "%s", "randomSha256": "%s"}\n' "$marker" "$random" >/dev/report
echo ALL_STEPS_OK

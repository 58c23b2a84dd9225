#!/bin/sh
# Guest side of smoke_test.ts: fio on /dev/vda (virtio-blk backed by a host file), then a data
# pattern the host looks for in its file after the guest has exited.
#   TOKEN          hex string from the host, written at the start of the pattern
#   PATTERN_MIB    offset of the 1 MiB pattern on the disk, in MiB (outside fio's region)
#   FIO_SIZE_MIB   size of fio's region at offset 0
# Report (/dev/report): {"patternSha256": "...", "fio": <fio JSON output>}
set -eu
dev=/dev/vda
for _ in $(seq 50); do [ -b "$dev" ] && break; sleep 0.1; done
[ -b "$dev" ] || { echo "no $dev"; ls /sys/block; exit 2; }
echo "$dev: $(($(cat /sys/block/vda/size) / 2048)) MiB"

# Random 4 KiB writes with QD16, then fio reads everything back and checks the crc32c headers.
fio --name=smoke --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
  --iodepth=16 --size="${FIO_SIZE_MIB}M" --verify=crc32c --do_verify=1 \
  --eta=never --output-format=json --output=/tmp/fio.json

# 1 MiB of random bytes that starts with the host's token, written past fio's region.
dd if=/dev/urandom of=/tmp/pattern bs=64k count=16 2>/dev/null
printf '%s' "$TOKEN" | dd of=/tmp/pattern conv=notrunc 2>/dev/null
dd if=/tmp/pattern of="$dev" bs=1M seek="$PATTERN_MIB" oflag=direct conv=fsync 2>/dev/null
sha=$(sha256sum /tmp/pattern | cut -d' ' -f1)
echo "pattern sha256=$sha at ${PATTERN_MIB} MiB"

{
  printf '{"patternSha256": "%s", "fio": ' "$sha"
  cat /tmp/fio.json
  printf '}\n'
} >/dev/report

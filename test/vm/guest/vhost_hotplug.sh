#!/bin/sh
# Guest side of vhost_hotplug_test.ts: I/O on a vhost-user-blk disk before and after the host
# hot-adds a memory DIMM (a shared memfd the vhost-user backend gets with ADD_MEM_REG).
#   NUM_BLOCKS   expected size of /dev/vda in 512-byte sectors
# Prints HOTPLUG_NOW when the host should add the DIMM, then waits for its memory blocks; then
# UNPLUG_NOW when the host should delete it, and waits for the blocks to go.
# Every step prints STEP <name> OK; the first failure exits non-zero with its step's code.
# Report (/dev/report): {"blocksBefore": N, "blocksAfter": N, "memKiBBefore": N, "memKiBAfter": N}
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }
blocks() { ls -d /sys/devices/system/memory/memory[0-9]* | wc -l; }
memkib() { awk '/^MemTotal:/ { print $2 }' /proc/meminfo; }

dev=/dev/vda
for _ in $(seq 100); do [ -b "$dev" ] && break; sleep 0.1; done
[ -b "$dev" ] || fail device "no $dev" 10
size=$(cat /sys/block/vda/size)
[ "$size" = "$NUM_BLOCKS" ] || fail device "/sys/block/vda/size is $size, expected $NUM_BLOCKS" 11
step device

# A 4 MiB pattern written and read back with O_DIRECT (the page cache is not the disk).
head -c 4194304 /dev/urandom >/tmp/a
dd if=/tmp/a of="$dev" bs=1M oflag=direct 2>/tmp/dd.txt || fail before "dd: $(cat /tmp/dd.txt)" 20
dd if="$dev" of=/tmp/a2 bs=1M count=4 iflag=direct 2>/tmp/dd.txt ||
  fail before "dd: $(cat /tmp/dd.txt)" 21
[ "$(sha256sum </tmp/a)" = "$(sha256sum </tmp/a2)" ] || fail before "pattern differs" 22
step before

blocks_before=$(blocks)
mem_before=$(memkib)
echo "memory blocks $blocks_before, MemTotal $mem_before kB"
echo HOTPLUG_NOW
# The DIMM arrives through ACPI as new (offline) memory blocks.
for _ in $(seq 900); do [ "$(blocks)" -gt "$blocks_before" ] && break; sleep 0.2; done
blocks_after=$(blocks)
[ "$blocks_after" -gt "$blocks_before" ] || fail hotplug "no new memory blocks" 30
for m in /sys/devices/system/memory/memory[0-9]*; do
  if [ "$(cat "$m/state")" = offline ]; then
    echo online_movable >"$m/state" 2>/dev/null || echo online >"$m/state" || true
  fi
done
mem_after=$(memkib)
echo "memory blocks $blocks_after, MemTotal $mem_after kB"
[ "$mem_after" -gt "$mem_before" ] || fail hotplug "MemTotal did not grow" 31
step hotplug

# More I/O than the old free memory could hold in one go, so buffers land in the new memory too.
head -c 67108864 /dev/urandom >/tmp/b
dd if=/tmp/b of="$dev" bs=16M seek=1 oflag=direct 2>/tmp/dd.txt ||
  fail after "dd: $(cat /tmp/dd.txt)" 40
dd if="$dev" of=/tmp/b2 bs=16M skip=1 count=4 iflag=direct 2>/tmp/dd.txt ||
  fail after "dd: $(cat /tmp/dd.txt)" 41
[ "$(sha256sum </tmp/b)" = "$(sha256sum </tmp/b2)" ] || fail after "pattern differs" 42
dd if="$dev" of=/tmp/a3 bs=1M count=4 iflag=direct 2>/tmp/dd.txt ||
  fail after "dd: $(cat /tmp/dd.txt)" 43
[ "$(sha256sum </tmp/a)" = "$(sha256sum </tmp/a3)" ] || fail after "first pattern differs" 44
step after

# Hot-unplug: the host deletes the DIMM, the kernel offlines and ejects its memory (ACPI).
rm -f /tmp/b /tmp/b2
echo UNPLUG_NOW
for _ in $(seq 900); do [ "$(blocks)" -le "$blocks_before" ] && break; sleep 0.2; done
blocks_unplugged=$(blocks)
[ "$blocks_unplugged" -le "$blocks_before" ] || fail unplug "still $blocks_unplugged blocks" 50
head -c 8388608 /dev/urandom >/tmp/c
dd if=/tmp/c of="$dev" bs=1M seek=100 oflag=direct 2>/tmp/dd.txt ||
  fail unplug "dd: $(cat /tmp/dd.txt)" 51
dd if="$dev" of=/tmp/c2 bs=1M skip=100 count=8 iflag=direct 2>/tmp/dd.txt ||
  fail unplug "dd: $(cat /tmp/dd.txt)" 52
[ "$(sha256sum </tmp/c)" = "$(sha256sum </tmp/c2)" ] || fail unplug "pattern differs" 53
step unplug

printf '{"blocksBefore": %s, "blocksAfter": %s, "memKiBBefore": %s, "memKiBAfter": %s}\n' \
  "$blocks_before" "$blocks_after" "$mem_before" "$mem_after" >/dev/report
echo ALL_STEPS_OK

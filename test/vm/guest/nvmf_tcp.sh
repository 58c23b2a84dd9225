#!/bin/sh
# Guest side of nvmf_tcp_test.ts: Linux's nvme-tcp initiator and nvme-cli against sluice on the
# host (reached as 10.0.2.2 through QEMU's user network).
#   ADDR PORT NQN   the target
#   DIGEST          "" or "--hdr-digest --data-digest"
#   CTL_PORT        host control port: the guest asks the host to add a namespace at runtime
# Every step prints STEP <name> OK; the first failure exits non-zero with its step's code.
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }

wait_dev() { # wait_dev PATH SECONDS
  i=0
  while [ ! -b "$1" ] && [ "$i" -lt "$(($2 * 10))" ]; do sleep 0.1; i=$((i + 1)); done
  [ -b "$1" ]
}

nvme discover -t tcp -a "$ADDR" -s "$PORT" >/tmp/disc.txt 2>&1 || fail discover "$(cat /tmp/disc.txt)" 10
grep -q "subnqn: *$NQN" /tmp/disc.txt || fail discover "no $NQN in: $(cat /tmp/disc.txt)" 11
grep -q "trtype: *tcp" /tmp/disc.txt || fail discover "no tcp entry" 12
step discover

# shellcheck disable=SC2086
nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" $DIGEST >/tmp/conn.txt 2>&1 ||
  fail connect "$(cat /tmp/conn.txt)" 20
wait_dev /dev/nvme0n1 20 || fail connect "no /dev/nvme0n1" 21
step connect

nvme list >/tmp/list.txt 2>&1 || fail list "$(cat /tmp/list.txt)" 30
grep -q nvme0n1 /tmp/list.txt || fail list "$(cat /tmp/list.txt)" 31
nvme id-ctrl /dev/nvme0 >/tmp/idc.txt 2>&1 || fail id-ctrl "$(cat /tmp/idc.txt)" 32
grep -q "subnqn *: *$NQN" /tmp/idc.txt || fail id-ctrl "subnqn missing: $(grep subnqn /tmp/idc.txt)" 33
grep -q "^mn *: *sluice" /tmp/idc.txt || fail id-ctrl "model: $(grep '^mn' /tmp/idc.txt)" 34
nvme id-ns /dev/nvme0n1 >/tmp/idns.txt 2>&1 || fail id-ns "$(cat /tmp/idns.txt)" 35
grep -q "^nsze *: *$NSZE" /tmp/idns.txt || fail id-ns "nsze: $(grep '^nsze' /tmp/idns.txt)" 36
step identify

fio --name=verify --filename=/dev/nvme0n1 --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
  --iodepth=32 --numjobs=4 --size=4M --offset_increment=4M --verify=crc32c --do_verify=1 \
  --group_reporting --eta=never --output=/tmp/fio.txt >/dev/null 2>&1 ||
  fail fio "$(tail -20 /tmp/fio.txt)" 40
grep -q "err= 0" /tmp/fio.txt || fail fio "$(grep err= /tmp/fio.txt)" 41
step fio

mkfs.ext4 -q -F /dev/nvme0n1 >/tmp/mkfs.txt 2>&1 || fail mkfs "$(cat /tmp/mkfs.txt)" 50
mkdir -p /mnt/n
mount -t ext4 /dev/nvme0n1 /mnt/n || fail mount "mount" 51
for i in 1 2 3 4; do dd if=/dev/urandom of=/mnt/n/f$i bs=64k count=$((i * 4)) 2>/dev/null; done
(cd /mnt/n && sha256sum f1 f2 f3 f4) >/tmp/sums
umount /mnt/n
nvme disconnect -n "$NQN" >/dev/null 2>&1 || fail reconnect "disconnect" 52
i=0; while [ -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# shellcheck disable=SC2086
nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" $DIGEST >/tmp/conn.txt 2>&1 ||
  fail reconnect "$(cat /tmp/conn.txt)" 53
# The namespace's block device appears asynchronously (the kernel scans after connect returns):
# wait for it rather than listing /dev once.
dev=""
i=0
while [ -z "$dev" ] && [ "$i" -lt 200 ]; do
  dev=$(ls /dev/nvme*n1 2>/dev/null | head -1) || true
  [ -n "$dev" ] || sleep 0.1
  i=$((i + 1))
done
[ -n "$dev" ] && [ -b "$dev" ] ||
  fail reconnect "no namespace after reconnect: $(ls /dev/nvme* 2>&1 | tr '\n' ' ')" 54
mount -t ext4 "$dev" /mnt/n || fail reconnect "mount after reconnect" 55
(cd /mnt/n && sha256sum -c /tmp/sums) >/tmp/check.txt 2>&1 || fail filesystem "$(cat /tmp/check.txt)" 56
umount /mnt/n
step filesystem

# Discard 1 MiB at 64 MiB (written by mkfs or not, write it first) and read back zeroes.
dd if=/dev/urandom of="$dev" bs=1M count=1 seek=64 oflag=direct 2>/dev/null
/usr/sbin/blkdiscard -f -o $((64 << 20)) -l $((1 << 20)) "$dev" || fail discard "blkdiscard" 60
dd if="$dev" of=/tmp/z bs=1M count=1 skip=64 iflag=direct 2>/dev/null
dd if=/dev/zero of=/tmp/zero bs=1M count=1 2>/dev/null
cmp -s /tmp/z /tmp/zero || fail discard "discarded range is not zero" 61
step discard

# A namespace added at runtime appears without reconnecting (the AER path).
ns2=${dev%n1}n2
echo add_ns | nc "$ADDR" "$CTL_PORT" >/tmp/ctl.txt 2>&1 || fail hotadd "control port: $(cat /tmp/ctl.txt)" 70
grep -q ok /tmp/ctl.txt || fail hotadd "host said: $(cat /tmp/ctl.txt)" 71
wait_dev "$ns2" 30 || fail hotadd "no $ns2: $(ls /dev/nvme* | tr '\n' ' ')" 72
[ "$(cat /sys/block/$(basename "$ns2")/size)" = 16384 ] || fail hotadd "$ns2 has the wrong size" 73
step hotadd

nvme disconnect -n "$NQN" >/dev/null 2>&1 || fail disconnect "disconnect" 80
step disconnect
echo ALL_STEPS_OK

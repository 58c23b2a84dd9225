#!/bin/sh
# Lab guest side of image/boot_test.ts: Linux's NVMe/TCP initiator against the appliance VM's
# export, reached through the host (10.0.2.2) on the port QEMU forwards to the appliance.
#   ADDR PORT NQN  the target
#   MODE           write: fio writes the region with crc32c headers and verifies it;
#                  verify: fio only verifies what an earlier write run left (after a reboot)
# Prints STEP <name> OK; the first failure exits non-zero.
set -eu
fail() { echo "STEP $1 FAILED: $2"; exit "$3"; }
step() { echo "STEP $1 OK"; }

nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" >/tmp/conn.txt 2>&1 ||
  fail connect "$(cat /tmp/conn.txt)" 20
i=0
while [ ! -b /dev/nvme0n1 ] && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || fail connect "no /dev/nvme0n1" 21
nvme id-ctrl /dev/nvme0 >/tmp/idc.txt 2>&1 || fail identify "$(cat /tmp/idc.txt)" 22
grep -q "subnqn *: *$NQN" /tmp/idc.txt || fail identify "$(grep subnqn /tmp/idc.txt)" 23
step connect

# The same job both times (fixed seed), so the verify run checks the blocks the write run left.
job="--name=img --filename=/dev/nvme0n1 --ioengine=libaio --direct=1 --bs=4k --iodepth=16
  --size=32M --rw=randwrite --randrepeat=1 --randseed=8 --verify=crc32c --verify_fatal=1
  --group_reporting --eta=never --output=/tmp/fio.txt"
if [ "$MODE" = write ]; then
  # shellcheck disable=SC2086
  fio $job --do_verify=1 >/dev/null 2>&1 || fail fio "$(tail -20 /tmp/fio.txt)" 40
else
  # shellcheck disable=SC2086
  fio $job --verify_only >/dev/null 2>&1 || fail fio "$(tail -20 /tmp/fio.txt)" 40
fi
grep -q "err= 0" /tmp/fio.txt || fail fio "$(grep err= /tmp/fio.txt)" 41
step "fio-$MODE"

nvme disconnect -n "$NQN" >/tmp/disc.txt 2>&1 || fail disconnect "$(cat /tmp/disc.txt)" 50
step disconnect

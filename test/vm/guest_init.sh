#!/bin/sh
# /init of the sluice guest lab (busybox; packed into the base piece by test/vm/setup.ts).
#
# Kernel command line knobs (set by test/vm/guest.ts):
#   sluice.mods=a,b   modules to load before the test
#   sluice.net=1      eth0 = 10.0.2.15/24, default route via 10.0.2.2 (QEMU user networking;
#                     the host's 127.0.0.1 is 10.0.2.2)
#
# Runs /test.sh from /root with the variables of /guest.env, prints SLUICE_GUEST_EXIT=<rc>, and
# makes QEMU exit with status 2*rc+1 by writing rc to the isa-debug-exit port (0xf4).
# /dev/report is the second serial port in raw mode: the host returns what is written there as
# the run's report (clean of kernel messages).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

uptime_s() { cut -d' ' -f1 /proc/uptime; }
echo "SLUICE_GUEST_INIT uptime=$(uptime_s)"

# Wait until the serial ports have sent what was written to them: busybox stty sets the
# attributes with TCSADRAIN, which blocks until the output queue is empty.
drain() {
  stty -F /dev/console -echo 2>/dev/null
  [ -c /dev/report ] && stty -F /dev/report raw -echo 2>/dev/null
}

finish() {
  echo "SLUICE_GUEST_EXIT=$1 uptime=$(uptime_s)"
  sync
  drain
  # isa-debug-exit: QEMU exits with status (value << 1) | 1
  printf "\\$(printf %03o $(($1 & 255)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
  poweroff -f
}

mods="" net=0
for arg in $(cat /proc/cmdline); do
  case $arg in
    sluice.mods=*) mods=${arg#*=} ;;
    sluice.net=*) net=${arg#*=} ;;
  esac
done

ip link set lo up
for m in $(echo "$mods" | tr , ' '); do
  modprobe "$m" || echo "SLUICE_GUEST_WARN modprobe $m failed"
done

if [ "$net" = 1 ]; then
  modprobe virtio_pci
  modprobe virtio_net
  for _ in $(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.02; done
  if ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; then
    echo "nameserver 10.0.2.3" >/etc/resolv.conf
  else
    echo "SLUICE_GUEST_WARN network setup failed"
  fi
fi

if stty -F /dev/ttyS1 raw -echo 2>/dev/null; then
  ln -s ttyS1 /dev/report
fi

if [ -x /usr/bin/deno ]; then
  export DENO_DIR=/tmp/deno-dir NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
fi

echo "SLUICE_GUEST_READY uptime=$(uptime_s)"

if [ ! -x /test.sh ]; then
  echo "SLUICE_GUEST_NO_TEST: /test.sh is missing (initramfs unpacking failed? too little RAM?)"
  dmesg | grep -i -e initramfs -e initrd
  finish 125
fi

[ -f /guest.env ] && . /guest.env
cd /root && /test.sh
finish $?

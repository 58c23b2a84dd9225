# Shell helpers for VFIO lab scripts (test/vm/vfio.ts): `. /sluice/test/vm/guest/vfio_lib.sh`.
# Expects SLUICE (the tree, /sluice) and NVME_BDFS / NVME_BDF from /guest.env.

# sluice ARGS...: the sluice command from the packed tree (deno run does not type-check).
sluice() { deno run -A "$SLUICE/appliance/main.ts" "$@"; }

# wait_for SECONDS TEST-ARGS...: polls `test TEST-ARGS` every 0.1 s; fails after SECONDS.
wait_for() {
  _n=$(($1 * 10))
  shift
  while [ "$_n" -gt 0 ]; do
    test "$@" && return 0
    sleep 0.1
    _n=$((_n - 1))
  done
  return 1
}

# driver_of BDF: the driver a PCI device is bound to, or "none".
driver_of() {
  if [ -e "/sys/bus/pci/devices/$1/driver" ]; then
    basename "$(readlink "/sys/bus/pci/devices/$1/driver")"
  else
    echo none
  fi
}

# iommu_group_of BDF: the device's IOMMU group number (empty without an IOMMU).
iommu_group_of() {
  [ -e "/sys/bus/pci/devices/$1/iommu_group" ] &&
    basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"
}

# nvme_ns1_of BDF: /dev/nvmeXn1 of the device while the kernel's nvme driver has it (else empty).
nvme_ns1_of() {
  for _c in "/sys/bus/pci/devices/$1/nvme/"nvme*; do
    [ -e "$_c/${_c##*/}n1" ] && echo "/dev/${_c##*/}n1" && return 0
  done
  return 1
}

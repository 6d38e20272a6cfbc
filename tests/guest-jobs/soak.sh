#!/bin/sh
# The soak (`cargo xtask soak`): vgpu-soak's mixed load until the device has checked
# $vgpu_soak_accesses page accesses (kernel command line; default 10^7) or
# $vgpu_soak_seconds have passed; then the kernel log must be clean.
status=0
accesses=${vgpu_soak_accesses:-10000000}
seconds=${vgpu_soak_seconds:-1500}
echo "vgpu-guest: soak until $accesses accesses are checked (at most $seconds s)"
/bin/vgpu-soak "$accesses" "$seconds" || status=1
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 90 "during the soak" || status=1
exit $status

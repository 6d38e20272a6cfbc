#!/bin/sh
# The hardening job (`cargo xtask test`, its own VM): the daemon runs with
# --access-delay-us, so device jobs are slow on purpose; vgpu-kill checks that a
# fatal signal ends a SUBMIT whose job is running and that the device aborts it.
status=0
echo "vgpu-guest: running vgpu-kill"
/bin/vgpu-kill || status=1
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 3 "during the hardening job" || status=1
exit $status

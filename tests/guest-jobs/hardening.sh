#!/bin/sh
# The hardening job (`cargo xtask test`, its own VM): the daemon runs with
# --access-delay-us, so device jobs are slow on purpose.
# - vgpu-kill: a fatal signal ends a SUBMIT whose job is running, the device aborts it;
# - vgpu-userptr-wait: munmap of a userptr object a job of a non-SVM context uses waits
#   for the job (amdgpu's semantic), and does not wait when no job runs;
# - vgpu-devfail (last: it resets the device): an INVALIDATE the device does not confirm
#   makes the driver reset the device before mm may free the pages (the host then checks
#   the daemon's stats file for 0 violations);
# - the driver unloads after the reset; the kernel log stays clean.
status=0
echo "vgpu-guest: reloading vgpu_svm with unsafe_debug=1 (fail_invalidate knob)"
rmmod vgpu_svm && insmod /lib/modules/vgpu/vgpu_svm.ko unsafe_debug=1 || status=1
echo "vgpu-guest: running vgpu-kill"
/bin/vgpu-kill || status=1
echo "vgpu-guest: running vgpu-userptr-wait"
/bin/vgpu-userptr-wait || status=1
echo "vgpu-guest: running vgpu-devfail"
/bin/vgpu-devfail || status=1
if rmmod vgpu_svm; then
    echo "ok 3 rmmod vgpu_svm after the device reset"
else
    echo "not ok 3 rmmod vgpu_svm after the device reset"; status=1
fi
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 4 "during the hardening job" || status=1
exit $status

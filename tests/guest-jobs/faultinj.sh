#!/bin/sh
# The fault-injection job (`cargo xtask test`, its own VM, whose host obeys the guest's
# `vgpu-host-request:` lines): under a mixed load (vgpu-faultinj) the daemon is first
# stopped for longer than the driver's timeouts and resumed, then, after the driver was
# reloaded, killed. Each time: every blocked SUBMIT ends with a documented errno, later work
# gets ENODEV/EIO, rmmod works, the kernel log stays clean. The timeouts are shortened with
# the module parameters so that a stop longer than both takes seconds, not minutes (the
# guest freezes while QEMU waits for a stopped daemon during the device reset).
CMD_TIMEOUT_MS=3000
JOB_TIMEOUT_MS=8000
STOP_MS=12000
# No task may stay blocked longer than the stop plus the driver's timeouts: the hung-task
# detector (CONFIG_DETECT_HUNG_TASK) reports any that does, and check_kernel_log fails.
HUNG_TASK_SECS=30
status=0
if [ -w /proc/sys/kernel/hung_task_timeout_secs ]; then
    echo $HUNG_TASK_SECS > /proc/sys/kernel/hung_task_timeout_secs
    echo "ok 8 the kernel has the hung-task detector (CONFIG_DETECT_HUNG_TASK), set to $HUNG_TASK_SECS s"
else
    echo "not ok 8 the kernel has the hung-task detector (CONFIG_DETECT_HUNG_TASK)"; status=1
fi
load() {
    insmod /lib/modules/vgpu/vgpu_svm.ko cmd_timeout_ms=$CMD_TIMEOUT_MS job_timeout_ms=$JOB_TIMEOUT_MS
}
echo "vgpu-guest: reloading vgpu_svm with cmd_timeout_ms=$CMD_TIMEOUT_MS job_timeout_ms=$JOB_TIMEOUT_MS"
rmmod vgpu_svm && load || status=1

echo "vgpu-guest: fault 1: the daemon stops for $STOP_MS ms"
/bin/vgpu-faultinj stop $STOP_MS $CMD_TIMEOUT_MS $JOB_TIMEOUT_MS || status=1
resets_stop=$(dmesg | grep -c 'resetting the device')
if [ "$resets_stop" -gt 0 ]; then
    echo "ok 1 the driver reset the stalled device (its jobs' ABORTs were not confirmed; kernel log)"
else
    echo "not ok 1 the driver reset the stalled device (its jobs' ABORTs were not confirmed; kernel log)"; status=1
fi
if rmmod vgpu_svm; then
    echo "ok 2 rmmod vgpu_svm after the stalled device was reset"
else
    echo "not ok 2 rmmod vgpu_svm after the stalled device was reset"; status=1
fi
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 3 "after the stalled device" || status=1

echo "vgpu-guest: loading vgpu_svm again (the resumed daemon serves a new driver instance)"
if load && [ -e /dev/dri/renderD128 ]; then
    echo "ok 4 the driver binds the device again after the reset"
else
    echo "not ok 4 the driver binds the device again after the reset"; status=1
fi
echo "vgpu-guest: fault 2: the daemon is killed"
/bin/vgpu-faultinj kill $CMD_TIMEOUT_MS $JOB_TIMEOUT_MS || status=1
resets_kill=$(dmesg | grep -c 'resetting the device')
if [ "$resets_kill" -gt "$resets_stop" ]; then
    echo "ok 5 the driver reset the dead device (an INVALIDATE was not confirmed; kernel log)"
else
    echo "not ok 5 the driver reset the dead device (an INVALIDATE was not confirmed; kernel log)"; status=1
fi
if rmmod vgpu_svm; then
    echo "ok 6 rmmod vgpu_svm after the device died"
else
    echo "not ok 6 rmmod vgpu_svm after the device died"; status=1
fi
check_kernel_log 7 "after the dead device" || status=1
exit $status

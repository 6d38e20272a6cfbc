#!/bin/sh
# The injection-point cases alone (`cargo xtask vm --job contract`, about 30 s): the cases
# that use the driver's race-widening knobs (seq_window, retry_ebusy, inval_window) and the
# non-blocking reap (nonblock_reap, pair_start_end), the killed submitter
# (killed_submit_aborted), the foreign object (foreign_object) and the BIND_ARRAY cases
# (bind_array_*), the two-pass and idle invalidation races (userptr_storm, idle_litmus), with the driver reloaded with
# unsafe_debug=1, then the kernel-log check. A quick way to see whether a driver change (or a
# mutant) breaks the sequence protocol; `cargo xtask test` runs the same cases in its suite.
status=0
rmmod vgpu_svm || status=1
insmod /lib/modules/vgpu/vgpu_svm.ko unsafe_debug=1 || status=1
echo "vgpu-guest: running vgpu-coherence (injection-point cases)"
/bin/vgpu-coherence seq_window retry_ebusy inval_window nonblock_reap killed_submit_aborted pair_start_end foreign_object bind_array_binds_all bind_array_all_or_nothing bind_array_then_close userptr_storm idle_litmus || status=1
echo "vgpu-guest: vgpu-coherence done"
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 1 "during the injection-point cases" || status=1
exit $status

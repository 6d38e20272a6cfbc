#!/bin/sh
# One kernel of the mm-regressions zoo (`cargo xtask mm-regressions`): the kernel's own
# hmm-tests (their verdict goes beside the suite's), then every coherence case once with the
# driver reloaded with unsafe_debug=1 (the injection-point cases need it), then the kernel-log
# check. On a kernel with a zoo patch, failures are the point: the host reads which cases
# caught it (their `vgpu-case:` lines) and the hmm-tests totals.
status=0
echo "vgpu-guest: running hmm-tests"
/bin/hmm-tests -T benchmark_thp_migration || status=1
echo "vgpu-guest: hmm-tests done"
rmmod vgpu_svm || status=1
insmod /lib/modules/vgpu/vgpu_svm.ko unsafe_debug=1 || status=1
echo "vgpu-guest: running vgpu-coherence (every case once)"
/bin/vgpu-coherence --patterns once || status=1
echo "vgpu-guest: vgpu-coherence done"
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 1 "on this kernel" || status=1
exit $status

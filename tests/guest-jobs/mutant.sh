#!/bin/sh
# The job `cargo xtask mutants` runs on each mutated driver (its first VM; the hardening and
# fault-injection VMs follow while the mutant lives): the test job without the kernel's own
# hmm-tests (they test the kernel, not our driver) and in two execution patterns, then a short fuzzer run with a fixed
# seed (the ownership and argument checks), a clean kernel log and rmmod.
status=0
# The coherence suite once and twice in a row (VA and context reuse), not in all of its
# execution patterns: a campaign runs this job once per mutant.
# The first failure decides a mutant's verdict: the suite stops there (--fail-fast), and the
# fuzzer runs only if everything before it passed.
VGPU_NO_HMM_TESTS=1 VGPU_COHERENCE_ARGS="--patterns once,twice --fail-fast" sh /etc/vgpu/jobs/test.sh || status=1

if [ $status -eq 0 ]; then
    echo "vgpu-guest: running vgpu-fuzz --seed 1 --ioctls 30000 --seconds 120"
    /bin/vgpu-fuzz --seed 1 --ioctls 30000 --seconds 120 || status=1
    echo "vgpu-guest: vgpu-fuzz done"
else
    echo "vgpu-guest: vgpu-fuzz not run (a check failed already)"
fi

. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 5 "during the mutant job" || status=1
if rmmod vgpu_svm; then
    echo "ok 6 rmmod vgpu_svm at the end of the mutant job"
else
    echo "not ok 6 rmmod vgpu_svm at the end of the mutant job"; status=1
fi
exit $status

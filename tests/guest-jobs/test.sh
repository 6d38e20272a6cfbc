#!/bin/sh
# The in-VM test job (`cargo xtask test`): the driver's smoke test, the coherence suite
# (with the negative controls, so the driver is reloaded with unsafe_debug=1), the C
# example, then the kernel's own hmm-tests as a baseline. Output is TAP; the host counts
# it from the console and collects the `vgpu-case:` lines into coherence-summary.json.
status=0

# The module is loaded without unsafe_debug: every debug knob must refuse writes with EPERM
# (and read 0: off).
knobs_bad=""
for k in skip_invalidate legacy_valid_flag legacy_delay_us mirror_secretmem fail_invalidate \
         fault_to_lock_delay_us clear_to_invalidate_delay_us locked_delay_us force_ebusy pair_notifiers; do
    f=/sys/kernel/debug/vgpu_svm/$k
    err=$( (echo 1 > "$f") 2>&1 )
    if [ ! -e "$f" ] || ! echo "$err" | grep -q "not permitted" || [ "$(cat "$f")" != "0" ]; then
        knobs_bad="$knobs_bad $k"
    fi
done
if [ -z "$knobs_bad" ]; then
    echo "ok 5 every debug knob refuses writes with EPERM without unsafe_debug=1"
else
    echo "not ok 5 every debug knob refuses writes with EPERM without unsafe_debug=1 (failed:$knobs_bad)"; status=1
fi

echo "vgpu-guest: module unload with and without a live context"
/bin/vgpu-smoke --hold 60 &
holder=$!
sleep 2
if rmmod vgpu_svm 2>/dev/null; then
    echo "not ok 1 rmmod refuses while a GPU context is open"; status=1
else
    echo "ok 1 rmmod refuses while a GPU context is open"
fi
kill $holder; wait $holder 2>/dev/null
if rmmod vgpu_svm; then
    echo "ok 2 rmmod succeeds once the context is closed"
else
    echo "not ok 2 rmmod succeeds once the context is closed"; status=1
fi
echo "vgpu-guest: reloading vgpu_svm with unsafe_debug=1 (negative controls)"
insmod /lib/modules/vgpu/vgpu_svm.ko unsafe_debug=1 || status=1

echo "vgpu-guest: kernel messages of the driver:"
dmesg | grep -E 'vgpu_svm|test_hmm' | sed 's/^/  /'

echo "vgpu-guest: running vgpu-smoke"
/bin/vgpu-smoke || status=1

echo "vgpu-guest: running vgpu-coherence"
# VGPU_COHERENCE_ARGS: extra arguments (mutant.sh runs fewer execution patterns).
/bin/vgpu-coherence $VGPU_COHERENCE_ARGS || status=1
echo "vgpu-guest: vgpu-coherence done"

echo "vgpu-guest: running vgpu-c-copy (the C example)"
/bin/vgpu-c-copy || status=1

# Our code must leave the kernel log clean: no BUG, WARNING, lockdep, KASAN, might_sleep
# or hung-task report (checked before hmm-tests, whose own module is not ours).
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 3 "during the vgpu tests" || status=1

if [ "$vgpu_flavor" = "debug" ]; then
    # On the debug kernel (KASAN, lockdep) under TCG, 7.2's test_hmm hits a KASAN
    # use-after-free in its own device-private migration path (dmirror_device_evict_chunk
    # -> __migrate_device_finalize -> rmap_walk_anon) and benchmark_thp_migration times
    # out; the baseline runs on the default kernel.
    echo "ok 4 kernel hmm-tests # SKIP debug kernel: upstream test_hmm KASAN report, see test.sh"
elif [ "$VGPU_NO_HMM_TESTS" = "1" ]; then
    # Set by mutant.sh: a mutated driver is judged by our tests only (no TAP line: nothing
    # is counted for a test that did not run).
    echo "vgpu-guest: hmm-tests not run (VGPU_NO_HMM_TESTS=1)"
else
    # benchmark_thp_migration is a timing benchmark with a fixed 120 s harness timeout;
    # under TCG it can exceed it on a slow or loaded machine (seen: the test command failed
    # on an untouched main). A baseline must not fail on machine speed: the pass/fail run
    # excludes it, and it runs apart, its output shown as diagnostics (`#` lines, not
    # counted) with its outcome.
    echo "vgpu-guest: running hmm-tests"
    /bin/hmm-tests -T benchmark_thp_migration || status=1
    echo "vgpu-guest: hmm-tests done"
    echo "vgpu-guest: hmm-tests benchmark_thp_migration (timing only, not a verdict under TCG)"
    ( /bin/hmm-tests -t benchmark_thp_migration; echo "benchmark exit status $?" ) 2>&1 | sed 's/^/#   /'
fi
exit $status

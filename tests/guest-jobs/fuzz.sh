#!/bin/sh
# The fuzz job (`cargo xtask test`, its own VM): vgpu-fuzz throws at least 10^5 hostile ioctls
# at the driver (threads, fork children, munmap/mprotect/mremap/madvise/fork of the memory
# the jobs use), then the kernel log must be clean and the driver must unload.
# The seed comes from the kernel command line (vgpu_fuzz_seed=N, set by the xtask) so that a
# failure replays with `cargo xtask vm --job fuzz --fuzz-seed N`.
status=0
seed="$vgpu_fuzz_seed"
[ -n "$seed" ] || seed=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^vgpu_fuzz_seed=//p')
[ -n "$seed" ] || seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
# The budget (a count and a time, whichever ends first) and the floor (fewer ioctls than
# that is a failure; the host also wants 10^5). The run's speed is not what is tested: a
# loaded host slows the TCG guest (seen: 239360 ioctls in 300 s, 793/s, while a cargo build
# shared the 2 cores, which failed the old rule "3x10^5 within 300 s"; alone 300000 in
# ~160 s), so the floor sits 2.4x below that slowest rate. Debug kernel (KASAN, lockdep):
# ~1400/s alone.
if [ "$vgpu_flavor" = "debug" ]; then n=100000; secs=600; else n=300000; secs=300; fi
min=100000
# VGPU_FUZZ_KNOWN_BUGS=1 on the host: also the reproducers of known, unfixed driver bugs.
known=""
[ "$vgpu_fuzz_known_bugs" = "1" ] && known="--known-bugs"
# VGPU_FUZZ_ARGS on the host: extra arguments (vgpu_fuzz_args=a,b,c; after ours, so they win).
args="$vgpu_fuzz_args"
[ -n "$args" ] || args=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^vgpu_fuzz_args=//p')
args=$(echo "$args" | tr ',' ' ')
echo "vgpu-guest: running vgpu-fuzz --seed $seed --ioctls $n --seconds $secs --min-ioctls $min $known $args"
# $args unquoted: one word per argument.
/bin/vgpu-fuzz --seed "$seed" --ioctls "$n" --seconds "$secs" --min-ioctls "$min" $known $args || status=1
echo "vgpu-guest: vgpu-fuzz done"

. /etc/vgpu/jobs/kernel-log.sh
log=$(check_kernel_log 1 "during the fuzzer") || status=1
echo "$log"
# The host puts this count into fuzz-summary.json (kernel_reports).
echo "vgpu-fuzz-kernel-reports: $(echo "$log" | grep -c '^#   ')"

if rmmod vgpu_svm; then
    echo "ok 2 rmmod vgpu_svm after the fuzzer"
else
    echo "not ok 2 rmmod vgpu_svm after the fuzzer"; status=1
fi
exit $status

#!/bin/sh
# The benchmarks (`cargo xtask bench`): measurements, not tests. vgpu-bench prints one
# `vgpu-bench: {json}` line per figure; the host collects them into target/vgpu/bench.json,
# bench.md and the plots (xtask/src/bench/). The host may pass `vgpu_bench=GROUP,...` on the
# kernel command line (it becomes an environment variable of /init) to run a subset: the
# checker boots (`--checker strict` and `off` alternated) run only the `devcopy` group.
echo "vgpu-guest: bench: $(nproc) vCPUs, $(grep MemTotal /proc/meminfo)"
# Keep kernel messages off the console: the figure lines must arrive whole.
echo 1 > /proc/sys/kernel/printk
if [ -n "$vgpu_bench" ]; then
    echo "vgpu-guest: running vgpu-bench --only $vgpu_bench"
    /bin/vgpu-bench --only "$vgpu_bench"
else
    echo "vgpu-guest: running vgpu-bench"
    /bin/vgpu-bench
fi
status=$?
echo 7 > /proc/sys/kernel/printk
echo "vgpu-guest: vgpu-bench done (status $status)"
dmesg | grep -E 'BUG:|WARNING:|not serviced' | sed 's/^/  /'
exit $status

#!/bin/sh
# The mm-feature cases alone (`cargo xtask vm --job features`, about a minute): NUMA
# balancing, zswap, DAMON pageout, multi-gen LRU eviction, userfaultfd write-protect, shmem
# THP, anonymous mTHP, memory offlining and idle page tracking (tests/src/cases/features.rs,
# tests/MM-FEATURES.md), then the kernel-log check. `cargo xtask test` runs the same cases in
# its suite.
status=0
echo "vgpu-guest: running vgpu-coherence (mm-feature cases)"
/bin/vgpu-coherence numa_balancing zswap damon_pageout mglru_evict uffd_wp shmem_thp mthp_anon memory_offline idle_page_tracking || status=1
echo "vgpu-guest: vgpu-coherence done"
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 1 "during the mm-feature cases" || status=1
exit $status

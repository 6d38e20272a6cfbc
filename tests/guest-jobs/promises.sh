#!/bin/sh
# The uAPI promise cases alone (`cargo xtask vm --job promises`): tests/src/cases/promises.rs,
# which tests/CONTRACTS.md maps to the header's promises, in every execution pattern they
# run in, then the kernel-log check. They need no debug knob: the driver stays as loaded.
status=0
echo "vgpu-guest: running vgpu-smoke"
/bin/vgpu-smoke || status=1
echo "vgpu-guest: running vgpu-coherence (promise cases)"
/bin/vgpu-coherence semantic_b_va_reuse readonly_objects ctx_config_window submit_result submit_prefault \
    bind_unbind closed_bound_object fork_child_objects context_slots release_visible one_file_jobs || status=1
echo "vgpu-guest: vgpu-coherence done"
. /etc/vgpu/jobs/kernel-log.sh
check_kernel_log 1 "during the promise cases" || status=1
exit $status

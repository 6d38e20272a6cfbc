#!/bin/sh
# The coherence suite (`cargo xtask vm --job coherence`): every case in every mode.
# Each case prints a TAP line and a `vgpu-case: {json}` line; the host turns the
# latter into target/vgpu/coherence-summary.json (xtask/src/coherence.rs).
# The negative controls need the driver loaded with unsafe_debug=1; without it they
# report `# SKIP` with the reason.
echo "vgpu-guest: running vgpu-coherence"
/bin/vgpu-coherence "$@"
status=$?
echo "vgpu-guest: vgpu-coherence done"
exit $status

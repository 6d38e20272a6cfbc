#!/bin/sh
# The in-VM test job (`cargo xtask test`): the driver's smoke test, the coherence suite
# (with the negative controls, so the driver is reloaded with unsafe_debug=1), the C
# example, then the kernel's own hmm-tests as a baseline. Output is TAP; the host counts
# it from the console and collects the `vgpu-case:` lines into coherence-summary.json.
status=0

echo "vgpu-guest: reloading vgpu_svm with unsafe_debug=1 (negative controls)"
rmmod vgpu_svm || status=1
insmod /lib/modules/vgpu/vgpu_svm.ko unsafe_debug=1 || status=1

echo "vgpu-guest: kernel messages of the driver:"
dmesg | grep -E 'vgpu_svm|test_hmm' | sed 's/^/  /'

echo "vgpu-guest: running vgpu-smoke"
/bin/vgpu-smoke || status=1

echo "vgpu-guest: running vgpu-coherence"
/bin/vgpu-coherence || status=1
echo "vgpu-guest: vgpu-coherence done"

echo "vgpu-guest: running vgpu-c-copy (the C example)"
/bin/vgpu-c-copy || status=1

echo "vgpu-guest: running hmm-tests"
/bin/hmm-tests || status=1
echo "vgpu-guest: hmm-tests done"

echo "vgpu-guest: kernel warnings:"
dmesg | grep -iE 'BUG|WARNING|lockdep|KASAN|circular|possible recursive' | sed 's/^/  /'
exit $status

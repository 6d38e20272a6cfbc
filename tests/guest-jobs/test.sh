#!/bin/sh
# The in-VM test job (`cargo xtask test`): the driver's tests, then the kernel's own
# hmm-tests as a baseline. Output is TAP; the host counts it from the console.
status=0

echo "vgpu-guest: kernel messages of the driver:"
dmesg | grep -E 'vgpu_svm|test_hmm|virtio' | sed 's/^/  /'

echo "vgpu-guest: running vgpu-smoke"
/bin/vgpu-smoke || status=1

echo "vgpu-guest: running hmm-tests"
/bin/hmm-tests || status=1
echo "vgpu-guest: hmm-tests done"

exit $status

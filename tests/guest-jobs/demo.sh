#!/bin/sh
# The main job (`cargo xtask demo`): the driver <-> device handshake, a readable subset of
# the coherence suite, and the checker catching the legacy valid-flag race.
echo "== guest: the vgpu_svm driver bound the virtual GPU"
dmesg | grep -E 'vgpu_svm' | sed 's/^/  /'
echo "== guest: DRM render nodes"
ls -l /dev/dri/ | sed 's/^/  /'
echo "== guest: a user program asks the driver (DRM_IOCTL_VERSION, GET_PARAM)"
/bin/vgpu-smoke || exit 1
echo "== guest: coherence under fork/COW, THP, NUMA migration and swap"
/bin/vgpu-coherence --demo || exit 1
echo "== guest: the checker catches the legacy valid-flag race (reloading with unsafe_debug=1)"
rmmod vgpu_svm && insmod /lib/modules/vgpu/vgpu_svm.ko unsafe_debug=1 || exit 1
/bin/vgpu-coherence neg_legacy_race

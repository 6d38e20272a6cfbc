#!/bin/sh
# The main job (`cargo xtask demo`): show the driver <-> device handshake from the guest.
echo "== guest: the vgpu_svm driver bound the virtual GPU"
dmesg | grep -E 'vgpu_svm' | sed 's/^/  /'
echo "== guest: DRM render nodes"
ls -l /dev/dri/ | sed 's/^/  /'
echo "== guest: a user program asks the driver (DRM_IOCTL_VERSION, GET_PARAM)"
/bin/vgpu-smoke

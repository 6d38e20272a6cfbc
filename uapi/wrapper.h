/* Input to bindgen for the vgpu-uapi crate (host side). drm.h comes from
 * libdrm's copy of the kernel UAPI (-I/usr/include/libdrm). */
#include "vgpu_svm_protocol.h"
#include "vgpu_svm_drm.h"

/* Input to bindgen for the vgpu-uapi crate (host side). drm.h comes from
 * libdrm's copy of the kernel UAPI (-I/usr/include/libdrm). */
#include "vgpu_svm_protocol.h"
#include "vgpu_svm_drm.h"

/* The ioctl numbers are function-like #defines, which bindgen does not expand;
 * it does evaluate these constants' initializers (the kernel's uapi_helper.h
 * does the same). src/lib.rs names them DRM_IOCTL_VGPU_SVM_*. */
const __u32 VGPU_UAPI_IOCTL_GET_PARAM = DRM_IOCTL_VGPU_SVM_GET_PARAM;
const __u32 VGPU_UAPI_IOCTL_CTX_CONFIG = DRM_IOCTL_VGPU_SVM_CTX_CONFIG;
const __u32 VGPU_UAPI_IOCTL_USERPTR_CREATE = DRM_IOCTL_VGPU_SVM_USERPTR_CREATE;
const __u32 VGPU_UAPI_IOCTL_BIND = DRM_IOCTL_VGPU_SVM_BIND;
const __u32 VGPU_UAPI_IOCTL_UNBIND = DRM_IOCTL_VGPU_SVM_UNBIND;
const __u32 VGPU_UAPI_IOCTL_SUBMIT = DRM_IOCTL_VGPU_SVM_SUBMIT;
const __u32 VGPU_UAPI_IOCTL_STATS = DRM_IOCTL_VGPU_SVM_STATS;
const __u32 VGPU_UAPI_IOCTL_BIND_ARRAY = DRM_IOCTL_VGPU_SVM_BIND_ARRAY;

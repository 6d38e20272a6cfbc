/* SPDX-License-Identifier: MIT */
/*
 * vgpu_svm DRM driver: the user-space ABI (ioctls on /dev/dri/renderD*).
 *
 * Canonical copy: the kernel overlay installs it as
 * include/uapi/drm/vgpu_svm_drm.h (listed in rust/uapi/uapi_helper.h), and the
 * Rust crate vgpu-uapi is generated from it with bindgen.
 */
#ifndef __VGPU_SVM_DRM_H__
#define __VGPU_SVM_DRM_H__

#include "drm.h"

#if defined(__cplusplus)
extern "C" {
#endif

/* Parameters for DRM_IOCTL_VGPU_SVM_GET_PARAM. */
/* The device's VGPU_SVM_PROTOCOL_VERSION, read from its capset at probe. */
#define VGPU_SVM_PARAM_PROTOCOL_VERSION 1
/* The capset id the device answered with (VGPU_SVM_CAPSET_ID). */
#define VGPU_SVM_PARAM_CAPSET_ID        2
/* How many contexts the device can hold at once (from the capset). */
#define VGPU_SVM_PARAM_MAX_CONTEXTS     3
/* GPU virtual address bits (from the capset). */
#define VGPU_SVM_PARAM_VA_BITS          4
/* The device's feature bits (VGPU_SVM_FEATURE_*, from the capset). */
#define VGPU_SVM_PARAM_FEATURES         5

/**
 * struct drm_vgpu_svm_get_param - query a device or driver parameter
 * @param: in, one of VGPU_SVM_PARAM_*; an unknown one fails with -EINVAL
 * @pad: must be zero (-EINVAL otherwise)
 * @value: out, the parameter's value
 */
struct drm_vgpu_svm_get_param {
	__u32 param;
	__u32 pad;
	__u64 value;
};

#define DRM_VGPU_SVM_GET_PARAM 0x00

/* An enum so that Rust bindgen can resolve the ioctl numbers. */
enum {
	DRM_IOCTL_VGPU_SVM_GET_PARAM =
		DRM_IOWR(DRM_COMMAND_BASE + DRM_VGPU_SVM_GET_PARAM,
			 struct drm_vgpu_svm_get_param),
};

#if defined(__cplusplus)
}
#endif

#endif /* __VGPU_SVM_DRM_H__ */

/* SPDX-License-Identifier: MIT */
/*
 * vgpu-svm device protocol: what the vgpu_svm guest driver and the vgpu-device
 * daemon say to each other over virtio-gpu (device id 16).
 *
 * The device is a virtio-gpu device with a private capability set, VGPU_SVM.
 * The driver discovers it with VIRTIO_GPU_CMD_GET_CAPSET_INFO / GET_CAPSET on
 * the control queue; the capset body is struct vgpu_svm_capset below.
 *
 * This header is canonical: the Rust crate vgpu-uapi is generated from it with
 * bindgen, and the kernel overlay installs it as
 * include/uapi/linux/vgpu_svm_protocol.h for the driver's Rust bindings.
 * All fields are little-endian.
 */
#ifndef VGPU_SVM_PROTOCOL_H
#define VGPU_SVM_PROTOCOL_H

#include <linux/types.h>

/* The capset id of the VGPU_SVM context type. virtio-gpu carries the capset id
 * in the low 8 bits of CTX_CREATE's context_init, so it must be below 256; the
 * ids 1..6 are taken by virgl, virgl2, gfxstream, venus, cross-domain and drm. */
#define VGPU_SVM_CAPSET_ID 0x53

/* Protocol version: major in the high 16 bits, minor in the low 16 bits. A
 * driver refuses a device whose major differs from its own. */
#define VGPU_SVM_PROTOCOL_MAJOR 0
#define VGPU_SVM_PROTOCOL_MINOR 1
#define VGPU_SVM_PROTOCOL_VERSION \
	((VGPU_SVM_PROTOCOL_MAJOR << 16) | VGPU_SVM_PROTOCOL_MINOR)

/* "VSVM" read as a little-endian u32. */
#define VGPU_SVM_CAPSET_MAGIC 0x4d565356

/* The capset version the device reports in GET_CAPSET_INFO (max_version). */
#define VGPU_SVM_CAPSET_VERSION 1

/* Body of the VGPU_SVM capset (GET_CAPSET response payload). */
struct vgpu_svm_capset {
	__le32 magic;            /* VGPU_SVM_CAPSET_MAGIC */
	__le32 protocol_version; /* VGPU_SVM_PROTOCOL_VERSION */
	__le32 max_contexts;     /* contexts the device can hold at once */
	__le32 va_bits;          /* GPU virtual address bits (48: 4-level tables) */
	__le64 features;         /* VGPU_SVM_FEATURE_* bits */
	__le64 reserved[4];      /* zero */
};

/* Device feature bits (vgpu_svm_capset.features). */
#define VGPU_SVM_FEATURE_CHECKER (1ULL << 0) /* coherence checker present */

#endif /* VGPU_SVM_PROTOCOL_H */

/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * vgpu.h: the C API of libvgpu, the userspace library of the vgpu_svm DRM
 * driver (Rust crate `vgpu`, built as libvgpu.a and libvgpu.so).
 *
 * Conventions: every function that can fail returns 0 on success or a
 * negative errno exactly as the kernel returned it (-EFAULT, -EPERM, ...);
 * vgpu_strerror() turns it into text. A vgpu_ctx is one open file of the
 * render node, i.e. one GPU context bound to the calling process's address
 * space; a fork child must open its own.
 *
 * Static link (from the workspace root, after
 *   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
 *   cargo build --release --target x86_64-unknown-linux-gnu -p vgpu):
 *   gcc -static -O2 -Wall -Iuserspace-lib/include prog.c \
 *       $TARGET_DIR/x86_64-unknown-linux-gnu/release/libvgpu.a \
 *       -lpthread -ldl -lm -lrt -o prog
 *
 * Memory safety: the device reads and writes process memory like DMA; a job
 * may only write memory the program is prepared to see change.
 */
#ifndef VGPU_H
#define VGPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One open render node file = one GPU context. Opaque. */
typedef struct VgpuCtx vgpu_ctx;

/* Op kinds (same values as VGPU_SVM_OP_KIND_* of vgpu_svm_drm.h). */
#define VGPU_OP_COPY 1          /* dst <- src, len bytes */
#define VGPU_OP_FILL 2          /* len bytes at dst <- low byte of value */
#define VGPU_OP_HASH 3          /* FNV-1a 64 of len bytes at src -> result */
#define VGPU_OP_ATOMIC_ADD 4    /* *(uint64_t *)dst += value; old -> result */
#define VGPU_OP_WRITE_PATTERN 5 /* dst[i] = vgpu_pattern_byte(value, i) */
#define VGPU_OP_READ 6          /* read len bytes at src (touch only) */

/* Same layout as struct drm_vgpu_svm_op. Addresses are GPU VAs (== CPU VAs
 * in an SVM context). */
struct vgpu_op {
	uint32_t kind;  /* VGPU_OP_* */
	uint32_t flags; /* zero */
	uint64_t dst;
	uint64_t src;
	uint64_t len;
	uint64_t value;
};

struct vgpu_job_result {
	uint64_t result; /* the last HASH or ATOMIC_ADD op's result */
	uint64_t faults; /* device faults serviced while the job ran */
};

/* enum mmu_notifier_event (Linux 7.2): indexes of vgpu_stats.events. */
#define VGPU_EVENT_UNMAP 0
#define VGPU_EVENT_CLEAR 1
#define VGPU_EVENT_PROTECTION_VMA 2
#define VGPU_EVENT_PROTECTION_PAGE 3
#define VGPU_EVENT_SOFT_DIRTY 4
#define VGPU_EVENT_RELEASE 5
#define VGPU_EVENT_MIGRATE 6
#define VGPU_EVENT_EXCLUSIVE 7
#define VGPU_EVENT_SLOTS 16

/* Same layout as struct drm_vgpu_svm_stats. */
struct vgpu_stats {
	/* device (device-wide for a privileged caller, else this context) */
	uint64_t accesses_checked;
	uint64_t violations;
	uint64_t violations_no_page;
	uint64_t violations_frame;
	uint64_t violations_write;
	uint64_t device_faults;
	uint64_t device_invalidations;
	uint64_t tlb_hits;
	uint64_t tlb_misses;
	uint64_t jobs;
	uint64_t bytes;
	uint64_t device_errors;
	/* driver (this context) */
	uint64_t faults_serviced;
	uint64_t retries;
	uint64_t invalidations;
	uint64_t pages_mapped;
	uint64_t events[VGPU_EVENT_SLOTS];
	/* device, this context only (the fields above are device-wide for a
	 * privileged caller) */
	uint64_t ctx_accesses_checked;
	uint64_t ctx_violations;
	uint64_t ctx_device_faults;
	uint64_t ctx_jobs;
};

/* Open the first vgpu_svm render node (/dev/dri/renderD128..191): a new
 * context in *out. -ENODEV if there is none. */
int vgpu_open(vgpu_ctx **out);
/* Open the render node at path: a new context in *out. */
int vgpu_open_path(const char *path, vgpu_ctx **out);
/* Close the context (its objects and bindings go with it). NULL is fine. */
void vgpu_close(vgpu_ctx *ctx);

/* Configure before the first job: svm != 0 for shared virtual memory (GPU VA
 * == CPU VA, device faults serviced); 0 for userptr-only. */
int vgpu_config(vgpu_ctx *ctx, int svm);

/* A userptr object over size bytes at ptr (both page aligned); its GEM
 * handle goes to *handle. It follows the VA range: every submit that names
 * it maps what the range holds then (-EFAULT if unmapped). */
int vgpu_userptr_create(vgpu_ctx *ctx, void *ptr, uint64_t size, int readonly,
			uint32_t *handle);
/* Close a userptr object's handle (DRM_IOCTL_GEM_CLOSE). */
int vgpu_userptr_close(vgpu_ctx *ctx, uint32_t handle);
/* Map an object at gpu_va (page aligned, below 2^48) / remove that mapping. */
int vgpu_bind(vgpu_ctx *ctx, uint32_t handle, uint64_t gpu_va);
int vgpu_unbind(vgpu_ctx *ctx, uint64_t gpu_va);
/* Bind count (1..4096) objects at once, handles[i] at gpu_vas[i], all or
 * nothing (DRM_IOCTL_VGPU_SVM_BIND_ARRAY); with unbind != 0 remove the
 * bindings at gpu_vas instead (handles may be NULL then). On an error due to
 * one entry, its index goes to *failed (if failed is not NULL), else
 * UINT32_MAX. */
int vgpu_bind_array(vgpu_ctx *ctx, const uint32_t *handles,
		    const uint64_t *gpu_vas, uint32_t count, int unbind,
		    uint32_t *failed);

/* Run a job of nr_ops (1..64) ops that uses nr_handles userptr objects
 * (handles may be NULL when nr_handles is 0) and wait for it. result may be
 * NULL. -EFAULT: memory that could not be mirrored; -EPERM: a write to
 * read-only memory; -EINVAL: bad ops; -EIO: device error; -EINTR: aborted. */
int vgpu_submit(vgpu_ctx *ctx, const struct vgpu_op *ops, uint32_t nr_ops,
		const uint32_t *handles, uint32_t nr_handles,
		struct vgpu_job_result *result);

/* One-op jobs. */
int vgpu_submit_copy(vgpu_ctx *ctx, uint64_t dst, uint64_t src, uint64_t len,
		     const uint32_t *handles, uint32_t nr_handles);
int vgpu_submit_fill(vgpu_ctx *ctx, uint64_t dst, uint64_t len, uint8_t value,
		     const uint32_t *handles, uint32_t nr_handles);
int vgpu_submit_write_pattern(vgpu_ctx *ctx, uint64_t dst, uint64_t len,
			      uint64_t seed, const uint32_t *handles,
			      uint32_t nr_handles);
int vgpu_submit_hash(vgpu_ctx *ctx, uint64_t src, uint64_t len,
		     const uint32_t *handles, uint32_t nr_handles,
		     uint64_t *hash);
int vgpu_submit_atomic_add(vgpu_ctx *ctx, uint64_t dst, uint64_t value,
			   const uint32_t *handles, uint32_t nr_handles,
			   uint64_t *old);
int vgpu_submit_read(vgpu_ctx *ctx, uint64_t src, uint64_t len,
		     const uint32_t *handles, uint32_t nr_handles);

/* Device (global) and driver (this context) counters. */
int vgpu_stats(vgpu_ctx *ctx, struct vgpu_stats *out);

/* Text for an errno given either sign; valid until this thread's next call. */
const char *vgpu_strerror(int err);
/* Name of an enum mmu_notifier_event value ("unmap", ...), NULL if unknown. */
const char *vgpu_event_name(int event);

/* Reference implementations of what the device computes. */
uint64_t vgpu_fnv1a64(const void *data, size_t len);
uint8_t vgpu_pattern_byte(uint64_t seed, uint64_t i);
void vgpu_fill_pattern(void *buf, size_t len, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif /* VGPU_H */

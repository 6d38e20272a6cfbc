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

/*
 * The GPU context. Each open file of the render node is one GPU context bound
 * to the opener's mm (the process that opened it). Any vgpu_svm ioctl other
 * than GET_PARAM and STATS from a process with another mm (e.g. a fork child
 * using the parent's fd) fails with -EPERM; the child opens its own file. The
 * DRM core's ioctls act on the file whoever calls them: a fork child sharing
 * the fd can GEM_CLOSE the parent's handles.
 */

/* CTX_CONFIG flags. */
/* Shared virtual memory: GPU VA == CPU VA for everything outside userptr
 * bindings; device faults are serviced with hmm_range_fault. Without it the
 * context cannot fault: a job touching memory that is not a bound userptr BO
 * fails with -EFAULT. */
#define VGPU_SVM_CTX_SVM (1 << 0)

/**
 * struct drm_vgpu_svm_ctx_config - configure the file's GPU context
 * @flags: VGPU_SVM_CTX_*; unknown bits -> -EINVAL
 * @pad: must be zero
 *
 * May be called before the file's first job only (-EBUSY after; a SUBMIT that
 * reached the device counts, even if the job failed; one refused for its
 * arguments does not). Other errors:
 * -EPERM (the caller's mm is not the file's), -ENOMEM, -ENOSPC (the device
 * has no free context: all VGPU_SVM_PARAM_MAX_CONTEXTS are in use; retry
 * after another file was closed), -ENODEV/-EIO/-ETIMEDOUT (creating the
 * device context failed). The context is created by the first of
 * CTX_CONFIG, USERPTR_CREATE and SUBMIT on the file: each of them may fail
 * with these errors then (UNBIND on a file without a context: -ENOENT).
 */
struct drm_vgpu_svm_ctx_config {
	__u32 flags;
	__u32 pad;
};

/* USERPTR_CREATE flags. */
#define VGPU_SVM_USERPTR_READONLY (1 << 0) /* the device may only read it */

/**
 * struct drm_vgpu_svm_userptr_create - a GEM object over a user range
 * @userptr: page-aligned start of the range in the caller's address space
 * @size: page-aligned, non-zero length
 * @flags: VGPU_SVM_USERPTR_*
 * @handle: out, the GEM handle
 *
 * Errors: -EINVAL (unknown flags, unaligned or zero size, a size above 64 GiB,
 * a range that overflows or ends beyond 2^48), -EPERM (the caller's mm is not
 * the file's), -ENOMEM,
 * -ENODEV/-EIO/-ETIMEDOUT (creating the file's device context failed).
 *
 * Semantic B: the object follows the VA range, not the pages. Every submit
 * that uses it revalidates it (hmm_range_fault) and maps what the process
 * sees at that moment; after munmap the next submit fails with -EFAULT; after
 * a new mapping at the same VA it sees the new memory. Ranges that are VM_IO or
 * VM_PFNMAP fail at submit with -EFAULT, PROT_NONE ones too. The object is
 * validated whole: if part of its range is unmapped, every submit naming it
 * fails with -EFAULT, even one touching only the mapped part. A READONLY object
 * over memory that the process cannot write is fine; a writable one over such
 * memory can be created and bound, but every submit naming it fails with
 * -EPERM, even a job that only reads. In a context without SVM, an
 * invalidation of an object's range (munmap, migration, ...) waits for the
 * context's running jobs (at most the job timeout) before the pages go.
 *
 * GEM_CLOSE of a bound object's last handle keeps the binding (its GPU VA range
 * stays taken: -EBUSY) until UNBIND or the file is closed.
 */
struct drm_vgpu_svm_userptr_create {
	__u64 userptr;
	__u64 size;
	__u32 flags;
	__u32 handle;
};

/**
 * struct drm_vgpu_svm_bind - map a userptr object at a GPU VA
 * @handle: the object
 * @pad: must be zero
 * @gpu_va: page aligned; [gpu_va, gpu_va + size) must not overlap another
 *          binding (-EBUSY) and must lie below 2^48 (-EINVAL)
 *
 * Errors: -ENOENT (no such handle), -EINVAL (nonzero pad, gpu_va 0 or
 * unaligned, beyond 2^48, an object of another file), -EBUSY (the object is
 * already bound, or the range overlaps another binding), -EPERM (the
 * caller's mm is not the file's), -EIO/-ETIMEDOUT/-ENODEV (the device did not
 * confirm), -ENOMEM, and the two ends of the wait below.
 *
 * DRM_IOCTL_VGPU_SVM_UNBIND takes the same struct (gpu_va identifies the
 * binding; -ENOENT if there is none; -EINVAL for nonzero pad; -EPERM, -EIO,
 * -ETIMEDOUT, -ENODEV, -EINTR as for BIND).
 *
 * No job sees the bindings change: while jobs of the file run, BIND, UNBIND
 * and BIND_ARRAY wait (after their argument checks, before any change) until
 * the file's running jobs have ended, and no job of the file starts
 * meanwhile. The wait is bounded: -ETIMEDOUT once the file's jobs ran for
 * the job timeout plus the command timeout plus 1 s more (the module
 * parameters job_timeout_ms and cmd_timeout_ms); -EINTR on a fatal signal.
 * Either way nothing changed. Jobs of other files are not waited for.
 */
struct drm_vgpu_svm_bind {
	__u32 handle;
	__u32 pad;
	__u64 gpu_va;
};

/* DRM_IOCTL_VGPU_SVM_BIND_ARRAY flags. */
/* Unbind instead of bind: each entry's gpu_va names a binding (its handle is
 * ignored, as UNBIND's). */
#define VGPU_SVM_BIND_ARRAY_UNBIND (1 << 0)
/* Most entries per BIND_ARRAY call. */
#define VGPU_SVM_BIND_ARRAY_MAX    4096
/* drm_vgpu_svm_bind_array.failed when no single entry is to blame. */
#define VGPU_SVM_BIND_ARRAY_NO_ENTRY 0xffffffffu

/**
 * struct drm_vgpu_svm_bind_array - bind (or unbind) many userptr objects at once
 * @binds: user pointer to @count struct drm_vgpu_svm_bind, each as for BIND
 *         (UNBIND with VGPU_SVM_BIND_ARRAY_UNBIND)
 * @count: 1..VGPU_SVM_BIND_ARRAY_MAX (-EINVAL otherwise)
 * @flags: 0 or VGPU_SVM_BIND_ARRAY_UNBIND; unknown bits -> -EINVAL
 * @failed: out: the index of the entry an error is due to (-EINVAL for its
 *          pad, gpu_va or object, -ENOENT, -EBUSY), else
 *          VGPU_SVM_BIND_ARRAY_NO_ENTRY (also on success)
 * @pad: must be zero (-EINVAL)
 *
 * All or nothing: every entry is checked (handles, ownership, alignment, the
 * 2^48 limit, overlaps with the existing bindings and among the entries)
 * before the device learns of any, and on any error no binding is added or
 * removed. The device takes the whole array in a few round trips (one per
 * VGPU_SVM_MAX_BIND_ENTRIES entries of the device protocol), so binding
 * many objects costs far less than one BIND each.
 *
 * Bind errors: as BIND's, per entry (-ENOENT: no such handle; -EINVAL:
 * nonzero pad, gpu_va 0, unaligned or beyond 2^48, an object of another
 * file; -EBUSY: the object is already bound or named twice, or its range
 * overlaps another binding or another entry's range); and -EFAULT (the array
 * is unreadable), -EPERM, -ENOMEM, -EIO/-ETIMEDOUT/-ENODEV/-EINTR (the
 * device did not confirm: -EIO if it refused, and then nothing changed; if it
 * did not answer, the context is out of service: later jobs get -EIO), and
 * -ETIMEDOUT/-EINTR as BIND's wait for the file's running jobs (nothing
 * changed).
 * For an overlap between two entries, @failed is the later one in the array.
 *
 * Unbind errors (VGPU_SVM_BIND_ARRAY_UNBIND): -ENOENT (no binding at an
 * entry's gpu_va, or the file has no context: @failed 0 then), -EINVAL
 * (nonzero pad, or the same binding named twice: @failed the second), and
 * -EFAULT, -EPERM, -ENOMEM, -EIO/-ETIMEDOUT/-ENODEV/-EINTR as above.
 */
struct drm_vgpu_svm_bind_array {
	__u64 binds;
	__u32 count;
	__u32 flags;
	__u32 failed;
	__u32 pad;
};

/* Job operations (struct drm_vgpu_svm_op.kind); same meaning as the device
 * protocol's VGPU_SVM_OP_* (addresses are GPU VAs). */
#define VGPU_SVM_OP_KIND_COPY          1 /* dst <- src, len bytes */
#define VGPU_SVM_OP_KIND_FILL          2 /* dst <- low byte of value, len bytes */
#define VGPU_SVM_OP_KIND_HASH          3 /* FNV-1a 64 of src..src+len -> result */
#define VGPU_SVM_OP_KIND_ATOMIC_ADD    4 /* *(u64 *)dst += value; old -> result */
#define VGPU_SVM_OP_KIND_WRITE_PATTERN 5 /* dst[i] = pattern(value, i) */
#define VGPU_SVM_OP_KIND_READ          6 /* read src..src+len (touch only) */

struct drm_vgpu_svm_op {
	__u32 kind;
	__u32 flags; /* zero */
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 value;
};

/**
 * struct drm_vgpu_svm_submit - run a job and wait for it
 * @ops: user pointer to nr_ops struct drm_vgpu_svm_op
 * @nr_ops: 1..64
 * @flags: zero or VGPU_SVM_SUBMIT_PREFAULT
 * @handles: user pointer to nr_handles __u32 GEM handles of userptr objects
 *           the job uses (validated before the job runs); may be 0 with
 *           nr_handles 0
 * @nr_handles: 0..1024
 * @pad: zero
 * @result: out: the result of the last HASH or ATOMIC_ADD op (0 if there is
 *          none)
 * @faults: out: device faults serviced while the job ran
 *
 * VGPU_SVM_SUBMIT_PREFAULT (SVM contexts; ignored without SVM): before the job
 * starts, the driver mirrors what its ops will touch, as the device's own
 * faults would (writable for a destination), in op order, at most
 * VGPU_SVM_PREFAULT_MAX bytes per job; ranges overlapping a binding are left
 * alone. A job on memory it has not touched yet then takes no device fault
 * (one device round trip instead of two or more). Best effort: what cannot
 * be mirrored is left to the device's faults, which fail the job as without
 * the flag; but a job that fails at one op may have faulted in the pages of
 * later ops (allocated, copy-on-write broken), which without the flag it
 * would not have reached.
 *
 * Jobs of one file run concurrently: SUBMIT holds no file-wide lock while its
 * job runs, so jobs submitted from several threads on one file run side by
 * side (the device takes them in turns by time slices), and USERPTR_CREATE,
 * STATS and GET_PARAM do not wait for them. BIND, UNBIND and BIND_ARRAY do
 * (see there): a job sees the file's bindings as they were when it was
 * submitted, for the whole job.
 *
 * Returns 0 when every op completed, else one of:
 * -EINVAL: bad ops (unknown kind, nonzero flags, len above
 *          VGPU_SVM_MAX_OP_LEN, a range that overflows or reaches 2^48,
 *          ATOMIC_ADD not 8-byte aligned), nr_ops/nr_handles out of range,
 *          unknown flags, nonzero pad, a handle of an object that is not bound or
 *          belongs to another file;
 * -EFAULT: the ops or handles array is unreadable; or an op touched memory
 *          that cannot be mirrored: unmapped, PROT_NONE, VM_IO/VM_PFNMAP,
 *          memfd_secret(2) memory, or (without SVM) outside every binding;
 *          or it faulted inside the binding of an object the job does not
 *          name (name every object a job uses: what an earlier job left
 *          mirrored there is used, kept coherent by that object's notifier,
 *          but nothing is mirrored for an object the job does not name);
 * -ENOENT: a handle names no object;
 * -EPERM:  the caller's mm is not the file's; or a write to read-only
 *          memory or a READONLY object;
 * -EAGAIN: the objects kept being invalidated while being validated; retry;
 * -EBUSY:  the memory kept changing under the mirror (sequence retries
 *          exhausted, or the device faulted at the same page more than 16
 *          times in a row although it was mirrored), or no room in the
 *          device queue;
 * -ETIMEDOUT: the device did not answer in time (the context is unusable
 *          afterwards: -EIO);
 * -EINTR:  a fatal signal, or the device aborted the job;
 * -EIO:    the device failed the job or an invalidation (the context is
 *          disabled: every later job fails with -EIO);
 * -ENODEV: the device is gone (unbound);
 * -ENOMEM: out of kernel memory.
 */
#define VGPU_SVM_SUBMIT_PREFAULT (1u << 0)
#define VGPU_SVM_PREFAULT_MAX    (2u << 20)

struct drm_vgpu_svm_submit {
	__u64 ops;
	__u32 nr_ops;
	__u32 flags;
	__u64 handles;
	__u32 nr_handles;
	__u32 pad;
	__u64 result;
	__u64 faults;
};

/* The device's counters, as the device reports them (VGPU_SVM_CMD_STATS),
 * plus the driver's counters for this context.
 *
 * What a reader sees depends on its privilege: with CAP_PERFMON or
 * CAP_SYS_ADMIN, the device-wide counters (every context of every process)
 * and the module-wide notifier events; otherwise only this file's own
 * context's device counters and events (all zero before the file has a
 * context; STATS never creates one). The ctx_* fields are this file's own
 * context's device counters for every reader, so a privileged one can judge
 * its own context too. Errors: -EIO, -ETIMEDOUT, -ENODEV (the
 * device did not answer), -EINTR (fatal signal), -ENOMEM. */
struct drm_vgpu_svm_stats {
	/* device (device-wide or this context's, see above) */
	__u64 accesses_checked;
	__u64 violations;
	__u64 violations_no_page;
	__u64 violations_frame;
	__u64 violations_write;
	__u64 device_faults;
	__u64 device_invalidations;
	__u64 tlb_hits;
	__u64 tlb_misses;
	__u64 jobs;
	__u64 bytes;
	__u64 device_errors;
	/* driver (this context) */
	__u64 faults_serviced;   /* device faults handled by the populate loop */
	__u64 retries;           /* populate/validate restarts (sequence changed, -EBUSY) */
	__u64 invalidations;     /* notifier callbacks that cleared GPU entries */
	__u64 pages_mapped;      /* GPU PTEs written (4K units) */
	/* notifier callbacks by enum mmu_notifier_event (index = event value):
	 * UNMAP, CLEAR, PROTECTION_VMA, PROTECTION_PAGE, SOFT_DIRTY, RELEASE,
	 * MIGRATE, EXCLUSIVE, ...; for a privileged reader counted over every
	 * context of the device, so that a context's RELEASE (its process
	 * exiting) is visible to others; else this context's. */
	__u64 events[16];
	/* this file's own context's device counters, for every reader (for an
	 * unprivileged one they equal the device fields above); zero before the
	 * file has a context. A privileged reader pays a second device round trip
	 * for them. (Added after events[]: the DRM core zero-fills and truncates,
	 * so a caller built with the shorter struct still works.) */
	__u64 ctx_accesses_checked;
	__u64 ctx_violations;
	__u64 ctx_device_faults;
	__u64 ctx_jobs;
};

#define DRM_VGPU_SVM_GET_PARAM     0x00
#define DRM_VGPU_SVM_CTX_CONFIG    0x01
#define DRM_VGPU_SVM_USERPTR_CREATE 0x02
#define DRM_VGPU_SVM_BIND          0x03
#define DRM_VGPU_SVM_UNBIND        0x04
#define DRM_VGPU_SVM_SUBMIT        0x05
#define DRM_VGPU_SVM_STATS         0x06
#define DRM_VGPU_SVM_BIND_ARRAY    0x07

/* The ioctl numbers. Plain #defines (an enum cannot hold values above INT_MAX
 * in ISO C, and #ifdef cannot see one); Rust gets them through constants that
 * bindgen can evaluate (rust/uapi/uapi_helper.h in the kernel, uapi/wrapper.h
 * for the vgpu-uapi crate). */
#define DRM_IOCTL_VGPU_SVM_GET_PARAM \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_VGPU_SVM_GET_PARAM, struct drm_vgpu_svm_get_param)
#define DRM_IOCTL_VGPU_SVM_CTX_CONFIG \
	DRM_IOW(DRM_COMMAND_BASE + DRM_VGPU_SVM_CTX_CONFIG, struct drm_vgpu_svm_ctx_config)
#define DRM_IOCTL_VGPU_SVM_USERPTR_CREATE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_VGPU_SVM_USERPTR_CREATE, struct drm_vgpu_svm_userptr_create)
#define DRM_IOCTL_VGPU_SVM_BIND \
	DRM_IOW(DRM_COMMAND_BASE + DRM_VGPU_SVM_BIND, struct drm_vgpu_svm_bind)
#define DRM_IOCTL_VGPU_SVM_UNBIND \
	DRM_IOW(DRM_COMMAND_BASE + DRM_VGPU_SVM_UNBIND, struct drm_vgpu_svm_bind)
#define DRM_IOCTL_VGPU_SVM_SUBMIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_VGPU_SVM_SUBMIT, struct drm_vgpu_svm_submit)
#define DRM_IOCTL_VGPU_SVM_STATS \
	DRM_IOR(DRM_COMMAND_BASE + DRM_VGPU_SVM_STATS, struct drm_vgpu_svm_stats)
#define DRM_IOCTL_VGPU_SVM_BIND_ARRAY \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_VGPU_SVM_BIND_ARRAY, struct drm_vgpu_svm_bind_array)

#if defined(__cplusplus)
}
#endif

#endif /* __VGPU_SVM_DRM_H__ */

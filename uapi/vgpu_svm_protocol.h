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
 * driver refuses a device whose major differs from its own.
 * 0.3: ABORT of queued and running jobs; STATS per context (device-wide on
 *      ctx_id 0); cpu_walk_errors and unchecked_accesses in the stats;
 *      without VIRTIO_GPU_F_CONTEXT_INIT every context is VGPU_SVM.
 * 0.4: SET_AS carries direct_map_base (the 32-byte form of 0.3 is still
 *      accepted): the checker also flags device accesses to frames the
 *      guest kernel removed from its direct map (violations_no_direct_map
 *      in the stats, from the first reserved word).
 * 0.5: INVALIDATE carries its reason in hdr.flags (enum
 *      vgpu_svm_inval_reason: the mmu_notifier_event, or the driver's own
 *      cause), so that a violation the checker records can name the
 *      invalidations that preceded it. 0 (what a 0.4 driver sends) is
 *      "unknown"; a driver sends a non-zero reason only to a device of
 *      0.5 or later (a 0.4 device answers ERR_MALFORMED to any flags).
 *      And SET_AS carries tlb_gen_gpa (the 32- and 40-byte forms are still
 *      accepted): the device reloads a TLB generation from guest memory at
 *      the start of every JOB and RESUME and drops the context's whole TLB
 *      when it changed, so an invalidation while none of the context's jobs
 *      runs needs no INVALIDATE round trip.
 * 0.6: BIND_ARRAY and UNBIND_ARRAY: up to VGPU_SVM_MAX_BIND_ENTRIES
 *      bindings made or removed by one command, all or nothing. A driver
 *      sends them only to a device of 0.6 or later (older ones answer
 *      ERR_UNKNOWN_CMD); BIND and UNBIND stay. */
#define VGPU_SVM_PROTOCOL_MAJOR 0
#define VGPU_SVM_PROTOCOL_MINOR 6
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

/*
 * The GPU page table (written by the driver in guest memory, walked by the
 * device): 4 levels of 4 KiB tables of 512 little-endian 64-bit entries; a
 * 48-bit GPU VA; level 4 (root) indexes VA[47:39] ... level 1 VA[20:12].
 * Table entries need only VALID. Leaves: level 1 (4 KiB) or level 2 with
 * LARGE (2 MiB, frame 2 MiB aligned). The device sets DIRTY with a
 * compare-and-swap before its first write through a leaf; the driver clears
 * entries with an atomic exchange and marks the folio dirty if DIRTY was set.
 * Bits not defined here must be zero.
 */
#define VGPU_SVM_PTE_VALID     (1ULL << 0)
#define VGPU_SVM_PTE_WRITE     (1ULL << 1)
#define VGPU_SVM_PTE_DIRTY     (1ULL << 6)
#define VGPU_SVM_PTE_LARGE     (1ULL << 7)
#define VGPU_SVM_PTE_ADDR_MASK 0x000ffffffffff000ULL
#define VGPU_SVM_PT_LEVELS     4
#define VGPU_SVM_PT_ENTRIES    512

/* Device feature bits (vgpu_svm_capset.features). */
#define VGPU_SVM_FEATURE_CHECKER (1ULL << 0) /* coherence checker present */


/*
 * ---------------------------------------------------------------------------
 * Commands.
 *
 * A VGPU_SVM context is created with VIRTIO_GPU_CMD_CTX_CREATE (context_init =
 * VGPU_SVM_CAPSET_ID). Each VIRTIO_GPU_CMD_SUBMIT_3D on that context carries
 * exactly one command: struct virtio_gpu_cmd_submit, then `size` bytes that
 * start with struct vgpu_svm_cmd_hdr. The driver offers a writable buffer of
 * at least sizeof(struct virtio_gpu_ctrl_hdr) + sizeof(struct vgpu_svm_resp);
 * the device answers VIRTIO_GPU_RESP_OK_NODATA followed by a struct
 * vgpu_svm_resp (virtio-gpu errors -- unknown context, malformed submit --
 * come back as the usual RESP_ERR_* header alone).
 *
 * Requests may complete out of order: the device answers a JOB (or RESUME)
 * only when the job is done or faults; INVALIDATE and SET_AS when the device
 * accesses in flight have ended (never behind a job: at most one run of up
 * to 16 page accesses per running job), possibly after later commands; STATS and the rest at
 * once. The driver therefore keeps several requests in flight on the control
 * queue.
 * ---------------------------------------------------------------------------
 */

enum vgpu_svm_cmd_type {
	/* Set the context's address spaces: struct vgpu_svm_cmd_set_as. */
	VGPU_SVM_CMD_SET_AS = 1,
	/* Drop translations of a GPU VA range: struct vgpu_svm_cmd_range.
	 * Answered only once every device access that started before the
	 * command arrived has finished, and no TLB entry for the range is left.
	 * This is what makes the driver's mmu_interval_notifier promise true.
	 * The driver clears or changes the GPU entries first; ranges beyond
	 * 48 bits are clipped (so (0, ~0) is fine at mm teardown). Making an
	 * entry writable needs no INVALIDATE (the device walks again before it
	 * raises a write fault). */
	VGPU_SVM_CMD_INVALIDATE = 2,
	/* Tell the checker that GPU VA [gpu_va, gpu_va + size) mirrors CPU VA
	 * [cpu_va, ...) (userptr BO binding): struct vgpu_svm_cmd_bind. Outside
	 * any binding, GPU VA == CPU VA (SVM). */
	VGPU_SVM_CMD_BIND = 3,
	/* Forget a binding: struct vgpu_svm_cmd_range (start = its gpu_va);
	 * must name exactly one binding. Overlapping BINDs get ERR_BUSY. */
	VGPU_SVM_CMD_UNBIND = 4,
	/* Run a job: struct vgpu_svm_cmd_job followed by nr_ops struct
	 * vgpu_svm_op. Answered when the job completes, faults or fails. */
	VGPU_SVM_CMD_JOB = 5,
	/* Continue a faulted job: struct vgpu_svm_cmd_resume. Answered like
	 * JOB: when the job completes, faults again or fails. */
	VGPU_SVM_CMD_RESUME = 6,
	/* Abort a live job: struct vgpu_svm_cmd_resume. Answers (job_id is
	 * always the command's):
	 * - faulted job (its FAULT answer was sent, no RESUME since): the job
	 *   goes; answered at once with STATUS_ERROR / ERR_ABORTED (as in
	 *   protocol 0.2).
	 * - queued or running job (a JOB or RESUME of it is not answered yet):
	 *   the job stops at its next device access (or is taken off the queue
	 *   before it runs again); that pending JOB/RESUME is answered
	 *   STATUS_ERROR / ERR_ABORTED -- even if the job had just done its last
	 *   access or faulted: once an ABORT is accepted the job never completes
	 *   nor stays faulted, and what it wrote is whatever it got to -- and
	 *   then the ABORT is answered STATUS_OK. The ABORT's answer comes only
	 *   once no access of the job is in flight: after it, the job touches
	 *   no guest memory. A queued job (not on a worker) is answered at once;
	 *   a running one when its current run of accesses ends (at most 16 page
	 *   accesses),
	 *   possibly after later commands (the control queue is not held up).
	 *   The JOB/RESUME answer always precedes the ABORT's.
	 * - any other job id (unknown, completed, failed, already aborted):
	 *   STATUS_ERROR / ERR_UNKNOWN_JOB at once.
	 * - ERR_BUSY: 16 ABORTs of that running job are waiting already (the
	 *   job is being aborted anyway).
	 * An ABORT racing the job's own end gets one of these consistently:
	 * UNKNOWN_JOB if the job was answered OK/ERROR first, ERR_ABORTED if
	 * its FAULT was answered first, else STATUS_OK with the JOB/RESUME
	 * answered ERR_ABORTED. Aborts are not counted in stats.errors. */
	VGPU_SVM_CMD_ABORT = 7,
	/* Read counters: struct vgpu_svm_cmd_hdr; the answer is a struct
	 * vgpu_svm_resp with status OK and the stats in .stats, at once.
	 * - Sent on a live context N (SUBMIT_3D with ctx_id N): that context's
	 *   own counters, from zero at its CTX_CREATE (a context made again
	 *   under an old id starts from zero): accesses, checks, violations,
	 *   faults, TLB, jobs, bytes of its jobs, its INVALIDATEs, and its
	 *   commands answered STATUS_ERROR and failed jobs.
	 * - Sent with ctx_id 0 (no CTX_CREATE needed; 0 is never a context):
	 *   the device-wide counters, the sum over every context since the
	 *   daemon started (destroyed ones and earlier frontends included).
	 *   Context 0 carries only STATS: any other command there (or an
	 *   unparseable one) is answered VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID,
	 *   like any unknown context. The device cannot tell who sent it: a
	 *   driver that must keep other contexts' activity private sends STATS
	 *   on ctx_id 0 for privileged readers only.
	 * (Protocol 0.2 devices answered the device-wide counters on every
	 * context and ERR_INVALID_CONTEXT_ID on ctx_id 0.) */
	VGPU_SVM_CMD_STATS = 8,
	/* Does nothing; answered at once (round-trip baseline). */
	VGPU_SVM_CMD_NOP = 9,
	/* 0.6: make many bindings at once: struct vgpu_svm_cmd_bind_array
	 * followed by count struct vgpu_svm_bind_entry. Each entry is checked
	 * as a BIND (alignment, the 48-bit space, cpu_va wrap: ERR_MISALIGNED
	 * or ERR_MALFORMED), none may overlap an existing binding or another
	 * entry (ERR_BUSY), and the context must have room for all
	 * (ERR_TOO_BIG). All or nothing: on any error no binding is made, and
	 * resp.result is the index of the first entry refused. Answered at
	 * once. */
	VGPU_SVM_CMD_BIND_ARRAY = 10,
	/* 0.6: forget many bindings at once: struct vgpu_svm_cmd_bind_array
	 * followed by count struct vgpu_svm_unbind_entry, each naming exactly
	 * one binding (as UNBIND), none twice (else ERR_MALFORMED, with
	 * resp.result the index of the first entry refused). All or nothing. */
	VGPU_SVM_CMD_UNBIND_ARRAY = 11,
};

struct vgpu_svm_cmd_hdr {
	__le32 type;  /* enum vgpu_svm_cmd_type */
	__le32 flags; /* zero; INVALIDATE (0.5): enum vgpu_svm_inval_reason */
};

/* Why the driver sends an INVALIDATE (its hdr.flags, protocol 0.5). The
 * device does not act on it: it keeps the last INVALIDATEs of each context
 * with their reason and range, and a coherence violation's record names
 * those that covered the violating address. Values 1..8 are the kernel's
 * enum mmu_notifier_event plus one (the notifier callback that cleared GPU
 * entries); 0x10.. are the driver's own. Any other flags value (unknown
 * reason, other bits) is ERR_MALFORMED. */
enum vgpu_svm_inval_reason {
	VGPU_SVM_INVAL_UNKNOWN = 0,         /* not said (a 0.4 driver) */
	VGPU_SVM_INVAL_UNMAP = 1,           /* MMU_NOTIFY_UNMAP: munmap, mremap away */
	VGPU_SVM_INVAL_CLEAR = 2,           /* MMU_NOTIFY_CLEAR: zap, COW, madvise, ... */
	VGPU_SVM_INVAL_PROTECTION_VMA = 3,  /* MMU_NOTIFY_PROTECTION_VMA: mprotect */
	VGPU_SVM_INVAL_PROTECTION_PAGE = 4, /* MMU_NOTIFY_PROTECTION_PAGE: mkclean, wp */
	VGPU_SVM_INVAL_SOFT_DIRTY = 5,      /* MMU_NOTIFY_SOFT_DIRTY */
	VGPU_SVM_INVAL_RELEASE = 6,         /* MMU_NOTIFY_RELEASE: the mm goes away */
	VGPU_SVM_INVAL_MIGRATE = 7,         /* MMU_NOTIFY_MIGRATE */
	VGPU_SVM_INVAL_EXCLUSIVE = 8,       /* MMU_NOTIFY_EXCLUSIVE */
	VGPU_SVM_INVAL_BIND = 0x10,         /* driver: SVM entries give way to a new userptr binding */
	VGPU_SVM_INVAL_UNBIND = 0x11,       /* driver: a userptr binding goes */
	VGPU_SVM_INVAL_SPLIT = 0x12,        /* driver: a 2 MiB leaf gives way to a 4 KiB table */
};

/* Paging levels of the CPU page table the checker walks. */
#define VGPU_SVM_CPU_LEVELS_4 4
#define VGPU_SVM_CPU_LEVELS_5 5

/* SET_AS: cpu_pt_root must be a CPU page table in guest RAM. The checker
 * cannot be switched off by the guest: a cpu_pt_root of 0 is refused with
 * ERR_MALFORMED (unless the host runs the daemon with its checker off).
 *
 * direct_map_base (protocol 0.4, offset 32; the command is 40 bytes): the
 * guest kernel's page_offset_base, the virtual address at which its direct
 * map of all RAM starts (KASLR moves it), page aligned (else
 * ERR_MISALIGNED). When it is non-zero, the checker also walks cpu_pt_root
 * (an x86-64 mm's top-level table maps the kernel half too) at
 * direct_map_base + G for every guest frame G a device access touches: if
 * that is not mapped present, the frame is one the kernel removed from its
 * direct map (memfd_secret, or otherwise unmappable) and no device may reach
 * it: a violation (stats.violations_no_direct_map). A sum that wraps past
 * 2^64 or is not canonical counts under stats.cpu_walk_errors, not as a
 * violation. 0, or the 32-byte form of protocol 0.3 (which ends at
 * padding; a device of 0.4 accepts both sizes), means unknown: no
 * direct-map check.
 *
 * tlb_gen_gpa (protocol 0.5, offset 40; the command is 48 bytes): the
 * guest-physical address of a little-endian u64 in guest RAM, the context's
 * TLB generation, 8-byte aligned (else ERR_MISALIGNED; not inside guest RAM:
 * ERR_BAD_ADDRESS). At the start of every JOB and RESUME of the context,
 * before the job's first access, the device loads the u64 (after it read the
 * command from the ring) and, if it differs from the value it loaded last
 * for this context (none yet after SET_AS), drops every TLB entry of the
 * context. The driver may then change GPU entries and, instead of an
 * INVALIDATE, store a new generation -- but only while no JOB or RESUME of
 * the context is unanswered (then no device access of the context is in
 * flight, and the next JOB/RESUME it sends is ordered after the store by the
 * virtqueue's publication barrier). The value means nothing else to the
 * device (any u64; a load that fails drops the TLB). 0, or the 32/40-byte
 * forms (a device of 0.5 accepts all three sizes), means none: the driver
 * sends INVALIDATE for every change. */
struct vgpu_svm_cmd_set_as {
	struct vgpu_svm_cmd_hdr hdr;
	__le64 gpu_pt_root;   /* guest-physical address of the GPU page table root */
	__le64 cpu_pt_root;   /* guest-physical address of the mm's top-level CPU page table */
	__le32 cpu_pt_levels; /* VGPU_SVM_CPU_LEVELS_4 or _5 */
	__le32 padding;
	__le64 direct_map_base; /* 0.4: the kernel's page_offset_base, or 0 (see above) */
	__le64 tlb_gen_gpa;     /* 0.5: guest-physical address of the TLB generation, or 0 */
};

/* Size of SET_AS in protocol 0.3 and before (without direct_map_base). */
#define VGPU_SVM_CMD_SET_AS_SIZE_V0_3 32
/* Size of SET_AS in protocol 0.4 (without tlb_gen_gpa). */
#define VGPU_SVM_CMD_SET_AS_SIZE_V0_4 40

struct vgpu_svm_cmd_range {
	struct vgpu_svm_cmd_hdr hdr;
	__le64 start; /* GPU VA, page aligned */
	__le64 size;  /* bytes, page aligned, non-zero */
};

struct vgpu_svm_cmd_bind {
	struct vgpu_svm_cmd_hdr hdr;
	__le64 gpu_va; /* page aligned */
	__le64 cpu_va; /* page aligned */
	__le64 size;   /* bytes, page aligned, non-zero */
};

/* Most entries in one BIND_ARRAY or UNBIND_ARRAY (24 KiB of entries: the
 * command fits an order-3 allocation of the driver). More is ERR_TOO_BIG;
 * 0 is ERR_MALFORMED. */
#define VGPU_SVM_MAX_BIND_ENTRIES 1024

struct vgpu_svm_cmd_bind_array {
	struct vgpu_svm_cmd_hdr hdr;
	__le32 count;   /* 1 .. VGPU_SVM_MAX_BIND_ENTRIES */
	__le32 padding; /* zero */
	/* struct vgpu_svm_bind_entry (BIND_ARRAY) or struct
	 * vgpu_svm_unbind_entry (UNBIND_ARRAY) entries[count]; */
};

struct vgpu_svm_bind_entry {
	__le64 gpu_va; /* page aligned */
	__le64 cpu_va; /* page aligned */
	__le64 size;   /* bytes, page aligned, non-zero */
};

struct vgpu_svm_unbind_entry {
	__le64 start; /* the binding's gpu_va */
	__le64 size;  /* its size */
};

/* Job operations. Addresses are GPU VAs; every byte is accessed through the
 * GPU page table and checked against the CPU page table. */
enum vgpu_svm_op_kind {
	VGPU_SVM_OP_COPY = 1,          /* copy len bytes from src to dst */
	VGPU_SVM_OP_FILL = 2,          /* fill len bytes at dst with the low byte of value */
	VGPU_SVM_OP_HASH = 3,          /* FNV-1a 64 of len bytes at src -> resp.result */
	VGPU_SVM_OP_ATOMIC_ADD = 4,    /* *(u64 *)dst += value (dst 8-aligned, len ignored); old value -> resp.result */
	VGPU_SVM_OP_WRITE_PATTERN = 5, /* dst[i] = vgpu_svm_pattern(value, i) for i < len */
	VGPU_SVM_OP_READ = 6,          /* read len bytes at src (touch only; counted and checked) */
};

struct vgpu_svm_op {
	__le32 kind;  /* enum vgpu_svm_op_kind */
	__le32 flags; /* zero */
	__le64 dst;
	__le64 src;
	__le64 len;   /* bytes; at most VGPU_SVM_MAX_OP_LEN */
	__le64 value;
};

#define VGPU_SVM_MAX_OPS    64
#define VGPU_SVM_MAX_OP_LEN (1ULL << 32)

struct vgpu_svm_cmd_job {
	struct vgpu_svm_cmd_hdr hdr;
	__le64 job_id; /* chosen by the driver, unique among the context's live jobs */
	__le32 nr_ops; /* 1 .. VGPU_SVM_MAX_OPS */
	__le32 padding;
	/* struct vgpu_svm_op ops[nr_ops]; */
};

struct vgpu_svm_cmd_resume {
	struct vgpu_svm_cmd_hdr hdr;
	__le64 job_id;
};

/* WRITE_PATTERN with seed s writes byte i (offset from the op's dst) as
 * (__u8)(((s + i) * VGPU_SVM_PATTERN_MUL) >> 56), in 64-bit arithmetic. */
#define VGPU_SVM_PATTERN_MUL 0x9e3779b97f4a7c15ULL

enum vgpu_svm_status {
	VGPU_SVM_STATUS_OK = 0,    /* command done; for a job: every op completed */
	VGPU_SVM_STATUS_FAULT = 1, /* job stopped at a fault: resp.fault; RESUME or ABORT it */
	VGPU_SVM_STATUS_ERROR = 2, /* command rejected or job failed: resp.error */
};

/* Access that faulted (resp.fault.access). */
#define VGPU_SVM_ACCESS_READ  1
#define VGPU_SVM_ACCESS_WRITE 2

enum vgpu_svm_error {
	VGPU_SVM_ERR_NONE = 0,
	VGPU_SVM_ERR_MALFORMED = 1,     /* truncated, bad sizes, nonzero reserved fields */
	VGPU_SVM_ERR_UNKNOWN_CMD = 2,
	VGPU_SVM_ERR_NO_AS = 3,         /* JOB before SET_AS */
	VGPU_SVM_ERR_BAD_ADDRESS = 4,   /* a guest-physical address outside guest RAM */
	VGPU_SVM_ERR_BAD_PAGE_TABLE = 5,/* malformed or cyclic GPU page table */
	VGPU_SVM_ERR_TOO_BIG = 6,       /* too many ops, op too long; a job beyond the
	                                 * device's step budget (page-sized accesses over
	                                 * the job's life, RESUMEs included): refused at
	                                 * JOB, or the job fails when it runs out */
	VGPU_SVM_ERR_UNKNOWN_JOB = 7,   /* RESUME of a job that is not faulted; ABORT
	                                 * of a job that is not live */
	VGPU_SVM_ERR_BUSY = 8,          /* duplicate job id, too many live jobs; JOB/RESUME
	                                 * when the device cannot start a job worker (a
	                                 * RESUMEd job then stays faulted: retry or ABORT) */
	VGPU_SVM_ERR_ABORTED = 9,       /* job aborted (by ABORT or context destroy);
	                                 * also ABORT's answer for a faulted job */
	VGPU_SVM_ERR_MISALIGNED = 10,   /* ATOMIC_ADD dst not 8-aligned, range not page aligned */
};

struct vgpu_svm_fault {
	__le64 va;       /* GPU VA of the faulting access (page of it) */
	__le32 access;   /* VGPU_SVM_ACCESS_* */
	__le32 op_index; /* the op that faulted */
	__le64 progress; /* bytes of that op already done */
};

/* Counters (STATS): of one context, or device-wide on ctx_id 0 (see
 * VGPU_SVM_CMD_STATS). The daemon's --stats file has the device-wide ones
 * (and each live context's). */
struct vgpu_svm_stats {
	__le64 accesses_checked;     /* pages checked against the CPU page table */
	__le64 violations;           /* all kinds (violations_no_direct_map too) */
	__le64 violations_no_page;   /* no CPU page behind the GPU entry */
	__le64 violations_frame;     /* CPU page is a different frame */
	__le64 violations_write;     /* write through a non-writable CPU entry */
	__le64 faults;               /* device faults raised */
	__le64 invalidations;        /* INVALIDATE commands done */
	__le64 tlb_hits;
	__le64 tlb_misses;
	__le64 jobs;                 /* jobs completed */
	__le64 bytes;                /* bytes moved by jobs */
	__le64 errors;               /* commands answered with STATUS_ERROR */
	/* Added in protocol 0.3 from the reserved words (same size and offsets;
	 * older devices report zero here): */
	__le64 cpu_walk_errors;      /* CPU page tables the checker could not walk
	                              * (outside RAM, non-canonical VA); not violations */
	__le64 unchecked_accesses;   /* pages accessed without a CPU-table check
	                              * (only when the daemon runs with --checker off) */
	/* Added in protocol 0.4 from the first remaining reserved word (offset
	 * 112; same size; older devices report zero here): */
	__le64 violations_no_direct_map; /* a device access touched a frame that is
	                              * not mapped in the guest kernel's direct map
	                              * (SET_AS direct_map_base); also in violations */
	__le64 reserved[1];
};

struct vgpu_svm_resp {
	__le32 status; /* enum vgpu_svm_status */
	__le32 error;  /* enum vgpu_svm_error when status is ERROR */
	__le64 job_id; /* for JOB/RESUME/ABORT */
	__le64 result; /* HASH: the hash of the last HASH op; ATOMIC_ADD: old value of the last one */
	struct vgpu_svm_fault fault; /* when status is FAULT */
	struct vgpu_svm_stats stats; /* for STATS */
};

#endif /* VGPU_SVM_PROTOCOL_H */

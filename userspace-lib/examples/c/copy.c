// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * copy.c: the vgpu C API end to end, as a TAP-printing guest program.
 *
 * An SVM context copies, fills, hashes and patterns CPU memory; a userptr
 * context does the same through a bound object, then sees -EFAULT once the
 * memory is unmapped; the device's coherence checker must have checked
 * accesses and found no violation.
 *
 * Build (static, from the workspace root; see include/vgpu.h):
 *   gcc -static -O2 -Wall -Iuserspace-lib/include userspace-lib/examples/c/copy.c \
 *       $TARGET_DIR/x86_64-unknown-linux-gnu/release/libvgpu.a \
 *       -lpthread -ldl -lm -lrt -o vgpu-c-copy
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vgpu.h"

#define PAGE 4096UL
#define GPU_VA 0x100000000000ULL /* where the userptr object is bound */

static int passed, failed;

static void report(int ok, const char *desc, const char *fmt, ...)
{
	va_list ap;

	printf("%s %d %s\n", ok ? "ok" : "not ok", passed + failed + 1, desc);
	if (ok) {
		passed++;
	} else {
		failed++;
		if (fmt) {
			printf("#   ");
			va_start(ap, fmt);
			vprintf(fmt, ap);
			va_end(ap);
			printf("\n");
		}
	}
	fflush(stdout);
}

/* ret must be 0; otherwise the diagnostic shows the errno's text. */
static int check_ret(int ret, const char *desc)
{
	report(ret == 0, desc, "returned %d: %s", ret, vgpu_strerror(ret));
	return ret == 0;
}

static void *map_pages(size_t n)
{
	void *p = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static int pattern_matches(const unsigned char *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != vgpu_pattern_byte(seed, i))
			return 0;
	return 1;
}

static void svm_tests(vgpu_ctx *ctx)
{
	unsigned char *buf = map_pages(4);
	unsigned char *src, *dst;
	uint64_t hash = 0, old = 0;
	uint64_t *counter;

	if (!buf) {
		report(0, "mmap 4 pages", "mmap: %s", strerror(errno));
		return;
	}
	src = buf;
	dst = buf + PAGE;
	counter = (uint64_t *)(buf + 3 * PAGE);
	*counter = 40;

	vgpu_fill_pattern(src, PAGE, 7);
	if (check_ret(vgpu_submit_copy(ctx, (uintptr_t)dst, (uintptr_t)src, PAGE, NULL, 0),
		      "svm: COPY of one page"))
		report(memcmp(dst, src, PAGE) == 0, "svm: the CPU sees the copied page",
		       "dst differs from src");

	if (check_ret(vgpu_submit_hash(ctx, (uintptr_t)dst, PAGE, NULL, 0, &hash),
		      "svm: HASH of the copy"))
		report(hash == vgpu_fnv1a64(src, PAGE), "svm: HASH equals the CPU's FNV-1a",
		       "device %016llx, cpu %016llx", (unsigned long long)hash,
		       (unsigned long long)vgpu_fnv1a64(src, PAGE));

	if (check_ret(vgpu_submit_write_pattern(ctx, (uintptr_t)(buf + 2 * PAGE), PAGE, 99,
						 NULL, 0),
		      "svm: WRITE_PATTERN into never-touched memory (device fault)"))
		report(pattern_matches(buf + 2 * PAGE, PAGE, 99),
		       "svm: the CPU sees the device's pattern", "pattern mismatch");

	if (check_ret(vgpu_submit_atomic_add(ctx, (uintptr_t)counter, 2, NULL, 0, &old),
		      "svm: ATOMIC_ADD"))
		report(old == 40 && *counter == 42, "svm: ATOMIC_ADD returns the old value",
		       "old %llu, now %llu", (unsigned long long)old,
		       (unsigned long long)*counter);

	munmap(buf, 4 * PAGE);
	report(vgpu_submit_read(ctx, (uintptr_t)buf, PAGE, NULL, 0) == -EFAULT,
	       "svm: READ of unmapped memory fails with -EFAULT", NULL);
}

static void userptr_tests(vgpu_ctx *ctx)
{
	unsigned char *buf = map_pages(2);
	uint32_t handle = 0;

	if (!buf) {
		report(0, "mmap 2 pages", "mmap: %s", strerror(errno));
		return;
	}
	if (!check_ret(vgpu_userptr_create(ctx, buf, 2 * PAGE, 0, &handle),
		       "userptr: USERPTR_CREATE over 2 pages") ||
	    !check_ret(vgpu_bind(ctx, handle, GPU_VA), "userptr: BIND at a GPU VA")) {
		munmap(buf, 2 * PAGE);
		return;
	}

	if (check_ret(vgpu_submit_fill(ctx, GPU_VA + PAGE, PAGE, 0x5a, &handle, 1),
		      "userptr: FILL through the binding")) {
		int all = 1;
		for (size_t i = 0; i < PAGE; i++)
			all &= buf[PAGE + i] == 0x5a;
		report(all, "userptr: the CPU sees the fill", "byte mismatch");
	}

	vgpu_fill_pattern(buf, PAGE, 3);
	if (check_ret(vgpu_submit_copy(ctx, GPU_VA + PAGE, GPU_VA, PAGE, &handle, 1),
		      "userptr: COPY inside the object"))
		report(pattern_matches(buf + PAGE, PAGE, 3), "userptr: the CPU sees the copy",
		       "pattern mismatch");

	munmap(buf, 2 * PAGE);
	report(vgpu_submit_read(ctx, GPU_VA, PAGE, &handle, 1) == -EFAULT,
	       "userptr: after munmap the object's next submit fails with -EFAULT", NULL);

	check_ret(vgpu_unbind(ctx, GPU_VA), "userptr: UNBIND");
	check_ret(vgpu_userptr_close(ctx, handle), "userptr: GEM_CLOSE");
}

int main(void)
{
	vgpu_ctx *svm = NULL, *uptr = NULL;
	struct vgpu_stats before, after;
	int have_stats;

	printf("KTAP version 1\n");

	if (!check_ret(vgpu_open(&svm), "vgpu_open (SVM context)") ||
	    !check_ret(vgpu_open(&uptr), "vgpu_open (userptr context)"))
		goto out;
	have_stats = vgpu_stats(svm, &before) == 0;

	if (check_ret(vgpu_config(svm, 1), "vgpu_config(svm=1)"))
		svm_tests(svm);
	if (check_ret(vgpu_config(uptr, 0), "vgpu_config(svm=0)"))
		userptr_tests(uptr);

	if (have_stats && check_ret(vgpu_stats(svm, &after), "vgpu_stats")) {
		uint64_t checked = after.accesses_checked - before.accesses_checked;
		uint64_t bad = after.violations - before.violations;

		printf("# checker: %llu accesses checked, %llu violations\n",
		       (unsigned long long)checked, (unsigned long long)bad);
		report(checked > 0 && bad == 0,
		       "the device checked accesses and found no coherence violation",
		       "accesses_checked %llu, violations %llu", (unsigned long long)checked,
		       (unsigned long long)bad);
	}
out:
	vgpu_close(uptr);
	vgpu_close(svm);
	printf("1..%d\n", passed + failed);
	printf("# %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

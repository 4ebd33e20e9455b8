/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Asserting helpers for the vmfork selftests: foo() calls __foo() and
 * fails the current test with a sentence when it does not succeed. Include
 * this from exactly one file per test binary (it pulls in
 * kselftest_harness.h).
 */
#ifndef SELFTEST_VMFORK_TEST_H
#define SELFTEST_VMFORK_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * kselftest_harness.h (and the TEST*() expansions in every test file) leaves
 * parameters unused; the tests build with -Wextra -Werror regardless.
 */
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "kselftest_harness.h"

#include "kvm_util.h"
#include "vmfork_util.h"

#define META	struct __test_metadata *_metadata

/*
 * SKIP() from a FIXTURE_SETUP(): the 6.1 harness would still run the test
 * body after a plain "return", so leave through the harness's own jump
 * buffer; the test then reports as skipped.
 */
#define SETUP_SKIP(fmt, ...)						\
	SKIP(longjmp(_metadata->env, 1), fmt, ##__VA_ARGS__)

/*
 * Opens /dev/vmfork (from a FIXTURE_SETUP). A missing device is a skip only
 * when nobody claims to have loaded the module (VMFORK_KO unset); otherwise
 * it is a failure.
 */
#define VMFORK_OPEN_OR_SKIP(fd) do {					\
	(fd) = __vmfork_open();						\
	if ((fd) < 0 && errno == ENOENT && !getenv("VMFORK_KO"))	\
		SETUP_SKIP("vmfork module not loaded (insmod kmod/vmfork.ko)"); \
	ASSERT_LE(0, (fd)) {						\
		TH_LOG("opening " VMFORK_DEV_PATH " must work: %s",	\
		       strerror(errno));				\
	}								\
} while (0)

#define KVM_REQUIRE() do {						\
	if (!kvm_available())						\
		SKIP(return, "no usable " KVM_DEV_PATH);		\
} while (0)

static inline int vmfork_create(META, int devfd, __u64 size, __u64 *id)
{
	__u64 tmp = 0;
	int fd;

	fd = __vmfork_create(devfd, size, &tmp);
	ASSERT_LE(0, fd) {
		TH_LOG("creating a %llu-byte object must work: %s",
		       (unsigned long long)size, strerror(errno));
	}
	ASSERT_NE(0ULL, tmp) {
		TH_LOG("a new object must get a nonzero id");
	}
	if (id)
		*id = tmp;
	return fd;
}

static inline int vmfork_fork(META, int fd, __u64 flags, __u64 *id)
{
	__u64 tmp = 0;
	int child;

	child = __vmfork_fork(fd, flags, &tmp);
	ASSERT_LE(0, child) {
		TH_LOG("forking object fd %d (flags %#llx) must work: %s", fd,
		       (unsigned long long)flags, strerror(errno));
	}
	ASSERT_NE(0ULL, tmp) {
		TH_LOG("a fork child must get a nonzero id");
	}
	if (id)
		*id = tmp;
	return child;
}

static inline void vmfork_reset(META, int fd)
{
	ASSERT_EQ(0, __vmfork_reset(fd, 0)) {
		TH_LOG("resetting fork child fd %d must work: %s", fd,
		       strerror(errno));
	}
}

static inline void vmfork_stats(META, int fd, struct vmfork_stats *st)
{
	ASSERT_EQ(0, __vmfork_stats(fd, st)) {
		TH_LOG("VMFORK_GET_STATS on fd %d must work: %s", fd,
		       strerror(errno));
	}
}

static inline void *vmfork_mmap(META, int fd, size_t len, off_t off, int prot)
{
	void *p = __vmfork_mmap(fd, len, off, prot);

	ASSERT_NE(MAP_FAILED, p) {
		TH_LOG("mmap(MAP_SHARED) of %zu bytes at %lld of fd %d must work: %s",
		       len, (long long)off, fd, strerror(errno));
	}
	return p;
}

static inline __u64 peek64(META, int fd, __u64 page, unsigned int idx)
{
	__u64 v = 0;

	ASSERT_EQ((ssize_t)sizeof(v), __peek64(fd, page, idx, &v)) {
		TH_LOG("pread of page %llu word %u must work: %s",
		       (unsigned long long)page, idx, strerror(errno));
	}
	return v;
}

static inline void poke64(META, int fd, __u64 page, unsigned int idx, __u64 v)
{
	ASSERT_EQ((ssize_t)sizeof(v), __poke64(fd, page, idx, v)) {
		TH_LOG("pwrite of page %llu word %u must work: %s",
		       (unsigned long long)page, idx, strerror(errno));
	}
}

/* Writes a whole page of page_fill(@tag) with pwrite. */
static inline void write_page(META, int fd, __u64 page, __u64 tag)
{
	static __u64 buf[PG / sizeof(__u64)];

	page_fill(buf, tag);
	ASSERT_EQ((ssize_t)PG, pwrite(fd, buf, PG, page * PG)) {
		TH_LOG("pwrite of page %llu must work: %s",
		       (unsigned long long)page, strerror(errno));
	}
}

/* Reads a whole page with pread and checks it is page_fill(@tag), or zero if !tag. */
static inline void expect_page(META, int fd, __u64 page, __u64 tag,
			       const char *who)
{
	static __u64 buf[PG / sizeof(__u64)];
	bool ok;

	ASSERT_EQ((ssize_t)PG, pread(fd, buf, PG, page * PG)) {
		TH_LOG("pread of page %llu must work: %s",
		       (unsigned long long)page, strerror(errno));
	}
	ok = tag ? page_is(buf, tag) : page_is_zero(buf);
	ASSERT_TRUE(ok) {
		TH_LOG("%s: page %llu must hold %s%#llx but word 0 is %#llx", who,
		       (unsigned long long)page, tag ? "pattern " : "zeros, not ",
		       (unsigned long long)tag, (unsigned long long)buf[0]);
	}
}

/* Expected-stats check: every field the caller names, with a sentence. */
#define EXPECT_STAT(st, field, val, who)				\
	EXPECT_EQ((__u64)(val), (st)->field) {				\
		TH_LOG("%s: " #field " must be %llu, got %llu", who,	\
		       (unsigned long long)(val),			\
		       (unsigned long long)(st)->field);		\
	}

static inline void expect_counts(META, int fd, const char *who, __u64 resident,
				 __u64 private, __u64 shared, __u64 cow)
{
	struct vmfork_stats st;

	vmfork_stats(_metadata, fd, &st);
	EXPECT_STAT(&st, resident_pages, resident, who);
	EXPECT_STAT(&st, private_pages, private, who);
	EXPECT_STAT(&st, shared_pages, shared, who);
	EXPECT_STAT(&st, cow_breaks, cow, who);
	ASSERT_EQ(st.resident_pages, st.shared_pages + st.private_pages) {
		TH_LOG("%s: resident must equal shared + private", who);
	}
}

static inline struct kvm_vm *__vm_alloc(void)
{
	return calloc(1, sizeof(struct kvm_vm));
}

/*
 * A VM with one vCPU in real mode at @rip and one memslot (slot 0, gpa 0)
 * over @hva.
 */
static inline void kvm_vm_setup(META, struct kvm_vm *vm, void *hva, __u64 size,
				__u64 rip)
{
	ASSERT_EQ(0, __kvm_vm_create(vm)) {
		TH_LOG("KVM_CREATE_VM must work: %s", strerror(errno));
	}
	ASSERT_EQ(0, __kvm_set_mem(vm, 0, 0, size, hva)) {
		TH_LOG("KVM_SET_USER_MEMORY_REGION on an object mapping must work: %s",
		       strerror(errno));
	}
	ASSERT_EQ(0, __kvm_vcpu_create(vm)) {
		TH_LOG("KVM_CREATE_VCPU must work: %s", strerror(errno));
	}
	ASSERT_EQ(0, __kvm_vcpu_real_mode(vm, rip, 0)) {
		TH_LOG("setting up real mode must work: %s", strerror(errno));
	}
}

/* Runs from @rip to HLT; returns the first value written to the I/O port. */
static inline __u32 kvm_run_report(META, struct kvm_vm *vm, __u64 rip)
{
	struct kvm_outcome o;

	ASSERT_EQ(0, __kvm_vcpu_set_rip(vm, rip)) {
		TH_LOG("KVM_SET_REGS must work: %s", strerror(errno));
	}
	ASSERT_EQ(0, kvm_run_to_hlt(vm, &o)) {
		TH_LOG("the guest must run to HLT: KVM_RUN %d (%s), exit reason %u",
		       o.ret, strerror(o.err), o.exit_reason);
	}
	ASSERT_EQ(1U, o.nr_outs) {
		TH_LOG("the guest must report exactly one value");
	}
	return o.outs[0];
}

/*
 * The leak check: with every fd closed and mapping gone, the module's
 * counters must read objects 0 and pages 0. Absent counters: skip.
 */
#define VMFORK_LEAK_CHECK() do {					\
	struct vmfork_counters __c;					\
									\
	if (vmfork_wait_counters_idle(&__c, 3000))			\
		SKIP(return, "no " VMFORK_COUNTERS_PATH " in this module"); \
	EXPECT_EQ(0L, __c.objects) {					\
		TH_LOG("every object must be freed once all fds and mappings are gone"); \
	}								\
	EXPECT_EQ(0L, __c.pages) {					\
		TH_LOG("every page must be freed once all objects are gone"); \
	}								\
} while (0)

/*
 * The last test of a binary: the harness runs global TEST()s first and
 * fixtures in the order they appear, so this must be the file's last
 * fixture. Every earlier test ran in its own (now reaped) process.
 */
#define VMFORK_LEAK_CHECK_TEST()					\
	FIXTURE(zz_leaks) {						\
		int unused;						\
	};								\
	FIXTURE_SETUP(zz_leaks) {}					\
	FIXTURE_TEARDOWN(zz_leaks) {}					\
	TEST_F(zz_leaks, all_freed_at_end)				\
	{								\
		VMFORK_LEAK_CHECK();					\
	}

#endif /* SELFTEST_VMFORK_TEST_H */

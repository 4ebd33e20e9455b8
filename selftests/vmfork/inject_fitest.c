// SPDX-License-Identifier: GPL-2.0
/*
 * Allocation failures inside vmfork: with failslab and fail_page_alloc armed
 * for this task only (/proc/self/make-it-fail), every vmfork operation must
 * either work or fail cleanly (ENOMEM, SIGBUS for a store), and whatever
 * worked must still be right: forks isolated, resets exact, nothing leaked.
 *
 * Needs CONFIG_FAILSLAB and CONFIG_FAIL_PAGE_ALLOC (the debug kernel of
 * scripts/debug-kernel.sh); run by "run-selftests.sh -f" in its pass only.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>

#include "vmfork_test.h"

#define NPAGES		16
#define ROUNDS		300
#define DBG		"/sys/kernel/debug/"

static int fail_fd = -1;
static long injected_errors;

/* Failures on (1) or off (0) for this task. */
static void inject(int on)
{
	if (pwrite(fail_fd, on ? "1" : "0", 1, 0) != 1)
		abort();
}

static int arm(const char *dir)
{
	static const char *const knobs[][2] = {
		{ "probability", "10" }, { "interval", "1" }, { "times", "-1" },
		{ "space", "0" }, { "verbose", "0" }, { "task-filter", "Y" },
		{ "ignore-gfp-wait", "N" },
	};
	char path[128];
	unsigned int i;

	for (i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		snprintf(path, sizeof(path), DBG "%s/%s", dir, knobs[i][0]);
		if (write_str(path, knobs[i][1]))
			return -1;
	}
	return 0;
}

/* Runs an operation that may fail only with ENOMEM; retries until it works. */
#define RETRY(_metadata, expr, what) ({					\
	long __r;							\
	for (;;) {							\
		inject(1);						\
		__r = (long)(expr);					\
		inject(0);						\
		if (__r >= 0)						\
			break;						\
		ASSERT_EQ(ENOMEM, errno) {				\
			TH_LOG("%s may fail only with ENOMEM: %s",	\
			       what, strerror(errno));			\
		}							\
		injected_errors++;					\
	}								\
	__r;								\
})

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(bus_jmp, 1);
}

/* mmap() of a whole object, as a value RETRY() can test. */
static long mmap_or_err(int fd)
{
	void *p = __vmfork_mmap(fd, NPAGES * PG, 0, PROT_READ | PROT_WRITE);

	return p == MAP_FAILED ? -1 : (long)p;
}

static __u64 tag(int round, int obj, int page)
{
	return ((__u64)round << 32) | ((__u64)obj << 16) | page;
}

TEST(operations_under_allocation_failures)
{
	struct vmfork_counters c;
	/* volatile: the store loop leaves through siglongjmp() */
	volatile int round, p;
	int dev;

	if (access(DBG "failslab/probability", W_OK) ||
	    access(DBG "fail_page_alloc/probability", W_OK))
		SKIP(return, "no failslab/fail_page_alloc (use the debug kernel)");
	ASSERT_EQ(0, arm("failslab"));
	ASSERT_EQ(0, arm("fail_page_alloc"));
	ASSERT_EQ(0, write_str(DBG "fail_page_alloc/ignore-gfp-highmem", "N"));
	ASSERT_EQ(0, write_str(DBG "fail_page_alloc/min-order", "0"));
	/* This task's own memory must not be what fails. */
	ASSERT_EQ(0, mlockall(MCL_CURRENT | MCL_FUTURE));
	fail_fd = open("/proc/self/make-it-fail", O_WRONLY);
	ASSERT_LE(0, fail_fd);
	signal(SIGBUS, on_sigbus);
	dev = __vmfork_open();
	ASSERT_LE(0, dev);

	for (round = 0; round < ROUNDS; round++) {
		struct vmfork_create_mem cr = { .size = NPAGES * PG };
		struct vmfork_fork fk = {};
		volatile __u64 *volatile map;
		volatile int bus = 0;
		int a, b;

		a = RETRY(_metadata, ioctl(dev, VMFORK_CREATE_MEM, &cr), "create");
		for (p = 0; p < NPAGES; p += 2)
			RETRY(_metadata, __poke64(a, p, 0, tag(round, 1, p)), "pwrite");
		b = RETRY(_metadata, ioctl(a, VMFORK_VM_FORK, &fk), "fork");

		/* The child writes through a mapping and with pwrite. */
		map = (volatile __u64 *)RETRY(_metadata, mmap_or_err(b), "mmap");
		inject(1);
		for (p = 0; p < NPAGES; p++) {
			if (sigsetjmp(bus_jmp, 1) == 0)
				map[p * PG / 8] = tag(round, 2, p);
			else
				bus++;	/* no page for it: SIGBUS, as documented */
		}
		inject(0);
		injected_errors += bus;
		RETRY(_metadata, __poke64(b, 1, 1, 7), "pwrite child");

		/* The parent never sees the child's writes. */
		for (p = 0; p < NPAGES; p++)
			ASSERT_EQ(p % 2 ? 0ULL : tag(round, 1, p), peek64(_metadata, a, p, 0)) {
				TH_LOG("round %d: parent page %d changed", round, p);
			}

		/* After a reset the child is the fork-time content again. */
		RETRY(_metadata, ioctl(b, VMFORK_RESET, 0), "reset");
		for (p = 0; p < NPAGES; p++) {
			__u64 want = p % 2 ? 0ULL : tag(round, 1, p);

			ASSERT_EQ(want, map[p * PG / 8]) {
				TH_LOG("round %d: child page %d after reset", round, p);
			}
			ASSERT_EQ(want, peek64(_metadata, b, p, 0));
		}
		munmap((void *)map, NPAGES * PG);
		close(b);
		close(a);
	}
	close(dev);
	write_str(DBG "failslab/probability", "0");
	write_str(DBG "fail_page_alloc/probability", "0");

	TH_LOG("%ld allocation failures injected into vmfork operations",
	       injected_errors);
	EXPECT_LT(0, injected_errors) {
		TH_LOG("no failure was ever injected: the test proved nothing");
	}
	ASSERT_EQ(0, vmfork_wait_counters_idle(&c, 10000));
	EXPECT_EQ(0L, c.objects);
	EXPECT_EQ(0L, c.pages);
}

TEST_HARNESS_MAIN

// SPDX-License-Identifier: GPL-2.0
/*
 * VMFORK_RESET: a fork child drops every write since its fork, its mappings
 * stay valid, and only fork children with a zero argument qualify.
 */
#include "vmfork_test.h"

#define NPAGES		128
#define WRITTEN		64	/* pages the parent wrote before the fork */
#define DIRTY		100	/* pages the child writes before the reset */

FIXTURE(reset) {
	int dev;
	int parent;
	int child;
};

FIXTURE_SETUP(reset)
{
	unsigned int i;

	self->parent = self->child = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->parent = vmfork_create(_metadata, self->dev, PAGES(NPAGES), NULL);
	for (i = 0; i < WRITTEN; i++)
		write_page(_metadata, self->parent, i, 0x4400 + i);
	self->child = vmfork_fork(_metadata, self->parent, 0, NULL);
}

FIXTURE_TEARDOWN(reset)
{
	if (self->child >= 0)
		close(self->child);
	if (self->parent >= 0)
		close(self->parent);
	if (self->dev >= 0)
		close(self->dev);
}

static __u64 fork_tag(unsigned int page)
{
	return page < WRITTEN ? 0x4400 + page : 0;
}

static void expect_fork_time(META, int fd, const char *who)
{
	unsigned int i;

	for (i = 0; i < NPAGES; i++)
		expect_page(_metadata, fd, i, fork_tag(i), who);
}

TEST_F(reset, drops_writes)
{
	struct vmfork_stats st;
	unsigned int i;

	for (i = 0; i < DIRTY; i++)
		write_page(_metadata, self->child, i, 0x6600 + i);
	vmfork_stats(_metadata, self->child, &st);
	EXPECT_STAT(&st, private_pages, DIRTY, "child before reset");
	EXPECT_STAT(&st, resident_pages, DIRTY, "child before reset");
	EXPECT_STAT(&st, shared_pages, 0, "child before reset");
	EXPECT_STAT(&st, cow_breaks, WRITTEN, "child before reset");

	vmfork_reset(_metadata, self->child);
	expect_fork_time(_metadata, self->child, "child after reset");
	vmfork_stats(_metadata, self->child, &st);
	EXPECT_STAT(&st, private_pages, 0, "child after reset");
	EXPECT_STAT(&st, resident_pages, WRITTEN, "child after reset");
	EXPECT_STAT(&st, shared_pages, WRITTEN, "child after reset");
	EXPECT_STAT(&st, resets, 1, "child after reset");
	EXPECT_STAT(&st, depth, 1, "child after reset");
	expect_fork_time(_metadata, self->parent, "parent");

	/* A second round: writes work again and a second reset drops them. */
	write_page(_metadata, self->child, 1, 0x6700);
	write_page(_metadata, self->child, WRITTEN + 1, 0x6701);
	expect_page(_metadata, self->child, 1, 0x6700, "child writing after a reset");
	vmfork_reset(_metadata, self->child);
	expect_fork_time(_metadata, self->child, "child after the second reset");
	vmfork_stats(_metadata, self->child, &st);
	EXPECT_STAT(&st, resets, 2, "child after the second reset");
	EXPECT_STAT(&st, private_pages, 0, "child after the second reset");

	/* Reset of an unwritten child is a no-op that still counts. */
	vmfork_reset(_metadata, self->child);
	expect_fork_time(_metadata, self->child, "child after an empty reset");
}

TEST_F(reset, pages_freed)
{
	struct vmfork_counters before, after;
	unsigned int i;

	if (vmfork_read_counters(&before))
		SKIP(return, "no " VMFORK_COUNTERS_PATH " in this module");
	for (i = 0; i < DIRTY; i++)
		write_page(_metadata, self->child, i, 0x6600 + i);
	ASSERT_EQ(0, vmfork_read_counters(&after));
	EXPECT_EQ(before.pages + DIRTY, after.pages) {
		TH_LOG("%d child writes must allocate %d pages (before %ld, after %ld)",
		       DIRTY, DIRTY, before.pages, after.pages);
	}
	vmfork_reset(_metadata, self->child);
	/* Freeing may be deferred a little (RCU): poll, bounded. */
	for (i = 0; i < 100; i++) {
		ASSERT_EQ(0, vmfork_read_counters(&after));
		if (after.pages == before.pages)
			break;
		usleep(20 * 1000);
	}
	EXPECT_EQ(before.pages, after.pages) {
		TH_LOG("a reset must free the child's %d private pages (before %ld, after %ld)",
		       DIRTY, before.pages, after.pages);
	}
}

TEST_F(reset, bad_resets)
{
	EXPECT_EQ(-1, __vmfork_reset(self->parent, 0)) {
		TH_LOG("reset of an object that is no fork child must fail");
	}
	EXPECT_EQ(EINVAL, errno) {
		TH_LOG("reset of a created object must fail with EINVAL, not %s",
		       strerror(errno));
	}
	EXPECT_EQ(-1, __vmfork_reset(self->child, 1)) {
		TH_LOG("reset with a nonzero argument must fail");
	}
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, __vmfork_reset(self->child, 1UL << 63));
	EXPECT_EQ(EINVAL, errno);

	/* A parent that forked is still not a fork child. */
	write_page(_metadata, self->parent, 0, 0x1234);
	EXPECT_EQ(-1, __vmfork_reset(self->parent, 0));
	EXPECT_EQ(EINVAL, errno);
	expect_page(_metadata, self->parent, 0, 0x1234,
		    "a refused reset must not change the parent");
	expect_page(_metadata, self->child, 0, 0x4400,
		    "a refused reset must not change the child");
	{
		struct vmfork_stats st;

		vmfork_stats(_metadata, self->child, &st);
		EXPECT_STAT(&st, resets, 0, "child after refused resets");
	}
}

TEST_F(reset, through_mapping)
{
	size_t size = PAGES(NPAGES);
	volatile __u64 *cm, *pm;
	unsigned int i;

	cm = vmfork_mmap(_metadata, self->child, size, 0, PROT_READ | PROT_WRITE);
	pm = vmfork_mmap(_metadata, self->parent, size, 0, PROT_READ | PROT_WRITE);
	for (i = 0; i < NPAGES; i++)
		cm[i * PG / 8] = 0xdd00 + i;
	for (i = 0; i < NPAGES; i++) {
		ASSERT_EQ(0xdd00ULL + i, cm[i * PG / 8]);
	}

	vmfork_reset(_metadata, self->child);
	for (i = 0; i < NPAGES; i++) {
		const void *p = (const char *)cm + i * PG;

		ASSERT_TRUE(fork_tag(i) ? page_is(p, fork_tag(i)) : page_is_zero(p)) {
			TH_LOG("after a reset an old mapping must show fork-time page %u (word 0 %#llx)",
			       i, (unsigned long long)cm[i * PG / 8]);
		}
	}
	/* Writing through the old mapping works again, isolated. */
	for (i = 0; i < NPAGES; i += 3)
		cm[i * PG / 8 + 1] = 0xee00 + i;
	for (i = 0; i < NPAGES; i += 3) {
		ASSERT_EQ(0xee00ULL + i, peek64(_metadata, self->child, i, 1));
		ASSERT_EQ(fork_tag(i) ? fork_tag(i) ^ (1ULL << 48) : 0,
			  pm[i * PG / 8 + 1]) {
			TH_LOG("a child store after reset must not reach the parent (page %u)",
			       i);
		}
	}
	munmap((void *)cm, size);
	munmap((void *)pm, size);
}

TEST_F(reset, child_with_children)
{
	struct vmfork_stats st;
	int grandchild;
	unsigned int i;

	/* The child writes X, forks, writes Y; reset drops both. */
	write_page(_metadata, self->child, 0, 0xaa00);
	write_page(_metadata, self->child, WRITTEN + 2, 0xaa01);
	grandchild = vmfork_fork(_metadata, self->child, 0, NULL);
	write_page(_metadata, self->child, 1, 0xbb00);
	write_page(_metadata, self->child, 0, 0xbb01);

	vmfork_reset(_metadata, self->child);
	expect_fork_time(_metadata, self->child,
			 "a reset child with children returns to its own fork time");
	vmfork_stats(_metadata, self->child, &st);
	EXPECT_STAT(&st, private_pages, 0, "child with children after reset");
	EXPECT_STAT(&st, resident_pages, WRITTEN, "child with children after reset");

	/* The grandchild keeps what it inherited. */
	for (i = 0; i < NPAGES; i++) {
		__u64 tag = fork_tag(i);

		if (i == 0)
			tag = 0xaa00;
		if (i == WRITTEN + 2)
			tag = 0xaa01;
		expect_page(_metadata, grandchild, i, tag,
			    "a grandchild must not change when its parent resets");
	}
	/* And a reset of the grandchild returns to the X state. */
	write_page(_metadata, grandchild, 5, 0xcc00);
	vmfork_reset(_metadata, grandchild);
	expect_page(_metadata, grandchild, 0, 0xaa00, "grandchild after its reset");
	expect_page(_metadata, grandchild, 5, fork_tag(5), "grandchild after its reset");
	close(grandchild);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

// SPDX-License-Identifier: GPL-2.0
/*
 * VMFORK_FORK_TEMPLATE: the parent is frozen for good. Every way of writing
 * it fails cleanly (SIGBUS through an old writable mapping, EPERM for
 * pwrite, writable mmap and reset), reading keeps working, and its children
 * are ordinary writable objects isolated from each other and from it.
 */
#include <setjmp.h>
#include <signal.h>

#include "vmfork_test.h"

#define NPAGES		8

FIXTURE(template) {
	int dev;
	int tmpl;
	__u64 tid;
	void *map;		/* writable mapping made before the freeze */
};

FIXTURE_SETUP(template)
{
	unsigned int i;

	self->tmpl = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->tmpl = vmfork_create(_metadata, self->dev, PAGES(NPAGES), &self->tid);
	self->map = vmfork_mmap(_metadata, self->tmpl, PAGES(NPAGES), 0,
				PROT_READ | PROT_WRITE);
	/* Pages 0..5 written, 6 and 7 never. */
	for (i = 0; i < NPAGES - 2; i++)
		page_fill((char *)self->map + i * PG, 0x7700 + i);
}

FIXTURE_TEARDOWN(template)
{
	if (self->map)
		munmap(self->map, PAGES(NPAGES));
	if (self->tmpl >= 0)
		close(self->tmpl);
	if (self->dev >= 0)
		close(self->dev);
}

static __u64 tmpl_tag(unsigned int page)
{
	return page < NPAGES - 2 ? 0x7700 + page : 0;
}

static void expect_template_intact(META, int fd)
{
	unsigned int i;

	for (i = 0; i < NPAGES; i++)
		expect_page(_metadata, fd, i, tmpl_tag(i), "template content");
}

static sigjmp_buf sigbus_jmp;
static volatile sig_atomic_t sigbus_hits;

static void sigbus_handler(int sig)
{
	(void)sig;
	sigbus_hits++;
	siglongjmp(sigbus_jmp, 1);
}

/* Stores to @p; returns true if the store raised SIGBUS. */
static bool store_faults(volatile __u64 *p, __u64 v)
{
	struct sigaction sa, old;
	bool faulted;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sigbus_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(sigbus_jmp, 1) == 0) {
		*p = v;
		faulted = false;
	} else {
		faulted = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return faulted;
}

TEST_F(template, writes_refused)
{
	struct vmfork_stats st;
	__u64 buf[PG / 8];
	unsigned int i;
	int child;
	void *ro;

	child = vmfork_fork(_metadata, self->tmpl, VMFORK_FORK_TEMPLATE, NULL);

	/* The old writable mapping: reads work, stores raise SIGBUS. */
	EXPECT_TRUE(page_is(self->map, 0x7700)) {
		TH_LOG("reading a template through an old mapping must work");
	}
	for (i = 0; i < NPAGES; i++) {
		EXPECT_TRUE(store_faults((volatile __u64 *)((char *)self->map + i * PG),
					 0xbad)) {
			TH_LOG("a store to template page %u through an old writable mapping must raise SIGBUS",
			       i);
		}
	}

	/* pwrite: EPERM, nothing written. */
	memset(buf, 0x5a, sizeof(buf));
	EXPECT_EQ(-1, pwrite(self->tmpl, buf, PG, 0)) {
		TH_LOG("pwrite to a template must fail");
	}
	EXPECT_EQ(EPERM, errno) {
		TH_LOG("pwrite to a template must fail with EPERM, not %s",
		       strerror(errno));
	}
	EXPECT_EQ(-1, pwrite(self->tmpl, buf, 8, PAGES(NPAGES - 1))) {
		TH_LOG("pwrite to a never-written template page must fail");
	}
	EXPECT_EQ(EPERM, errno);

	/* A new writable mapping: EPERM. A read-only one works. */
	EXPECT_EQ(MAP_FAILED, __vmfork_mmap(self->tmpl, PG, 0,
					    PROT_READ | PROT_WRITE)) {
		TH_LOG("a new writable mapping of a template must fail");
	}
	EXPECT_EQ(EPERM, errno) {
		TH_LOG("a writable mmap of a template must fail with EPERM, not %s",
		       strerror(errno));
	}
	ro = vmfork_mmap(_metadata, self->tmpl, PAGES(NPAGES), 0, PROT_READ);
	for (i = 0; i < NPAGES; i++) {
		const void *p = (char *)ro + i * PG;

		EXPECT_TRUE(tmpl_tag(i) ? page_is(p, tmpl_tag(i)) : page_is_zero(p)) {
			TH_LOG("a read-only mapping of a template must show page %u", i);
		}
	}
	/*
	 * Upgrading a read-only mapping may be refused outright; if it is
	 * allowed, a store through it must still fault.
	 */
	if (!mprotect(ro, PG, PROT_READ | PROT_WRITE)) {
		EXPECT_TRUE(store_faults((volatile __u64 *)ro, 0xbad)) {
			TH_LOG("a store through an mprotect()ed template mapping must raise SIGBUS");
		}
	}
	munmap(ro, PAGES(NPAGES));

	/* Reset of a template: EPERM (a template is never writable). */
	EXPECT_EQ(-1, __vmfork_reset(self->tmpl, 0));
	EXPECT_TRUE(errno == EPERM || errno == EINVAL) {
		TH_LOG("reset of a root template must fail with EPERM (or EINVAL: not a child), not %s",
		       strerror(errno));
	}

	vmfork_stats(_metadata, self->tmpl, &st);
	EXPECT_STAT(&st, flags & VMFORK_STATS_TEMPLATE, VMFORK_STATS_TEMPLATE,
		    "template");
	EXPECT_STAT(&st, forks, 1, "template");
	EXPECT_STAT(&st, private_pages, 0, "template");
	EXPECT_STAT(&st, resident_pages, NPAGES - 2, "template");
	vmfork_stats(_metadata, child, &st);
	EXPECT_STAT(&st, flags, 0, "a template's child");
	EXPECT_STAT(&st, parent_id, self->tid, "a template's child");

	expect_template_intact(_metadata, self->tmpl);
	expect_template_intact(_metadata, child);
	close(child);
}

TEST_F(template, reset_of_child_template)
{
	int child, grandchild;

	/* A fork child frozen as a template: reset is EPERM, not EINVAL. */
	child = vmfork_fork(_metadata, self->tmpl, 0, NULL);
	write_page(_metadata, child, 0, 0x8800);
	grandchild = vmfork_fork(_metadata, child, VMFORK_FORK_TEMPLATE, NULL);
	EXPECT_EQ(-1, __vmfork_reset(child, 0)) {
		TH_LOG("reset of a template must fail");
	}
	EXPECT_EQ(EPERM, errno) {
		TH_LOG("reset of a template that is a fork child must fail with EPERM, not %s",
		       strerror(errno));
	}
	expect_page(_metadata, child, 0, 0x8800, "child template after a refused reset");
	expect_page(_metadata, grandchild, 0, 0x8800, "grandchild");
	close(grandchild);
	close(child);
}

TEST_F(template, children_isolated)
{
	int kids[4], again;
	struct vmfork_stats st;
	unsigned int k, i;

	kids[0] = vmfork_fork(_metadata, self->tmpl, VMFORK_FORK_TEMPLATE, NULL);
	/* Later forks work with or without the flag. */
	kids[1] = vmfork_fork(_metadata, self->tmpl, 0, NULL);
	kids[2] = vmfork_fork(_metadata, self->tmpl, VMFORK_FORK_TEMPLATE, NULL);
	kids[3] = vmfork_fork(_metadata, self->tmpl, 0, NULL);

	for (k = 0; k < 4; k++) {
		for (i = 0; i < NPAGES; i++)
			expect_page(_metadata, kids[k], i, tmpl_tag(i),
				    "a fresh child of the template");
	}
	/* Each child writes its own tag everywhere. */
	for (k = 0; k < 4; k++) {
		for (i = 0; i < NPAGES; i += 1 + k)
			write_page(_metadata, kids[k], i, 0x9000 + k * 0x100 + i);
	}
	for (k = 0; k < 4; k++) {
		for (i = 0; i < NPAGES; i++) {
			__u64 tag = i % (1 + k) ? tmpl_tag(i) : 0x9000 + k * 0x100 + i;

			expect_page(_metadata, kids[k], i, tag,
				    "template children must not see each other");
		}
	}
	expect_template_intact(_metadata, self->tmpl);

	/* A child forked after the others wrote still sees the template. */
	again = vmfork_fork(_metadata, self->tmpl, 0, NULL);
	expect_template_intact(_metadata, again);
	vmfork_stats(_metadata, self->tmpl, &st);
	EXPECT_STAT(&st, forks, 5, "template");
	EXPECT_STAT(&st, flags, VMFORK_STATS_TEMPLATE, "template");

	/* Closing the template's fd and mapping keeps its children whole. */
	munmap(self->map, PAGES(NPAGES));
	self->map = NULL;
	close(self->tmpl);
	self->tmpl = -1;
	expect_template_intact(_metadata, again);
	for (i = 0; i < NPAGES; i++) {
		expect_page(_metadata, kids[3], i,
			    i % 4 ? tmpl_tag(i) : 0x9300 + i, "child after template close");
	}
	close(again);
	for (k = 0; k < 4; k++)
		close(kids[k]);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

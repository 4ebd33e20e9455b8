// SPDX-License-Identifier: GPL-2.0
/*
 * VMFORK_GET_STATS: exact page accounting (resident, private, shared, COW
 * breaks) through scripted sequences, and a bounded chain_length.
 */
#include "vmfork_test.h"

#define NPAGES		16

FIXTURE(stats) {
	int dev;
	int obj;
	__u64 id;
	void *map;
};

FIXTURE_SETUP(stats)
{
	self->obj = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->obj = vmfork_create(_metadata, self->dev, PAGES(NPAGES), &self->id);
	self->map = vmfork_mmap(_metadata, self->obj, PAGES(NPAGES), 0,
				PROT_READ | PROT_WRITE);
}

FIXTURE_TEARDOWN(stats)
{
	if (self->map)
		munmap(self->map, PAGES(NPAGES));
	if (self->obj >= 0)
		close(self->obj);
	if (self->dev >= 0)
		close(self->dev);
}

static void store(void *map, unsigned int page, __u64 v)
{
	*(volatile __u64 *)((char *)map + page * PG + 8) = v;
}

TEST_F(stats, scripted_sequence)
{
	struct vmfork_stats st;
	__u64 cid = 0;
	unsigned int i;
	void *cm;
	int child;

	/* create 16 pages, write pages 0-3 */
	for (i = 0; i < 4; i++)
		store(self->map, i, 0x100 + i);
	expect_counts(_metadata, self->obj, "parent after 4 writes", 4, 4, 0, 0);

	/* fork */
	child = vmfork_fork(_metadata, self->obj, 0, &cid);
	expect_counts(_metadata, self->obj, "parent after fork", 4, 0, 4, 0);
	vmfork_stats(_metadata, self->obj, &st);
	EXPECT_STAT(&st, forks, 1, "parent after fork");
	EXPECT_STAT(&st, depth, 0, "parent after fork");
	EXPECT_STAT(&st, parent_id, 0, "parent after fork");
	EXPECT_STAT(&st, id, self->id, "parent after fork");
	expect_counts(_metadata, child, "child after fork", 4, 0, 4, 0);
	vmfork_stats(_metadata, child, &st);
	EXPECT_STAT(&st, depth, 1, "child after fork");
	EXPECT_STAT(&st, parent_id, self->id, "child after fork");
	EXPECT_STAT(&st, id, cid, "child after fork");
	EXPECT_STAT(&st, forks, 0, "child after fork");
	EXPECT_STAT(&st, size, PAGES(NPAGES), "child after fork");

	/* child writes pages 0, 1 and 8 (and 0 again: counts once) */
	cm = vmfork_mmap(_metadata, child, PAGES(NPAGES), 0, PROT_READ | PROT_WRITE);
	store(cm, 0, 0x200);
	store(cm, 1, 0x201);
	store(cm, 8, 0x208);
	store(cm, 0, 0x210);
	expect_counts(_metadata, child, "child after writing 0, 1, 8", 5, 3, 2, 2);
	expect_counts(_metadata, self->obj, "parent after child writes", 4, 0, 4, 0);

	/* parent writes page 2 */
	store(self->map, 2, 0x302);
	expect_counts(_metadata, self->obj, "parent after writing page 2", 4, 1, 3, 1);
	expect_counts(_metadata, child, "child after parent write", 5, 3, 2, 2);

	/* reset child */
	vmfork_reset(_metadata, child);
	expect_counts(_metadata, child, "child after reset", 4, 0, 4, 2);
	vmfork_stats(_metadata, child, &st);
	EXPECT_STAT(&st, resets, 1, "child after reset");
	for (i = 0; i < NPAGES; i++) {
		__u64 want = i < 4 ? 0x100 + i : 0;

		EXPECT_EQ(want, peek64(_metadata, child, i, 1)) {
			TH_LOG("after a reset the child page %u must be back to fork time",
			       i);
		}
	}
	expect_counts(_metadata, self->obj, "parent after child reset", 4, 1, 3, 1);
	munmap(cm, PAGES(NPAGES));
	close(child);
}

TEST_F(stats, pwrite_and_reads)
{
	struct vmfork_stats st;
	__u64 buf[PG / 8], gid = 0, cid = 0;
	int child, grand;
	unsigned int i;
	__u64 sum = 0;

	/* Reads (mmap and pread) of never-written pages allocate nothing. */
	for (i = 0; i < NPAGES; i++)
		sum += *(volatile __u64 *)((char *)self->map + i * PG);
	ASSERT_EQ((ssize_t)sizeof(buf), pread(self->obj, buf, sizeof(buf), 0));
	EXPECT_EQ(0ULL, sum);
	expect_counts(_metadata, self->obj, "after reading only", 0, 0, 0, 0);

	/* pwrite page 0 twice, store to page 1: two fresh pages, no COW. */
	poke64(_metadata, self->obj, 0, 0, 1);
	poke64(_metadata, self->obj, 0, 1, 2);
	store(self->map, 1, 3);
	expect_counts(_metadata, self->obj, "after pwrite + store", 2, 2, 0, 0);

	child = vmfork_fork(_metadata, self->obj, 0, &cid);
	grand = vmfork_fork(_metadata, child, 0, &gid);
	vmfork_stats(_metadata, child, &st);
	EXPECT_STAT(&st, forks, 1, "child that forked");
	vmfork_stats(_metadata, grand, &st);
	EXPECT_STAT(&st, depth, 2, "grandchild");
	EXPECT_STAT(&st, parent_id, cid, "grandchild");
	expect_counts(_metadata, child, "child after its fork", 2, 0, 2, 0);
	expect_counts(_metadata, grand, "grandchild after fork", 2, 0, 2, 0);

	/* One pwrite crossing from page 0 into page 1: two COW breaks. */
	memset(buf, 0x77, 16);
	ASSERT_EQ(16, pwrite(grand, buf, 16, PG - 8));
	expect_counts(_metadata, grand, "grandchild after a crossing pwrite",
		      2, 2, 0, 2);
	expect_counts(_metadata, child, "child after grandchild writes", 2, 0, 2, 0);

	/* A fresh page in the root: allocation, no COW. */
	poke64(_metadata, self->obj, 5, 0, 5);
	expect_counts(_metadata, self->obj, "root after a fresh write", 3, 1, 2, 0);

	/* A second fork of the root: its private pages become shared. */
	close(child);
	child = vmfork_fork(_metadata, self->obj, 0, NULL);
	expect_counts(_metadata, self->obj, "root after its second fork", 3, 0, 3, 0);
	vmfork_stats(_metadata, self->obj, &st);
	EXPECT_STAT(&st, forks, 2, "root after its second fork");
	expect_counts(_metadata, child, "second child", 3, 0, 3, 0);

	/* The root closed: the grandchild's view does not change. */
	munmap(self->map, PAGES(NPAGES));
	self->map = NULL;
	close(self->obj);
	self->obj = -1;
	expect_counts(_metadata, grand, "grandchild after the root closed", 2, 2, 0, 2);
	expect_counts(_metadata, child, "second child after the root closed",
		      3, 0, 3, 0);
	EXPECT_EQ(0x7777777777777777ULL, peek64(_metadata, grand, 1, 0));
	EXPECT_EQ(1ULL, peek64(_metadata, child, 0, 0));
	EXPECT_EQ(5ULL, peek64(_metadata, child, 5, 0));
	close(grand);
	close(child);
}

/*
 * /sys/kernel/debug/vmfork/objects shows every object with the figures of
 * VMFORK_GET_STATS (read while they live: it takes each object's lock).
 */
TEST_F(stats, debugfs_matches_stats)
{
	unsigned long long id, parent, depth, size_kib, res, sh, priv, cow, forks, resets, chain;
	struct vmfork_stats st[2];
	int fds[2], found = 0, i;
	char line[512];
	FILE *f;

	store(self->map, 0, 1);
	store(self->map, 5, 2);
	fds[0] = self->obj;
	fds[1] = vmfork_fork(_metadata, self->obj, 0, NULL);
	store(self->map, 5, 3);
	for (i = 0; i < 2; i++)
		vmfork_stats(_metadata, fds[i], &st[i]);

	f = fopen("/sys/kernel/debug/vmfork/objects", "r");
	if (!f)
		SKIP(return, "no debugfs vmfork/objects: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		int pid;

		if (sscanf(line, "%llu %llu %llu %d %llu %llu %llu %llu %llu %llu %llu %llu",
			   &id, &parent, &depth, &pid, &size_kib, &res, &sh, &priv,
			   &cow, &forks, &resets, &chain) != 12)
			continue;
		for (i = 0; i < 2; i++) {
			if (id != st[i].id)
				continue;
			found++;
			EXPECT_EQ(st[i].parent_id, parent);
			EXPECT_EQ(st[i].depth, depth);
			EXPECT_EQ(st[i].size >> 10, size_kib);
			EXPECT_EQ(st[i].resident_pages, res);
			EXPECT_EQ(st[i].shared_pages, sh);
			EXPECT_EQ(st[i].private_pages, priv);
			EXPECT_EQ(st[i].cow_breaks, cow);
			EXPECT_EQ(st[i].forks, forks);
			EXPECT_EQ(st[i].resets, resets);
			EXPECT_EQ(st[i].chain_length, chain);
			EXPECT_EQ(getpid(), pid);
		}
	}
	fclose(f);
	EXPECT_EQ(2, found) {
		TH_LOG("debugfs must list the parent and the child, found %d", found);
	}
	close(fds[1]);
}

TEST_F(stats, chain_length_bounded)
{
	struct vmfork_stats st;
	unsigned int i;
	int child;

	store(self->map, 0, 1);
	for (i = 0; i < 20; i++) {
		child = vmfork_fork(_metadata, self->obj, 0, NULL);
		store(self->map, i % NPAGES, 100 + i);
		close(child);
	}
	vmfork_stats(_metadata, self->obj, &st);
	EXPECT_LE(st.chain_length, 2ULL) {
		TH_LOG("20 rounds of {fork, write, close child} must not grow chain_length (%llu)",
		       (unsigned long long)st.chain_length);
	}
	EXPECT_STAT(&st, forks, 20, "parent after 20 forks");
	EXPECT_STAT(&st, resident_pages, NPAGES, "parent after 20 forks");
	for (i = 0; i < NPAGES; i++) {
		__u64 want = i < 4 ? 116 + i : 100 + i;

		EXPECT_EQ(want, peek64(_metadata, self->obj, i, 1)) {
			TH_LOG("page %u must hold the latest write", i);
		}
	}
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

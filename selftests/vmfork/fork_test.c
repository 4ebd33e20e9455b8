// SPDX-License-Identifier: GPL-2.0
/*
 * VMFORK_VM_FORK from the host side: isolation in both directions for
 * stores through mappings and for pwrite, closing in every order, forks
 * racing with a thread that keeps writing the parent, and a live fork that
 * leaves the parent's clean pages mapped.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "vmfork_test.h"

#define NPAGES		16

FIXTURE(fork) {
	int dev;
	int parent;
	__u64 pid;
};

FIXTURE_SETUP(fork)
{
	self->parent = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->parent = vmfork_create(_metadata, self->dev, PAGES(NPAGES),
				     &self->pid);
}

FIXTURE_TEARDOWN(fork)
{
	if (self->parent >= 0)
		close(self->parent);
	if (self->dev >= 0)
		close(self->dev);
}

static void fill_mapped(void *map, unsigned int page, __u64 tag)
{
	page_fill((char *)map + page * PG, tag);
}

static bool mapped_is(void *map, unsigned int page, __u64 tag)
{
	const void *p = (char *)map + page * PG;

	return tag ? page_is(p, tag) : page_is_zero(p);
}

TEST_F(fork, mmap_isolation)
{
	size_t size = PAGES(NPAGES);
	struct vmfork_stats st;
	void *pm, *cm;
	unsigned int i;
	__u64 cid;
	int child;

	pm = vmfork_mmap(_metadata, self->parent, size, 0, PROT_READ | PROT_WRITE);
	/* Pages 0..7 written, 8..15 never written. */
	for (i = 0; i < NPAGES / 2; i++)
		fill_mapped(pm, i, 0x1000 + i);

	child = vmfork_fork(_metadata, self->parent, 0, &cid);
	vmfork_stats(_metadata, child, &st);
	EXPECT_STAT(&st, parent_id, self->pid, "child");
	EXPECT_STAT(&st, depth, 1, "child");
	EXPECT_STAT(&st, size, size, "child");
	cm = vmfork_mmap(_metadata, child, size, 0, PROT_READ | PROT_WRITE);

	for (i = 0; i < NPAGES; i++) {
		ASSERT_TRUE(mapped_is(cm, i, i < NPAGES / 2 ? 0x1000 + i : 0)) {
			TH_LOG("the child must see the parent's fork-time page %u", i);
		}
	}

	/* Parent -> child: the parent overwrites every page. */
	for (i = 0; i < NPAGES; i++)
		fill_mapped(pm, i, 0x2000 + i);
	for (i = 0; i < NPAGES; i++) {
		ASSERT_TRUE(mapped_is(cm, i, i < NPAGES / 2 ? 0x1000 + i : 0)) {
			TH_LOG("a parent store to page %u must not reach the child", i);
		}
		expect_page(_metadata, child, i, i < NPAGES / 2 ? 0x1000 + i : 0,
			    "child via pread after parent stores");
	}

	/* Child -> parent. */
	for (i = 0; i < NPAGES; i++)
		fill_mapped(cm, i, 0x3000 + i);
	for (i = 0; i < NPAGES; i++) {
		ASSERT_TRUE(mapped_is(pm, i, 0x2000 + i)) {
			TH_LOG("a child store to page %u must not reach the parent", i);
		}
		ASSERT_TRUE(mapped_is(cm, i, 0x3000 + i)) {
			TH_LOG("the child must see its own store to page %u", i);
		}
	}

	munmap(cm, size);
	munmap(pm, size);
	close(child);
}

TEST_F(fork, pwrite_isolation)
{
	unsigned int i;
	int child;

	for (i = 0; i < NPAGES; i += 2)
		write_page(_metadata, self->parent, i, 0x100 + i);

	child = vmfork_fork(_metadata, self->parent, 0, NULL);
	for (i = 0; i < NPAGES; i++) {
		expect_page(_metadata, child, i, i % 2 ? 0 : 0x100 + i,
			    "child right after fork");
	}
	for (i = 0; i < NPAGES; i++)
		write_page(_metadata, self->parent, i, 0x200 + i);
	for (i = 0; i < NPAGES; i++) {
		expect_page(_metadata, child, i, i % 2 ? 0 : 0x100 + i,
			    "child after parent pwrites");
	}
	for (i = 0; i < NPAGES; i++)
		write_page(_metadata, child, i, 0x300 + i);
	for (i = 0; i < NPAGES; i++) {
		expect_page(_metadata, self->parent, i, 0x200 + i,
			    "parent after child pwrites");
		expect_page(_metadata, child, i, 0x300 + i,
			    "child after its own pwrites");
	}

	/* Sub-page pwrite in the child only changes those bytes there. */
	close(child);
	child = vmfork_fork(_metadata, self->parent, 0, NULL);
	poke64(_metadata, child, 3, 7, 0xabcdefULL);
	EXPECT_EQ(0xabcdefULL, peek64(_metadata, child, 3, 7));
	EXPECT_EQ(peek64(_metadata, self->parent, 3, 6),
		  peek64(_metadata, child, 3, 6)) {
		TH_LOG("a partial write must copy the rest of the page");
	}
	EXPECT_NE(0xabcdefULL, peek64(_metadata, self->parent, 3, 7)) {
		TH_LOG("a child's partial write must not reach the parent");
	}
	close(child);
}

TEST_F(fork, parent_closed_first)
{
	size_t size = PAGES(NPAGES);
	unsigned int i;
	void *cm;
	int child, grandchild;

	for (i = 0; i < NPAGES; i++)
		write_page(_metadata, self->parent, i, 0x500 + i);
	child = vmfork_fork(_metadata, self->parent, 0, NULL);
	write_page(_metadata, self->parent, 0, 0x5ff);
	close(self->parent);
	self->parent = -1;

	cm = vmfork_mmap(_metadata, child, size, 0, PROT_READ | PROT_WRITE);
	for (i = 0; i < NPAGES; i++) {
		ASSERT_TRUE(mapped_is(cm, i, 0x500 + i)) {
			TH_LOG("a child must keep its content (page %u) after its parent is closed",
			       i);
		}
	}
	grandchild = vmfork_fork(_metadata, child, 0, NULL);
	close(child);
	/* The child's mapping keeps it alive and usable without its fd. */
	fill_mapped(cm, 1, 0x600);
	for (i = 0; i < NPAGES; i++) {
		expect_page(_metadata, grandchild, i, 0x500 + i,
			    "grandchild after its parent's fd was closed");
		ASSERT_TRUE(mapped_is(cm, i, i == 1 ? 0x600 : 0x500 + i)) {
			TH_LOG("a mapping must outlive its fd (page %u)", i);
		}
	}
	munmap(cm, size);
	for (i = 0; i < NPAGES; i++)
		expect_page(_metadata, grandchild, i, 0x500 + i, "last survivor");
	close(grandchild);
}

TEST_F(fork, close_while_mapped)
{
	size_t size = PAGES(NPAGES);
	void *pm, *cm;
	unsigned int i;
	int child;

	pm = vmfork_mmap(_metadata, self->parent, size, 0, PROT_READ | PROT_WRITE);
	for (i = 0; i < NPAGES; i++)
		fill_mapped(pm, i, 0x700 + i);
	child = vmfork_fork(_metadata, self->parent, 0, NULL);
	cm = vmfork_mmap(_metadata, child, size, 0, PROT_READ | PROT_WRITE);

	/* Both fds closed, both mappings alive: each still isolated. */
	close(child);
	close(self->parent);
	self->parent = -1;
	fill_mapped(pm, 2, 0x7aa);
	fill_mapped(cm, 3, 0x7bb);
	for (i = 0; i < NPAGES; i++) {
		ASSERT_TRUE(mapped_is(pm, i, i == 2 ? 0x7aa : 0x700 + i)) {
			TH_LOG("the parent mapping must stay private (page %u)", i);
		}
		ASSERT_TRUE(mapped_is(cm, i, i == 3 ? 0x7bb : 0x700 + i)) {
			TH_LOG("the child mapping must stay private (page %u)", i);
		}
	}
	/* Unmap the parent first: the child keeps the shared pages. */
	munmap(pm, size);
	for (i = 0; i < NPAGES; i++) {
		ASSERT_TRUE(mapped_is(cm, i, i == 3 ? 0x7bb : 0x700 + i)) {
			TH_LOG("the child must keep page %u after the parent is gone", i);
		}
	}
	munmap(cm, size);
}

/*
 * Fork racing with pwrite: a writer thread rewrites pages 0..N-1 over and
 * over with self-checking patterns; seq goes up by one per page written.
 * started[i] is published before a page's pwrite, done[i] after it.
 */
#define RACE_PAGES	32
#define RACE_FORKS	6

struct race {
	int fd;
	void *map;
	atomic_int stop;
	atomic_int failed;
	atomic_ullong started[RACE_PAGES];
	atomic_ullong done[RACE_PAGES];
	atomic_ullong sweeps;
};

static void *pwrite_writer(void *arg)
{
	struct race *r = arg;
	static __u64 buf[PG / sizeof(__u64)];
	__u64 seq = 0;
	unsigned int i;

	while (!atomic_load(&r->stop)) {
		for (i = 0; i < RACE_PAGES; i++) {
			seq++;
			pattern_fill(buf, seq, i);
			atomic_store(&r->started[i], seq);
			if (pwrite(r->fd, buf, PG, i * PG) != (ssize_t)PG) {
				atomic_store(&r->failed, errno ? errno : -1);
				return NULL;
			}
			atomic_store(&r->done[i], seq);
		}
		atomic_fetch_add(&r->sweeps, 1);
	}
	return NULL;
}

static bool wait_sweeps(struct race *r, __u64 n, int timeout_ms)
{
	__u64 end = now_ms() + timeout_ms;

	while (atomic_load(&r->sweeps) < n && !atomic_load(&r->failed)) {
		if (now_ms() > end)
			return false;
		usleep(1000);
	}
	return !atomic_load(&r->failed);
}

TEST_F(fork, fork_during_pwrite)
{
	static __u64 lo[RACE_PAGES], hi[RACE_PAGES], buf[PG / sizeof(__u64)];
	struct race *r;
	pthread_t th;
	unsigned int f, i;
	int child, ret;

	r = calloc(1, sizeof(*r));
	ASSERT_NE(NULL, r);
	close(self->parent);
	self->parent = vmfork_create(_metadata, self->dev, PAGES(RACE_PAGES), NULL);
	r->fd = self->parent;
	ASSERT_EQ(0, pthread_create(&th, NULL, pwrite_writer, r));
	ASSERT_TRUE(wait_sweeps(r, 1, 10000)) {
		TH_LOG("the writer must complete a sweep (error %d)",
		       atomic_load(&r->failed));
	}

	for (f = 0; f < RACE_FORKS; f++) {
		/* A page's last completed write before the fork ... */
		for (i = 0; i < RACE_PAGES; i++)
			lo[i] = atomic_load(&r->done[i]);
		child = __vmfork_fork(self->parent, 0, NULL);
		/* ... and the newest write that may have started. */
		for (i = 0; i < RACE_PAGES; i++)
			hi[i] = atomic_load(&r->started[i]);
		if (child < 0) {
			atomic_store(&r->stop, 1);
			pthread_join(th, NULL);
		}
		ASSERT_LE(0, child) {
			TH_LOG("fork during pwrite must work: %s", strerror(errno));
		}

		for (i = 0; i < RACE_PAGES; i++) {
			__u64 seq = 0, idx = 0;

			ASSERT_EQ((ssize_t)PG, pread(child, buf, PG, i * PG));
			ret = pattern_check(buf, &seq, &idx);
			EXPECT_EQ(0, ret) {
				TH_LOG("fork %u: child page %u is %s", f, i,
				       ret > 0 ? "zero" : "torn (mixes two writes)");
			}
			EXPECT_EQ((__u64)i, idx) {
				TH_LOG("fork %u: child page %u holds page %llu's data",
				       f, i, (unsigned long long)idx);
			}
			EXPECT_TRUE(seq >= lo[i] && seq <= hi[i]) {
				TH_LOG("fork %u: child page %u has write %llu, outside [%llu, %llu]",
				       f, i, (unsigned long long)seq,
				       (unsigned long long)lo[i],
				       (unsigned long long)hi[i]);
			}
		}
		/* The child is frozen in time while the writer goes on. */
		ASSERT_TRUE(wait_sweeps(r, atomic_load(&r->sweeps) + 2, 10000));
		for (i = 0; i < RACE_PAGES; i++) {
			__u64 seq = 0, idx = 0;

			ASSERT_EQ((ssize_t)PG, pread(child, buf, PG, i * PG));
			ASSERT_EQ(0, pattern_check(buf, &seq, &idx));
			ASSERT_TRUE(seq >= lo[i] && seq <= hi[i]) {
				TH_LOG("fork %u: child page %u changed after the fork", f, i);
			}
		}
		close(child);
	}

	atomic_store(&r->stop, 1);
	ASSERT_EQ(0, pthread_join(th, NULL));
	ASSERT_EQ(0, atomic_load(&r->failed)) {
		TH_LOG("the parent's pwrites must keep working across forks (error %d)",
		       atomic_load(&r->failed));
	}
	for (i = 0; i < RACE_PAGES; i++) {
		__u64 seq = 0, idx = 0;

		ASSERT_EQ((ssize_t)PG, pread(self->parent, buf, PG, i * PG));
		ASSERT_EQ(0, pattern_check(buf, &seq, &idx));
		EXPECT_EQ(atomic_load(&r->done[i]), seq) {
			TH_LOG("the parent's page %u must hold its last write", i);
		}
	}
	free(r);
}

/*
 * Fork racing with stores through a mapping: one 8-byte store per page,
 * sweeping pages 0..N-1 with value v, then again with v + 1, ... Stores are
 * ordered (x86-TSO and a compiler barrier), so a fork must capture a cut:
 * pages 0..k-1 hold v + 1 and pages k..N-1 hold v.
 */
static void *mmap_writer(void *arg)
{
	struct race *r = arg;
	__u64 v = 0;
	unsigned int i;

	while (!atomic_load(&r->stop)) {
		v++;
		for (i = 0; i < RACE_PAGES; i++) {
			*(volatile __u64 *)((char *)r->map + i * PG) = v;
			atomic_signal_fence(memory_order_seq_cst);
		}
		atomic_store(&r->sweeps, v);
	}
	return NULL;
}

TEST_F(fork, fork_during_mmap_stores)
{
	static __u64 child_val[RACE_PAGES];
	size_t size = PAGES(RACE_PAGES);
	__u64 before, after;
	struct race *r;
	pthread_t th;
	unsigned int f, i, k;
	int child;

	r = calloc(1, sizeof(*r));
	ASSERT_NE(NULL, r);
	close(self->parent);
	self->parent = vmfork_create(_metadata, self->dev, size, NULL);
	r->map = vmfork_mmap(_metadata, self->parent, size, 0,
			     PROT_READ | PROT_WRITE);
	ASSERT_EQ(0, pthread_create(&th, NULL, mmap_writer, r));
	ASSERT_TRUE(wait_sweeps(r, 2, 10000));

	for (f = 0; f < RACE_FORKS; f++) {
		before = atomic_load(&r->sweeps);	/* every page >= before */
		child = __vmfork_fork(self->parent, 0, NULL);
		after = atomic_load(&r->sweeps);	/* no page > after + 1 */
		if (child < 0) {
			atomic_store(&r->stop, 1);
			pthread_join(th, NULL);
		}
		ASSERT_LE(0, child) {
			TH_LOG("fork during mmap stores must work: %s", strerror(errno));
		}
		for (i = 0; i < RACE_PAGES; i++)
			child_val[i] = peek64(_metadata, child, i, 0);

		/* Find the cut: non-increasing, steps of at most one. */
		for (k = 0; k < RACE_PAGES && child_val[k] == child_val[0]; k++)
			;
		for (i = k; i < RACE_PAGES; i++) {
			if (child_val[i] != child_val[0] - 1)
				break;
		}
		EXPECT_EQ((unsigned int)RACE_PAGES, i) {
			TH_LOG("fork %u: not a cut: page 0 = %llu, page %u = %llu, page %u = %llu",
			       f, (unsigned long long)child_val[0], k,
			       (unsigned long long)child_val[k], i,
			       (unsigned long long)child_val[i]);
		}
		EXPECT_TRUE(child_val[RACE_PAGES - 1] >= before &&
			    child_val[0] <= after + 1) {
			TH_LOG("fork %u: the child's values [%llu..%llu] must lie in [%llu, %llu]",
			       f, (unsigned long long)child_val[RACE_PAGES - 1],
			       (unsigned long long)child_val[0],
			       (unsigned long long)before,
			       (unsigned long long)after + 1);
		}
		/* The child stays put while the parent moves on. */
		ASSERT_TRUE(wait_sweeps(r, atomic_load(&r->sweeps) + 3, 10000));
		for (i = 0; i < RACE_PAGES; i++) {
			ASSERT_EQ(child_val[i], peek64(_metadata, child, i, 0)) {
				TH_LOG("fork %u: child page %u changed after the fork", f, i);
			}
		}
		close(child);
	}
	atomic_store(&r->stop, 1);
	ASSERT_EQ(0, pthread_join(th, NULL));
	after = atomic_load(&r->sweeps);
	for (i = 0; i < RACE_PAGES; i++) {
		EXPECT_EQ(after, ((volatile __u64 *)r->map)[i * PG / 8]) {
			TH_LOG("the parent must hold its own last sweep on page %u", i);
		}
	}
	munmap(r->map, size);
	free(r);
}

/*
 * A live fork makes the parent's written pages fault again (so that the next
 * store breaks copy-on-write) and nothing else: pages the parent only read
 * stay mapped, even when it wrote a quarter of its memory (KVM's stage-2
 * entries for them stay too, which the pagemap cannot show).
 */
#define LIVE_PAGES	256
#define LIVE_WRITTEN	64

TEST(live_fork_keeps_clean_pages_mapped)
{
	__u64 ent[LIVE_PAGES], p, wrong, first = 0;
	volatile __u64 *map;
	int dev, obj, child;

	VMFORK_OPEN_OR_SKIP(dev);
	obj = vmfork_create(_metadata, dev, PAGES(LIVE_PAGES), NULL);
	map = vmfork_mmap(_metadata, obj, PAGES(LIVE_PAGES), 0,
			  PROT_READ | PROT_WRITE);
	for (p = 0; p < LIVE_PAGES; p++)
		map[p * PG / 8] = p + 1;
	close(vmfork_fork(_metadata, obj, 0, NULL));
	/* Read every page back in (read-only mappings of frozen pages)... */
	for (p = 0; p < LIVE_PAGES; p++)
		ASSERT_EQ(p + 1, map[p * PG / 8]);
	/* ... and write a quarter of them again. */
	for (p = 0; p < LIVE_WRITTEN; p++)
		map[p * 4 * PG / 8] = ~p;
	child = vmfork_fork(_metadata, obj, 0, NULL);
	ASSERT_EQ(0, pagemap_entries((const void *)map, LIVE_PAGES, ent)) {
		TH_LOG("/proc/self/pagemap: %s", strerror(errno));
	}
	for (p = 0, wrong = 0; p < LIVE_PAGES; p++) {
		bool written = p % 4 == 0;

		if (written == !!(ent[p] & PAGEMAP_PRESENT) && !wrong++)
			first = p;
	}
	EXPECT_EQ(0ULL, wrong) {
		TH_LOG("%llu pages mapped wrong after the fork, first page %llu (%s, must be %s)",
		       (unsigned long long)wrong, (unsigned long long)first,
		       first % 4 ? "only read" : "written",
		       first % 4 ? "still mapped" : "unmapped");
	}
	/* And the fork is right: the child sees the writes, later ones stay apart. */
	map[0] = 0x1234;
	EXPECT_EQ(~0ULL, peek64(_metadata, child, 0, 0));
	EXPECT_EQ(2ULL, peek64(_metadata, child, 1, 0));
	munmap((void *)map, PAGES(LIVE_PAGES));
	close(child);
	close(obj);
	close(dev);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

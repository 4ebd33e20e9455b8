// SPDX-License-Identifier: GPL-2.0
/*
 * Discard: fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) and
 * madvise(MADV_REMOVE) drop a range's pages, so that a guest's balloon or
 * free page reporting can give memory back. The range reads as zero
 * afterwards, through pread and through a mapping, even where a frozen layer
 * below (the parent's pages at the fork) has data; the object's private pages
 * there are freed (stats and the module's page counter); the parent and
 * siblings keep their data; a store or a reset afterwards behaves as on any
 * page. Then a long-lived tree of "fork, discard some, write some, close the
 * parent" generations, checked page by page against a model, with stats that
 * add up and a chain that stays short.
 */
#include <linux/falloc.h>
#include <stdio.h>

#include "vmfork_test.h"

#define NPAGES		64
#define SIZE		PAGES(NPAGES)
#define TAG(p)		(0x5000ULL + (p))
#define CHILD_TAG	0xc41dULL
#define PUNCH_MODE	(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)

static long module_pages(void)
{
	struct vmfork_counters c;

	return vmfork_read_counters(&c) ? -1 : c.pages;
}

static void punch(META, int fd, __u64 first, __u64 n)
{
	ASSERT_EQ(0, fallocate(fd, PUNCH_MODE, first * PG, n * PG)) {
		TH_LOG("punching pages %llu..%llu must work: %s",
		       (unsigned long long)first,
		       (unsigned long long)(first + n - 1), strerror(errno));
	}
}

FIXTURE(discard) {
	int dev, obj;
};

FIXTURE_SETUP(discard)
{
	__u64 p;

	self->obj = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->obj = vmfork_create(_metadata, self->dev, SIZE, NULL);
	for (p = 0; p < NPAGES; p++)
		write_page(_metadata, self->obj, p, TAG(p));
}

FIXTURE_TEARDOWN(discard)
{
	if (self->obj >= 0)
		close(self->obj);
	close(self->dev);
}

/* Private pages: freed, and the range reads as zero. */
TEST_F(discard, frees_private_pages)
{
	long before = module_pages(), after;
	__u64 p;

	expect_counts(_metadata, self->obj, "before", NPAGES, NPAGES, 0, 0);
	punch(_metadata, self->obj, 8, 16);
	expect_counts(_metadata, self->obj, "after", NPAGES - 16, NPAGES - 16,
		      0, 0);
	for (p = 0; p < NPAGES; p++)
		expect_page(_metadata, self->obj, p,
			    p >= 8 && p < 24 ? 0 : TAG(p), "after the punch");
	after = module_pages();
	if (before >= 0 && after >= 0)
		EXPECT_EQ(before - 16, after) {
			TH_LOG("the module must hold 16 pages fewer");
		}
	/* Again: nothing left to drop, nothing changes. */
	punch(_metadata, self->obj, 8, 16);
	expect_counts(_metadata, self->obj, "twice", NPAGES - 16, NPAGES - 16,
		      0, 0);
	/* A store refills one page only. */
	write_page(_metadata, self->obj, 10, CHILD_TAG);
	expect_page(_metadata, self->obj, 10, CHILD_TAG, "refilled");
	expect_page(_metadata, self->obj, 11, 0, "its neighbour");
	expect_counts(_metadata, self->obj, "refilled", NPAGES - 15,
		      NPAGES - 15, 0, 0);
}

/*
 * A child discards pages it shares with its parent: zero in the child
 * (holes over the frozen data), unchanged in the parent; reset brings the
 * fork-time content back.
 */
TEST_F(discard, hides_shared_pages_in_the_child_only)
{
	struct vmfork_stats st;
	int child;
	__u64 p;

	child = vmfork_fork(_metadata, self->obj, 0, NULL);
	punch(_metadata, child, 0, 32);
	expect_counts(_metadata, child, "child", NPAGES - 32, 0, NPAGES - 32, 0);
	for (p = 0; p < NPAGES; p++) {
		expect_page(_metadata, child, p, p < 32 ? 0 : TAG(p), "child");
		expect_page(_metadata, self->obj, p, TAG(p), "parent");
	}
	expect_counts(_metadata, self->obj, "parent", NPAGES, 0, NPAGES, 0);

	/* A store into a hole starts from zero, not from the parent's page. */
	poke64(_metadata, child, 5, 0, CHILD_TAG);
	EXPECT_EQ(CHILD_TAG, peek64(_metadata, child, 5, 0));
	EXPECT_EQ(0ULL, peek64(_metadata, child, 5, 1)) {
		TH_LOG("the rest of a refilled hole must read zero");
	}
	expect_counts(_metadata, child, "refilled", NPAGES - 31, 1,
		      NPAGES - 32, 0);

	/* A grandchild sees the holes too. */
	{
		int grand = vmfork_fork(_metadata, child, 0, NULL);

		expect_page(_metadata, grand, 4, 0, "grandchild");
		expect_page(_metadata, grand, 40, TAG(40), "grandchild");
		EXPECT_EQ(CHILD_TAG, peek64(_metadata, grand, 5, 0));
		vmfork_stats(_metadata, grand, &st);
		EXPECT_STAT(&st, resident_pages, NPAGES - 31, "grandchild");
		close(grand);
	}

	vmfork_reset(_metadata, child);
	for (p = 0; p < NPAGES; p++)
		expect_page(_metadata, child, p, TAG(p), "child after reset");
	expect_counts(_metadata, child, "reset", NPAGES, 0, NPAGES, 0);
	close(child);
}

/* MADV_REMOVE on a populated mapping: the mapped pages read zero at once. */
TEST_F(discard, madvise_remove_zaps_the_mapping)
{
	volatile __u64 *map;
	int child;
	__u64 p;

	child = vmfork_fork(_metadata, self->obj, 0, NULL);
	map = vmfork_mmap(_metadata, child, SIZE, 0, PROT_READ | PROT_WRITE);
	for (p = 0; p < NPAGES; p++)
		ASSERT_EQ(TAG(p), map[p * PG / 8]);
	map[20 * PG / 8] = CHILD_TAG;	/* a private page in the range */
	ASSERT_EQ(0, madvise((void *)(map + 16 * PG / 8), 16 * PG,
			     MADV_REMOVE)) {
		TH_LOG("MADV_REMOVE must work: %s", strerror(errno));
	}
	for (p = 0; p < NPAGES; p++)
		ASSERT_EQ(p >= 16 && p < 32 ? 0 : TAG(p), map[p * PG / 8]) {
			TH_LOG("page %llu through the mapping",
			       (unsigned long long)p);
		}
	/* Page 20's copy-on-write break stays counted. */
	expect_counts(_metadata, child, "after MADV_REMOVE", NPAGES - 16, 0,
		      NPAGES - 16, 1);
	map[17 * PG / 8] = CHILD_TAG;
	EXPECT_EQ(CHILD_TAG, map[17 * PG / 8]);
	EXPECT_EQ(0ULL, map[17 * PG / 8 + 1]);
	expect_page(_metadata, self->obj, 17, TAG(17), "parent");
	munmap((void *)map, SIZE);
	close(child);
}

/* Page @page of @fd must be page_fill(@tag) with bytes [@from, @to) zero. */
static void expect_zeroed(META, int fd, __u64 page, __u64 tag, size_t from,
			  size_t to)
{
	static unsigned char buf[PG], want[PG];

	page_fill((__u64 *)want, tag);
	memset(want + from, 0, to - from);
	ASSERT_EQ((ssize_t)PG, pread(fd, buf, PG, page * PG));
	EXPECT_EQ(0, memcmp(buf, want, PG)) {
		TH_LOG("page %llu must hold its pattern with bytes %zu..%zu zero",
		       (unsigned long long)page, from, to - 1);
	}
}

/* A range that is not page-aligned: whole pages dropped, the ends zeroed. */
TEST_F(discard, partial_pages_are_zeroed)
{
	int child;

	child = vmfork_fork(_metadata, self->obj, 0, NULL);
	/* Bytes 100..299 of page 3. */
	ASSERT_EQ(0, fallocate(child, PUNCH_MODE, 3 * PG + 100, 200));
	expect_zeroed(_metadata, child, 3, TAG(3), 100, 300);
	/* From the middle of page 10 to the middle of page 12. */
	ASSERT_EQ(0, fallocate(child, PUNCH_MODE, 10 * PG + PG / 2, 2 * PG));
	expect_zeroed(_metadata, child, 10, TAG(10), PG / 2, PG);
	expect_page(_metadata, child, 11, 0, "the whole page inside");
	expect_zeroed(_metadata, child, 12, TAG(12), 0, PG / 2);
	/* Pages 3, 10 and 12 broke copy-on-write, page 11 is a hole. */
	expect_counts(_metadata, child, "partial", NPAGES - 1, 3, NPAGES - 4, 3);
	expect_page(_metadata, self->obj, 3, TAG(3), "parent");
	expect_page(_metadata, self->obj, 11, TAG(11), "parent");
	close(child);
}

TEST_F(discard, bad_requests)
{
	int tmpl;

	EXPECT_EQ(-1, fallocate(self->obj, 0, 0, PG));
	EXPECT_EQ(EOPNOTSUPP, errno) {
		TH_LOG("preallocation must be refused: the size is fixed");
	}
	EXPECT_EQ(-1, fallocate(self->obj, FALLOC_FL_ZERO_RANGE, 0, PG));
	EXPECT_EQ(EOPNOTSUPP, errno);
	EXPECT_EQ(-1, fallocate(self->obj, FALLOC_FL_PUNCH_HOLE, 0, PG));
	EXPECT_EQ(EOPNOTSUPP, errno) {
		TH_LOG("a punch must keep the size");
	}
	EXPECT_EQ(-1, fallocate(self->obj, PUNCH_MODE, -PG, PG));
	EXPECT_EQ(EINVAL, errno);
	/* Past the end: nothing to do. */
	EXPECT_EQ(0, fallocate(self->obj, PUNCH_MODE, SIZE, PG));
	EXPECT_EQ(0, fallocate(self->obj, PUNCH_MODE, SIZE - PG, 16 * PG));
	expect_page(_metadata, self->obj, NPAGES - 1, 0, "last page");
	expect_page(_metadata, self->obj, NPAGES - 2, TAG(NPAGES - 2),
		    "the page before");

	tmpl = vmfork_fork(_metadata, self->obj, VMFORK_FORK_TEMPLATE, NULL);
	EXPECT_EQ(-1, fallocate(self->obj, PUNCH_MODE, 0, PG));
	EXPECT_EQ(EPERM, errno) {
		TH_LOG("a template never changes");
	}
	expect_page(_metadata, self->obj, 0, TAG(0), "template");
	close(tmpl);
}

/*
 * Generations of "fork a child; it discards a random range, writes a random
 * page; close the parent", checked against a model of every page, with
 * stats that must add up. Holes go through every join and merge of layers.
 * Without survivors the chain must stay at 3 layers at most. With @keep,
 * every 8th parent lives on for 32 generations, so some layers are shared;
 * the chain then grows (about one layer per 4 generations here): layers
 * below one that a living ancestor shares are not joined once that ancestor
 * ends (README, "The module in short"), so it is reported, not bounded.
 */
#define GENERATIONS	300
#define KEEP		4

static void long_lived_tree(META, int cur, bool keep)
{
	__u64 model[NPAGES], resident, p, first, n;
	int kept[KEEP], nkept = 0, i, g, child;
	struct vmfork_stats st;
	unsigned int seed = 1234;

	for (p = 0; p < NPAGES; p++)
		model[p] = TAG(p);
	for (i = 0; i < KEEP; i++)
		kept[i] = -1;

	for (g = 0; g < GENERATIONS; g++) {
		child = vmfork_fork(_metadata, cur, 0, NULL);
		if (keep && g % 8 == 0) {
			if (kept[nkept % KEEP] >= 0)
				close(kept[nkept % KEEP]);
			kept[nkept++ % KEEP] = cur;
		} else {
			close(cur);
		}
		cur = child;

		first = rand_r(&seed) % NPAGES;
		n = 1 + rand_r(&seed) % 8;
		if (first + n > NPAGES)
			n = NPAGES - first;
		punch(_metadata, cur, first, n);
		for (p = first; p < first + n; p++)
			model[p] = 0;
		p = rand_r(&seed) % NPAGES;
		model[p] = 0x100000ULL + g;
		write_page(_metadata, cur, p, model[p]);

		vmfork_stats(_metadata, cur, &st);
		for (resident = 0, p = 0; p < NPAGES; p++)
			resident += model[p] != 0;
		ASSERT_EQ(resident, st.resident_pages) {
			TH_LOG("generation %d: resident pages", g);
		}
		ASSERT_EQ(st.resident_pages, st.shared_pages + st.private_pages);
		if (!keep)
			ASSERT_LE(st.chain_length, 3ULL) {
				TH_LOG("generation %d: chain length %llu must stay at 3 at most",
				       g, (unsigned long long)st.chain_length);
			}
		if (g % 25 == 0 || g == GENERATIONS - 1) {
			for (p = 0; p < NPAGES; p++)
				expect_page(_metadata, cur, p, model[p],
					    "generation");
		}
	}
	if (keep)
		TH_LOG("after %d generations with ancestors kept: chain length %llu",
		       GENERATIONS, (unsigned long long)st.chain_length);
	for (i = 0; i < KEEP; i++)
		if (kept[i] >= 0)
			close(kept[i]);
	/* The survivor alone: every page it shows is its own or a parent's. */
	for (p = 0; p < NPAGES; p++)
		expect_page(_metadata, cur, p, model[p], "survivor");
	close(cur);
}

TEST_F(discard, generations_with_holes_keep_the_chain_short)
{
	long_lived_tree(_metadata, self->obj, false);
	self->obj = -1;
}

TEST_F(discard, generations_with_holes_and_ancestors_kept)
{
	long_lived_tree(_metadata, self->obj, true);
	self->obj = -1;
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

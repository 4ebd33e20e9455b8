// SPDX-License-Identifier: GPL-2.0
/*
 * Fork chains: 64 levels of fork-of-fork. Level L writes its own page
 * (1 + L) and the shared page 0, forks level L + 1, then overwrites both.
 * Every level must see exactly its ancestors' writes up to its fork point.
 * The chain is then torn down forward, in reverse and in random order,
 * checking every survivor after each close (fd and mapping).
 *
 * Then the long-lived tree: a thousand generations of "fork a child, close the
 * parent" must leave a chain of constant length, and a reset still returns.
 */
#include <stdio.h>

#include "vmfork_test.h"

#define LEVELS		64
#define NPAGES		(LEVELS + 1)
#define SIZE		PAGES(NPAGES)

#define TAG_SHARED(l)	(0x1000ULL + (l))	/* page 0 before the fork */
#define TAG_SHARED2(l)	(0x2000ULL + (l))	/* page 0 after the fork */
#define TAG_OWN(l)	(0x10000ULL + (l))	/* page 1 + l before the fork */
#define TAG_OWN2(l)	(0x20000ULL + (l))	/* page 1 + l after the fork */

FIXTURE(chain) {
	int dev;
	int fd[LEVELS];
	__u64 id[LEVELS];
	volatile __u64 *map[LEVELS];
};

static void poke_map(volatile __u64 *map, unsigned int page, __u64 v)
{
	map[page * PG / 8] = v;
	map[page * PG / 8 + 1] = ~v;
}

FIXTURE_SETUP(chain)
{
	struct vmfork_stats st;
	unsigned int l;

	for (l = 0; l < LEVELS; l++)
		self->fd[l] = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->fd[0] = vmfork_create(_metadata, self->dev, SIZE, &self->id[0]);
	for (l = 0; l < LEVELS; l++) {
		self->map[l] = vmfork_mmap(_metadata, self->fd[l], SIZE, 0,
					   PROT_READ | PROT_WRITE);
		/* Alternate between stores and pwrite. */
		if (l % 2) {
			poke_map(self->map[l], 1 + l, TAG_OWN(l));
			poke_map(self->map[l], 0, TAG_SHARED(l));
		} else {
			poke64(_metadata, self->fd[l], 1 + l, 0, TAG_OWN(l));
			poke64(_metadata, self->fd[l], 1 + l, 1, ~TAG_OWN(l));
			poke64(_metadata, self->fd[l], 0, 0, TAG_SHARED(l));
			poke64(_metadata, self->fd[l], 0, 1, ~TAG_SHARED(l));
		}
		if (l == LEVELS - 1)
			break;
		self->fd[l + 1] = vmfork_fork(_metadata, self->fd[l], 0,
					      &self->id[l + 1]);
		poke_map(self->map[l], 0, TAG_SHARED2(l));
		poke_map(self->map[l], 1 + l, TAG_OWN2(l));
	}
	for (l = 0; l < LEVELS; l++) {
		vmfork_stats(_metadata, self->fd[l], &st);
		ASSERT_EQ((__u64)l, st.depth) {
			TH_LOG("level %u must have depth %u, not %llu", l, l,
			       (unsigned long long)st.depth);
		}
		ASSERT_EQ(l ? self->id[l - 1] : 0, st.parent_id) {
			TH_LOG("level %u must name level %u as its parent", l, l - 1);
		}
		ASSERT_EQ(self->id[l], st.id);
	}
}

FIXTURE_TEARDOWN(chain)
{
	unsigned int l;

	for (l = 0; l < LEVELS; l++) {
		if (self->map[l])
			munmap((void *)self->map[l], SIZE);
		if (self->fd[l] >= 0)
			close(self->fd[l]);
	}
	if (self->dev >= 0)
		close(self->dev);
}

static __u64 expected(unsigned int level, unsigned int page)
{
	bool last = level == LEVELS - 1;
	unsigned int owner;

	if (page == 0)
		return last ? TAG_SHARED(level) : TAG_SHARED2(level);
	owner = page - 1;
	if (owner < level)
		return TAG_OWN(owner);
	if (owner == level)
		return last ? TAG_OWN(level) : TAG_OWN2(level);
	return 0;
}

/* Checks every live level's view; @when names the step for messages. */
static void check_survivors(META, FIXTURE_DATA(chain) *self, const char *when)
{
	unsigned int l, p;

	for (l = 0; l < LEVELS; l++) {
		if (!self->map[l])
			continue;
		for (p = 0; p < NPAGES; p++) {
			__u64 want = expected(l, p);
			__u64 w0 = self->map[l][p * PG / 8];
			__u64 w1 = self->map[l][p * PG / 8 + 1];

			ASSERT_TRUE(w0 == want && w1 == (want ? ~want : 0)) {
				TH_LOG("%s: level %u page %u must hold %#llx, found %#llx/%#llx",
				       when, l, p, (unsigned long long)want,
				       (unsigned long long)w0,
				       (unsigned long long)w1);
			}
		}
		/* And one pread per level, past any mapping. */
		ASSERT_EQ(expected(l, 0), peek64(_metadata, self->fd[l], 0, 0)) {
			TH_LOG("%s: pread of level %u page 0 disagrees", when, l);
		}
	}
}

static void teardown_in_order(META, FIXTURE_DATA(chain) *self,
			      const unsigned int *order)
{
	char when[64];
	unsigned int i, l;

	check_survivors(_metadata, self, "before any close");
	for (i = 0; i < LEVELS; i++) {
		l = order[i];
		munmap((void *)self->map[l], SIZE);
		self->map[l] = NULL;
		close(self->fd[l]);
		self->fd[l] = -1;
		snprintf(when, sizeof(when), "after closing level %u (step %u)", l, i);
		check_survivors(_metadata, self, when);
	}
}

TEST_F_TIMEOUT(chain, close_forward, 60)
{
	unsigned int order[LEVELS], i;

	for (i = 0; i < LEVELS; i++)
		order[i] = i;
	teardown_in_order(_metadata, self, order);
}

TEST_F_TIMEOUT(chain, close_reverse, 60)
{
	unsigned int order[LEVELS], i;

	for (i = 0; i < LEVELS; i++)
		order[i] = LEVELS - 1 - i;
	teardown_in_order(_metadata, self, order);
}

TEST_F_TIMEOUT(chain, close_random, 60)
{
	unsigned int order[LEVELS], i, j, t, seed;
	const char *env = getenv("VMFORK_SEED");

	seed = env ? strtoul(env, NULL, 0) : (unsigned int)now_ms();
	TH_LOG("random close order: VMFORK_SEED=%u", seed);
	srand(seed);
	for (i = 0; i < LEVELS; i++)
		order[i] = i;
	for (i = LEVELS - 1; i > 0; i--) {
		j = rand() % (i + 1);
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	teardown_in_order(_metadata, self, order);
}

TEST_F_TIMEOUT(chain, writes_after_middle_close, 60)
{
	unsigned int l, mid = LEVELS / 2;

	/* Close a middle level, then every survivor writes everything. */
	munmap((void *)self->map[mid], SIZE);
	self->map[mid] = NULL;
	close(self->fd[mid]);
	self->fd[mid] = -1;
	for (l = 0; l < LEVELS; l++) {
		if (l == mid)
			continue;
		poke_map(self->map[l], 0, 0x5000 + l);
	}
	for (l = 0; l < LEVELS; l++) {
		if (l == mid)
			continue;
		ASSERT_EQ(0x5000ULL + l, self->map[l][0]) {
			TH_LOG("level %u must see only its own write to page 0", l);
		}
		ASSERT_EQ(expected(l, NPAGES - 1), self->map[l][(NPAGES - 1) * PG / 8]);
		ASSERT_EQ(expected(l, 1), self->map[l][PG / 8]);
	}
}

#define GENERATIONS	1000
#define GEN_PAGES	8

/*
 * Generation g writes page g % GEN_PAGES (tag g), forks generation g + 1 and
 * closes itself; g + 1 first checks every page. Optionally each generation
 * forks without writing first, and a reset of the last one returns it to its
 * fork point. chain_length must stay at a small constant: interior layers
 * that only one object reaches are joined.
 */
static void generations(META, bool write_every_time)
{
	__u64 want[GEN_PAGES] = { 0 };
	struct vmfork_stats st;
	__u64 max_chain = 0;
	unsigned int g, p;
	int dev, cur, child;

	dev = __vmfork_open();
	ASSERT_LE(0, dev) TH_LOG("open " VMFORK_DEV_PATH ": %s", strerror(errno));
	cur = vmfork_create(_metadata, dev, PAGES(GEN_PAGES), NULL);
	for (g = 0; g < GENERATIONS; g++) {
		if (write_every_time || g % 3 == 0) {
			poke64(_metadata, cur, g % GEN_PAGES, 0, 0x9000 + g);
			want[g % GEN_PAGES] = 0x9000 + g;
		}
		child = vmfork_fork(_metadata, cur, 0, NULL);
		close(cur);
		cur = child;
		vmfork_stats(_metadata, cur, &st);
		if (st.chain_length > max_chain)
			max_chain = st.chain_length;
		if (g % 97 && g != GENERATIONS - 1)
			continue;
		for (p = 0; p < GEN_PAGES; p++) {
			ASSERT_EQ(want[p], peek64(_metadata, cur, p, 0)) {
				TH_LOG("generation %u page %u: the latest write before its fork",
				       g + 1, p);
			}
		}
	}
	EXPECT_GE(3ULL, max_chain) {
		TH_LOG("%u generations of {write, fork, close the parent} must keep chain_length at most 3, reached %llu",
		       GENERATIONS, (unsigned long long)max_chain);
	}
	EXPECT_EQ((__u64)GENERATIONS, st.depth);
	/* A reset of the last generation returns to its fork point. */
	poke64(_metadata, cur, 0, 0, 0xdead);
	vmfork_reset(_metadata, cur);
	for (p = 0; p < GEN_PAGES; p++)
		ASSERT_EQ(want[p], peek64(_metadata, cur, p, 0));
	close(cur);
	close(dev);
}

FIXTURE(gen) {
	int unused;
};

FIXTURE_SETUP(gen) {}
FIXTURE_TEARDOWN(gen) {}

TEST_F_TIMEOUT(gen, keep_the_chain_short, 120)
{
	generations(_metadata, true);
}

TEST_F_TIMEOUT(gen, that_skip_writes_keep_the_chain_short, 120)
{
	generations(_metadata, false);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

// SPDX-License-Identifier: GPL-2.0
/*
 * Holes: pages no layer has read as zero. They map a zero page of the
 * module's, read-only, with a reference and a mapcount per PTE; so that no
 * count can wrap, the module moves to a new zero page once one has
 * zero_page_max_maps references. A large sparse object is read end to end
 * with that limit lowered: every hole reads zero and no zero page is mapped
 * more than the limit. Then a store, a GUP write (process_vm_writev) and a GUP
 * read (write to a pipe) on holes that were read before must behave like
 * ordinary memory.
 */
#include <stdio.h>
#include <sys/uio.h>

#include "vmfork_test.h"

#define SPARSE_SIZE	(256ULL << 20)
#define SPARSE_PAGES	(SPARSE_SIZE / PG)
#define DATA_PAGE	100ULL
#define MAX_MAPS_PATH	"/sys/module/vmfork/parameters/zero_page_max_maps"
#define TEST_MAX_MAPS	4096ULL

/* The PFN behind each page of [addr, addr + n pages), from /proc/self/pagemap (root). */
static int pfns_of(const void *addr, __u64 n, __u64 *pfn)
{
	__u64 i;

	if (pagemap_entries(addr, n, pfn))
		return -1;
	for (i = 0; i < n; i++)
		pfn[i] = (pfn[i] & PAGEMAP_PRESENT) ? pfn[i] & PAGEMAP_PFN_MASK : 0;
	return 0;
}

/* How many PTEs map @pfn, from /proc/kpagecount. */
static __u64 mapcount_of(__u64 pfn)
{
	__u64 count = 0;
	int fd = open("/proc/kpagecount", O_RDONLY);

	if (fd >= 0) {
		if (pread(fd, &count, 8, pfn * 8) != 8)
			count = 0;
		close(fd);
	}
	return count;
}

static int cmp_u64(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return x < y ? -1 : x > y;
}

FIXTURE(holes) {
	int dev, obj;
	volatile __u64 *map;
};

FIXTURE_SETUP(holes)
{
	self->obj = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->obj = vmfork_create(_metadata, self->dev, SPARSE_SIZE, NULL);
	poke64(_metadata, self->obj, DATA_PAGE, 0, 0xda7a);
	self->map = vmfork_mmap(_metadata, self->obj, SPARSE_SIZE, 0,
				PROT_READ | PROT_WRITE);
}

FIXTURE_TEARDOWN(holes)
{
	if (self->map)
		munmap((void *)self->map, SPARSE_SIZE);
	if (self->obj >= 0)
		close(self->obj);
	if (self->dev >= 0)
		close(self->dev);
}

TEST_F_TIMEOUT(holes, no_zero_page_is_mapped_past_the_limit, 120)
{
	char old_max[32] = "";
	__u64 p, sum = 0, *pfn, distinct = 0, worst = 0, i;
	FILE *f = fopen(MAX_MAPS_PATH, "r");

	ASSERT_NE(NULL, f) TH_LOG(MAX_MAPS_PATH ": %s", strerror(errno));
	ASSERT_NE(NULL, fgets(old_max, sizeof(old_max), f));
	fclose(f);
	ASSERT_EQ(0, write_str(MAX_MAPS_PATH, "4096"));

	for (p = 0; p < SPARSE_PAGES; p++)
		sum += self->map[p * PG / 8] + self->map[p * PG / 8 + PG / 16];
	EXPECT_EQ(0xda7aULL, sum) TH_LOG("every page but one reads as zero");

	pfn = calloc(SPARSE_PAGES, sizeof(*pfn));
	ASSERT_NE(NULL, pfn);
	ASSERT_EQ(0, pfns_of((const void *)self->map, SPARSE_PAGES, pfn)) {
		TH_LOG("/proc/self/pagemap: %s", strerror(errno));
	}
	pfn[DATA_PAGE] = 0;
	qsort(pfn, SPARSE_PAGES, sizeof(*pfn), cmp_u64);
	for (i = 0; i < SPARSE_PAGES; i++) {
		__u64 maps;

		if (!pfn[i] || (i && pfn[i] == pfn[i - 1]))
			continue;
		distinct++;
		maps = mapcount_of(pfn[i]);
		if (maps > worst)
			worst = maps;
	}
	free(pfn);
	write_str(MAX_MAPS_PATH, old_max);
	EXPECT_LE((SPARSE_PAGES - 1) / (TEST_MAX_MAPS + 64), distinct) {
		TH_LOG("%llu holes with at most %llu maps per zero page need more than %llu zero pages",
		       SPARSE_PAGES - 1, TEST_MAX_MAPS, (unsigned long long)distinct);
	}
	EXPECT_GE(TEST_MAX_MAPS + 64, worst) {
		TH_LOG("a zero page is mapped %llu times, past the limit of %llu",
		       (unsigned long long)worst, TEST_MAX_MAPS);
	}
	expect_counts(_metadata, self->obj, "after reading every hole", 1, 1, 0, 0);
}

TEST_F(holes, writes_to_read_holes_are_private)
{
	static __u64 zeros[PG / 8], buf[PG / 8];
	__u64 val = 0x5151, *anon;
	struct iovec local = { &val, sizeof(val) };
	struct iovec remote = { (void *)&self->map[7 * PG / 8], sizeof(val) };
	int pipefd[2], child;

	/* Read them first: each is mapped to the zero page. */
	ASSERT_EQ(0ULL, self->map[5 * PG / 8] + self->map[6 * PG / 8] +
			 self->map[7 * PG / 8] + self->map[8 * PG / 8]);

	self->map[5 * PG / 8] = 0x5555;			/* a store */
	ASSERT_EQ((ssize_t)sizeof(val),			/* a GUP write */
		  process_vm_writev(getpid(), &local, 1, &remote, 1, 0)) {
		TH_LOG("process_vm_writev into a read hole: %s", strerror(errno));
	}
	EXPECT_EQ(0x5555ULL, peek64(_metadata, self->obj, 5, 0));
	EXPECT_EQ(0x5151ULL, peek64(_metadata, self->obj, 7, 0));
	EXPECT_EQ(0x5151ULL, self->map[7 * PG / 8]);
	EXPECT_EQ(0ULL, self->map[6 * PG / 8]) TH_LOG("a neighbour stays a hole");
	expect_counts(_metadata, self->obj, "two holes written", 3, 3, 0, 0);

	/* A GUP read of a hole (vmsplice-free: write() from the mapping). */
	ASSERT_EQ(0, pipe(pipefd));
	ASSERT_EQ((ssize_t)PG, write(pipefd[1], (void *)&self->map[8 * PG / 8], PG));
	ASSERT_EQ((ssize_t)PG, read(pipefd[0], buf, PG));
	EXPECT_EQ(0, memcmp(buf, zeros, PG));
	close(pipefd[0]);
	close(pipefd[1]);

	/* The kernel's zero page is untouched: a fresh anonymous read sees zeros. */
	anon = mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, anon);
	EXPECT_EQ(0, memcmp(anon, zeros, PG)) TH_LOG("the zero page was written");
	munmap(anon, PG);

	/* A child sees the writes and the holes; its own store stays its own. */
	child = vmfork_fork(_metadata, self->obj, 0, NULL);
	EXPECT_EQ(0x5555ULL, peek64(_metadata, child, 5, 0));
	EXPECT_EQ(0ULL, peek64(_metadata, child, 6, 0));
	self->map[6 * PG / 8] = 0x6666;
	EXPECT_EQ(0ULL, peek64(_metadata, child, 6, 0));
	close(child);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

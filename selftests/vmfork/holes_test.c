// SPDX-License-Identifier: GPL-2.0
/*
 * Holes: pages no layer has read as zero. They are mapped with the kernel's
 * zero page as a special PTE, which takes no reference or mapcount on that
 * page (one per PTE would wrap its refcount at about 2^32 mapped holes) and
 * counts in nobody's RSS. A large sparse object is read end to end; then a
 * store, a GUP write (process_vm_writev) and a GUP read (write to a pipe) on
 * holes that were read before must behave like ordinary memory, and the zero
 * page must stay zero.
 */
#include <stdio.h>
#include <sys/uio.h>

#include "vmfork_test.h"

#define SPARSE_SIZE	(256ULL << 20)
#define SPARSE_PAGES	(SPARSE_SIZE / PG)
#define DATA_PAGE	100ULL

/* Rss of the mapping that starts at @addr, in KiB, from /proc/self/smaps; -1 if absent. */
static long rss_kib(const void *addr)
{
	unsigned long start, end;
	char line[512];
	bool in = false;
	long kib = -1;
	FILE *f;

	f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
			in = start == (unsigned long)addr;
			continue;
		}
		if (in && sscanf(line, "Rss: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
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

TEST_F_TIMEOUT(holes, a_large_sparse_read_costs_no_memory, 120)
{
	__u64 p, sum = 0;
	long kib;

	for (p = 0; p < SPARSE_PAGES; p++)
		sum += self->map[p * PG / 8] + self->map[p * PG / 8 + PG / 16];
	EXPECT_EQ(0xda7aULL, sum) TH_LOG("every page but one reads as zero");
	kib = rss_kib((const void *)self->map);
	ASSERT_LE(0, kib) TH_LOG("the mapping must be in /proc/self/smaps");
	EXPECT_GE(64L, kib) {
		TH_LOG("%llu MiB of holes read must not count as resident (Rss %ld kB)",
		       SPARSE_SIZE >> 20, kib);
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

// SPDX-License-Identifier: GPL-2.0
/*
 * trace_workload: a known mix of module events for the tracing tools' tests.
 * Not a test itself. Creates one object of 4 MiB, writes every page, then does
 * FORKS rounds of: fork a child, write WRITES pages of the parent (each a COW
 * break: the fork froze them), write WRITES pages of the child (COW breaks too)
 * and reset the child. Prints what the module's own counters say:
 *
 *   forks=K cow_breaks=C resets=R
 *
 * C is the sum of VMFORK_GET_STATS cow_breaks over every object, read just
 * before each is closed, so a tool that counts vmfork_cow events must match it.
 *
 * Usage: trace_workload [FORKS [WRITES [DELAY_MS [hold] [templates=T]]]]
 * (default: 20 50 50). DELAY_MS between rounds spreads the events over time for
 * per-second views. With "hold", every object stays open after the line is
 * printed, until a line (or EOF) on standard input: the netlink dump can then be
 * compared with it. With templates=T, the parent is then frozen as a template
 * (VMFORK_FORK_TEMPLATE on the first of these forks only) and T more rounds
 * fork from it, write WRITES pages of the child and reset it; the line reads
 *
 *   forks=K+T cow_breaks=C resets=K+T template_forks=T
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/vmfork.h>

#define PAGE 4096UL
#define SIZE (4UL << 20)

static void die(const char *what)
{
	fprintf(stderr, "trace_workload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t cow_breaks(int fd)
{
	struct vmfork_stats st;

	memset(&st, 0, sizeof(st));
	if (ioctl(fd, VMFORK_GET_STATS, &st) < 0)
		die("VMFORK_GET_STATS");
	return st.cow_breaks;
}

static void touch(char *p, unsigned long pages, unsigned long first, int v)
{
	for (unsigned long i = 0; i < pages; i++)
		p[((first + i) % (SIZE / PAGE)) * PAGE] = (char)v;
}

int main(int argc, char **argv)
{
	unsigned long forks = argc > 1 ? strtoul(argv[1], NULL, 0) : 20;
	unsigned long writes = argc > 2 ? strtoul(argv[2], NULL, 0) : 50;
	unsigned long delay_ms = argc > 3 ? strtoul(argv[3], NULL, 0) : 50;
	struct vmfork_create_mem create = { .size = SIZE };
	struct timespec delay = { delay_ms / 1000, (delay_ms % 1000) * 1000000 };
	unsigned long templates = 0, rounds;
	uint64_t cows = 0, resets = 0;
	int *held = NULL;
	bool hold = false;
	int dev, mem;
	char *p;

	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "hold")) {
			hold = true;
		} else if (!strncmp(argv[i], "templates=", 10)) {
			templates = strtoul(argv[i] + 10, NULL, 0);
		} else {
			fprintf(stderr, "trace_workload: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	rounds = forks + templates;
	if (writes > SIZE / PAGE)
		writes = SIZE / PAGE;
	if (hold) {
		held = calloc(rounds ? rounds : 1, sizeof(*held));
		if (!held)
			die("calloc");
	}
	dev = open("/dev/vmfork", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		die("/dev/vmfork");
	mem = ioctl(dev, VMFORK_CREATE_MEM, &create);
	if (mem < 0)
		die("VMFORK_CREATE_MEM");
	p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mem, 0);
	if (p == MAP_FAILED)
		die("mmap");
	touch(p, SIZE / PAGE, 0, 1);

	for (unsigned long i = 0; i < rounds; i++) {
		/*
		 * The first template fork freezes the parent (no more writes to
		 * it); later ones pass no flag: they fork a template all the same.
		 */
		bool tmpl = i >= forks;
		struct vmfork_fork arg = {
			.flags = i == forks ? VMFORK_FORK_TEMPLATE : 0,
		};
		int child = ioctl(mem, VMFORK_VM_FORK, &arg);
		char *c;

		if (child < 0)
			die("VMFORK_VM_FORK");
		if (!tmpl)
			touch(p, writes, i * writes, 2);
		c = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, child, 0);
		if (c == MAP_FAILED)
			die("mmap child");
		touch(c, writes, i * writes + 7, 3);
		if (ioctl(child, VMFORK_RESET, 0) < 0)
			die("VMFORK_RESET");
		resets++;
		munmap(c, SIZE);
		if (hold) {
			held[i] = child;
		} else {
			cows += cow_breaks(child);
			close(child);
		}
		if (delay_ms)
			nanosleep(&delay, NULL);
	}
	cows += cow_breaks(mem);
	for (unsigned long i = 0; hold && i < rounds; i++)
		cows += cow_breaks(held[i]);
	printf("forks=%lu cow_breaks=%llu resets=%llu", rounds, (unsigned long long)cows,
	       (unsigned long long)resets);
	if (templates)
		printf(" template_forks=%lu", templates);
	printf("\n");
	if (hold) {
		char line[16];

		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin) && ferror(stdin))
			die("stdin");
		for (unsigned long i = 0; i < rounds; i++)
			close(held[i]);
		free(held);
	}
	munmap(p, SIZE);
	close(mem);
	close(dev);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * fork_bench: what VMFORK_VM_FORK costs against guest size, measured in one
 * run. Not a test: it checks content (so a broken fork cannot look fast) but
 * never timings. Prints medians over --repeat forks for each size:
 *
 *   template  fork of a frozen template (the first fork freezes it)
 *   live      fork of a parent whose pages are all private and mapped
 *             (zap + freeze; 3 repeats: re-dirtying the guest is slow)
 *   reset     reset of a child that dirtied 100 pages
 *   copy      baseline: copying the whole guest RAM (a naive clone)
 *
 * Usage: fork_bench [-r REPEAT] [SIZE_MIB...]   (default: 64 256 1024)
 */
#include <errno.h>
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

static void die(const char *what)
{
	fprintf(stderr, "fork_bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int vmfork_fork(int fd, uint64_t flags)
{
	struct vmfork_fork arg = { .flags = flags };
	int child = ioctl(fd, VMFORK_VM_FORK, &arg);

	if (child < 0)
		die("VMFORK_VM_FORK");
	return child;
}

/* An object of @size bytes whose every page holds its own index. */
static int make_guest(int dev, size_t size, char **map)
{
	struct vmfork_create_mem arg = { .size = size };
	int fd = ioctl(dev, VMFORK_CREATE_MEM, &arg);
	size_t i;

	if (fd < 0)
		die("VMFORK_CREATE_MEM");
	*map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*map == MAP_FAILED)
		die("mmap");
	for (i = 0; i < size / PAGE; i++)
		*(uint64_t *)(*map + i * PAGE) = i + 1;
	return fd;
}

static void check_page(int fd, size_t pgoff)
{
	uint64_t v;

	if (pread(fd, &v, sizeof(v), pgoff * PAGE) != sizeof(v))
		die("pread");
	if (v != pgoff + 1) {
		fprintf(stderr, "fork_bench: page %zu holds %llu, not %zu: fork is broken\n",
			pgoff, (unsigned long long)v, pgoff + 1);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	size_t sizes[16] = { 64, 256, 1024 };
	int nsizes = 3, repeat = 21, opt, s, i;
	double *t = NULL;

	while ((opt = getopt(argc, argv, "r:h")) != -1) {
		if (opt == 'r' && atoi(optarg) > 0) {
			repeat = atoi(optarg);
		} else {
			fprintf(stderr, "usage: %s [-r REPEAT] [SIZE_MIB...]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (optind < argc) {
		for (nsizes = 0; optind < argc && nsizes < 16; nsizes++)
			sizes[nsizes] = strtoul(argv[optind++], NULL, 0);
	}
	t = calloc(repeat, sizeof(*t));
	int dev = open("/dev/vmfork", O_RDWR | O_CLOEXEC);

	if (!t || dev < 0)
		die("open /dev/vmfork");

	printf("%8s %14s %14s %14s %14s\n", "size_MiB", "template_us", "live_us",
	       "reset100_us", "copy_us");
	double tmpl_first = 0, tmpl_last = 0;

	for (s = 0; s < nsizes; s++) {
		size_t size = sizes[s] << 20, npages = size / PAGE;
		double tmpl, live, reset, copy, t0;
		char *map, *cmap, *buf;
		int fd, child;

		/* live: every page private, mapped; one fork per repeat */
		fd = make_guest(dev, size, &map);
		int nlive = repeat < 3 ? repeat : 3;	/* re-dirtying is slow */

		for (i = 0; i < nlive; i++) {
			t0 = now_us();
			child = vmfork_fork(fd, 0);
			t[i] = now_us() - t0;
			check_page(child, i * 7919 % npages);
			close(child);
			/* make the parent's pages private again for the next fork */
			for (size_t p = 0; p < npages; p++)
				map[p * PAGE + 8] = (char)i;
		}
		live = median(t, nlive);

		/* template: freeze once, then forks of the frozen template */
		child = vmfork_fork(fd, VMFORK_FORK_TEMPLATE);
		close(child);
		for (i = 0; i < repeat; i++) {
			t0 = now_us();
			child = vmfork_fork(fd, 0);
			t[i] = now_us() - t0;
			check_page(child, i * 7919 % npages);
			close(child);
		}
		tmpl = median(t, repeat);

		/* reset of a child that dirtied 100 pages */
		child = vmfork_fork(fd, 0);
		cmap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, child, 0);
		if (cmap == MAP_FAILED)
			die("mmap child");
		for (i = 0; i < repeat; i++) {
			for (size_t p = 0; p < 100; p++)
				cmap[(p * 37 % npages) * PAGE] = 1;
			t0 = now_us();
			if (ioctl(child, VMFORK_RESET, 0))
				die("VMFORK_RESET");
			t[i] = now_us() - t0;
			check_page(child, 37);
		}
		reset = median(t, repeat);
		munmap(cmap, size);
		close(child);

		/* baseline: a full copy of guest RAM (fewer repeats: it is slow) */
		buf = mmap(NULL, size, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (buf == MAP_FAILED)
			die("mmap copy buffer");
		int ncopy = repeat < 3 ? repeat : 3;

		for (i = 0; i < ncopy; i++) {
			t0 = now_us();
			memcpy(buf, map, size);
			t[i] = now_us() - t0;
		}
		copy = median(t, ncopy);
		munmap(buf, size);
		munmap(map, size);
		close(fd);

		printf("%8zu %14.1f %14.1f %14.1f %14.1f\n", sizes[s], tmpl, live,
		       reset, copy);
		if (s == 0)
			tmpl_first = tmpl;
		tmpl_last = tmpl;
	}
	if (nsizes > 1)
		printf("template fork %zu MiB / %zu MiB: %.2f\n", sizes[nsizes - 1],
		       sizes[0], tmpl_last / tmpl_first);
	free(t);
	close(dev);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * dump_bench: does monitoring slow a VM's page faults? A faulting loop (fork
 * the object and close the child, then store to every page: one write fault
 * and copy-on-write break per page) runs for --secs seconds alone and beside
 * another process that runs, in a tight loop:
 *
 *   hog        getppid(): CPU competition only, the control
 *   nobody     GET_STATS netlink dumps as user nobody (who sees none of
 *              root's objects)
 *   root       GET_STATS netlink dumps as root (who sees this object)
 *   ioctl      VMFORK_GET_STATS on this very object (a dup of its fd)
 *
 * Prints faults per second for each and its ratio to the hog's: with stats
 * read without the object's lock the dumpers should cost what the hog does.
 * A measurement, not a test (the runner only runs *_test): it checks the
 * stored content (so a broken fault path cannot look fast), never timings.
 *
 * Usage: dump_bench [-s SECS] [-p PAGES]   (defaults: 3 s, 4096 pages)
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmfork_nl.h"
#include "vmfork_util.h"

static void die(const char *what)
{
	fprintf(stderr, "dump_bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

enum load { LOAD_NONE, LOAD_HOG, LOAD_NOBODY, LOAD_ROOT, LOAD_IOCTL, NR_LOADS };

static const char *const load_names[NR_LOADS] = {
	"alone", "hog", "nobody", "root", "ioctl",
};

/* The competing process; runs until killed. */
static void compete(enum load load, int obj)
{
	struct vmfork_stats st;
	struct nl_req r;
	struct nl *nl;

	if (load == LOAD_HOG)
		for (;;)
			getppid();
	if (load == LOAD_IOCTL)
		for (;;)
			if (__vmfork_stats(obj, &st))
				die("VMFORK_GET_STATS");
	if (load == LOAD_NOBODY &&
	    (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
	     setresuid(65534, 65534, 65534)))
		die("dropping to nobody");
	nl = nl_new(5);
	if (!nl)
		die("netlink");
	for (;;) {
		req_init(&r, nl->family, VMFORK_CMD_GET_STATS, NLM_F_DUMP);
		if (nl_call(nl, &r, NULL, 0, NULL, NULL, 0))
			die("GET_STATS dump");
	}
}

/* Faults per second of the loop over @map for @secs. */
static double fault_rate(int obj, volatile __u64 *map, __u64 pages, double secs)
{
	__u64 faults = 0, p, round = 0;
	double t0 = now_ms(), t;
	int child;

	do {
		child = __vmfork_fork(obj, 0, NULL);
		if (child < 0)
			die("fork");
		close(child);
		round++;
		for (p = 0; p < pages; p++)
			map[p * PG / 8] = round;
		for (p = 0; p < pages; p += 97)
			if (map[p * PG / 8] != round)
				die("content check");
		faults += pages;
		t = now_ms();
	} while (t - t0 < secs * 1000);
	return faults / ((t - t0) / 1000);
}

int main(int argc, char **argv)
{
	double secs = 3, rate[NR_LOADS];
	__u64 pages = 4096;
	volatile __u64 *map;
	int dev, obj, opt, status;
	enum load load;
	pid_t pid;

	while ((opt = getopt(argc, argv, "s:p:h")) != -1) {
		switch (opt) {
		case 's': secs = atof(optarg); break;
		case 'p': pages = strtoull(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "Usage: dump_bench [-s SECS] [-p PAGES]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	dev = __vmfork_open();
	if (dev < 0)
		die("open /dev/vmfork");
	obj = __vmfork_create(dev, PAGES(pages), NULL);
	if (obj < 0)
		die("VMFORK_CREATE_MEM");
	map = __vmfork_mmap(obj, PAGES(pages), 0, PROT_READ | PROT_WRITE);
	if (map == MAP_FAILED)
		die("mmap");
	fault_rate(obj, map, pages, 0.5);	/* warm up */

	for (load = 0; load < NR_LOADS; load++) {
		pid = 0;
		if (load != LOAD_NONE) {
			pid = fork();
			if (pid < 0)
				die("fork()");
			if (!pid)
				compete(load, obj);
			usleep(100000);
		}
		rate[load] = fault_rate(obj, map, pages, secs);
		if (pid) {
			kill(pid, SIGKILL);
			if (waitpid(pid, &status, 0) != pid ||
			    !WIFSIGNALED(status)) {
				fprintf(stderr, "dump_bench: the %s process ended early (status %#x)\n",
					load_names[load], status);
				return 1;
			}
		}
	}
	printf("%-8s %14s %10s\n", "beside", "faults/s", "vs hog");
	for (load = 0; load < NR_LOADS; load++)
		printf("%-8s %14.0f %9.2fx\n", load_names[load], rate[load],
		       rate[load] / rate[LOAD_HOG]);
	return 0;
}

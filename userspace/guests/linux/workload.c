// SPDX-License-Identifier: GPL-2.0
/*
 * vmfork-workload: a guest-side oracle for forks of a running Linux guest.
 *
 * Usage: vmfork-workload [MIB [PERIOD_MS]]
 *
 * Fills MIB MiB (default 32) of anonymous memory, every page with words derived from a
 * per-page tag, then loops: verify every page against its tag, rewrite one page in
 * 64 with a new tag (from the TSC, so clones diverge), print one line, sleep. A
 * page that changed behind the program's back (a copy-on-write leak from a sibling, a
 * page lost or zeroed in a fork) fails the next round:
 *
 *   vmfork-workload: round R ok: N MiB verified, M pages rewritten
 *   vmfork-workload: round R FAILED: K pages differ, first page P word W: ...
 *
 * The process keeps running in every clone of the guest, so the rounds go on there;
 * the data from before the fork is checked by the guest itself, not by the VMM.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE_WORDS 512 /* 4 KiB of 64-bit words */
#define STRIDE 64      /* one page in STRIDE rewritten per round */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* Word k of a page with tag t: cheap to compute, different for every word and tag. */
static inline uint64_t word(uint64_t t, uint64_t k)
{
	return t ^ (k * 0x9e3779b97f4a7c15ULL);
}

static void fill(uint64_t *page, uint64_t tag)
{
	for (uint64_t k = 0; k < PAGE_WORDS; k++)
		page[k] = word(tag, k);
}

static long parse(const char *s, long lo, long hi, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "vmfork-workload: %s must be %ld..%ld, not '%s'\n", what, lo, hi, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	long mib = argc > 1 ? parse(argv[1], 1, 65536, "MIB") : 32;
	long period_ms = argc > 2 ? parse(argv[2], 0, 3600000, "PERIOD_MS") : 1000;
	size_t pages = (size_t)mib * 256;
	uint64_t *mem, *tags;
	struct timespec pause = { period_ms / 1000, (period_ms % 1000) * 1000000L };

	if (argc > 3) {
		fprintf(stderr, "usage: vmfork-workload [MIB [PERIOD_MS]]\n");
		return 2;
	}
	mem = mmap(NULL, pages * PAGE_WORDS * 8, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	tags = calloc(pages, sizeof(*tags));
	if (mem == MAP_FAILED || !tags) {
		fprintf(stderr, "vmfork-workload: cannot allocate %ld MiB: %s\n", mib,
			strerror(errno));
		return 1;
	}
	for (size_t p = 0; p < pages; p++) {
		tags[p] = mix(rdtsc() ^ p);
		fill(mem + p * PAGE_WORDS, tags[p]);
	}
	printf("vmfork-workload: %ld MiB filled, a round every %ld ms\n", mib, period_ms);
	fflush(stdout);

	for (uint64_t round = 1;; round++) {
		size_t bad = 0, first = 0, first_word = 0;
		uint64_t found = 0, expected = 0, rewritten = 0;

		for (size_t p = 0; p < pages; p++) {
			const uint64_t *page = mem + p * PAGE_WORDS;

			for (uint64_t k = 0; k < PAGE_WORDS; k++) {
				if (page[k] == word(tags[p], k))
					continue;
				if (!bad++) {
					first = p;
					first_word = k;
					found = page[k];
					expected = word(tags[p], k);
				}
				break;
			}
		}
		for (size_t p = round % STRIDE; p < pages; p += STRIDE) {
			tags[p] = mix(rdtsc() ^ (round << 32) ^ p);
			fill(mem + p * PAGE_WORDS, tags[p]);
			rewritten++;
		}
		if (bad)
			printf("vmfork-workload: round %" PRIu64 " FAILED: %zu pages differ, first page %zu word %zu: 0x%016" PRIx64 ", expected 0x%016" PRIx64 "\n",
			       round, bad, first, first_word, found, expected);
		else
			printf("vmfork-workload: round %" PRIu64 " ok: %ld MiB verified, %" PRIu64 " pages rewritten\n",
			       round, mib, rewritten);
		fflush(stdout);
		if (bad) {
			/* Resynchronise so that the next round reports new damage only. */
			for (size_t p = 0; p < pages; p++)
				fill(mem + p * PAGE_WORDS, tags[p]);
		}
		nanosleep(&pause, NULL);
	}
}

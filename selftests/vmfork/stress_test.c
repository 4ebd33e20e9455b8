// SPDX-License-Identifier: GPL-2.0
/*
 * Stress: a KVM guest writes all over its memory while other threads fork
 * it, check, reset and close the children, run children in a second VM,
 * and read stats (ioctl, netlink dumps, debugfs), and a writer process in a
 * memory cgroup fills children that it is sent until it hits the cgroup's
 * limit, again and again. For VMFORK_STRESS_SECS seconds (default 30; make
 * stress: 600).
 *
 * What must hold: a child nobody ran or wrote still holds exactly what it
 * held when it was forked (a copy-on-write leak from the running parent
 * would change it); a reset child holds that again; stats add up; hitting
 * the limit fails the access that needed memory (-EFAULT from KVM_RUN,
 * -ENOMEM from a fork or a write), never the host; the kernel stays silent
 * and every object and page is freed at the end.
 *
 * The guest (real mode) increments one dword in each page from 64 KiB to
 * 960 KiB, for ever: one store per page per round.
 *
 * Only the writer is in the cgroup, with everything it needs made, faulted
 * in and locked (its fd table grown too) before it joins, and doing nothing
 * but receiving fds, pwrite() and close():
 * vmfork's own allocations fail at the limit (-ENOMEM), but any other charged
 * allocation there (a struct file of a fork, KVM's page tables) would call
 * the memcg OOM killer, whose report is a kernel complaint of its own.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "vmfork_nl.h"
#include "vmfork_test.h"

#define CG_ROOT		"/sys/fs/cgroup"
#define CG_LIMIT	(2ULL << 20)
#define GUEST_SIZE	(1ULL << 20)
#define RIP_LOOP	0x1000
#define FIRST_PAGE	16		/* 0x10000 */
#define LAST_PAGE	240		/* 0xf0000, excluded */
#define NR_WORDS	(LAST_PAGE - FIRST_PAGE)
#define MAX_CHILDREN	12

/* mov ax,0x1000; l: mov es,ax; inc dword [es:0]; add ax,0x100; cmp ax,0xf000; jb l; jmp 0x1000 */
static const __u8 guest_loop[] = {
	0xb8, 0x00, 0x10,
	0x8e, 0xc0,
	0x26, 0x66, 0xff, 0x06, 0x00, 0x00,
	0x05, 0x00, 0x01,
	0x3d, 0x00, 0xf0,
	0x72, 0xf0,
	0xeb, 0xeb,
};

struct child {
	int fd;				/* -1: free */
	unsigned long serial;		/* which fork put it here */
	bool running;			/* in the second VM right now */
	bool dirty;			/* ran or written since its snapshot */
	__u32 snap[NR_WORDS];		/* its counters when it was forked */
};

struct stress {
	int dev, parent;
	struct kvm_vm vm, cvm;		/* the parent's VM, the children's */
	pthread_mutex_t mu;		/* protects @kids */
	struct child kids[MAX_CHILDREN];
	struct nl *nl;
	unsigned long serial;		/* forks so far, under @mu */
	int to_writer;			/* a socket: scratch children for the writer */
	atomic_int stop, go;
	atomic_ulong forks, resets, checks, child_runs, stats, limit_hits,
		     guest_rounds;
	atomic_ulong failures;
};

#define fail(s, fmt, ...) do {						\
	atomic_fetch_add(&(s)->failures, 1);				\
	fprintf(stderr, "# stress: " fmt "\n", ##__VA_ARGS__);		\
} while (0)

static unsigned int rnd(unsigned int *seed, unsigned int n)
{
	return rand_r(seed) % n;
}

static int read_words(int fd, __u32 *w)
{
	__u32 page;

	for (page = FIRST_PAGE; page < LAST_PAGE; page++)
		if (pread(fd, &w[page - FIRST_PAGE], 4, PAGES(page)) != 4)
			return -1;
	return 0;
}

/* Threads start together, once the stressed setup is complete. */
static void wait_go(struct stress *s)
{
	while (!atomic_load(&s->go))
		usleep(1000);
}

static void kick(int sig)
{
	(void)sig;
}

/*
 * Runs @vm's vCPU until @stop, or for @ms when non-zero; limit hits are
 * retried. The guest spins without exits: a timer signals this thread every
 * 2 ms so that KVM_RUN returns (EINTR) and the time and @stop are looked at.
 */
static void run_vcpu(struct stress *s, struct kvm_vm *vm, __u64 ms)
{
	struct itimerspec its = { .it_interval.tv_nsec = 2000000,
				  .it_value.tv_nsec = 2000000 };
	struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID,
				.sigev_signo = SIGUSR1 };
	__u64 end = ms ? now_ms() + ms : 0;
	timer_t timer;

	sev._sigev_un._tid = gettid();
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer) ||
	    timer_settime(timer, 0, &its, NULL)) {
		fail(s, "vCPU timer: %s", strerror(errno));
		return;
	}

	while (!atomic_load(&s->stop) && (!end || now_ms() < end)) {
		if (ioctl(vm->vcpu_fd, KVM_RUN, 0) == 0) {
			if (vm->run->exit_reason != KVM_EXIT_INTR) {
				fail(s, "guest exit %u", vm->run->exit_reason);
				break;
			}
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EFAULT || errno == ENOMEM) {
			/* A guest store found the cgroup full. */
			atomic_fetch_add(&s->limit_hits, 1);
			usleep(1000);
			continue;
		}
		fail(s, "KVM_RUN: %s", strerror(errno));
		break;
	}
	timer_delete(timer);
}

static void *guest_thread(void *arg)
{
	struct stress *s = arg;

	wait_go(s);
	run_vcpu(s, &s->vm, 0);
	return NULL;
}

/* Closes a random child, under s->mu. */
static void drop_child(struct stress *s, unsigned int *seed)
{
	struct child *c = &s->kids[rnd(seed, MAX_CHILDREN)];

	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
}

/* Checks @c (under s->mu): a clean child holds its snapshot. */
static void check_child(struct stress *s, struct child *c, const char *when)
{
	__u32 now[NR_WORDS];
	struct vmfork_stats st;
	unsigned int i;

	if (read_words(c->fd, now)) {
		fail(s, "pread of a child: %s", strerror(errno));
		return;
	}
	for (i = 0; i < NR_WORDS; i++) {
		if (now[i] != c->snap[i]) {
			fail(s, "%s: child page %u holds %u, %u at its fork",
			     when, FIRST_PAGE + i, now[i], c->snap[i]);
			break;
		}
	}
	if (__vmfork_stats(c->fd, &st) ||
	    st.resident_pages != st.shared_pages + st.private_pages)
		fail(s, "child stats do not add up");
	atomic_fetch_add(&s->checks, 1);
}

static void *fork_thread(void *arg)
{
	struct stress *s = arg;
	unsigned int seed = 1;
	struct child *c;
	int fd, i;

	wait_go(s);
	while (!atomic_load(&s->stop)) {
		fd = __vmfork_fork(s->parent, 0, NULL);
		if (fd < 0) {
			if (errno != ENOMEM)
				fail(s, "fork: %s", strerror(errno));
			atomic_fetch_add(&s->limit_hits, 1);
			pthread_mutex_lock(&s->mu);
			drop_child(s, &seed);
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		atomic_fetch_add(&s->forks, 1);
		pthread_mutex_lock(&s->mu);
		for (i = 0, c = NULL; i < MAX_CHILDREN && !c; i++)
			if (s->kids[i].fd < 0)
				c = &s->kids[i];
		if (!c) {
			drop_child(s, &seed);
			pthread_mutex_unlock(&s->mu);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->serial = ++s->serial;
		c->running = false;
		c->dirty = false;
		if (read_words(fd, c->snap)) {
			fail(s, "pread of a new child: %s", strerror(errno));
			close(fd);
			c->fd = -1;
		}
		pthread_mutex_unlock(&s->mu);
		usleep(2000);
	}
	return NULL;
}

/* Checks, writes, resets and closes children. */
static void *check_thread(void *arg)
{
	struct stress *s = arg;
	unsigned int seed = 2;
	__u32 junk = 0xdead;
	struct child *c;

	wait_go(s);
	while (!atomic_load(&s->stop)) {
		pthread_mutex_lock(&s->mu);
		c = &s->kids[rnd(&seed, MAX_CHILDREN)];
		if (c->fd >= 0) {
			switch (rnd(&seed, 4)) {
			case 0:
				if (pwrite(c->fd, &junk, 4,
					   PAGES(FIRST_PAGE + rnd(&seed, NR_WORDS))) == 4)
					c->dirty = true;
				else if (errno == ENOMEM)
					atomic_fetch_add(&s->limit_hits, 1);
				else
					fail(s, "pwrite: %s", strerror(errno));
				break;
			case 1:
				if (__vmfork_reset(c->fd, 0)) {
					fail(s, "reset: %s", strerror(errno));
					break;
				}
				atomic_fetch_add(&s->resets, 1);
				/* One the second VM runs changes again at once. */
				if (c->running)
					break;
				c->dirty = false;
				check_child(s, c, "after a reset");
				break;
			default:
				if (!c->dirty)
					check_child(s, c, "untouched");
			}
		}
		pthread_mutex_unlock(&s->mu);
		usleep(500);
	}
	return NULL;
}

/* The second VM no longer runs the child in @c, if @c still holds it. */
static void done_running(struct stress *s, struct child *c, unsigned long serial)
{
	pthread_mutex_lock(&s->mu);
	if (c->serial == serial)
		c->running = false;
	pthread_mutex_unlock(&s->mu);
}

/* Runs children in the second VM for a few milliseconds each. */
static void *child_vm_thread(void *arg)
{
	struct stress *s = arg;
	unsigned int seed = 3;
	unsigned long serial = 0;
	struct child *c;
	void *map;
	int fd;

	wait_go(s);
	while (!atomic_load(&s->stop)) {
		pthread_mutex_lock(&s->mu);
		c = &s->kids[rnd(&seed, MAX_CHILDREN)];
		fd = c->fd >= 0 ? dup(c->fd) : -1;
		if (fd >= 0) {
			/* It runs from now on: not clean until reset after the run. */
			c->dirty = true;
			c->running = true;
			serial = c->serial;
		}
		pthread_mutex_unlock(&s->mu);
		if (fd < 0) {
			usleep(1000);
			continue;
		}
		map = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			   fd, 0);
		close(fd);
		if (map == MAP_FAILED) {
			if (errno != ENOMEM)
				fail(s, "mmap of a child: %s", strerror(errno));
			done_running(s, c, serial);
			continue;
		}
		if (__kvm_set_mem(&s->cvm, 0, 0, GUEST_SIZE, map) == 0 &&
		    __kvm_vcpu_real_mode(&s->cvm, RIP_LOOP, 0) == 0) {
			run_vcpu(s, &s->cvm, 5);
			atomic_fetch_add(&s->child_runs, 1);
		} else if (errno != ENOMEM) {
			fail(s, "child VM setup: %s", strerror(errno));
		}
		__kvm_set_mem(&s->cvm, 0, 0, 0, map);	/* delete the slot */
		munmap(map, GUEST_SIZE);
		done_running(s, c, serial);
	}
	return NULL;
}

/* Forks scratch children of the parent for the writer process. */
static void *feed_thread(void *arg)
{
	struct stress *s = arg;
	int fd;

	wait_go(s);
	while (!atomic_load(&s->stop)) {
		fd = __vmfork_fork(s->parent, 0, NULL);
		if (fd < 0) {
			if (errno != ENOMEM)
				fail(s, "fork for the writer: %s", strerror(errno));
			usleep(10000);
			continue;
		}
		if (send_fd(s->to_writer, fd, MSG_DONTWAIT) && errno != EAGAIN)
			fail(s, "sending a child to the writer: %s",
			     strerror(errno));
		close(fd);
		usleep(100000);
	}
	return NULL;
}

#define WRITER_KEEP	64

/*
 * The writer process, in the cgroup: keeps the children it is sent (up to
 * 64 MiB of them, far over the limit, however slowly they come) and writes
 * random pages of them until a write fails with ENOMEM, then closes one.
 * Exits with 0, or 1 on any other error, and prints its counts.
 */
static int writer_main(int sock, const char *cg)
{
	static char page[PG];
	char path[256], pid[32];
	int fds[WRITER_KEEP], n = 0, i, fd;
	unsigned long writes = 0, enomem = 0;
	unsigned int seed = 4;

	memset(page, 0x5a, sizeof(page));
	for (i = 0; i < WRITER_KEEP; i++)
		fds[i] = -1;
	/*
	 * The fd table grows (a charged allocation) past 64 fds: grow it now,
	 * outside the cgroup, for every child this process may keep.
	 */
	if (dup2(sock, WRITER_KEEP + 64) < 0 || close(WRITER_KEEP + 64))
		return 2;
	if (mlockall(MCL_CURRENT | MCL_FUTURE))
		return 2;
	snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (write_str(path, pid))
		return 3;
	for (;;) {
		fd = recv_fd(sock, n ? MSG_DONTWAIT : 0);
		if (fd < 0 && errno == ENODATA)
			break;		/* the main process is done */
		if (fd >= 0) {
			for (i = 0; i < WRITER_KEEP && fds[i] >= 0; i++)
				;
			if (i == WRITER_KEEP) {
				close(fd);	/* full: the limit is hit anyway */
			} else {
				fds[i] = fd;
				n++;
			}
		} else if (errno != EAGAIN) {
			return 1;
		}
		if (!n)
			continue;
		fd = fds[rnd(&seed, WRITER_KEEP)];
		if (fd < 0)
			continue;
		if (pwrite(fd, page, PG, PAGES(FIRST_PAGE + rnd(&seed, NR_WORDS))) == PG) {
			writes++;
		} else if (errno == ENOMEM) {
			enomem++;
			/* Give one back; its pages are uncharged. */
			i = rnd(&seed, WRITER_KEEP);
			if (fds[i] >= 0) {
				close(fds[i]);
				fds[i] = -1;
			}
		} else {
			fprintf(stderr, "# stress writer: pwrite: %s\n",
				strerror(errno));
			return 1;
		}
	}
	fprintf(stderr, "# stress writer: %lu pages written, %lu writes refused with ENOMEM\n",
		writes, enomem);
	return 0;
}

static void *stats_thread(void *arg)
{
	struct stress *s = arg;
	char buf[4096];
	struct nl_req r;
	int fd;

	wait_go(s);
	while (!atomic_load(&s->stop)) {
		req_init(&r, s->nl->family, VMFORK_CMD_GET_STATS, NLM_F_DUMP);
		if (nl_call(s->nl, &r, NULL, 0, NULL, NULL, 0) == -EAGAIN)
			fail(s, "no netlink answer");
		fd = open("/sys/kernel/debug/vmfork/objects", O_RDONLY);
		if (fd >= 0) {
			while (read(fd, buf, sizeof(buf)) > 0)
				;
			close(fd);
		}
		atomic_fetch_add(&s->stats, 1);
	}
	return NULL;
}

/* The stress itself. Returns 0, or 1 on failures, or where setup failed. */
static int stress_main(int to_writer, __u64 secs)
{
	static struct stress st;
	struct stress *s = &st;
	void *(*fns[])(void *) = { guest_thread, fork_thread, check_thread,
				   child_vm_thread, stats_thread, feed_thread };
	pthread_t tid[ARRAY_SIZE(fns)];
	struct sigaction sa = { .sa_handler = kick };
	__u64 end;
	void *map;
	unsigned int i;

	s->to_writer = to_writer;
	pthread_mutex_init(&s->mu, NULL);
	for (i = 0; i < MAX_CHILDREN; i++)
		s->kids[i].fd = -1;
	sigaction(SIGUSR1, &sa, NULL);	/* no SA_RESTART: KVM_RUN returns */

	s->dev = __vmfork_open();
	s->parent = __vmfork_create(s->dev, GUEST_SIZE, NULL);
	if (s->dev < 0 || s->parent < 0)
		return 10;
	if (pwrite(s->parent, guest_loop, sizeof(guest_loop), RIP_LOOP) !=
	    sizeof(guest_loop))
		return 11;
	map = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		   s->parent, 0);
	if (map == MAP_FAILED)
		return 12;
	if (__kvm_vm_create(&s->vm) || __kvm_set_mem(&s->vm, 0, 0, GUEST_SIZE, map) ||
	    __kvm_vcpu_create(&s->vm) || __kvm_vcpu_real_mode(&s->vm, RIP_LOOP, 0) ||
	    __kvm_vm_create(&s->cvm) || __kvm_vcpu_create(&s->cvm))
		return 13;
	/* One round of the guest: its pages, page tables and NPT exist. */
	run_vcpu(s, &s->vm, 200);
	s->nl = nl_new(5);
	if (!s->nl)
		return 14;
	for (i = 0; i < ARRAY_SIZE(fns); i++)
		if (pthread_create(&tid[i], NULL, fns[i], s))
			return 15;
	atomic_store(&s->go, 1);
	end = now_ms() + secs * 1000;
	while (now_ms() < end && !atomic_load(&s->failures))
		usleep(100 * 1000);
	atomic_store(&s->stop, 1);
	s->vm.run->immediate_exit = 1;
	s->cvm.run->immediate_exit = 1;
	for (i = 0; i < ARRAY_SIZE(fns); i++) {
		pthread_kill(tid[i], SIGUSR1);
		pthread_join(tid[i], NULL);
	}
	fprintf(stderr, "# stress: %llu s: %lu forks, %lu checks, %lu resets, %lu child runs, %lu stats walks, %lu limit hits, %lu failures\n",
		(unsigned long long)secs, atomic_load(&s->forks),
		atomic_load(&s->checks), atomic_load(&s->resets),
		atomic_load(&s->child_runs), atomic_load(&s->stats),
		atomic_load(&s->limit_hits), atomic_load(&s->failures));
	if (atomic_load(&s->failures))
		return 1;
	if (!atomic_load(&s->forks) || !atomic_load(&s->checks) ||
	    !atomic_load(&s->child_runs))
		return 19;
	return 0;
}

/* A count of the cgroup's memory.events ("max", "oom_kill"), or -1. */
static long long memcg_event(const char *cg, const char *key)
{
	char path[256], buf[512], want[32], *p;
	long long n = -1;
	ssize_t len;
	int fd;

	snprintf(path, sizeof(path), "%s/memory.events", cg);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return -1;
	buf[len] = 0;
	snprintf(want, sizeof(want), "\n%s ", key);
	p = strstr(buf, want);
	if (p)
		n = atoll(p + strlen(want));
	return n;
}

FIXTURE(stress) {
	int unused;
};

FIXTURE_SETUP(stress) {}
FIXTURE_TEARDOWN(stress) {}

TEST_F_TIMEOUT(stress, guests_fault_while_others_fork_reset_close_and_read_stats,
	       1800)
{
	__u64 secs = getenv("VMFORK_STRESS_SECS") ?
		     strtoull(getenv("VMFORK_STRESS_SECS"), NULL, 0) : 30;
	char cg[128], path[256], limit[32];
	struct vmfork_counters c;
	long long hits, oom_kills;
	int status, wstatus, sv[2], ret;
	pid_t pid, writer;

	if (!vmfork_module_loaded() && !getenv("VMFORK_KO"))
		SKIP(return, "vmfork module not loaded");
	KVM_REQUIRE();
	if (access(CG_ROOT "/cgroup.subtree_control", W_OK) ||
	    write_str(CG_ROOT "/cgroup.subtree_control", "+memory"))
		SKIP(return, "no cgroup2 memory controller at " CG_ROOT);

	snprintf(cg, sizeof(cg), CG_ROOT "/vmfork-stress-%d", getpid());
	ASSERT_EQ(0, mkdir(cg, 0755));
	snprintf(path, sizeof(path), "%s/memory.max", cg);
	snprintf(limit, sizeof(limit), "%llu", CG_LIMIT);
	ASSERT_EQ(0, write_str(path, limit));
	snprintf(path, sizeof(path), "%s/memory.swap.max", cg);
	write_str(path, "0");

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	writer = fork();
	ASSERT_LE(0, writer);
	if (!writer) {
		close(sv[0]);
		_exit(writer_main(sv[1], cg));
	}
	close(sv[1]);
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		ret = stress_main(sv[0], secs);
		/* An empty datagram ends the writer. */
		send(sv[0], "", 0, 0);
		_exit(ret);
	}
	close(sv[0]);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(writer, waitpid(writer, &wstatus, 0));
	hits = memcg_event(cg, "max");
	oom_kills = memcg_event(cg, "oom_kill");
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		TH_LOG("stress process: status %#x (1: failures above; setup: 10 open, 11 code, 12 mmap, 13 KVM, 14 netlink, 15 threads; 19 nothing happened)",
		       status);
	}
	EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
		TH_LOG("writer process: status %#x (1 an error other than ENOMEM, 2 fd table or mlockall, 3 cgroup join)",
		       wstatus);
	}
	EXPECT_LT(0, hits) {
		TH_LOG("the cgroup limit must have been hit (memory.events max %lld)",
		       hits);
	}
	EXPECT_EQ(0, oom_kills) {
		TH_LOG("the OOM killer ran in the writer's cgroup (oom_kill %lld): an allocation other than vmfork's was charged there",
		       oom_kills);
	}
	TH_LOG("memory.events max: %lld", hits);
	EXPECT_EQ(0, rmdir(cg)) {
		TH_LOG("rmdir %s: %s", cg, strerror(errno));
	}
	ASSERT_EQ(0, vmfork_wait_counters_idle(&c, 5000)) {
		TH_LOG("objects %ld, pages %ld left after the stressed process ended",
		       c.objects, c.pages);
	}
}

TEST_HARNESS_MAIN

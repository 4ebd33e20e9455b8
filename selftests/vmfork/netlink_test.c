// SPDX-License-Identifier: GPL-2.0
/*
 * The "vmfork" generic netlink family: the GET_STATS dump and doit agree with
 * VMFORK_GET_STATS for every object, GET_COUNTERS with debugfs, the events
 * group delivers one event per fork, reset and release, malformed requests
 * get an error (and the socket keeps working), and an unprivileged caller
 * sees only its own objects and cannot join the events group.
 *
 * Raw netlink on purpose: the test builds the malformed messages itself.
 */
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "vmfork_nl.h"
#include "vmfork_test.h"

#define NPAGES		16
#define NL_TIMEOUT_S	5

static struct nl *nl_open(META)
{
	struct timeval tv = { .tv_sec = NL_TIMEOUT_S };
	struct nl *nl = calloc(1, sizeof(*nl));
	int one = 1, err;

	ASSERT_NE(NULL, nl);
	nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	ASSERT_LE(0, nl->fd) TH_LOG("socket(NETLINK_GENERIC): %s", strerror(errno));
	/* Every wait is bounded: a missing reply fails the test, it never hangs. */
	ASSERT_EQ(0, setsockopt(nl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	ASSERT_EQ(0, setsockopt(nl->fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)));
	err = nl_resolve(nl);
	ASSERT_EQ(0, err) {
		TH_LOG("generic netlink family \"%s\" must be registered while the module is loaded: %s",
		       VMFORK_GENL_NAME, strerror(-err));
	}
	return nl;
}

static void nl_close(struct nl *nl)
{
	if (nl) {
		close(nl->fd);
		free(nl);
	}
}

#define MAX_MSGS	256

static const struct vmfork_msg *find_id(const struct vmfork_msg *m, int n, __u64 id)
{
	for (int i = 0; i < n; i++)
		if (m[i].a[VMFORK_A_ID] == id)
			return &m[i];
	return NULL;
}

static int count_id(const struct vmfork_msg *m, int n, __u64 id)
{
	int c = 0;

	for (int i = 0; i < n; i++)
		c += m[i].a[VMFORK_A_ID] == id;
	return c;
}

/* Every figure of a netlink message equals VMFORK_GET_STATS on @fd. */
static void expect_msg_matches(META, const struct vmfork_msg *m, int fd,
			       const char *who)
{
	static const struct { int attr; size_t off; const char *name; } fields[] = {
#define F(a, f) { VMFORK_A_##a, offsetof(struct vmfork_stats, f), #f }
		F(ID, id), F(PARENT_ID, parent_id), F(DEPTH, depth), F(SIZE, size),
		F(RESIDENT_PAGES, resident_pages), F(SHARED_PAGES, shared_pages),
		F(PRIVATE_PAGES, private_pages), F(COW_BREAKS, cow_breaks),
		F(FORKS, forks), F(RESETS, resets), F(FLAGS, flags),
		F(CHAIN_LENGTH, chain_length),
#undef F
	};
	struct vmfork_stats st;

	ASSERT_NE(NULL, m) TH_LOG("%s: no netlink message for the object", who);
	vmfork_stats(_metadata, fd, &st);
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		__u64 want = *(__u64 *)((char *)&st + fields[i].off);

		EXPECT_TRUE(m->has[fields[i].attr]) TH_LOG("%s: no %s attribute", who, fields[i].name);
		EXPECT_EQ(want, m->a[fields[i].attr]) {
			TH_LOG("%s: netlink %s must equal VMFORK_GET_STATS's", who, fields[i].name);
		}
	}
	EXPECT_EQ((__u64)getpid(), m->a[VMFORK_A_CREATOR_PID]) {
		TH_LOG("%s: the creator pid must be this process", who);
	}
}

static void store(void *map, unsigned int page, __u64 v)
{
	*(volatile __u64 *)((char *)map + page * PG + 8) = v;
}

static int get_stats(struct nl *nl, __u64 id, struct vmfork_msg *out,
		     char *extack, size_t len)
{
	struct nl_req r;
	int count;

	req_init(&r, nl->family, VMFORK_CMD_GET_STATS, 0);
	req_put_u64(&r, VMFORK_A_ID, id);
	return nl_call(nl, &r, out, 1, &count, extack, len);
}

static int dump_stats(struct nl *nl, struct vmfork_msg *msgs, int *count)
{
	struct nl_req r;

	req_init(&r, nl->family, VMFORK_CMD_GET_STATS, NLM_F_DUMP);
	return nl_call(nl, &r, msgs, MAX_MSGS, count, NULL, 0);
}

/* A parent with data; its child, with COW breaks, then frozen as a template; a grandchild. */
FIXTURE(nl) {
	int dev;
	int obj[3];
	__u64 id[3];
	void *map[2];
	struct nl *nl;
	struct vmfork_msg msgs[MAX_MSGS];
};

FIXTURE_SETUP(nl)
{
	unsigned int i;

	memset(self->obj, 0xff, sizeof(self->obj));
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->nl = nl_open(_metadata);
	self->obj[0] = vmfork_create(_metadata, self->dev, PAGES(NPAGES), &self->id[0]);
	self->map[0] = vmfork_mmap(_metadata, self->obj[0], PAGES(NPAGES), 0,
				   PROT_READ | PROT_WRITE);
	for (i = 0; i < 6; i++)
		store(self->map[0], i, 0x100 + i);
	self->obj[1] = vmfork_fork(_metadata, self->obj[0], 0, &self->id[1]);
	self->map[1] = vmfork_mmap(_metadata, self->obj[1], PAGES(NPAGES), 0,
				   PROT_READ | PROT_WRITE);
	store(self->map[1], 0, 1);	/* 2 COW breaks, 1 new page */
	store(self->map[1], 1, 2);
	store(self->map[1], 9, 3);
	store(self->map[0], 2, 4);	/* the parent breaks one too */
	self->obj[2] = vmfork_fork(_metadata, self->obj[1], VMFORK_FORK_TEMPLATE,
				   &self->id[2]);
}

FIXTURE_TEARDOWN(nl)
{
	for (int i = 0; i < 2; i++)
		if (self->map[i])
			munmap(self->map[i], PAGES(NPAGES));
	for (int i = 0; i < 3; i++)
		if (self->obj[i] >= 0)
			close(self->obj[i]);
	if (self->dev >= 0)
		close(self->dev);
	nl_close(self->nl);
}

TEST_F(nl, dump_agrees_with_ioctl)
{
	int count, err;

	err = dump_stats(self->nl, self->msgs, &count);
	ASSERT_EQ(0, err) TH_LOG("GET_STATS dump: %s", strerror(-err));
	for (int i = 0; i < 3; i++) {
		char who[32];

		snprintf(who, sizeof(who), "object %d (dump)", i);
		EXPECT_EQ(1, count_id(self->msgs, count, self->id[i])) {
			TH_LOG("%s: exactly one message per object", who);
		}
		expect_msg_matches(_metadata, find_id(self->msgs, count, self->id[i]),
				   self->obj[i], who);
	}
	/* What the fixture did, so that a test of all-zero figures cannot pass. */
	EXPECT_EQ(2ULL, find_id(self->msgs, count, self->id[1])->a[VMFORK_A_COW_BREAKS]);
	EXPECT_EQ((__u64)VMFORK_STATS_TEMPLATE,
		  find_id(self->msgs, count, self->id[1])->a[VMFORK_A_FLAGS]);
	EXPECT_EQ(2ULL, find_id(self->msgs, count, self->id[2])->a[VMFORK_A_DEPTH]);
}

TEST_F(nl, dump_filtered_by_id)
{
	struct nl_req r;
	int count, err;

	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, NLM_F_DUMP);
	req_put_u64(&r, VMFORK_A_ID, self->id[1]);
	err = nl_call(self->nl, &r, self->msgs, MAX_MSGS, &count, NULL, 0);
	ASSERT_EQ(0, err) TH_LOG("GET_STATS dump with an id: %s", strerror(-err));
	ASSERT_EQ(1, count);
	expect_msg_matches(_metadata, &self->msgs[0], self->obj[1], "filtered dump");
}

TEST_F(nl, doit_agrees_with_ioctl)
{
	char extack[128];
	int err;

	for (int i = 0; i < 3; i++) {
		err = get_stats(self->nl, self->id[i], &self->msgs[0], extack, sizeof(extack));
		ASSERT_EQ(0, err) TH_LOG("GET_STATS %llu: %s (%s)",
					 (unsigned long long)self->id[i], strerror(-err), extack);
		expect_msg_matches(_metadata, &self->msgs[0], self->obj[i], "doit");
	}
}

TEST_F(nl, doit_errors)
{
	char extack[128];
	struct nl_req r;

	EXPECT_EQ(-EINVAL, get_stats(self->nl, 0, self->msgs, extack, sizeof(extack)));
	EXPECT_STREQ("object ids start at 1", extack);
	EXPECT_EQ(-ENOENT, get_stats(self->nl, ~0ULL, self->msgs, extack, sizeof(extack)));
	EXPECT_STREQ("no such object", extack);

	/* doit without the id */
	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, 0);
	EXPECT_EQ(-EINVAL, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));
}

TEST_F(nl, malformed_requests_fail_and_the_socket_survives)
{
	__u32 u32 = 1;
	struct nl_req r;
	int count, err;

	/* a u32 where the policy wants a u64 */
	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, 0);
	req_put(&r, VMFORK_A_ID, &u32, sizeof(u32), 0);
	EXPECT_GT(0, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));

	/* an attribute a request may not carry, and one past the family's range */
	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, 0);
	req_put_u64(&r, VMFORK_A_ID, self->id[0]);
	req_put_u64(&r, VMFORK_A_SIZE, 1);
	EXPECT_EQ(-EINVAL, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));
	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, 0);
	req_put_u64(&r, 500, 1);
	EXPECT_EQ(-EINVAL, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));

	/* an attribute whose length runs past the message */
	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, 0);
	req_put(&r, VMFORK_A_ID, &self->id[0], 8, NLA_HDRLEN + 200);
	EXPECT_GT(0, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));

	/* the same, in a dump */
	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, NLM_F_DUMP);
	req_put_u64(&r, VMFORK_A_PRIVATE_PAGES, 1);
	EXPECT_EQ(-EINVAL, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));

	/* GET_COUNTERS takes no attribute */
	req_init(&r, self->nl->family, VMFORK_CMD_GET_COUNTERS, 0);
	req_put_u64(&r, VMFORK_A_ID, 1);
	EXPECT_EQ(-EINVAL, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));

	/* events are the kernel's to send; unknown commands */
	req_init(&r, self->nl->family, VMFORK_CMD_EVENT_FORK, 0);
	EXPECT_EQ(-EOPNOTSUPP, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));
	req_init(&r, self->nl->family, 200, 0);
	EXPECT_EQ(-EOPNOTSUPP, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));

	/* a message shorter than its generic netlink header */
	req_init(&r, self->nl->family, VMFORK_CMD_GET_STATS, 0);
	r.nlh.nlmsg_len = NLMSG_LENGTH(2);
	EXPECT_GT(0, nl_call(self->nl, &r, NULL, 0, NULL, NULL, 0));

	err = dump_stats(self->nl, self->msgs, &count);
	ASSERT_EQ(0, err) TH_LOG("the socket must still work: %s", strerror(-err));
	expect_msg_matches(_metadata, find_id(self->msgs, count, self->id[0]),
			   self->obj[0], "dump after the bad requests");
}

TEST_F(nl, counters_agree_with_debugfs)
{
	struct vmfork_counters c;
	struct nl_req r;
	int count, err;

	req_init(&r, self->nl->family, VMFORK_CMD_GET_COUNTERS, 0);
	err = nl_call(self->nl, &r, self->msgs, 1, &count, NULL, 0);
	ASSERT_EQ(0, err) TH_LOG("GET_COUNTERS: %s", strerror(-err));
	ASSERT_EQ(1, count);
	EXPECT_LE(3ULL, self->msgs[0].a[VMFORK_A_OBJECTS]);
	/* 6 pages, 3 written in the child, 1 in the parent after the fork */
	EXPECT_LE(10ULL, self->msgs[0].a[VMFORK_A_PAGES]);
	if (vmfork_read_counters(&c))
		SKIP(return, "no " VMFORK_COUNTERS_PATH " to compare with");
	EXPECT_EQ((__u64)c.objects, self->msgs[0].a[VMFORK_A_OBJECTS]);
	EXPECT_EQ((__u64)c.layers, self->msgs[0].a[VMFORK_A_LAYERS]);
	EXPECT_EQ((__u64)c.pages, self->msgs[0].a[VMFORK_A_PAGES]);
}

/* Receives events until @want of command @cmd about our objects arrived, or a timeout. */
static int recv_events(struct nl *nl, __u8 cmd, struct vmfork_msg *out, int want,
		       int timeout_ms)
{
	int got = 0;

	while (got < want) {
		struct pollfd p = { .fd = nl->fd, .events = POLLIN };
		int n;

		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		n = nl_recv(nl);
		if (n < 0)
			break;
		for (struct nlmsghdr *h = (struct nlmsghdr *)nl->buf; NLMSG_OK(h, n);
		     h = NLMSG_NEXT(h, n)) {
			struct vmfork_msg m;

			if (h->nlmsg_type != nl->family)
				continue;
			parse_vmfork(h, &m);
			if (m.cmd == cmd && got < MAX_MSGS)
				out[got++] = m;
		}
	}
	return got;
}

#define K_FORKS	10

TEST_F(nl, one_event_per_fork_reset_and_release)
{
	int child[K_FORKS], got, err;
	__u64 cid[K_FORKS];
	struct vmfork_msg extra;

	err = setsockopt(self->nl->fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP,
			 &self->nl->events_group, sizeof(self->nl->events_group));
	ASSERT_EQ(0, err) TH_LOG("joining the events group as root: %s", strerror(errno));
	ASSERT_NE(0U, self->nl->events_group);

	for (int i = 0; i < K_FORKS; i++)
		child[i] = vmfork_fork(_metadata, self->obj[0], 0, &cid[i]);
	got = recv_events(self->nl, VMFORK_CMD_EVENT_FORK, self->msgs, K_FORKS, 3000);
	ASSERT_EQ(K_FORKS, got) TH_LOG("one fork event per VMFORK_VM_FORK");
	for (int i = 0; i < K_FORKS; i++) {
		EXPECT_EQ(self->id[0], self->msgs[i].a[VMFORK_A_ID]);
		EXPECT_EQ(cid[i], self->msgs[i].a[VMFORK_A_CHILD_ID]) TH_LOG("events in fork order");
		EXPECT_EQ(0ULL, self->msgs[i].a[VMFORK_A_FLAGS]);
		EXPECT_EQ(6ULL, self->msgs[i].a[VMFORK_A_RESIDENT_PAGES]);
		EXPECT_EQ((__u64)getpid(), self->msgs[i].a[VMFORK_A_CREATOR_PID]);
		EXPECT_TRUE(self->msgs[i].has[VMFORK_A_DURATION_NS]);
	}
	EXPECT_EQ(0, recv_events(self->nl, VMFORK_CMD_EVENT_FORK, &extra, 1, 300)) {
		TH_LOG("no more fork events than forks");
	}

	/* a reset of a child that wrote 3 pages */
	poke64(_metadata, child[0], 1, 0, 7);
	poke64(_metadata, child[0], 2, 0, 7);
	poke64(_metadata, child[0], 12, 0, 7);
	vmfork_reset(_metadata, child[0]);
	got = recv_events(self->nl, VMFORK_CMD_EVENT_RESET, self->msgs, 1, 3000);
	ASSERT_EQ(1, got) TH_LOG("one reset event per VMFORK_RESET");
	EXPECT_EQ(cid[0], self->msgs[0].a[VMFORK_A_ID]);
	EXPECT_EQ(3ULL, self->msgs[0].a[VMFORK_A_DROPPED_PAGES]);

	for (int i = 0; i < K_FORKS; i++)
		close(child[i]);
	got = recv_events(self->nl, VMFORK_CMD_EVENT_RELEASE, self->msgs, K_FORKS, 3000);
	ASSERT_EQ(K_FORKS, got) TH_LOG("one release event per object freed");
	for (int i = 0; i < K_FORKS; i++) {
		EXPECT_EQ(cid[i], self->msgs[i].a[VMFORK_A_ID]);
		EXPECT_EQ(6ULL, self->msgs[i].a[VMFORK_A_RESIDENT_PAGES]);
		EXPECT_EQ(0ULL, self->msgs[i].a[VMFORK_A_PRIVATE_PAGES]);
	}
}

/*
 * A child that forked since its own fork point: the reset drops the pages it
 * wrote before that fork too (now in a frozen layer its grandchild shares),
 * each pgoff once.
 */
TEST_F(nl, reset_counts_writes_from_before_a_later_fork)
{
	int child, grandchild, got, err;
	__u64 cid, before;

	err = setsockopt(self->nl->fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP,
			 &self->nl->events_group, sizeof(self->nl->events_group));
	ASSERT_EQ(0, err) TH_LOG("joining the events group as root: %s", strerror(errno));

	child = vmfork_fork(_metadata, self->obj[0], 0, &cid);
	before = peek64(_metadata, child, 2, 0);
	poke64(_metadata, child, 1, 0, 7);	/* pgoffs 1, 2 before the next fork */
	poke64(_metadata, child, 2, 0, 7);
	grandchild = vmfork_fork(_metadata, child, 0, NULL);
	poke64(_metadata, child, 2, 0, 8);	/* 2 again, and 12, after it */
	poke64(_metadata, child, 12, 0, 8);
	vmfork_reset(_metadata, child);
	got = recv_events(self->nl, VMFORK_CMD_EVENT_RESET, self->msgs, 1, 3000);
	ASSERT_EQ(1, got);
	EXPECT_EQ(cid, self->msgs[0].a[VMFORK_A_ID]);
	EXPECT_EQ(3ULL, self->msgs[0].a[VMFORK_A_DROPPED_PAGES]) {
		TH_LOG("pgoffs 1, 2 and 12 were written since the fork point");
	}
	EXPECT_EQ(before, peek64(_metadata, child, 2, 0)) TH_LOG("back at the fork point");
	EXPECT_EQ(7ULL, peek64(_metadata, grandchild, 2, 0)) TH_LOG("the grandchild keeps its view");
	close(grandchild);
	close(child);
}

/*
 * A fork whose child id cannot be copied out fails with -EFAULT: its child
 * object was never announced, so neither a FORK nor a RELEASE event may name it.
 */
TEST_F(nl, a_failed_fork_announces_nothing)
{
	struct vmfork_fork *args;
	struct vmfork_msg m;
	int err;

	err = setsockopt(self->nl->fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP,
			 &self->nl->events_group, sizeof(self->nl->events_group));
	ASSERT_EQ(0, err) TH_LOG("joining the events group as root: %s", strerror(errno));
	args = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, args);
	memset(args, 0, sizeof(*args));
	ASSERT_EQ(0, mprotect(args, PG, PROT_READ));	/* readable, not writable */
	EXPECT_EQ(-1, __vmfork_fork_args(self->obj[0], args));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(0, recv_events(self->nl, VMFORK_CMD_EVENT_RELEASE, &m, 1, 300)) {
		TH_LOG("no RELEASE event for a child that was never announced (id %llu)",
		       (unsigned long long)m.a[VMFORK_A_ID]);
	}
	munmap(args, PG);
}

TEST_F(nl, a_fork_of_a_template_is_announced_as_one)
{
	int child[3], got, err;
	__u64 cid[3];

	err = setsockopt(self->nl->fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP,
			 &self->nl->events_group, sizeof(self->nl->events_group));
	ASSERT_EQ(0, err) TH_LOG("joining the events group as root: %s", strerror(errno));

	child[0] = vmfork_fork(_metadata, self->obj[0], 0, &cid[0]);
	child[1] = vmfork_fork(_metadata, self->obj[0], VMFORK_FORK_TEMPLATE, &cid[1]);
	/* the template flag is not needed again, and the event says template all the same */
	child[2] = vmfork_fork(_metadata, self->obj[0], 0, &cid[2]);
	got = recv_events(self->nl, VMFORK_CMD_EVENT_FORK, self->msgs, 3, 3000);
	ASSERT_EQ(3, got);
	for (int i = 0; i < 3; i++)
		EXPECT_EQ(cid[i], self->msgs[i].a[VMFORK_A_CHILD_ID]);
	EXPECT_EQ(0ULL, self->msgs[0].a[VMFORK_A_FLAGS]) TH_LOG("a live fork");
	EXPECT_EQ(VMFORK_FORK_TEMPLATE, self->msgs[1].a[VMFORK_A_FLAGS]);
	EXPECT_EQ(VMFORK_FORK_TEMPLATE, self->msgs[2].a[VMFORK_A_FLAGS]) {
		TH_LOG("a fork of a template without the flag is a template fork");
	}
	for (int i = 0; i < 3; i++)
		close(child[i]);
}

/*
 * As an unprivileged uid: root's objects are invisible, the events group is
 * closed, the module totals are open, and an object of its own is visible.
 * Runs in a child process, which reports through its exit status.
 */
TEST_F(nl, unprivileged_sees_only_its_own)
{
	int status;
	pid_t pid;

	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		struct vmfork_msg m[MAX_MSGS];
		struct nl_req r;
		__u64 own_id;
		int count, own;
		struct nl *nl;

		if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			_exit(10);
		nl = calloc(1, sizeof(*nl));
		nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
		if (nl->fd < 0 || nl_resolve(nl))
			_exit(11);
		if (dump_stats(nl, m, &count) || find_id(m, count, self->id[0]))
			_exit(12);	/* root's object leaked */
		if (get_stats(nl, self->id[0], m, NULL, 0) != -ENOENT)
			_exit(13);
		if (!setsockopt(nl->fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP,
				&nl->events_group, sizeof(nl->events_group)) ||
		    errno != EPERM)
			_exit(14);	/* the events group must need CAP_SYS_ADMIN */
		req_init(&r, nl->family, VMFORK_CMD_GET_COUNTERS, 0);
		if (nl_call(nl, &r, m, 1, &count, NULL, 0) || count != 1)
			_exit(15);
		/* /dev/vmfork was opened as root; the object is this uid's */
		own = __vmfork_create(self->dev, PAGES(NPAGES), &own_id);
		if (own < 0)
			_exit(16);
		if (dump_stats(nl, m, &count) || !find_id(m, count, own_id))
			_exit(17);
		if (get_stats(nl, own_id, m, NULL, 0))
			_exit(18);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status)) {
		static const char *const what[] = {
			[10] = "dropping to uid 65534 failed",
			[11] = "resolving the family as uid 65534 failed",
			[12] = "a dump as uid 65534 must not show root's objects",
			[13] = "GET_STATS of root's object as uid 65534 must be -ENOENT",
			[14] = "joining the events group as uid 65534 must fail with EPERM",
			[15] = "GET_COUNTERS must be open to uid 65534",
			[16] = "creating an object as uid 65534 (root's /dev/vmfork fd) failed",
			[17] = "a dump as uid 65534 must show its own object",
			[18] = "GET_STATS of its own object as uid 65534 must work",
		};
		int s = WEXITSTATUS(status);

		TH_LOG("%s", s < (int)ARRAY_SIZE(what) && what[s] ? what[s] : "unexpected exit");
	}
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN

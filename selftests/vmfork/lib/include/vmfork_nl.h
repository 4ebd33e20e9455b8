/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Raw generic netlink for the "vmfork" family, shared by the tests and the
 * fuzzer: they build malformed messages themselves, which libnl would not.
 */
#ifndef SELFTEST_VMFORK_NL_H
#define SELFTEST_VMFORK_NL_H

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/types.h>
#include <linux/vmfork.h>
#include <stdbool.h>
#include <stddef.h>

#define NL_BUF		65536

struct nl {
	int fd;
	__u16 family;
	__u32 events_group;
	__u32 seq;
	char buf[NL_BUF];
};

/* One request under construction. */
struct nl_req {
	struct nlmsghdr nlh;
	struct genlmsghdr genl;
	char attrs[512];
};

#define for_each_attr(a, h, rem)					\
	for ((a) = attr_first((h), &(rem));				\
	     (rem) >= (int)sizeof(*(a)) && (a)->nla_len >= sizeof(*(a)) && \
	     (a)->nla_len <= (rem);					\
	     (rem) -= NLA_ALIGN((a)->nla_len),				\
	     (a) = (struct nlattr *)((char *)(a) + NLA_ALIGN((a)->nla_len)))

/* The attributes of one vmfork message, by type; absent ones read as ~0. */
struct vmfork_msg {
	__u8 cmd;
	__u64 a[VMFORK_A_MAX + 1];
	bool has[VMFORK_A_MAX + 1];
};

void req_init(struct nl_req *r, __u16 type, __u8 cmd, __u16 flags);
void req_put(struct nl_req *r, __u16 type, const void *data, __u16 len,
	     __u16 nla_len);
void req_put_u64(struct nl_req *r, __u16 type, __u64 v);
int nl_send(struct nl *nl, struct nl_req *r);
/* Receives one datagram into nl->buf: its length, or -errno (-EAGAIN on timeout). */
int nl_recv(struct nl *nl);
struct nlattr *attr_first(struct nlmsghdr *h, int *rem);
void parse_vmfork(struct nlmsghdr *h, struct vmfork_msg *m);
int nl_call(struct nl *nl, struct nl_req *r, struct vmfork_msg *msgs,
	    int max, int *count, char *extack, size_t extack_len);
/* Resolves the family and its events group through the genetlink controller. */
int nl_resolve(struct nl *nl);
/* A resolved socket whose every receive gives up after @timeout_s, or NULL. */
struct nl *nl_new(int timeout_s);
void nl_free(struct nl *nl);

#endif /* SELFTEST_VMFORK_NL_H */

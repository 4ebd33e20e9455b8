// SPDX-License-Identifier: GPL-2.0
/* Raw generic netlink for the "vmfork" family: see vmfork_nl.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/socket.h>

#include "vmfork_nl.h"

void req_init(struct nl_req *r, __u16 type, __u8 cmd, __u16 flags)
{
	memset(r, 0, sizeof(*r));
	r->nlh.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	r->nlh.nlmsg_type = type;
	r->nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	r->genl.cmd = cmd;
	r->genl.version = VMFORK_GENL_VERSION;
}

/* Appends an attribute of @len payload bytes; @nla_len overrides the header's length when non-zero. */
void req_put(struct nl_req *r, __u16 type, const void *data, __u16 len,
	     __u16 nla_len)
{
	struct nlattr *a = (struct nlattr *)((char *)r + NLMSG_ALIGN(r->nlh.nlmsg_len));

	a->nla_type = type;
	a->nla_len = nla_len ? nla_len : NLA_HDRLEN + len;
	memcpy((char *)a + NLA_HDRLEN, data, len);
	r->nlh.nlmsg_len = NLMSG_ALIGN(r->nlh.nlmsg_len) + NLA_ALIGN(NLA_HDRLEN + len);
}

void req_put_u64(struct nl_req *r, __u16 type, __u64 v)
{
	req_put(r, type, &v, sizeof(v), 0);
}

int nl_send(struct nl *nl, struct nl_req *r)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

	r->nlh.nlmsg_seq = ++nl->seq;
	if (sendto(nl->fd, r, r->nlh.nlmsg_len, 0, (struct sockaddr *)&sa,
		   sizeof(sa)) != (ssize_t)r->nlh.nlmsg_len)
		return -errno;
	return 0;
}

/* Receives one datagram into nl->buf: its length, or -errno (-EAGAIN on timeout). */
int nl_recv(struct nl *nl)
{
	ssize_t n = recv(nl->fd, nl->buf, sizeof(nl->buf), 0);

	return n < 0 ? -errno : (int)n;
}

struct nlattr *attr_first(struct nlmsghdr *h, int *rem)
{
	*rem = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
	return (struct nlattr *)((char *)NLMSG_DATA(h) + GENL_HDRLEN);
}

void parse_vmfork(struct nlmsghdr *h, struct vmfork_msg *m)
{
	struct genlmsghdr *g = NLMSG_DATA(h);
	struct nlattr *a;
	int rem;

	memset(m, 0, sizeof(*m));
	memset(m->a, 0xff, sizeof(m->a));
	m->cmd = g->cmd;
	for_each_attr(a, h, rem) {
		__u16 t = a->nla_type & NLA_TYPE_MASK;
		void *p = (char *)a + NLA_HDRLEN;

		if (t > VMFORK_A_MAX)
			continue;
		m->has[t] = true;
		if (a->nla_len == NLA_HDRLEN + 8)
			memcpy(&m->a[t], p, 8);
		else if (a->nla_len == NLA_HDRLEN + 4)
			m->a[t] = *(__u32 *)p;
	}
}

/*
 * Runs a request to its end: every reply message goes to @msgs (at most
 * @max), the ack's or NLMSG_DONE's error is returned (0 or -errno). With
 * @extack, an extended-ack message is copied there.
 */
int nl_call(struct nl *nl, struct nl_req *r, struct vmfork_msg *msgs,
	    int max, int *count, char *extack, size_t extack_len)
{
	bool dump = r->nlh.nlmsg_flags & NLM_F_DUMP;
	int n, err;

	if (count)
		*count = 0;
	if (extack)
		extack[0] = 0;
	err = nl_send(nl, r);
	if (err)
		return err;
	for (;;) {
		struct nlmsghdr *h;

		n = nl_recv(nl);
		if (n < 0)
			return n;
		for (h = (struct nlmsghdr *)nl->buf; NLMSG_OK(h, n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != nl->seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);

				if (extack && (h->nlmsg_flags & NLM_F_ACK_TLVS)) {
					size_t off = sizeof(*e);
					struct nlattr *a;

					if (!(h->nlmsg_flags & NLM_F_CAPPED))
						off += e->msg.nlmsg_len - sizeof(e->msg);
					for (a = (struct nlattr *)((char *)e + off);
					     (char *)a + NLA_HDRLEN <= (char *)h + h->nlmsg_len &&
					     a->nla_len >= NLA_HDRLEN;
					     a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))
						if (a->nla_type == NLMSGERR_ATTR_MSG)
							snprintf(extack, extack_len, "%s",
								 (char *)a + NLA_HDRLEN);
				}
				if (e->error || !dump)
					return e->error;
				continue;
			}
			if (h->nlmsg_type == NLMSG_DONE)
				return *(int *)NLMSG_DATA(h);
			if (h->nlmsg_type == nl->family && count && *count < max)
				parse_vmfork(h, &msgs[(*count)++]);
		}
	}
}

/* Resolves the family and its events group through the genetlink controller. */
int nl_resolve(struct nl *nl)
{
	struct nl_req r;
	int n;

	req_init(&r, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0);
	r.nlh.nlmsg_flags &= ~NLM_F_ACK;
	req_put(&r, CTRL_ATTR_FAMILY_NAME, VMFORK_GENL_NAME,
		sizeof(VMFORK_GENL_NAME), 0);
	if (nl_send(nl, &r))
		return -errno;
	n = nl_recv(nl);
	if (n < 0)
		return n;
	for (struct nlmsghdr *h = (struct nlmsghdr *)nl->buf; NLMSG_OK(h, n);
	     h = NLMSG_NEXT(h, n)) {
		struct nlattr *a;
		int rem;

		if (h->nlmsg_type == NLMSG_ERROR)
			return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
		for_each_attr(a, h, rem) {
			struct nlattr *grp, *ga;
			int grem;

			if (a->nla_type == CTRL_ATTR_FAMILY_ID)
				nl->family = *(__u16 *)((char *)a + NLA_HDRLEN);
			if ((a->nla_type & NLA_TYPE_MASK) != CTRL_ATTR_MCAST_GROUPS)
				continue;
			/* Nested: one nest per group, holding its name and id. */
			for (grp = (struct nlattr *)((char *)a + NLA_HDRLEN),
			     grem = a->nla_len - NLA_HDRLEN;
			     grem >= NLA_HDRLEN && grp->nla_len >= NLA_HDRLEN;
			     grem -= NLA_ALIGN(grp->nla_len),
			     grp = (struct nlattr *)((char *)grp + NLA_ALIGN(grp->nla_len))) {
				__u32 id = 0;
				bool events = false;

				for (ga = (struct nlattr *)((char *)grp + NLA_HDRLEN);
				     (char *)ga + NLA_HDRLEN <= (char *)grp + grp->nla_len &&
				     ga->nla_len >= NLA_HDRLEN;
				     ga = (struct nlattr *)((char *)ga + NLA_ALIGN(ga->nla_len))) {
					if (ga->nla_type == CTRL_ATTR_MCAST_GRP_ID)
						id = *(__u32 *)((char *)ga + NLA_HDRLEN);
					if (ga->nla_type == CTRL_ATTR_MCAST_GRP_NAME &&
					    !strcmp((char *)ga + NLA_HDRLEN,
						    VMFORK_GENL_MCGRP_EVENTS))
						events = true;
				}
				if (events)
					nl->events_group = id;
			}
		}
	}
	return nl->family ? 0 : -ENOENT;
}

struct nl *nl_new(int timeout_s)
{
	struct timeval tv = { .tv_sec = timeout_s };
	struct nl *nl = calloc(1, sizeof(*nl));

	if (!nl)
		return NULL;
	nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (nl->fd < 0 ||
	    setsockopt(nl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    nl_resolve(nl)) {
		nl_free(nl);
		return NULL;
	}
	return nl;
}

void nl_free(struct nl *nl)
{
	if (!nl)
		return;
	if (nl->fd >= 0)
		close(nl->fd);
	free(nl);
}

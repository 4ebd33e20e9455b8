// SPDX-License-Identifier: GPL-2.0
/*
 * The "vmfork" generic netlink family: the statistics of every memory object
 * for monitoring tools, the module's totals, and a multicast group that
 * announces forks, resets and releases. The uAPI header documents the
 * messages.
 *
 * Who sees what. /dev/vmfork is the kvm group's, but netlink has no file to
 * check, so the rule is the one of /proc/PID: a caller with CAP_SYS_ADMIN
 * sees every object, any other caller only the objects created by tasks of
 * its own effective uid (the owner of the VMs it runs). The events group
 * names the objects of every user: binding to it needs CAP_SYS_ADMIN. The
 * family is in the initial network namespace only: objects belong to no
 * namespace.
 */
#include <linux/capability.h>
#include <linux/cred.h>
#include <net/genetlink.h>

#include "compat.h"
#include "internal.h"

enum {
	VMFORK_NL_GRP_EVENTS,
};

static const struct genl_multicast_group vmfork_nl_mcgrps[] = {
	[VMFORK_NL_GRP_EVENTS] = {
		.name	= VMFORK_GENL_MCGRP_EVENTS,
		.flags	= GENL_MCAST_CAP_SYS_ADMIN,
	},
};

/* Requests take one attribute at most: anything above VMFORK_A_ID is refused. */
static const struct nla_policy vmfork_nl_stats_policy[VMFORK_A_ID + 1] = {
	[VMFORK_A_ID] = { .type = NLA_U64 },
};

/* What a GET_STATS caller may see; see the comment at the top. */
struct vmfork_nl_viewer {
	bool all;
	kuid_t uid;
};

static void vmfork_nl_viewer_init(struct vmfork_nl_viewer *v,
				  const struct sk_buff *skb)
{
	v->all = netlink_capable(skb, CAP_SYS_ADMIN);
	v->uid = current_euid();
}

static int vmfork_nl_put_u64(struct sk_buff *skb, int type, u64 value)
{
	return nla_put_u64_64bit(skb, type, value, VMFORK_A_PAD);
}

/* The attributes of one object; -EMSGSIZE when @skb is full. */
static int vmfork_nl_fill_stats(struct sk_buff *skb,
				const struct vmfork_obj_info *info)
{
	const struct vmfork_stats *st = &info->st;

	if (vmfork_nl_put_u64(skb, VMFORK_A_ID, st->id) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_PARENT_ID, st->parent_id) ||
	    nla_put_u32(skb, VMFORK_A_CREATOR_PID, info->creator) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_DEPTH, st->depth) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_SIZE, st->size) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_RESIDENT_PAGES, st->resident_pages) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_SHARED_PAGES, st->shared_pages) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_PRIVATE_PAGES, st->private_pages) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_COW_BREAKS, st->cow_breaks) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_FORKS, st->forks) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_RESETS, st->resets) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_FLAGS, st->flags) ||
	    vmfork_nl_put_u64(skb, VMFORK_A_CHAIN_LENGTH, st->chain_length))
		return -EMSGSIZE;
	return 0;
}

static struct genl_family vmfork_nl_family;

/* GET_STATS doit: finds the one object the request names. */
struct vmfork_nl_find {
	u64 id;
	struct vmfork_obj_info info;
	bool found;
};

static bool vmfork_nl_find_visit(const struct vmfork_obj_info *info, void *arg)
{
	struct vmfork_nl_find *f = arg;

	/* The walk's filter passed only @f->id, and only if the caller may see it. */
	f->info = *info;
	f->found = true;
	return false;
}

static int vmfork_nl_get_stats_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct vmfork_nl_viewer viewer;
	struct vmfork_nl_find find = {};
	struct vmfork_walk_filter filter;
	struct sk_buff *msg;
	void *hdr;
	int err;

	if (GENL_REQ_ATTR_CHECK(info, VMFORK_A_ID))
		return -EINVAL;
	find.id = nla_get_u64(info->attrs[VMFORK_A_ID]);
	if (!find.id) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[VMFORK_A_ID],
				    "object ids start at 1");
		return -EINVAL;
	}
	vmfork_nl_viewer_init(&viewer, skb);
	filter = (struct vmfork_walk_filter){
		.id = find.id, .all = viewer.all, .uid = viewer.uid,
	};
	vmfork_mem_walk(find.id, &filter, vmfork_nl_find_visit, &find);
	if (!find.found) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[VMFORK_A_ID],
				    "no such object");
		return -ENOENT;
	}

	msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &vmfork_nl_family, 0,
				VMFORK_CMD_GET_STATS);
	if (!hdr) {
		err = -EMSGSIZE;
		goto err_free;
	}
	err = vmfork_nl_fill_stats(msg, &find.info);
	if (err)
		goto err_free;
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

err_free:
	nlmsg_free(msg);
	return err;
}

/*
 * GET_STATS dump, in order of id. State between the calls of one dump, in
 * cb->ctx: who asks, the filter, and the id to go on from, so that objects
 * created or released between two calls neither repeat nor hide others.
 */
struct vmfork_nl_dump_ctx {
	struct vmfork_nl_viewer viewer;
	u64 id;			/* 0: every object */
	u64 next;
};

struct vmfork_nl_dump {
	struct sk_buff *skb;
	struct netlink_callback *cb;
	struct vmfork_nl_dump_ctx *ctx;
};

static struct vmfork_nl_dump_ctx *vmfork_nl_dump_ctx(struct netlink_callback *cb)
{
	BUILD_BUG_ON(sizeof(struct vmfork_nl_dump_ctx) > sizeof(cb->ctx));
	return (struct vmfork_nl_dump_ctx *)cb->ctx;
}

static int vmfork_nl_get_stats_start(struct netlink_callback *cb)
{
	struct vmfork_nl_dump_ctx *ctx = vmfork_nl_dump_ctx(cb);
	struct nlattr **attrs = vmfork_genl_dump_attrs(cb);

	vmfork_nl_viewer_init(&ctx->viewer, cb->skb);
	ctx->id = attrs[VMFORK_A_ID] ? nla_get_u64(attrs[VMFORK_A_ID]) : 0;
	ctx->next = 0;
	return 0;
}

static bool vmfork_nl_dump_visit(const struct vmfork_obj_info *info, void *arg)
{
	struct vmfork_nl_dump *d = arg;
	void *hdr;

	/* The walk's filter passed only what the caller asked for and may see. */
	hdr = genlmsg_put(d->skb, NETLINK_CB(d->cb->skb).portid,
			  d->cb->nlh->nlmsg_seq, &vmfork_nl_family, NLM_F_MULTI,
			  VMFORK_CMD_GET_STATS);
	if (!hdr)
		return false;
	if (vmfork_nl_fill_stats(d->skb, info)) {
		genlmsg_cancel(d->skb, hdr);
		return false;
	}
	genlmsg_end(d->skb, hdr);
	return true;
}

static int vmfork_nl_get_stats_dumpit(struct sk_buff *skb,
				      struct netlink_callback *cb)
{
	struct vmfork_nl_dump d = {
		.skb = skb,
		.cb = cb,
		.ctx = vmfork_nl_dump_ctx(cb),
	};
	struct vmfork_walk_filter filter = {
		.id = d.ctx->id,
		.all = d.ctx->viewer.all,
		.uid = d.ctx->viewer.uid,
	};

	d.ctx->next = vmfork_mem_walk(d.ctx->next, &filter,
				      vmfork_nl_dump_visit, &d);
	/* Non-zero: more to come; an empty message ends the dump. */
	return skb->len;
}

static int vmfork_nl_get_counters_doit(struct sk_buff *skb,
				       struct genl_info *info)
{
	struct sk_buff *msg;
	void *hdr;

	msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &vmfork_nl_family, 0,
				VMFORK_CMD_GET_COUNTERS);
	if (!hdr ||
	    vmfork_nl_put_u64(msg, VMFORK_A_OBJECTS,
			      atomic_long_read(&vmfork_nr_objects)) ||
	    vmfork_nl_put_u64(msg, VMFORK_A_LAYERS,
			      atomic_long_read(&vmfork_nr_layers)) ||
	    vmfork_nl_put_u64(msg, VMFORK_A_PAGES,
			      atomic_long_read(&vmfork_nr_pages))) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

/*
 * No policy on GET_COUNTERS: the core then refuses any attribute. The event
 * commands have no handler: requests naming them get -EOPNOTSUPP.
 */
static const struct genl_ops vmfork_nl_ops[] = {
	{
		.cmd		= VMFORK_CMD_GET_STATS,
		.doit		= vmfork_nl_get_stats_doit,
		.start		= vmfork_nl_get_stats_start,
		.dumpit		= vmfork_nl_get_stats_dumpit,
		.policy		= vmfork_nl_stats_policy,
		.maxattr	= ARRAY_SIZE(vmfork_nl_stats_policy) - 1,
	},
	{
		.cmd		= VMFORK_CMD_GET_COUNTERS,
		.doit		= vmfork_nl_get_counters_doit,
	},
};

static struct genl_family vmfork_nl_family __ro_after_init = {
	.name		= VMFORK_GENL_NAME,
	.version	= VMFORK_GENL_VERSION,
	.module		= THIS_MODULE,
	.ops		= vmfork_nl_ops,
	.n_ops		= ARRAY_SIZE(vmfork_nl_ops),
	.mcgrps		= vmfork_nl_mcgrps,
	.n_mcgrps	= ARRAY_SIZE(vmfork_nl_mcgrps),
};

/*
 * Starts an event message, or returns NULL when nobody listens (the common
 * case, which then costs one test) or memory is short: events are best
 * effort, as every netlink notification, and never fail the operation.
 */
static struct sk_buff *vmfork_nl_event_new(u8 cmd, void **hdr)
{
	struct sk_buff *msg;

	if (!genl_has_listeners(&vmfork_nl_family, &init_net,
				VMFORK_NL_GRP_EVENTS))
		return NULL;
	msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return NULL;
	*hdr = genlmsg_put(msg, 0, 0, &vmfork_nl_family, 0, cmd);
	if (!*hdr) {
		nlmsg_free(msg);
		return NULL;
	}
	return msg;
}

static void vmfork_nl_event_send(struct sk_buff *msg, void *hdr, int err)
{
	if (err) {
		nlmsg_free(msg);
		return;
	}
	genlmsg_end(msg, hdr);
	genlmsg_multicast(&vmfork_nl_family, msg, 0, VMFORK_NL_GRP_EVENTS,
			  GFP_KERNEL);
}

/* Called without any vmfork lock held, in process context, as the others. */
void vmfork_nl_notify_fork(u64 parent_id, u64 child_id, u64 flags,
			   u64 resident_pages, u64 duration_ns)
{
	struct sk_buff *msg;
	void *hdr;

	might_sleep();
	msg = vmfork_nl_event_new(VMFORK_CMD_EVENT_FORK, &hdr);
	if (!msg)
		return;
	vmfork_nl_event_send(msg, hdr,
			     vmfork_nl_put_u64(msg, VMFORK_A_ID, parent_id) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_CHILD_ID, child_id) ||
			     nla_put_u32(msg, VMFORK_A_CREATOR_PID,
					 task_tgid_nr(current)) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_FLAGS, flags) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_RESIDENT_PAGES,
					       resident_pages) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_DURATION_NS,
					       duration_ns));
}

void vmfork_nl_notify_reset(u64 id, u64 dropped_pages, u64 duration_ns)
{
	struct sk_buff *msg;
	void *hdr;

	might_sleep();
	msg = vmfork_nl_event_new(VMFORK_CMD_EVENT_RESET, &hdr);
	if (!msg)
		return;
	vmfork_nl_event_send(msg, hdr,
			     vmfork_nl_put_u64(msg, VMFORK_A_ID, id) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_DROPPED_PAGES,
					       dropped_pages) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_DURATION_NS,
					       duration_ns));
}

void vmfork_nl_notify_release(u64 id, u64 resident_pages, u64 private_pages)
{
	struct sk_buff *msg;
	void *hdr;

	might_sleep();
	msg = vmfork_nl_event_new(VMFORK_CMD_EVENT_RELEASE, &hdr);
	if (!msg)
		return;
	vmfork_nl_event_send(msg, hdr,
			     vmfork_nl_put_u64(msg, VMFORK_A_ID, id) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_RESIDENT_PAGES,
					       resident_pages) ||
			     vmfork_nl_put_u64(msg, VMFORK_A_PRIVATE_PAGES,
					       private_pages));
}

int vmfork_nl_init(void)
{
	return genl_register_family(&vmfork_nl_family);
}

void vmfork_nl_exit(void)
{
	genl_unregister_family(&vmfork_nl_family);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * vmfork_trace.bpf.c: the BPF side of vmfork-trace (userspace/trace/).
 *
 * Counts the vmfork module's tracepoints in maps that the tool reads every
 * interval: log2 histograms of fork latency (live and template forks apart) and of
 * reset latency, COW breaks per memory object, and event counters.
 *
 * Classic tracepoint programs (SEC("tracepoint/vmfork/...")) on a context struct
 * written by hand (bpf/vmfork_trace.h), not tp_btf programs or CO-RE reads through
 * vmlinux.h: both of those need BTF for the module's events, and the debug kernel
 * of the test matrix has no BTF at all while Debian's 6.1 builds modules without
 * module BTF. With a fixed layout and no relocations this one object loads on every
 * kernel; the loader checks the layout against tracefs' format files instead.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <linux/vmfork.h>

#include "vmfork_trace.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VMFORK_TRACE_NR_HISTS);
	__type(key, __u32);
	__type(value, struct vmfork_trace_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vmfork_trace_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, VMFORK_TRACE_MAX_OBJECTS);
	__type(key, __u64);
	__type(value, __u64);
} cow_by_object SEC(".maps");

static __always_inline struct vmfork_trace_counters *this_cpu_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

/* floor(log2(v)) for v > 0, without loops (every verifier takes it). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xffffffffULL) << 5;
	v >>= shift;
	r |= shift;
	shift = (v > 0xffff) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xff) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xf) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline void hist_add(__u32 id, __u64 ns)
{
	struct vmfork_trace_hist *h = bpf_map_lookup_elem(&hists, &id);
	__u64 us = ns / 1000;
	__u32 slot = us ? log2_u64(us) + 1 : 0;

	if (!h)
		return;
	if (slot >= VMFORK_TRACE_SLOTS)
		slot = VMFORK_TRACE_SLOTS - 1;
	/*
	 * The mask is a no-op after the clamp, but clang would drop it and compare a
	 * copy of the register it indexes with: hide the value from the optimizer so
	 * the verifier sees a bound on the register actually used.
	 */
	asm volatile("" : "+r"(slot));
	slot &= VMFORK_TRACE_SLOTS - 1;
	h->slots[slot]++;
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

SEC("tracepoint/vmfork/vmfork_create")
int vmfork_create(struct vmfork_trace_create_ctx *ctx)
{
	struct vmfork_trace_counters *c = this_cpu_counters();

	if (c)
		c->creates++;
	return 0;
}

SEC("tracepoint/vmfork/vmfork_fork")
int vmfork_fork(struct vmfork_trace_fork_ctx *ctx)
{
	struct vmfork_trace_counters *c = this_cpu_counters();
	int template = (ctx->flags & VMFORK_FORK_TEMPLATE) != 0;

	hist_add(template ? VMFORK_TRACE_HIST_TEMPLATE_FORK : VMFORK_TRACE_HIST_LIVE_FORK,
		 ctx->duration_ns);
	if (c) {
		if (template)
			c->forks_template++;
		else
			c->forks_live++;
	}
	return 0;
}

SEC("tracepoint/vmfork/vmfork_cow")
int vmfork_cow(struct vmfork_trace_cow_ctx *ctx)
{
	struct vmfork_trace_counters *c = this_cpu_counters();
	__u64 id = ctx->id, one = 1, *n;

	if (!c)
		return 0;
	c->cow_breaks++;
	n = bpf_map_lookup_elem(&cow_by_object, &id);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	/* First break of this object; another CPU may insert it at the same time. */
	if (bpf_map_update_elem(&cow_by_object, &id, &one, BPF_NOEXIST) == 0)
		return 0;
	n = bpf_map_lookup_elem(&cow_by_object, &id);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		c->cow_unattributed++; /* the map is full */
	return 0;
}

SEC("tracepoint/vmfork/vmfork_reset")
int vmfork_reset(struct vmfork_trace_reset_ctx *ctx)
{
	struct vmfork_trace_counters *c = this_cpu_counters();

	hist_add(VMFORK_TRACE_HIST_RESET, ctx->duration_ns);
	if (c) {
		c->resets++;
		c->reset_dropped_pages += ctx->dropped_pages;
	}
	return 0;
}

SEC("tracepoint/vmfork/vmfork_release")
int vmfork_release(struct vmfork_trace_release_ctx *ctx)
{
	struct vmfork_trace_counters *c = this_cpu_counters();

	if (c)
		c->releases++;
	return 0;
}

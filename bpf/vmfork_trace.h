/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmfork_trace.h: what bpf/vmfork_trace.bpf.c and its loader (userspace/trace/,
 * the vmfork-trace tool) share: the tracepoint contexts the BPF programs read and
 * the layout of the maps the loader reads.
 *
 * The contexts are written by hand from kmod/trace.h (TRACE_EVENT vmfork_*): the
 * 8-byte common header of every trace event (common_type, common_flags,
 * common_preempt_count, common_pid), then the event's fields in order. No BTF is
 * involved, so the BPF object loads on kernels without BTF and on modules without
 * module BTF. The loader checks every field below against
 * <tracefs>/events/vmfork/<event>/format before it loads anything (offsetof and
 * sizeof of these structs), so a module whose events changed is refused instead
 * of being misread.
 */
#ifndef VMFORK_TRACE_H
#define VMFORK_TRACE_H

#include <linux/types.h>

struct vmfork_trace_common {
	__u16 common_type;
	__u8 common_flags;
	__u8 common_preempt_count;
	__s32 common_pid;
};

/* TRACE_EVENT(vmfork_create) */
struct vmfork_trace_create_ctx {
	struct vmfork_trace_common common;
	__u64 id;
	__u64 size;
};

/* TRACE_EVENT(vmfork_fork) */
struct vmfork_trace_fork_ctx {
	struct vmfork_trace_common common;
	__u64 parent_id;
	__u64 child_id;
	__u64 resident_pages;
	__u64 duration_ns;
	__u64 flags;
};

/* TRACE_EVENT(vmfork_cow) */
struct vmfork_trace_cow_ctx {
	struct vmfork_trace_common common;
	__u64 id;
	__u64 pgoff;
};

/* TRACE_EVENT(vmfork_reset) */
struct vmfork_trace_reset_ctx {
	struct vmfork_trace_common common;
	__u64 id;
	__u64 dropped_pages;
	__u64 duration_ns;
};

/* TRACE_EVENT(vmfork_release) */
struct vmfork_trace_release_ctx {
	struct vmfork_trace_common common;
	__u64 id;
	__u64 resident_pages;
	__u64 private_pages;
};

/*
 * Latency histograms: slot 0 counts durations under 1 us, slot k (k >= 1) durations
 * in [2^(k-1), 2^k) us, the last slot everything longer. A power of two: the BPF
 * program masks the index, which every verifier accepts as a bound.
 */
#define VMFORK_TRACE_SLOTS 64

struct vmfork_trace_hist {
	__u64 slots[VMFORK_TRACE_SLOTS];
	__u64 count;
	__u64 sum_ns;
	__u64 max_ns;
};

/* Keys of the "hists" map (a per-CPU array of struct vmfork_trace_hist). */
enum vmfork_trace_hist_id {
	VMFORK_TRACE_HIST_LIVE_FORK,
	VMFORK_TRACE_HIST_TEMPLATE_FORK,
	VMFORK_TRACE_HIST_RESET,
	VMFORK_TRACE_NR_HISTS,
};

/* The value of the "counters" map (a per-CPU array with one element). */
struct vmfork_trace_counters {
	__u64 creates;
	__u64 forks_live;
	__u64 forks_template;
	__u64 cow_breaks;
	__u64 resets;
	__u64 reset_dropped_pages;
	__u64 releases;
	/* COW breaks not in "cow_by_object" because that map was full. */
	__u64 cow_unattributed;
};

/* "cow_by_object": object id -> COW breaks since the tool started. */
#define VMFORK_TRACE_MAX_OBJECTS 16384

#endif /* VMFORK_TRACE_H */

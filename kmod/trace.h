/* SPDX-License-Identifier: GPL-2.0 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM vmfork

#if !defined(_VMFORK_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _VMFORK_TRACE_H

#include <linux/tracepoint.h>

TRACE_EVENT(vmfork_create,
	TP_PROTO(u64 id, u64 size),
	TP_ARGS(id, size),
	TP_STRUCT__entry(
		__field(u64, id)
		__field(u64, size)
	),
	TP_fast_assign(
		__entry->id = id;
		__entry->size = size;
	),
	TP_printk("id=%llu size=%llu", __entry->id, __entry->size)
);

/* @flags: VMFORK_FORK_*, with _TEMPLATE on every fork of a template. */
TRACE_EVENT(vmfork_fork,
	TP_PROTO(u64 parent_id, u64 child_id, u64 resident_pages,
		 u64 duration_ns, u64 flags),
	TP_ARGS(parent_id, child_id, resident_pages, duration_ns, flags),
	TP_STRUCT__entry(
		__field(u64, parent_id)
		__field(u64, child_id)
		__field(u64, resident_pages)
		__field(u64, duration_ns)
		__field(u64, flags)
	),
	TP_fast_assign(
		__entry->parent_id = parent_id;
		__entry->child_id = child_id;
		__entry->resident_pages = resident_pages;
		__entry->duration_ns = duration_ns;
		__entry->flags = flags;
	),
	TP_printk("parent=%llu child=%llu resident_pages=%llu duration_ns=%llu flags=%#llx",
		  __entry->parent_id, __entry->child_id,
		  __entry->resident_pages, __entry->duration_ns,
		  __entry->flags)
);

TRACE_EVENT(vmfork_cow,
	TP_PROTO(u64 id, u64 pgoff),
	TP_ARGS(id, pgoff),
	TP_STRUCT__entry(
		__field(u64, id)
		__field(u64, pgoff)
	),
	TP_fast_assign(
		__entry->id = id;
		__entry->pgoff = pgoff;
	),
	TP_printk("id=%llu pgoff=%llu", __entry->id, __entry->pgoff)
);

TRACE_EVENT(vmfork_reset,
	TP_PROTO(u64 id, u64 dropped_pages, u64 duration_ns),
	TP_ARGS(id, dropped_pages, duration_ns),
	TP_STRUCT__entry(
		__field(u64, id)
		__field(u64, dropped_pages)
		__field(u64, duration_ns)
	),
	TP_fast_assign(
		__entry->id = id;
		__entry->dropped_pages = dropped_pages;
		__entry->duration_ns = duration_ns;
	),
	TP_printk("id=%llu dropped_pages=%llu duration_ns=%llu",
		  __entry->id, __entry->dropped_pages, __entry->duration_ns)
);

TRACE_EVENT(vmfork_release,
	TP_PROTO(u64 id, u64 resident_pages, u64 private_pages),
	TP_ARGS(id, resident_pages, private_pages),
	TP_STRUCT__entry(
		__field(u64, id)
		__field(u64, resident_pages)
		__field(u64, private_pages)
	),
	TP_fast_assign(
		__entry->id = id;
		__entry->resident_pages = resident_pages;
		__entry->private_pages = private_pages;
	),
	TP_printk("id=%llu resident_pages=%llu private_pages=%llu",
		  __entry->id, __entry->resident_pages, __entry->private_pages)
);

#endif /* _VMFORK_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE trace
#include <trace/define_trace.h>

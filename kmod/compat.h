/* SPDX-License-Identifier: GPL-2.0 */
/* Differences between the kernels vmfork supports (Debian 6.1 to 6.12), one per line. */
#ifndef VMFORK_COMPAT_H
#define VMFORK_COMPAT_H

#include <linux/mm.h>
#include <linux/version.h>

/* 6.3: vma->vm_flags became read-only; changes go through vm_flags_{set,clear}(). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
#define vmfork_vm_flags_set(vma, flags)		vm_flags_set(vma, flags)
#define vmfork_vm_flags_clear(vma, flags)	vm_flags_clear(vma, flags)
#else
#define vmfork_vm_flags_set(vma, flags)		((vma)->vm_flags |= (flags))
#define vmfork_vm_flags_clear(vma, flags)	((vma)->vm_flags &= ~(flags))
#endif

/*
 * Mappings of an order-0 page: 6.1 has page_mapcount() inline and folio_mapcount()
 * out of line, unexported; 6.12 has only folio_mapcount(), inline.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#define vmfork_page_mapcount(page)	folio_mapcount(page_folio(page))
#else
#define vmfork_page_mapcount(page)	page_mapcount(page)
#endif

/* 6.6: a dump's parsed attributes moved into a struct genl_info. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
#define vmfork_genl_dump_attrs(cb)	(genl_info_dump(cb)->attrs)
#else
#define vmfork_genl_dump_attrs(cb)	(genl_dumpit_info(cb)->attrs)
#endif

#endif /* VMFORK_COMPAT_H */

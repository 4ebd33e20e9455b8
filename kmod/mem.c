// SPDX-License-Identifier: GPL-2.0
/*
 * Memory objects: guest RAM that forks copy-on-write.
 *
 * Each object is a file on a private pseudo filesystem with an inode of its
 * own, so unmap_mapping_pages() on that inode's mapping zaps exactly this
 * object's user mappings and, through the MMU notifiers, KVM's stage-2 entries
 * for them. KVM reaches the pages by GUP on the VMM's MAP_SHARED mapping.
 *
 * Mapping rules. The module installs every PTE itself, read-only, with
 * vm_insert_page() under mem->lock (->fault returns VM_FAULT_NOPAGE). A page
 * becomes writable only through ->page_mkwrite, which returns it locked when
 * it is the object's private page; core mm then upgrades the PTE only if it
 * is unchanged (pte_same() under the PTE lock). So every writable PTE maps a
 * page of the object's top layer, and a fork makes the parent's private
 * pages read-only by zapping them: an upgrade racing with the zap fails its
 * pte_same() check, one that wins is zapped.
 *
 * Lock order: mmap_lock (fault path) -> mem->lock -> page lock, i_mmap_rwsem
 * -> PTE lock. mem->lock is never held across a user copy: a user buffer may
 * be a mapping of this very object. A fault holds mem->lock for one chain
 * lookup, at most one page allocation and 4 KiB copy, a one-page zap and a
 * PTE insert; a fork for a zap of the parent's private pages.
 */
#include <linux/anon_inodes.h>
#include <linux/cred.h>
#include <linux/debugfs.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mount.h>
#include <linux/pagemap.h>
#include <linux/pseudo_fs.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/vmfork.h>

#include "compat.h"
#include "internal.h"
#include "trace.h"

#define VMFORK_FS_MAGIC	0x766d666b	/* "vmfk" */

atomic_long_t vmfork_nr_objects = ATOMIC_LONG_INIT(0);
static atomic64_t vmfork_next_id = ATOMIC64_INIT(0);
static struct vfsmount *vmfork_mnt;

static const struct file_operations vmfork_mem_fops;

/* Recomputes @mem->stats (see the uAPI header) after a change of @mem. */
void vmfork_mem_update_stats(struct vmfork_mem *mem)
{
	struct vmfork_stats *st = &mem->stats;
	struct vmfork_layer *top = mem->top;

	lockdep_assert_held(&mem->lock);
	write_seqcount_begin(&mem->stats_seq);
	memset(st, 0, sizeof(*st));
	st->id = mem->id;
	st->parent_id = mem->parent_id;
	st->depth = mem->depth;
	st->size = mem->size;
	st->resident_pages = vmfork_layer_visible(top);
	if (mem->template) {
		st->flags |= VMFORK_STATS_TEMPLATE;
		st->chain_length = top->chain_len;
	} else {
		st->private_pages = top->nr_pages;
		st->chain_length = top->parent ? top->parent->chain_len : 0;
	}
	st->shared_pages = st->resident_pages - st->private_pages;
	st->cow_breaks = mem->cow_breaks;
	st->forks = mem->forks;
	st->resets = mem->resets;
	write_seqcount_end(&mem->stats_seq);
}

/* A consistent copy of @mem->stats, without @mem->lock (RCU or a file reference). */
void vmfork_mem_read_stats(struct vmfork_mem *mem, struct vmfork_stats *st)
{
	unsigned int seq;

	do {
		seq = read_seqcount_begin(&mem->stats_seq);
		*st = mem->stats;
	} while (read_seqcount_retry(&mem->stats_seq, seq));
}

struct vmfork_mem *vmfork_mem_alloc(loff_t size)
{
	struct vmfork_mem *mem = kzalloc(sizeof(*mem), VMFORK_GFP);

	if (!mem)
		return NULL;
	mem->top = vmfork_layer_alloc();
	if (!mem->top) {
		kfree(mem);
		return NULL;
	}
	mutex_init(&mem->lock);
	seqcount_mutex_init(&mem->stats_seq, &mem->lock);
	mem->id = atomic64_inc_return(&vmfork_next_id);
	if (vmfork_objects_reserve(mem->id)) {
		vmfork_layer_put(mem->top);
		kfree(mem);
		return NULL;
	}
	mem->creator = task_tgid_nr(current);
	mem->owner = current_euid();
	mem->size = size;
	mem->npages = size >> PAGE_SHIFT;
	atomic_long_inc(&vmfork_nr_objects);
	mutex_lock(&mem->lock);
	vmfork_mem_update_stats(mem);
	mutex_unlock(&mem->lock);
	return mem;
}

/* Frees @mem, which nobody can find any more; walkers may still read it. */
static void vmfork_mem_free(struct vmfork_mem *mem)
{
	vmfork_objects_erase(mem->id);
	vmfork_layer_put(mem->top);
	vmfork_layer_put(mem->fork_base);
	mutex_destroy(&mem->lock);
	if (!VMFORK_DEFECT(leak))
		kfree_rcu(mem, rcu);
	atomic_long_dec(&vmfork_nr_objects);
}

/* Makes every mapping of @mem fault again at pgoffs [@start, @start + @nr). */
void vmfork_mem_zap(struct vmfork_mem *mem, pgoff_t start, pgoff_t nr)
{
	unmap_mapping_pages(mem->inode->i_mapping, start, nr, false);
}

/*
 * Zaps the mappings of @mem's private pages: the only pages a writable PTE
 * can map. Runs of neighbouring pages go in one call. Pages the parent only
 * read keep their mappings (and KVM its stage-2 entries): a live fork costs
 * O(pages written since the last fork), and nothing else faults again.
 */
void vmfork_mem_zap_private(struct vmfork_mem *mem)
{
	struct vmfork_layer *top = mem->top;
	pgoff_t start = 0, end = 0;
	unsigned long idx;
	struct page *page;

	lockdep_assert_held(&mem->lock);
	if (!mapping_mapped(mem->inode->i_mapping) || !top->nr_pages)
		return;
	xa_for_each(&top->pages, idx, page) {
		if (idx == end) {
			end++;
			continue;
		}
		if (end > start)
			vmfork_mem_zap(mem, start, end - start);
		start = idx;
		end = idx + 1;
		cond_resched();
	}
	if (end > start)
		vmfork_mem_zap(mem, start, end - start);
}

/*
 * Returns @mem's private page at @pgoff: its own, or a new one copied from
 * the nearest frozen layer (a COW break) or zeroed where no layer has one.
 * Mappings of the page it replaces are zapped so that they fault in the new
 * one; with @zap_owed, the caller takes that over: *@zap_owed is set when a
 * page was replaced (see vmfork_fault()).
 */
struct page *vmfork_mem_private_page(struct vmfork_mem *mem, pgoff_t pgoff,
				     bool *zap_owed)
{
	struct vmfork_layer *top = mem->top;
	struct page *page, *below, *old;
	void *entry, *prev;
	int err;

	lockdep_assert_held(&mem->lock);
	if (mem->template)
		return ERR_PTR(-EPERM);
	entry = xa_load(&top->pages, pgoff);
	if (entry && !vmfork_is_hole(entry))
		return entry;

	page = vmfork_page_alloc();
	if (!page)
		return ERR_PTR(-ENOMEM);
	below = vmfork_layer_lookup(top->parent, pgoff);
	old = entry ? NULL : below;	/* a hole of ours hides @below */
	if (old)
		copy_highpage(page, old);
	else
		clear_highpage(page);
	err = vmfork_layer_store(top, pgoff, page, below, &prev);
	if (err) {
		vmfork_page_put(page);
		return ERR_PTR(err);
	}
	if (old) {
		mem->cow_breaks++;
		trace_vmfork_cow(mem->id, pgoff);
	}
	vmfork_mem_update_stats(mem);
	if (zap_owed)
		*zap_owed = true;
	else
		vmfork_mem_zap(mem, pgoff, 1);
	return page;
}

static int vmfork_mem_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vmfork_mem *mem = file->private_data;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_pgoff >= mem->npages ||
	    vma_pages(vma) > mem->npages - vma->vm_pgoff)
		return -EINVAL;
	/* A template never changes again: refuse write access for good. */
	if (READ_ONCE(mem->template)) {
		if (vma->vm_flags & VM_WRITE)
			return -EPERM;
		vmfork_vm_flags_clear(vma, VM_MAYWRITE);
	}
	/*
	 * VM_DONTCOPY: a process fork() must not share guest RAM behind the
	 * object's back. VM_MIXEDMAP: we insert pages with vm_insert_page().
	 */
	vmfork_vm_flags_set(vma, VM_DONTCOPY | VM_DONTEXPAND | VM_MIXEDMAP);
	vma->vm_ops = &vmfork_vm_ops;
	return 0;
}

static ssize_t vmfork_mem_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct vmfork_mem *mem = iocb->ki_filp->private_data;
	loff_t pos = iocb->ki_pos;
	ssize_t done = 0;

	while (iov_iter_count(to) && pos < mem->size) {
		size_t off = offset_in_page(pos), n;
		size_t len = min3(PAGE_SIZE - off, iov_iter_count(to),
				  (size_t)(mem->size - pos));
		struct page *page;

		if (mutex_lock_killable(&mem->lock)) {
			if (!done)
				done = -EINTR;
			break;
		}
		page = vmfork_layer_lookup(mem->top, pos >> PAGE_SHIFT);
		if (page)
			get_page(page);
		mutex_unlock(&mem->lock);

		if (page) {
			n = copy_page_to_iter(page, off, len, to);
			put_page(page);
		} else {
			n = iov_iter_zero(len, to);
		}
		done += n;
		pos += n;
		if (n < len) {
			if (!done)
				done = -EFAULT;
			break;
		}
		if (fatal_signal_pending(current))
			break;
		cond_resched();
	}
	if (done > 0)
		iocb->ki_pos = pos;
	return done;
}

static ssize_t vmfork_mem_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct vmfork_mem *mem = iocb->ki_filp->private_data;
	loff_t pos = iocb->ki_pos;
	struct page *bounce;
	ssize_t done = 0;
	int err = 0;

	if (!iov_iter_count(from))
		return 0;
	if (READ_ONCE(mem->template))
		return -EPERM;
	if (pos >= mem->size)
		return -ENOSPC;
	bounce = alloc_page(GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;

	while (iov_iter_count(from) && pos < mem->size) {
		size_t off = offset_in_page(pos), n;
		size_t len = min3(PAGE_SIZE - off, iov_iter_count(from),
				  (size_t)(mem->size - pos));
		struct page *page;

		/* Copy in first: the user buffer may fault on this object. */
		n = copy_page_from_iter(bounce, off, len, from);
		if (!n) {
			err = -EFAULT;
			break;
		}
		if (mutex_lock_killable(&mem->lock)) {
			err = -EINTR;
			break;
		}
		page = vmfork_mem_private_page(mem, pos >> PAGE_SHIFT, NULL);
		if (!IS_ERR(page))
			memcpy_page(page, off, bounce, off, n);
		mutex_unlock(&mem->lock);
		if (IS_ERR(page)) {
			err = PTR_ERR(page);
			break;
		}
		done += n;
		pos += n;
		if (n < len || fatal_signal_pending(current))
			break;
		cond_resched();
	}
	__free_page(bounce);
	if (!done)
		return err;
	iocb->ki_pos = pos;
	return done;
}

static loff_t vmfork_mem_llseek(struct file *file, loff_t offset, int whence)
{
	struct vmfork_mem *mem = file->private_data;

	return fixed_size_llseek(file, offset, whence, mem->size);
}

/*
 * Creates the file of @mem and reserves a descriptor for it; the caller
 * fd_install()s both. On failure @mem is freed.
 */
int vmfork_mem_open(struct vmfork_mem *mem, struct file **filep)
{
	struct inode *inode;
	struct file *file;
	int fd, err;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		err = fd;
		goto err_mem;
	}
	inode = alloc_anon_inode(vmfork_mnt->mnt_sb);
	if (IS_ERR(inode)) {
		err = PTR_ERR(inode);
		goto err_fd;
	}
	/* A regular file: vfs_fallocate(), and so MADV_REMOVE, require one. */
	inode->i_mode |= S_IFREG;
	inode->i_size = mem->size;
	inode->i_private = mem;
	mem->inode = inode;

	/* alloc_file_pseudo() takes no module reference, but fput() drops one. */
	__module_get(THIS_MODULE);
	file = alloc_file_pseudo(inode, vmfork_mnt, "vmfork-mem", O_RDWR,
				 &vmfork_mem_fops);
	if (IS_ERR(file)) {
		err = PTR_ERR(file);
		goto err_module;
	}
	file->f_mode |= FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE;
	file->f_flags |= O_LARGEFILE;
	file->private_data = mem;
	*filep = file;
	return fd;

err_module:
	module_put(THIS_MODULE);
	iput(inode);
err_fd:
	put_unused_fd(fd);
err_mem:
	vmfork_mem_free(mem);
	return err;
}

long vmfork_mem_create(void __user *uarg)
{
	struct vmfork_create_mem arg;
	struct vmfork_mem *mem;
	struct file *file;
	int fd;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.flags || memchr_inv(arg.reserved, 0, sizeof(arg.reserved)))
		return -EINVAL;
	if (!arg.size || !PAGE_ALIGNED(arg.size) ||
	    arg.size > vmfork_max_mem_size || arg.size > MAX_LFS_FILESIZE)
		return -EINVAL;

	mem = vmfork_mem_alloc(arg.size);
	if (!mem)
		return -ENOMEM;
	fd = vmfork_mem_open(mem, &file);
	if (fd < 0)
		return fd;
	if (put_user(mem->id, &((struct vmfork_create_mem __user *)uarg)->id)) {
		fput(file);
		put_unused_fd(fd);
		return -EFAULT;
	}
	trace_vmfork_create(mem->id, mem->size);
	vmfork_mem_publish(mem);
	fd_install(fd, file);
	return fd;
}

static long vmfork_mem_ioctl(struct file *file, unsigned int cmd,
			     unsigned long arg)
{
	struct vmfork_mem *mem = file->private_data;
	struct vmfork_stats st;

	switch (cmd) {
	case VMFORK_GET_API_VERSION:
		return VMFORK_API_VERSION;
	case VMFORK_VM_FORK:
		return vmfork_mem_fork(mem, (void __user *)arg);
	case VMFORK_RESET:
		return vmfork_mem_reset(mem, arg);
	case VMFORK_GET_STATS:
		vmfork_mem_read_stats(mem, &st);
		return copy_to_user((void __user *)arg, &st, sizeof(st)) ?
		       -EFAULT : 0;
	case VMFORK_CREATE_MEM:
		return -EINVAL;	/* a /dev/vmfork ioctl */
	default:
		return -ENOTTY;
	}
}

static int vmfork_mem_release(struct inode *inode, struct file *file)
{
	struct vmfork_mem *mem = file->private_data;
	unsigned long resident, private;

	/* Unlisted first: no walker finds @mem from here on. */
	vmfork_objects_erase(mem->id);
	/* The last reference: nothing else can change @mem, no lock needed. */
	if (mem->published) {
		resident = vmfork_layer_visible(mem->top);
		private = mem->template ? 0 : mem->top->nr_pages;
		trace_vmfork_release(mem->id, resident, private);
		vmfork_nl_notify_release(mem->id, resident, private);
	}
	vmfork_mem_free(mem);
	return 0;
}

static const struct file_operations vmfork_mem_fops = {
	.owner		= THIS_MODULE,
	.release	= vmfork_mem_release,
	.mmap		= vmfork_mem_mmap,
	.read_iter	= vmfork_mem_read_iter,
	.write_iter	= vmfork_mem_write_iter,
	.llseek		= vmfork_mem_llseek,
	.fallocate	= vmfork_mem_fallocate,
	.unlocked_ioctl	= vmfork_mem_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

static int vmfork_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, VMFORK_FS_MAGIC) ? 0 : -ENOMEM;
}

static struct file_system_type vmfork_fs_type = {
	.name		 = "vmfork",
	.init_fs_context = vmfork_init_fs_context,
	.kill_sb	 = kill_anon_super,
};

int vmfork_mem_init(void)
{
	int err = vmfork_zero_init();

	if (err)
		return err;
	vmfork_mnt = kern_mount(&vmfork_fs_type);
	if (IS_ERR(vmfork_mnt)) {
		vmfork_zero_exit();
		return PTR_ERR(vmfork_mnt);
	}
	return 0;
}

void vmfork_mem_exit(void)
{
	kern_unmount(vmfork_mnt);
	vmfork_zero_exit();
}

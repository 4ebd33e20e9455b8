// SPDX-License-Identifier: GPL-2.0
/*
 * vmfork: copy-on-write guest memory for KVM. /dev/vmfork creates memory
 * objects (mem.c) that a VMM maps as guest RAM and forks in the kernel; the
 * "vmfork" generic netlink family (netlink.c) reports on them.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>
#include <linux/vmfork.h>

#include "internal.h"

#define CREATE_TRACE_POINTS
#include "trace.h"

unsigned long vmfork_max_mem_size = 64UL * SZ_1G;
module_param_named(max_mem_size, vmfork_max_mem_size, ulong, 0644);
MODULE_PARM_DESC(max_mem_size, "Largest memory object VMFORK_CREATE_MEM accepts, in bytes (default 64 GiB)");

static struct dentry *vmfork_debugfs;

static long vmfork_dev_ioctl(struct file *file, unsigned int cmd,
			     unsigned long arg)
{
	switch (cmd) {
	case VMFORK_GET_API_VERSION:
		return VMFORK_API_VERSION;
	case VMFORK_CREATE_MEM:
		return vmfork_mem_create((void __user *)arg);
	case VMFORK_VM_FORK:
	case VMFORK_RESET:
	case VMFORK_GET_STATS:
		return -EINVAL;	/* memory-object ioctls */
	default:
		return -ENOTTY;
	}
}

static const struct file_operations vmfork_dev_fops = {
	.owner		= THIS_MODULE,
	.unlocked_ioctl	= vmfork_dev_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

/* Mode 0660 as /dev/kvm; udev/99-vmfork.rules gives the group to kvm. */
static struct miscdevice vmfork_dev = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "vmfork",
	.fops	= &vmfork_dev_fops,
	.mode	= 0660,
};

static int vmfork_objects_show(struct seq_file *m, void *unused)
{
	vmfork_mem_show_all(m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vmfork_objects);

static int vmfork_counters_show(struct seq_file *m, void *unused)
{
	seq_printf(m, "objects %ld\nlayers %ld\npages %ld\n",
		   atomic_long_read(&vmfork_nr_objects),
		   atomic_long_read(&vmfork_nr_layers),
		   atomic_long_read(&vmfork_nr_pages));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vmfork_counters);

static int __init vmfork_init(void)
{
	int err;

	/* The uAPI counts 4 KiB pages; the module maps one page per entry. */
	BUILD_BUG_ON(PAGE_SIZE != VMFORK_PAGE_SIZE);

	err = vmfork_mem_init();
	if (err)
		return err;
	/* Before the device: objects announce their events through the family. */
	err = vmfork_nl_init();
	if (err)
		goto err_mem;
	err = misc_register(&vmfork_dev);
	if (err)
		goto err_nl;
	vmfork_debugfs = debugfs_create_dir("vmfork", NULL);
	debugfs_create_file("objects", 0400, vmfork_debugfs, NULL,
			    &vmfork_objects_fops);
	debugfs_create_file("counters", 0400, vmfork_debugfs, NULL,
			    &vmfork_counters_fops);
	return 0;

err_nl:
	vmfork_nl_exit();
err_mem:
	vmfork_mem_exit();
	return err;
}

static void __exit vmfork_exit(void)
{
	debugfs_remove_recursive(vmfork_debugfs);
	misc_deregister(&vmfork_dev);
	vmfork_nl_exit();
	vmfork_mem_exit();
	/* Every object holds a module reference: nothing can be left. */
	WARN(atomic_long_read(&vmfork_nr_objects) ||
	     atomic_long_read(&vmfork_nr_layers) ||
	     atomic_long_read(&vmfork_nr_pages),
	     "vmfork: leaked %ld objects, %ld layers, %ld pages\n",
	     atomic_long_read(&vmfork_nr_objects),
	     atomic_long_read(&vmfork_nr_layers),
	     atomic_long_read(&vmfork_nr_pages));
}

module_init(vmfork_init);
module_exit(vmfork_exit);
MODULE_DESCRIPTION("Copy-on-write guest memory objects and VM fork for KVM");
MODULE_AUTHOR("vmfork developers");
MODULE_LICENSE("GPL");
MODULE_VERSION("0.1.0");

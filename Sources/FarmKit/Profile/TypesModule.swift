import FarmEngine

/// The source of farm's types module: what the `types` task compiles, with debug information,
/// against a kernel's own headers, for kernels whose image carries no BTF. It lives here, in
/// Swift, rather than as a file beside the recipes: it is part of farm, not of a project (no
/// manifest names it), it travels inside the binary with no resource to look up at run time,
/// and its digest is a parameter of every `types` task, so editing it rebuilds them all.
///
/// Only headers under `include/` reach a headers package: types private to a source file
/// (`struct mount` in fs/mount.h, `struct kthread`, `struct printk_log`, `netlink_sock`,
/// `packet_sock`, the printk ring buffer's structs) are not in its DWARF.
public enum TypesModule {
    /// The module's name, as `make` leaves it in the build directory.
    public static let fileName = "farm_types.ko"

    /// Every type the headers declare stays in the DWARF (`-fno-eliminate-unused-debug-types`),
    /// not only those the module uses; `-femit-struct-debug-detailed=any` undoes the
    /// `-femit-struct-debug-baseonly` a CONFIG_DEBUG_INFO_REDUCED kernel adds before it.
    public static let kbuild = """
        obj-m := farm_types.o
        ccflags-y += -g -fno-eliminate-unused-debug-types -femit-struct-debug-detailed=any

        """

    /// One C file for 3.10 to 6.12: headers and types that came later are behind LINUX_VERSION_CODE
    /// or the kernel's own CONFIG_ switches, so no kernel of that span fails to compile it.
    public static let source = #"""
// SPDX-License-Identifier: GPL-2.0
/*
 * farm's types module: never loaded, only compiled with debug information against a kernel's
 * own headers, so that the DWARF of farm_types.ko describes that kernel's structures as its
 * compiler laid them out. pahole turns that DWARF into BTF for kernels that carry none.
 */
#include <linux/version.h>
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/types.h>
#include <linux/list.h>
#include <linux/sched.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 11, 0)
#include <linux/sched/signal.h>
#include <linux/sched/mm.h>
#endif
#include <linux/mm.h>
#include <linux/mm_types.h>
#include <linux/fs.h>
#include <linux/fs_struct.h>
#include <linux/fdtable.h>
#include <linux/dcache.h>
#include <linux/path.h>
#include <linux/mount.h>
#include <linux/kobject.h>
#include <linux/cred.h>
#include <linux/nsproxy.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/user_namespace.h>
#include <linux/utsname.h>
#include <linux/ipc_namespace.h>
#include <linux/binfmts.h>
#include <linux/elf.h>
#include <linux/kallsyms.h>
#include <linux/moduleparam.h>
#include <linux/ioport.h>
#include <linux/idr.h>
#include <linux/radix-tree.h>
#include <linux/rbtree.h>
#include <linux/seq_file.h>
#include <linux/proc_fs.h>
#include <linux/proc_ns.h>
#include <linux/kthread.h>
#include <linux/timekeeper_internal.h>
#include <linux/tty.h>
#include <linux/tty_driver.h>
#include <linux/fb.h>
#include <linux/scatterlist.h>
#include <linux/perf_event.h>
#include <linux/ftrace.h>
#include <linux/tracepoint.h>
#include <linux/page-flags.h>
#include <linux/net.h>
#include <linux/netdevice.h>
#include <linux/inetdevice.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <linux/un.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/tcp.h>
#include <net/af_unix.h>
#include <net/if_inet6.h>
#include <net/net_namespace.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(3, 19, 0)
#include <linux/ns_common.h>
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(3, 18, 0)
#include <linux/bpf.h>
#include <linux/filter.h>
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 18, 0)
#include <net/xdp_sock.h>
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 20, 0)
#include <linux/xarray.h>
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0)
#include <linux/maple_tree.h>
#endif
#if IS_ENABLED(CONFIG_VSOCKETS)
#include <net/af_vsock.h>
#endif
#if IS_ENABLED(CONFIG_BT)
#include <net/bluetooth/bluetooth.h>
#include <net/bluetooth/hci_core.h>
#endif

/*
 * The build flags (-fno-eliminate-unused-debug-types) keep every type the headers declare;
 * these references name the ones Volatility 3's linux plugins read, so a header that stops
 * declaring one is seen here first.
 */
#define FARM_TYPE(name) struct name *farm_##name;

struct farm_types {
	FARM_TYPE(task_struct)
	FARM_TYPE(mm_struct)
	FARM_TYPE(vm_area_struct)
	FARM_TYPE(files_struct)
	FARM_TYPE(fdtable)
	FARM_TYPE(fs_struct)
	FARM_TYPE(file)
	FARM_TYPE(file_operations)
	FARM_TYPE(dentry)
	FARM_TYPE(inode)
	FARM_TYPE(super_block)
	FARM_TYPE(address_space)
	FARM_TYPE(vfsmount)
	FARM_TYPE(path)
	FARM_TYPE(module)
	FARM_TYPE(module_kobject)
	FARM_TYPE(kernel_symbol)
	FARM_TYPE(kernel_param)
	FARM_TYPE(list_head)
	FARM_TYPE(hlist_head)
	FARM_TYPE(hlist_node)
	FARM_TYPE(kobject)
	FARM_TYPE(kset)
	FARM_TYPE(cred)
	FARM_TYPE(nsproxy)
	FARM_TYPE(pid)
	FARM_TYPE(upid)
	FARM_TYPE(pid_namespace)
	FARM_TYPE(user_namespace)
	FARM_TYPE(uts_namespace)
	FARM_TYPE(linux_binprm)
	FARM_TYPE(signal_struct)
	FARM_TYPE(sighand_struct)
	FARM_TYPE(page)
	FARM_TYPE(resource)
	FARM_TYPE(radix_tree_root)
	FARM_TYPE(radix_tree_node)
	FARM_TYPE(rb_root)
	FARM_TYPE(rb_node)
	FARM_TYPE(seq_operations)
	FARM_TYPE(timekeeper)
	FARM_TYPE(tty_struct)
	FARM_TYPE(tty_driver)
	FARM_TYPE(fb_info)
	FARM_TYPE(scatterlist)
	FARM_TYPE(perf_event)
	FARM_TYPE(ftrace_ops)
	FARM_TYPE(tracepoint)
	FARM_TYPE(tracepoint_func)
	FARM_TYPE(socket)
	FARM_TYPE(sock)
	FARM_TYPE(inet_sock)
	FARM_TYPE(unix_sock)
	FARM_TYPE(sockaddr_un)
	FARM_TYPE(net)
	FARM_TYPE(net_device)
	FARM_TYPE(in_device)
	FARM_TYPE(in_ifaddr)
	FARM_TYPE(inet6_dev)
	FARM_TYPE(inet6_ifaddr)
	FARM_TYPE(tcp_seq_afinfo)
	FARM_TYPE(netns_nf)
	FARM_TYPE(proc_ns_operations)
#if LINUX_VERSION_CODE >= KERNEL_VERSION(3, 19, 0)
	FARM_TYPE(ns_common)
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(3, 18, 0)
	FARM_TYPE(bpf_prog)
	FARM_TYPE(bpf_prog_aux)
	FARM_TYPE(bpf_binary_header)
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 14, 0)
	FARM_TYPE(nf_hook_entry)
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 18, 0)
	FARM_TYPE(xdp_sock)
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 20, 0)
	FARM_TYPE(xarray)
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0)
	FARM_TYPE(maple_tree)
	FARM_TYPE(maple_node)
#endif
#if IS_ENABLED(CONFIG_VSOCKETS)
	FARM_TYPE(vsock_sock)
#endif
#if IS_ENABLED(CONFIG_BT)
	FARM_TYPE(bt_sock)
	FARM_TYPE(hci_dev)
#endif
};

struct farm_types farm_types __used;

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("farm: kernel types for Volatility 3, never loaded");
"""#

    /// The digest of both files, the `types` task's `module` parameter.
    public static var digest: Digest { SHA256.hash(kbuild + "\u{0}" + source) }
}

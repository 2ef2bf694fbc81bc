/// The types of the kernel symbols volatility3's Linux plugins read with `object_from_symbol`
/// (or whose type they inspect), for the symbols BTF does not describe: BTF has types for
/// per-CPU variables only, and kallsyms or System.map give addresses alone.
///
/// Reviewed against volatility3 2.28.2 (`framework/plugins/linux`, `framework/symbols/linux`,
/// `framework/automagic/linux.py`) and the kernel's declarations of each symbol. Each symbol has
/// candidates in order, newest kernel first; the first whose types this kernel has wins, and a
/// symbol none fits is typed `void` as dwarf2json types a System.map symbol.
enum KernelSymbolTypes {
    indirect enum Spec: Sendable {
        case structure(String)
        case base(String)
        /// Whatever the kernel's typedef of this name stands for.
        case typedef(String)
        case pointer(Spec)
        case array(Int, Spec)
        /// The unnamed struct with a member of this name (`static struct { ... } tk_core` before 6.13).
        case anonymousStruct(member: String)
        /// An array whose length is a macro of the kernel's (`taint_flags[TAINT_FLAGS_COUNT]`): the
        /// count read from the image's data (`ISFBuilder`'s `arrayCounts`). Without one the symbol
        /// is left out, so volatility3 takes its own fallback instead of reading a wrong length.
        case arrayCountedInImage(Spec)
    }

    static let table: [String: [Spec]] = [
        // pslist and every task walk; the automagic checks its address against the image.
        "init_task": [.structure("task_struct")],
        "init_mm": [.structure("mm_struct")],
        // The automagic computes the KASLR shift from it.
        "init_files": [.structure("files_struct")],
        "init_pid_ns": [.structure("pid_namespace")],
        // The kernel's page global directory (the automagic's DTB): PTRS_PER_PGD entries.
        "init_top_pgt": [.array(512, .typedef("pgd_t"))],
        // lsmod, check_modules, hidden_modules.
        "modules": [.structure("list_head")],
        "mod_tree": [.structure("mod_tree_root")],
        "module_kset": [.pointer(.structure("kset"))],
        "module_addr_min": [.base("long unsigned int")],
        "module_addr_max": [.base("long unsigned int")],
        // Plugins take their addresses (`.vol.offset`): `extern char _text[]`.
        "_text": [.array(0, .base("char"))],
        "_etext": [.array(0, .base("char"))],
        // boottime: `struct tk_data` from 6.13, an unnamed struct before.
        "tk_core": [.structure("tk_data"), .anonymousStruct(member: "timekeeper")],
        "timekeeper": [.structure("timekeeper")],
        "wall_to_monotonic": [.structure("timespec64"), .structure("timespec")],
        "total_sleep_time": [.structure("timespec64"), .structure("timespec")],
        // kmsg: the printk ring buffer from 5.10, the log buffer before.
        "prb": [.pointer(.structure("printk_ringbuffer"))],
        "log_buf": [.pointer(.base("char"))],
        "log_buf_len": [.typedef("u32")],
        "log_first_idx": [.typedef("u32")],
        "log_next_idx": [.typedef("u32")],
        // kallsyms reads the size of its type.
        "kallsyms_num_syms": [.base("unsigned int")],
        // lsmod and check_modules read the kernel's taint letters from it (4.10 and later).
        "taint_flags": [.arrayCountedInImage(.structure("taint_flag"))],
        // sockstat, ip, netfilter.
        "net_namespace_list": [.structure("list_head")],
        "socket_file_ops": [.structure("file_operations")],
        "sockfs_dentry_operations": [.structure("dentry_operations")],
        // check_afinfo (4.18 and later).
        "raw_seq_ops": [.structure("seq_operations")],
        "udp_seq_ops": [.structure("seq_operations")],
        "arp_seq_ops": [.structure("seq_operations")],
        "unix_seq_ops": [.structure("seq_operations")],
        "udp6_seq_ops": [.structure("seq_operations")],
        "raw6_seq_ops": [.structure("seq_operations")],
        "tcp_seq_ops": [.structure("seq_operations")],
        "tcp4_seq_ops": [.structure("seq_operations")],
        "tcp6_seq_ops": [.structure("seq_operations")],
        "packet_seq_ops": [.structure("seq_operations")],
        // check_idt: 256 gate descriptors.
        "idt_table": [.array(256, .typedef("gate_desc"))],
        "keyboard_notifier_list": [.structure("atomic_notifier_head")],
        "tty_drivers": [.structure("list_head")],
        "cap_last_cap": [.base("int")],
        // ebpf, kallsyms.
        "prog_idr": [.structure("idr")],
        "bpf_kallsyms": [.structure("list_head")],
        // ftrace, tracepoints, kallsyms.
        "ftrace_ops_list": [.pointer(.structure("ftrace_ops"))],
        "ftrace_list_end": [.structure("ftrace_ops")],
        "ftrace_mod_maps": [.structure("list_head")],
        "ftrace_ops_trampoline_list": [.structure("list_head")],
        // tracepoints compares the element type with `int` to detect PC-relative pointers.
        "__start___tracepoints_ptrs": [.array(0, .typedef("tracepoint_ptr_t"))],
        // fbdev: FB_MAX framebuffers.
        "num_registered_fb": [.base("int")],
        "registered_fb": [.array(32, .pointer(.structure("fb_info")))],
        // Page structures (vmemmap with a dynamic memory layout, mem_map without).
        "vmemmap_base": [.base("long unsigned int")],
        "page_offset_base": [.base("long unsigned int")],
        "mem_map": [.pointer(.structure("page"))],
        "iomem_resource": [.structure("resource")],
    ]
}

//! Docker's default seccomp profile, written down as data for a test
//! that checks orca's filter against it rule by rule (see
//! `seccomp::tests`). Taken from moby's `profiles/seccomp/default.json`
//! (as vendored by moby at b985e2313a). Only what applies to the
//! architectures orca builds for (x86_64 with x86 and x32, aarch64 with
//! arm) is here.

use oci_spec::runtime::Capability;

/// The rule every container gets: these syscalls, allowed.
#[rustfmt::skip]
pub const ALLOWED: &[&str] = &[
    "_llseek", "_newselect", "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk",
    "cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime",
    "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
    "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl",
    "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "get_robust_list", "get_thread_area", "getcpu", "getcwd",
    "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
    "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "ioctl",
    "ioprio_get", "ioprio_set", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "open", "openat",
    "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64",
    "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "removexattrat", "rename", "renameat", "renameat2", "restart_syscall",
    "riscv_hwprobe", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
    "sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
    "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid", "setsockopt",
    "setuid", "setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statmount",
    "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee",
    "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime",
    "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid",
    "waitpid", "write", "writev",
];

/// Allowed on kernels from 4.8 on (orca needs a newer kernel anyway).
pub const FROM_KERNEL_4_8: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// Allowed on x86_64 (and x32; `modify_ldt` on x86 too).
pub const X86_64: &[&str] = &["arch_prctl", "modify_ldt"];

/// Allowed on arm and arm64.
pub const ARM: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// `socket` is allowed when its family (argument 0) is below 38, is 39, or
/// is above 40: AF_ALG (38) and AF_VSOCK (40) are refused.
pub const SOCKET_FAMILIES_REFUSED: [u64; 2] = [38, 40];

/// `personality` is allowed for these values of argument 0 only.
pub const PERSONAS: [u64; 5] = [0, 8, 131_072, 131_080, 4_294_967_295];

/// Without CAP_SYS_ADMIN: `clone` only when its flags (argument 0) have
/// none of these bits, and `clone3` fails with this errno.
pub const CLONE_MASK: u64 = 2_114_060_288;
pub const CLONE3_ERRNO: u32 = 38;

/// Allowed only with a capability.
pub const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// Where orca's filter differs from the data above, and why.
pub const DIFFERENCES: &[(&str, &str)] = &[(
    "riscv_hwprobe",
    "a RISC-V syscall: orca builds for x86_64 and aarch64 only",
)];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};

    use super::*;
    use crate::spec::capabilities;
    use crate::spec::seccomp::default_profile;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// What Docker allows without conditions to a container holding `caps`
    /// on this host's architecture.
    fn docker_unconditional(caps: &oci_spec::runtime::Capabilities) -> BTreeSet<String> {
        let mut out = names(ALLOWED);
        out.extend(names(FROM_KERNEL_4_8));
        out.extend(names(if cfg!(target_arch = "aarch64") {
            ARM
        } else {
            X86_64
        }));
        for (cap, list) in BY_CAPABILITY {
            if caps.contains(cap) {
                out.extend(names(list));
            }
        }
        for (name, _) in DIFFERENCES {
            out.remove(*name);
        }
        out
    }

    fn orca_rules(caps: &oci_spec::runtime::Capabilities) -> Vec<LinuxSyscall> {
        default_profile(caps).unwrap().syscalls().clone().unwrap()
    }

    fn orca_unconditional(rules: &[LinuxSyscall]) -> BTreeSet<String> {
        rules
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().iter().cloned())
            .collect()
    }

    /// (operator, value, mask) of each conditional allow rule of `name`.
    fn conditions(rules: &[LinuxSyscall], name: &str) -> Vec<(LinuxSeccompOperator, u64)> {
        rules
            .iter()
            .filter(|r| r.names().iter().any(|n| n == name))
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .filter_map(|r| r.args().as_ref())
            .map(|args| {
                assert_eq!(args.len(), 1, "{name}: one comparison per rule");
                assert_eq!(args[0].index(), 0, "{name}: on argument 0");
                (args[0].op(), args[0].value())
            })
            .collect()
    }

    #[test]
    fn the_filter_is_dockers_rule_by_rule() {
        let sets: Vec<Vec<String>> = std::iter::once(Vec::new())
            .chain(BY_CAPABILITY.iter().map(|(cap, _)| vec![cap.to_string()]))
            .chain(std::iter::once(vec!["ALL".to_string()]))
            .collect();
        for added in sets {
            let added: Vec<String> = added
                .iter()
                .map(|c| c.trim_start_matches("CAP_").to_string())
                .collect();
            let caps = capabilities(&added, &[]).unwrap();
            let rules = orca_rules(&caps);
            let (orca, docker) = (orca_unconditional(&rules), docker_unconditional(&caps));
            let sys_admin = caps.contains(&Capability::SysAdmin);
            assert_eq!(
                orca.difference(&docker).collect::<Vec<_>>(),
                Vec::<&String>::new(),
                "allowed by orca only, with {added:?}"
            );
            assert_eq!(
                docker.difference(&orca).collect::<Vec<_>>(),
                Vec::<&String>::new(),
                "allowed by Docker only, with {added:?}"
            );
            // socket: every family but the refused ones.
            let [alg, vsock] = SOCKET_FAMILIES_REFUSED;
            assert_eq!(
                conditions(&rules, "socket"),
                [
                    (LinuxSeccompOperator::ScmpCmpLt, alg),
                    (LinuxSeccompOperator::ScmpCmpEq, alg + 1),
                    (LinuxSeccompOperator::ScmpCmpGt, vsock),
                ]
            );
            // personality: the same values.
            let personas: Vec<u64> = conditions(&rules, "personality")
                .into_iter()
                .map(|(op, v)| {
                    assert_eq!(op, LinuxSeccompOperator::ScmpCmpEq);
                    v
                })
                .collect();
            assert_eq!(personas, PERSONAS);
            // clone without namespaces, clone3 ENOSYS, unless SYS_ADMIN.
            let clone: Vec<_> = rules
                .iter()
                .filter(|r| r.names().iter().any(|n| n == "clone") && r.args().is_some())
                .collect();
            let clone3_errno: Vec<_> = rules
                .iter()
                .filter(|r| r.names().iter().any(|n| n == "clone3"))
                .filter(|r| r.action() == LinuxSeccompAction::ScmpActErrno)
                .collect();
            if sys_admin {
                assert!(clone.is_empty() && clone3_errno.is_empty(), "{added:?}");
            } else {
                assert_eq!(clone.len(), 1);
                let arg = clone[0].args().as_ref().unwrap()[0];
                assert_eq!(
                    (arg.index(), arg.op(), arg.value(), arg.value_two()),
                    (
                        0,
                        LinuxSeccompOperator::ScmpCmpMaskedEq,
                        CLONE_MASK,
                        Some(0)
                    )
                );
                assert_eq!(clone3_errno.len(), 1);
                assert_eq!(clone3_errno[0].errno_ret(), Some(CLONE3_ERRNO));
            }
        }
        let p = default_profile(&capabilities(&[], &[]).unwrap()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
    }
}

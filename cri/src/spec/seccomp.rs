//! The default seccomp filter of every replica, equal in effect to
//! Docker's default profile: everything not allowed fails with EPERM.
//! Allowed are the syscalls ordinary programs make ([`ALLOWED`]); those
//! that reach past the container (namespaces, mounts, modules, keys,
//! clocks, BPF) only with the capability that would let them
//! ([`BY_CAPABILITY`]). `clone` may not make namespaces without
//! CAP_SYS_ADMIN, `clone3` answers ENOSYS then (so that libc falls back to
//! `clone`, whose flags can be checked), `personality` takes only the
//! common personas, and `socket` every family but AF_ALG and AF_VSOCK.
//! `seccomp_docker` checks it against Docker's profile rule by rule.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::Result;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// `clone` flags that make a namespace: NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET.
const CLONE_NAMESPACES: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `personality` values allowed: Linux, and Linux with its 32-bit and
/// ADDR_NO_RANDOMIZE variants, and the query (0xffffffff).
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Syscalls every replica may make.
#[rustfmt::skip]
pub const ALLOWED: &[&str] = &[
    // Files and directories.
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "flock", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents",
    "getdents64", "lchown", "lchown32", "link", "linkat", "_llseek", "lseek", "lstat", "lstat64",
    "mkdir", "mkdirat", "mknod", "mknodat", "name_to_handle_at", "newfstatat", "open", "openat",
    "openat2", "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "rename", "renameat", "renameat2", "rmdir",
    "sendfile", "sendfile64", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink",
    "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate", "truncate64", "umask",
    "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vmsplice", "write",
    "writev",
    // Extended attributes.
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat", "lgetxattr",
    "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr", "removexattr",
    "removexattrat", "setxattr", "setxattrat",
    // Waiting on files and events.
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "ioctl", "_newselect",
    "pause", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select", "signalfd",
    "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64",
    // Memory.
    "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
    "mremap", "mseal", "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "remap_file_pages",
    // Processes, threads and signals.
    "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "get_robust_list",
    "get_thread_area", "getcpu", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
    "getgid32", "getgroups", "getgroups32", "getitimer", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "getrusage", "getsid", "gettid", "getuid", "getuid32", "ioprio_get", "ioprio_set", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "pidfd_open",
    "pidfd_send_signal", "prctl", "prlimit64", "process_mrelease", "process_vm_readv",
    "process_vm_writev", "ptrace", "restart_syscall", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid", "setuid", "setuid32",
    "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill", "ugetrlimit", "vfork", "wait4",
    "waitid", "waitpid",
    // Time.
    "adjtimex", "alarm", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "gettimeofday", "nanosleep", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "times",
    // Sockets.
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
    "sendto", "setsockopt", "shutdown", "socketcall", "socketpair",
    // System V and POSIX IPC (in the container's own IPC namespace).
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt",
    "shmget",
    // The system, read only.
    "getrandom", "listmount", "statmount", "sysinfo", "uname",
];

/// Syscalls of this host's architecture every replica may make.
#[rustfmt::skip]
pub const ALLOWED_ON_ARCH: &[&str] = if cfg!(target_arch = "aarch64") {
    &["arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls",
      "sync_file_range2"]
} else {
    &["arch_prctl", "modify_ldt", "uretprobe"]
};

/// `socket` families refused: AF_ALG (38, the kernel's crypto API) and
/// AF_VSOCK (40, CVE-2024-50264); every other family is allowed.
pub const REFUSED_SOCKET_FAMILIES: [u64; 2] = [38, 40];

/// Syscalls a replica may make only while it holds a capability.
pub const BY_CAPABILITY: &[(Capability, &[&str])] = &[
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
        &["delete_module", "finit_module", "init_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    (Capability::SysRawio, &["ioperm", "iopl"]),
    (
        Capability::SysTime,
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
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
    (Capability::DacReadSearch, &["open_by_handle_at"]),
];

fn err(e: oci_spec::OciSpecError) -> crate::error::CriError {
    crate::error::CriError::InvalidConfig {
        field: "seccomp",
        reason: e.to_string(),
    }
}

fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscallBuilder {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action)
}

/// The architectures this host's programs may use.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    }
}

/// The rules for a replica holding `caps` (see the module doc).
fn rules(caps: &Capabilities) -> Result<Vec<LinuxSyscall>> {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut out = vec![
        rule(ALLOWED, allow).build().map_err(err)?,
        rule(ALLOWED_ON_ARCH, allow).build().map_err(err)?,
    ];
    // socket: any family below AF_ALG, between AF_ALG and AF_VSOCK, or
    // above AF_VSOCK (each rule one comparison: libseccomp ANDs the
    // comparisons of one rule).
    let [alg, vsock] = REFUSED_SOCKET_FAMILIES;
    for (op, value) in [
        (LinuxSeccompOperator::ScmpCmpLt, alg),
        (LinuxSeccompOperator::ScmpCmpEq, alg + 1),
        (LinuxSeccompOperator::ScmpCmpGt, vsock),
    ] {
        let family = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(value)
            .op(op)
            .build()
            .map_err(err)?;
        out.push(
            rule(&["socket"], allow)
                .args(vec![family])
                .build()
                .map_err(err)?,
        );
    }
    for value in PERSONAS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(value)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .map_err(err)?;
        out.push(
            rule(&["personality"], allow)
                .args(vec![arg])
                .build()
                .map_err(err)?,
        );
    }
    if !caps.contains(&Capability::SysAdmin) {
        let no_namespaces = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(CLONE_NAMESPACES)
            .value_two(0u64)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(err)?;
        out.push(
            rule(&["clone"], allow)
                .args(vec![no_namespaces])
                .build()
                .map_err(err)?,
        );
        out.push(
            rule(&["clone3"], LinuxSeccompAction::ScmpActErrno)
                .errno_ret(ENOSYS)
                .build()
                .map_err(err)?,
        );
    }
    // One rule, each name once (several capabilities may allow one).
    let granted: std::collections::BTreeSet<&str> = BY_CAPABILITY
        .iter()
        .filter(|(cap, _)| caps.contains(cap))
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    if !granted.is_empty() {
        let names: Vec<&str> = granted.into_iter().collect();
        out.push(rule(&names, allow).build().map_err(err)?);
    }
    Ok(out)
}

/// The default filter for a replica holding `caps`.
pub fn default_profile(caps: &Capabilities) -> Result<LinuxSeccomp> {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures())
        .syscalls(rules(caps)?)
        .build()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::capabilities;

    /// The rules that name `syscall`.
    fn rules_for<'a>(p: &'a LinuxSeccomp, syscall: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == syscall))
            .collect()
    }

    fn allowed(p: &LinuxSeccomp, syscall: &str) -> bool {
        rules_for(p, syscall)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    #[test]
    fn what_reaches_past_the_container_is_refused_with_eperm() {
        let p = default_profile(&capabilities(&[], &[]).unwrap()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(EPERM));
        for ok in ["read", "openat", "execve", "futex", "chroot", "ptrace"] {
            assert!(allowed(&p, ok), "{ok}");
        }
        for refused in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "bpf",
            "perf_event_open",
            "init_module",
            "kexec_load",
            "reboot",
            "swapon",
            "userfaultfd",
            "io_uring_setup",
            "clock_settime",
            "syslog",
            "open_by_handle_at",
        ] {
            assert!(!allowed(&p, refused), "{refused}");
        }
        assert!(ALLOWED.iter().all(|n| !n.is_empty() && !n.contains(' ')));
    }

    #[test]
    fn clone_may_not_make_namespaces_without_sys_admin() {
        let p = default_profile(&capabilities(&[], &[]).unwrap()).unwrap();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            (arg.index(), arg.value(), arg.value_two()),
            (0, 0x7E02_0000, Some(0))
        );
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(ENOSYS));

        let admin = default_profile(&capabilities(&["SYS_ADMIN".into()], &[]).unwrap()).unwrap();
        for now in ["clone", "clone3", "unshare", "mount", "setns"] {
            assert!(allowed(&admin, now), "{now}");
        }
        assert!(!allowed(&admin, "keyctl"));
        // Every capability: each name in one rule only.
        let all = default_profile(&capabilities(&["ALL".into()], &[]).unwrap()).unwrap();
        for name in ["bpf", "syslog", "perf_event_open", "clone"] {
            assert_eq!(rules_for(&all, name).len(), 1, "{name}");
        }
    }

    #[test]
    fn personality_takes_only_the_common_personas() {
        let p = default_profile(&capabilities(&[], &[]).unwrap()).unwrap();
        let values: Vec<u64> = rules_for(&p, "personality")
            .iter()
            .map(|r| {
                let a = r.args().as_ref().unwrap()[0];
                assert_eq!((a.index(), a.op()), (0, LinuxSeccompOperator::ScmpCmpEq));
                a.value()
            })
            .collect();
        // Written out, not taken from the constant the rules are made of:
        // PER_LINUX, PER_LINUX_32BIT, PER_LINUX | ADDR_NO_RANDOMIZE, both,
        // and the query.
        assert_eq!(values, [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff]);
    }

    #[test]
    fn dropping_a_capability_takes_its_syscalls() {
        let p = default_profile(&capabilities(&[], &["SYS_CHROOT".into()]).unwrap()).unwrap();
        assert!(!allowed(&p, "chroot"));
        let p = default_profile(&capabilities(&["SYS_TIME".into()], &[]).unwrap()).unwrap();
        assert!(allowed(&p, "clock_settime"));
    }
}

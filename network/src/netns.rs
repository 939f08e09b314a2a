//! Named network namespaces, made the way `ip netns` makes them but without
//! it: a dedicated thread unshares its network namespace and bind-mounts it
//! on a file, so the namespace outlives the thread and orca. A netlink
//! socket opened by that thread stays in the namespace, which is how links
//! inside it get configured.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rtnetlink::Handle;

use crate::error::{NetworkError, Result};

/// Runs `f` on a fresh thread, entering the namespace at `enter` first (or
/// a new one when `None`, bind-mounted at `create_at`), and returns a
/// netlink handle whose socket lives in that namespace.
fn netlink_in(enter: Option<PathBuf>, create_at: Option<PathBuf>) -> Result<Handle> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| NetworkError::io("netns", PathBuf::new(), format!("no async runtime: {e}")))?;
    let worker = std::thread::spawn(move || -> Result<Handle> {
        let _rt = runtime.enter();
        if let Some(path) = &enter {
            let file = std::fs::File::open(path).map_err(|e| NetworkError::io("open", path, e))?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::io("setns", path, e))?;
        }
        if let Some(path) = &create_at {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::io("unshare", path, e))?;
            let ns_path = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
            nix::mount::mount(
                Some(ns_path.as_str()),
                path.as_path(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| NetworkError::io("bind mount", path, e))?;
            // orca does not route IPv6 yet: without it, a replica has no
            // link-local address to reach another project's replicas by,
            // nor a router advertisement to listen to. This thread is in
            // the new namespace, so /proc/sys/net is that namespace's.
            // Ping without raw sockets (replicas have no NET_RAW), as
            // Docker allows: ICMP echo sockets for every group.
            let knob = "/proc/sys/net/ipv4/ping_group_range";
            std::fs::write(knob, "0 2147483647")
                .map_err(|e| NetworkError::io("allow ping sockets", knob, e))?;
            for scope in ["all", "default"] {
                let knob = format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6");
                match std::fs::write(&knob, "1") {
                    Ok(()) => {}
                    // A kernel without IPv6 has nothing to turn off.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(NetworkError::io("disable IPv6", &knob, e)),
                }
            }
        }
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetworkError::netlink("socket", "netns", e))?;
        runtime.spawn(connection);
        Ok(handle)
    });
    worker
        .join()
        .map_err(|_| NetworkError::io("netns", PathBuf::new(), "thread panicked"))?
}

/// Creates the namespace file at `path` and a netlink handle inside it.
pub fn create(path: &Path) -> Result<Handle> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| NetworkError::io("create", dir, e))?;
    }
    std::fs::File::create(path).map_err(|e| NetworkError::io("create", path, e))?;
    let result = netlink_in(None, Some(path.to_path_buf()));
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// A netlink handle inside the existing namespace at `path`.
pub fn enter(path: &Path) -> Result<Handle> {
    netlink_in(Some(path.to_path_buf()), None)
}

/// True if `path` holds a mounted namespace.
pub fn exists(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Unmounts and removes the namespace file; missing is fine.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(NetworkError::io("unmount", path, e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io("remove", path, e)),
    }
}

/// The namespace files in `dir`.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

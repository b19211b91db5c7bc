//! Namespaces: which ones the container gets, and the clone that creates them.
//!
//! One `clone(2)` creates them all at once. The user namespace comes first in the kernel's
//! order, so it owns every other new namespace: that is what lets a rootless container's
//! root mount proc, sysfs, tmpfs and mqueue. The cgroup namespace is *not* created here:
//! the child unshares it only after the monitor has moved it into its cgroup, so the
//! namespace's root is the container's own cgroup (`container::setup`).

pub mod idmap;
pub mod net;

use nix::sched::CloneFlags;
use thiserror::Error;

use crate::spec::{NetMode, Spec, UserNs};

/// Creating the container's namespaces failed.
#[derive(Debug, Error)]
pub enum NamespaceError {
    /// clone(2) refused.
    #[error("cannot create the container's namespaces ({flags:?}){hint}")]
    Clone {
        /// The flags asked for.
        flags: CloneFlags,
        /// A likely cause and fix, or "".
        hint: &'static str,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// Writing the id maps failed.
    #[error("cannot set up the user namespace's id maps")]
    IdMap(#[from] idmap::IdMapError),
}

/// The namespaces in the order the kernel creates them for one clone (user first, so it
/// owns the rest); the cgroup namespace follows later, see the module doc.
pub const ORDERED: [(CloneFlags, &str); 6] = [
    (CloneFlags::CLONE_NEWUSER, "user"),
    (CloneFlags::CLONE_NEWNS, "mount"),
    (CloneFlags::CLONE_NEWPID, "pid"),
    (CloneFlags::CLONE_NEWUTS, "uts"),
    (CloneFlags::CLONE_NEWIPC, "ipc"),
    (CloneFlags::CLONE_NEWNET, "net"),
];

/// The clone flags for a spec.
pub fn clone_flags(spec: &Spec) -> CloneFlags {
    let mut f = CloneFlags::empty();
    for (flag, _) in ORDERED {
        let wanted = match flag {
            CloneFlags::CLONE_NEWUSER => spec.userns == UserNs::On,
            CloneFlags::CLONE_NEWNET => spec.net == NetMode::None,
            _ => true,
        };
        if wanted {
            f |= flag;
        }
    }
    f
}

/// Outcome of [`clone_process`] in each process.
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// `clone(flags | SIGCHLD)` with fork semantics (no new stack: the child continues here,
/// like youki's `clone3` without a stack).
///
/// # Safety
/// The caller must be single-threaded (as after `fork`), and the child must only run code
/// that is safe after fork: it must not return into code that expects to be the parent.
pub unsafe fn clone_process(flags: CloneFlags) -> Result<Forked, NamespaceError> {
    let r = libc::syscall(
        libc::SYS_clone,
        (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    );
    match r {
        -1 => {
            let source = std::io::Error::last_os_error();
            let hint = match source.raw_os_error() {
                Some(libc::EPERM) if flags.contains(CloneFlags::CLONE_NEWUSER) => {
                    "; unprivileged user namespaces may be disabled \
                     (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces)"
                }
                Some(libc::ENOSPC) => {
                    "; the user or pid namespace limit is reached (user.max_*_namespaces)"
                }
                Some(libc::EPERM) => "; creating namespaces needs root or a user namespace",
                _ => "",
            };
            Err(NamespaceError::Clone {
                flags,
                hint,
                source,
            })
        }
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_namespace_comes_first() {
        assert_eq!(ORDERED[0].0, CloneFlags::CLONE_NEWUSER);
        assert!(!ORDERED
            .iter()
            .any(|(f, _)| *f == CloneFlags::CLONE_NEWCGROUP));
    }
}

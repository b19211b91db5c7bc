//! The container's filesystem: a [`MountPlan`] (a `Vec` of typed [`MountOp`]s, like
//! bubblewrap's `SetupOp` list) is built from the spec first, so it can be printed (`-vv`)
//! and unit-tested, then executed in order through the [`Syscall`] seam.
//!
//! Order, with reasons:
//! 1. everything rslave: host mount events still reach us, ours never reach the host,
//!    and detaching the old root after pivot_root cannot unmount anything on the host;
//! 2. the rootfs: the union bound onto itself (a mount point of its own in this
//!    namespace, which pivot_root needs), or kernel overlayfs mounted here;
//! 3. /proc, /dev (tmpfs, bound device nodes, symlinks, pts, shm, mqueue), /sys, then the
//!    masked and read-only /proc and /sys paths (runc's defaults);
//! 4. the user's binds and tmpfs last, so they may cover any of the above;
//! 5. pivot_root and detach the old root; then the read-only remount of `/`, which must
//!    come after every mount point was created in it.

pub mod mounts;
pub mod pivot;

use std::fmt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use thiserror::Error;

use crate::spec::{NetMode, Spec};
use crate::sys::{Create, SysError, Syscall, Target};

/// Setting up the rootfs failed.
#[derive(Debug, Error)]
pub enum RootfsError {
    /// One step of the plan failed.
    #[error("cannot set up the container's filesystem: {step}")]
    Step {
        /// The step, as printed in the plan.
        step: String,
        /// The failed call.
        #[source]
        source: SysError,
    },
}

/// Where the rootfs comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSource {
    /// The FUSE union is already mounted at the root path (by the daemon, outside).
    Union,
    /// Mount kernel overlayfs at the root path with these options.
    Overlay(String),
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountOp {
    /// `mount --make-rslave /`.
    RSlaveAll,
    /// Bind the (already mounted) union onto itself.
    BindRootfs,
    /// Mount kernel overlayfs at the root path.
    OverlayRoot {
        /// The overlay options (lowerdir, upperdir, workdir, ...).
        data: String,
    },
    /// Mount a filesystem at a container path (created as a directory if missing).
    Fs {
        /// Filesystem type.
        fstype: &'static str,
        /// Container path.
        dst: PathBuf,
        /// MS_* flags.
        flags: MsFlags,
        /// Options.
        data: Option<String>,
    },
    /// The container's cgroup tree: a fresh cgroup2 mount (rooted at the cgroup
    /// namespace), or, where the kernel refuses that (a user namespace without a cgroup
    /// namespace of its own), the process's own cgroup2 directory bound from the host.
    Cgroup {
        /// Container path.
        dst: PathBuf,
        /// MS_* flags (MS_RDONLY, MS_NOSUID, ...).
        flags: MsFlags,
    },
    /// A mount as an OCI config.json lists it (any type, source and options).
    Any {
        /// Filesystem type.
        fstype: String,
        /// Source (a device, "tmpfs", "proc", ...).
        source: String,
        /// Container path (created as a directory if missing).
        dst: PathBuf,
        /// MS_* flags.
        flags: MsFlags,
        /// Options the kernel takes as data.
        data: Option<String>,
    },
    /// Bind a host path onto a container path (created like the source if missing).
    Bind {
        /// Host path.
        src: PathBuf,
        /// Container path.
        dst: PathBuf,
        /// Bind the whole subtree (MS_REC).
        recursive: bool,
        /// Read-only on every submount too (mount_setattr AT_RECURSIVE).
        read_only: bool,
        /// The source is not a directory (the target is created as a file).
        file: bool,
    },
    /// Set mount attributes (MOUNT_ATTR_NOSUID, ...) on a mounted container path.
    Attr {
        /// Container path.
        dst: PathBuf,
        /// Every submount too.
        recursive: bool,
        /// MOUNT_ATTR_* bits to set.
        set: u64,
    },
    /// Change the propagation of a mounted container path (MS_PRIVATE, MS_SLAVE, ...).
    Propagation {
        /// Container path.
        dst: PathBuf,
        /// The propagation flag, with MS_REC for the whole subtree.
        flags: MsFlags,
    },
    /// Bind an existing container path onto itself read-only (skipped if missing).
    ReadOnly {
        /// Container path.
        dst: PathBuf,
    },
    /// Hide an existing container path: /dev/null over a file, an empty read-only tmpfs
    /// over a directory (skipped if missing).
    Mask {
        /// Container path.
        dst: PathBuf,
    },
    /// A symlink in the container.
    Symlink {
        /// Link target.
        target: PathBuf,
        /// Container path of the link.
        link: PathBuf,
    },
    /// pivot_root into the rootfs and detach the old root.
    PivotRoot,
    /// Make `/` read-only (after pivot_root).
    RootReadOnly,
}

impl fmt::Display for MountOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountOp::RSlaveAll => write!(f, "make every mount rslave"),
            MountOp::BindRootfs => write!(f, "bind the union onto itself"),
            MountOp::OverlayRoot { data } => write!(f, "mount overlay ({data}) as rootfs"),
            MountOp::Fs {
                fstype, dst, data, ..
            } => write!(
                f,
                "mount {fstype} on {}{}",
                dst.display(),
                data.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            MountOp::Cgroup { dst, .. } => write!(f, "mount cgroup2 on {}", dst.display()),
            MountOp::Any {
                fstype, dst, data, ..
            } => write!(
                f,
                "mount {fstype} on {}{}",
                dst.display(),
                data.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            MountOp::Bind {
                src,
                dst,
                read_only,
                ..
            } => write!(
                f,
                "bind {} on {}{}",
                src.display(),
                dst.display(),
                if *read_only { " (ro)" } else { "" }
            ),
            MountOp::Attr { dst, set, .. } => {
                write!(f, "set attributes {set:#x} on {}", dst.display())
            }
            MountOp::Propagation { dst, flags } => {
                write!(f, "set propagation {flags:?} on {}", dst.display())
            }
            MountOp::ReadOnly { dst } => write!(f, "make {} read-only", dst.display()),
            MountOp::Mask { dst } => write!(f, "mask {}", dst.display()),
            MountOp::Symlink { target, link } => {
                write!(f, "symlink {} -> {}", link.display(), target.display())
            }
            MountOp::PivotRoot => write!(f, "pivot_root and detach the old root"),
            MountOp::RootReadOnly => write!(f, "make / read-only"),
        }
    }
}

/// The ordered list of steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountPlan {
    /// The steps, in order.
    pub ops: Vec<MountOp>,
}

/// Facts the plan depends on besides the spec.
#[derive(Clone, Debug)]
pub struct PlanContext {
    /// The container has its own user namespace.
    pub userns: bool,
    /// Where the rootfs comes from.
    pub source: RootSource,
}

impl MountPlan {
    /// Builds the plan for `spec`.
    pub fn build(spec: &Spec, ctx: &PlanContext) -> MountPlan {
        let mut ops = vec![MountOp::RSlaveAll];
        ops.push(match &ctx.source {
            RootSource::Union => MountOp::BindRootfs,
            RootSource::Overlay(data) => MountOp::OverlayRoot { data: data.clone() },
        });
        mounts::proc(&mut ops);
        mounts::dev(&mut ops, ctx.userns);
        mounts::sys(&mut ops, spec.net == NetMode::None);
        mounts::masks(&mut ops);
        for b in &spec.binds {
            ops.push(MountOp::Bind {
                src: b.src.clone(),
                dst: b.dst.clone(),
                recursive: true,
                read_only: b.read_only,
                file: !b.src.is_dir(),
            });
        }
        for t in &spec.tmpfs {
            let mut data = "mode=1777".to_string();
            if let Some(s) = t.size {
                data.push_str(&format!(",size={s}"));
            }
            ops.push(MountOp::Fs {
                fstype: "tmpfs",
                dst: t.dst.clone(),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data: Some(data),
            });
        }
        ops.push(MountOp::PivotRoot);
        if spec.read_only {
            ops.push(MountOp::RootReadOnly);
        }
        MountPlan { ops }
    }

    /// The plan as numbered lines (for `-vv`).
    pub fn describe(&self) -> String {
        self.ops
            .iter()
            .enumerate()
            .map(|(i, o)| format!("{:2}. {o}\n", i + 1))
            .collect()
    }

    /// Runs every step against the rootfs mounted (or to be mounted) at `root`.
    pub fn execute(&self, root: &Path, sys: &dyn Syscall) -> Result<(), RootfsError> {
        for op in &self.ops {
            run_op(op, root, sys).map_err(|source| RootfsError::Step {
                step: op.to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// `MOUNT_ATTR_RDONLY`.
pub const ATTR_RDONLY: u64 = 0x1;

fn run_op(op: &MountOp, root: &Path, sys: &dyn Syscall) -> Result<(), SysError> {
    match op {
        MountOp::RSlaveAll => sys.mount(
            None,
            &Target::host(Path::new("/")),
            None,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None,
        ),
        MountOp::BindRootfs => {
            let t = Target::host(root);
            sys.mount(
                Some(root),
                &t,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            // Private: nothing mounted below the new root travels anywhere.
            sys.mount(None, &t, None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        }
        MountOp::OverlayRoot { data } => sys.mount(
            Some(Path::new("overlay")),
            &Target::host(root),
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        ),
        MountOp::Fs {
            fstype,
            dst,
            flags,
            data,
        } => fresh_mount(sys, root, dst, fstype, fstype, *flags, data.as_deref()),
        MountOp::Cgroup { dst, flags } => {
            match fresh_mount(sys, root, dst, "cgroup2", "cgroup2", *flags, None) {
                Err(e) if e.errno() == Some(libc::EPERM) => {
                    let Some(own) = mounts::own_cgroup2_dir() else {
                        return Err(e);
                    };
                    let t = sys.open_in_root(root, dst, Create::Nothing)?;
                    sys.mount(Some(&own), &t, None, MsFlags::MS_BIND, None)?;
                    let t = sys.open_in_root(root, dst, Create::Nothing)?;
                    // Read-only whatever the config says: without a cgroup of the
                    // container's own this is the caller's (conmon's, a session's).
                    let attrs = mounts::attrs_of(*flags | MsFlags::MS_RDONLY);
                    sys.mount_setattr(&t, false, attrs, 0)
                }
                other => other,
            }
        }
        MountOp::Any {
            fstype,
            source,
            dst,
            flags,
            data,
        } => fresh_mount(sys, root, dst, source, fstype, *flags, data.as_deref()),
        MountOp::Bind {
            src,
            dst,
            recursive,
            read_only,
            file,
        } => {
            let kind = if *file { Create::File } else { Create::Dir };
            let t = sys.open_in_root(root, dst, kind)?;
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            sys.mount(Some(src), &t, None, flags, None)?;
            if *read_only {
                // Re-resolve: the old fd still points below the new mount.
                let t = sys.open_in_root(root, dst, Create::Nothing)?;
                sys.mount_setattr(&t, *recursive, ATTR_RDONLY, 0)?;
            }
            Ok(())
        }
        MountOp::Attr {
            dst,
            recursive,
            set,
        } => {
            let t = sys.open_in_root(root, dst, Create::Nothing)?;
            sys.mount_setattr(&t, *recursive, *set, 0)
        }
        MountOp::Propagation { dst, flags } => {
            let t = sys.open_in_root(root, dst, Create::Nothing)?;
            sys.mount(None, &t, None, *flags, None)
        }
        MountOp::ReadOnly { dst } => {
            let t = match sys.open_in_root(root, dst, Create::Nothing) {
                Ok(t) => t,
                Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
            };
            let src = t.mount_path();
            sys.mount(
                Some(&src),
                &t,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let t = sys.open_in_root(root, dst, Create::Nothing)?;
            sys.mount_setattr(&t, true, ATTR_RDONLY, 0)
        }
        MountOp::Mask { dst } => mounts::mask(root, dst, sys),
        MountOp::Symlink { target, link } => sys
            .open_in_root(root, link, Create::Symlink(target.clone()))
            .map(drop),
        MountOp::PivotRoot => pivot::pivot_root(root, sys),
        MountOp::RootReadOnly => {
            sys.mount_setattr(&Target::host(Path::new("/")), false, ATTR_RDONLY, 0)
        }
    }
}

/// Mounts a new `fstype` from `source` at container path `dst` (made a directory if
/// missing).
fn fresh_mount(
    sys: &dyn Syscall,
    root: &Path,
    dst: &Path,
    source: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SysError> {
    let t = sys.open_in_root(root, dst, Create::Dir)?;
    sys.mount(Some(Path::new(source)), &t, Some(fstype), flags, data)
}

/// The overlayfs options for kernel overlayfs (`userxattr` inside a user namespace, where
/// `trusted.*` xattrs are out of reach; Linux 5.11+).
pub fn overlay_data(lowers: &[PathBuf], upper: &Path, work: &Path, userns: bool) -> String {
    let l: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut d = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.join(":"),
        upper.display(),
        work.display()
    );
    if userns {
        d.push_str(",userxattr");
    }
    d
}

/// `--fs auto`: whether kernel overlayfs mounts these options at `mnt`, tried in a
/// throwaway child with its own mount namespace (and user namespace when rootless, with
/// its own one-line maps), so the host never sees the attempt.
pub fn overlay_works(data: &str, mnt: &Path, userns: bool) -> bool {
    // SAFETY: single-threaded; the child only makes plain syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = (|| -> Option<()> {
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let mut flags = nix::sched::CloneFlags::CLONE_NEWNS;
            if userns {
                flags |= nix::sched::CloneFlags::CLONE_NEWUSER;
            }
            nix::sched::unshare(flags).ok()?;
            if userns {
                std::fs::write("/proc/self/setgroups", "deny").ok()?;
                std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).ok()?;
                std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).ok()?;
            }
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .ok()?;
            nix::mount::mount(
                Some("overlay"),
                mnt,
                Some("overlay"),
                MsFlags::empty(),
                Some(data),
            )
            .ok()
        })();
        // SAFETY: leaving the forked child without destructors.
        unsafe { libc::_exit(if ok.is_some() { 0 } else { 1 }) };
    }
    if pid < 0 {
        return false;
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0
}

#[cfg(test)]
mod tests;

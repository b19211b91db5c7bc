//! The syscall seam: every privileged call the container side makes (mounts, pivot_root,
//! hostname, unshare, loopback, capabilities, no_new_privs, seccomp) goes through
//! [`Syscall`], implemented by [`Linux`] for real and by [`Recorder`] (tests only), which
//! records each call as one line of text. So the order of the container's steps is
//! unit-tested without root (youki's `TestHelperSyscall`).
//!
//! Paths inside the new root are never handed to `mount(2)` as strings: a symlink planted
//! in the rootfs (`/etc -> /host/etc`) would be followed on the host before pivot_root.
//! [`Syscall::open_in_root`] resolves them with `openat2(RESOLVE_IN_ROOT)` (the rootfs is
//! the root for `..` and absolute symlinks), creating what is missing, and the mount goes
//! onto `/proc/self/fd/N` of that `O_PATH` fd (as runc does since CVE-2019-19921).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use caps::CapsHashSet;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use thiserror::Error;

/// One failed system call: the operation, the path it was about, the errno.
#[derive(Debug, Error)]
#[error("{op} {}: {source}", path.display())]
pub struct SysError {
    /// What was being done ("mount proc on", "pivot_root to", ...).
    pub op: String,
    /// The path concerned (a container path where there is one).
    pub path: PathBuf,
    /// The errno.
    #[source]
    pub source: io::Error,
}

impl SysError {
    /// From the current errno.
    pub fn last(op: impl Into<String>, path: impl Into<PathBuf>) -> SysError {
        SysError {
            op: op.into(),
            path: path.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// The raw errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// What [`Syscall::open_in_root`] creates when the path is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Create {
    /// Must exist already.
    Nothing,
    /// A directory (and missing parents).
    Dir,
    /// An empty regular file (a bind target for a file or device); parents as dirs.
    File,
    /// A symlink with this target; parents as dirs.
    Symlink(PathBuf),
}

/// A resolved path inside the new root: an `O_PATH` fd (real) or just the path (fake).
#[derive(Debug)]
pub struct Target {
    /// The container path, for messages.
    pub shown: PathBuf,
    fd: Option<OwnedFd>,
    path: PathBuf,
}

impl Target {
    /// A target outside any root (host paths such as the rootfs mount point).
    pub fn host(p: &Path) -> Target {
        Target {
            shown: p.to_path_buf(),
            fd: None,
            path: p.to_path_buf(),
        }
    }

    /// The path to hand to `mount(2)`: `/proc/self/fd/N`, or the plain path.
    pub fn mount_path(&self) -> PathBuf {
        match &self.fd {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => self.path.clone(),
        }
    }
}

/// Privileged calls of the container side.
pub trait Syscall {
    /// Resolves `rel` (a container path) beneath `root`, creating it as asked.
    fn open_in_root(&self, root: &Path, rel: &Path, create: Create) -> Result<Target, SysError>;
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Target,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError>;
    /// `mount_setattr(2)`: set/clear `MOUNT_ATTR_*` on the mount at `target` (and below).
    fn mount_setattr(
        &self,
        target: &Target,
        recursive: bool,
        set: u64,
        clear: u64,
    ) -> Result<(), SysError>;
    /// `umount2(2)`.
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SysError>;
    /// `chdir(2)`.
    fn chdir(&self, dir: &Path) -> Result<(), SysError>;
    /// `pivot_root(2)`.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), SysError>;
    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> Result<(), SysError>;
    /// `unshare(2)`.
    fn unshare(&self, flags: CloneFlags) -> Result<(), SysError>;
    /// Brings `lo` up in the current network namespace.
    fn loopback_up(&self) -> Result<(), SysError>;
    /// Drops every capability not in `keep` from the bounding set.
    fn drop_bounding(&self, keep: &CapsHashSet) -> Result<(), SysError>;
    /// Sets the permitted, effective and inheritable sets to `set` (ambient cleared).
    fn set_caps(&self, set: &CapsHashSet) -> Result<(), SysError>;
    /// `setgroups([gid])`, `setresgid`, `setresuid`.
    fn set_ids(&self, uid: u32, gid: u32, setgroups: bool) -> Result<(), SysError>;
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    fn no_new_privs(&self) -> Result<(), SysError>;
    /// Marks every fd >= `from` close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`).
    fn cloexec_from(&self, from: u32) -> Result<(), SysError>;
    /// Installs a seccomp filter (last step before exec).
    fn seccomp(&self, name: &str, prog: &[seccompiler::sock_filter]) -> Result<(), SysError>;
}

/// The real implementation.
pub struct Linux;

fn cstr(p: &Path) -> Result<CString, SysError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SysError {
        op: "path with a NUL byte:".into(),
        path: p.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// `openat2(dirfd, rel, O_PATH|flags, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`.
fn openat2_in_root(dirfd: RawFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC | flags) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid C string and open_how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from openat2.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// The container path as a relative path ("/dev/pts" -> "dev/pts", "/" -> ".").
fn relative(rel: &Path) -> PathBuf {
    let r: PathBuf = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if r.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        r
    }
}

impl Linux {
    /// Creates the last component of `rel` below its (already resolved) parent.
    fn create_last(root_fd: RawFd, rel: &Path, create: &Create) -> Result<(), SysError> {
        let parent = match rel.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = rel.file_name().unwrap_or_default();
        let pfd = openat2_in_root(root_fd, parent, libc::O_DIRECTORY).map_err(|e| SysError {
            op: "open parent of".into(),
            path: rel.to_path_buf(),
            source: e,
        })?;
        // An O_PATH directory fd is a valid dirfd for the *at() calls (Linux 2.6.39+).
        let n = CString::new(name.as_bytes()).unwrap_or_default();
        // SAFETY: valid fd and C strings.
        let r = unsafe {
            match create {
                Create::Dir => libc::mkdirat(pfd.as_raw_fd(), n.as_ptr(), 0o755),
                Create::File => {
                    let fd = libc::openat(
                        pfd.as_raw_fd(),
                        n.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_WRONLY
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                        0
                    } else {
                        -1
                    }
                }
                Create::Symlink(t) => {
                    let tc = cstr(t)?;
                    libc::symlinkat(tc.as_ptr(), pfd.as_raw_fd(), n.as_ptr())
                }
                Create::Nothing => 0,
            }
        };
        if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(SysError::last("create", rel));
        }
        Ok(())
    }
}

impl Syscall for Linux {
    fn open_in_root(&self, root: &Path, rel: &Path, create: Create) -> Result<Target, SysError> {
        let shown = Path::new("/").join(rel);
        let root_c = cstr(root)?;
        // SAFETY: valid C string.
        let rfd = unsafe {
            libc::open(
                root_c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if rfd < 0 {
            return Err(SysError::last("open the new root", root));
        }
        // SAFETY: fresh fd.
        let rfd = unsafe { OwnedFd::from_raw_fd(rfd) };
        let rel = relative(rel);
        let nofollow = if matches!(create, Create::Symlink(_)) {
            libc::O_NOFOLLOW
        } else {
            0
        };
        match openat2_in_root(rfd.as_raw_fd(), &rel, nofollow) {
            Ok(fd) => {
                return Ok(Target {
                    shown,
                    fd: Some(fd),
                    path: root.join(&rel),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create != Create::Nothing => {}
            Err(e) => {
                return Err(SysError {
                    op: "resolve".into(),
                    path: shown,
                    source: e,
                })
            }
        }
        // Create missing parents one component at a time (each resolved in the root).
        let mut prefix = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            prefix.push(c);
            let last = i + 1 == comps.len();
            let want = if last { create.clone() } else { Create::Dir };
            match openat2_in_root(rfd.as_raw_fd(), &prefix, if last { nofollow } else { 0 }) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    Linux::create_last(rfd.as_raw_fd(), &prefix, &want)?
                }
                Err(e) => {
                    return Err(SysError {
                        op: "resolve".into(),
                        path: Path::new("/").join(&prefix),
                        source: e,
                    })
                }
            }
        }
        let fd = openat2_in_root(rfd.as_raw_fd(), &rel, nofollow).map_err(|e| SysError {
            op: "open".into(),
            path: shown.clone(),
            source: e,
        })?;
        Ok(Target {
            shown,
            fd: Some(fd),
            path: root.join(&rel),
        })
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Target,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError> {
        nix::mount::mount(source, &target.mount_path(), fstype, flags, data).map_err(|e| SysError {
            op: format!("mount {} on", fstype.unwrap_or("(bind)")),
            path: target.shown.clone(),
            source: io::Error::from_raw_os_error(e as i32),
        })
    }

    fn mount_setattr(
        &self,
        target: &Target,
        recursive: bool,
        set: u64,
        clear: u64,
    ) -> Result<(), SysError> {
        // SAFETY: plain data.
        let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
        attr.attr_set = set;
        attr.attr_clr = clear;
        let (dfd, path, mut flags) = match &target.fd {
            Some(fd) => (fd.as_raw_fd(), CString::default(), libc::AT_EMPTY_PATH),
            None => (libc::AT_FDCWD, cstr(&target.path)?, 0),
        };
        if recursive {
            flags |= libc::AT_RECURSIVE;
        }
        // SAFETY: valid fd/path and mount_attr of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                dfd,
                path.as_ptr(),
                flags as libc::c_uint,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        };
        if r != 0 {
            return Err(SysError::last("set mount attributes of", &target.shown));
        }
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SysError> {
        nix::mount::umount2(target, flags).map_err(|e| SysError {
            op: "unmount".into(),
            path: target.to_path_buf(),
            source: io::Error::from_raw_os_error(e as i32),
        })
    }

    fn chdir(&self, dir: &Path) -> Result<(), SysError> {
        nix::unistd::chdir(dir).map_err(|e| SysError {
            op: "chdir to".into(),
            path: dir.to_path_buf(),
            source: io::Error::from_raw_os_error(e as i32),
        })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), SysError> {
        nix::unistd::pivot_root(new_root, put_old).map_err(|e| SysError {
            op: "pivot_root to".into(),
            path: new_root.to_path_buf(),
            source: io::Error::from_raw_os_error(e as i32),
        })
    }

    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        nix::unistd::sethostname(name).map_err(|e| SysError {
            op: "sethostname".into(),
            path: PathBuf::from(name),
            source: io::Error::from_raw_os_error(e as i32),
        })
    }

    fn unshare(&self, flags: CloneFlags) -> Result<(), SysError> {
        nix::sched::unshare(flags).map_err(|e| SysError {
            op: format!("unshare({flags:?})"),
            path: PathBuf::new(),
            source: io::Error::from_raw_os_error(e as i32),
        })
    }

    fn loopback_up(&self) -> Result<(), SysError> {
        crate::namespaces::net::loopback_up().map_err(|e| SysError {
            op: "bring up".into(),
            path: PathBuf::from("lo"),
            source: e,
        })
    }

    fn drop_bounding(&self, keep: &CapsHashSet) -> Result<(), SysError> {
        crate::security::caps::drop_bounding(keep).map_err(|e| SysError {
            op: "drop from the capability bounding set:".into(),
            path: PathBuf::new(),
            source: e,
        })
    }

    fn set_caps(&self, set: &CapsHashSet) -> Result<(), SysError> {
        crate::security::caps::set_process_caps(set).map_err(|e| SysError {
            op: "set capabilities".into(),
            path: PathBuf::new(),
            source: e,
        })
    }

    fn set_ids(&self, uid: u32, gid: u32, setgroups: bool) -> Result<(), SysError> {
        let err = |op: &str| SysError::last(op.to_string(), PathBuf::from(format!("{uid}:{gid}")));
        // SAFETY: plain syscalls with valid arguments.
        unsafe {
            if setgroups {
                let g = [gid as libc::gid_t];
                if libc::setgroups(1, g.as_ptr()) != 0 {
                    return Err(err("setgroups for"));
                }
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return Err(err("setresgid for"));
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return Err(err("setresuid for"));
            }
        }
        Ok(())
    }

    fn no_new_privs(&self) -> Result<(), SysError> {
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(SysError::last("prctl(PR_SET_NO_NEW_PRIVS)", ""));
        }
        Ok(())
    }

    fn cloexec_from(&self, from: u32) -> Result<(), SysError> {
        // SAFETY: plain syscall.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                from,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if r != 0 {
            return Err(SysError::last(
                "close_range(CLOEXEC) from fd",
                from.to_string(),
            ));
        }
        Ok(())
    }

    fn seccomp(&self, name: &str, prog: &[seccompiler::sock_filter]) -> Result<(), SysError> {
        seccompiler::apply_filter(prog).map_err(|e| SysError {
            op: format!("install the seccomp filter {name}"),
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        })
    }
}

/// The recording fake (tests only).
#[cfg(test)]
mod recorder;
#[cfg(test)]
pub use recorder::Recorder;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/dev/pts")), PathBuf::from("dev/pts"));
        assert_eq!(relative(Path::new("/")), PathBuf::from("."));
    }

    /// A symlink in the rootfs pointing outside must resolve inside the root.
    #[test]
    fn open_in_root_stays_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/no/such/dir", root.join("dangling")).unwrap();
        let sys = Linux;
        // Absolute link target: resolved as <root>/<target>, created there.
        sys.open_in_root(&root, Path::new("/evil/x"), Create::Dir)
            .unwrap();
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("x")
            .is_dir());
        assert!(!outside.join("x").exists());
        // ".." stops at the root.
        sys.open_in_root(&root, Path::new("/up/y"), Create::File)
            .unwrap();
        assert!(root.join("y").is_file());
        // Nothing is created through a dangling link, inside or out.
        assert!(sys
            .open_in_root(&root, Path::new("/dangling/z"), Create::Dir)
            .is_err());
        assert!(!Path::new("/no/such/dir").exists());
        sys.open_in_root(
            &root,
            Path::new("/dev/fd"),
            Create::Symlink("/proc/self/fd".into()),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_link(root.join("dev/fd")).unwrap(),
            PathBuf::from("/proc/self/fd")
        );
        assert!(sys
            .open_in_root(&root, Path::new("/missing"), Create::Nothing)
            .is_err());
    }
}

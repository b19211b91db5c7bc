//! Temporary trees and small file helpers (xattrs, times, device nodes, ownership).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{lazy_unmount, mounts, unionfs_bin, MountInfo};

/// A temporary directory (canonical path) with helpers to populate it. Relative paths are
/// relative to its root; parents are created as needed.
pub struct TempTree {
    root: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Default for TempTree {
    fn default() -> Self {
        Self::new()
    }
}

impl TempTree {
    pub fn new() -> TempTree {
        let dir = tempfile::Builder::new()
            .prefix("unionfs-test.")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        TempTree {
            root,
            dir: Some(dir),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    pub fn symlink(&self, target: impl AsRef<Path>, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
        std::os::unix::fs::symlink(target, &p)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        p
    }

    pub fn hardlink(&self, existing: impl AsRef<Path>, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        fs::hard_link(self.join(existing), &p)
            .unwrap_or_else(|e| panic!("link {}: {e}", p.display()));
        p
    }

    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) {
        let p = self.join(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }

    /// Copies the binary under test into `<root>/bin/unionfs` (mode 0755), so that a user who
    /// cannot traverse the build directory (e.g. a checkout under /root) can run it.
    pub fn install_bin(&self) -> PathBuf {
        let dst = self.mkdir("bin").join("unionfs");
        fs::copy(unionfs_bin(), &dst).expect("copy unionfs binary");
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).expect("chmod binary");
        self.chmod("bin", 0o755);
        dst
    }

    /// Makes the tree reachable and owned by `uid:gid` (root 0755, everything chowned),
    /// for tests that run as the unprivileged user.
    pub fn give_to(&self, uid: u32, gid: u32) {
        self.chmod("", 0o755);
        chown_tree(&self.root, uid, gid);
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        // Never let the recursive delete walk into (or hang on) a mount left behind.
        let mut left: Vec<MountInfo> = mounts()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&self.root))
            .collect();
        left.sort_by(|a, b| b.mount_point.cmp(&a.mount_point));
        for m in &left {
            lazy_unmount(&m.mount_point, m.fstype.starts_with("fuse"));
        }
        if mounts()
            .iter()
            .any(|m| m.mount_point.starts_with(&self.root))
        {
            eprintln!(
                "warning: leaving {} in place: something is still mounted below it",
                self.root.display()
            );
            if let Some(d) = self.dir.take() {
                let _ = d.keep();
            }
        }
    }
}

/// `lchown -R`.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    let md = fs::symlink_metadata(path).expect("lstat");
    if md.is_dir() {
        for e in fs::read_dir(path).expect("read_dir") {
            chown_tree(&e.expect("dirent").path(), uid, gid);
        }
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Sets an extended attribute on `path` without following a symlink.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert!(
        r == 0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Reads one extended attribute without following a symlink (None if absent).
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Names of all extended attributes (without following a symlink).
pub fn list_xattrs(path: &Path) -> Vec<String> {
    let p = cpath(path);
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C string and buffer of the given length.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r <= 0 {
        return Vec::new();
    }
    buf[..r as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Sets atime and mtime (seconds, nanoseconds) without following a symlink.
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let p = cpath(path);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert!(
        r == 0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Creates a device node or fifo (`mode` includes the file type bits).
pub fn mknod(path: &Path, mode: u32, major: u32, minor: u32) {
    let p = cpath(path);
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) };
    assert!(
        r == 0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

//! Attribute and xattr changes: each copies the object up first (truncate to 0 copies
//! metadata only). Reads of attributes and xattrs come from the top instance, with the
//! whiteout format's private xattrs hidden and refused.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};

use super::copyup::Data;
use super::error::{IoContext, Result};
use super::{parent_fd, sys, CoreError, Obj, Union};

/// The attribute changes of one setattr call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// New permission bits (and set-id/sticky).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New atime (`UTIME_NOW` in tv_nsec for "now").
    pub atime: Option<libc::timespec>,
    /// New mtime.
    pub mtime: Option<libc::timespec>,
}

impl Union {
    /// Applies attribute changes, through `fd` when the caller has the file open.
    pub fn setattr(&self, obj: &Obj, a: &SetAttr, fd: Option<BorrowedFd<'_>>) -> Result<Obj> {
        let data = match a.size {
            Some(n) => Data::Truncate(n),
            None => Data::Full,
        };
        let up = self.copy_up(obj, data)?;
        let stack = self.stack();
        let dir = parent_fd(&stack, up.layers[0], up.parent_path()).ctx("setattr", &obj.path)?;
        let name = up.name();
        let is_link = up.kind() == libc::S_IFLNK;
        if a.uid.is_some() || a.gid.is_some() {
            sys::fchownat(dir.as_fd(), name, a.uid, a.gid).ctx("chown", &obj.path)?;
        }
        if let Some(m) = a.mode {
            if !is_link {
                sys::fchmodat(dir.as_fd(), name, m & 0o7777).ctx("chmod", &obj.path)?;
            }
        }
        if let Some(n) = a.size {
            match fd {
                Some(fd) => sys::ftruncate(fd, n),
                None => sys::openat(dir.as_fd(), name, libc::O_WRONLY | libc::O_NONBLOCK, 0)
                    .and_then(|f| sys::ftruncate(f.as_fd(), n)),
            }
            .ctx("truncate", &obj.path)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let omit = libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            };
            let t = [a.atime.unwrap_or(omit), a.mtime.unwrap_or(omit)];
            sys::utimensat(dir.as_fd(), name, &t).ctx("utimens", &obj.path)?;
        }
        let st = sys::fstatat(dir.as_fd(), name).ctx("setattr", &obj.path)?;
        Ok(Obj { st, ..up })
    }

    /// Fresh lstat of the object's top instance.
    pub fn stat(&self, obj: &Obj) -> Result<super::Stat> {
        let stack = self.stack();
        if let Some((k, key)) = &obj.indexed {
            if let Some(w) = stack.branch(*k).work.as_ref() {
                let mut st =
                    sys::fstatat(w.index.as_fd(), OsStr::new(key)).ctx("stat", &obj.path)?;
                st.st_nlink = st.st_nlink.saturating_sub(1).max(1);
                return Ok(st);
            }
        }
        if obj.path.as_os_str().is_empty() {
            return sys::fstat(stack.branch(obj.layers[0]).fd()).ctx("stat", &obj.path);
        }
        let dir = parent_fd(&stack, obj.layers[0], obj.parent_path()).ctx("stat", &obj.path)?;
        sys::fstatat(dir.as_fd(), obj.name()).ctx("stat", &obj.path)
    }

    fn xattr_target(&self, obj: &Obj) -> Result<(std::os::fd::OwnedFd, OsString)> {
        let stack = self.stack();
        if obj.path.as_os_str().is_empty() {
            let fd = sys::open_dir_path(stack.branch(obj.layers[0]).fd(), std::path::Path::new(""))
                .ctx("xattr", &obj.path)?;
            return Ok((fd, OsString::new()));
        }
        let dir = parent_fd(&stack, obj.layers[0], obj.parent_path()).ctx("xattr", &obj.path)?;
        Ok((dir, obj.name().to_os_string()))
    }

    /// Reads one xattr (`Ok(None)`: not set).
    pub fn getxattr(&self, obj: &Obj, attr: &OsStr) -> Result<Option<Vec<u8>>> {
        if self.stack().format.is_private_xattr(attr) {
            return Err(CoreError::PrivateXattr {
                op: "getxattr",
                path: obj.path.clone(),
            });
        }
        let (dir, name) = self.xattr_target(obj)?;
        sys::getxattr(dir.as_fd(), &name, attr).ctx("getxattr", &obj.path)
    }

    /// Lists xattrs, without the private ones.
    pub fn listxattr(&self, obj: &Obj) -> Result<Vec<OsString>> {
        let stack = self.stack();
        let (dir, name) = self.xattr_target(obj)?;
        let all = sys::listxattr(dir.as_fd(), &name).ctx("listxattr", &obj.path)?;
        Ok(all
            .into_iter()
            .filter(|a| !stack.format.is_private_xattr(a))
            .collect())
    }

    /// Sets an xattr (copy-up first).
    pub fn setxattr(&self, obj: &Obj, attr: &OsStr, value: &[u8], flags: i32) -> Result<Obj> {
        if self.stack().format.is_private_xattr(attr) {
            return Err(CoreError::PrivateXattr {
                op: "setxattr",
                path: obj.path.clone(),
            });
        }
        let up = self.copy_up(obj, Data::Full)?;
        let (dir, name) = self.xattr_target(&up)?;
        sys::setxattr(dir.as_fd(), &name, attr, value, flags).ctx("setxattr", &obj.path)?;
        Ok(up)
    }

    /// Removes an xattr (copy-up first; `ENODATA` if it is not set).
    pub fn removexattr(&self, obj: &Obj, attr: &OsStr) -> Result<Obj> {
        if self.stack().format.is_private_xattr(attr) {
            return Err(CoreError::PrivateXattr {
                op: "removexattr",
                path: obj.path.clone(),
            });
        }
        // Refuse before copying up when there is nothing to remove.
        if self.getxattr(obj, attr)?.is_none() {
            return Err(super::error::errno("removexattr", &obj.path, libc::ENODATA));
        }
        let up = self.copy_up(obj, Data::Full)?;
        let (dir, name) = self.xattr_target(&up)?;
        sys::removexattr(dir.as_fd(), &name, attr).ctx("removexattr", &obj.path)?;
        Ok(up)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::FormatChoice;
    use super::SetAttr;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn chmod_copies_up_and_leaves_the_lower_alone() {
        let t = Tree::new(&["rw", "ro"]);
        t.file("ro", "f", "data");
        let u = t.union(FormatChoice::Wh);
        let f = lookup_path(&u, "f");
        let a = SetAttr {
            mode: Some(0o600),
            ..Default::default()
        };
        let up = u.setattr(&f, &a, None).unwrap();
        assert_eq!(up.st.st_mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(t.path("rw").join("f")).unwrap(),
            "data"
        );
        assert_ne!(
            std::fs::metadata(t.path("ro").join("f")).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn truncate_to_a_size_copies_only_that_much() {
        let t = Tree::new(&["rw", "ro"]);
        t.file("ro", "f", "0123456789");
        let u = t.union(FormatChoice::Wh);
        let a = SetAttr {
            size: Some(4),
            ..Default::default()
        };
        u.setattr(&lookup_path(&u, "f"), &a, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path("rw").join("f")).unwrap(),
            "0123"
        );
    }

    #[test]
    fn xattrs_copy_up_and_private_ones_are_refused() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.file("ro", "f", "x");
            let u = t.union(fmt);
            let f = lookup_path(&u, "f");
            assert!(u.getxattr(&f, os("user.k")).unwrap().is_none());
            u.setxattr(&f, os("user.k"), b"v", 0).unwrap();
            let f = lookup_path(&u, "f");
            assert_eq!(
                u.getxattr(&f, os("user.k")).unwrap().as_deref(),
                Some(&b"v"[..])
            );
            assert!(get_xattr(&t.path("ro").join("f"), "user.k").is_none());
            assert!(u
                .listxattr(&f)
                .unwrap()
                .iter()
                .all(|a| !a.to_string_lossy().contains("unionfs")));
            let e = u.setxattr(&f, os("trusted.overlay.opaque"), b"y", 0);
            if matches!(
                u.stack().format,
                super::super::WhiteoutFormat::Overlay { user_xattr: false }
            ) {
                assert_eq!(e.unwrap_err().errno(), libc::EOPNOTSUPP);
            }
            assert_eq!(
                u.removexattr(&f, os("user.none")).unwrap_err().errno(),
                libc::ENODATA
            );
        }
    }
}

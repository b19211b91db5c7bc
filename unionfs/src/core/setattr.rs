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
            None if self.config.metacopy => Data::Meta,
            None => Data::Full,
        };
        let up = self.copy_up(obj, data)?;
        let stack = self.stack();
        // The root has no parent inside the branch: it is "." of the branch itself.
        let (dir, name) = if up.path.as_os_str().is_empty() {
            let d = sys::open_dir_path(stack.branch(up.layers[0]).fd(), std::path::Path::new(""))
                .ctx("setattr", &obj.path)?;
            (d, OsStr::new("."))
        } else {
            let d = parent_fd(&stack, up.layers[0], up.parent_path()).ctx("setattr", &obj.path)?;
            (d, up.name())
        };
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
                let index = w.index().ctx("stat", &obj.path)?;
                let mut st = sys::fstatat(index, OsStr::new(key)).ctx("stat", &obj.path)?;
                st.st_nlink = stack.union_nlink(index, OsStr::new(key), &st);
                return Ok(st);
            }
        }
        if obj.path.as_os_str().is_empty() {
            return sys::fstat(stack.branch(obj.layers[0]).fd()).ctx("stat", &obj.path);
        }
        let dir = parent_fd(&stack, obj.layers[0], obj.parent_path()).ctx("stat", &obj.path)?;
        let mut st = sys::fstatat(dir.as_fd(), obj.name()).ctx("stat", &obj.path)?;
        if obj.is_metacopy() {
            // The blocks are those of the data, as the kernel reports them.
            let d = parent_fd(&stack, obj.layers[1], obj.parent_path()).ctx("stat", &obj.path)?;
            if let Ok(dst) = sys::fstatat(d.as_fd(), obj.name()) {
                st.st_blocks = dst.st_blocks;
            }
        }
        if stack.is_rw(obj.layers[0]) {
            st.st_nlink = stack.union_nlink(dir.as_fd(), obj.name(), &st);
        }
        Ok(st)
    }

    /// Where an object's xattrs live: (directory fd, name), or the directory itself.
    fn xattr_target(&self, obj: &Obj) -> Result<(std::os::fd::OwnedFd, OsString)> {
        let stack = self.stack();
        if let Some((k, key)) = &obj.indexed {
            if let Some(w) = stack.branch(*k).work.as_ref() {
                let fd = w
                    .index()
                    .and_then(|ix| ix.try_clone_to_owned())
                    .ctx("xattr", &obj.path)?;
                return Ok((fd, OsString::from(key)));
            }
        }
        if obj.path.as_os_str().is_empty() {
            let fd = sys::open_dir_path(stack.branch(obj.layers[0]).fd(), std::path::Path::new(""))
                .ctx("xattr", &obj.path)?;
            return Ok((fd, OsString::new()));
        }
        let dir = parent_fd(&stack, obj.layers[0], obj.parent_path()).ctx("xattr", &obj.path)?;
        Ok((dir, obj.name().to_os_string()))
    }

    fn stored_name(&self, obj: &Obj, attr: &OsStr, op: &'static str) -> Result<OsString> {
        self.stack()
            .format
            .stored_xattr_name(attr)
            .ok_or_else(|| CoreError::PrivateXattr {
                op,
                path: obj.path.clone(),
            })
    }

    /// Where an xattr change goes: a lower hard link whose inode is already up changes
    /// that inode in place (the name stays lower, as on overlayfs); anything else is
    /// copied up first.
    fn copy_up_meta_target(&self, obj: &Obj) -> Result<Obj> {
        if obj.indexed.is_some() {
            return Ok(obj.clone());
        }
        self.copy_up(
            obj,
            if self.config.metacopy {
                Data::Meta
            } else {
                Data::Full
            },
        )
    }

    /// Reads one xattr (`Ok(None)`: not set).
    pub fn getxattr(&self, obj: &Obj, attr: &OsStr) -> Result<Option<Vec<u8>>> {
        let stored = self.stored_name(obj, attr, "getxattr")?;
        let (dir, name) = self.xattr_target(obj)?;
        sys::getxattr(dir.as_fd(), &name, &stored).ctx("getxattr", &obj.path)
    }

    /// Lists xattrs as callers see them (private ones hidden, escaped ones unescaped).
    pub fn listxattr(&self, obj: &Obj) -> Result<Vec<OsString>> {
        let stack = self.stack();
        let (dir, name) = self.xattr_target(obj)?;
        let all = sys::listxattr(dir.as_fd(), &name).ctx("listxattr", &obj.path)?;
        Ok(all
            .iter()
            .filter_map(|a| stack.format.visible_xattr_name(a))
            .collect())
    }

    /// Sets an xattr (copy-up first, as overlayfs does even if the call then fails).
    pub fn setxattr(&self, obj: &Obj, attr: &OsStr, value: &[u8], flags: i32) -> Result<Obj> {
        let stored = self.stored_name(obj, attr, "setxattr")?;
        let up = self.copy_up_meta_target(obj)?;
        let (dir, name) = self.xattr_target(&up)?;
        sys::setxattr(dir.as_fd(), &name, &stored, value, flags).ctx("setxattr", &obj.path)?;
        Ok(up)
    }

    /// Removes an xattr (copy-up first; `ENODATA` if it is not set, without copying up).
    pub fn removexattr(&self, obj: &Obj, attr: &OsStr) -> Result<Obj> {
        let stored = self.stored_name(obj, attr, "removexattr")?;
        if self.getxattr(obj, attr)?.is_none() {
            return Err(super::error::errno("removexattr", &obj.path, libc::ENODATA));
        }
        let up = self.copy_up_meta_target(obj)?;
        let (dir, name) = self.xattr_target(&up)?;
        sys::removexattr(dir.as_fd(), &name, &stored).ctx("removexattr", &obj.path)?;
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
    fn the_root_takes_chown_chmod_and_times() {
        let t = Tree::new(&["rw", "ro"]);
        let u = t.union(FormatChoice::Wh);
        let root = u.root().unwrap();
        let now = libc::timespec {
            tv_sec: 1_300_000_000,
            tv_nsec: 0,
        };
        let a = SetAttr {
            mode: Some(0o751),
            uid: Some(unsafe { libc::geteuid() }),
            atime: Some(now),
            mtime: Some(now),
            ..Default::default()
        };
        let r = u.setattr(&root, &a, None).unwrap();
        assert_eq!(r.st.st_mode & 0o7777, 0o751);
        let m = std::fs::metadata(t.path("rw")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o751, 1_300_000_000));
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
            match u.stack().format {
                super::super::WhiteoutFormat::Overlay { user_xattr } => {
                    // Escaped as the kernel does: it does not make the file opaque.
                    let pre = if user_xattr { "user" } else { "trusted" };
                    let asked = format!("{pre}.overlay.opaque");
                    u.setxattr(&f, os(&asked), b"y", 0).unwrap();
                    let f = lookup_path(&u, "f");
                    assert_eq!(
                        u.getxattr(&f, os(&asked)).unwrap().as_deref(),
                        Some(&b"y"[..])
                    );
                    let stored = format!("{pre}.overlay.overlay.opaque");
                    assert!(get_xattr(&t.path("rw").join("f"), &stored).is_some());
                    assert!(u.listxattr(&f).unwrap().iter().any(|a| *a == *asked));
                }
                super::super::WhiteoutFormat::Wh | super::super::WhiteoutFormat::Meta => {
                    let ours = format!("{}origin", u.stack().format.record_prefix());
                    let e = u.setxattr(&f, os(&ours), b"y", 0);
                    assert_eq!(e.unwrap_err().errno(), libc::EOPNOTSUPP);
                }
            }
            assert_eq!(
                u.removexattr(&f, os("user.none")).unwrap_err().errno(),
                libc::ENODATA
            );
        }
    }
}

//! New objects: create, mkdir, mknod, symlink, link.
//!
//! The object goes to the highest branch holding the parent if that branch is rw
//! (`create=parent`), else the parent chain is copied up into the topmost rw branch
//! above it; `create=top` always uses the topmost rw branch. A new object replaces a
//! whiteout atomically (built in the work dir, renamed over it); a directory created
//! where a whiteout stood is opaque. New objects belong to the caller, with the group
//! of a setgid parent.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::error::{errno, IoContext, Result};
use super::lookup::{is_hidden_name, lookup_in};
use super::{sys, Caller, CoreError, CreateMode, Obj, Stack, Union};

/// What to create.
pub enum NewKind<'a> {
    /// A regular file, opened with these flags.
    File {
        /// open(2) flags.
        flags: i32,
    },
    /// A directory.
    Dir,
    /// A fifo, socket or device node (`mode` carries the type).
    Node {
        /// rdev for devices.
        rdev: u64,
    },
    /// A symlink to this target.
    Symlink(&'a OsStr),
}

impl Union {
    /// The rw branch new entries of `parent` go to.
    pub(crate) fn create_target(&self, stack: &Stack, parent: &Obj) -> Result<u16> {
        let top = parent.top();
        let t = match self.config.create {
            CreateMode::Parent => {
                if stack.is_rw(top) {
                    Some(top)
                } else {
                    (0..top).find(|&i| stack.is_rw(i))
                }
            }
            CreateMode::Top => stack.top_rw().filter(|&k| k <= top),
        };
        let t = t.ok_or_else(|| CoreError::ReadOnly {
            op: "create",
            path: parent.path.clone(),
        })?;
        // Without copy-up the parent must already be on the target branch.
        if !self.config.copy_up && !parent.layers.contains(&t) {
            return Err(errno("create", &parent.path, libc::EACCES));
        }
        Ok(t)
    }

    /// Creates `name` in `parent`. For files, also returns the open fd.
    pub fn create(
        &self,
        parent: &Obj,
        name: &OsStr,
        mode: u32,
        kind: NewKind<'_>,
        caller: Caller,
    ) -> Result<(Obj, Option<OwnedFd>)> {
        let stack = self.stack();
        let path = parent.path.join(name);
        if is_hidden_name(&stack, &parent.path, name) {
            return Err(CoreError::Reserved { op: "create", path });
        }
        if lookup_in(&stack, parent, name)?.is_some() {
            return Err(errno("create", &path, libc::EEXIST));
        }
        let target = self.create_target(&stack, parent)?;
        let dir = self.ensure_parents(&stack, target, &parent.path)?;
        let pst = sys::fstat(dir.as_fd()).ctx("create", &path)?;
        // Ownership as on a local filesystem: the caller, or a setgid parent's group.
        let setgid_parent = pst.st_mode & libc::S_ISGID != 0;
        let gid = if setgid_parent {
            pst.st_gid
        } else {
            caller.gid
        };
        let mut perm = mode & 0o7777;
        if setgid_parent && matches!(kind, NewKind::Dir) {
            perm |= libc::S_ISGID;
        }
        let whiteout_here = stack
            .format
            .is_whiteout(
                dir.as_fd(),
                name,
                sys::stat_opt(dir.as_fd(), name)
                    .ctx("create", &path)?
                    .as_ref(),
            )
            .ctx("create", &path)?;
        let is_dir = matches!(kind, NewKind::Dir);
        let overlay = matches!(stack.format, super::WhiteoutFormat::Overlay { .. });
        let fd = if whiteout_here && overlay {
            // The whiteout is the entry itself: build aside, then swap it in.
            let work = stack
                .branch(target)
                .work
                .as_ref()
                .ok_or_else(|| errno("create", &path, libc::EROFS))?;
            let tmp = OsString::from(work.temp_name());
            let fd = build(work.tmp.as_fd(), &tmp, perm, mode, &kind, caller.uid, gid)
                .ctx("create", &path)?;
            if is_dir {
                stack
                    .format
                    .set_opaque(work.tmp.as_fd(), &tmp)
                    .ctx("create", &path)?;
                sys::renameat2(
                    work.tmp.as_fd(),
                    &tmp,
                    dir.as_fd(),
                    name,
                    sys::RENAME_EXCHANGE,
                )
                .ctx("create", &path)?;
                sys::unlinkat(work.tmp.as_fd(), &tmp, false).ctx("create", &path)?;
            } else {
                sys::renameat2(work.tmp.as_fd(), &tmp, dir.as_fd(), name, 0)
                    .ctx("create", &path)?;
            }
            fd
        } else {
            let fd = build(dir.as_fd(), name, perm, mode, &kind, caller.uid, gid)
                .ctx("create", &path)?;
            // A new directory in a merged parent is opaque from the start, as overlayfs
            // makes it (nothing below can show through; lookups stop early).
            if is_dir && !whiteout_here && overlay && parent.layers.iter().any(|&l| l != target) {
                let _ = stack.format.set_opaque(dir.as_fd(), name);
            }
            if whiteout_here {
                if is_dir {
                    stack
                        .format
                        .set_opaque(dir.as_fd(), name)
                        .ctx("create", &path)?;
                }
                stack
                    .format
                    .remove_whiteout(dir.as_fd(), name)
                    .ctx("create", &path)?;
            }
            fd
        };
        if stack.format == super::WhiteoutFormat::Meta {
            // The name is back; a directory marker stays and makes a new directory opaque.
            super::meta::unhide(&stack, target, &path, is_dir).ctx("create", &path)?;
        }
        let obj = lookup_in(
            &stack,
            parent_in(&stack, parent, target)?
                .as_ref()
                .unwrap_or(parent),
            name,
        )?
        .ok_or_else(|| CoreError::NotFound {
            op: "create",
            path: path.clone(),
        })?;
        if is_dir {
            self.subdirs_changed(&parent.path, 1);
        }
        Ok((obj, fd))
    }

    /// Makes a hard link `name` in `parent` to `obj`.
    pub fn link(&self, obj: &Obj, parent: &Obj, name: &OsStr) -> Result<Obj> {
        let stack = self.stack();
        let path = parent.path.join(name);
        if obj.is_dir() {
            return Err(errno("link", &path, libc::EPERM));
        }
        if is_hidden_name(&stack, &parent.path, name) {
            return Err(CoreError::Reserved { op: "link", path });
        }
        if lookup_in(&stack, parent, name)?.is_some() {
            return Err(errno("link", &path, libc::EEXIST));
        }
        // Both names must live in one branch: the one the source is copied up to,
        // which must also be at or above the parent's top so the new name is visible.
        let target = self.create_target(&stack, parent)?;
        let src_target =
            self.write_target(&stack, obj.top())
                .ok_or_else(|| CoreError::ReadOnly {
                    op: "link",
                    path: obj.path.clone(),
                })?;
        let target = target.min(src_target);
        let up = self.copy_up_to(obj, target)?;
        let sdir = super::parent_fd(&stack, up.top(), up.parent_path()).ctx("link", &path)?;
        let dir = self.ensure_parents(&stack, target, &parent.path)?;
        let wh = stack
            .format
            .is_whiteout(
                dir.as_fd(),
                name,
                sys::stat_opt(dir.as_fd(), name)
                    .ctx("link", &path)?
                    .as_ref(),
            )
            .ctx("link", &path)?;
        if wh {
            stack
                .format
                .remove_whiteout(dir.as_fd(), name)
                .ctx("link", &path)?;
        }
        sys::linkat(sdir.as_fd(), up.name(), dir.as_fd(), name).ctx("link", &path)?;
        if stack.format == super::WhiteoutFormat::Meta {
            super::meta::unhide(&stack, target, &path, false).ctx("link", &path)?;
        }
        let p = parent_in(&stack, parent, target)?;
        let mut new = lookup_in(&stack, p.as_ref().unwrap_or(parent), name)?
            .ok_or(CoreError::NotFound { op: "link", path })?;
        // Both names are one inode: keep the number the source already had.
        new.ino = up.ino;
        Ok(new)
    }

    /// Copies `obj` up into exactly branch `target` (used where two names must share one).
    pub(crate) fn copy_up_to(&self, obj: &Obj, target: u16) -> Result<Obj> {
        let up = self.copy_up(obj, super::copyup::Data::Full)?;
        if up.top() <= target {
            return Ok(up);
        }
        // The natural write target is below `target`: a second hop.
        let stack = self.stack();
        let _g = self.lock_for(&obj.path).lock();
        let dir = self.ensure_parents(&stack, target, obj.parent_path())?;
        let src = super::parent_fd(&stack, up.top(), up.parent_path()).ctx("copy-up", &obj.path)?;
        let st = sys::fstatat(src.as_fd(), up.name()).ctx("copy-up", &obj.path)?;
        let work = stack
            .branch(target)
            .work
            .as_ref()
            .ok_or_else(|| errno("copy-up", &obj.path, libc::EROFS))?;
        let tmp = OsString::from(work.temp_name());
        copy_plain(&stack, src.as_fd(), up.name(), &st, work.tmp.as_fd(), &tmp)
            .ctx("copy-up", &obj.path)?;
        sys::renameat2(
            work.tmp.as_fd(),
            &tmp,
            dir.as_fd(),
            up.name(),
            sys::RENAME_NOREPLACE,
        )
        .ctx("copy-up", &obj.path)?;
        self.relookup(&stack, obj)
    }
}

/// The parent as seen once `target` holds it (it may just have been copied up).
fn parent_in(stack: &Stack, parent: &Obj, target: u16) -> Result<Option<Obj>> {
    if parent.layers.contains(&target) {
        return Ok(None);
    }
    let mut p = parent.clone();
    let pos = p
        .layers
        .iter()
        .position(|&l| l > target)
        .unwrap_or(p.layers.len());
    p.layers.insert(pos, target);
    let _ = stack;
    Ok(Some(p))
}

fn copy_plain(
    stack: &Stack,
    src: BorrowedFd<'_>,
    name: &OsStr,
    st: &super::Stat,
    dir: BorrowedFd<'_>,
    tmp: &OsStr,
) -> std::io::Result<()> {
    let _ = stack;
    // A plain full copy between two rw branches (rare: link across rw branches).
    let out = sys::openat(
        dir,
        tmp,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        0o600,
    )?;
    let input = sys::openat(src, name, libc::O_RDONLY, 0)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut off = 0u64;
    loop {
        let n = sys::pread(input.as_fd(), &mut buf, off)?;
        if n == 0 {
            break;
        }
        sys::pwrite(out.as_fd(), &buf[..n], off)?;
        off += n as u64;
    }
    sys::fchown(out.as_fd(), st.st_uid, st.st_gid)?;
    sys::fchmod(out.as_fd(), st.st_mode & 0o7777)?;
    Ok(())
}

/// Creates one object in `dir` and gives it to `uid:gid`.
fn build(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    perm: u32,
    mode: u32,
    kind: &NewKind<'_>,
    uid: u32,
    gid: u32,
) -> std::io::Result<Option<OwnedFd>> {
    let mut fd = None;
    match kind {
        NewKind::File { flags } => {
            let f = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC))
                | libc::O_CREAT
                | libc::O_EXCL;
            // Open read-write internally when asked for write-only? No: keep the
            // caller's access mode, the kernel relies on it.
            fd = Some(sys::openat(dir, name, f, perm)?);
        }
        NewKind::Dir => sys::mkdirat(dir, name, perm)?,
        NewKind::Node { rdev } => sys::mknodat(dir, name, (mode & libc::S_IFMT) | perm, *rdev)?,
        NewKind::Symlink(target) => sys::symlinkat(target, dir, name)?,
    }
    let is_link = matches!(kind, NewKind::Symlink(_));
    let me = (sys::geteuid(), unsafe { libc::getegid() });
    if (uid, gid) != me {
        let r = sys::fchownat(dir, name, Some(uid), Some(gid));
        if let Err(e) = r {
            if sys::geteuid() == 0 {
                let _ = sys::unlinkat(dir, name, matches!(kind, NewKind::Dir));
                return Err(e);
            }
        }
    }
    // chown may clear set-id bits, and mkdir never takes S_ISGID from its mode (a
    // directory built in the work dir has no setgid parent): put back what was asked.
    if !is_link && perm & (libc::S_ISUID | libc::S_ISGID) != 0 {
        sys::fchmodat(dir, name, perm)?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Config, CreateMode, FormatChoice, Mode};
    use super::NewKind;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn create_parent_uses_the_branch_holding_the_parent() {
        let t = Tree::new(&["rw0", "rw1", "ro"]);
        t.dir("rw1", "d");
        t.dir("ro", "e");
        let modes = [Mode::Rw, Mode::Rw, Mode::Ro];
        let u = t.union_modes(FormatChoice::Wh, &modes);
        let d = lookup_path(&u, "d");
        u.create(
            &d,
            os("f"),
            0o644,
            NewKind::File {
                flags: libc::O_WRONLY,
            },
            caller(),
        )
        .unwrap();
        assert!(t.path("rw1").join("d/f").exists());
        assert!(!t.path("rw0").join("d").exists());
        // A parent only on the ro branch is copied up into the topmost rw branch above.
        let e = lookup_path(&u, "e");
        u.create(&e, os("g"), 0o644, NewKind::Dir, caller())
            .unwrap();
        assert!(t.path("rw0").join("e/g").is_dir());
    }

    #[test]
    fn create_top_always_uses_the_top_rw_branch() {
        let t = Tree::new(&["rw0", "rw1"]);
        t.dir("rw1", "d");
        let cfg = Config {
            create: CreateMode::Top,
            ..Config::default()
        };
        let u = t.union_cfg(FormatChoice::Wh, &[Mode::Rw, Mode::Rw], cfg);
        let d = lookup_path(&u, "d");
        u.create(
            &d,
            os("f"),
            0o600,
            NewKind::File {
                flags: libc::O_RDWR,
            },
            caller(),
        )
        .unwrap();
        assert!(t.path("rw0").join("d/f").exists());
        assert!(!t.path("rw1").join("d/f").exists());
    }

    #[test]
    fn no_rw_branch_is_erofs_and_existing_is_eexist() {
        let t = Tree::new(&["ro"]);
        t.file("ro", "x", "1");
        let u = t.union_modes(FormatChoice::Wh, &[Mode::Ro]);
        let root = u.root().unwrap();
        let e = u
            .create(&root, os("n"), 0o644, NewKind::Dir, caller())
            .unwrap_err();
        assert_eq!(e.errno(), libc::EROFS);
        let e = u
            .create(&root, os("x"), 0o644, NewKind::Dir, caller())
            .unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
    }

    #[test]
    fn mkdir_over_a_whiteout_is_opaque() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("ro", "d");
            t.file("ro", "d/old", "x");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            let d = lookup_path(&u, "d");
            u.unlink(&d, os("old")).unwrap();
            u.rmdir(&root, os("d")).unwrap();
            let (d, _) = u
                .create(&root, os("d"), 0o755, NewKind::Dir, caller())
                .unwrap();
            assert_eq!(d.layers.as_slice(), &[0], "{fmt:?}: opaque stops the merge");
            assert!(u.readdir(&d).unwrap().is_empty());
        }
    }

    #[test]
    fn wh_names_are_reserved() {
        let t = Tree::new(&["rw"]);
        let u = t.union(FormatChoice::Wh);
        let root = u.root().unwrap();
        let e = u
            .create(&root, os(".wh.x"), 0o644, NewKind::Dir, caller())
            .unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
    }

    #[test]
    fn setgid_parent_group_is_inherited() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let t = Tree::new(&["rw"]);
        t.dir("rw", "g");
        std::os::unix::fs::chown(t.path("rw").join("g"), Some(0), Some(4242)).unwrap();
        std::fs::set_permissions(
            t.path("rw").join("g"),
            std::os::unix::fs::PermissionsExt::from_mode(0o2775),
        )
        .unwrap();
        let u = t.union(FormatChoice::Wh);
        let g = lookup_path(&u, "g");
        let who = super::Caller {
            uid: 1000,
            gid: 1000,
        };
        u.create(
            &g,
            os("f"),
            0o644,
            NewKind::File {
                flags: libc::O_WRONLY,
            },
            who,
        )
        .unwrap();
        u.create(&g, os("sub"), 0o755, NewKind::Dir, who).unwrap();
        let f = std::fs::metadata(t.path("rw").join("g/f")).unwrap();
        assert_eq!((f.uid(), f.gid()), (1000, 4242));
        let s = std::fs::metadata(t.path("rw").join("g/sub")).unwrap();
        assert_eq!((s.uid(), s.gid()), (1000, 4242));
        assert_ne!(s.mode() & libc::S_ISGID, 0, "subdirectory inherits setgid");
    }
}

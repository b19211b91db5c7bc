//! rename(2) across the union, for files and for directories (merged, lower-only or
//! upper), with `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.
//!
//! Both names end up in one rw branch: the source is copied up (a directory with its
//! whole merged tree, so no `EXDEV`), renamed inside that branch, and the old name is
//! then hidden as a delete would. A renamed directory stays opaque only where a lower
//! branch still has something at its new name.

use std::ffi::OsStr;
use std::os::fd::AsFd;

use super::error::{errno, IoContext, Result};
use super::lookup::{is_hidden_name, lookup_in};
use super::{sys, CoreError, Obj, Union};

/// `renameat2` flags the union understands.
pub const RENAME_NOREPLACE: u32 = sys::RENAME_NOREPLACE;
/// Atomically exchange the two names.
pub const RENAME_EXCHANGE: u32 = sys::RENAME_EXCHANGE;

impl Union {
    /// Renames `parent/name` to `new_parent/new_name`.
    pub fn rename(
        &self,
        parent: &Obj,
        name: &OsStr,
        new_parent: &Obj,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let stack = self.stack();
        let path = parent.path.join(name);
        let new_path = new_parent.path.join(new_name);
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(errno("rename", &path, libc::EINVAL));
        }
        if super::meta::is_pinned(&stack, &parent.path, name)
            || super::meta::is_pinned(&stack, &new_parent.path, new_name)
        {
            return Err(errno("rename", &path, libc::EBUSY));
        }
        if is_hidden_name(&stack, &new_parent.path, new_name) {
            return Err(CoreError::Reserved {
                op: "rename",
                path: new_path,
            });
        }
        let src = lookup_in(&stack, parent, name)?.ok_or_else(|| CoreError::NotFound {
            op: "rename",
            path: path.clone(),
        })?;
        let dst = lookup_in(&stack, new_parent, new_name)?;
        if new_path.starts_with(&path) && new_path != path && src.is_dir() {
            return Err(errno("rename", &path, libc::EINVAL));
        }
        if let Some(d) = &dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(errno("rename", &new_path, libc::EEXIST));
            }
            if d.ino == src.ino && flags & RENAME_EXCHANGE == 0 {
                // Two names of one inode: POSIX says do nothing.
                return Ok(());
            }
            if flags & RENAME_EXCHANGE == 0 {
                match (src.is_dir(), d.is_dir()) {
                    (true, false) => return Err(errno("rename", &new_path, libc::ENOTDIR)),
                    (false, true) => return Err(errno("rename", &new_path, libc::EISDIR)),
                    (true, true) if !self.is_empty_dir(d)? => {
                        return Err(errno("rename", &new_path, libc::ENOTEMPTY))
                    }
                    _ => {}
                }
            }
        } else if flags & RENAME_EXCHANGE != 0 {
            return Err(CoreError::NotFound {
                op: "rename",
                path: new_path,
            });
        }
        if path == new_path {
            return Ok(());
        }

        // The branch both names will live in.
        let src_t = self
            .write_target(&stack, src.top())
            .ok_or_else(|| CoreError::ReadOnly {
                op: "rename",
                path: path.clone(),
            })?;
        let dst_t = match &dst {
            Some(d) => self.write_target(&stack, d.top()),
            None => self.create_target(&stack, new_parent).ok(),
        }
        .ok_or_else(|| CoreError::ReadOnly {
            op: "rename",
            path: new_path.clone(),
        })?;
        let target = src_t.min(dst_t);

        self.dirs_changed();
        let src_up = self.bring_up(&src, target)?;
        if src.is_dir() || dst.as_ref().is_some_and(|d| d.is_dir()) {
            stack.bump_layers();
        }
        let dst_up = match (&dst, flags & RENAME_EXCHANGE != 0) {
            (Some(d), true) => Some(self.bring_up(d, target)?),
            _ => None,
        };
        let sdir = self.ensure_parents(&stack, target, &parent.path)?;
        let ddir = self.ensure_parents(&stack, target, &new_parent.path)?;
        // A lower hard link replaced by the rename loses that name for good.
        if let (Some(d), 0) = (&dst, flags & RENAME_EXCHANGE) {
            if !d.is_dir() && (d.indexed.is_some() || !stack.is_rw(d.top())) {
                self.index_before_delete(&stack, d, target)?;
            }
        }

        if flags & RENAME_EXCHANGE != 0 {
            sys::renameat2(sdir.as_fd(), name, ddir.as_fd(), new_name, RENAME_EXCHANGE)
                .ctx("rename", &path)?;
            for (p, n, was) in [
                (new_parent, new_name, &src_up),
                (parent, name, dst_up.as_ref().unwrap_or(&src_up)),
            ] {
                if was.is_dir() {
                    self.fix_opaque(p, n, target)?;
                }
            }
            return Ok(());
        }

        // Clear what the destination holds in the target branch (an empty merged
        // directory may still hold whiteouts there; an overlay whiteout is an entry).
        if let Some(st) = sys::stat_opt(ddir.as_fd(), new_name).ctx("rename", &new_path)? {
            if stack
                .format
                .is_whiteout(ddir.as_fd(), new_name, Some(&st))
                .ctx("rename", &new_path)?
            {
                if src.is_dir() {
                    sys::unlinkat(ddir.as_fd(), new_name, false).ctx("rename", &new_path)?;
                }
            } else if sys::is_dir(&st) {
                let sub = sys::open_dir_path(ddir.as_fd(), std::path::Path::new(new_name))
                    .ctx("rename", &new_path)?;
                super::branch::clear_dir(sub.as_fd()).ctx("rename", &new_path)?;
            }
        } else {
            stack
                .format
                .remove_whiteout(ddir.as_fd(), new_name)
                .ctx("rename", &new_path)?;
        }
        sys::renameat2(sdir.as_fd(), name, ddir.as_fd(), new_name, 0).ctx("rename", &path)?;
        if stack.format == super::WhiteoutFormat::Meta {
            super::meta::unhide(&stack, target, &new_path, src.is_dir())
                .ctx("rename", &new_path)?;
        }
        // Other copies of the destination in rw branches above the target would shadow
        // the result; lower ones are hidden by it. Then hide the old name.
        if let Some(d) = &dst {
            if d.top() < target {
                return Err(errno("rename", &new_path, libc::EXDEV));
            }
        }
        if src.is_dir() {
            self.fix_opaque(new_parent, new_name, target)?;
        }
        let format = stack.format;
        let stack = self.stack();
        if let Some(left) = lookup_in(&stack, parent, name)? {
            let dir = self.dir_cursor_on(
                parent,
                std::sync::Arc::new(super::DirFds::new(&stack, parent)),
            );
            self.hide_name(&dir, name, &left, "rename", false)?;
        }
        // Markers inside a moved merged tree hide nothing any more (the tree is opaque or
        // has nothing below it); dropping them only makes the upper equal kernel
        // overlayfs's, so a failure (a 0555 directory, no user xattrs) is not the rename's.
        if src.is_dir()
            && (src.layers.len() > 1 || src.top() != target)
            && format != super::WhiteoutFormat::Meta
        {
            let dropped = sys::open_dir_path(ddir.as_fd(), std::path::Path::new(new_name))
                .and_then(|moved| drop_stale_markers(format, moved.as_fd(), true));
            if let Err(e) = dropped {
                tracing::debug!(path = %new_path.display(), error = %e, "stale markers left in a moved directory");
            }
        }
        let _ = src_up;
        Ok(())
    }

    /// Copies an object fully into `target` (a directory with its merged tree).
    fn bring_up(&self, obj: &Obj, target: u16) -> Result<Obj> {
        if obj.is_dir() {
            if obj.layers.len() == 1 && obj.top() == target {
                return Ok(obj.clone());
            }
            let up = self.copy_tree_up(obj)?;
            if up.top() != target {
                return Err(errno("rename", &obj.path, libc::EXDEV));
            }
            Ok(up)
        } else {
            self.copy_up_to(obj, target)
        }
    }

    /// A directory that now holds its whole tree in `target` must hide what lower
    /// branches have at its (new) name.
    fn fix_opaque(&self, parent: &Obj, name: &OsStr, target: u16) -> Result<()> {
        let stack = self.stack();
        let path = parent.path.join(name);
        let lower_has = parent.layers.iter().filter(|&&b| b > target).any(|&b| {
            super::parent_fd(&stack, b, &parent.path)
                .ok()
                .and_then(|d| {
                    sys::stat_opt(d.as_fd(), name)
                        .ok()
                        .flatten()
                        .map(|_| ())
                        .or_else(|| {
                            stack
                                .format
                                .is_whiteout(d.as_fd(), name, None)
                                .ok()
                                .filter(|w| *w)
                                .map(|_| ())
                        })
                })
                .is_some()
        });
        // A directory moved into a merged parent must not merge with what a lower branch
        // has (or later gets) under its new name: overlayfs marks it opaque too.
        let lower_has = lower_has || parent.layers.iter().any(|&l| l != target);
        let dir = self.ensure_parents(&stack, target, &parent.path)?;
        // An opaque marker the directory already had travels with it (as in a plain
        // rename on overlayfs); one is added only where something lower must be hidden.
        if lower_has && stack.format == super::WhiteoutFormat::Meta {
            super::meta::hide(&stack, target, &path, true).ctx("rename", &path)
        } else if lower_has {
            stack
                .format
                .set_opaque(dir.as_fd(), name)
                .ctx("rename", &path)
        } else {
            Ok(())
        }
    }
}

/// A merged tree moved where nothing lower shows through it (its new name has nothing
/// below, or it is opaque now): the whiteouts and opaque markers inside it, which hid
/// lower entries at its old place, hide nothing any more. Drops them, so the layout is
/// the one kernel overlayfs leaves after `mv` (which copies the tree afresh).
fn drop_stale_markers(
    format: super::WhiteoutFormat,
    dir: std::os::fd::BorrowedFd<'_>,
    top: bool,
) -> std::io::Result<()> {
    use super::whiteout::EntryMeaning;
    let before = sys::fstat(dir)?;
    let list = sys::open_beneath(
        dir,
        std::path::Path::new(""),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    let mut changed = false;
    for e in sys::read_dir_fd(&list)? {
        match format.classify(dir, &e.name, e.d_type)? {
            // The moved directory's own opaque marker (`wh`) stays: `fix_opaque` decided it.
            EntryMeaning::Private if top => {}
            EntryMeaning::Whiteout(_) | EntryMeaning::Private => {
                sys::unlinkat(dir, &e.name, false)?;
                changed = true;
            }
            EntryMeaning::Real => {
                let is_dir = match e.d_type {
                    libc::DT_DIR => true,
                    libc::DT_UNKNOWN => {
                        sys::stat_opt(dir, &e.name)?.is_some_and(|st| sys::is_dir(&st))
                    }
                    _ => false,
                };
                if is_dir {
                    if matches!(format, super::WhiteoutFormat::Overlay { .. })
                        && format.is_opaque(dir, &e.name)?
                    {
                        format.clear_opaque(dir, &e.name)?;
                    }
                    let sub = sys::open_dir_path(dir, std::path::Path::new(&e.name))?;
                    drop_stale_markers(format, sub.as_fd(), false)?;
                }
            }
        }
    }
    if changed {
        super::copyup::restore_times(dir, &before);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::FormatChoice;

    #[test]
    fn renaming_a_lower_file_copies_it_up_and_hides_the_old_name() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.file("ro", "a", "data");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            let ino = lookup_path(&u, "a").ino;
            u.rename(&root, os("a"), &root, os("b"), 0).unwrap();
            assert!(try_lookup(&u, "a").is_none());
            let b = lookup_path(&u, "b");
            assert_eq!(read(&u, &b), "data");
            assert_eq!(b.ino, ino, "{fmt:?}: st_ino survives the rename");
            assert!(t.path("ro").join("a").exists());
        }
    }

    #[test]
    fn renaming_a_merged_directory_moves_the_whole_tree() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("ro", "d/sub");
            t.file("ro", "d/sub/deep", "deep");
            t.file("ro", "d/low", "low");
            t.dir("rw", "d");
            t.file("rw", "d/up", "up");
            t.file("ro", "d/sub/gone", "x");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            u.unlink(&lookup_path(&u, "d/sub"), os("gone")).unwrap();
            u.rename(&root, os("d"), &root, os("e"), 0).unwrap();
            // Nothing lower is left for the whiteout of `gone` to hide at its new place.
            let mut inside: Vec<String> = std::fs::read_dir(t.path("rw").join("e/sub"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            inside.sort();
            assert_eq!(inside, vec!["deep"], "{fmt:?}");
            assert!(try_lookup(&u, "e/sub/gone").is_none());
            assert!(try_lookup(&u, "d").is_none());
            let e = lookup_path(&u, "e");
            assert_eq!(names(&u.readdir(&e).unwrap()), vec!["low", "sub", "up"]);
            assert_eq!(read(&u, &lookup_path(&u, "e/sub/deep")), "deep");
            assert!(t.path("ro").join("d/sub/deep").exists());
        }
    }

    #[test]
    fn a_marker_that_cannot_be_dropped_does_not_undo_the_rename() {
        if !require_root("chattr +i") {
            return;
        }
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("ro", "d/sub");
            t.file("ro", "d/sub/gone", "x");
            t.file("ro", "d/low", "low");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            u.unlink(&lookup_path(&u, "d/sub"), os("gone")).unwrap();
            // An immutable directory refuses the whiteout's removal, even to root.
            let chattr = |flag: &str, rel: &str| {
                let dir = t.path("rw").join(rel);
                let ok = std::process::Command::new("chattr")
                    .arg(flag)
                    .arg(&dir)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chattr {flag} {}", dir.display());
            };
            chattr("+i", "d/sub");
            let renamed = u.rename(&root, os("d"), &root, os("e"), 0);
            // Wherever the directory ended up, it must not stay immutable (the temp dir).
            for rel in ["e/sub", "d/sub"] {
                if t.path("rw").join(rel).exists() {
                    chattr("-i", rel);
                }
            }
            renamed.unwrap();
            assert!(
                try_lookup(&u, "d").is_none(),
                "{fmt:?}: the old name stays hidden"
            );
            assert!(try_lookup(&u, "d/low").is_none());
            assert!(try_lookup(&u, "e/sub/gone").is_none());
            assert_eq!(read(&u, &lookup_path(&u, "e/low")), "low");
        }
    }

    #[test]
    fn noreplace_and_exchange() {
        let t = Tree::new(&["rw", "ro"]);
        t.file("ro", "a", "A");
        t.file("rw", "b", "B");
        let u = t.union(FormatChoice::Wh);
        let root = u.root().unwrap();
        let e = u
            .rename(&root, os("a"), &root, os("b"), super::RENAME_NOREPLACE)
            .unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
        u.rename(&root, os("a"), &root, os("b"), super::RENAME_EXCHANGE)
            .unwrap();
        assert_eq!(read(&u, &lookup_path(&u, "a")), "B");
        assert_eq!(read(&u, &lookup_path(&u, "b")), "A");
    }

    #[test]
    fn a_directory_cannot_move_into_itself_or_over_a_nonempty_one() {
        let t = Tree::new(&["rw"]);
        t.dir("rw", "d/inner");
        t.dir("rw", "full/x");
        let u = t.union(FormatChoice::Wh);
        let root = u.root().unwrap();
        let d = lookup_path(&u, "d");
        assert_eq!(
            u.rename(&root, os("d"), &d, os("me"), 0)
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
        assert_eq!(
            u.rename(&root, os("d"), &root, os("full"), 0)
                .unwrap_err()
                .errno(),
            libc::ENOTEMPTY
        );
    }
}

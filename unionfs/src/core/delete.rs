//! unlink and rmdir under the three delete modes (`all`, `whiteout`, `first`).
//!
//! Emptiness for rmdir is judged on the merged view; a directory holding only whiteouts
//! counts as empty and its whiteouts go with it. Where a whiteout must replace an entry
//! in the same rw branch, `RENAME_WHITEOUT` does both in one step (as overlayfs does),
//! with a two-step fallback where the kernel refuses it.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::error::{errno, IoContext, Result};
use super::lookup::lookup_with;
use super::{parent_fd, sys, CoreError, DeleteMode, Obj, Stack, Union, WhiteoutFormat};
use super::{DirCursor, DirFds};

const RENAME_WHITEOUT: u32 = 4;

impl Union {
    /// Removes the non-directory `name` from `parent`; returns what it was.
    pub fn unlink(&self, parent: &Obj, name: &OsStr) -> Result<Obj> {
        self.remove(&self.dir_cursor(parent), name, false)
    }

    /// Removes the empty directory `name` from `parent`; returns what it was.
    pub fn rmdir(&self, parent: &Obj, name: &OsStr) -> Result<Obj> {
        self.remove(&self.dir_cursor(parent), name, true)
    }

    /// [`Union::unlink`] in the directory of a cursor (on its branch fds).
    pub fn unlink_in(&self, dir: &DirCursor, name: &OsStr) -> Result<Obj> {
        self.remove(dir, name, false)
    }

    /// [`Union::rmdir`] in the directory of a cursor (on its branch fds).
    pub fn rmdir_in(&self, dir: &DirCursor, name: &OsStr) -> Result<Obj> {
        self.remove(dir, name, true)
    }

    fn remove(&self, dir: &DirCursor, name: &OsStr, want_dir: bool) -> Result<Obj> {
        let op = if want_dir { "rmdir" } else { "unlink" };
        let (stack, parent, fds) = dir.parts();
        let path = parent.path.join(name);
        let obj = lookup_with(stack, parent, name, fds)?.ok_or_else(|| CoreError::NotFound {
            op,
            path: path.clone(),
        })?;
        match (want_dir, obj.is_dir()) {
            (true, false) => return Err(errno(op, &path, libc::ENOTDIR)),
            (false, true) => return Err(errno(op, &path, libc::EISDIR)),
            _ => {}
        }
        if super::meta::is_pinned(stack, &parent.path, name) {
            return Err(errno(op, &path, libc::EBUSY));
        }
        if want_dir && !self.is_empty_dir(&obj)? {
            return Err(errno(op, &path, libc::ENOTEMPTY));
        }
        self.hide_name(dir, name, &obj, op, true)?;
        if want_dir {
            // The directory is gone (the adapter drops its cached fds); no other
            // directory's layers changed, so nothing else is stale.
            self.subdirs_changed(&parent.path, -1);
        }
        Ok(obj)
    }

    /// Makes `name` (the object `obj`) disappear from the cursor's directory per the
    /// delete mode.
    /// `last_lower_name`: the name is going away for good (unlink), not moving (rename,
    /// whose copy-up already took the name off a hard link's lower count).
    pub(crate) fn hide_name(
        &self,
        dir: &DirCursor,
        name: &OsStr,
        obj: &Obj,
        op: &'static str,
        last_lower_name: bool,
    ) -> Result<()> {
        let (stack, parent, fds) = dir.parts();
        let path = parent.path.join(name);
        let (chain, cut) = instances(stack, parent, fds, name).ctx(op, &path)?;
        let top = *chain.first().ok_or_else(|| CoreError::NotFound {
            op,
            path: path.clone(),
        })?;
        // Plan first, so that a refusal changes nothing.
        let (remove, remaining): (Vec<u16>, Option<u16>) = match self.config.delete {
            DeleteMode::All => {
                // Copies below an opaque directory are hidden contents, never removed.
                let rw: Vec<u16> = chain[..cut]
                    .iter()
                    .copied()
                    .filter(|&b| stack.is_rw(b))
                    .collect();
                let rest = chain.iter().copied().find(|b| !rw.contains(b));
                (rw, rest)
            }
            DeleteMode::Whiteout => {
                if stack.is_rw(top) {
                    (vec![top], chain.get(1).copied())
                } else {
                    (vec![], Some(top))
                }
            }
            DeleteMode::First => {
                if !stack.is_rw(top) {
                    return Err(CoreError::ReadOnly { op, path });
                }
                (vec![top], None)
            }
        };
        // Where the whiteout goes: the topmost rw branch above what would still show.
        let wh_at = match remaining {
            None => None,
            Some(r) => Some(
                self.write_target(stack, r)
                    .filter(|&w| w < r)
                    .or_else(|| (0..r).find(|&i| stack.is_rw(i)))
                    .ok_or_else(|| CoreError::ReadOnly {
                        op,
                        path: path.clone(),
                    })?,
            ),
        };
        // Without copy-up there are no whiteouts: a name a lower branch still shows stays.
        if wh_at.is_some() && !self.config.copy_up {
            return Err(CoreError::ReadOnly { op, path });
        }
        // A lower hard link about to be hidden: give its inode an index entry first, so
        // its other names keep an exact link count.
        if let (Some(w), false, true) = (wh_at, obj.is_dir(), last_lower_name) {
            if remaining.is_some_and(|r| !stack.is_rw(r)) && chain.first() == remaining.as_ref() {
                self.index_before_delete(stack, obj, w)?;
            }
        }
        if stack.format == super::WhiteoutFormat::Meta {
            // Markers live in the meta tree: no parent directory needs copying up.
            for b in remove {
                let dir = parent_fd(stack, b, &parent.path).ctx(op, &path)?;
                remove_entry(dir.as_fd(), name).ctx(op, &path)?;
            }
            if let Some(w) = wh_at {
                super::meta::hide(stack, w, &path, obj.is_dir()).ctx(op, &path)?;
            }
            return Ok(());
        }
        for b in remove {
            let dir = parent_fd(stack, b, &parent.path).ctx(op, &path)?;
            if Some(b) == wh_at {
                replace_with_whiteout(stack, b, dir.as_fd(), name).ctx(op, &path)?;
            } else {
                remove_entry(dir.as_fd(), name).ctx(op, &path)?;
            }
        }
        if let Some(w) = wh_at {
            let dir = self.ensure_parents(stack, w, &parent.path)?;
            let st = sys::stat_opt(dir.as_fd(), name).ctx(op, &path)?;
            if !stack
                .format
                .is_whiteout(dir.as_fd(), name, st.as_ref())
                .ctx(op, &path)?
            {
                if st.is_some() {
                    remove_entry(dir.as_fd(), name).ctx(op, &path)?;
                }
                make_whiteout(stack, w, dir.as_fd(), name).ctx(op, &path)?;
            }
        }
        Ok(())
    }
}

/// The branches where `name` in `parent` is present and not hidden from above, top first.
/// The second value counts the leading instances that are not below an opaque copy of
/// the same directory (what a delete may touch); the rest still decide whether the name
/// shows once the upper ones are gone.
pub(crate) fn instances(
    stack: &Stack,
    parent: &Obj,
    fds: &DirFds,
    name: &OsStr,
) -> std::io::Result<(Vec<u16>, usize)> {
    let mut out = Vec::new();
    let mut cut = None;
    let n = parent.layers.len();
    let meta_cut = if stack.format == super::WhiteoutFormat::Meta {
        super::meta::cut(stack, &parent.path.join(name))?
    } else {
        None
    };
    for (pos, &b) in parent.layers.iter().enumerate() {
        if meta_cut.is_some_and(|c| b > c) {
            break;
        }
        let Some(dir) = fds.get(stack, pos, b, &parent.path)? else {
            continue;
        };
        let st = sys::stat_opt(dir, name)?;
        let foreign = !stack.is_rw(b);
        if stack
            .format
            .is_whiteout_in(dir, name, st.as_ref(), foreign)?
        {
            break;
        }
        let Some(st) = st else { continue };
        out.push(b);
        if cut.is_none() && meta_cut == Some(b) {
            cut = Some(out.len());
        }
        if cut.is_none()
            && sys::is_dir(&st)
            && pos + 1 < n
            && stack.format.is_opaque_in(dir, name, foreign)?
        {
            cut = Some(out.len());
        }
    }
    let cut = cut.unwrap_or(out.len());
    Ok((out, cut))
}

/// Removes an entry of a rw branch; a directory may still hold whiteouts and markers.
fn remove_entry(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    let st = sys::fstatat(dir, name)?;
    if sys::is_dir(&st) {
        let sub = sys::open_dir_path(dir, Path::new(name))?;
        super::branch::clear_dir(sub.as_fd())?;
        sys::unlinkat(dir, name, true)
    } else {
        sys::unlinkat(dir, name, false)
    }
}

/// Writes a whiteout for `name` (absent) in `dir`, on rw branch `b`: in the overlay
/// format a hard link of the branch's shared whiteout inode where the filesystem allows.
fn make_whiteout(stack: &Stack, b: u16, dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    if let (WhiteoutFormat::Overlay { .. }, Some(work)) =
        (stack.format, stack.branch(b).work.as_ref())
    {
        if work.link_whiteout(dir, name)? {
            return Ok(());
        }
    }
    stack.format.make_whiteout(dir, name)
}

/// Replaces `name` in `dir` (on rw branch `b`) by a whiteout in one step where possible:
/// a whiteout made in the work directory is exchanged with the entry, which then goes
/// (overlayfs does the same); `RENAME_WHITEOUT`, or two steps, where that is refused.
fn replace_with_whiteout(
    stack: &Stack,
    b: u16,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> std::io::Result<()> {
    let overlay = matches!(stack.format, WhiteoutFormat::Overlay { .. });
    if let (true, Some(work)) = (overlay, stack.branch(b).work.as_ref()) {
        let tmp = OsString::from(work.temp_name());
        if work.link_whiteout(work.tmp.as_fd(), &tmp)? {
            match sys::renameat2(work.tmp.as_fd(), &tmp, dir, name, sys::RENAME_EXCHANGE) {
                Ok(()) => return super::branch::remove_tree(work.tmp.as_fd(), &tmp),
                Err(e) => {
                    let _ = sys::unlinkat(work.tmp.as_fd(), &tmp, false);
                    if !refused(&e) {
                        return Err(e);
                    }
                }
            }
        }
        match sys::renameat2(dir, name, work.tmp.as_fd(), &tmp, RENAME_WHITEOUT) {
            Ok(()) => return super::branch::remove_tree(work.tmp.as_fd(), &tmp),
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e),
        }
    }
    remove_entry(dir, name)?;
    make_whiteout(stack, b, dir, name)
}

/// Whether a rename flag was refused by the filesystem (rather than the rename failing).
fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::EACCES)
    )
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Config, DeleteMode, FormatChoice, Mode};

    fn setup(fmt: FormatChoice, mode: DeleteMode) -> (Tree, super::Union) {
        let t = Tree::new(&["rw", "rw2", "ro"]);
        t.file("rw", "f", "top");
        t.file("rw2", "f", "middle");
        t.file("ro", "f", "bottom");
        let cfg = Config {
            delete: mode,
            ..Config::default()
        };
        let u = t.union_cfg(fmt, &[Mode::Rw, Mode::Rw, Mode::Ro], cfg);
        (t, u)
    }

    #[test]
    fn delete_all_removes_every_rw_copy_and_whiteouts_the_rest() {
        for fmt in formats() {
            let (t, u) = setup(fmt, DeleteMode::All);
            u.unlink(&u.root().unwrap(), os("f")).unwrap();
            assert!(try_lookup(&u, "f").is_none());
            assert!(!t.path("rw2").join("f").exists());
            assert!(t.path("ro").join("f").exists(), "ro branch untouched");
        }
    }

    #[test]
    fn delete_whiteout_keeps_lower_copies() {
        for fmt in formats() {
            let (t, u) = setup(fmt, DeleteMode::Whiteout);
            u.unlink(&u.root().unwrap(), os("f")).unwrap();
            assert!(try_lookup(&u, "f").is_none());
            assert_eq!(
                std::fs::read_to_string(t.path("rw2").join("f")).unwrap(),
                "middle"
            );
        }
    }

    #[test]
    fn delete_first_reveals_the_previous_version() {
        for fmt in formats() {
            let (_t, u) = setup(fmt, DeleteMode::First);
            let root = u.root().unwrap();
            u.unlink(&root, os("f")).unwrap();
            assert_eq!(read(&u, &lookup_path(&u, "f")), "middle");
            u.unlink(&root, os("f")).unwrap();
            assert_eq!(read(&u, &lookup_path(&u, "f")), "bottom");
            assert_eq!(u.unlink(&root, os("f")).unwrap_err().errno(), libc::EROFS);
        }
    }

    #[test]
    fn overlay_whiteouts_are_links_of_one_inode() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !formats().contains(&FormatChoice::Overlay) {
            return;
        }
        let t = Tree::new(&["rw", "ro"]);
        for n in ["a", "b", "both"] {
            t.file("ro", n, "lower");
        }
        t.file("rw", "both", "upper");
        t.dir("ro", "d");
        t.dir("rw", "merged");
        t.dir("ro", "merged");
        // Whatever an earlier mount left under the shared whiteout's name is replaced.
        let work = t.path("rw").join(super::super::branch::HIDDEN_WORK_NAME);
        std::fs::create_dir(&work).unwrap();
        std::fs::write(work.join("whiteout"), "left").unwrap();
        let u = t.union(FormatChoice::Overlay);
        let made = std::fs::symlink_metadata(work.join("whiteout")).unwrap();
        assert!(
            made.file_type().is_char_device() && made.rdev() == 0,
            "the mount's probe made the shared whiteout"
        );
        let root = u.root().unwrap();
        u.unlink(&root, os("a")).unwrap();
        u.unlink(&root, os("b")).unwrap();
        // An entry of the rw branch itself is exchanged for a whiteout.
        u.unlink(&root, os("both")).unwrap();
        u.rmdir(&root, os("d")).unwrap();
        u.rmdir(&root, os("merged")).unwrap();
        let ids: Vec<u64> = ["a", "b", "both", "d", "merged"]
            .iter()
            .map(|n| {
                let m = std::fs::symlink_metadata(t.path("rw").join(n)).unwrap();
                assert!(
                    m.file_type().is_char_device() && m.rdev() == 0,
                    "{n}: a whiteout"
                );
                m.ino()
            })
            .collect();
        assert!(ids.iter().all(|&i| i == ids[0]), "one inode: {ids:?}");
        for n in ["a", "b", "both", "d", "merged"] {
            assert!(try_lookup(&u, n).is_none(), "{n} hidden");
        }
        // That inode is the one the mount's format probe made, in the work directory.
        let shared = std::fs::symlink_metadata(work.join("whiteout")).unwrap();
        assert_eq!(
            shared.ino(),
            ids[0],
            "the probe's device is the shared whiteout"
        );
        assert_eq!(
            std::fs::read_dir(work.join("tmp")).unwrap().count(),
            0,
            "tmp stays empty"
        );
        // A name made again where a linked whiteout stood is an ordinary new file.
        std::fs::remove_file(t.path("rw").join("a")).unwrap();
        t.file("rw", "a", "new");
        assert_eq!(read(&u, &lookup_path(&u, "a")), "new");
        assert!(try_lookup(&u, "b").is_none());
    }

    #[test]
    fn rmdir_judges_the_merged_view_and_drops_whiteouts() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("rw", "d");
            t.dir("ro", "d");
            t.file("ro", "d/x", "x");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            assert_eq!(
                u.rmdir(&root, os("d")).unwrap_err().errno(),
                libc::ENOTEMPTY
            );
            u.unlink(&lookup_path(&u, "d"), os("x")).unwrap();
            u.rmdir(&root, os("d")).unwrap();
            assert!(try_lookup(&u, "d").is_none());
            assert!(t.path("ro").join("d/x").exists());
            assert_eq!(u.rmdir(&root, os("d")).unwrap_err().errno(), libc::ENOENT);
        }
    }

    #[test]
    fn removing_an_opaque_directory_keeps_the_old_lower_one_hidden() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("ro", "d");
            t.file("ro", "d/old", "x");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            u.unlink(&lookup_path(&u, "d"), os("old")).unwrap();
            u.rmdir(&root, os("d")).unwrap();
            u.create(
                &root,
                os("d"),
                0o755,
                super::super::create::NewKind::Dir,
                caller(),
            )
            .unwrap();
            let root = u.root().unwrap();
            u.rmdir(&root, os("d")).unwrap();
            assert!(
                try_lookup(&u, "d").is_none(),
                "{fmt:?}: the lower d came back"
            );
            assert!(t.path("ro").join("d/old").exists());
        }
    }

    #[test]
    fn wrong_types_are_refused() {
        let t = Tree::new(&["rw"]);
        t.dir("rw", "d");
        t.file("rw", "f", "");
        let u = t.union(FormatChoice::Wh);
        let root = u.root().unwrap();
        assert_eq!(u.unlink(&root, os("d")).unwrap_err().errno(), libc::EISDIR);
        assert_eq!(u.rmdir(&root, os("f")).unwrap_err().errno(), libc::ENOTDIR);
    }

    #[test]
    fn deleting_from_a_read_only_union_is_erofs_and_changes_nothing() {
        let t = Tree::new(&["ro"]);
        t.file("ro", "f", "x");
        let u = t.union_modes(FormatChoice::Wh, &[Mode::Ro]);
        assert_eq!(
            u.unlink(&u.root().unwrap(), os("f")).unwrap_err().errno(),
            libc::EROFS
        );
        assert!(t.path("ro").join("f").exists());
    }
}

//! The hard-link index: a lower file with several names gets one copy in the work
//! directory's `index/` when its first name is copied up or deleted, so the other names
//! keep an exact link count (overlayfs `index=on` does the same); copy-ups of its other
//! names become links of that copy.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::copyup::{build_copy, restore_times, Data};
use super::error::{IoContext, Result};
use super::{inode, parent_fd, sys, Obj, Stack, Union};

/// Links the finished copy `tmp` into the hard-link index with its count of names still
/// lower. `false`: another name of the inode got there first (the copy is discarded).
pub(super) fn add_to_index(
    stack: &Stack,
    work: &super::branch::WorkDir,
    tmp: &OsStr,
    key: &str,
    lower_names: u64,
) -> std::io::Result<bool> {
    stack.write_nlink_lower(work.tmp.as_fd(), tmp, lower_names)?;
    let linked = work
        .index()
        .and_then(|ix| sys::linkat(work.tmp.as_fd(), tmp, ix, OsStr::new(key)));
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let _ = sys::unlinkat(work.tmp.as_fd(), tmp, false);
            Ok(false)
        }
        Err(e) => {
            let _ = sys::unlinkat(work.tmp.as_fd(), tmp, false);
            Err(e)
        }
    }
}

/// A lower name of an indexed inode becomes an upper link of the copy.
pub(super) fn link_up(
    stack: &Stack,
    work: &super::branch::WorkDir,
    key: &str,
    dst: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
) -> Result<()> {
    link_from_index(work, key, dst, name, rel)?;
    dec_nlink_lower(stack, work, key);
    Ok(())
}

impl Union {
    /// Before a lower name of a hard-linked file is deleted, its inode gets a copy in the
    /// index (without any upper name), so the remaining names keep an exact link count,
    /// as overlayfs with `index=on` does.
    pub(crate) fn index_before_delete(&self, stack: &Stack, obj: &Obj, target: u16) -> Result<()> {
        let rel = &obj.path;
        let Some(work) = stack.branch(target).work.as_ref() else {
            return Ok(());
        };
        if let Some((k, key)) = &obj.indexed {
            if *k == target {
                dec_nlink_lower(stack, work, key);
            }
            return Ok(());
        }
        // A fresh lookup's stat already says so (a node's slim object has no link count).
        if obj.st.st_nlink == 1 || obj.st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(());
        }
        let src = parent_fd(stack, obj.top(), obj.parent_path()).ctx("unlink", rel)?;
        let st = sys::fstatat(src.as_fd(), obj.name()).ctx("unlink", rel)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink < 2 {
            return Ok(());
        }
        let key = inode::index_key(obj.ino);
        if work.indexed(&key).ctx("unlink", rel)?.is_some() {
            dec_nlink_lower(stack, work, &key);
            return Ok(());
        }
        let tmp = OsString::from(work.temp_name());
        let data_dir = if obj.is_metacopy() {
            Some(parent_fd(stack, obj.layers[1], obj.parent_path()).ctx("unlink", rel)?)
        } else {
            None
        };
        let built = build_copy(
            stack,
            src.as_fd(),
            obj.name(),
            &st,
            (work.tmp.as_fd(), &tmp, false),
            Data::Full,
            data_dir.as_ref().map(|d| d.as_fd()),
        )
        .map(|()| stack.write_origin(work.tmp.as_fd(), &tmp, obj.ino))
        .ctx("unlink", rel);
        if let Err(e) = built {
            let _ = sys::unlinkat(work.tmp.as_fd(), &tmp, false);
            return Err(e);
        }
        // All lower names but the one being deleted still lead to it.
        if !add_to_index(stack, work, &tmp, &key, st.st_nlink - 1).ctx("unlink", rel)? {
            dec_nlink_lower(stack, work, &key);
            return Ok(());
        }
        sys::unlinkat(work.tmp.as_fd(), &tmp, false).ctx("unlink", rel)
    }
}

/// One lower name fewer leads to the indexed inode `key`.
fn dec_nlink_lower(stack: &Stack, work: &super::branch::WorkDir, key: &str) {
    if let Some(index) = work.index_if_made() {
        stack.dec_nlink_lower(index, OsStr::new(key));
    }
}

fn link_from_index(
    work: &super::branch::WorkDir,
    key: &str,
    dst: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
) -> Result<()> {
    let before = sys::fstat(dst).ok();
    let index = work.index().ctx("copy-up", rel)?;
    sys::linkat(index, OsStr::new(key), dst, name).ctx("copy-up", rel)?;
    if let Some(b) = before {
        restore_times(dst, &b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::copyup::Data;
    use super::super::testutil::*;

    #[test]
    fn the_hard_link_index_is_made_by_its_first_entry_and_found_by_the_next_mount() {
        let t = Tree::new(&["rw", "ro"]);
        t.file("ro", "a", "shared");
        t.file("ro", "single", "one");
        std::fs::hard_link(t.path("ro").join("a"), t.path("ro").join("b")).unwrap();
        let index = t
            .path("rw")
            .join(super::super::branch::HIDDEN_WORK_NAME)
            .join("index");
        let u = t.union(super::super::FormatChoice::Wh);
        assert!(!index.exists(), "a mount makes no index");
        assert!(lookup_path(&u, "b").indexed.is_none());
        u.copy_up(&lookup_path(&u, "single"), Data::Full).unwrap();
        assert!(!index.exists(), "a file with one name needs none");
        u.copy_up(&lookup_path(&u, "a"), Data::Full).unwrap();
        assert!(index.is_dir(), "made for the first multiply-linked copy-up");
        drop(u);
        let again = t.union(super::super::FormatChoice::Wh);
        let b = lookup_path(&again, "b");
        assert!(b.indexed.is_some(), "the next mount reads the index");
        assert_eq!(read(&again, &b), "shared");
    }
}

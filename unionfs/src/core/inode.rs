//! Inode numbers: unique within the mount, stable across copy-up, equal for hard links.
//!
//! - A directory's number is its bottom-most merged instance's (copy-up adds layers on
//!   top, so the number does not change when it is copied up); a directory copied up
//!   whole (renamed) carries an origin record like a file does.
//! - A non-directory on a ro branch has its own number; a copy on a rw branch carries an
//!   origin record (an xattr with the lower instance's device and inode) and reports that.
//! - Branches on different filesystems are told apart by putting the index of the
//!   device in the high bits, as overlayfs's `xino` does.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

use super::{sys, Stack, Stat};

const ORIGIN: &str = "origin";
const NLINK_LOWER: &str = "nlink_lower";

impl Stack {
    /// Maps a backing `(dev, ino)` to the union's number.
    pub(crate) fn map_ino(&self, dev: u64, ino: u64) -> u64 {
        let slot = self.devs.iter().position(|d| *d == dev).unwrap_or(0) as u64;
        let n = if slot == 0 { ino } else { ino ^ (slot << 48) };
        // 1 is the FUSE root id; 0 is invalid. Push either out of the way.
        if n <= 1 {
            n | (1 << 63)
        } else {
            n
        }
    }

    /// The union inode number recorded on a copy in a rw branch, if any.
    fn read_origin(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Option<u64> {
        let attr = format!("{}{}", self.format.record_prefix(), ORIGIN);
        let v = sys::getxattr(dir, name, OsStr::new(&attr)).ok()??;
        Some(u64::from_le_bytes(v.as_slice().try_into().ok()?))
    }

    /// Records the union inode number a copy stands for. Best effort: a symlink cannot
    /// carry a `user.` xattr, and then the copy simply reports its own number.
    pub(crate) fn write_origin(&self, dir: BorrowedFd<'_>, name: &OsStr, ino: u64) {
        let attr = format!("{}{}", self.format.record_prefix(), ORIGIN);
        let _ = sys::setxattr(dir, name, OsStr::new(&attr), &ino.to_le_bytes(), 0);
    }

    /// Records `ino` as the origin of `name` unless it already has one.
    pub(crate) fn ensure_origin(&self, dir: BorrowedFd<'_>, name: &OsStr, ino: u64) {
        if self.read_origin(dir, name).is_none() {
            self.write_origin(dir, name, ino);
        }
    }

    /// How many names of a copied-up hard-linked inode are still lower-only (recorded on
    /// the copy; `None`: not an indexed hard link).
    pub(crate) fn read_nlink_lower(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Option<u64> {
        let attr = format!("{}{}", self.format.record_prefix(), NLINK_LOWER);
        let v = sys::getxattr(dir, name, OsStr::new(&attr)).ok()??;
        Some(u64::from_le_bytes(v.as_slice().try_into().ok()?))
    }

    pub(crate) fn write_nlink_lower(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        n: u64,
    ) -> std::io::Result<()> {
        let attr = format!("{}{}", self.format.record_prefix(), NLINK_LOWER);
        sys::setxattr(dir, name, OsStr::new(&attr), &n.to_le_bytes(), 0)
    }

    /// One lower name of an indexed inode went away (copied up or deleted).
    pub(crate) fn dec_nlink_lower(&self, dir: BorrowedFd<'_>, name: &OsStr) {
        if let Some(n) = self.read_nlink_lower(dir, name) {
            let _ = self.write_nlink_lower(dir, name, n.saturating_sub(1));
        }
    }

    /// The link count the union shows for a non-directory instance: for a copied-up
    /// hard link, its upper names (without the index entry) plus the lower names that
    /// still lead to it, as overlayfs with `index=on` counts.
    pub(crate) fn union_nlink(&self, dir: BorrowedFd<'_>, name: &OsStr, st: &Stat) -> u64 {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink < 2 {
            return st.st_nlink;
        }
        match self.read_nlink_lower(dir, name) {
            Some(lower) => st.st_nlink - 1 + lower,
            None => st.st_nlink,
        }
    }

    /// The union inode number of an instance: its origin record, or its own.
    pub(crate) fn ino_of(&self, branch: u16, dir: BorrowedFd<'_>, name: &OsStr, st: &Stat) -> u64 {
        if self.branch(branch).is_rw() && self.branches.len() > 1 {
            if let Some(o) = self.read_origin(dir, name) {
                return o;
            }
        }
        self.map_ino(st.st_dev, st.st_ino)
    }
}

/// The hard-link index key of a lower inode.
pub(crate) fn index_key(ino: u64) -> String {
    format!("{ino:x}")
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn numbers_are_distinct_across_devices_and_never_root() {
        let t = Tree::new(&["rw", "ro"]);
        let s = t.stack(super::super::FormatChoice::Wh);
        assert_eq!(s.map_ino(s.devs[0], 1234), 1234);
        assert_ne!(s.map_ino(s.devs[0], 1), 1);
        assert_ne!(s.map_ino(s.devs[0], 0), 0);
    }
}

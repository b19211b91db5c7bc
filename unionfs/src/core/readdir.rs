//! Merged directory listing: each visible name once, from the highest branch holding
//! it; whiteouts and the format's private names never appear. The caller lists once
//! per open directory handle, which makes offsets stable.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::Path;

use super::error::{IoContext, Result};
use super::lookup::is_hidden_name;
use super::whiteout::EntryMeaning;
use super::{parent_fd, sys, DirCursor, Obj, Union};

/// One visible entry of a merged directory.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// The name.
    pub name: OsString,
    /// `DT_*` type from the branch that shows it (may be `DT_UNKNOWN`).
    pub d_type: u8,
    /// The branch it comes from.
    pub branch: u16,
    /// Its union inode number where the listing alone tells it: a non-directory of a
    /// read-only branch whose `d_ino` is `st_ino` (a lookup would find the same).
    pub ino: Option<u64>,
}

impl Union {
    /// Lists the directory `dir` as the union shows it.
    pub fn readdir(&self, dir: &Obj) -> Result<Vec<DirEntry>> {
        self.readdir_in(&self.dir_cursor(dir))
    }

    /// Lists the cursor's directory, opening it on the cursor's fds: lookups in it
    /// afterwards (readdirplus) use the fds the listing opened.
    pub fn readdir_in(&self, cursor: &DirCursor) -> Result<Vec<DirEntry>> {
        let (stack, dir, fds) = cursor.parts();
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        let meta = stack.format == super::WhiteoutFormat::Meta;
        // unionfs-fuse markers of every branch above a layer hide names in it, whether
        // or not that branch holds the directory.
        let mut meta_from = 0u16;
        for (pos, &b) in dir.layers.iter().enumerate() {
            if meta {
                for i in meta_from..b {
                    seen.extend(
                        super::meta::hidden_names(stack, i, &dir.path).ctx("readdir", &dir.path)?,
                    );
                }
                meta_from = b;
            }
            let bottom = pos + 1 == dir.layers.len();
            let Some(fd) = fds
                .listing_fd(stack, pos, b, &dir.path)
                .ctx("readdir", &dir.path)?
            else {
                continue;
            };
            let entries = match sys::read_dir_fd(&fd) {
                Ok(e) => e,
                // Removed from this branch (behind the union's back) since it was opened.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e).ctx("readdir", &dir.path),
            };
            let branch = stack.branch(b);
            // (A directory mounted over inside the branch is another filesystem.)
            let numbers_known = !branch.is_rw()
                && branch.dino_is_ino
                && sys::fstat(fd.as_fd()).is_ok_and(|st| st.st_dev == branch.dev);
            // Whiteouts of this branch hide lower names only, so apply them afterwards.
            let mut hidden_here = Vec::new();
            for e in entries {
                if is_hidden_name(stack, &dir.path, &e.name) && !is_wh_entry(stack, &e.name) {
                    continue;
                }
                if self.config.hide_meta_files && super::meta::is_meta_name(&dir.path, &e.name) {
                    continue;
                }
                if meta
                    && dir.path.as_os_str().is_empty()
                    && super::meta::only_our_work_dir(fd.as_fd(), &e.name)
                        .ctx("readdir", &dir.path)?
                {
                    // Shown once unionfs-fuse would have made it: at the first marker.
                    continue;
                }
                match stack
                    .format
                    .classify_in(fd.as_fd(), &e.name, e.d_type, !stack.is_rw(b))
                    .ctx("readdir", &dir.path)?
                {
                    EntryMeaning::Private => {}
                    EntryMeaning::Whiteout(n) => hidden_here.push(n),
                    EntryMeaning::Real => {
                        // The bottom layer's names need not be remembered: nothing
                        // below could repeat them (a single-layer listing hashes none).
                        let new = if bottom {
                            !seen.contains(&e.name)
                        } else {
                            seen.insert(e.name.clone())
                        };
                        if new {
                            let ino = (numbers_known
                                && !matches!(e.d_type, libc::DT_DIR | libc::DT_UNKNOWN))
                            .then(|| stack.map_ino(branch.dev, e.d_ino));
                            out.push(DirEntry {
                                name: e.name,
                                d_type: e.d_type,
                                branch: b,
                                ino,
                            });
                        }
                    }
                }
            }
            seen.extend(hidden_here);
        }
        Ok(out)
    }

    /// Whether the merged directory shows no entry at all.
    pub fn is_empty_dir(&self, dir: &Obj) -> Result<bool> {
        Ok(self.readdir(dir)?.is_empty())
    }

    /// The link count a merged directory reports: 2 plus its visible subdirectories.
    /// (A directory on one branch reports its own.)
    pub fn dir_nlink(&self, dir: &Obj) -> Result<u64> {
        use std::sync::atomic::Ordering::Acquire;
        let stack = self.stack();
        let key = (stack.floor(), self.dir_epoch.load(Acquire));
        if let Some(c) = self.nlink_cache.get(&dir.path) {
            if (c.0, c.1) == key {
                return Ok(c.2);
            }
        }
        let changes = self.subdir_changes.load(Acquire);
        let n = self.count_dir_nlink(&stack, dir)?;
        // A directory made or removed while counting may be missing from the count.
        if self.subdir_changes.load(Acquire) == changes {
            if self.nlink_cache.len() > 65536 {
                self.nlink_cache.clear();
            }
            self.nlink_cache.insert(dir.path.clone(), (key.0, key.1, n));
        }
        Ok(n)
    }

    /// A subdirectory was made (`+1`) or removed (`-1`) in the directory `parent`:
    /// its cached link count follows, without a recount.
    pub(crate) fn subdirs_changed(&self, parent: &Path, delta: i64) {
        self.subdir_changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(mut c) = self.nlink_cache.get_mut(parent) {
            c.2 = c.2.saturating_add_signed(delta).max(2);
        }
    }

    fn count_dir_nlink(&self, stack: &super::Stack, dir: &Obj) -> Result<u64> {
        let mut n = 2;
        for e in self.readdir(dir)? {
            let is_dir = match e.d_type {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => {
                    let p = parent_fd(stack, e.branch, &dir.path).ctx("readdir", &dir.path)?;
                    sys::stat_opt(p.as_fd(), &e.name)
                        .ctx("readdir", &dir.path)?
                        .is_some_and(|s| sys::is_dir(&s))
                }
                _ => false,
            };
            if is_dir {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// In the `wh` format `.wh.*` names are reserved but still must reach `classify`.
fn is_wh_entry(stack: &super::Stack, name: &OsStr) -> bool {
    stack.format == super::WhiteoutFormat::Wh && stack.format.is_reserved_name(name)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn merged_link_counts_follow_mkdir_and_rmdir_without_a_recount() {
        use crate::core::create::NewKind;
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("rw", "d");
            t.dir("ro", "d");
            t.dir("ro", "d/low1");
            t.dir("ro", "d/low2");
            t.dir("rw", "d/up");
            let u = t.union(fmt);
            let d = lookup_path(&u, "d");
            assert_eq!(u.dir_nlink(&d).unwrap(), 5, "{fmt:?}");
            u.create(&d, os("new"), 0o755, NewKind::Dir, caller())
                .unwrap();
            u.rmdir(&lookup_path(&u, "d"), os("low1")).unwrap();
            u.rmdir(&lookup_path(&u, "d"), os("up")).unwrap();
            u.create(
                &d,
                os("file"),
                0o644,
                NewKind::File {
                    flags: libc::O_WRONLY,
                },
                caller(),
            )
            .unwrap();
            let d = lookup_path(&u, "d");
            // What a fresh union counts: low2 and new.
            assert_eq!(t.union(fmt).dir_nlink(&d).unwrap(), 4, "{fmt:?}");
            assert_eq!(u.dir_nlink(&d).unwrap(), 4, "{fmt:?}: kept exact");
            assert!(u.nlink_cache.contains_key(&d.path), "not dropped");
        }
    }

    #[test]
    fn listings_on_one_cursor_share_its_fds_and_each_start_from_the_top() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("rw", "d");
            t.dir("ro", "d");
            t.file("rw", "d/up", "x");
            t.file("ro", "d/low", "x");
            let u = t.union(fmt);
            let d = lookup_path(&u, "d");
            let mut cursor = u.dir_cursor(&d);
            assert_eq!(cursor.parts().2.opened(), 0, "{fmt:?}");
            let first = names(&u.readdir_in(&cursor).unwrap());
            assert_eq!(first, vec!["low", "up"], "{fmt:?}");
            // The listing opened both layers into the cursor, for the lookups after it.
            assert_eq!(cursor.parts().2.opened(), 2, "{fmt:?}");
            assert_eq!(cursor.lookup(os("low")).unwrap().layers[0], 1, "{fmt:?}");
            // A second listing on the same fds reads from the first entry again.
            assert_eq!(names(&u.readdir_in(&cursor).unwrap()), first, "{fmt:?}");
        }
    }

    #[test]
    fn merged_listing_shows_each_name_once_without_whiteouts() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "mid", "low"]);
            t.file("rw", "a", "1");
            t.file("mid", "a", "2");
            t.file("mid", "b", "2");
            t.file("low", "c", "3");
            t.file("low", "gone", "3");
            t.whiteout(fmt, "mid", "gone");
            let u = t.union(fmt);
            let names = names(&u.readdir(&u.root().unwrap()).unwrap());
            assert_eq!(names, vec!["a", "b", "c"], "{fmt:?}");
        }
    }

    #[test]
    fn work_dir_is_hidden_and_opaque_stops_listing() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("rw", "d");
            t.dir("ro", "d");
            t.file("ro", "d/low", "x");
            t.file("rw", "d/up", "x");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            assert!(t.path("rw").join(".unionfs-work").exists());
            assert_eq!(names(&u.readdir(&root).unwrap()), vec!["d"]);
            let d = u.lookup(&root, "d".as_ref()).unwrap();
            assert_eq!(names(&u.readdir(&d).unwrap()), vec!["low", "up"]);
            t.opaque(fmt, "rw", "d");
            let u = t.union(fmt);
            let d = u.lookup(&u.root().unwrap(), "d".as_ref()).unwrap();
            assert_eq!(names(&u.readdir(&d).unwrap()), vec!["up"]);
        }
    }
}

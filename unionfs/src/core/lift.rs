//! Lifting: a file that open handles write *in place* (FUSE passthrough: the kernel
//! writes to the branch file itself, the daemon never sees those writes) moves up to
//! its new write target when its branch stops taking writes (a snapshot, `mode ro`),
//! keeping its inode, and a point-in-time copy takes its place below.
//!
//! The copy is made as a copy-up would make it (data with holes, owner, mode, xattrs,
//! times; built in the work dir, fsynced, renamed into place at the target), then one
//! `RENAME_EXCHANGE` swaps the two names: the live inode goes up, the copy goes down. So
//! the writers keep their file and their later writes land in the new top, the branch
//! below keeps the bytes written before the copy.
//!
//! Passthrough writes do not wait for the daemon, so one that races the copy may land
//! partly in it (as a write racing a `cp` would). A crash between the copy and the swap
//! leaves the copy in the new top holding the bytes of the copy's time; the writes
//! after it are only in the file below (the stack change itself is not persistent).

use std::os::fd::AsFd;
use std::path::PathBuf;

use super::copyup::{restore_times, Data};
use super::error::{errno, IoContext, Result};
use super::{parent_fd, sys, Obj, Union};

/// A lift that has made its copy and may still be undone.
#[derive(Debug)]
pub struct Lift {
    path: PathBuf,
    /// Branch index (in the stack in force) the live file came from.
    from: u16,
    /// Branch index it goes to.
    to: u16,
    /// The outermost parent directory the copy-up had to make at `to` (undone with it).
    made: Option<PathBuf>,
    swapped: bool,
}

impl Lift {
    /// The file, in the union.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The branch index (in the stack in force) the live file went to.
    pub fn to(&self) -> u16 {
        self.to
    }

    /// Why a lift failed, in words, from its errno.
    pub fn why(e: &super::CoreError) -> String {
        match e.errno() {
            libc::EXDEV => {
                "the branch its writes go to is on another mount than its own, and a file open \
                            through FUSE passthrough can only move by rename"
                    .into()
            }
            libc::EBUSY => "it has several names (hard links)".into(),
            libc::EROFS => "no read-write branch above it takes its writes".into(),
            libc::EACCES => "copy-up is off (unionfs-fuse's syntax without -o cow)".into(),
            _ => e.to_string(),
        }
    }
}

impl Union {
    /// Lifts the file `obj` (looked up on the stack in force) out of its branch, which no
    /// longer takes writes, to its write target; `live` is the (st_dev, st_ino) the
    /// in-place writers hold, which must be what the union shows there. The caller
    /// holds the union exclusively (a stack change), so no operation sees a half-done
    /// lift; [`Union::undo_lift`] reverts it.
    pub fn lift(&self, obj: &Obj, live: (u64, u64)) -> Result<Lift> {
        let stack = self.stack();
        let from = obj.top();
        let here = (obj.st.st_dev, obj.st.st_ino);
        if here != live || obj.is_dir() || obj.indexed.is_some() || obj.st.st_nlink > 1 {
            // Another file, or one a copy cannot stand in for (its other names would
            // keep showing the live data).
            return Err(errno("lift", &obj.path, libc::EBUSY));
        }
        let to = match self.write_target(&stack, from) {
            Some(to) if to != from => to,
            _ => return Err(errno("lift", &obj.path, libc::EROFS)),
        };
        let made = obj
            .parent_path()
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find(|dir| parent_fd(&stack, to, dir).is_err())
            .map(PathBuf::from);
        let mut lift = Lift {
            path: obj.path.clone(),
            from,
            to,
            made,
            swapped: false,
        };
        match self.copy_up(obj, Data::Full) {
            Ok(up) if up.top() == to => {}
            Ok(_) => {
                self.undo_lift(&mut lift);
                return Err(errno("lift", &obj.path, libc::EROFS));
            }
            Err(e) => {
                self.undo_lift(&mut lift);
                return Err(e);
            }
        }
        if let Err(e) = self.swap(&lift) {
            self.undo_lift(&mut lift);
            return Err(e);
        }
        lift.swapped = true;
        stack.bump_layers();
        Ok(lift)
    }

    /// Reverts a lift: the live file back where it was, the copy and the directories
    /// made for it gone. Best effort (the caller is already reporting an error); false
    /// if the live file could not be put back (it stays at the target, where it is
    /// the only holder of the writes since the lift: never delete it).
    pub fn undo_lift(&self, lift: &mut Lift) -> bool {
        if lift.swapped && self.swap(lift).is_ok() {
            lift.swapped = false;
        }
        if lift.swapped {
            return false;
        }
        let stack = self.stack();
        let in_to = |rel: &std::path::Path| {
            let name = rel.file_name().unwrap_or_default();
            let parent = rel.parent().unwrap_or(std::path::Path::new(""));
            (parent_fd(&stack, lift.to, parent), name.to_owned())
        };
        if let (Ok(dir), name) = in_to(&lift.path) {
            let _ = sys::unlinkat(dir.as_fd(), &name, false);
        }
        if let Some(made) = &lift.made {
            // Innermost first; one that is not empty (another lift's) stops the walk.
            for d in lift.path.ancestors().skip(1) {
                let removed = match in_to(d) {
                    (Ok(dir), name) => sys::unlinkat(dir.as_fd(), &name, true).is_ok(),
                    _ => false,
                };
                if !removed || d == made {
                    break;
                }
            }
        }
        stack.bump_layers();
        true
    }

    /// Exchanges the file's two instances, keeping both directories' times.
    fn swap(&self, lift: &Lift) -> Result<()> {
        let stack = self.stack();
        let rel = &lift.path;
        let name = rel.file_name().unwrap_or_default();
        let parent = rel.parent().unwrap_or(std::path::Path::new(""));
        let a = parent_fd(&stack, lift.from, parent).ctx("lift", rel)?;
        let b = parent_fd(&stack, lift.to, parent).ctx("lift", rel)?;
        let (ta, tb) = (sys::fstat(a.as_fd()).ok(), sys::fstat(b.as_fd()).ok());
        sys::renameat2(a.as_fd(), name, b.as_fd(), name, sys::RENAME_EXCHANGE).ctx("lift", rel)?;
        for (d, t) in [(&a, ta), (&b, tb)] {
            if let Some(t) = t {
                restore_times(d.as_fd(), &t);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::stackops::{open_new_branch, with_snapshot, StackError};
    use super::super::testutil::*;
    use super::super::{Config, FormatChoice};
    use super::*;
    use std::io::{Seek, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_lifted_file_keeps_its_inode_and_writers_and_leaves_its_bytes_below() {
        for f in formats() {
            let t = Tree::new(&["top", "base"]);
            t.dir("top", "d/e");
            t.file("top", "d/e/log", "before\n");
            t.file("base", "other", "x");
            let u = Union::new(t.stack(f), Config::default());
            let live_path = t.path("top").join("d/e/log");
            // A writer that, like a passthrough handle, writes the branch file itself.
            let mut w = std::fs::OpenOptions::new()
                .append(true)
                .open(&live_path)
                .unwrap();
            let md = std::fs::metadata(&live_path).unwrap();
            let snap = t.dir.path().join("snap");
            std::fs::create_dir(&snap).unwrap();
            let mnt = t.dir.path().join("mnt");
            u.change_stack(|s| {
                let b = open_new_branch(s, &snap, super::super::Mode::Rw, &mnt)?;
                Ok::<_, StackError>((with_snapshot(s, b), ()))
            })
            .unwrap();
            let obj = lookup_path(&u, "d/e/log");
            assert_eq!(
                obj.top(),
                1,
                "{f:?}: before the lift the file is in the snapshot"
            );
            u.lift(&obj, (md.dev(), md.ino())).unwrap();
            w.write_all(b"after\n").unwrap();
            w.seek(std::io::SeekFrom::Start(0)).unwrap();
            let up = std::fs::metadata(snap.join("d/e/log")).unwrap();
            assert_eq!(up.ino(), md.ino(), "{f:?}: the live inode moved up");
            assert_eq!(
                std::fs::read_to_string(snap.join("d/e/log")).unwrap(),
                "before\nafter\n"
            );
            assert_eq!(
                std::fs::read_to_string(&live_path).unwrap(),
                "before\n",
                "{f:?}: the snapshot keeps the bytes written before"
            );
            assert_eq!(std::fs::metadata(&live_path).unwrap().mtime(), md.mtime());
            assert_eq!(lookup_path(&u, "d/e/log").top(), 0);
        }
    }

    #[test]
    fn a_lift_is_refused_for_another_file_or_hard_links_and_undone_cleanly() {
        let t = Tree::new(&["top", "base"]);
        t.file("top", "a", "a");
        std::fs::hard_link(t.path("top").join("a"), t.path("top").join("b")).unwrap();
        t.file("top", "c", "c");
        let u = Union::new(t.stack(FormatChoice::Wh), Config::default());
        let snap = t.dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        let mnt = t.dir.path().join("mnt");
        u.change_stack(|s| {
            let b = open_new_branch(s, &snap, super::super::Mode::Rw, &mnt)?;
            Ok::<_, StackError>((with_snapshot(s, b), ()))
        })
        .unwrap();
        let a = lookup_path(&u, "a");
        let live = (a.st.st_dev, a.st.st_ino);
        assert_eq!(u.lift(&a, live).unwrap_err().errno(), libc::EBUSY);
        let c = lookup_path(&u, "c");
        assert_eq!(u.lift(&c, live).unwrap_err().errno(), libc::EBUSY);
        assert!(!snap.join("a").exists() && !snap.join("c").exists());
        let mut l = u.lift(&c, (c.st.st_dev, c.st.st_ino)).unwrap();
        assert!(u.undo_lift(&mut l));
        assert!(!snap.join("c").exists(), "undo removes the copy");
        let md = std::fs::metadata(t.path("top").join("c")).unwrap();
        assert_eq!(md.ino(), c.st.st_ino, "undo puts the live file back");
        // The directories the copy needed go with it; those that were there stay.
        t.dir("top", "x/y/z");
        t.file("top", "x/y/z/deep", "deep");
        std::fs::create_dir(snap.join("x")).unwrap();
        let deep = lookup_path(&u, "x/y/z/deep");
        let mut l = u.lift(&deep, (deep.st.st_dev, deep.st.st_ino)).unwrap();
        assert!(snap.join("x/y/z/deep").exists());
        assert!(u.undo_lift(&mut l));
        assert!(snap.join("x").is_dir() && !snap.join("x/y").exists());
        assert_eq!(read(&u, &lookup_path(&u, "x/y/z/deep")), "deep");
    }
}

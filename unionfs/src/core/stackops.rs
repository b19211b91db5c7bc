//! Changes to the branch stack at run time (`unionfs ctl`): add, remove, re-mode,
//! snapshot. Each builds the new branch list from the current stack; the union swaps
//! it in atomically (`Union::change_stack`). Nothing here touches FUSE.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Branch, Mode, Stack};

/// Why a stack change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The named branch is not in the stack.
    #[error("no branch {0} in this union (see `unionfs ctl MOUNTPOINT list`)")]
    NoSuchBranch(String),
    /// An index outside the stack.
    #[error("index {index} is out of range: the union has {len} branches")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// Branches in the stack.
        len: usize,
    },
    /// The directory cannot be a branch.
    #[error("{path}: {why}")]
    BadDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The last branch cannot go.
    #[error("cannot remove the only branch")]
    LastBranch,
    /// Files on the branch are open.
    #[error("branch {0} has open files (close them, or use --force)")]
    Busy(String),
    /// A file that open handles write in place (FUSE passthrough) cannot move to where
    /// its writes must now land.
    #[error("{path} is open with FUSE passthrough and cannot move along: {why}; close it, or mount with -o passthrough=off")]
    CannotLift {
        /// The file, in the union.
        path: String,
        /// Why.
        why: String,
    },
}

/// A branch as the user names it: by index or by path.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BranchRef {
    /// Position in the stack (0 = top).
    Index(usize),
    /// Directory path.
    Path(PathBuf),
}

/// Where `add` puts the new branch.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// Above every branch.
    Top,
    /// Below every branch.
    Bottom,
    /// At this index (0 = top).
    Index(usize),
}

impl Stack {
    /// Index of a branch named by index or path.
    pub fn find(&self, r: &BranchRef) -> Result<usize, StackError> {
        match r {
            BranchRef::Index(i) if *i < self.branches.len() => Ok(*i),
            BranchRef::Index(i) => Err(StackError::IndexOutOfRange {
                index: *i,
                len: self.branches.len(),
            }),
            BranchRef::Path(p) => {
                let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                self.branches
                    .iter()
                    .position(|b| b.path == canon || b.path == *p)
                    .ok_or_else(|| StackError::NoSuchBranch(p.display().to_string()))
            }
        }
    }
}

fn bad(path: &Path, why: impl Into<String>) -> StackError {
    StackError::BadDir {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Opens `dir` as a new branch, after the checks a mount would make.
pub fn open_new_branch(
    stack: &Stack,
    dir: &Path,
    mode: Mode,
    mountpoint: &Path,
) -> Result<Branch, StackError> {
    let md = std::fs::metadata(dir).map_err(|e| bad(dir, e.to_string()))?;
    if !md.is_dir() {
        return Err(bad(dir, "not a directory"));
    }
    let canon = std::fs::canonicalize(dir).map_err(|e| bad(dir, e.to_string()))?;
    if mountpoint.starts_with(&canon) || canon.starts_with(mountpoint) {
        return Err(bad(dir, "contains or is inside the mount point"));
    }
    for b in &stack.branches {
        if let Ok(bm) = std::fs::metadata(&b.path) {
            if (bm.dev(), bm.ino()) == (md.dev(), md.ino()) {
                return Err(bad(dir, "is already a branch of this union"));
            }
        }
    }
    let mut b = Branch::open(&canon, mode).map_err(|e| bad(dir, e.to_string()))?;
    if mode == Mode::Rw {
        b.attach_work(None, stack.format == crate::core::WhiteoutFormat::Meta)
            .map_err(|e| bad(dir, format!("cannot prepare its work directory: {e}")))?;
    }
    Ok(b)
}

/// The stack with `b` inserted at `pos`.
pub fn with_added(stack: &Stack, b: Branch, pos: Position) -> Result<Vec<Branch>, StackError> {
    let mut v = stack.branches.clone();
    let i = match pos {
        Position::Top => 0,
        Position::Bottom => v.len(),
        Position::Index(i) if i <= v.len() => i,
        Position::Index(index) => {
            return Err(StackError::IndexOutOfRange {
                index,
                len: v.len(),
            })
        }
    };
    v.insert(i, b);
    Ok(v)
}

/// The stack without branch `i`.
pub fn without(stack: &Stack, i: usize) -> Result<Vec<Branch>, StackError> {
    if stack.branches.len() == 1 {
        return Err(StackError::LastBranch);
    }
    let mut v = stack.branches.clone();
    v.remove(i);
    Ok(v)
}

/// The stack with branch `i` in `mode` (a branch made rw gets its work directory).
pub fn with_mode(stack: &Stack, i: usize, mode: Mode) -> Result<Vec<Branch>, StackError> {
    let mut v = stack.branches.clone();
    let b = &mut v[i];
    b.mode = mode;
    if mode == Mode::Ro {
        // A ro branch needs no work dir; dropping it releases the merge lock (once
        // in-flight operations let go of the old stack).
        b.work = None;
    }
    if mode == Mode::Rw && b.work.is_none() {
        let p = b.path.clone();
        b.attach_work(None, stack.format == crate::core::WhiteoutFormat::Meta)
            .map_err(|e| bad(&p, format!("cannot prepare its work directory: {e}")))?;
    }
    Ok(v)
}

/// A snapshot: `new_top` (empty, rw) goes on top and the previous top becomes ro.
pub fn with_snapshot(stack: &Stack, new_top: Branch) -> Vec<Branch> {
    let mut v = stack.branches.clone();
    if let Some(t) = v.first_mut() {
        t.mode = Mode::Ro;
        // The snapshot is frozen: it may be diffed and merged while mounted.
        t.work = None;
    }
    v.insert(0, new_top);
    v
}

/// Puts the top of a refused snapshot, `dir` (empty before it), back as it was: the
/// work directory and the directories lifts made in it go, and `dir` itself if the
/// command `created` it. Files stay: one left there is a live file a lift could not put
/// back (the refusal names it), and deleting it would lose its writes.
pub fn discard_new_branch(dir: &Path, created: bool) {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(top) = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    else {
        return;
    };
    for private in [super::branch::HIDDEN_WORK_NAME, super::meta::META_DIR] {
        let _ = super::branch::remove_tree(top.as_fd(), std::ffi::OsStr::new(private));
    }
    remove_empty_dirs(top.as_fd());
    if created {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Removes the directories under `dir` that hold no file, innermost first, never
/// following a symlink.
fn remove_empty_dirs(dir: std::os::fd::BorrowedFd<'_>) {
    let Ok(list) =
        super::sys::open_beneath(dir, Path::new(""), libc::O_RDONLY | libc::O_DIRECTORY, 0)
    else {
        return;
    };
    for e in super::sys::read_dir_fd(&list).unwrap_or_default() {
        let Ok(Some(st)) = super::sys::stat_opt(dir, &e.name) else {
            continue;
        };
        if super::sys::is_dir(&st) {
            if let Ok(sub) = super::sys::open_dir_path(dir, Path::new(&e.name)) {
                remove_empty_dirs(sub.as_fd());
            }
            let _ = super::sys::unlinkat(dir, &e.name, true);
        }
    }
}

/// Where a snapshot's new top goes when no directory is given: next to the current
/// top branch, `TOP.snapN` with the first free N.
pub fn default_snapshot_dir(stack: &Stack) -> PathBuf {
    let top = stack
        .branches
        .first()
        .map(|b| b.path.clone())
        .unwrap_or_default();
    let name = top
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "branch".into());
    let parent = top.parent().map(Path::to_path_buf).unwrap_or_default();
    (1..)
        .map(|n| parent.join(format!("{name}.snap{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| parent.join(format!("{name}.snap")))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Config, FormatChoice, Mode, Union};
    use super::*;

    #[test]
    fn a_discarded_new_branch_keeps_only_files() {
        for f in formats() {
            let t = Tree::new(&["rw"]);
            let stack = t.stack(f);
            for created in [false, true] {
                let dir = t.dir.path().join(format!("new-{created}"));
                std::fs::create_dir(&dir).unwrap();
                let mnt = t.dir.path().join("mnt");
                drop(open_new_branch(&stack, &dir, Mode::Rw, &mnt).unwrap());
                std::fs::create_dir_all(dir.join("made/by/lift")).unwrap();
                discard_new_branch(&dir, created);
                assert_eq!(dir.exists(), !created, "{f:?}");
                if !created {
                    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
                    assert!(left.is_empty(), "{f:?}: {left:?}");
                }
            }
            // A file is never removed (a live file a lift could not put back).
            let dir = t.dir.path().join("kept");
            std::fs::create_dir_all(dir.join("a/b")).unwrap();
            std::fs::write(dir.join("a/b/live"), "x").unwrap();
            std::fs::create_dir_all(dir.join("c")).unwrap();
            discard_new_branch(&dir, true);
            assert_eq!(std::fs::read_to_string(dir.join("a/b/live")).unwrap(), "x");
            assert!(!dir.join("c").exists());
        }
    }

    #[test]
    fn add_remove_mode_and_snapshot_change_what_the_union_shows() {
        let t = Tree::new(&["rw", "ro", "extra"]);
        t.file("ro", "f", "old");
        t.file("extra", "only-extra", "x");
        let u = Union::new(
            t.stack_modes(FormatChoice::Wh, &[Mode::Rw, Mode::Ro]),
            Config::default(),
        );
        let mnt = t.dir.path().join("mnt");
        assert!(try_lookup(&u, "only-extra").is_none());
        u.change_stack(|s| {
            let b = open_new_branch(s, &t.path("extra"), Mode::Ro, &mnt)?;
            Ok::<_, StackError>((with_added(s, b, Position::Bottom)?, ()))
        })
        .unwrap();
        assert!(try_lookup(&u, "only-extra").is_some());
        // The same directory twice is refused.
        let again = u.change_stack(|s| {
            let b = open_new_branch(s, &t.path("extra"), Mode::Ro, &mnt)?;
            Ok::<_, StackError>((with_added(s, b, Position::Top)?, ()))
        });
        assert!(matches!(again, Err(StackError::BadDir { .. })));
        let i = u.stack().find(&BranchRef::Path(t.path("extra"))).unwrap();
        u.change_stack(|s| Ok::<_, StackError>((without(s, i)?, ())))
            .unwrap();
        assert!(try_lookup(&u, "only-extra").is_none());
        // Snapshot: writes after it land in the new top, the old top keeps its bytes.
        let f = lookup_path(&u, "f");
        u.setattr(
            &f,
            &super::super::setattr::SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let snap = t.dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        u.change_stack(|s| {
            let b = open_new_branch(s, &snap, Mode::Rw, &mnt)?;
            Ok::<_, StackError>((with_snapshot(s, b), ()))
        })
        .unwrap();
        let st = u.stack();
        assert_eq!(st.branches[0].path, std::fs::canonicalize(&snap).unwrap());
        assert_eq!(st.branches[1].mode, Mode::Ro);
        let f = lookup_path(&u, "f");
        let a = super::super::setattr::SetAttr {
            mode: Some(0o644),
            ..Default::default()
        };
        u.setattr(&f, &a, None).unwrap();
        assert!(snap.join("f").exists(), "the change went to the new top");
        use std::os::unix::fs::MetadataExt;
        let old = std::fs::metadata(t.path("rw").join("f")).unwrap();
        assert_eq!(old.mode() & 0o777, 0o600, "the snapshot keeps its state");
        // Indices out of range are refused.
        let e = u.change_stack(|s| {
            Ok::<_, StackError>((with_mode(s, s.find(&BranchRef::Index(9))?, Mode::Rw)?, ()))
        });
        assert!(matches!(e, Err(StackError::IndexOutOfRange { .. })));
    }
}

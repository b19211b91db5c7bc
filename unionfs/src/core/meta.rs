//! unionfs-fuse's whiteout layout (`whiteout=meta`), as Debian's unionfs-fuse 1.0 writes
//! and reads it. Deletions are not recorded next to the deleted name but in a parallel
//! tree under the branch root: deleting `d/f` creates the empty file
//! `BRANCH/.unionfs-fuse/d/f_HIDDEN~` (mode 0600), deleting the directory `d` the
//! directory `BRANCH/.unionfs-fuse/d_HIDDEN~` (0700); the meta directories are 0770.
//!
//! A marker in a branch hides its path, and everything below it, in the branches *below*
//! that branch; the branch's own copy still shows. A directory recreated next to its
//! directory marker therefore shows only its own entries: the marker makes it opaque
//! (unionfs-fuse cannot unlink a directory marker, and keeps it on purpose). Because a
//! branch may hide a path without holding its parent directory, lookup asks every branch
//! above the one it reads, not only the parent's layers.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{sys, Stack};

/// The meta directory at each branch root.
pub const META_DIR: &str = ".unionfs-fuse";
const HIDE_TAG: &[u8] = b"_HIDDEN~";

fn tagged(name: &OsStr) -> OsString {
    let mut v = name.as_bytes().to_vec();
    v.extend_from_slice(HIDE_TAG);
    std::os::unix::ffi::OsStringExt::from_vec(v)
}

fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    Some((path.parent()?, path.file_name()?))
}

/// The meta directory of `dir` (a union path) in branch `b`, if it exists.
fn meta_dir(stack: &Stack, b: u16, dir: &Path) -> io::Result<Option<OwnedFd>> {
    match sys::open_dir_path(stack.branch(b).fd(), &Path::new(META_DIR).join(dir)) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The marker of `path` in branch `b`: `Some(true)` a directory marker, `Some(false)` a
/// file marker.
pub(crate) fn marker(stack: &Stack, b: u16, path: &Path) -> io::Result<Option<bool>> {
    let Some((dir, name)) = split(path) else {
        return Ok(None);
    };
    let Some(fd) = meta_dir(stack, b, dir)? else {
        return Ok(None);
    };
    Ok(sys::stat_opt(fd.as_fd(), &tagged(name))?.map(|st| sys::is_dir(&st)))
}

/// The highest branch holding a marker for `path`: branches below it do not show it.
pub(crate) fn cut(stack: &Stack, path: &Path) -> io::Result<Option<u16>> {
    for b in 0..stack.branches.len() as u16 {
        if marker(stack, b, path)?.is_some() {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// The names in `dir` that branch `b` hides from the branches below it.
pub(crate) fn hidden_names(stack: &Stack, b: u16, dir: &Path) -> io::Result<HashSet<OsString>> {
    let mut out = HashSet::new();
    let Some(fd) = meta_dir(stack, b, dir)? else {
        return Ok(out);
    };
    let fd = sys::open_beneath(
        fd.as_fd(),
        Path::new(""),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    for e in sys::read_dir_fd(&fd)? {
        if let Some(n) = e.name.as_bytes().strip_suffix(HIDE_TAG) {
            out.insert(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Opens (creating as needed, 0770 as unionfs-fuse does) the meta directory of `dir` in
/// rw branch `b`.
fn ensure_meta_dir(stack: &Stack, b: u16, dir: &Path) -> io::Result<OwnedFd> {
    let mut fd = sys::open_dir_path(stack.branch(b).fd(), Path::new(""))?;
    let mut at = PathBuf::new();
    for comp in Path::new(META_DIR).join(dir).components() {
        let name = comp.as_os_str();
        at.push(name);
        match sys::mkdirat(fd.as_fd(), name, 0o770) {
            // Exact modes, whatever the umask: unionfs-fuse checks none, but its trees
            // look like this.
            Ok(()) => sys::fchmodat(fd.as_fd(), name, 0o770)?,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        fd = sys::open_dir_path(fd.as_fd(), Path::new(name))?;
    }
    Ok(fd)
}

/// Hides `path` in the branches below rw branch `b`: a file marker, or for a directory
/// a directory marker (which also makes a later directory of that name opaque).
pub(crate) fn hide(stack: &Stack, b: u16, path: &Path, is_dir: bool) -> io::Result<()> {
    let Some((dir, name)) = split(path) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let fd = ensure_meta_dir(stack, b, dir)?;
    let t = tagged(name);
    let r = if is_dir {
        sys::mkdirat(fd.as_fd(), &t, 0o700).and_then(|()| sys::fchmodat(fd.as_fd(), &t, 0o700))
    } else {
        sys::openat(
            fd.as_fd(),
            &t,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        )
        .and_then(|f| sys::fchmod(f.as_fd(), 0o600))
    };
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// A new object at `path` in branch `target`. Markers for it in rw branches above
/// `target` go (they would hide it); in `target` a file marker goes (the name is back)
/// and a directory marker stays, so a new directory there is opaque (unionfs-fuse's
/// rule). A new directory replacing any marker gets a directory marker in `target`, so
/// what the removed markers hid stays hidden. Returns whether `path` is marked in
/// `target` now.
pub(crate) fn unhide(stack: &Stack, target: u16, path: &Path, is_dir: bool) -> io::Result<bool> {
    let Some((dir, name)) = split(path) else {
        return Ok(false);
    };
    let mut had = false;
    let mut stays = false;
    for b in 0..=target {
        if !stack.is_rw(b) {
            continue;
        }
        let Some(kind) = marker(stack, b, path)? else {
            continue;
        };
        had = true;
        if b == target && kind {
            stays = true;
            continue;
        }
        if let Some(fd) = meta_dir(stack, b, dir)? {
            match sys::unlinkat(fd.as_fd(), &tagged(name), kind) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
                _ => {}
            }
        }
    }
    if is_dir && had && !stays {
        hide(stack, target, path, true)?;
        stays = true;
    }
    Ok(stays)
}

/// Whether `name` in the union directory `parent` is the meta directory at the root,
/// which holds our work directory: it cannot be removed or renamed through the union.
pub(crate) fn is_pinned(stack: &Stack, parent: &Path, name: &OsStr) -> bool {
    stack.format == super::WhiteoutFormat::Meta && parent.as_os_str().is_empty() && name == META_DIR
}

/// Whether `name` in a branch root is a meta directory holding nothing but our work
/// directory (which exists from the mount on; unionfs-fuse makes its meta directory
/// only at the first delete).
pub(crate) fn only_our_work_dir(root: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    if name != META_DIR {
        return Ok(false);
    }
    let fd = match sys::open_beneath(root, Path::new(name), libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    Ok(sys::read_dir_fd(&fd)?
        .iter()
        .all(|e| e.name == super::branch::HIDDEN_WORK_NAME))
}

/// Whether `name` in the union directory `parent` is unionfs-fuse's own: the meta
/// directory at the root, or a `.fuse_hidden*` file the kernel leaves for an unlinked
/// open file (both left out of listings with `hide_meta_files`).
pub(crate) fn is_meta_name(parent: &Path, name: &OsStr) -> bool {
    (parent.as_os_str().is_empty() && name == META_DIR)
        || name.as_bytes().starts_with(b".fuse_hidden")
}

#[cfg(test)]
mod tests {
    use super::super::create::NewKind;
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn markers_hide_below_their_branch_only() {
        let t = Tree::new(&["rw", "ro"]);
        t.dir("ro", "d");
        t.file("ro", "d/f", "lower");
        t.file("ro", "g", "lower");
        let s = t.stack(super::super::FormatChoice::Meta);
        hide(&s, 0, Path::new("d/f"), false).unwrap();
        hide(&s, 0, Path::new("g"), true).unwrap();
        assert_eq!(marker(&s, 0, Path::new("d/f")).unwrap(), Some(false));
        assert_eq!(marker(&s, 0, Path::new("g")).unwrap(), Some(true));
        assert_eq!(cut(&s, Path::new("d/f")).unwrap(), Some(0));
        assert_eq!(cut(&s, Path::new("d")).unwrap(), None);
        let names = hidden_names(&s, 0, Path::new("d")).unwrap();
        assert!(names.contains(OsStr::new("f")) && names.len() == 1);
        // unionfs-fuse's modes: meta dirs 0770, file markers 0600, dir markers 0700.
        let m = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            let md = std::fs::metadata(t.path("rw").join(".unionfs-fuse").join(p)).unwrap();
            md.permissions().mode() & 0o7777
        };
        assert_eq!(
            (m("d"), m("d/f_HIDDEN~"), m("g_HIDDEN~")),
            (0o770, 0o600, 0o700)
        );
        // A new file takes its file marker away; a directory marker stays.
        assert!(!unhide(&s, 0, Path::new("d/f"), false).unwrap());
        assert_eq!(marker(&s, 0, Path::new("d/f")).unwrap(), None);
        assert!(unhide(&s, 0, Path::new("g"), true).unwrap());
    }

    fn meta_union(t: &Tree) -> super::super::Union {
        t.union(super::super::FormatChoice::Meta)
    }

    fn ls(u: &super::super::Union, rel: &str) -> Vec<String> {
        let mut v = names(&u.readdir(&lookup_path(u, rel)).unwrap());
        v.sort();
        v
    }

    #[test]
    fn a_marker_hides_even_where_its_branch_lacks_the_directory() {
        let t = Tree::new(&["rw", "ro"]);
        t.dir("ro", "d");
        t.file("ro", "d/f", "f");
        t.file("ro", "d/g", "g");
        t.dir("rw", ".unionfs-fuse/d");
        t.file("rw", ".unionfs-fuse/d/f_HIDDEN~", "");
        let u = meta_union(&t);
        assert!(try_lookup(&u, "d/f").is_none());
        assert!(try_lookup(&u, "d/g").is_some());
        assert_eq!(ls(&u, "d"), ["g"]);
        // The meta directory shows, as in unionfs-fuse, unless hide_meta_files.
        assert!(ls(&u, "").contains(&".unionfs-fuse".to_string()));
        assert!(!ls(&u, ".unionfs-fuse").contains(&".unionfs-work".to_string()));
    }

    #[test]
    fn deleting_lower_objects_writes_unionfs_fuse_markers() {
        let t = Tree::new(&["rw", "ro"]);
        t.dir("ro", "d/sub");
        t.file("ro", "d/sub/x", "x");
        t.file("ro", "top", "t");
        let u = meta_union(&t);
        let root = u.root().unwrap();
        u.unlink(&root, OsStr::new("top")).unwrap();
        let sub = lookup_path(&u, "d/sub");
        u.unlink(&sub, OsStr::new("x")).unwrap();
        let d = lookup_path(&u, "d");
        u.rmdir(&d, OsStr::new("sub")).unwrap();
        let meta = t.path("rw").join(".unionfs-fuse");
        assert!(meta.join("top_HIDDEN~").is_file());
        assert!(meta.join("d/sub/x_HIDDEN~").is_file());
        assert!(meta.join("d/sub_HIDDEN~").is_dir());
        // No parent directory was copied up for the markers.
        assert!(!t.path("rw").join("d").exists());
        assert!(try_lookup(&u, "top").is_none() && try_lookup(&u, "d/sub").is_none());
        assert_eq!(ls(&u, "d"), Vec::<String>::new());
        // A directory made again shows only what is new in it: the marker stays.
        let d = lookup_path(&u, "d");
        u.create(&d, OsStr::new("sub"), 0o755, NewKind::Dir, caller())
            .unwrap();
        assert_eq!(ls(&u, "d/sub"), Vec::<String>::new());
        assert!(meta.join("d/sub_HIDDEN~").is_dir());
        // A file made again takes its marker away.
        let root = u.root().unwrap();
        let flags = libc::O_WRONLY | libc::O_CREAT;
        u.create(
            &root,
            OsStr::new("top"),
            0o644,
            NewKind::File { flags },
            caller(),
        )
        .unwrap();
        assert!(!meta.join("top_HIDDEN~").exists());
        assert!(try_lookup(&u, "top").is_some());
    }

    #[test]
    fn a_marker_above_the_create_target_moves_down_to_it() {
        // a=rw over b=rw over c=ro; p only in b and c.
        let t = Tree::new(&["a", "b", "c"]);
        t.dir("b", "p");
        t.dir("c", "p/d");
        t.file("c", "p/d/old", "old");
        let modes = [
            super::super::Mode::Rw,
            super::super::Mode::Rw,
            super::super::Mode::Ro,
        ];
        let u = t.union_modes(super::super::FormatChoice::Meta, &modes);
        let d = lookup_path(&u, "p/d");
        u.unlink(&d, OsStr::new("old")).unwrap();
        let p = lookup_path(&u, "p");
        u.rmdir(&p, OsStr::new("d")).unwrap();
        assert!(try_lookup(&u, "p/d").is_none());
        let p = lookup_path(&u, "p");
        u.create(&p, OsStr::new("d"), 0o755, NewKind::Dir, caller())
            .unwrap();
        assert!(try_lookup(&u, "p/d").is_some(), "the new directory shows");
        assert_eq!(
            ls(&u, "p/d"),
            Vec::<String>::new(),
            "and hides the old contents"
        );
    }

    #[test]
    fn the_meta_directory_holding_our_work_dir_stays() {
        let t = Tree::new(&["rw", "ro"]);
        let u = meta_union(&t);
        let root = u.root().unwrap();
        assert_eq!(
            u.rmdir(&root, OsStr::new(META_DIR)).unwrap_err().errno(),
            libc::EBUSY
        );
        let e = u.rename(&root, OsStr::new(META_DIR), &root, OsStr::new("x"), 0);
        assert_eq!(e.unwrap_err().errno(), libc::EBUSY);
        assert!(t
            .path("rw")
            .join(".unionfs-fuse/.unionfs-work/tmp")
            .is_dir());
    }
}

//! Lookup: walk the parent's layers top down; the first branch holding the name decides
//! its type; a whiteout hides the name below; an opaque directory stops the merge.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::error::{IoContext, Result};
use super::{inode, parent_fd, sys, CoreError, Layers, Obj, Stack, Union};
use std::path::Path;

use crate::core::branch::HIDDEN_WORK_NAME;

impl Union {
    /// Finds `name` in the directory `parent`.
    pub fn lookup(&self, parent: &Obj, name: &OsStr) -> Result<Obj> {
        self.dir_cursor(parent).lookup(name)
    }

    /// A cursor for many lookups in one directory (readdirplus): the directory is
    /// opened once per branch instead of once per name.
    pub fn dir_cursor(&self, parent: &Obj) -> DirCursor {
        self.dir_cursor_on(parent, Arc::new(self.dir_fds(parent)))
    }

    /// A cursor on directory fds opened before (see [`DirFds::fits`]).
    pub fn dir_cursor_on(&self, parent: &Obj, fds: Arc<DirFds>) -> DirCursor {
        DirCursor {
            stack: self.stack(),
            fds,
            parent: parent.clone(),
        }
    }

    /// `parent`'s directory in each of its layers, opened lazily, for one or more cursors.
    pub fn dir_fds(&self, parent: &Obj) -> DirFds {
        DirFds::new(&self.stack(), parent)
    }
}

impl DirFds {
    pub(crate) fn new(stack: &Stack, parent: &Obj) -> DirFds {
        DirFds {
            gen: stack.layers_gen(),
            path: parent.path.clone(),
            layers: parent.layers.clone(),
            born: Instant::now(),
            slots: (0..parent.layers.len()).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// Repeated lookups in one directory, on one stack snapshot.
pub struct DirCursor {
    stack: Arc<Stack>,
    parent: Obj,
    fds: Arc<DirFds>,
}

impl DirCursor {
    /// The stack snapshot, the directory and its branch fds.
    pub(crate) fn parts(&self) -> (&Arc<Stack>, &Obj, &DirFds) {
        (&self.stack, &self.parent, &self.fds)
    }

    /// The directory's own stat (from its top layer), on the cursor's fds.
    pub fn stat_dir(&self) -> Result<sys::Stat> {
        let top = self.parent.layers[0];
        let not_found = || CoreError::NotFound {
            op: "stat",
            path: self.parent.path.clone(),
        };
        let dir = self
            .fds
            .get(&self.stack, 0, top, &self.parent.path)
            .ctx("stat", &self.parent.path)?
            .ok_or_else(not_found)?;
        sys::fstat(dir).ctx("stat", &self.parent.path)
    }

    /// Finds `name` in the cursor's directory.
    pub fn lookup(&mut self, name: &OsStr) -> Result<Obj> {
        lookup_with(&self.stack, &self.parent, name, &self.fds)?.ok_or_else(|| {
            CoreError::NotFound {
                op: "lookup",
                path: self.parent.path.join(name),
            }
        })
    }
}

/// A directory opened (beneath the branch root) in each of its layers, lazily, and
/// when: kept by the adapter so that lookups in a directory need not walk its path again
/// in every branch. A slot is `O_PATH`, or `O_RDONLY` where a listing opened it first.
pub struct DirFds {
    /// The stack's layer generation when taken: any change of directory layers since
    /// (a copy-up, rename or removal of a directory, a stack change, `refresh`) ends it.
    gen: u64,
    path: std::path::PathBuf,
    layers: Layers,
    born: Instant,
    /// Per layer: unopened, or opened (None: not there).
    slots: Vec<OnceLock<Option<OwnedFd>>>,
}

impl DirFds {
    /// Whether these fds still serve `parent` on `union`'s stack, having been opened less
    /// than `max_age` ago. The age is the revalidation: a directory moved or removed in a
    /// branch behind the union's back is noticed within `max_age` (the adapter passes the
    /// kernel's entry timeout, the time the kernel itself trusts a name for).
    pub fn fits(&self, union: &Union, parent: &Obj, max_age: Duration) -> bool {
        union.stack().is_current(self.gen, &self.path)
            && self.path == parent.path
            && self.layers == parent.layers
            && self.young(max_age)
    }

    /// Whether these fds were opened less than `max_age` ago.
    pub fn young(&self, max_age: Duration) -> bool {
        self.born.elapsed() < max_age
    }

    /// How many of its layers are opened (tests).
    #[cfg(test)]
    pub(crate) fn opened(&self) -> usize {
        self.slots.iter().filter(|s| s.get().is_some()).count()
    }

    /// How many fds this can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The directory in layer position `pos` (branch `b`), or None if it is not there.
    pub(crate) fn get(
        &self,
        stack: &Stack,
        pos: usize,
        b: u16,
        rel: &std::path::Path,
    ) -> std::io::Result<Option<BorrowedFd<'_>>> {
        let slot = &self.slots[pos];
        if slot.get().is_none() {
            let fd = match parent_fd(stack, b, rel) {
                Ok(d) => Some(d),
                // The directory vanished from this branch (out-of-band change).
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    None
                }
                Err(e) => return Err(e),
            };
            // A racing thread may have set it first: its fd serves as well as ours.
            let _ = slot.set(fd);
        }
        Ok(slot.get().and_then(|fd| fd.as_ref().map(|d| d.as_fd())))
    }

    /// The directory in layer position `pos` (branch `b`) opened for reading its
    /// entries from the start, or None if it is not there. If the slot is not open yet,
    /// it is opened there (`O_RDONLY`), where it then serves later `*at()` calls too, so
    /// a listing followed by lookups (readdirplus) walks the path once. Otherwise the
    /// path is opened afresh: a slot may be as old as the entry timeout, and a listing
    /// shows what the branch holds now (its file position is not ours to move either).
    pub(crate) fn listing_fd(
        &self,
        stack: &Stack,
        pos: usize,
        b: u16,
        rel: &Path,
    ) -> std::io::Result<Option<ListingFd<'_>>> {
        let slot = &self.slots[pos];
        let open = || match sys::open_beneath(
            stack.branch(b).fd(),
            rel,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        ) {
            Ok(d) => Ok(Some(d)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        };
        if slot.get().is_none() && slot.set(open()?).is_ok() {
            let fd = slot.get().and_then(|fd| fd.as_ref());
            return Ok(fd.map(|d| ListingFd::Fresh(d.as_fd())));
        }
        Ok(open()?.map(ListingFd::Reopened))
    }
}

/// A directory fd positioned at its first entry (see [`DirFds::listing_fd`]).
pub(crate) enum ListingFd<'a> {
    /// Opened just now into a slot: nobody else reads entries from it.
    Fresh(BorrowedFd<'a>),
    /// Opened afresh, the slot being open already.
    Reopened(OwnedFd),
}

impl AsFd for ListingFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ListingFd::Fresh(fd) => *fd,
            ListingFd::Reopened(fd) => fd.as_fd(),
        }
    }
}

/// Whether `name` in `dir` (lstat `st`) is a metadata-only copy.
fn is_metacopy(stack: &Stack, dir: BorrowedFd<'_>, name: &OsStr, st: &sys::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
        && stack.format.metacopy_xattr().is_some_and(|x| {
            sys::getxattr(dir, name, OsStr::new(x))
                .ok()
                .flatten()
                .is_some()
        })
}

/// The branch (and lstat) of the file holding the data of a metadata-only copy of
/// `name`, searching the parent's layers from `from` down.
fn metacopy_data(
    stack: &Stack,
    parent: &Obj,
    name: &OsStr,
    from: usize,
    fds: &DirFds,
    meta_cut: Option<u16>,
) -> std::io::Result<Option<(u16, sys::Stat)>> {
    for (pos, &b) in parent.layers.iter().enumerate().skip(from) {
        if meta_cut.is_some_and(|c| b > c) {
            break;
        }
        let Some(dir) = fds.get(stack, pos, b, &parent.path)? else {
            continue;
        };
        let st = sys::stat_opt(dir, name)?;
        if stack
            .format
            .is_whiteout_in(dir, name, st.as_ref(), !stack.is_rw(b))?
        {
            return Ok(None);
        }
        match st {
            Some(st)
                if st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && !is_metacopy(stack, dir, name, &st) =>
            {
                return Ok(Some((b, st)))
            }
            // Another metadata-only copy: its data is further down still.
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
            Some(_) => return Ok(None),
            None => {}
        }
    }
    Ok(None)
}

/// Whether `name` in the directory at `parent_path` is the union's own bookkeeping.
pub(crate) fn is_hidden_name(stack: &Stack, parent_path: &std::path::Path, name: &OsStr) -> bool {
    ((parent_path.as_os_str().is_empty() || parent_path == Path::new(super::meta::META_DIR))
        && name == HIDDEN_WORK_NAME)
        || stack.format.is_reserved_name(name)
}

/// The lookup itself, on one stack snapshot. `Ok(None)`: not visible.
pub(crate) fn lookup_in(stack: &Stack, parent: &Obj, name: &OsStr) -> Result<Option<Obj>> {
    lookup_with(stack, parent, name, &DirFds::new(stack, parent))
}

pub(crate) fn lookup_with(
    stack: &Stack,
    parent: &Obj,
    name: &OsStr,
    fds: &DirFds,
) -> Result<Option<Obj>> {
    let path = parent.path.join(name);
    if name == "." || name == ".." || name.is_empty() {
        return Err(super::error::errno("lookup", &path, libc::EINVAL));
    }
    if is_hidden_name(stack, &parent.path, name) {
        return Ok(None);
    }
    // unionfs-fuse markers hide the path below the branch holding one.
    let meta_cut = if stack.format == super::WhiteoutFormat::Meta {
        super::meta::cut(stack, &path).ctx("lookup", &path)?
    } else {
        None
    };
    let gen = stack.layers_gen();
    let mut layers = Layers::new();
    let mut top: Option<sys::Stat> = None;
    let mut bottom: Option<sys::Stat> = None;
    let n = parent.layers.len();
    for (pos, &b) in parent.layers.iter().enumerate() {
        // A read-only branch may be an image layer in either whiteout layout.
        if meta_cut.is_some_and(|c| b > c) {
            break;
        }
        let foreign = !stack.is_rw(b);
        if foreign && stack.format.is_foreign_marker(name) {
            continue;
        }
        let Some(dir) = fds.get(stack, pos, b, &parent.path).ctx("lookup", &path)? else {
            continue;
        };
        let st = sys::stat_opt(dir, name).ctx("lookup", &path)?;
        if stack
            .format
            .is_whiteout_in(dir, name, st.as_ref(), foreign)
            .ctx("lookup", &path)?
        {
            break;
        }
        let Some(st) = st else { continue };
        match &top {
            None => {
                top = Some(st);
                layers.push(b);
                bottom = Some(st);
                if !sys::is_dir(&st) {
                    let ino = stack.ino_of(b, dir, name, &st);
                    let mut st = st;
                    // Honoured whatever the mount's own option: reading such a file as
                    // itself would show zeros.
                    let metacopy = is_metacopy(stack, dir, name, &st);
                    if stack.is_rw(b) {
                        st.st_nlink = stack.union_nlink(dir, name, &st);
                    }
                    if metacopy {
                        // The data is the first plain file of this name further down.
                        match metacopy_data(stack, parent, name, pos + 1, fds, meta_cut)
                            .ctx("lookup", &path)?
                        {
                            Some((d, dst)) => {
                                layers.push(d);
                                st.st_blocks = dst.st_blocks;
                            }
                            None => return Err(super::error::errno("lookup", &path, libc::EIO)),
                        }
                    }
                    let mut obj = Obj {
                        path,
                        layers,
                        st,
                        ino,
                        indexed: None,
                        gen,
                    };
                    if !stack.is_rw(b) && st.st_nlink > 1 {
                        find_index(stack, &mut obj, ino);
                    }
                    return Ok(Some(obj));
                }
            }
            Some(_) => {
                // A non-directory below a directory is hidden, and so is all below it.
                if !sys::is_dir(&st) {
                    break;
                }
                layers.push(b);
                bottom = Some(st);
            }
        }
        // Only a directory gets here: does it stop the merge?
        if pos + 1 < n
            && stack
                .format
                .is_opaque_in(dir, name, foreign)
                .ctx("lookup", &path)?
        {
            break;
        }
    }
    let (Some(st), Some(bottom)) = (top, bottom) else {
        return Ok(None);
    };
    let bottom_branch = *layers.last().unwrap_or(&0);
    let ino = if stack.is_rw(bottom_branch) && stack.branches.len() > 1 {
        let pos = parent.layers.iter().position(|&b| b == bottom_branch);
        match pos.map(|p| fds.get(stack, p, bottom_branch, &parent.path)) {
            Some(Ok(Some(d))) => stack.ino_of(bottom_branch, d, name, &bottom),
            _ => stack.map_ino(bottom.st_dev, bottom.st_ino),
        }
    } else {
        stack.map_ino(bottom.st_dev, bottom.st_ino)
    };
    Ok(Some(Obj {
        ino,
        path,
        layers,
        st,
        indexed: None,
        gen,
    }))
}

/// A lower hard link whose inode was already copied up reads the copy, so that all its
/// names stay one file (overlayfs `index=on` behaviour).
fn find_index(stack: &Stack, obj: &mut Obj, id: u64) {
    let Some(k) = stack.top_rw() else { return };
    if k > obj.layers[0] {
        return;
    }
    let Some(w) = stack.branch(k).work.as_ref() else {
        return;
    };
    let key = inode::index_key(id);
    let Some(index) = w.index_if_made() else {
        return;
    };
    if let Ok(Some(st)) = sys::stat_opt(index, OsStr::new(&key)) {
        let mut st = st;
        st.st_nlink = stack.union_nlink(index, OsStr::new(&key), &st);
        obj.st = st;
        obj.indexed = Some((k, key));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::FormatChoice;

    #[test]
    fn top_branch_decides_and_whiteouts_hide() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.file("ro", "a", "lower");
            t.file("rw", "a", "upper");
            t.file("ro", "b", "lower b");
            t.file("ro", "c", "c");
            t.whiteout(fmt, "rw", "c");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            let a = u.lookup(&root, "a".as_ref()).unwrap();
            assert_eq!(a.layers.as_slice(), &[0]);
            assert_eq!(read(&u, &a), "upper");
            let b = u.lookup(&root, "b".as_ref()).unwrap();
            assert_eq!(b.layers.as_slice(), &[1]);
            assert_eq!(
                u.lookup(&root, "c".as_ref()).unwrap_err().errno(),
                libc::ENOENT
            );
        }
    }

    #[test]
    fn directories_merge_down_to_the_first_opaque_one() {
        for fmt in formats() {
            let t = Tree::new(&["a", "b", "c"]);
            t.dir("a", "d");
            t.dir("b", "d");
            t.dir("c", "d");
            t.file("c", "d/deep", "x");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            let d = u.lookup(&root, "d".as_ref()).unwrap();
            assert_eq!(d.layers.as_slice(), &[0, 1, 2]);
            assert!(u.lookup(&d, "deep".as_ref()).is_ok());
            t.opaque(fmt, "b", "d");
            let u = t.union(fmt);
            let d = u.lookup(&u.root().unwrap(), "d".as_ref()).unwrap();
            assert_eq!(d.layers.as_slice(), &[0, 1]);
            assert_eq!(
                u.lookup(&d, "deep".as_ref()).unwrap_err().errno(),
                libc::ENOENT
            );
        }
    }

    #[test]
    fn read_only_layers_may_use_either_whiteout_layout() {
        // An image layer written by another tool: .wh. markers under an overlay-format
        // union, 0/0 devices under a wh-format one (as root, who may make them).
        for (fmt, other) in [
            (FormatChoice::Overlay, FormatChoice::Wh),
            (FormatChoice::Wh, FormatChoice::Overlay),
        ] {
            if !formats().contains(&fmt) || !formats().contains(&other) {
                continue;
            }
            let t = Tree::new(&["rw", "layer2", "layer1"]);
            t.file("layer1", "gone", "old");
            t.file("layer1", "kept", "k");
            t.dir("layer1", "d");
            t.file("layer1", "d/old", "o");
            t.whiteout(other, "layer2", "gone");
            t.dir("layer2", "d");
            t.opaque(other, "layer2", "d");
            let u = t.union(fmt);
            let root = u.root().unwrap();
            assert!(
                u.lookup(&root, "gone".as_ref()).is_err(),
                "{fmt:?} over {other:?}"
            );
            assert_eq!(
                names(&u.readdir(&root).unwrap()),
                vec!["d", "kept"],
                "{fmt:?}"
            );
            let d = u.lookup(&root, "d".as_ref()).unwrap();
            assert!(
                u.readdir(&d).unwrap().is_empty(),
                "{fmt:?}: opaque in the layer"
            );
        }
    }

    #[test]
    fn a_file_above_hides_a_directory_below() {
        let t = Tree::new(&["a", "b"]);
        t.file("a", "x", "file");
        t.dir("b", "x");
        t.file("b", "x/inner", "i");
        let u = t.union(FormatChoice::Wh);
        let x = u.lookup(&u.root().unwrap(), "x".as_ref()).unwrap();
        assert!(!x.is_dir());
        assert_eq!(x.layers.as_slice(), &[0]);
    }

    #[test]
    fn thirty_two_branches_resolve_to_the_highest() {
        let names: Vec<String> = (0..32).map(|i| format!("b{i}")).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let t = Tree::new(&refs);
        for (i, n) in refs.iter().enumerate() {
            t.dir(n, "d");
            t.file(n, &format!("d/only{i}"), n);
        }
        t.file("b31", "d/shared", "bottom");
        t.file("b7", "d/shared", "b7");
        let u = t.union(FormatChoice::Wh);
        let d = u.lookup(&u.root().unwrap(), "d".as_ref()).unwrap();
        assert_eq!(d.layers.len(), 32);
        let s = u.lookup(&d, "shared".as_ref()).unwrap();
        assert_eq!(read(&u, &s), "b7");
        assert_eq!(u.readdir(&d).unwrap().len(), 33);
    }

    #[test]
    fn symlinks_in_a_branch_are_never_followed() {
        let t = Tree::new(&["rw", "ro"]);
        std::os::unix::fs::symlink("/etc", t.path("ro").join("escape")).unwrap();
        let u = t.union(FormatChoice::Wh);
        let root = u.root().unwrap();
        let l = u.lookup(&root, "escape".as_ref()).unwrap();
        assert_eq!(l.kind(), libc::S_IFLNK);
        // Looking up a name "inside" the symlink must not reach /etc/passwd.
        assert!(u.lookup(&l, "passwd".as_ref()).is_err());
        assert_eq!(u.readlink(&l).unwrap(), "/etc");
    }
}

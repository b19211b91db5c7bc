//! The union core: the branch stack and every union rule, with no FUSE inside.
//!
//! Objects are named by their path inside the union plus the branches they were found
//! on (`Obj`). Every operation takes an `Obj` the caller got from `lookup` (or `root`),
//! does its work with `*at()` calls beneath the branch fds, and returns fresh `Obj`s
//! for whatever it changed. The FUSE adapter keeps `Obj`s in its node table.

pub mod branch;
mod copyup;
pub mod create;
mod delete;
pub mod error;
mod hardlinks;
mod inode;
mod lift;
mod lookup;
pub mod meta;
mod readdir;
mod rename;
pub mod setattr;
mod spares;
pub mod stackops;
pub(crate) mod sys;
pub mod whiteout;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

pub use branch::{Branch, Mode};
pub use error::{CoreError, Result};
pub use lift::Lift;
pub use lookup::{DirCursor, DirFds};
pub use readdir::DirEntry;
pub use whiteout::WhiteoutFormat;

use error::IoContext;

/// The stat of one instance of an object in a branch.
pub type Stat = libc::stat;

/// Branch indices (into the current stack, top first) where an object is present.
pub type Layers = SmallVec<[u16; 4]>;

/// How unlink and rmdir treat copies on lower branches (`-o delete=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteMode {
    /// Remove every rw copy, whiteout what an ro branch still shows (POSIX).
    All,
    /// Remove the top copy if rw; whiteout any lower copy. Lower branches stay pristine.
    Whiteout,
    /// Remove only the top copy; a lower version shows through (revert).
    First,
}

/// Where new objects go (`-o create=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    /// The highest branch holding the parent, if rw; else the topmost rw branch above.
    Parent,
    /// Always the topmost rw branch.
    Top,
}

/// The whiteout format asked for (`-o whiteout=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatChoice {
    /// `overlay` where the top rw branch supports it, else `wh`.
    Auto,
    /// Kernel overlayfs layout.
    Overlay,
    /// `.wh.` layout.
    Wh,
    /// unionfs-fuse's `.unionfs-fuse/PATH_HIDDEN~` layout.
    Meta,
}

/// Union behaviour chosen at mount time.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// `-o delete=`.
    pub delete: DeleteMode,
    /// `-o create=`.
    pub create: CreateMode,
    /// Copy-up allowed (unionfs-fuse mode without `-o cow`: no; a change to a lower
    /// object is refused instead, as unionfs-fuse does).
    pub copy_up: bool,
    /// unionfs-fuse `hide_meta_files`: listings leave out its meta directory and
    /// `.fuse_hidden*` files (they stay reachable by name).
    pub hide_meta_files: bool,
    /// `-o metacopy=on`: attribute changes of a lower file copy its metadata only (the
    /// kernel's `metacopy=on` layout); the data follows at the first write.
    pub metacopy: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            delete: DeleteMode::All,
            create: CreateMode::Parent,
            copy_up: true,
            hide_meta_files: false,
            metacopy: false,
        }
    }
}

/// The ordered branches and the format in force.
#[derive(Debug)]
pub struct Stack {
    /// Highest precedence first.
    pub branches: Vec<Branch>,
    /// Whiteout format in force.
    pub format: WhiteoutFormat,
    devs: Vec<u64>,
    /// Generation counter: each change of directory layers takes the next value.
    layers_gen: std::sync::atomic::AtomicU64,
    /// Every object older than this is stale (a directory renamed, a lift, `refresh`).
    floor: std::sync::atomic::AtomicU64,
    /// Directories that gained a layer (a copy-up) since `floor`, with the generation of
    /// that change: only their own objects from before it are stale, so a copy-up does
    /// not send every other node and cached fd back to a fresh lookup.
    changed_dirs: dashmap::DashMap<PathBuf, u64>,
    born: u64,
}

/// Past this many directories changed one by one, a change makes everything stale
/// (which empties the record).
const MAX_CHANGED_DIRS: usize = 4096;

impl Stack {
    /// Builds a stack, resolving `FormatChoice::Auto` against the top rw branch.
    pub fn new(branches: Vec<Branch>, choice: FormatChoice) -> std::io::Result<Stack> {
        // The overlay layout with `trusted.` xattrs when privileged, else (or when the
        // privilege is only a user namespace's root, which may not write `trusted.`) with
        // `user.` xattrs, which the kernel reads with `userxattr`.
        let candidates = if sys::geteuid() == 0 {
            vec![
                WhiteoutFormat::Overlay { user_xattr: false },
                WhiteoutFormat::Overlay { user_xattr: true },
            ]
        } else {
            vec![WhiteoutFormat::Overlay { user_xattr: true }]
        };
        let top_work = branches.iter().find_map(|b| b.work.as_ref());
        let overlay = match top_work {
            // The probe's whiteout device is the one the first whiteout links: a mount
            // makes one inode for it, not two.
            Some(w) => candidates
                .iter()
                .copied()
                .find(|f| w.make_shared_whiteout() && f.probe_xattrs(w.tmp.as_fd())),
            None => candidates.first().copied(),
        };
        let format = match (choice, overlay) {
            (FormatChoice::Wh, _) => WhiteoutFormat::Wh,
            (FormatChoice::Meta, _) => WhiteoutFormat::Meta,
            (_, Some(o)) => o,
            (FormatChoice::Auto, None) => WhiteoutFormat::Wh,
            (FormatChoice::Overlay, None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "whiteout=overlay needs 0/0 character devices and overlay xattrs, \
                     which this user cannot create on the top rw branch; use whiteout=wh",
                ))
            }
        };
        Ok(Stack::with_format(branches, format, 0))
    }

    /// A stack in a known format whose objects start at generation `born` (a stack
    /// that replaces another starts past every generation the old one handed out).
    pub(crate) fn with_format(branches: Vec<Branch>, format: WhiteoutFormat, born: u64) -> Stack {
        let mut devs: Vec<u64> = Vec::new();
        for b in &branches {
            if !devs.contains(&b.dev) {
                devs.push(b.dev);
            }
        }
        Stack {
            branches,
            format,
            devs,
            layers_gen: std::sync::atomic::AtomicU64::new(born),
            floor: std::sync::atomic::AtomicU64::new(born),
            changed_dirs: new_map(),
            born,
        }
    }

    /// Whether `obj` was found on this very stack (its branch indices mean something
    /// here); objects from an earlier stack must be looked up again.
    pub fn owns(&self, obj: &Obj) -> bool {
        obj.gen >= self.born
    }

    /// The current layer generation (see `Obj::gen`).
    pub fn layers_gen(&self) -> u64 {
        self.layers_gen.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Directory layers changed somewhere: objects found before must be looked up again.
    /// Called once the change is made, so that a lookup that may have seen the old state
    /// is older than the change.
    pub fn bump_layers(&self) {
        use std::sync::atomic::Ordering::AcqRel;
        let g = self.layers_gen.fetch_add(1, AcqRel) + 1;
        self.floor.fetch_max(g, AcqRel);
        self.changed_dirs.clear();
    }

    /// The directory `path` gained a layer (it was copied up): its objects found before
    /// are stale, no others.
    pub(crate) fn bump_dir(&self, path: &Path) {
        if self.changed_dirs.len() >= MAX_CHANGED_DIRS {
            return self.bump_layers();
        }
        let g = self
            .layers_gen
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        self.changed_dirs.insert(path.to_path_buf(), g);
    }

    /// Whether what was found at `path` at generation `gen` still holds.
    pub fn is_current(&self, gen: u64, path: &Path) -> bool {
        gen >= self.floor.load(std::sync::atomic::Ordering::Acquire)
            && (self.changed_dirs.is_empty()
                || self.changed_dirs.get(path).is_none_or(|t| gen >= *t))
    }

    /// The generation below which everything is stale (see [`Stack::is_current`]).
    pub fn floor(&self) -> u64 {
        self.floor.load(std::sync::atomic::Ordering::Acquire)
    }

    fn branch(&self, i: u16) -> &Branch {
        &self.branches[i as usize]
    }

    /// Whether branch `i` is read-write.
    pub fn is_rw(&self, i: u16) -> bool {
        self.branch(i).is_rw()
    }

    /// Whether the branch with this id is in the stack and read-write.
    pub fn is_rw_id(&self, id: u64) -> bool {
        self.branches.iter().any(|b| b.id == id && b.is_rw())
    }

    /// Index of the topmost rw branch.
    pub fn top_rw(&self) -> Option<u16> {
        self.branches
            .iter()
            .position(|b| b.is_rw())
            .map(|i| i as u16)
    }
}

/// The identity of the caller of an operation, for ownership of what it creates.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// fsuid.
    pub uid: u32,
    /// fsgid.
    pub gid: u32,
}

/// An object of the union: where it is and what it looked like when found.
#[derive(Clone, Debug)]
pub struct Obj {
    /// Path inside the union ("" for the root).
    pub path: PathBuf,
    /// Branches holding it, top first (directories: all merged layers; others: one).
    pub layers: Layers,
    /// lstat of the top instance.
    pub st: Stat,
    /// The mount-unique inode number (stable across copy-up; equal for hard links).
    pub ino: u64,
    /// A lower hard link whose inode was already copied up: its data lives in the
    /// hard-link index of this rw branch.
    pub(crate) indexed: Option<(u16, String)>,
    /// The stack's layer generation when this was found (stale once it moves on).
    pub gen: u64,
}

impl Obj {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        sys::is_dir(&self.st)
    }

    /// The file type bits.
    pub fn kind(&self) -> u32 {
        self.st.st_mode & libc::S_IFMT
    }

    fn top(&self) -> u16 {
        self.layers[0]
    }

    /// A metadata-only copy (`-o metacopy=on`): `layers[0]` holds the metadata, and
    /// the data is still the file of the same path in `layers[1]`.
    pub fn is_metacopy(&self) -> bool {
        !self.is_dir() && self.layers.len() > 1
    }

    /// Splits into (path, layers, ino, indexed) for compact storage.
    pub(crate) fn into_parts(self) -> (PathBuf, Layers, u64, Option<(u16, String)>, u64) {
        (self.path, self.layers, self.ino, self.indexed, self.gen)
    }

    /// Rebuilds an object from compact storage; only `st_mode` of `st` is known.
    pub(crate) fn from_parts(
        path: PathBuf,
        layers: Layers,
        mode: u32,
        ino: u64,
        indexed: Option<(u16, String)>,
        gen: u64,
    ) -> Obj {
        // SAFETY: libc::stat is plain old data; all-zero is a valid value.
        let mut st: Stat = unsafe { std::mem::zeroed() };
        st.st_mode = mode;
        Obj {
            path,
            layers,
            st,
            ino,
            indexed,
            gen,
        }
    }

    fn name(&self) -> &OsStr {
        self.path.file_name().unwrap_or(OsStr::new(""))
    }

    fn parent_path(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }
}

/// Stripe count of the per-object copy-up locks.
const LOCK_STRIPES: usize = 256;

/// A mounted union's semantics: the branch stack plus the mount-time rules.
pub struct Union {
    stack: RwLock<Arc<Stack>>,
    /// Mount-time rules.
    pub config: Config,
    locks: Vec<Mutex<()>>,
    /// Merged directories' link counts: (stack floor, `dir_epoch`, count), kept exact
    /// by mkdir and rmdir in the directory, dropped by a directory rename anywhere
    /// (`dir_epoch`) or a stack-wide change (the floor).
    nlink_cache: dashmap::DashMap<PathBuf, (u64, u64, u64)>,
    dir_epoch: std::sync::atomic::AtomicU64,
    /// Bumped by each mkdir and rmdir, so that a count taken meanwhile is not kept.
    subdir_changes: std::sync::atomic::AtomicU64,
    /// Operations hold it shared; a stack change holds it exclusively, so each change
    /// is atomic with respect to in-flight operations.
    gate: RwLock<()>,
    /// Operations that may change the tree: started so far, and in flight now (see
    /// [`Union::quiet_changes`]).
    changes: std::sync::atomic::AtomicU64,
    changes_in_flight: std::sync::atomic::AtomicU64,
    /// Counters for `ctl stats`.
    pub stats: Stats,
}

/// An operation in progress (see [`Union::op_guard`]).
pub struct OpGuard<'a> {
    _gate: parking_lot::RwLockReadGuard<'a, ()>,
    /// For an operation that may change the tree: the in-flight count it is part of.
    changes: Option<&'a std::sync::atomic::AtomicU64>,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.changes {
            c.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// What the union has done so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Copy-ups of non-directories done.
    pub copy_ups: std::sync::atomic::AtomicU64,
    /// Bytes those copy-ups copied.
    pub bytes_copied: std::sync::atomic::AtomicU64,
    /// File-system operations served.
    pub ops: std::sync::atomic::AtomicU64,
    /// Read and write requests the daemon served (passthrough handles send none).
    pub data_requests: std::sync::atomic::AtomicU64,
    /// Opens the kernel serves by FUSE passthrough.
    pub passthrough_opens: std::sync::atomic::AtomicU64,
    /// Files stored in the kernel's page cache at their open (no READ needed).
    pub prefilled: std::sync::atomic::AtomicU64,
}

impl Union {
    /// A union over `stack`.
    pub fn new(stack: Stack, config: Config) -> Union {
        Union {
            stack: RwLock::new(Arc::new(stack)),
            config,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            gate: RwLock::new(()),
            stats: Stats::default(),
            nlink_cache: new_map(),
            dir_epoch: std::sync::atomic::AtomicU64::new(0),
            subdir_changes: std::sync::atomic::AtomicU64::new(0),
            changes: std::sync::atomic::AtomicU64::new(0),
            changes_in_flight: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A directory appeared, went or moved: cached merged link counts are stale.
    pub(crate) fn dirs_changed(&self) {
        self.dir_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Held (shared) for the length of one file-system operation that may change the
    /// tree (any but those [`Union::read_guard`] serves).
    /// Recursive: a handler may take it again (a waiting change must not deadlock it).
    pub fn op_guard(&self) -> OpGuard<'_> {
        use std::sync::atomic::Ordering::SeqCst;
        let mut guard = self.read_guard();
        self.changes_in_flight.fetch_add(1, SeqCst);
        self.changes.fetch_add(1, SeqCst);
        guard.changes = Some(&self.changes_in_flight);
        guard
    }

    /// [`Union::op_guard`] for an operation that changes nothing (a lookup, stat,
    /// listing, read, or an open for reading).
    pub fn read_guard(&self) -> OpGuard<'_> {
        self.stats
            .ops
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpGuard {
            _gate: self.gate.read_recursive(),
            changes: None,
        }
    }

    /// The number of changing operations started so far, if none is in flight now. A
    /// result taken from the tree after this returned `Some(n)` still holds while
    /// [`Union::unchanged_since`]`(n)`, up to changes behind the union's back.
    pub fn quiet_changes(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.changes.load(SeqCst);
        (self.changes_in_flight.load(SeqCst) == 0).then_some(n)
    }

    /// Whether no changing operation started since [`Union::quiet_changes`] gave `n`.
    pub fn unchanged_since(&self, n: u64) -> bool {
        self.changes.load(std::sync::atomic::Ordering::SeqCst) == n
    }

    /// Replaces the branch stack in one step: waits for in-flight operations, builds
    /// the new stack from the current one with `change`, and swaps it in. Every object
    /// found before is stale afterwards.
    pub fn change_stack<T, E>(
        &self,
        change: impl FnOnce(&Stack) -> std::result::Result<(Vec<Branch>, T), E>,
    ) -> std::result::Result<T, E> {
        self.change_stack_then(change, |_| Ok(()))
    }

    /// [`Union::change_stack`], then `then` on the new stack while operations still
    /// wait; if `then` fails, the old branch list comes back (as a stack newer than
    /// anything found meanwhile) and its error is returned.
    pub fn change_stack_then<T, E>(
        &self,
        change: impl FnOnce(&Stack) -> std::result::Result<(Vec<Branch>, T), E>,
        then: impl FnOnce(&Union) -> std::result::Result<(), E>,
    ) -> std::result::Result<T, E> {
        let _excl = self.gate.write();
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let old = self.stack();
        let (branches, out) = change(&old)?;
        let new = Stack::with_format(branches, old.format, old.layers_gen() + 1);
        *self.stack.write() = Arc::new(new);
        let done = then(self);
        // Whatever `then` changed counts as a change too (see `Union::quiet_changes`).
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = done {
            let born = self.stack().layers_gen() + 1;
            let back = Stack::with_format(old.branches.clone(), old.format, born);
            *self.stack.write() = Arc::new(back);
            return Err(e);
        }
        Ok(out)
    }

    /// The stack in force now (operations work on one consistent snapshot of it).
    pub fn stack(&self) -> Arc<Stack> {
        self.stack.read().clone()
    }

    fn lock_for(&self, path: &Path) -> &Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCK_STRIPES]
    }

    /// The root directory.
    pub fn root(&self) -> Result<Obj> {
        let stack = self.stack();
        let gen = stack.layers_gen();
        let mut layers = Layers::new();
        let mut st = None;
        for (i, b) in stack.branches.iter().enumerate() {
            let s = sys::fstat(b.fd()).ctx("stat", Path::new("/"))?;
            st.get_or_insert(s);
            layers.push(i as u16);
        }
        let st = st.ok_or(CoreError::NotFound {
            op: "root",
            path: PathBuf::new(),
        })?;
        Ok(Obj {
            path: PathBuf::new(),
            layers,
            st,
            ino: fuser_root_ino(),
            indexed: None,
            gen,
        })
    }

    /// The mount is ending: what was made ahead for it goes (spare files).
    pub fn end_of_mount(&self) {
        for b in &self.stack().branches {
            if let Some(w) = &b.work {
                w.stop_spares();
            }
        }
    }

    /// Reads a symlink.
    pub fn readlink(&self, obj: &Obj) -> Result<std::ffi::OsString> {
        let stack = self.stack();
        let dir = parent_fd(&stack, obj.top(), obj.parent_path()).ctx("readlink", &obj.path)?;
        sys::readlinkat(dir.as_fd(), obj.name()).ctx("readlink", &obj.path)
    }

    /// Opens an object's data. Writing access copies it up first (`O_TRUNC`: metadata
    /// only). Returns the open file and, when it moved, the object's new state.
    pub fn open(&self, obj: &Obj, flags: i32) -> Result<(OwnedFd, Option<Obj>)> {
        self.open_with(obj, flags, true)
    }

    /// `open` for a handle that already exists and is about to write (it moved with a
    /// snapshot): its data must come up now, never as a metadata-only copy.
    pub fn reopen_for_write(&self, obj: &Obj, flags: i32) -> Result<(OwnedFd, Option<Obj>)> {
        self.open_with(obj, flags, false)
    }

    /// Whether writes to `obj` land in the file it is now (no copy-up would move it):
    /// what a handle that cannot follow a move (FUSE passthrough) needs.
    pub fn is_final(&self, obj: &Obj) -> bool {
        obj.indexed.is_none()
            && !obj.is_metacopy()
            && self.write_target(&self.stack(), obj.top()) == Some(obj.top())
    }

    fn open_with(&self, obj: &Obj, flags: i32, allow_meta: bool) -> Result<(OwnedFd, Option<Obj>)> {
        let acc = flags & libc::O_ACCMODE;
        let writes = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let mut moved = None;
        let mut target = obj.clone();
        if writes || (flags & libc::O_TRUNC != 0) {
            let how = if flags & libc::O_TRUNC != 0 {
                copyup::Data::Truncate(0)
            } else if self.config.metacopy && allow_meta && acc == libc::O_WRONLY {
                // Nothing can be read through this fd: the data may wait for the
                // first write (`reopen_for_write`), which `touch` never makes.
                copyup::Data::Meta
            } else {
                copyup::Data::Full
            };
            let up = self.copy_up(obj, how)?;
            if up.layers != obj.layers || up.indexed != obj.indexed {
                moved = Some(up.clone());
            }
            target = up;
        }
        let stack = self.stack();
        let open_flags = flags
            & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_PATH);
        let fd = if let Some((k, key)) = &target.indexed {
            let w = stack.branch(*k).work.as_ref().ok_or(CoreError::NotFound {
                op: "open",
                path: obj.path.clone(),
            })?;
            w.index()
                .and_then(|ix| sys::openat(ix, OsStr::new(key), open_flags & !libc::O_TRUNC, 0))
        } else {
            // A metadata-only copy is read from the file that still holds its data.
            let from = if target.is_metacopy() && !writes {
                target.layers[1]
            } else {
                target.top()
            };
            let dir = parent_fd(&stack, from, target.parent_path()).ctx("open", &obj.path)?;
            sys::openat(dir.as_fd(), target.name(), open_flags | libc::O_NONBLOCK, 0).inspect(
                |fd| {
                    // O_NONBLOCK only kept fifos from blocking the daemon; drop it again.
                    if flags & libc::O_NONBLOCK == 0 {
                        unsafe {
                            let fl =
                                libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::F_GETFL);
                            libc::fcntl(
                                std::os::fd::AsRawFd::as_raw_fd(fd),
                                libc::F_SETFL,
                                fl & !libc::O_NONBLOCK,
                            );
                        }
                    }
                },
            )
        }
        .ctx("open", &obj.path)?;
        Ok((fd, moved))
    }

    /// File system statistics of the branch new data goes to.
    pub fn statfs(&self) -> Result<libc::statvfs> {
        let stack = self.stack();
        let i = stack.top_rw().unwrap_or(0);
        sys::fstatvfs(stack.branch(i).fd()).ctx("statfs", Path::new("/"))
    }
}

/// Process-wide setup the daemon needs, before it starts threads: callers' modes are
/// applied exactly, so the daemon's own umask must not interfere; and its fd table is
/// grown once, now (see [`sys::reserve_fd_table`]).
pub fn prepare_process() {
    sys::umask_zero();
    sys::reserve_fd_table(4096);
}

pub(crate) use sys::cpus;

/// A concurrent map with dashmap's default sharding (four shards per CPU), counted
/// without std's cgroup reads (see `sys::cpus`).
pub(crate) fn new_map<K: Eq + std::hash::Hash, V>() -> dashmap::DashMap<K, V> {
    static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let shards = *SHARDS.get_or_init(|| (4 * sys::cpus()).next_power_of_two().max(2));
    dashmap::DashMap::with_shard_amount(shards)
}

/// FUSE's root node id, which is also the root's st_ino.
pub const fn fuser_root_ino() -> u64 {
    1
}

/// Opens (as `O_PATH`) the directory `rel` in branch `i`.
fn parent_fd(stack: &Stack, i: u16, rel: &Path) -> std::io::Result<OwnedFd> {
    sys::open_dir_path(stack.branch(i).fd(), rel)
}

// Plain fd operations the adapter needs on open files.
pub(crate) use sys::{
    fstat as sys_fstat, fsync as sys_fsync, pread as sys_pread, pwrite as sys_pwrite,
};

#[cfg(test)]
pub(crate) mod testutil;

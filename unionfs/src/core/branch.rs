//! Branches: a directory, its mode, and the handles the core works through.
//!
//! A branch is opened once as an `O_PATH` directory fd; every access below it goes
//! through `*at()` calls on that fd (see `sys.rs`). A read-write branch also owns a
//! work directory on the same filesystem, where copy-ups are built before they are
//! renamed into place, and where the hard-link index lives.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::sys;

/// Whether a branch takes writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Read-write: copy-ups, new objects and whiteouts may go here.
    Rw,
    /// Read-only: never modified.
    Ro,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Rw => "rw",
            Mode::Ro => "ro",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rw" => Ok(Mode::Rw),
            "ro" | "nfsro" | "rr" => Ok(Mode::Ro),
            _ => Err(format!("unknown branch mode '{s}' (use rw or ro)")),
        }
    }
}

/// Name of the hidden work directory a native-mode rw branch keeps at its root.
pub const HIDDEN_WORK_NAME: &str = ".unionfs-work";

/// Where a rw branch builds copy-ups and keeps its hard-link index.
#[derive(Debug)]
pub struct WorkDir {
    /// The work directory's path (for messages).
    pub path: PathBuf,
    /// The work directory itself.
    dir: OwnedFd,
    /// Scratch space: copies under construction. Emptied at mount.
    pub(crate) tmp: OwnedFd,
    /// Hard-link index: one name per copied-up multiply-linked lower inode. Made with the
    /// first entry (most mounts never need one, and an inode costs a mount time).
    index: std::sync::OnceLock<OwnedFd>,
    making_index: parking_lot::Mutex<()>,
    /// Whether `WHITEOUT_NAME` is the whiteout inode that every new whiteout of this
    /// branch is a hard link of (overlay format), as kernel overlayfs does since Linux
    /// 5.8: a link allocates no inode, and inode allocation is most of a delete's cost on
    /// ext4. The mount's probe makes it.
    shared_whiteout: parking_lot::Mutex<bool>,
    /// Set when the filesystem refuses such links: every whiteout is then its own inode.
    no_shared_whiteout: AtomicBool,
    counter: AtomicU64,
    /// Empty files in `tmp` for copy-ups to start from (see `spares.rs`).
    spares: super::spares::Spares,
    /// Shared flock on `lock` in a native work dir, held while the branch is rw here, so
    /// that `unionfs merge` (which takes it exclusively) never rewrites a live branch.
    _lock: Option<OwnedFd>,
}

/// Name of the lock file in a native work directory (see `WorkDir::_lock`).
pub const LOCK_NAME: &str = "lock";

/// Name of the shared whiteout inode in a work directory (see `WorkDir::shared_whiteout`).
const WHITEOUT_NAME: &str = "whiteout";

impl WorkDir {
    /// Opens (creating if needed) the work directory at `root/rel` beneath `root`.
    pub(crate) fn open(
        root: BorrowedFd<'_>,
        rel: &Path,
        shown: PathBuf,
        lock: bool,
    ) -> io::Result<WorkDir> {
        ensure_dir(root, rel)?;
        let dir = sys::open_dir_path(root, rel)?;
        let lock = if lock {
            let f = sys::openat(
                dir.as_fd(),
                std::ffi::OsStr::new(LOCK_NAME),
                libc::O_RDWR | libc::O_CREAT,
                0o600,
            )?;
            // SAFETY: plain flock on our own fd.
            if unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    libc::LOCK_SH | libc::LOCK_NB,
                )
            } != 0
            {
                let e = io::Error::last_os_error();
                return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        "a merge is running on this branch; wait for it to finish",
                    )
                } else {
                    e
                });
            }
            Some(f)
        } else {
            None
        };
        let fresh = ensure_dir(dir.as_fd(), Path::new("tmp"))?;
        let tmp = sys::open_dir_path(dir.as_fd(), Path::new("tmp"))?;
        if !fresh {
            clear_dir(tmp.as_fd())?;
        }
        let index = std::sync::OnceLock::new();
        match sys::open_dir_path(dir.as_fd(), Path::new("index")) {
            Ok(fd) => {
                let _ = index.set(fd);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let spares = super::spares::Spares::new(&tmp, super::spares::name_prefix())?;
        Ok(WorkDir {
            path: shown,
            dir,
            tmp,
            spares,
            index,
            making_index: parking_lot::Mutex::new(()),
            shared_whiteout: parking_lot::Mutex::new(false),
            no_shared_whiteout: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The hard-link index, if it was ever made (None: nothing is indexed).
    pub(crate) fn index_if_made(&self) -> Option<BorrowedFd<'_>> {
        self.index.get().map(|fd| fd.as_fd())
    }

    /// The hard-link index, made on first use.
    pub(crate) fn index(&self) -> io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.index_if_made() {
            return Ok(fd);
        }
        let _making = self.making_index.lock();
        if self.index.get().is_none() {
            ensure_dir(self.dir.as_fd(), Path::new("index"))?;
            let _ = self
                .index
                .set(sys::open_dir_path(self.dir.as_fd(), Path::new("index"))?);
        }
        self.index_if_made()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// The entry `key` in the hard-link index, if there is one.
    pub(crate) fn indexed(&self, key: &str) -> io::Result<Option<super::Stat>> {
        match self.index_if_made() {
            Some(ix) => sys::stat_opt(ix, OsStr::new(key)),
            None => Ok(None),
        }
    }

    /// A name in the scratch directory for a copy of a regular file, and whether a file
    /// (empty, regular, the daemon's) is there already: a spare made ahead.
    pub(crate) fn temp_file(&self) -> (std::ffi::OsString, bool) {
        match self.spares.take() {
            Some(name) => (name, true),
            None => (self.temp_name().into(), false),
        }
    }

    /// Removes the spare files (the mount is ending).
    pub(crate) fn stop_spares(&self) {
        self.spares.stop();
    }

    /// A fresh name in the scratch directory.
    pub(crate) fn temp_name(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("#{:x}.{n}", std::process::id())
    }

    /// Makes the shared whiteout inode unless it is there (one a stopped mount left is
    /// made anew: this mount's user must be able to make one). The mount's format probe
    /// calls this, so that the device it makes is the one the first whiteout links.
    pub(crate) fn make_shared_whiteout(&self) -> bool {
        let mut made = self.shared_whiteout.lock();
        if !*made {
            let name = OsStr::new(WHITEOUT_NAME);
            let _ = sys::unlinkat(self.dir.as_fd(), name, false);
            *made = sys::mknodat(self.dir.as_fd(), name, libc::S_IFCHR, 0).is_ok();
        }
        *made
    }

    /// Makes `name` in `dir` (absent there) an overlay whiteout by hard-linking the shared
    /// whiteout inode. `Ok(false)`: no link could be made (another filesystem, links
    /// refused); the caller then makes a whiteout of its own.
    pub(crate) fn link_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        let shared = OsStr::new(WHITEOUT_NAME);
        // Twice at most: the shared inode may be full (EMLINK) or gone (cleared by hand).
        for _ in 0..2 {
            if self.no_shared_whiteout.load(Ordering::Relaxed) || !self.make_shared_whiteout() {
                return Ok(false);
            }
            match sys::linkat(self.dir.as_fd(), shared, dir, name) {
                Ok(()) => return Ok(true),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EMLINK) | Some(libc::ENOENT) => {
                        // The next round makes a new one. ENOENT may also mean that `dir`
                        // itself is gone: the caller's own mknod then says so.
                        *self.shared_whiteout.lock() = false;
                    }
                    Some(libc::EEXIST) => return Err(e),
                    // A directory on another filesystem below the branch root.
                    Some(libc::EXDEV) => return Ok(false),
                    _ => {
                        tracing::debug!(
                            "whiteouts are not hard-linked on {}: {e}",
                            self.path.display()
                        );
                        self.no_shared_whiteout.store(true, Ordering::Relaxed);
                        return Ok(false);
                    }
                },
            }
        }
        Ok(false)
    }
}

/// Makes `rel` in `dir`; `false`: it was there.
fn ensure_dir(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<bool> {
    match sys::mkdirat(dir, rel.as_os_str(), 0o700) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes everything inside `dir` (leftovers of copy-ups a crash interrupted).
pub(crate) fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    let fd = sys::open_beneath(dir, Path::new(""), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for e in sys::read_dir_fd(&fd)? {
        remove_tree(dir, &e.name)?;
    }
    Ok(())
}

/// Removes `name` in `dir`, recursively if it is a directory, never following symlinks.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match sys::stat_opt(dir, name)? {
        Some(st) => st,
        None => return Ok(()),
    };
    if sys::is_dir(&st) {
        let sub = sys::open_dir_path(dir, Path::new(name))?;
        clear_dir(sub.as_fd())?;
        sys::unlinkat(dir, name, true)
    } else {
        sys::unlinkat(dir, name, false)
    }
}

/// One branch of the union. Cloning shares the open directory and work dir (a stack
/// change builds a new list of branches from the old ones).
#[derive(Debug, Clone)]
pub struct Branch {
    /// The directory, as given (canonicalized).
    pub path: PathBuf,
    /// rw or ro.
    pub mode: Mode,
    pub(crate) fd: std::sync::Arc<OwnedFd>,
    /// The backing filesystem's device number.
    pub dev: u64,
    /// Whether the backing filesystem's `d_ino` is the `st_ino` stat reports (local
    /// disk filesystems; not overlayfs, FUSE or network ones), so that a listing alone
    /// tells an entry's number.
    pub(crate) dino_is_ino: bool,
    pub(crate) work: Option<std::sync::Arc<WorkDir>>,
    /// Unique for the life of the process: names the branch across stack changes.
    pub id: u64,
}

/// Filesystems (`f_type`) whose getdents `d_ino` is the inode's `st_ino`: ext2/3/4,
/// xfs, btrfs, tmpfs.
const DINO_IS_INO: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994];

static NEXT_BRANCH_ID: AtomicU64 = AtomicU64::new(1);

impl Branch {
    /// Opens a branch directory. The caller has validated the path.
    pub fn open(path: &Path, mode: Mode) -> io::Result<Branch> {
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // The branch root itself is opened by path (it was given by the user); from here
        // on everything goes through the fd.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let st = sys::fstat(fd.as_fd())?;
        let dino_is_ino = sys::fstatfs_type(fd.as_fd()).is_ok_and(|t| DINO_IS_INO.contains(&t));
        Ok(Branch {
            path: path.to_path_buf(),
            mode,
            fd: std::sync::Arc::new(fd),
            dev: st.st_dev,
            dino_is_ino,
            work: None,
            id: NEXT_BRANCH_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Gives a rw branch its work directory: `workdir` (overlay style) or the hidden one,
    /// which in unionfs-fuse's layout (`meta`) sits inside `.unionfs-fuse`, where
    /// unionfs-fuse's own `hide_meta_files` hides it too.
    pub fn attach_work(&mut self, workdir: Option<&Path>, meta: bool) -> io::Result<()> {
        let wd = match workdir {
            Some(w) => {
                let wb = Branch::open(w, Mode::Rw)?;
                if wb.dev != self.dev {
                    return Err(io::Error::from_raw_os_error(libc::EXDEV));
                }
                WorkDir::open(
                    wb.fd.as_fd(),
                    Path::new("unionfs"),
                    w.join("unionfs"),
                    false,
                )?
            }
            None if meta => {
                let m = std::ffi::OsStr::new(super::meta::META_DIR);
                match sys::mkdirat(self.fd.as_fd(), m, 0o770) {
                    Ok(()) => sys::fchmodat(self.fd.as_fd(), m, 0o770)?,
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                // Opened without following a symlink there: the work dir is made inside.
                let meta_fd = sys::open_dir_path(self.fd.as_fd(), Path::new(m))?;
                WorkDir::open(
                    meta_fd.as_fd(),
                    Path::new(HIDDEN_WORK_NAME),
                    self.path.join(m).join(HIDDEN_WORK_NAME),
                    true,
                )?
            }
            None => WorkDir::open(
                self.fd.as_fd(),
                Path::new(HIDDEN_WORK_NAME),
                self.path.join(HIDDEN_WORK_NAME),
                true,
            )?,
        };
        self.work = Some(std::sync::Arc::new(wd));
        Ok(())
    }

    /// The branch root fd.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether writes may land here.
    pub fn is_rw(&self) -> bool {
        self.mode == Mode::Rw
    }
}

//! FUSE passthrough (kernel 6.9+): reads, writes and mmap of an open file go from the
//! kernel straight to the branch file, without a round trip through the daemon.
//!
//! The kernel's rules shape this module. While any passthrough handle of an inode is
//! open, every new open of that inode must pass through to the *same* backing file (a
//! different one is EBUSY, a page-cache open EIO); while a page-cache handle is open, a
//! passthrough open is refused. So the table tracks, per inode, which io mode its open
//! handles use, and hands out one backing id per inode while handles are open.
//!
//! A union file can change its backing file (copy-up); a passthrough handle cannot
//! follow. Hence the policy: `auto` passes through only files already on a read-write
//! branch (their final place; copy-up never moves them), `on` also lower files opened
//! for reading, at the price that a write-open needing to copy such a file up while it
//! is held fails with ETXTBSY. When a branch stops taking writes (a snapshot, `mode
//! ro`), the files passthrough handles hold there move up with their inode instead
//! (`Control::lift_passthrough_files`), so the backing file stays the union's file.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long an open that conflicts with passthrough handles waits for them to close: the
/// kernel sends RELEASE asynchronously, so a handle closed just before may still count.
const RELEASE_GRACE: Duration = Duration::from_millis(500);

/// `-o passthrough=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PassthroughMode {
    /// Every read and write goes through the daemon.
    Off,
    /// Files on read-write branches (the default).
    #[default]
    Auto,
    /// Also lower files opened read-only.
    On,
}

impl std::str::FromStr for PassthroughMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "0" | "no" => Ok(PassthroughMode::Off),
            "auto" => Ok(PassthroughMode::Auto),
            "on" | "1" | "yes" => Ok(PassthroughMode::On),
            _ => Err(format!("option passthrough={s}: expected off, auto or on")),
        }
    }
}

/// The file an open reaches: what decides whether it may pass through.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenTarget {
    /// (st_dev, st_ino) of the branch file.
    pub(crate) file: (u64, u64),
    /// The file is on a read-write branch: copy-up will not move it.
    pub(crate) on_rw_branch: bool,
    /// A regular file (the kernel passes through nothing else).
    pub(crate) regular: bool,
    /// The handle may write.
    pub(crate) writable: bool,
}

/// How the kernel is to do io on a new handle.
#[derive(Debug)]
pub(crate) enum IoMode<B> {
    /// Through the daemon and the page cache; `keep_cache` false when the page cache may
    /// hold bytes older than what passthrough writes left in the file.
    Cached { keep_cache: bool },
    /// Straight to the backing file with this id.
    Passthrough(Arc<B>),
}

enum InodeIo<B> {
    Cached {
        opens: u32,
    },
    Passthrough {
        backing: Arc<B>,
        file: (u64, u64),
        opens: u32,
    },
}

/// Per-inode io modes of the open handles; `B` is the kernel's backing id.
pub(crate) struct PassthroughTable<B> {
    mode: PassthroughMode,
    /// The kernel accepted FUSE_PASSTHROUGH at init and has not refused a backing file
    /// for want of privilege.
    usable: AtomicBool,
    inodes: Mutex<HashMap<u64, InodeIo<B>>>,
    /// Signalled when an inode's last handle is released.
    released: Condvar,
    /// Inodes written through passthrough since their last page-cache open.
    written: Mutex<HashSet<u64>>,
}

/// Why an open cannot be served in a mode the kernel accepts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy;

impl<B> PassthroughTable<B> {
    pub(crate) fn new(mode: PassthroughMode) -> Self {
        PassthroughTable {
            mode,
            usable: AtomicBool::new(false),
            inodes: Mutex::new(HashMap::new()),
            released: Condvar::new(),
            written: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn mode(&self) -> PassthroughMode {
        self.mode
    }

    /// The kernel granted passthrough at init.
    pub(crate) fn set_usable(&self, yes: bool) {
        self.usable
            .store(yes && self.mode != PassthroughMode::Off, Ordering::Relaxed);
    }

    pub(crate) fn usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// The branch file the passthrough handles of `ino` use, if it has any.
    pub(crate) fn backing_file(&self, ino: u64) -> Option<(u64, u64)> {
        match self.inodes.lock().get(&ino) {
            Some(InodeIo::Passthrough { file, .. }) => Some(*file),
            _ => None,
        }
    }

    /// Waits a moment for the passthrough handles of `ino` to be released (the kernel
    /// sends RELEASE after close returns); true if some are still open.
    pub(crate) fn still_held(&self, ino: u64) -> bool {
        let mut inodes = self.inodes.lock();
        self.wait_while(&mut inodes, RELEASE_GRACE, |m| {
            matches!(m.get(&ino), Some(InodeIo::Passthrough { .. }))
        })
    }

    /// Waits, releases waking it, until `cond` is false or `grace` has passed; returns
    /// whether `cond` still holds.
    fn wait_while(
        &self,
        inodes: &mut parking_lot::MutexGuard<'_, HashMap<u64, InodeIo<B>>>,
        grace: Duration,
        cond: impl Fn(&HashMap<u64, InodeIo<B>>) -> bool,
    ) -> bool {
        let deadline = Instant::now() + grace;
        while cond(inodes) {
            if self.released.wait_until(inodes, deadline).timed_out() {
                return cond(inodes);
            }
        }
        false
    }

    /// Picks the io mode for a new handle of `ino` and counts it; `open_backing`
    /// registers the branch file with the kernel when a new backing id is needed.
    /// Every `Ok` must be paired with one [`PassthroughTable::release`].
    pub(crate) fn open(
        &self,
        ino: u64,
        t: OpenTarget,
        open_backing: impl FnOnce() -> std::io::Result<B>,
    ) -> Result<IoMode<B>, Busy> {
        let mut inodes = self.inodes.lock();
        // The union moved the file under open passthrough handles: only once they are
        // gone may the inode pass through to (or be cached from) another file. A reader
        // meanwhile shares their backing file (the moved file's former place); a writer
        // cannot (its writes would miss the copy).
        if t.writable
            && self.wait_while(&mut inodes, RELEASE_GRACE, |m| {
                matches!(m.get(&ino), Some(InodeIo::Passthrough { file, .. }) if *file != t.file)
            })
        {
            return Err(Busy);
        }
        match inodes.get_mut(&ino) {
            Some(InodeIo::Passthrough { backing, opens, .. }) => {
                *opens += 1;
                if t.writable {
                    self.written.lock().insert(ino);
                }
                return Ok(IoMode::Passthrough(backing.clone()));
            }
            Some(InodeIo::Cached { opens }) => {
                *opens += 1;
                return Ok(IoMode::Cached {
                    keep_cache: !self.written.lock().remove(&ino),
                });
            }
            None => {}
        }
        let eligible = self.usable()
            && t.regular
            && (t.on_rw_branch || (self.mode == PassthroughMode::On && !t.writable));
        if eligible {
            match open_backing() {
                Ok(b) => {
                    let backing = Arc::new(b);
                    inodes.insert(
                        ino,
                        InodeIo::Passthrough {
                            backing: backing.clone(),
                            file: t.file,
                            opens: 1,
                        },
                    );
                    if t.writable {
                        self.written.lock().insert(ino);
                    }
                    return Ok(IoMode::Passthrough(backing));
                }
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    // Backing files need CAP_SYS_ADMIN in the initial user namespace.
                    if self.usable.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            "FUSE passthrough refused by the kernel ({e}); serving reads and writes through the daemon"
                        );
                    }
                }
                // E.g. a branch on a stacked filesystem: this file goes through the daemon.
                Err(e) => tracing::debug!("no passthrough for inode {ino}: {e}"),
            }
        }
        inodes.insert(ino, InodeIo::Cached { opens: 1 });
        Ok(IoMode::Cached {
            keep_cache: !self.written.lock().remove(&ino),
        })
    }

    /// A handle of `ino` closed; the last one of an inode frees its backing id.
    pub(crate) fn release(&self, ino: u64) {
        let mut inodes = self.inodes.lock();
        let last = match inodes.get_mut(&ino) {
            Some(InodeIo::Cached { opens }) | Some(InodeIo::Passthrough { opens, .. }) => {
                *opens = opens.saturating_sub(1);
                *opens == 0
            }
            None => false,
        };
        if last {
            inodes.remove(&ino);
            self.released.notify_all();
        }
    }

    /// Inodes with passthrough handles open (for stats).
    pub(crate) fn passthrough_inodes(&self) -> usize {
        self.inodes
            .lock()
            .values()
            .filter(|v| matches!(v, InodeIo::Passthrough { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(file: u64, rw: bool, writable: bool) -> OpenTarget {
        OpenTarget {
            file: (1, file),
            on_rw_branch: rw,
            regular: true,
            writable,
        }
    }

    fn table(mode: PassthroughMode) -> PassthroughTable<u32> {
        let t = PassthroughTable::new(mode);
        t.set_usable(true);
        t
    }

    fn is_pt(m: &IoMode<u32>) -> Option<u32> {
        match m {
            IoMode::Passthrough(b) => Some(**b),
            IoMode::Cached { .. } => None,
        }
    }

    #[test]
    fn auto_passes_through_files_on_rw_branches_only() {
        let t = table(PassthroughMode::Auto);
        assert_eq!(
            is_pt(&t.open(1, target(10, true, true), || Ok(7)).unwrap()),
            Some(7)
        );
        assert_eq!(
            is_pt(&t.open(2, target(20, false, false), || Ok(8)).unwrap()),
            None
        );
        let on = table(PassthroughMode::On);
        assert_eq!(
            is_pt(&on.open(2, target(20, false, false), || Ok(8)).unwrap()),
            Some(8)
        );
        // A lower file opened for writing gets copied up first; never pass the lower one.
        assert_eq!(
            is_pt(&on.open(3, target(30, false, true), || Ok(9)).unwrap()),
            None
        );
        let off = table(PassthroughMode::Off);
        assert!(!off.usable());
        assert_eq!(
            is_pt(&off.open(1, target(10, true, true), || Ok(7)).unwrap()),
            None
        );
    }

    #[test]
    fn one_backing_id_per_inode_while_handles_are_open() {
        let t = table(PassthroughMode::Auto);
        let mut made = 0;
        for _ in 0..3 {
            let m = t
                .open(1, target(10, true, false), || {
                    made += 1;
                    Ok(made)
                })
                .unwrap();
            assert_eq!(is_pt(&m), Some(1));
        }
        assert_eq!(made, 1);
        assert_eq!(t.passthrough_inodes(), 1);
        for _ in 0..3 {
            t.release(1);
        }
        assert_eq!(t.passthrough_inodes(), 0);
        // All closed: the next open registers the file again.
        assert_eq!(
            is_pt(&t.open(1, target(10, true, false), || Ok(5)).unwrap()),
            Some(5)
        );
    }

    #[test]
    fn a_moved_file_under_passthrough_handles_is_busy() {
        let t = table(PassthroughMode::On);
        t.open(1, target(10, false, false), || Ok(1)).unwrap();
        assert_eq!(t.backing_file(1), Some((1, 10)));
        assert_eq!(
            t.open(1, target(11, true, true), || Ok(2)).unwrap_err(),
            Busy
        );
        // A reader shares the backing file the others use.
        assert_eq!(
            is_pt(&t.open(1, target(11, true, false), || Ok(3)).unwrap()),
            Some(1)
        );
        t.release(1);
        t.release(1);
        assert!(!t.still_held(1));
        assert_eq!(
            is_pt(&t.open(1, target(11, true, true), || Ok(2)).unwrap()),
            Some(2)
        );
    }

    #[test]
    fn a_conflicting_open_waits_for_a_release_in_flight() {
        let t = Arc::new(table(PassthroughMode::On));
        t.open(1, target(10, false, false), || Ok(1)).unwrap();
        let t2 = t.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t2.release(1);
        });
        assert!(!t.still_held(1));
        closer.join().unwrap();
        assert_eq!(
            is_pt(&t.open(1, target(11, true, true), || Ok(2)).unwrap()),
            Some(2)
        );
    }

    #[test]
    fn page_cache_handles_keep_later_opens_in_the_page_cache() {
        let t = table(PassthroughMode::Auto);
        // Not eligible (lower, auto): cached; then the file is on rw but the cached
        // handle is still open, so the kernel would refuse passthrough.
        assert!(is_pt(&t.open(1, target(10, false, false), || Ok(1)).unwrap()).is_none());
        assert!(is_pt(&t.open(1, target(11, true, true), || Ok(2)).unwrap()).is_none());
        t.release(1);
        t.release(1);
        assert_eq!(
            is_pt(&t.open(1, target(11, true, true), || Ok(2)).unwrap()),
            Some(2)
        );
    }

    #[test]
    fn a_page_cache_open_after_passthrough_writes_drops_the_cache_once() {
        let t = table(PassthroughMode::Auto);
        t.open(1, target(10, true, true), || Ok(1)).unwrap();
        t.release(1);
        let cached = |t: &PassthroughTable<u32>| match t
            .open(1, target(10, false, false), || Ok(1))
            .unwrap()
        {
            IoMode::Cached { keep_cache } => keep_cache,
            IoMode::Passthrough(_) => panic!("expected a page-cache open"),
        };
        assert!(!cached(&t));
        assert!(cached(&t));
    }

    #[test]
    fn refused_backing_falls_back_and_eperm_disables_passthrough() {
        let t = table(PassthroughMode::Auto);
        let m = t
            .open(1, target(10, true, false), || {
                Err(std::io::Error::from_raw_os_error(libc::ELOOP))
            })
            .unwrap();
        assert!(is_pt(&m).is_none());
        assert!(t.usable());
        let m = t
            .open(2, target(20, true, false), || {
                Err(std::io::Error::from_raw_os_error(libc::EPERM))
            })
            .unwrap();
        assert!(is_pt(&m).is_none());
        assert!(!t.usable());
        assert!(is_pt(&t.open(3, target(30, true, false), || Ok(3)).unwrap()).is_none());
    }
}

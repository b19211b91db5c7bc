//! Open files and directories.
//!
//! A file handle holds the backing fd and the branch it was opened on; a read-only
//! handle whose object has since been copied up is reopened from the copy on its next
//! read, so every open of a file sees the same data (as overlayfs does since 4.19).
//! A directory handle holds the merged listing taken at its first read, which makes
//! readdir offsets stable for the life of the handle.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::core::DirEntry;

pub(crate) struct FileHandle {
    pub(crate) ino: u64,
    pub(crate) fd: RwLock<Arc<OwnedFd>>,
    /// (branch id, indexed) the fd was opened on.
    pub(crate) opened_on: Mutex<(u64, bool)>,
    pub(crate) writable: bool,
    /// open(2) flags, to reopen the file where it moved.
    pub(crate) flags: i32,
    /// How the kernel does this handle's io.
    pub(crate) io: Io,
}

/// A file handle's io mode, as counted in the passthrough table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Io {
    /// Passthrough was never usable: not counted.
    Uncounted,
    /// Through the daemon and the page cache.
    Cached,
    /// Straight to the backing file: reads and writes never reach the daemon.
    Passthrough,
}

pub(crate) struct DirHandle {
    pub(crate) entries: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

pub(crate) enum Handle {
    File(FileHandle),
    Dir(DirHandle),
}

pub(crate) struct HandleTable {
    next: AtomicU64,
    map: DashMap<u64, Arc<Handle>>,
}

impl HandleTable {
    pub(crate) fn new() -> HandleTable {
        HandleTable {
            next: AtomicU64::new(1),
            map: DashMap::new(),
        }
    }

    pub(crate) fn insert(&self, h: Handle) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.insert(id, Arc::new(h));
        id
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<Handle>> {
        self.map.get(&id).map(|h| h.clone())
    }

    pub(crate) fn remove(&self, id: u64) {
        self.map.remove(&id);
    }

    pub(crate) fn take(&self, id: u64) -> Option<Arc<Handle>> {
        self.map.remove(&id).map(|(_, h)| h)
    }

    /// Writable passthrough handles on the branch with this id: their writes go to that
    /// branch whatever the stack says.
    pub(crate) fn passthrough_writers_on(&self, branch_id: u64) -> usize {
        self.map
            .iter()
            .filter(|h| match &**h.value() {
                Handle::File(f) => {
                    f.io == Io::Passthrough && f.writable && f.opened_on.lock().0 == branch_id
                }
                Handle::Dir(_) => false,
            })
            .count()
    }

    /// Open file handles (for stats).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Open files whose fd lives on the branch with this id.
    pub(crate) fn open_on(&self, branch_id: u64) -> usize {
        self.map
            .iter()
            .filter(|h| match &**h.value() {
                Handle::File(f) => f.opened_on.lock().0 == branch_id,
                Handle::Dir(_) => false,
            })
            .count()
    }
}

//! Open files.
//!
//! A file handle holds the backing fd and the branch it was opened on; a read-only
//! handle whose object has since been copied up is reopened from the copy on its next
//! read, so every open of a file sees the same data (as overlayfs does since 4.19).
//! Directories have no handles: their listings live in `listing` (stable offsets
//! without one).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

pub(crate) struct OpenFile {
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

pub(crate) struct HandleTable {
    next: AtomicU64,
    map: DashMap<u64, Arc<OpenFile>>,
}

impl HandleTable {
    pub(crate) fn new() -> HandleTable {
        HandleTable {
            next: AtomicU64::new(1),
            map: crate::core::new_map(),
        }
    }

    pub(crate) fn insert(&self, h: OpenFile) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.insert(id, Arc::new(h));
        id
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<OpenFile>> {
        self.map.get(&id).map(|h| h.clone())
    }

    pub(crate) fn take(&self, id: u64) -> Option<Arc<OpenFile>> {
        self.map.remove(&id).map(|(_, h)| h)
    }

    /// Inodes with passthrough handles on the branch with this id, and whether any of
    /// them writes: the kernel reads and writes those files itself, whatever the stack says.
    pub(crate) fn passthrough_on(&self, branch_id: u64) -> Vec<(u64, bool)> {
        let mut out: Vec<(u64, bool)> = Vec::new();
        for h in self.map.iter() {
            let f = h.value();
            if f.io != Io::Passthrough || f.opened_on.lock().0 != branch_id {
                continue;
            }
            match out.iter_mut().find(|(i, _)| *i == f.ino) {
                Some((_, w)) => *w |= f.writable,
                None => out.push((f.ino, f.writable)),
            }
        }
        out
    }

    /// The file of inode `ino` moved from branch `from` to branch `to` with its inode
    /// (a lift): its handles there are now handles here.
    pub(crate) fn moved(&self, ino: u64, from: u64, to: u64) {
        for h in self.map.iter() {
            let mut on = h.opened_on.lock();
            if h.ino == ino && on.0 == from {
                on.0 = to;
            }
        }
    }

    /// Inodes open for writing through the page cache.
    /// Whether a handle open for writing holds inode `ino` (its pages may be dirty).
    pub(crate) fn has_writer(&self, ino: u64) -> bool {
        self.map.iter().any(|h| h.ino == ino && h.writable)
    }

    pub(crate) fn cached_writers(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .map
            .iter()
            .filter(|h| h.writable && h.io != Io::Passthrough)
            .map(|h| h.ino)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Open file handles (for stats).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Open files whose fd lives on the branch with this id.
    pub(crate) fn open_on(&self, branch_id: u64) -> usize {
        self.map
            .iter()
            .filter(|h| h.opened_on.lock().0 == branch_id)
            .count()
    }
}

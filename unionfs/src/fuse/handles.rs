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
    /// (top branch, indexed) the fd was opened on.
    pub(crate) opened_on: Mutex<(u16, bool)>,
    pub(crate) writable: bool,
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

    /// Open file handles (for stats).
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

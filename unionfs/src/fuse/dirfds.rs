//! Branch directory fds kept per node, so that a lookup in a directory does not walk its
//! path again in every branch (an `openat2` and a `close` per layer per lookup).
//!
//! An entry serves while the directory's path and layers and the stack's layer
//! generation are unchanged, for at most the entry timeout: that age bound is the
//! revalidation, so a directory moved or removed in a branch behind the union's back is
//! noticed as soon as the kernel would look its name up again. `ctl refresh` and stack
//! changes clear it. The cache is bounded in fds, so it never eats the daemon's
//! open-file limit (1024 by default).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::core::{DirCursor, DirFds, Obj, Union};

/// At most this many fds cached in all.
const MAX_FDS: usize = 256;

pub(crate) struct DirFdCache {
    map: DashMap<u64, Arc<DirFds>>,
    max_age: Duration,
}

impl DirFdCache {
    /// A cache whose entries live at most `max_age` (zero: no caching).
    pub(crate) fn new(max_age: Duration) -> DirFdCache {
        DirFdCache {
            map: crate::core::new_map(),
            max_age,
        }
    }

    /// A lookup cursor in `dir` (node `ino`), on cached fds where they still fit.
    pub(crate) fn cursor(&self, union: &Union, ino: u64, dir: &Obj) -> DirCursor {
        if self.max_age.is_zero() {
            return union.dir_cursor(dir);
        }
        if let Some(fds) = self.map.get(&ino) {
            if fds.fits(union, dir, self.max_age) {
                let fds = fds.clone();
                return union.dir_cursor_on(dir, fds);
            }
        }
        self.cursor_on(union, ino, dir, Arc::new(union.dir_fds(dir)))
    }

    /// A lookup cursor in `dir` (node `ino`) on `fds` (opened for it elsewhere), which
    /// are kept for it from now on.
    pub(crate) fn cursor_on(
        &self,
        union: &Union,
        ino: u64,
        dir: &Obj,
        fds: Arc<DirFds>,
    ) -> DirCursor {
        if !self.max_age.is_zero() {
            let per_entry = fds.capacity().max(1);
            if self.map.len() * per_entry >= MAX_FDS {
                self.evict();
            }
            if (self.map.len() + 1) * per_entry <= MAX_FDS {
                self.map.insert(ino, fds.clone());
            }
        }
        union.dir_cursor_on(dir, fds)
    }

    /// Drops expired entries, or all of them if none had expired.
    fn evict(&self) {
        let before = self.map.len();
        self.map.retain(|_, f| f.young(self.max_age));
        if self.map.len() == before {
            self.map.clear();
        }
    }

    /// The kernel forgot node `ino`.
    pub(crate) fn forget(&self, ino: u64) {
        self.map.remove(&ino);
    }

    /// Drops every entry (after a stack change or `refresh`).
    pub(crate) fn clear(&self) {
        self.map.clear();
    }
}

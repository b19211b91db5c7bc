//! Directory listings: `.` and `..`, then the merged entries in cookie order (see
//! `listing`), with `d_ino == st_ino`.
//!
//! A scan from offset 0 merges the directory afresh; later calls continue in the listing
//! that scan took (or take one again if it is gone: cookies keep their place). The call
//! that returns the last entry drops it, so the kernel's final call, at `END`, costs
//! nothing.
//!
//! READDIRPLUS gives directories their attributes, files only when they get looked up
//! one by one: in a directory where that happened, or anywhere lately (a du, grep or
//! `ls -l` going on). An entry without attributes costs the kernel no inode, and the
//! daemon no lookup where the listing tells its number.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Errno, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::listing::{Listing, AFTER_DOT, AFTER_DOTDOT, END};
use super::readahead::{Job, ReadAhead};
use super::{attr, err, Res, UnionFs};
use crate::core::{DirCursor, Obj};

/// A scan's directory, its listing, a lookup cursor on the fds the listing used, and the
/// entries already looked up (by the readahead).
type Scan = (Obj, Arc<Listing>, DirCursor, HashMap<OsString, Obj>);

/// When files were last looked up one by one (see the module comment).
pub(super) struct FileLookups {
    start: Instant,
    /// Milliseconds since `start`, plus one (0: never).
    last: AtomicU64,
}

/// For how long after a file lookup listings carry every entry's attributes.
const FILE_LOOKUPS_LINGER: Duration = Duration::from_secs(1);

impl FileLookups {
    pub(super) fn new() -> FileLookups {
        FileLookups {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// A file was looked up.
    pub(super) fn note(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn lately(&self) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        last != 0 && self.now() - last < FILE_LOOKUPS_LINGER.as_millis() as u64
    }
}

impl UnionFs {
    pub(super) fn do_opendir(&self, ino: INodeNo, reply: fuser::ReplyOpen) {
        let _gate = self.union.read_guard();
        match self.node(ino) {
            // Directories need no handle (listing offsets are stable without one). With
            // attributes cached, ENOSYS makes the kernel skip OPENDIR and RELEASEDIR from
            // now on and cache listings, reset when the directory's mtime or version
            // changes, or on `ctl refresh`. With attr_timeout=0 every listing is read
            // afresh, as the user asked.
            Ok(n) if n.obj().is_dir() && !self.ttl.attr.is_zero() => reply.error(Errno::ENOSYS),
            Ok(n) if n.obj().is_dir() => {
                reply.opened(fuser::FileHandle(0), fuser::FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    /// The directory, the listing to continue from `offset` in, and a lookup cursor on
    /// the fds the listing used.
    fn listing(&self, ino: INodeNo, offset: u64) -> Res<Scan> {
        let node = self.node(ino)?;
        let obj = self.current(&node)?;
        if !obj.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if offset != 0 {
            if let Some(l) = self.listings.get(&ino.0) {
                let cursor = self.cursor(&obj);
                return Ok((obj, l.clone(), cursor, HashMap::new()));
            }
        } else if let Some(a) = self.readahead.take(ino.0, &obj) {
            let cursor = self.dir_fds.cursor_on(&self.union, ino.0, &obj, a.fds);
            self.listings.insert(ino.0, a.list.clone());
            return Ok((obj, a.list, cursor, a.found));
        }
        let cursor = self.cursor(&obj);
        let list = Arc::new(Listing::new(self.union.readdir_in(&cursor).map_err(err)?));
        self.listings.insert(ino.0, list.clone());
        Ok((obj, list, cursor, HashMap::new()))
    }

    /// The scan of `list` reached its end.
    fn listing_done(&self, ino: INodeNo, list: &Arc<Listing>) {
        self.listings.remove_if(&ino.0, |_, l| Arc::ptr_eq(l, list));
    }

    pub(super) fn do_readdir(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectory) {
        if offset == END {
            return reply.ok();
        }
        let (obj, list, mut cursor, _) = match self.listing(ino, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let dir = fuser::FileType::Directory;
        if offset == 0 && reply.add(INodeNo(obj.ino), AFTER_DOT, dir, ".") {
            return reply.ok();
        }
        if offset < AFTER_DOTDOT
            && reply.add(INodeNo(self.parent_ino(&obj)), AFTER_DOTDOT, dir, "..")
        {
            return reply.ok();
        }
        for (next, e) in list.after(offset) {
            // d_ino must equal st_ino: the listing's number, or the union's.
            let (ino, kind) = match e.ino {
                Some(ino) => (ino, attr::file_type_of_dtype(e.d_type)),
                None => match cursor.lookup(&e.name) {
                    Ok(child) => (child.ino, attr::file_type(child.st.st_mode)),
                    Err(_) => continue,
                },
            };
            if reply.add(INodeNo(ino), next, kind, &e.name) {
                return reply.ok();
            }
        }
        self.listing_done(ino, &list);
        reply.ok();
    }

    pub(super) fn do_readdirplus(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectoryPlus) {
        if offset == END {
            return reply.ok();
        }
        // Entries the readahead looked up already (first call of a scan only).
        let (obj, list, mut cursor, mut found) = match self.listing(ino, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        // "." and ".." need the directory's own attributes: only the first call has them.
        if offset < AFTER_DOTDOT {
            let dot = match cursor
                .stat_dir()
                .map_err(err)
                .and_then(|st| self.attr_of(&obj, &st))
            {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            let parent = self.parent_ino(&obj);
            for (ino, off, name) in [(obj.ino, AFTER_DOT, "."), (parent, AFTER_DOTDOT, "..")] {
                if off > offset
                    && reply.add(
                        INodeNo(ino),
                        off,
                        name,
                        &Duration::ZERO,
                        &dot,
                        Generation(0),
                    )
                {
                    return reply.ok();
                }
            }
        }
        // Files go without attributes (no lookup here, no inode in the kernel) unless
        // they get looked up one by one in this part of the tree (`ls -l`, du, grep):
        // a scan that only walks the tree (find) then costs one request per directory.
        let node = self.nodes.get(obj.ino);
        let with_attrs =
            node.as_ref().is_some_and(|n| n.files_looked_up()) || self.file_lookups.lately();
        // In a walk, the subdirectories this reply shows are listed next: read them ahead.
        let walking = offset == 0 && self.readahead.scan_begins();
        let mut ahead = Subdirs::new(&self.readahead, walking, with_attrs);
        for (next, e) in list.after(offset) {
            if let (false, Some(ino)) = (with_attrs, e.ino) {
                let kind = attr::file_type_of_dtype(e.d_type);
                if reply.add_name_only(INodeNo(ino), next, &e.name, kind) {
                    return reply.ok();
                }
                continue;
            }
            let child = match found.remove(&e.name) {
                Some(c) => c,
                None => match cursor.lookup(&e.name) {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            let Ok(a) = self.attr_of(&child, &child.st) else {
                continue;
            };
            let entry_ttl = self.ttls_for(&a).1;
            if reply.add(
                INodeNo(child.ino),
                next,
                &e.name,
                &entry_ttl,
                &a,
                Generation(0),
            ) {
                return reply.ok();
            }
            // The kernel now holds a reference to this entry.
            let is_dir = child.is_dir();
            if is_dir {
                ahead.push(&child);
            }
            let n = self.nodes.remember(child);
            if with_attrs && is_dir {
                n.set_files_looked_up();
            }
        }
        self.listing_done(ino, &list);
        reply.ok();
    }
}

/// Subdirectories a reply shows, queued for readahead when the reply is done.
struct Subdirs<'a> {
    readahead: &'a Arc<ReadAhead>,
    dirs: Option<Vec<Job>>,
    /// Whether the walk looks files up too.
    files: bool,
}

impl<'a> Subdirs<'a> {
    fn new(readahead: &'a Arc<ReadAhead>, walking: bool, files: bool) -> Subdirs<'a> {
        Subdirs {
            readahead,
            dirs: walking.then(Vec::new),
            files,
        }
    }

    fn push(&mut self, dir: &Obj) {
        if let Some(d) = &mut self.dirs {
            d.push(Job::new(dir, self.files));
        }
    }
}

impl Drop for Subdirs<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.dirs.take() {
            self.readahead.queue(d);
        }
    }
}

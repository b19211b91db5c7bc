//! Directory listings: `.` and `..`, then the merged entries in cookie order (see
//! `listing`), with `d_ino == st_ino`.
//!
//! A scan from offset 0 merges the directory afresh; later calls continue in the listing
//! that scan took (or take one again if it is gone: cookies keep their place). The call
//! that returns the last entry drops it, so the kernel's final call, at `END`, costs
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::listing::{Listing, AFTER_DOT, AFTER_DOTDOT, END};
use super::{attr, err, Res, UnionFs};
use crate::core::Obj;

impl UnionFs {
    pub(super) fn do_opendir(&self, ino: INodeNo, reply: fuser::ReplyOpen) {
        let _gate = self.union.op_guard();
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

    /// The directory and the listing to continue from `offset` in.
    fn listing(&self, ino: INodeNo, offset: u64) -> Res<(Obj, Arc<Listing>)> {
        let node = self.node(ino)?;
        let obj = self.current(&node)?;
        if !obj.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if offset != 0 {
            if let Some(l) = self.listings.get(&ino.0) {
                return Ok((obj, l.clone()));
            }
        }
        let list = Arc::new(Listing::new(self.union.readdir(&obj).map_err(err)?));
        self.listings.insert(ino.0, list.clone());
        Ok((obj, list))
    }

    /// The scan of `list` reached its end.
    fn listing_done(&self, ino: INodeNo, list: &Arc<Listing>) {
        self.listings.remove_if(&ino.0, |_, l| Arc::ptr_eq(l, list));
    }

    pub(super) fn do_readdir(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectory) {
        if offset == END {
            return reply.ok();
        }
        let (obj, list) = match self.listing(ino, offset) {
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
        let mut cursor = self.cursor(&obj);
        for (next, e) in list.after(offset) {
            // d_ino must equal st_ino: ask the union for the entry's number.
            let Ok(child) = cursor.lookup(&e.name) else {
                continue;
            };
            if reply.add(
                INodeNo(child.ino),
                next,
                attr::file_type(child.st.st_mode),
                &e.name,
            ) {
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
        let (obj, list) = match self.listing(ino, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        // "." and ".." need the directory's own attributes: only the first call has them.
        if offset < AFTER_DOTDOT {
            let dot = match self
                .union
                .stat(&obj)
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
        let mut cursor = self.cursor(&obj);
        for (next, e) in list.after(offset) {
            let Ok(child) = cursor.lookup(&e.name) else {
                continue;
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
            self.nodes.remember(child);
        }
        self.listing_done(ino, &list);
        reply.ok();
    }
}

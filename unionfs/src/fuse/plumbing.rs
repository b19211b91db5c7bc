//! The adapter's plumbing: node and handle bookkeeping that every handler shares
//! (fresh objects, refresh after moves, creating entries, reopening copied-up files).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileHandle, Generation, INodeNo, ReplyEntry, Request};

use std::sync::atomic::Ordering::Relaxed;

use super::handles::{HandleTable, Io, OpenFile};
use super::nodes::{Node, NodeTable};
use super::passthrough::{Busy, IoMode, OpenTarget, PassthroughMode, PassthroughTable};
use super::{attr, caller, err, io_err, Res, Ttls, UnionFs};
use crate::core::create::NewKind;
use crate::core::setattr::SetAttr;
use crate::core::{CoreError, Obj, Union};

impl UnionFs {
    /// Wraps a union for serving.
    pub fn new(union: Arc<Union>, ttl: Ttls) -> Result<UnionFs, CoreError> {
        let root = union.root()?;
        Ok(UnionFs {
            union: union.clone(),
            nodes: Arc::new(NodeTable::new(root)),
            handles: Arc::new(HandleTable::new()),
            listings: crate::core::new_map(),
            file_lookups: super::dir::FileLookups::new(),
            dir_fds: Arc::new(super::dirfds::DirFdCache::new(ttl.entry)),
            readahead: Arc::new(super::readahead::ReadAhead::new(
                union.clone(),
                ttl.entry.min(std::time::Duration::from_secs(1)),
            )),
            ttl,
            passthrough: Arc::new(PassthroughTable::new(PassthroughMode::Auto)),
            notifier: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// Sets `-o passthrough=` (before mounting).
    pub fn with_passthrough(mut self, mode: PassthroughMode) -> UnionFs {
        self.passthrough = Arc::new(PassthroughTable::new(mode));
        self
    }

    /// Sets `-o dir_readahead=` (before mounting).
    pub fn with_dir_readahead(mut self, on: bool) -> UnionFs {
        if !on {
            self.readahead = Arc::new(super::readahead::ReadAhead::new(
                self.union.clone(),
                std::time::Duration::ZERO,
            ));
        }
        self
    }

    /// Registers a new file handle for `obj` opened as `fd` with open(2) `flags`, in the
    /// io mode `io_mode` picks; returns its number and that mode, with the file's stat
    /// and fd for what the open does next (`prefill`).
    pub(super) fn new_file_handle(
        &self,
        obj: &Obj,
        fd: OwnedFd,
        flags: i32,
        open_backing: impl FnOnce(&OwnedFd) -> std::io::Result<fuser::BackingId>,
    ) -> Res<NewHandle> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let is_final = self.union.is_final(obj);
        let st = crate::core::sys_fstat(fd.as_fd()).map_err(io_err)?;
        let io = self.io_mode(obj.ino, &st, is_final, writable, || open_backing(&fd))?;
        let fd = Arc::new(fd);
        let h = super::handles::OpenFile {
            ino: obj.ino,
            fd: parking_lot::RwLock::new(fd.clone()),
            opened_on: parking_lot::Mutex::new(self.location(obj)),
            writable,
            flags,
            io: io.kind(),
        };
        Ok(NewHandle {
            fh: self.handles.insert(h),
            io,
            st,
            fd,
        })
    }

    /// A write-open of `obj` (inode `ino`) while passthrough handles hold a file this
    /// open would move (copy-up) or that moved already: the kernel cannot follow, so
    /// ETXTBSY, before any copy or truncation, once handles closed just now are released.
    pub(super) fn passthrough_allows_write(&self, ino: u64, obj: &Obj) -> Res<()> {
        let Some(file) = self.passthrough.backing_file(ino) else {
            return Ok(());
        };
        let here = self.union.stat(obj).map(|st| (st.st_dev, st.st_ino));
        let moves = !self.union.is_final(obj) || here.ok() != Some(file);
        if moves && self.passthrough.still_held(ino) {
            return Err(Errno::ETXTBSY);
        }
        Ok(())
    }

    /// Picks and counts the io mode of a new file handle on a file whose stat is `st`;
    /// `is_final`: writes land in this very file (`Union::is_final`). ETXTBSY when
    /// passthrough handles hold another file for this inode and the handle would write.
    pub(super) fn io_mode(
        &self,
        ino: u64,
        st: &crate::core::Stat,
        is_final: bool,
        writable: bool,
        open_backing: impl FnOnce() -> std::io::Result<fuser::BackingId>,
    ) -> Res<Opened> {
        if !self.passthrough.usable() {
            return Ok(Opened::Uncounted);
        }
        let t = OpenTarget {
            file: (st.st_dev, st.st_ino),
            // A writer of a file with other names stays with the daemon: such a file
            // cannot move up with its inode when its branch turns read-only (a lift).
            on_rw_branch: is_final && !(writable && st.st_nlink > 1),
            regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
            writable,
        };
        match self.passthrough.open(ino, t, open_backing) {
            Ok(IoMode::Passthrough(b)) => {
                self.union.stats.passthrough_opens.fetch_add(1, Relaxed);
                Ok(Opened::Passthrough(b))
            }
            Ok(IoMode::Cached { keep_cache }) => Ok(Opened::Cached { keep_cache }),
            Err(Busy) => Err(Errno::ETXTBSY),
        }
    }

    pub(super) fn node(&self, ino: INodeNo) -> Res<Arc<Node>> {
        self.nodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    pub(super) fn attr_of(&self, obj: &Obj, st: &crate::core::Stat) -> Res<fuser::FileAttr> {
        let nlink = if obj.is_dir() && obj.layers.len() > 1 {
            Some(self.union.dir_nlink(obj).map_err(err)?)
        } else {
            None
        };
        Ok(attr::to_attr(obj, st, nlink))
    }

    /// Looks `name` up in `parent` and records the kernel's new reference.
    pub(super) fn do_lookup(&self, parent: &Obj, name: &OsStr) -> Res<fuser::FileAttr> {
        let obj = self.cursor(parent).lookup(name).map_err(err)?;
        let a = self.attr_of(&obj, &obj.st)?;
        self.nodes.remember(obj);
        Ok(a)
    }

    /// A lookup cursor in the directory `dir`, on its cached branch fds.
    pub(super) fn cursor(&self, dir: &Obj) -> crate::core::DirCursor {
        self.dir_fds.cursor(&self.union, dir.ino, dir)
    }

    /// Re-reads a node's object from the union (after a change that may have moved it,
    /// e.g. a copy-up of a parent directory).
    pub(super) fn refresh(&self, node: &Node) -> Res<Obj> {
        let obj = node.obj();
        let stack = self.union.stack();
        match self.union.relookup(&stack, &obj) {
            Ok(mut fresh) => {
                // A hard link keeps the number it was given.
                fresh.ino = obj.ino;
                node.set_obj(fresh.clone());
                Ok(fresh)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// A node's object, looked up again if directory layers changed since it was found
    /// (a parent copied up by a change below it, a rename).
    pub(super) fn current(&self, node: &Node) -> Res<Obj> {
        let obj = node.obj();
        if self.union.stack().is_current(obj.gen, &obj.path) {
            return Ok(obj);
        }
        // A name that is gone (an open, unlinked file) keeps its last state.
        Ok(self.refresh(node).unwrap_or(obj))
    }

    pub(super) fn reply_entry(&self, reply: ReplyEntry, r: Res<fuser::FileAttr>) {
        match r {
            Ok(a) => {
                let (attr_ttl, entry_ttl) = self.ttls_for(&a);
                reply.entry_with_ttls(&attr_ttl, &entry_ttl, &a, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    /// Cache lifetimes for one answer. A hard-linked file is never cached by name: FUSE
    /// names only the inode in setattr/open, so the node must learn which name the
    /// kernel walked through (copy-up lands under that name, as in overlayfs).
    pub(super) fn ttls_for(&self, a: &fuser::FileAttr) -> (Duration, Duration) {
        if a.nlink > 1 && a.kind != fuser::FileType::Directory {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (self.ttl.attr, self.ttl.entry)
        }
    }

    /// Creates an object and answers with its entry.
    pub(super) fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        kind: NewKind<'_>,
    ) -> Res<(fuser::FileAttr, Option<OwnedFd>, Obj)> {
        let pnode = self.node(parent)?;
        let pobj = self.current(&pnode)?;
        let (obj, fd) = self
            .union
            .create(&pobj, name, mode, kind, caller(req))
            .map_err(err)?;
        let a = self.attr_of(&obj, &obj.st)?;
        self.nodes.remember(obj.clone());
        Ok((a, fd, obj))
    }

    pub(super) fn file_handle(&self, fh: FileHandle) -> Res<Arc<OpenFile>> {
        self.handles.get(fh.0).ok_or(Errno::EBADF)
    }

    /// The fd of an open file, reopened if the file was copied up since it was opened.
    pub(super) fn fd_for(&self, fh: FileHandle, for_write: bool) -> Res<Arc<OwnedFd>> {
        let f = self.file_handle(fh)?;
        if !for_write && !f.writable {
            // A reader follows the file to its copy, so all opens see the same data.
            if let Some(node) = self.nodes.get(f.ino) {
                let _gate = self.union.read_guard();
                let obj = self.current(&node)?;
                let now = self.location(&obj);
                let mut on = f.opened_on.lock();
                if *on != now {
                    if let Ok((fd, _)) = self.union.open(&obj, libc::O_RDONLY) {
                        *f.fd.write() = Arc::new(fd);
                        *on = now;
                    }
                }
            }
        } else if for_write {
            // A writer whose file must move first: it was opened write-only on a
            // metadata-only copy (the data comes up now, before the first byte), or the
            // branch under it became read-only (a snapshot) or went away (later writes
            // land in a copy on the new write target; the snapshot keeps its bytes).
            if let Some(node) = self.nodes.get(f.ino) {
                if node.is_metacopy() || !self.union.stack().is_rw_id(f.opened_on.lock().0) {
                    let _gate = self.union.op_guard();
                    let obj = self.current(&node)?;
                    let flags = f.flags & !(libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL);
                    let (fd, moved) = self.union.reopen_for_write(&obj, flags).map_err(err)?;
                    let now = self.location(moved.as_ref().unwrap_or(&obj));
                    if let Some(m) = moved {
                        node.set_obj(m);
                    }
                    *f.fd.write() = Arc::new(fd);
                    *f.opened_on.lock() = now;
                }
            }
        }
        let fd = f.fd.read().clone();
        Ok(fd)
    }

    /// Where an object's data lives: (branch id, through the hard-link index).
    pub(super) fn location(&self, obj: &Obj) -> (u64, bool) {
        let stack = self.union.stack();
        // A metadata-only copy's data is read from below: that is where a reader is.
        let at = if obj.is_metacopy() {
            obj.layers[1]
        } else {
            obj.layers[0]
        };
        let id = stack.branches.get(at as usize).map_or(0, |b| b.id);
        (id, obj.indexed.is_some())
    }

    pub(super) fn setattr_inner(
        &self,
        ino: INodeNo,
        a: &SetAttr,
        fh: Option<FileHandle>,
    ) -> Res<fuser::FileAttr> {
        let node = self.node(ino)?;
        let obj = self.current(&node)?;
        let fd = match fh {
            Some(fh) if a.size.is_some() => self.fd_for(fh, true).ok(),
            _ => None,
        };
        let mut up = self
            .union
            .setattr(&obj, a, fd.as_ref().map(|f| f.as_fd()))
            .map_err(err)?;
        up.ino = ino.0;
        node.set_obj(up.clone());
        self.attr_of(&up, &up.st)
    }

    pub(super) fn parent_ino(&self, obj: &Obj) -> u64 {
        // ".." is answered by the kernel itself; its number here is informational.
        let _ = obj;
        crate::core::fuser_root_ino()
    }

    pub(super) fn after_rename(&self, from: &Path, to: &Path, exchange: bool) {
        if exchange {
            let tmp = Path::new("\0exchange");
            self.nodes.rename_prefix(from, tmp);
            self.nodes.rename_prefix(to, from);
            self.nodes.rename_prefix(tmp, to);
        } else {
            self.nodes.rename_prefix(from, to);
        }
        for n in self.nodes.under(to) {
            let _ = self.refresh(&n);
        }
        if exchange {
            for n in self.nodes.under(from) {
                let _ = self.refresh(&n);
            }
        }
    }

    /// A name was removed: nodes that were reached through it move to another of their
    /// names, if they have one.
    pub(super) fn after_remove(&self, ino: u64, path: &Path) {
        let Some(n) = self.nodes.get(ino) else { return };
        if let Some(other) = n.drop_name(path) {
            let mut obj = n.obj();
            obj.path = other;
            n.set_obj(obj);
            let _ = self.refresh(&n);
        }
    }

    /// A non-directory was renamed: its node (one inode, maybe several names) follows.
    pub(super) fn after_file_rename(&self, ino: u64, from: &Path, to: &Path) {
        let Some(n) = self.nodes.get(ino) else { return };
        let _ = n.drop_name(from);
        let mut obj = n.obj();
        obj.path = to.to_path_buf();
        n.set_obj(obj);
        let _ = self.refresh(&n);
    }
}

/// The io mode chosen for a new file handle.
pub(super) enum Opened {
    Uncounted,
    Cached { keep_cache: bool },
    Passthrough(Arc<fuser::BackingId>),
}

impl Opened {
    pub(super) fn kind(&self) -> Io {
        match self {
            Opened::Uncounted => Io::Uncounted,
            Opened::Cached { .. } => Io::Cached,
            Opened::Passthrough(_) => Io::Passthrough,
        }
    }

    pub(super) fn backing(&self) -> Option<&fuser::BackingId> {
        match self {
            Opened::Passthrough(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the open keeps the kernel's page cache (`fopen_flags`).
    pub(super) fn keeps_cache(&self) -> bool {
        matches!(
            self,
            Opened::Uncounted | Opened::Cached { keep_cache: true }
        )
    }

    /// Page-cache opens keep the kernel's cache (FOPEN_KEEP_CACHE): every change to a
    /// file's data goes through this mount or through a stack change (which
    /// invalidates), except passthrough writes, after which the cache is dropped once.
    /// No handle needs FLUSH (writes are synchronous and flush has nothing to do), so
    /// close(2) costs no round trip (FOPEN_NOFLUSH).
    pub(super) fn fopen_flags(&self) -> fuser::FopenFlags {
        let keep = if self.keeps_cache() {
            fuser::FopenFlags::FOPEN_KEEP_CACHE
        } else {
            fuser::FopenFlags::empty()
        };
        keep | fuser::FopenFlags::FOPEN_NOFLUSH
    }
}

/// A file handle just made (`new_file_handle`).
pub(super) struct NewHandle {
    pub(super) fh: u64,
    pub(super) io: Opened,
    /// The open file's stat when it was opened.
    pub(super) st: crate::core::Stat,
    pub(super) fd: Arc<OwnedFd>,
}

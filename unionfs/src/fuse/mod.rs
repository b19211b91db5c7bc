//! The FUSE adapter: `impl fuser::Filesystem` for a [`Union`].
//!
//! Each handler decodes the request, calls the core, keeps the node table in step, and
//! replies. Union rules live in `core`; nothing here decides them. No handler panics:
//! every error becomes an errno reply.

pub mod attr;
mod control;
mod dir;
mod dirfds;
mod files;
mod handles;
mod listing;
mod nodes;
pub mod passthrough;
mod plumbing;
mod readahead;

pub use control::Control;
pub use passthrough::PassthroughMode;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::core::create::NewKind;
use crate::core::setattr::SetAttr;
use crate::core::{Caller, CoreError, Union};

pub use attr::Ttls;
use handles::HandleTable;
use nodes::NodeTable;

/// The union as a FUSE filesystem.
pub struct UnionFs {
    union: Arc<Union>,
    nodes: Arc<NodeTable>,
    handles: Arc<HandleTable>,
    /// Directory listings being read, by node (see `listing`).
    listings: dashmap::DashMap<u64, Arc<listing::Listing>>,
    /// Branch directory fds of the directories looked in lately.
    dir_fds: Arc<dirfds::DirFdCache>,
    /// Listings of subdirectories read ahead during a tree walk.
    readahead: Arc<readahead::ReadAhead>,
    file_lookups: dir::FileLookups,
    ttl: Ttls,
    passthrough: Arc<passthrough::PassthroughTable<fuser::BackingId>>,
    /// The session's notifier, once it runs (shared with `Control`).
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

type Res<T> = Result<T, Errno>;

fn err(e: CoreError) -> Errno {
    tracing::debug!("{e}");
    Errno::from_i32(e.errno())
}

fn io_err(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl fuser::Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(
            // Always readdirplus: one listing fills the kernel's dentry and attribute
            // caches, so `find`/`du` need no lookup per entry. Atomic O_TRUNC: the open
            // itself carries O_TRUNC, so truncating a lower file copies no data.
            fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_ATOMIC_O_TRUNC,
        );
        if self.passthrough.mode() != PassthroughMode::Off {
            // Depth 1: backing files on a plain filesystem, and this mount may itself
            // be a lower layer of kernel overlayfs.
            let granted = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.set_usable(granted);
            if !granted && self.passthrough.mode() == PassthroughMode::On {
                tracing::warn!("the kernel does not offer FUSE passthrough (needs Linux 6.9+); serving reads and writes through the daemon");
            }
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        // The control thread may still hold the union: its work directories' spare
        // files go now, not with the last reference.
        self.union.end_of_mount();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _gate = self.union.read_guard();
        let r = self.node(parent).and_then(|p| {
            let a = self.do_lookup(&self.current(&p)?, name)?;
            if a.kind != fuser::FileType::Directory {
                // Someone stats or opens the files here one by one: list them with
                // their attributes from now on (see dir.rs).
                p.set_files_looked_up();
                self.file_lookups.note();
            }
            Ok(a)
        });
        self.reply_entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
        if self.nodes.get(ino.0).is_none() {
            self.listings.remove(&ino.0);
            self.dir_fds.forget(ino.0);
            self.readahead.forget(ino.0);
        }
        // After a large eviction give the freed node memory back to the system.
        static FORGOTTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if FORGOTTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 8192 == 8191 {
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _gate = self.union.read_guard();
        let r = (|| {
            let node = self.node(ino)?;
            let obj = self.current(&node)?;
            let st = if obj.is_dir() {
                // On the directory's cached branch fds: one fstat.
                self.cursor(&obj).stat_dir()
            } else {
                self.union.stat(&obj)
            };
            let st = match st {
                Ok(st) => st,
                Err(e) if e.errno() == libc::ENOENT => {
                    match fh.and_then(|fh| self.fd_for(fh, false).ok()) {
                        // An open file whose name is gone.
                        Some(fd) => crate::core::sys_fstat(fd.as_fd()).map_err(io_err)?,
                        // Moved under us (copy-up of a hard link, out-of-band change).
                        None => self.refresh(&node)?.st,
                    }
                }
                Err(e) => return Err(err(e)),
            };
            self.attr_of(&obj, &st)
        })();
        match r {
            Ok(a) => reply.attr(&self.ttls_for(&a).0, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _gate = self.union.op_guard();
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(attr::timespec),
            mtime: mtime.map(attr::timespec),
        };
        match self.setattr_inner(ino, &a, fh) {
            Ok(a) => reply.attr(&self.ttls_for(&a).0, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _gate = self.union.read_guard();
        match self
            .node(ino)
            .and_then(|n| self.union.readlink(&self.current(&n)?).map_err(err))
        {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _gate = self.union.op_guard();
        let perm = mode & !umask & 0o7777 | (mode & libc::S_IFMT);
        let kind = if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            NewKind::File {
                flags: libc::O_WRONLY,
            }
        } else {
            NewKind::Node { rdev: rdev as u64 }
        };
        let r = self.make(req, parent, name, perm, kind).map(|(a, _, _)| a);
        self.reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _gate = self.union.op_guard();
        let r = self
            .make(req, parent, name, mode & !umask & 0o7777, NewKind::Dir)
            .map(|(a, _, _)| a);
        self.reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _gate = self.union.op_guard();
        let r = (|| {
            let p = self.node(parent)?;
            let pobj = self.current(&p)?;
            let gone = self
                .union
                .unlink_in(&self.cursor(&pobj), name)
                .map_err(err)?;
            self.after_remove(gone.ino, &pobj.path.join(name));
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _gate = self.union.op_guard();
        let r = (|| {
            let p = self.node(parent)?;
            let pobj = self.current(&p)?;
            let gone = self
                .union
                .rmdir_in(&self.cursor(&pobj), name)
                .map_err(err)?;
            self.dir_fds.forget(gone.ino);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _gate = self.union.op_guard();
        let r = self
            .make(
                req,
                parent,
                link_name,
                0o777,
                NewKind::Symlink(target.as_os_str()),
            )
            .map(|(a, _, _)| a);
        self.reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _gate = self.union.op_guard();
        let r = (|| {
            let p = self.node(parent)?;
            let np = self.node(newparent)?;
            let (pobj, npobj) = (self.current(&p)?, self.current(&np)?);
            let moved = self.union.lookup(&pobj, name).ok();
            let replaced = self.union.lookup(&npobj, newname).ok().map(|o| o.ino);
            self.union
                .rename(&pobj, name, &npobj, newname, flags.bits())
                .map_err(err)?;
            let exchange = flags.bits() & libc::RENAME_EXCHANGE != 0;
            let (from, to) = (pobj.path.join(name), npobj.path.join(newname));
            if let (Some(ino), false) = (replaced, exchange) {
                self.after_remove(ino, &to);
            }
            match moved {
                // A file moves alone: only its node changes (no walk over the table).
                Some(m) if !m.is_dir() && !exchange => self.after_file_rename(m.ino, &from, &to),
                _ => self.after_rename(&from, &to, exchange),
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _gate = self.union.op_guard();
        let r = (|| {
            let n = self.node(ino)?;
            let np = self.node(newparent)?;
            let obj = self.current(&n)?;
            let new = self
                .union
                .link(&obj, &self.current(&np)?, newname)
                .map_err(err)?;
            // The source name moved up with the copy; its node follows.
            let _ = self.refresh(&n);
            let a = self.attr_of(&new, &new.st)?;
            self.nodes.remember(new);
            Ok(a)
        })();
        self.reply_entry(reply, r);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.do_open(req, ino, flags, reply);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.do_read(fh, offset, size, reply);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.do_write(fh, offset, data, reply);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close (writes went to the backing file already, and locks are
        // the kernel's): ENOSYS tells the kernel to stop sending FLUSH, one request less
        // per close(2).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(f) = self.handles.take(fh.0) {
            if f.io != handles::Io::Uncounted {
                self.passthrough.release(f.ino);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.do_fsync(fh, datasync, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.do_opendir(ino, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let _gate = self.union.read_guard();
        self.do_readdir(ino, offset, reply);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let _gate = self.union.read_guard();
        self.do_readdirplus(ino, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _gate = self.union.read_guard();
        match self.union.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _gate = self.union.op_guard();
        let r = self.node(ino).and_then(|n| {
            let up = self
                .union
                .setxattr(&self.current(&n)?, name, value, flags)
                .map_err(err)?;
            n.set_obj(up);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _gate = self.union.read_guard();
        match self
            .node(ino)
            .and_then(|n| self.union.getxattr(&self.current(&n)?, name).map_err(err))
        {
            Ok(Some(v)) => xattr_reply(reply, size, &v),
            Ok(None) => reply.error(Errno::from_i32(libc::ENODATA)),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _gate = self.union.read_guard();
        match self
            .node(ino)
            .and_then(|n| self.union.listxattr(&self.current(&n)?).map_err(err))
        {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                xattr_reply(reply, size, &buf);
            }
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _gate = self.union.op_guard();
        let r = self.node(ino).and_then(|n| {
            let up = self
                .union
                .removexattr(&self.current(&n)?, name)
                .map_err(err)?;
            n.set_obj(up);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _gate = self.union.read_guard();
        // The kernel checks permissions itself (default_permissions); this only tells
        // whether the object still exists.
        match self.node(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.do_create(req, parent, name, mode & !umask & 0o7777, flags, reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.do_fallocate(fh, offset, length, mode, reply);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.do_lseek(fh, offset, whence, reply);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.do_copy_file_range(fh_in, offset_in, fh_out, offset_out, len, reply);
    }
}

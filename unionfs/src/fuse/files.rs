//! File handlers: open and create (a handle, passthrough or through the daemon), the
//! daemon's side of read and write for handles the kernel does not pass through, and the
//! calls on a handle's fd (fsync, fallocate, lseek, copy_file_range).

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};

use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, OpenFlags, ReplyCreate, ReplyData,
    ReplyEmpty, ReplyLseek, ReplyOpen, ReplyWrite, Request,
};

use super::{attr, err, io_err, UnionFs};
use crate::core::create::NewKind;
use crate::core::Obj;

impl UnionFs {
    /// Opens keep the kernel's page cache (FOPEN_KEEP_CACHE): every change to a file's
    /// data goes through this mount (the kernel sees it) or through a stack change
    /// (which invalidates), as on a local filesystem.
    pub(super) fn do_open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        // An open for reading changes nothing (it never copies up).
        let _gate = if writes {
            self.union.op_guard()
        } else {
            self.union.read_guard()
        };
        let r = (|| {
            let node = self.node(ino)?;
            let obj = self.current(&node)?;
            if writes {
                self.passthrough_allows_write(ino.0, &obj)?;
            }
            let (fd, moved) = self.union.open(&obj, flags.0).map_err(err)?;
            if flags.0 & libc::O_TRUNC != 0 && req.uid() != 0 {
                // With atomic O_TRUNC the kernel leaves to us what truncation by an
                // unprivileged caller does on a local filesystem: drop set-uid, and
                // set-gid on a group-executable file.
                let _ = attr::kill_suid(&fd);
            }
            // The node's number, whatever the object computes now.
            let now = Obj {
                ino: ino.0,
                ..moved.clone().unwrap_or(obj)
            };
            if let Some(m) = moved {
                node.set_obj(m);
            }
            let h = self.new_file_handle(&now, fd, flags.0, |fd| reply.open_backing(fd))?;
            if !writes && h.io.keeps_cache() {
                self.prefill(&node, &now, &h.st, &h.fd);
            }
            Ok((h.fh, h.io))
        })();
        match r {
            Ok((fh, io)) => match io.backing() {
                Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, b),
                None => reply.opened(FileHandle(fh), io.fopen_flags()),
            },
            Err(e) => reply.error(e),
        }
    }

    /// A small file of a read-only branch, opened for reading, goes into the kernel's
    /// page cache before the open is answered (FUSE_NOTIFY_STORE; the open keeps the
    /// cache): its reads then need no READ request, one round trip less per file for
    /// `grep -r` or `git status`. Only read-only branches, and no handle open for
    /// writing: nothing can have left dirty pages that the store would overwrite (a
    /// write-open copies the file up first; a branch made read-only by a snapshot may
    /// still have its writers). Once stored, not again while the file's identity, size
    /// and times stay.
    fn prefill(
        &self,
        node: &super::nodes::Node,
        obj: &Obj,
        st: &crate::core::Stat,
        fd: &std::os::fd::OwnedFd,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        const MAX: i64 = 64 << 10;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size <= 0 || st.st_size > MAX {
            return;
        }
        let Some(n) = self.notifier.get() else {
            return;
        };
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (st.st_dev, st.st_ino, st.st_size).hash(&mut h);
            (st.st_mtime, st.st_mtime_nsec, st.st_ctime, st.st_ctime_nsec).hash(&mut h);
            h.finish() | 1
        };
        if node.prefilled.load(Relaxed) == digest {
            return;
        }
        let stack = self.union.stack();
        if obj.indexed.is_some()
            || obj.layers.len() != 1
            || stack.branches[obj.layers[0] as usize].is_rw()
            || self.handles.has_writer(obj.ino)
        {
            return;
        }
        let mut buf = vec![0u8; st.st_size as usize];
        let got = pread_full(fd.as_fd(), &mut buf, 0).unwrap_or(0);
        // A file that changed size meanwhile: its reads ask for it.
        if got == buf.len() && n.store(INodeNo(obj.ino), 0, &buf).is_ok() {
            // Copied up meanwhile (a write-open moves the node before any write): what
            // was stored may be older than what its writer puts in the cache, so the
            // cache goes, and reads ask again.
            if node.obj().layers != obj.layers {
                let _ = n.inval_inode(INodeNo(obj.ino), 0, 0);
                return;
            }
            node.prefilled.store(digest, Relaxed);
            self.union.stats.prefilled.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn do_read(&self, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        self.union
            .stats
            .data_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = (|| {
            let fd = self.fd_for(fh, false)?;
            let mut buf = vec![0u8; size as usize];
            let got = pread_full(fd.as_fd(), &mut buf, offset).map_err(io_err)?;
            buf.truncate(got);
            Ok(buf)
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_write(&self, fh: FileHandle, offset: u64, data: &[u8], reply: ReplyWrite) {
        self.union
            .stats
            .data_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Held to the end of the write: a stack change waits for it, so a write that
        // found its branch rw cannot land there after a snapshot copied the file up.
        let _gate = self.union.op_guard();
        let r = (|| {
            let fd = self.fd_for(fh, true)?;
            let mut done = 0usize;
            while done < data.len() {
                let n = crate::core::sys_pwrite(fd.as_fd(), &data[done..], offset + done as u64)
                    .map_err(io_err)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            Ok(done as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_fsync(&self, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let _gate = self.union.read_guard();
        match self
            .fd_for(fh, true)
            .and_then(|fd| crate::core::sys_fsync(fd.as_fd(), datasync).map_err(io_err))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// `mode`: the new file's permission bits, the caller's umask applied.
    pub(super) fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _gate = self.union.op_guard();
        let r = (|| {
            let (a, fd, obj) = self.make(req, parent, name, mode, NewKind::File { flags })?;
            let fd = fd.ok_or(Errno::EIO)?;
            let h = self.new_file_handle(&obj, fd, flags, |fd| reply.open_backing(fd))?;
            Ok((a, h.fh, h.io))
        })();
        match r {
            Ok((a, fh, io)) => match io.backing() {
                Some(b) => reply.created_passthrough(
                    &self.ttl.entry,
                    &a,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_NOFLUSH,
                    b,
                ),
                None => reply.created(
                    &self.ttl.entry,
                    &a,
                    Generation(0),
                    FileHandle(fh),
                    io.fopen_flags(),
                ),
            },
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_fallocate(
        &self,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _gate = self.union.op_guard();
        let r = self.fd_for(fh, true).and_then(|fd| {
            let rc = unsafe {
                libc::fallocate(
                    fd.as_raw_fd(),
                    mode,
                    offset as libc::off_t,
                    length as libc::off_t,
                )
            };
            if rc < 0 {
                Err(io_err(std::io::Error::last_os_error()))
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_lseek(&self, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let r = self.fd_for(fh, false).and_then(|fd| {
            let o = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
            if o < 0 {
                Err(io_err(std::io::Error::last_os_error()))
            } else {
                Ok(o)
            }
        });
        match r {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_copy_file_range(
        &self,
        fh_in: FileHandle,
        offset_in: u64,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        reply: ReplyWrite,
    ) {
        let _gate = self.union.op_guard();
        let r = (|| {
            let src = self.fd_for(fh_in, false)?;
            let dst = self.fd_for(fh_out, true)?;
            let mut si = offset_in as i64;
            let mut di = offset_out as i64;
            let want = len.min(u32::MAX as u64 & !0xfff) as usize;
            let n = unsafe {
                libc::copy_file_range(src.as_raw_fd(), &mut si, dst.as_raw_fd(), &mut di, want, 0)
            };
            if n < 0 {
                Err(io_err(std::io::Error::last_os_error()))
            } else {
                Ok(n as u32)
            }
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }
}

/// Reads into all of `buf` from `offset`, or up to the end of the file: the bytes read.
fn pread_full(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<usize> {
    let mut got = 0usize;
    while got < buf.len() {
        let n = crate::core::sys_pread(fd, &mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

//! Copy-up: make a private copy of a lower object in a rw branch before it changes.
//!
//! The copy is built in the branch's work directory (data with holes kept, owner, mode,
//! xattrs, nanosecond times), fsynced, and renamed into place, so a crash leaves either
//! no copy or a complete one. Parents are copied first (metadata only) and the times of
//! the directory the copy lands in are restored afterwards, as overlayfs does. One
//! copy-up per object runs at a time; later callers find the copy and use it.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use super::error::{errno, IoContext, Result};
use super::hardlinks::{add_to_index, link_up};
use super::{inode, lookup, parent_fd, sys, CoreError, CreateMode, Obj, Stack, Stat, Union};

/// How much data a copy-up carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Data {
    /// All of it.
    Full,
    /// Only the first N bytes (0: metadata only, for `O_TRUNC` and truncate to 0).
    Truncate(u64),
    /// Metadata only, the data staying below (`-o metacopy=on`, for attribute changes);
    /// a file that cannot be copied so (hard links) is copied in full.
    Meta,
}

impl Union {
    /// The rw branch a change to an object whose top instance is on `top` goes to.
    pub(crate) fn write_target(&self, stack: &Stack, top: u16) -> Option<u16> {
        match self.config.create {
            CreateMode::Parent => {
                if stack.is_rw(top) {
                    Some(top)
                } else {
                    (0..top).find(|&i| stack.is_rw(i))
                }
            }
            CreateMode::Top => stack.top_rw().filter(|&k| k <= top),
        }
    }

    /// Copies `obj` up (if it is not already on its write target) and returns it there.
    pub(crate) fn copy_up(&self, obj: &Obj, data: Data) -> Result<Obj> {
        let up = self.copy_up_inner(obj, data)?;
        if up.is_metacopy() && data != Data::Meta {
            return self.fill_metacopy(&up, data);
        }
        Ok(up)
    }

    /// Gives a metadata-only copy on its write target its data, in place as the kernel
    /// does: copied into the sparse copy and fsynced before the metacopy mark goes, so a
    /// crash leaves a copy that still reads its data from below.
    fn fill_metacopy(&self, obj: &Obj, data: Data) -> Result<Obj> {
        let stack = self.stack();
        let _guard = self.lock_for(&obj.path).lock();
        let obj = self.relookup(&stack, obj)?;
        if !obj.is_metacopy() {
            return Ok(obj);
        }
        let rel = &obj.path;
        let dir = parent_fd(&stack, obj.top(), obj.parent_path()).ctx("copy-up", rel)?;
        let data_dir = parent_fd(&stack, obj.layers[1], obj.parent_path()).ctx("copy-up", rel)?;
        let st = sys::fstatat(dir.as_fd(), obj.name()).ctx("copy-up", rel)?;
        let out = sys::openat(dir.as_fd(), obj.name(), libc::O_WRONLY, 0).ctx("copy-up", rel)?;
        let size = st.st_size.max(0) as u64;
        let len = match data {
            Data::Truncate(n) => n.min(size),
            _ => size,
        };
        if len > 0 {
            let input =
                sys::openat(data_dir.as_fd(), obj.name(), libc::O_RDONLY, 0).ctx("copy-up", rel)?;
            copy_data(input.as_fd(), out.as_fd(), len).ctx("copy-up", rel)?;
        }
        if let Data::Truncate(n) = data {
            sys::ftruncate(out.as_fd(), n).ctx("copy-up", rel)?;
        }
        sys::fsync(out.as_fd(), true).ctx("copy-up", rel)?;
        // Copying changed the times; the caller's change has not happened yet.
        let _ = sys::utimensat(dir.as_fd(), obj.name(), &times_of(&st));
        if let Some(x) = stack.format.metacopy_xattr() {
            sys::removexattr(dir.as_fd(), obj.name(), OsStr::new(x)).ctx("copy-up", rel)?;
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.copy_ups.fetch_add(1, Relaxed);
        self.stats.bytes_copied.fetch_add(len, Relaxed);
        self.relookup(&stack, &obj)
    }

    fn copy_up_inner(&self, obj: &Obj, data: Data) -> Result<Obj> {
        let stack = self.stack();
        let target = self
            .write_target(&stack, obj.top())
            .ok_or_else(|| CoreError::ReadOnly {
                op: "copy-up",
                path: obj.path.clone(),
            })?;
        if target == obj.top() && obj.indexed.is_none() {
            return Ok(obj.clone());
        }
        if !self.config.copy_up {
            // unionfs-fuse without `cow`: lower objects are not writable.
            return Err(errno("copy-up", &obj.path, libc::EACCES));
        }
        if obj.path.as_os_str().is_empty() {
            return Err(CoreError::ReadOnly {
                op: "copy-up",
                path: obj.path.clone(),
            });
        }
        let _guard = self.lock_for(&obj.path).lock();
        // Someone may have finished this copy while we waited.
        let parent = self.ensure_parents(&stack, target, obj.parent_path())?;
        let name = obj.name();
        if let Some(st) = sys::stat_opt(parent.as_fd(), name).ctx("copy-up", &obj.path)? {
            if !stack
                .format
                .is_whiteout(parent.as_fd(), name, Some(&st))
                .unwrap_or(false)
            {
                return self.relookup(&stack, obj);
            }
        }
        if obj.is_dir() {
            copy_dir_into(&stack, target, obj, parent.as_fd())?;
        } else {
            let copied = copy_file_into(&stack, target, obj, parent.as_fd(), data)?;
            use std::sync::atomic::Ordering::Relaxed;
            self.stats.copy_ups.fetch_add(1, Relaxed);
            self.stats.bytes_copied.fetch_add(copied, Relaxed);
        }
        self.relookup(&stack, obj)
    }

    /// Looks an object up again by path (after it moved between branches).
    pub(crate) fn relookup(&self, stack: &Stack, obj: &Obj) -> Result<Obj> {
        let mut cur = self.root()?;
        for c in obj.path.components() {
            if let Component::Normal(n) = c {
                cur = lookup::lookup_in(stack, &cur, n)?.ok_or_else(|| CoreError::NotFound {
                    op: "lookup",
                    path: obj.path.clone(),
                })?;
            }
        }
        Ok(cur)
    }

    /// Makes sure the directory `dir` exists in branch `target`, copying each missing
    /// ancestor from the highest branch below that has it. Returns it opened.
    pub(crate) fn ensure_parents(&self, stack: &Stack, target: u16, dir: &Path) -> Result<OwnedFd> {
        let tb = stack.branch(target);
        match parent_fd(stack, target, dir) {
            Ok(fd) => return Ok(fd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT)) => {}
            Err(e) => return Err(e).ctx("copy-up", dir),
        }
        let mut cur = sys::open_dir_path(tb.fd(), Path::new("")).ctx("copy-up", dir)?;
        let mut rel = PathBuf::new();
        for c in dir.components() {
            let Component::Normal(name) = c else { continue };
            let parent_rel = rel.clone();
            rel.push(name);
            match sys::stat_opt(cur.as_fd(), name).ctx("copy-up", &rel)? {
                Some(st) if sys::is_dir(&st) => {}
                Some(st)
                    if stack
                        .format
                        .is_whiteout(cur.as_fd(), name, Some(&st))
                        .unwrap_or(false) =>
                {
                    return Err(CoreError::NotFound {
                        op: "copy-up",
                        path: rel,
                    });
                }
                Some(_) => return Err(errno("copy-up", &rel, libc::ENOTDIR)),
                None => {
                    let (src_b, src_st) = (target + 1..stack.branches.len() as u16)
                        .find_map(|b| {
                            let d = parent_fd(stack, b, &parent_rel).ok()?;
                            let st = sys::stat_opt(d.as_fd(), name).ok()??;
                            sys::is_dir(&st).then_some((b, st))
                        })
                        .ok_or_else(|| CoreError::NotFound {
                            op: "copy-up",
                            path: rel.clone(),
                        })?;
                    let src_dir = parent_fd(stack, src_b, &parent_rel).ctx("copy-up", &rel)?;
                    copy_dir_meta(
                        stack,
                        target,
                        src_dir.as_fd(),
                        name,
                        &src_st,
                        cur.as_fd(),
                        &rel,
                        None,
                    )?;
                }
            }
            cur = sys::open_dir_path(cur.as_fd(), Path::new(name)).ctx("copy-up", &rel)?;
        }
        Ok(cur)
    }

    /// Copies a whole merged directory tree into its write target, so that the copy
    /// holds every visible entry (used before renaming a merged or lower directory).
    pub(crate) fn copy_tree_up(&self, dir: &Obj) -> Result<Obj> {
        let up = self.copy_up(dir, Data::Full)?;
        let target = up.top();
        // Once moved, the copy may stand alone: it must still report the number it has
        // now (a merged directory's comes from its lowest layer, which stays behind).
        {
            let stack = self.stack();
            let p = parent_fd(&stack, target, up.parent_path()).ctx("copy-up", &up.path)?;
            stack.ensure_origin(p.as_fd(), up.name(), dir.ino);
        }
        for e in self.readdir(&up)? {
            if e.branch == target {
                // Already there; but a merged subdirectory still needs its lower parts,
                // and a metadata-only copy its data.
                if e.d_type != libc::DT_DIR
                    && e.d_type != libc::DT_UNKNOWN
                    && self.stack().format.metacopy_xattr().is_none()
                {
                    continue;
                }
            }
            let child = self.lookup(&up, &e.name)?;
            if child.is_dir() {
                if child.layers.len() > 1 || child.top() != target {
                    self.copy_tree_up(&child)?;
                }
            } else if child.top() != target || child.indexed.is_some() || child.is_metacopy() {
                // (A metadata-only copy finds its data by path: it must not move without it.)
                self.copy_up(&child, Data::Full)?;
            }
        }
        let stack = self.stack();
        self.relookup(&stack, &up)
    }
}

/// Creates `name` in `dst` as a copy of the directory `name` in `src` (metadata only).
#[allow(clippy::too_many_arguments)]
fn copy_dir_meta(
    stack: &Stack,
    target: u16,
    src: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
    dst: BorrowedFd<'_>,
    rel: &Path,
    origin: Option<u64>,
) -> Result<()> {
    let work = work_of(stack, target, rel)?;
    let tmp = OsString::from(work.temp_name());
    sys::mkdirat(work.tmp.as_fd(), &tmp, 0o700).ctx("copy-up", rel)?;
    let built = copy_meta(stack, src, name, st, work.tmp.as_fd(), &tmp)
        .map(|()| {
            if let Some(ino) = origin {
                stack.write_origin(work.tmp.as_fd(), &tmp, ino)
            }
        })
        .ctx("copy-up", rel)
        .and_then(|()| place(work.tmp.as_fd(), &tmp, dst, name, rel));
    match &built {
        Ok(()) => stack.bump_dir(rel),
        Err(_) => {
            let _ = sys::unlinkat(work.tmp.as_fd(), &tmp, true);
        }
    }
    built
}

fn copy_dir_into(stack: &Stack, target: u16, obj: &Obj, dst: BorrowedFd<'_>) -> Result<()> {
    let src = parent_fd(stack, obj.top(), obj.parent_path()).ctx("copy-up", &obj.path)?;
    let st = sys::fstatat(src.as_fd(), obj.name()).ctx("copy-up", &obj.path)?;
    // The directory keeps its number even where it later stands alone (renamed).
    copy_dir_meta(
        stack,
        target,
        src.as_fd(),
        obj.name(),
        &st,
        dst,
        &obj.path,
        Some(obj.ino),
    )
}

/// Renames the finished copy into place without replacing anything, then restores the
/// times of the directory it landed in.
fn place(
    tmpdir: BorrowedFd<'_>,
    tmp: &OsStr,
    dst: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
) -> Result<()> {
    let before = sys::fstat(dst).ok();
    match sys::renameat2(tmpdir, tmp, dst, name, sys::RENAME_NOREPLACE) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // A concurrent copy-up of the same directory won; ours is surplus.
            let _ = super::branch::remove_tree(tmpdir, tmp);
            return Ok(());
        }
        Err(e) => return Err(e).ctx("copy-up", rel),
    }
    if let Some(b) = before {
        restore_times(dst, &b);
    }
    Ok(())
}

pub(crate) fn restore_times(dir: BorrowedFd<'_>, st: &Stat) {
    let _ = sys::futimens_path(dir, &times_of(st));
}

pub(crate) fn times_of(st: &Stat) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

pub(super) fn work_of<'a>(
    stack: &'a Stack,
    target: u16,
    rel: &Path,
) -> Result<&'a super::branch::WorkDir> {
    stack
        .branch(target)
        .work
        .as_deref()
        .ok_or_else(|| errno("copy-up", rel, libc::EROFS))
}

/// Copies owner, mode, xattrs and times of `name` in `src` onto `dname` in `dst`.
fn copy_meta(
    stack: &Stack,
    src: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
    dst: BorrowedFd<'_>,
    dname: &OsStr,
) -> std::io::Result<()> {
    let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    match sys::fchownat(dst, dname, Some(st.st_uid), Some(st.st_gid)) {
        Ok(()) => {}
        // Rootless: we cannot give files away; keep ours (overlayfs does the same).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && sys::geteuid() != 0 => {}
        Err(e) => return Err(e),
    }
    if !is_link {
        sys::fchmodat(dst, dname, st.st_mode & 0o7777)?;
    }
    for attr in sys::listxattr(src, name)? {
        if stack.format.is_private_xattr(&attr) {
            continue;
        }
        if let Some(v) = sys::getxattr(src, name, &attr)? {
            match sys::setxattr(dst, dname, &attr, &v, 0) {
                Ok(()) => {}
                // Namespaces we may not write (trusted.* rootless, security.*): skip.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    sys::utimensat(dst, dname, &times_of(st))
}

/// Builds a copy of the non-directory `obj` in the work dir of `target` and renames it
/// to the same name in `dst`.
fn copy_file_into(
    stack: &Stack,
    target: u16,
    obj: &Obj,
    dst: BorrowedFd<'_>,
    data: Data,
) -> Result<u64> {
    let rel = &obj.path;
    let name = obj.name();
    let work = work_of(stack, target, rel)?;
    // A lower hard link whose inode is already up: link the copy under this name too.
    if let Some((k, key)) = &obj.indexed {
        if *k == target {
            return link_up(stack, work, key, dst, name, rel).map(|()| 0);
        }
    }
    let src = parent_fd(stack, obj.top(), obj.parent_path()).ctx("copy-up", rel)?;
    let st = sys::fstatat(src.as_fd(), name).ctx("copy-up", rel)?;
    let key = (st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink > 1)
        .then(|| inode::index_key(obj.ino));
    if let Some(key) = &key {
        if work.indexed(key).ctx("copy-up", rel)?.is_some() {
            return link_up(stack, work, key, dst, name, rel).map(|()| 0);
        }
    }
    let (tmp, made) = if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        work.temp_file()
    } else {
        (OsString::from(work.temp_name()), false)
    };
    // Metadata only where the kernel's layout allows it: a plain file, one name.
    let data = match data {
        Data::Meta if key.is_some() || stack.format.metacopy_xattr().is_none() => Data::Full,
        d => d,
    };
    // A metadata-only copy being copied on takes its data from below it.
    let data_dir = if obj.is_metacopy() && data != Data::Meta {
        Some(parent_fd(stack, obj.layers[1], obj.parent_path()).ctx("copy-up", rel)?)
    } else {
        None
    };
    let from = data_dir.as_ref().map(|d| d.as_fd());
    let built = build_copy(
        stack,
        src.as_fd(),
        name,
        &st,
        (work.tmp.as_fd(), &tmp, made),
        data,
        from,
    )
    .map(|()| stack.write_origin(work.tmp.as_fd(), &tmp, obj.ino))
    .ctx("copy-up", rel);
    if let Err(e) = built {
        let _ = sys::unlinkat(work.tmp.as_fd(), &tmp, false);
        return Err(e);
    }
    if let Some(key) = &key {
        // This name moves up; the others still lead to the lower file.
        match add_to_index(stack, work, &tmp, key, st.st_nlink - 1).ctx("copy-up", rel)? {
            true => {}
            false => return link_up(stack, work, key, dst, name, rel).map(|()| 0),
        }
    }
    let r = place(work.tmp.as_fd(), &tmp, dst, name, rel);
    if r.is_err() {
        let _ = sys::unlinkat(work.tmp.as_fd(), &tmp, false);
    }
    r.map(|()| copied_len(&st, data))
}

/// Bytes a copy-up of a file with lstat `st` moves.
fn copied_len(st: &Stat, data: Data) -> u64 {
    match (st.st_mode & libc::S_IFMT, data) {
        (libc::S_IFREG, Data::Full) => st.st_size.max(0) as u64,
        (libc::S_IFREG, Data::Truncate(n)) => n.min(st.st_size.max(0) as u64),
        _ => 0,
    }
}

/// Creates `tmp` in `dir` as a copy of `name` in `src`.
#[allow(clippy::too_many_arguments)]
/// Builds the copy of `src`/`name` as `tmp` in `dir` (`made`: `tmp` is there already,
/// an empty regular file).
pub(super) fn build_copy(
    stack: &Stack,
    src: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
    (dir, tmp, made): (BorrowedFd<'_>, &OsStr, bool),
    data: Data,
    data_from: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            let create = if made {
                0
            } else {
                libc::O_CREAT | libc::O_EXCL
            };
            let out = sys::openat(dir, tmp, create | libc::O_WRONLY, 0o600)?;
            let len = match data {
                Data::Full => st.st_size as u64,
                Data::Truncate(n) => n.min(st.st_size as u64),
                Data::Meta => 0,
            };
            if len > 0 {
                // The data may live elsewhere (below a metadata-only copy).
                let input = sys::openat(data_from.unwrap_or(src), name, libc::O_RDONLY, 0)?;
                copy_data(input.as_fd(), out.as_fd(), len)?;
            }
            match data {
                Data::Truncate(n) => sys::ftruncate(out.as_fd(), n)?,
                // A sparse file of the right size, as the kernel's metacopy leaves it.
                Data::Meta => sys::ftruncate(out.as_fd(), st.st_size as u64)?,
                Data::Full => sys::ftruncate(out.as_fd(), len)?,
            }
            // As durable as the kernel's copy-up: the data is on disk before the rename.
            if len > 0 {
                sys::fsync(out.as_fd(), true)?;
            }
        }
        libc::S_IFLNK => {
            let target = sys::readlinkat(src, name)?;
            sys::symlinkat(&target, dir, tmp)?;
        }
        libc::S_IFDIR => sys::mkdirat(dir, tmp, 0o700)?,
        _ => sys::mknodat(dir, tmp, st.st_mode & libc::S_IFMT | 0o600, st.st_rdev)?,
    }
    copy_meta(stack, src, name, st, dir, tmp)?;
    match (data, stack.format.metacopy_xattr()) {
        (Data::Meta, Some(x)) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
            sys::setxattr(dir, tmp, OsStr::new(x), b"", 0)
        }
        _ => Ok(()),
    }
}

/// Copies `len` bytes, keeping holes: only the data extents move, with
/// `copy_file_range` (a reflink where the filesystem can), else read/write.
fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, len: u64) -> std::io::Result<()> {
    let mut off: i64 = 0;
    let end = len as i64;
    while off < end {
        let data = match sys::lseek(src, off, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => off,
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = sys::lseek(src, data, libc::SEEK_HOLE)
            .unwrap_or(end)
            .min(end);
        copy_range(src, dst, data, hole - data)?;
        off = hole;
    }
    Ok(())
}

fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: i64,
    len: i64,
) -> std::io::Result<()> {
    let (mut so, mut dof) = (start, start);
    let end = start + len;
    while so < end {
        let want = (end - so).min(1 << 30) as usize;
        match sys::copy_file_range(src, &mut so, dst, &mut dof, want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::EINVAL)
                        | Some(libc::ENOSYS)
                        | Some(libc::EOPNOTSUPP)
                ) =>
            {
                return copy_range_rw(src, dst, so, end - so);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range_rw(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: i64,
    len: i64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = start as u64;
    let end = (start + len) as u64;
    while off < end {
        let want = ((end - off) as usize).min(buf.len());
        let n = sys::pread(src, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += sys::pwrite(dst, &buf[w..n], off + w as u64)?;
        }
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::Data;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copy_up_keeps_data_metadata_xattrs_and_holes() {
        for fmt in formats() {
            let t = Tree::new(&["rw", "ro"]);
            t.dir("ro", "p");
            t.dir("ro", "p/q");
            t.file("ro", "p/q/f", "");
            let f = t.path("ro").join("p/q/f");
            {
                use std::io::{Seek, Write};
                let mut h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
                h.write_all(b"head").unwrap();
                h.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
                h.write_all(b"tail").unwrap();
            }
            set_xattr(&f, "user.color", b"blue");
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640))
                .unwrap();
            set_mtime(&f, 1_000_000_000, 123_456_789);
            set_mtime(&t.path("ro").join("p"), 1_100_000_000, 5);
            let u = t.union(fmt);
            let obj = lookup_path(&u, "p/q/f");
            let up = u.copy_up(&obj, Data::Full).unwrap();
            assert_eq!(up.layers.as_slice(), &[0]);
            assert_eq!(up.ino, obj.ino, "st_ino stable across copy-up");
            let c = t.path("rw").join("p/q/f");
            let (m, lm) = (
                std::fs::metadata(&c).unwrap(),
                std::fs::metadata(&f).unwrap(),
            );
            assert_eq!(m.len(), lm.len());
            assert_eq!(m.mode(), lm.mode());
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 123_456_789));
            assert!(m.blocks() < 64, "holes kept: {} blocks", m.blocks());
            assert_eq!(std::fs::read(&c).unwrap(), std::fs::read(&f).unwrap());
            assert_eq!(get_xattr(&c, "user.color").as_deref(), Some(&b"blue"[..]));
            let pm = std::fs::metadata(t.path("rw").join("p")).unwrap();
            assert_eq!(pm.mtime(), 1_100_000_000, "parent times kept");
            // The lower file is untouched.
            assert_eq!(std::fs::metadata(&f).unwrap().mtime_nsec(), 123_456_789);
            // The work dir holds nothing afterwards but empty spare files.
            let spare = super::super::spares::name_prefix();
            for e in std::fs::read_dir(t.path("rw").join(".unionfs-work/tmp")).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                let m = e.metadata().unwrap();
                assert!(
                    name.starts_with(&spare) && m.is_file() && m.len() == 0,
                    "{name} ({} bytes) left in tmp",
                    m.len()
                );
            }
        }
    }

    #[test]
    fn a_directory_copy_up_makes_only_that_directory_stale() {
        let t = Tree::new(&["rw", "ro"]);
        t.dir("ro", "p");
        t.dir("ro", "p/q");
        t.dir("ro", "other");
        t.file("ro", "p/q/f", "x");
        let u = t.union(super::super::FormatChoice::Wh);
        let (root, p, q, other) = (
            u.root().unwrap(),
            lookup_path(&u, "p"),
            lookup_path(&u, "p/q"),
            lookup_path(&u, "other"),
        );
        u.copy_up(&lookup_path(&u, "p/q/f"), Data::Full).unwrap();
        let s = u.stack();
        assert!(!s.is_current(p.gen, &p.path), "p was copied up");
        assert!(!s.is_current(q.gen, &q.path), "p/q was copied up");
        assert!(s.is_current(other.gen, &other.path));
        assert!(s.is_current(root.gen, &root.path));
        let p2 = lookup_path(&u, "p");
        assert_eq!(p2.layers.as_slice(), &[0, 1]);
        assert!(s.is_current(p2.gen, &p2.path));
        // A stack-wide change still makes everything stale.
        s.bump_layers();
        assert!(!s.is_current(other.gen, &other.path));
        assert!(!s.is_current(p2.gen, &p2.path));
    }

    #[test]
    fn copy_up_reads_metadata_fresh_not_from_the_callers_stat() {
        use std::os::unix::fs::PermissionsExt;
        let t = Tree::new(&["rw", "ro"]);
        t.dir("ro", "d");
        t.file("ro", "d/f", "data");
        std::fs::set_permissions(t.path("ro").join("d"), PermissionsExt::from_mode(0o751)).unwrap();
        set_mtime(&t.path("ro").join("d"), 1_200_000_000, 0);
        let u = t.union(super::super::FormatChoice::Wh);
        // The adapter keeps only st_mode of an object; copy-up must stat for itself.
        let slim = |o: super::Obj| {
            let mode = o.st.st_mode;
            let (p, l, i, x, g) = o.into_parts();
            super::Obj::from_parts(p, l, mode, i, x, g)
        };
        u.copy_up(&slim(lookup_path(&u, "d")), Data::Full).unwrap();
        u.copy_up(&slim(lookup_path(&u, "d/f")), Data::Full)
            .unwrap();
        let m = std::fs::metadata(t.path("rw").join("d")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o751);
        assert_eq!(m.mtime(), 1_200_000_000);
        assert_eq!(
            std::fs::read_to_string(t.path("rw").join("d/f")).unwrap(),
            "data"
        );
    }

    #[test]
    fn truncating_copy_up_copies_no_data() {
        let t = Tree::new(&["rw", "ro"]);
        t.file("ro", "big", &"x".repeat(100_000));
        let u = t.union(super::super::FormatChoice::Wh);
        let obj = lookup_path(&u, "big");
        u.copy_up(&obj, Data::Truncate(0)).unwrap();
        assert_eq!(
            std::fs::metadata(t.path("rw").join("big")).unwrap().len(),
            0
        );
        assert_eq!(
            std::fs::metadata(t.path("ro").join("big")).unwrap().len(),
            100_000
        );
    }

    #[test]
    fn hard_links_stay_linked_after_copy_up() {
        let t = Tree::new(&["rw", "ro"]);
        t.file("ro", "a", "shared");
        std::fs::hard_link(t.path("ro").join("a"), t.path("ro").join("b")).unwrap();
        let u = t.union(super::super::FormatChoice::Wh);
        let a = lookup_path(&u, "a");
        let b = lookup_path(&u, "b");
        assert_eq!(a.ino, b.ino);
        u.copy_up(&a, Data::Full).unwrap();
        // b is still on the lower branch by name, but reads the copied inode.
        let b2 = lookup_path(&u, "b");
        assert!(b2.indexed.is_some());
        assert_eq!(b2.ino, a.ino);
        let b3 = u.copy_up(&b2, Data::Full).unwrap();
        let (ma, mb) = (
            std::fs::metadata(t.path("rw").join("a")).unwrap(),
            std::fs::metadata(t.path("rw").join("b")).unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino(), "one inode upstairs");
        assert_eq!(b3.ino, a.ino);
    }

    #[test]
    fn special_files_and_symlinks_copy_up() {
        let t = Tree::new(&["rw", "ro"]);
        std::os::unix::fs::symlink("target/x", t.path("ro").join("l")).unwrap();
        nix::unistd::mkfifo(
            &t.path("ro").join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        let u = t.union(super::super::FormatChoice::Wh);
        u.copy_up(&lookup_path(&u, "l"), Data::Full).unwrap();
        u.copy_up(&lookup_path(&u, "fifo"), Data::Full).unwrap();
        assert_eq!(
            std::fs::read_link(t.path("rw").join("l")).unwrap().to_str(),
            Some("target/x")
        );
        let m = std::fs::symlink_metadata(t.path("rw").join("fifo")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
        assert_eq!(m.mode() & 0o777, 0o640);
    }

    #[test]
    fn nothing_to_copy_into_is_erofs() {
        let t = Tree::new(&["ro"]);
        t.file("ro", "f", "x");
        let u = t.union_modes(super::super::FormatChoice::Wh, &[super::super::Mode::Ro]);
        let e = u.copy_up(&lookup_path(&u, "f"), Data::Full).unwrap_err();
        assert_eq!(e.errno(), libc::EROFS);
    }
}

//! Writing entries into a directory, one atomic step each, for `merge` and `import`.
//!
//! An entry is built completely under a temporary name in the directory it belongs to
//! (data fsynced, owner, mode, xattrs, times), then renamed over its final name. Where a
//! rename cannot replace what is there (a directory by a file, a non-empty directory),
//! the old entry is first renamed aside to another temporary name and removed after.
//! Temporary names start with [`TEMP_PREFIX`]; whatever a crash leaves under such a name
//! is removed by the next run. Nothing here follows a symlink.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::core::branch::remove_tree;
use crate::core::sys::{self, Stat};
use crate::core::whiteout::WhiteoutFormat;

use super::tree::{is_private_xattr, Meta, TEMP_PREFIX};

/// Hands out fresh temporary names.
pub(crate) struct Temps {
    n: Cell<u64>,
}

impl Temps {
    pub(crate) fn new() -> Temps {
        Temps { n: Cell::new(0) }
    }

    /// A name no other entry has (our prefix, pid, counter).
    pub(crate) fn next(&self) -> OsString {
        let n = self.n.get();
        self.n.set(n + 1);
        OsString::from(format!("{TEMP_PREFIX}{}.{n}", std::process::id()))
    }
}

fn errno_is(e: &io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

/// Renames `tmp` over `name` in `dir`. If `name` is something a rename cannot replace,
/// it goes aside first and is removed afterwards.
pub(crate) fn replace(dir: BorrowedFd<'_>, tmp: &OsStr, name: &OsStr, t: &Temps) -> io::Result<()> {
    match sys::renameat2(dir, tmp, dir, name, 0) {
        Ok(()) => Ok(()),
        Err(e)
            if errno_is(
                &e,
                &[libc::EISDIR, libc::ENOTEMPTY, libc::EEXIST, libc::ENOTDIR],
            ) =>
        {
            let aside = t.next();
            sys::renameat2(dir, name, dir, &aside, 0)?;
            sys::renameat2(dir, tmp, dir, name, 0)?;
            remove_tree(dir, &aside)
        }
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir`, a directory with everything below it; a directory is renamed
/// aside first, so the name goes away in one step. `false`: there was nothing.
pub(crate) fn remove(dir: BorrowedFd<'_>, name: &OsStr, t: &Temps) -> io::Result<bool> {
    let Some(st) = sys::stat_opt(dir, name)? else {
        return Ok(false);
    };
    if !sys::is_dir(&st) {
        return match sys::unlinkat(dir, name, false) {
            Ok(()) => Ok(true),
            Err(e) if errno_is(&e, &[libc::ENOENT]) => Ok(false),
            Err(e) => Err(e),
        };
    }
    let aside = t.next();
    sys::renameat2(dir, name, dir, &aside, 0)?;
    remove_tree(dir, &aside)?;
    Ok(true)
}

/// Whether a failure to give a file away or to set an xattr is one to live with: an
/// unprivileged user cannot chown, nor write `trusted.*` or `security.*`.
fn tolerable(e: &io::Error) -> bool {
    errno_is(e, &[libc::EPERM, libc::ENOTSUP]) && sys::geteuid() != 0
        || errno_is(e, &[libc::ENOTSUP])
}

/// Sets owner, xattrs, mode (unless a symlink) and, with `times`, atime/mtime of `name`
/// in `dir` (a fresh entry: it has no xattrs to remove). `xf` names the stored xattrs.
pub(crate) fn set_meta(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    m: &Meta,
    xf: WhiteoutFormat,
    times: bool,
) -> io::Result<()> {
    let st = &m.st;
    match sys::fchownat(dir, name, Some(st.st_uid), Some(st.st_gid)) {
        Err(e) if !tolerable(&e) => return Err(e),
        _ => {}
    }
    for (shown, v) in &m.xattrs {
        let Some(stored) = xf.stored_xattr_name(shown) else {
            continue;
        };
        match sys::setxattr(dir, name, &stored, v, 0) {
            Err(e) if !tolerable(&e) => return Err(e),
            _ => {}
        }
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        sys::fchmodat(dir, name, st.st_mode & 0o7777)?;
    }
    if times {
        sys::utimensat(dir, name, &times_of(st))?;
    }
    Ok(())
}

/// Makes the existing directory `fd` (opened for reading) carry the metadata `m`: owner,
/// mode, exactly its visible xattrs (private ones stay), times.
pub(crate) fn sync_dir_meta(fd: BorrowedFd<'_>, m: &Meta, xf: WhiteoutFormat) -> io::Result<()> {
    let st = &m.st;
    let here = OsStr::new("");
    match sys::fchown(fd, st.st_uid, st.st_gid) {
        Err(e) if !tolerable(&e) => return Err(e),
        _ => {}
    }
    for stored in sys::listxattr(fd, here)? {
        if is_private_xattr(xf, &stored) {
            continue;
        }
        let keep = xf
            .visible_xattr_name(&stored)
            .is_some_and(|shown| m.xattrs.contains_key(&shown));
        if !keep {
            match sys::removexattr(fd, here, &stored) {
                Err(e) if !tolerable(&e) && !errno_is(&e, &[libc::ENODATA]) => return Err(e),
                _ => {}
            }
        }
    }
    for (shown, v) in &m.xattrs {
        let Some(stored) = xf.stored_xattr_name(shown) else {
            continue;
        };
        if sys::getxattr(fd, here, &stored)?.as_deref() != Some(v.as_slice()) {
            match sys::setxattr(fd, here, &stored, v, 0) {
                Err(e) if !tolerable(&e) => return Err(e),
                _ => {}
            }
        }
    }
    sys::fchmod(fd, st.st_mode & 0o7777)?;
    sys::futimens_path(fd, &times_of(st))
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

/// Creates `tmp` in `dst` as a copy of the non-directory `name` in `src` (lstat `st`),
/// without metadata. File data keeps its holes and is on disk before this returns.
pub(crate) fn build_copy(
    src: BorrowedFd<'_>,
    name: &OsStr,
    m: &Meta,
    dst: BorrowedFd<'_>,
    tmp: &OsStr,
) -> io::Result<()> {
    let st = &m.st;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            let out = sys::openat(
                dst,
                tmp,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o600,
            )?;
            let len = st.st_size as u64;
            if len > 0 {
                let input = sys::openat(src, name, libc::O_RDONLY, 0)?;
                copy_data(input.as_fd(), out.as_fd(), len)?;
                sys::ftruncate(out.as_fd(), len)?;
                sys::fsync(out.as_fd(), true)?;
            }
            Ok(())
        }
        libc::S_IFLNK => {
            let target = m.target.clone().unwrap_or_default();
            sys::symlinkat(&target, dst, tmp)
        }
        kind => sys::mknodat(dst, tmp, kind | 0o600, st.st_rdev),
    }
}

/// Copies `len` bytes, only the data extents (SEEK_DATA/SEEK_HOLE), with
/// `copy_file_range`, else read/write.
fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        let data = match sys::lseek(src, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if errno_is(&e, &[libc::ENXIO]) => break,
            Err(e) if errno_is(&e, &[libc::EINVAL, libc::ENOTSUP]) => pos,
            Err(e) => return Err(e),
        };
        let hole = match sys::lseek(src, data, libc::SEEK_HOLE) {
            Ok(h) => h.min(end),
            Err(_) => end,
        };
        copy_range(src, dst, data, hole)?;
        pos = hole;
    }
    Ok(())
}

fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, from: i64, to: i64) -> io::Result<()> {
    let (mut so, mut dof) = (from, from);
    while so < to {
        let want = (to - so) as usize;
        match sys::copy_file_range(src, &mut so, dst, &mut dof, want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if errno_is(
                    &e,
                    &[libc::EXDEV, libc::ENOSYS, libc::EINVAL, libc::EOPNOTSUPP],
                ) =>
            {
                let mut buf = vec![0u8; 1 << 16];
                while so < to {
                    let want = buf.len().min((to - so) as usize);
                    let n = sys::pread(src, &mut buf[..want], so as u64)?;
                    if n == 0 {
                        break;
                    }
                    let mut w = 0;
                    while w < n {
                        w += sys::pwrite(dst, &buf[w..n], (so as u64) + w as u64)?;
                    }
                    so += n as i64;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splits a relative path into its parent and last component.
pub(crate) fn split(rel: &std::path::Path) -> (&std::path::Path, &OsStr) {
    (
        rel.parent().unwrap_or(std::path::Path::new("")),
        rel.file_name().unwrap_or(OsStr::new("")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn replace_handles_every_kind_of_target() {
        let d = tempfile::tempdir().unwrap();
        let t = super::super::tree::Tree::open(d.path(), "dir").unwrap();
        let fd = t.root.as_fd();
        let temps = Temps::new();
        for (i, target) in ["file", "emptydir", "fulldir", "none"].iter().enumerate() {
            let name = OsString::from(format!("n{i}"));
            let p = d.path().join(&name);
            match *target {
                "file" => fs::write(&p, "old").unwrap(),
                "emptydir" => fs::create_dir(&p).unwrap(),
                "fulldir" => {
                    fs::create_dir_all(p.join("sub")).unwrap();
                    fs::write(p.join("sub/x"), "x").unwrap();
                }
                _ => {}
            }
            let tmp = temps.next();
            fs::write(d.path().join(&tmp), "new").unwrap();
            replace(fd, &tmp, &name, &temps).unwrap();
            assert_eq!(fs::read_to_string(&p).unwrap(), "new", "{target}");
            // And a directory over a file.
            let tmp = temps.next();
            fs::create_dir(d.path().join(&tmp)).unwrap();
            replace(fd, &tmp, &name, &temps).unwrap();
            assert!(p.is_dir());
            assert!(remove(fd, &name, &temps).unwrap());
            assert!(!remove(fd, &name, &temps).unwrap());
        }
        let left: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

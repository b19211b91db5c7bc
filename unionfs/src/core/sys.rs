//! Thin, safe wrappers over the `*at()` system calls the core uses.
//!
//! Every function here works relative to a directory fd and never follows a symlink in
//! the name it is given (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`, `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). Nothing in this file knows about unions.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

pub(crate) type Stat = libc::stat;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_fd(ret: libc::c_int) -> io::Result<OwnedFd> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this fd to us and nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    }
}

/// `openat2` resolution flags: stay beneath the directory, never follow a symlink.
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `rel` (a relative path of several components, or "" for the directory itself)
/// beneath `dir`, refusing any symlink on the way and at the end.
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let path = cstr(rel.as_os_str())?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: mode as u64,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: `how` and `path` outlive the call; the kernel copies them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            // openat2 answers EAGAIN when a concurrent rename raced the walk.
            if err.raw_os_error() == Some(libc::EAGAIN) {
                continue;
            }
            // A symlink on the path is "not there" for the union: lookups below a
            // non-directory see ENOTDIR, the same answer a real filesystem gives.
            if err.raw_os_error() == Some(libc::ELOOP) {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            return Err(err);
        }
        // SAFETY: a fresh fd from the kernel.
        return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
    }
}

/// Opens a directory beneath `dir` as an `O_PATH` handle for further `*at()` calls.
pub(crate) fn open_dir_path(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_beneath(dir, rel, libc::O_PATH | libc::O_DIRECTORY, 0)
}

/// Opens `name` in `dir` (one component) without following a symlink.
pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: plain syscall on valid pointers.
    check_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })
}

pub(crate) fn fstatat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    let name = cstr(name)?;
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: `st` is written by the kernel on success.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(unsafe { st.assume_init() })
}

/// `fstatat` that maps "not there" (ENOENT, or ENOTDIR for a name below a file) to `None`.
pub(crate) fn stat_opt(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match fstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: `st` is written by the kernel on success.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let name = cstr(name)?;
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: libc::mode_t,
    rdev: libc::dev_t,
) -> io::Result<()> {
    let name = cstr(name)?;
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })
}

pub(crate) fn symlinkat(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let target = cstr(target)?;
    let name = cstr(name)?;
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

pub(crate) fn readlinkat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    let name = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let name = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

pub(crate) fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
) -> io::Result<()> {
    let old = cstr(old)?;
    let new = cstr(new)?;
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

pub(crate) const RENAME_NOREPLACE: u32 = 1;
pub(crate) const RENAME_EXCHANGE: u32 = 2;

pub(crate) fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let old = cstr(old)?;
    let new = cstr(new)?;
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
}

pub(crate) fn fchmodat(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    // fchmodat cannot refuse to follow symlinks on older kernels; a symlink's mode is
    // meaningless anyway, so callers never chmod one (see setattr).
    let name = cstr(name)?;
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

pub(crate) fn fchownat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<()> {
    let name = cstr(name)?;
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid.unwrap_or(u32::MAX),
            gid.unwrap_or(u32::MAX),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn utimensat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    times: &[libc::timespec; 2],
) -> io::Result<()> {
    let name = cstr(name)?;
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })
}

pub(crate) fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

pub(crate) fn lseek(fd: BorrowedFd<'_>, off: i64, whence: libc::c_int) -> io::Result<i64> {
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: &mut i64,
    dst: BorrowedFd<'_>,
    dst_off: &mut i64,
    len: usize,
) -> io::Result<usize> {
    let r = unsafe {
        libc::copy_file_range(src.as_raw_fd(), src_off, dst.as_raw_fd(), dst_off, len, 0)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let r = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            off as libc::off_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub(crate) fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> io::Result<usize> {
    let r = unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            off as libc::off_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub(crate) fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

/// The path through which xattr calls reach `name` in `dir` without following a
/// symlink at `name`: `/proc/self/fd/N/name` with the `l*xattr` calls. With an empty
/// name it designates the directory itself (used with the following variants, which
/// only follow the magic link to the directory we hold).
fn xattr_target(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Reads one xattr of `name` in `dir` (empty name: of `dir` itself).
pub(crate) fn getxattr(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attr: &OsStr,
) -> io::Result<Option<Vec<u8>>> {
    let attr = cstr(attr)?;
    let mut buf = vec![0u8; 256];
    if !name.is_empty() && GETXATTRAT.load(std::sync::atomic::Ordering::Relaxed) {
        let cname = cstr(name)?;
        loop {
            match getxattrat(dir, &cname, &attr, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 65536 * 2 => {
                    buf.resize(buf.len() * 4, 0)
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    GETXATTRAT.store(false, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let path = xattr_target(dir, name)?;
    loop {
        let n = unsafe {
            if name.is_empty() {
                libc::getxattr(
                    path.as_ptr(),
                    attr.as_ptr(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            } else {
                libc::lgetxattr(
                    path.as_ptr(),
                    attr.as_ptr(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            }
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 65536 * 2 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Whether the kernel has `getxattrat` (Linux 6.13+): one call instead of a walk
/// through /proc/self/fd for every xattr read on the lookup path.
static GETXATTRAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

#[cfg(target_arch = "x86_64")]
const SYS_GETXATTRAT: libc::c_long = 464;
#[cfg(target_arch = "aarch64")]
const SYS_GETXATTRAT: libc::c_long = 464;

fn getxattrat(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let mut args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: buf.len() as u32,
        flags: 0,
    };
    // SAFETY: pointers valid for the call; the kernel writes at most `size` bytes.
    let n = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
            attr.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub(crate) fn setxattr(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let path = xattr_target(dir, name)?;
    let attr = cstr(attr)?;
    check(unsafe {
        let v = value.as_ptr() as *const libc::c_void;
        if name.is_empty() {
            libc::setxattr(path.as_ptr(), attr.as_ptr(), v, value.len(), flags)
        } else {
            libc::lsetxattr(path.as_ptr(), attr.as_ptr(), v, value.len(), flags)
        }
    })
}

pub(crate) fn removexattr(dir: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> io::Result<()> {
    let path = xattr_target(dir, name)?;
    let attr = cstr(attr)?;
    check(unsafe {
        if name.is_empty() {
            libc::removexattr(path.as_ptr(), attr.as_ptr())
        } else {
            libc::lremovexattr(path.as_ptr(), attr.as_ptr())
        }
    })
}

/// Lists the xattr names of `name` in `dir`.
pub(crate) fn listxattr(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<OsString>> {
    let path = xattr_target(dir, name)?;
    let mut buf = vec![0u8; 1024];
    loop {
        let n = unsafe {
            if name.is_empty() {
                libc::listxattr(
                    path.as_ptr(),
                    buf.as_mut_ptr() as *mut libc::c_char,
                    buf.len(),
                )
            } else {
                libc::llistxattr(
                    path.as_ptr(),
                    buf.as_mut_ptr() as *mut libc::c_char,
                    buf.len(),
                )
            }
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| OsString::from_vec(s.to_vec()))
                .collect());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    }
}

/// One directory entry as `getdents64` reports it.
pub(crate) struct RawDirEntry {
    pub(crate) name: OsString,
    pub(crate) d_type: u8,
    pub(crate) d_ino: u64,
}

/// The filesystem type (`f_type`) of the filesystem holding `fd`.
pub(crate) fn fstatfs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: statfs is plain old data, filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

pub(crate) fn read_dir_fd(fd: &impl std::os::fd::AsFd) -> io::Result<Vec<RawDirEntry>> {
    let fd = fd.as_fd();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        let mut pos = 0usize;
        while pos < n as usize {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let rec = &buf[pos..];
            let d_ino = u64::from_ne_bytes(rec[0..8].try_into().expect("8 bytes"));
            let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
            let d_type = rec[18];
            let name_bytes = &rec[19..reclen];
            let name = CStr::from_bytes_until_nul(name_bytes)
                .map(|c| c.to_bytes())
                .unwrap_or(name_bytes);
            if name != b"." && name != b".." {
                out.push(RawDirEntry {
                    name: OsString::from_vec(name.to_vec()),
                    d_type,
                    d_ino,
                });
            }
            pos += reclen;
        }
    }
}

/// Grows the fd table to `want` slots (or the open-file limit, if lower). A process
/// with several threads that opens its next fd past the table's size waits for an RCU
/// grace period while the kernel swaps tables (milliseconds, at 64, 128, 256... fds),
/// which a fresh mount would otherwise pay in its first requests. A single-threaded
/// process grows it without waiting, and the table never shrinks.
pub(crate) fn reserve_fd_table(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on our own fd table; the high fd is closed at once.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let top = want.min(lim.rlim_cur).saturating_sub(1);
        if top < 64 {
            return;
        }
        // Any open fd serves as the source (stdin may be closed).
        for src in 0..3 {
            let fd = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, top as libc::c_int);
            if fd >= 0 {
                libc::close(fd);
                return;
            }
        }
    }
}

/// The daemon applies the caller's umask itself, so its own must not interfere.
pub(crate) fn umask_zero() {
    unsafe {
        libc::umask(0);
    }
}

pub(crate) fn geteuid() -> u32 {
    unsafe { libc::geteuid() }
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Sets the times of the object an (`O_PATH`) fd designates.
pub(crate) fn futimens_path(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })
}

/// How many CPUs this process may run on. std's `available_parallelism` also reads the
/// cgroup's CPU quota files: a dozen more syscalls in every mount command.
pub(crate) fn cpus() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set for the kernel to fill in.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return 1;
    }
    (unsafe { libc::CPU_COUNT(&set) } as usize).max(1)
}

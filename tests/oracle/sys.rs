//! Thin wrappers over the raw system calls the oracle uses (libc, errno as `i32`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub type SysResult<T> = Result<T, i32>;

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

pub fn cname(s: &str) -> CString {
    CString::new(s).expect("name without NUL")
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `ret < 0` means failure with errno.
pub fn check(ret: libc::c_int) -> SysResult<()> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

pub fn check_size(ret: isize) -> SysResult<usize> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as usize)
    }
}

pub fn lstat(p: &Path) -> SysResult<libc::stat> {
    let c = cstr(p);
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::lstat(c.as_ptr(), &mut st) })?;
    Ok(st)
}

pub fn stat(p: &Path) -> SysResult<libc::stat> {
    let c = cstr(p);
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::stat(c.as_ptr(), &mut st) })?;
    Ok(st)
}

pub fn fmt_type(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

pub fn is_dir(st: &libc::stat) -> bool {
    fmt_type(st.st_mode) == libc::S_IFDIR
}

/// All xattr names of `p` (not following symlinks).
pub fn llistxattr(p: &Path) -> SysResult<Vec<String>> {
    let c = cstr(p);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::ERANGE {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            return Err(e);
        }
        let names = buf[..n as usize]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        return Ok(names);
    }
}

pub fn lgetxattr(p: &Path, name: &str) -> SysResult<Vec<u8>> {
    let c = cstr(p);
    let n = cname(name);
    let mut buf = vec![0u8; 65536];
    let len = check_size(unsafe {
        libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(len);
    Ok(buf)
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> SysResult<()> {
    let c = cstr(p);
    let n = cname(name);
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> SysResult<()> {
    let c = cstr(p);
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

pub fn chmod(p: &Path, mode: u32) -> SysResult<()> {
    let c = cstr(p);
    check(unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) })
}

pub fn mkdir(p: &Path, mode: u32) -> SysResult<()> {
    let c = cstr(p);
    check(unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) })
}

pub fn rmdir(p: &Path) -> SysResult<()> {
    let c = cstr(p);
    check(unsafe { libc::rmdir(c.as_ptr()) })
}

pub fn unlink(p: &Path) -> SysResult<()> {
    let c = cstr(p);
    check(unsafe { libc::unlink(c.as_ptr()) })
}

pub fn link(src: &Path, dst: &Path) -> SysResult<()> {
    let (a, b) = (cstr(src), cstr(dst));
    check(unsafe { libc::linkat(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), 0) })
}

pub fn symlink(target: &str, p: &Path) -> SysResult<()> {
    let (t, c) = (cname(target), cstr(p));
    check(unsafe { libc::symlink(t.as_ptr(), c.as_ptr()) })
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> SysResult<()> {
    let c = cstr(p);
    check(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) })
}

pub fn readlink(p: &Path) -> SysResult<String> {
    std::fs::read_link(p)
        .map(|t| String::from_utf8_lossy(t.as_os_str().as_bytes()).into_owned())
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// `utimensat` with explicit (sec, nsec) pairs.
pub fn utimens(p: &Path, atime: (i64, i64), mtime: (i64, i64), nofollow: bool) -> SysResult<()> {
    let c = cstr(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as _,
        },
    ];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) })
}

pub fn open(p: &Path, flags: i32, mode: u32) -> SysResult<Fd> {
    let c = cstr(p);
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(Fd(fd))
    }
}

/// An owned fd; `close` reports its error (FUSE flush errors surface there).
pub struct Fd(pub i32);

impl Fd {
    pub fn close(mut self) -> SysResult<()> {
        let fd = std::mem::replace(&mut self.0, -1);
        check(unsafe { libc::close(fd) })
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            unsafe { libc::close(self.0) };
        }
    }
}

pub fn pwrite_all(fd: &Fd, data: &[u8], off: u64) -> SysResult<usize> {
    check_size(unsafe { libc::pwrite(fd.0, data.as_ptr().cast(), data.len(), off as libc::off_t) })
}

pub fn write(fd: &Fd, data: &[u8]) -> SysResult<usize> {
    check_size(unsafe { libc::write(fd.0, data.as_ptr().cast(), data.len()) })
}

/// Runs `f` with the calling thread's fsuid/fsgid set to `uid`/`gid` (which also drops
/// the file-system capabilities), restoring root afterwards. Per thread, as Linux has it.
pub fn as_fs_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    let r = f();
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    r
}

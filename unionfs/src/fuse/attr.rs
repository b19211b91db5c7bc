//! Converting the core's view of an object into FUSE attributes, and cache TTLs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::core::{Obj, Stat};

/// Kernel cache lifetimes.
#[derive(Clone, Copy, Debug)]
pub struct Ttls {
    /// How long the kernel may trust a name -> inode answer.
    pub entry: Duration,
    /// How long the kernel may trust attributes.
    pub attr: Duration,
}

/// A minute, as a local filesystem would cache for ever: every change goes through this
/// mount (the kernel sees it), and what it cannot see (stack changes, out-of-band edits
/// followed by `unionfs ctl MNT refresh`) is invalidated explicitly. Hard-linked files are
/// never cached by name (see `ttls_for`).
impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            entry: Duration::from_secs(60),
            attr: Duration::from_secs(60),
        }
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new((-sec) as u64, 0) + Duration::new(0, nsec as u32)
    }
}

/// The FUSE file type of a `st_mode`.
pub(crate) fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The FUSE file type of a known `DT_*` directory entry type.
pub(crate) fn file_type_of_dtype(d_type: u8) -> FileType {
    // DT_* is the S_IFMT value shifted right by 12.
    file_type(u32::from(d_type) << 12)
}

/// Attributes for `obj` from the stat `st` of its top instance; `nlink` overrides the
/// link count (merged directories).
pub(crate) fn to_attr(obj: &Obj, st: &Stat, nlink: Option<u64>) -> FileAttr {
    FileAttr {
        ino: INodeNo(obj.ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: nlink.unwrap_or(st.st_nlink) as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// A `TimeOrNow` as the timespec utimensat takes.
pub(crate) fn timespec(t: fuser::TimeOrNow) -> libc::timespec {
    match t {
        fuser::TimeOrNow::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        fuser::TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = d.subsec_nanos() as i64;
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        },
    }
}

/// What truncation by an unprivileged caller does to a file on a local filesystem:
/// set-uid goes, and set-gid on a group-executable file.
pub(crate) fn kill_suid(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    let st = crate::core::sys_fstat(std::os::fd::AsFd::as_fd(fd))?;
    let mut mode = st.st_mode & 0o7777;
    let before = mode;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode != before {
        // SAFETY: plain fchmod on our fd.
        if unsafe { libc::fchmod(std::os::fd::AsRawFd::as_raw_fd(fd), mode) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_including_before_the_epoch() {
        for (s, n) in [
            (0i64, 0i64),
            (1_600_000_000, 999_999_999),
            (-5, 250_000_000),
        ] {
            let t = time(s, n);
            let ts = timespec(fuser::TimeOrNow::SpecificTime(t));
            assert_eq!((ts.tv_sec, ts.tv_nsec), (s, n));
        }
    }

    #[test]
    fn every_type_maps() {
        assert_eq!(file_type(libc::S_IFDIR), FileType::Directory);
        assert_eq!(file_type(libc::S_IFLNK), FileType::Symlink);
        assert_eq!(file_type(libc::S_IFIFO), FileType::NamedPipe);
        assert_eq!(file_type(libc::S_IFSOCK), FileType::Socket);
        assert_eq!(file_type(libc::S_IFCHR), FileType::CharDevice);
        assert_eq!(file_type(libc::S_IFBLK), FileType::BlockDevice);
        assert_eq!(file_type(libc::S_IFREG), FileType::RegularFile);
    }
}

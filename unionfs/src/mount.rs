//! Mounting as root with the proper type: `fuse.unionfs`, the way libfuse does it, so
//! /proc/mounts, findmnt and `umount -t fuse.unionfs` see what `mount -t fuse.unionfs`
//! asked for. (fuser's own root path mounts type `fuse`.) Unprivileged mounts go
//! through fusermount3 via fuser, which sets the subtype itself.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A kernel mount this process made; unmounted by [`RootMount::unmount`].
#[derive(Debug, Clone)]
pub struct RootMount {
    mountpoint: PathBuf,
}

/// Options of the kernel mount.
pub struct RootMountOptions<'a> {
    /// Source shown in /proc/mounts.
    pub fsname: &'a str,
    /// allow_other.
    pub allow_other: bool,
    /// Read-only mount.
    pub read_only: bool,
}

fn cstr(p: &[u8]) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens /dev/fuse and mounts it on `mountpoint` as `fuse.unionfs`.
pub fn mount(mountpoint: &Path, o: &RootMountOptions<'_>) -> io::Result<(OwnedFd, RootMount)> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd = OwnedFd::from(dev);
    let mode = std::fs::metadata(mountpoint)?.permissions().mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        fd.as_raw_fd(),
        mode,
        unsafe { libc::getuid() },
        unsafe { libc::getgid() }
    );
    if o.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags: libc::c_ulong = 0;
    if o.read_only {
        flags |= libc::MS_RDONLY;
    }
    let src = cstr(o.fsname.as_bytes())?;
    let target = cstr(mountpoint.as_os_str().as_bytes())?;
    let fstype = cstr(b"fuse.unionfs")?;
    let data = cstr(data.as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr() as *const libc::c_void,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        fd,
        RootMount {
            mountpoint: mountpoint.to_path_buf(),
        },
    ))
}

impl RootMount {
    /// Unmounts (lazily if busy, so a stuck user cannot keep the daemon alive).
    pub fn unmount(&self) -> io::Result<()> {
        let target = cstr(self.mountpoint.as_os_str().as_bytes())?;
        // SAFETY: valid C string.
        if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EBUSY) {
            // SAFETY: as above.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
                return Ok(());
            }
        }
        Err(io::Error::last_os_error())
    }
}

//! Running one generated step on a mounted tree with raw syscalls, and the `mv`-style
//! fallback that stands in for kernel overlayfs's EXDEV on directory renames.

use super::ops::{errname, Op, Outcome, Step};
use super::sys::{self, SysResult};
use std::path::Path;

fn ino_of(p: &Path, follow: bool) -> Option<u64> {
    let st = if follow { sys::stat(p) } else { sys::lstat(p) };
    st.ok().map(|s| s.st_ino)
}

fn ino_note(before: Option<u64>, after: Option<u64>) -> String {
    match (before, after) {
        (Some(a), Some(b)) if a == b => "st_ino kept".into(),
        (Some(_), Some(_)) => "st_ino CHANGED".into(),
        _ => String::new(),
    }
}

fn with_note(r: SysResult<String>, note: String) -> SysResult<String> {
    r.map(|d| match (d.is_empty(), note.is_empty()) {
        (_, true) => d,
        (true, false) => note,
        (false, false) => format!("{d}, {note}"),
    })
}

const OFLAGS: i32 = libc::O_NONBLOCK | libc::O_NOCTTY;

fn open_write(p: &Path, extra: i32, data: &[u8], off: Option<u64>) -> SysResult<String> {
    let fd = sys::open(p, libc::O_WRONLY | OFLAGS | extra, 0)?;
    let n = match off {
        Some(o) => sys::pwrite_all(&fd, data, o)?,
        None => sys::write(&fd, data)?,
    };
    fd.close()?;
    Ok(format!("wrote {n}"))
}

/// Runs `step` on the mount at `root`. For a kernel side, an EXDEV from renaming a
/// directory is answered with the mv fallback (see `mv_fallback`).
pub fn execute(step: &Step, root: &Path, kernel: bool) -> Outcome {
    let at = |p: &str| root.join(p);
    let user = |f: &dyn Fn() -> SysResult<String>| {
        if step.as_user {
            sys::as_fs_user(1000, 1000, f)
        } else {
            f()
        }
    };
    let res = match &step.op {
        Op::Create { p, mode, excl } => {
            let fl = libc::O_WRONLY | libc::O_CREAT | OFLAGS | if *excl { libc::O_EXCL } else { 0 };
            user(&|| sys::open(&at(p), fl, *mode)?.close().map(|_| String::new()))
        }
        Op::Write { p, off, data } => {
            let b = ino_of(&at(p), true);
            let r = user(&|| open_write(&at(p), 0, data, Some(*off)));
            with_note(r, ino_note(b, ino_of(&at(p), true)))
        }
        Op::Append { p, data } => {
            let b = ino_of(&at(p), true);
            let r = user(&|| open_write(&at(p), libc::O_APPEND, data, None));
            with_note(r, ino_note(b, ino_of(&at(p), true)))
        }
        Op::Truncate { p, size } => {
            let b = ino_of(&at(p), true);
            let c = sys::cstr(&at(p));
            let r = user(&|| {
                sys::check(unsafe { libc::truncate(c.as_ptr(), *size as libc::off_t) })
                    .map(|_| String::new())
            });
            with_note(r, ino_note(b, ino_of(&at(p), true)))
        }
        Op::OpenTrunc { p } => {
            let b = ino_of(&at(p), true);
            let r = user(&|| {
                sys::open(&at(p), libc::O_WRONLY | libc::O_TRUNC | OFLAGS, 0)?
                    .close()
                    .map(|_| String::new())
            });
            with_note(r, ino_note(b, ino_of(&at(p), true)))
        }
        Op::Chmod { p, mode } => {
            let b = ino_of(&at(p), true);
            let r = user(&|| sys::chmod(&at(p), *mode).map(|_| String::new()));
            with_note(r, ino_note(b, ino_of(&at(p), true)))
        }
        Op::Chown {
            p,
            uid,
            gid,
            nofollow,
        } => {
            let b = ino_of(&at(p), !nofollow);
            let c = sys::cstr(&at(p));
            let fl = if *nofollow {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            let r = user(&|| {
                sys::check(unsafe { libc::fchownat(libc::AT_FDCWD, c.as_ptr(), *uid, *gid, fl) })
                    .map(|_| String::new())
            });
            with_note(r, ino_note(b, ino_of(&at(p), !nofollow)))
        }
        Op::Utimens {
            p,
            atime,
            mtime,
            nofollow,
        } => {
            let b = ino_of(&at(p), !nofollow);
            let r =
                user(&|| sys::utimens(&at(p), *atime, *mtime, *nofollow).map(|_| String::new()));
            // Read the times back at once (before anything can touch atime).
            let r = r.map(|_| {
                let st = if *nofollow {
                    sys::lstat(&at(p))
                } else {
                    sys::stat(&at(p))
                };
                match st {
                    Ok(s) => format!(
                        "now atime={}.{:09} mtime={}.{:09}",
                        s.st_atime, s.st_atime_nsec, s.st_mtime, s.st_mtime_nsec
                    ),
                    Err(e) => format!("stat after: {}", errname(e)),
                }
            });
            with_note(r, ino_note(b, ino_of(&at(p), !nofollow)))
        }
        Op::SetXattr {
            p,
            name,
            value,
            flags,
        } => {
            let b = ino_of(&at(p), false);
            let r = user(&|| sys::lsetxattr(&at(p), name, value, *flags).map(|_| String::new()));
            with_note(r, ino_note(b, ino_of(&at(p), false)))
        }
        Op::RemoveXattr { p, name } => {
            let b = ino_of(&at(p), false);
            let c = sys::cstr(&at(p));
            let n = sys::cname(name);
            let r = user(&|| {
                sys::check(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) })
                    .map(|_| String::new())
            });
            with_note(r, ino_note(b, ino_of(&at(p), false)))
        }
        Op::Link { src, dst } => {
            let b = ino_of(&at(src), false);
            let r = user(&|| sys::link(&at(src), &at(dst)).map(|_| String::new()));
            let r = with_note(r, ino_note(b, ino_of(&at(src), false)));
            let same = match (ino_of(&at(src), false), ino_of(&at(dst), false)) {
                (Some(a), Some(b)) if a == b => "new name has the same st_ino".into(),
                (Some(_), Some(_)) => "new name has ANOTHER st_ino".into(),
                _ => String::new(),
            };
            with_note(r, same)
        }
        Op::Symlink { target, p } => user(&|| sys::symlink(target, &at(p)).map(|_| String::new())),
        Op::Mkdir { p, mode } => user(&|| sys::mkdir(&at(p), *mode).map(|_| String::new())),
        Op::Rename {
            src,
            dst,
            noreplace,
        } => {
            let b = sys::lstat(&at(src)).ok();
            let (s, d) = (sys::cstr(&at(src)), sys::cstr(&at(dst)));
            let fl = if *noreplace {
                libc::RENAME_NOREPLACE
            } else {
                0
            };
            let r = user(&|| {
                sys::check(unsafe {
                    libc::renameat2(libc::AT_FDCWD, s.as_ptr(), libc::AT_FDCWD, d.as_ptr(), fl)
                })
                .map(|_| String::new())
            });
            if kernel && r == Err(libc::EXDEV) && b.as_ref().is_some_and(sys::is_dir) {
                return Outcome {
                    res: mv_fallback(&at(src), &at(dst), *noreplace),
                    emulated: true,
                };
            }
            // st_ino must survive a rename (unless it was a no-op or it failed).
            let a = if src != dst {
                ino_of(&at(dst), false)
            } else {
                None
            };
            with_note(r, ino_note(b.map(|s| s.st_ino), a))
        }
        Op::Unlink { p } => user(&|| sys::unlink(&at(p)).map(|_| String::new())),
        Op::Rmdir { p } => user(&|| sys::rmdir(&at(p)).map(|_| String::new())),
        Op::Mkfifo { p, mode } => {
            user(&|| sys::mknod(&at(p), libc::S_IFIFO | *mode, 0).map(|_| String::new()))
        }
    };
    Outcome {
        res,
        emulated: false,
    }
}

/// What `mv` does when rename(2) says EXDEV, done so that the result is what the rename
/// itself would have produced: the checks rename(2) makes that overlayfs only reaches
/// after its EXDEV (the target directory must be empty; RENAME_NOREPLACE was already
/// handled by the VFS), then the tree is rebuilt at the new name with the same modes,
/// owners, xattrs and times (directories are recreated, every non-directory is hard
/// linked, so st_ino and link counts stay what a rename keeps), then the old tree is
/// removed. Runs as root, as the result of the rename is what we compare.
fn mv_fallback(src: &Path, dst: &Path, noreplace: bool) -> SysResult<String> {
    if let Ok(st) = sys::lstat(dst) {
        if noreplace {
            return Err(libc::EEXIST);
        }
        if !sys::is_dir(&st) {
            return Err(libc::ENOTDIR);
        }
        if std::fs::read_dir(dst)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?
            .next()
            .is_some()
        {
            return Err(libc::ENOTEMPTY);
        }
        sys::rmdir(dst)?;
    }
    copy_tree(src, dst)?;
    remove_tree(src)?;
    Ok(String::new())
}

fn copy_tree(src: &Path, dst: &Path) -> SysResult<()> {
    let st = sys::lstat(src)?;
    sys::mkdir(dst, 0o700)?;
    sys::lchown(dst, st.st_uid, st.st_gid)?;
    sys::chmod(dst, st.st_mode & 0o7777)?;
    for name in sys::llistxattr(src)? {
        let v = sys::lgetxattr(src, &name)?;
        sys::lsetxattr(dst, &name, &v, 0)?;
    }
    let mut names: Vec<_> = std::fs::read_dir(src)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let (s, d) = (src.join(&n), dst.join(&n));
        if sys::is_dir(&sys::lstat(&s)?) {
            copy_tree(&s, &d)?;
        } else {
            sys::link(&s, &d)?;
        }
    }
    sys::utimens(
        dst,
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
        true,
    )
}

fn remove_tree(p: &Path) -> SysResult<()> {
    let names: Vec<_> = std::fs::read_dir(p)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    for n in names {
        let c = p.join(&n);
        if sys::is_dir(&sys::lstat(&c)?) {
            remove_tree(&c)?;
        } else {
            sys::unlink(&c)?;
        }
    }
    sys::rmdir(p)
}

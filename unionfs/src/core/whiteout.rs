//! Whiteout and opaque-directory formats. This is the only code that knows how a
//! deletion or an opaque directory is written down in a branch; lookup, readdir and
//! delete ask it "hidden?" or "hide this name".
//!
//! - `overlay`: the kernel overlayfs layout (Documentation/filesystems/overlayfs.rst,
//!   "whiteouts and opaque directories"): a 0/0 character device with the deleted name;
//!   an opaque directory carries `trusted.overlay.opaque="y"` (`user.overlay.opaque`
//!   when unprivileged, which the kernel reads with `userxattr`).
//! - `wh`: the AUFS/OCI layout: a `.wh.NAME` file hides NAME; a directory holding
//!   `.wh..wh..opq` is opaque. Names starting with `.wh.` are reserved.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use super::sys::{self, Stat};

const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Which layout whiteouts and opaque markers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// 0/0 character devices and the `overlay.opaque` xattr under `xattr_prefix`.
    Overlay {
        /// `trusted.` (privileged) or `user.` (rootless, kernel `userxattr`).
        user_xattr: bool,
    },
    /// `.wh.NAME` files and `.wh..wh..opq`.
    Wh,
    /// unionfs-fuse's `.unionfs-fuse/PATH_HIDDEN~` markers (`core::meta`): nothing is
    /// recorded next to a name, so the per-directory operations here find nothing and
    /// write nothing; lookup, readdir, delete and create ask `core::meta` instead.
    Meta,
}

impl std::fmt::Display for WhiteoutFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhiteoutFormat::Overlay { user_xattr: false } => f.write_str("overlay"),
            WhiteoutFormat::Overlay { user_xattr: true } => f.write_str("overlay (user xattrs)"),
            WhiteoutFormat::Wh => f.write_str("wh"),
            WhiteoutFormat::Meta => f.write_str("meta"),
        }
    }
}

fn wh_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    std::os::unix::ffi::OsStringExt::from_vec(v)
}

/// What readdir makes of one raw entry of a branch directory.
pub(crate) enum EntryMeaning {
    /// A real entry, visible unless hidden from above.
    Real,
    /// A whiteout: hides this name in lower branches; never shown.
    Whiteout(OsString),
    /// Format bookkeeping (the opaque marker): never shown, hides nothing.
    Private,
}

impl WhiteoutFormat {
    fn opaque_xattr(&self) -> &'static str {
        match self {
            WhiteoutFormat::Overlay { user_xattr: true } => "user.overlay.opaque",
            _ => "trusted.overlay.opaque",
        }
    }

    /// The xattr that marks a metadata-only copy (the kernel's `metacopy=on` layout);
    /// only the overlay format has one.
    pub(crate) fn metacopy_xattr(&self) -> Option<&'static str> {
        match self {
            WhiteoutFormat::Overlay { user_xattr: false } => Some("trusted.overlay.metacopy"),
            WhiteoutFormat::Overlay { user_xattr: true } => Some("user.overlay.metacopy"),
            _ => None,
        }
    }

    /// Names that cannot exist in the union because the format uses them.
    pub fn is_reserved_name(&self, name: &OsStr) -> bool {
        match self {
            WhiteoutFormat::Wh => name.as_bytes().starts_with(WH_PREFIX),
            WhiteoutFormat::Overlay { .. } | WhiteoutFormat::Meta => false,
        }
    }

    /// The prefix of the format's own xattrs, if it has one.
    fn private_prefix(&self) -> Option<&'static [u8]> {
        match self {
            WhiteoutFormat::Overlay { user_xattr: false } => Some(b"trusted.overlay."),
            WhiteoutFormat::Overlay { user_xattr: true } => Some(b"user.overlay."),
            WhiteoutFormat::Wh | WhiteoutFormat::Meta => None,
        }
    }

    /// The prefix of our own bookkeeping xattrs (origin and link-count records). In the
    /// overlay format it sits under the format's private prefix, so that callers' names
    /// can never collide with it (they are escaped, see `stored_xattr_name`).
    pub(crate) fn record_prefix(&self) -> &'static str {
        match self {
            WhiteoutFormat::Overlay { user_xattr: false } => "trusted.overlay.unionfs.",
            WhiteoutFormat::Overlay { user_xattr: true } => "user.overlay.unionfs.",
            WhiteoutFormat::Wh | WhiteoutFormat::Meta if sys::geteuid() == 0 => "trusted.unionfs.",
            WhiteoutFormat::Wh | WhiteoutFormat::Meta => "user.unionfs.",
        }
    }

    /// The name under which a caller's xattr is stored in a branch. The overlay format
    /// escapes names under its own prefix (`trusted.overlay.X` is stored as
    /// `trusted.overlay.overlay.X`), as kernel overlayfs does since Linux 6.7. `None`:
    /// the name is our bookkeeping and refused.
    pub(crate) fn stored_xattr_name(&self, name: &OsStr) -> Option<OsString> {
        let a = name.as_bytes();
        match self.private_prefix() {
            Some(p) => match a.strip_prefix(p) {
                Some(rest) => {
                    let mut v = p.to_vec();
                    v.extend_from_slice(b"overlay.");
                    v.extend_from_slice(rest);
                    Some(std::os::unix::ffi::OsStringExt::from_vec(v))
                }
                None => Some(name.to_os_string()),
            },
            None => (!a.starts_with(self.record_prefix().as_bytes())).then(|| name.to_os_string()),
        }
    }

    /// What callers see of a stored xattr name; `None`: private to the union, hidden.
    pub(crate) fn visible_xattr_name(&self, stored: &OsStr) -> Option<OsString> {
        let a = stored.as_bytes();
        match self.private_prefix() {
            Some(p) => match a.strip_prefix(p) {
                Some(rest) => rest.strip_prefix(b"overlay.").map(|r| {
                    let mut v = p.to_vec();
                    v.extend_from_slice(r);
                    std::os::unix::ffi::OsStringExt::from_vec(v)
                }),
                None => Some(stored.to_os_string()),
            },
            None => {
                (!a.starts_with(self.record_prefix().as_bytes())).then(|| stored.to_os_string())
            }
        }
    }

    /// Whether a stored xattr is the union's own (not copied up, never shown).
    pub fn is_private_xattr(&self, stored: &OsStr) -> bool {
        self.visible_xattr_name(stored).is_none()
    }

    /// Is `name` in `dir` a whiteout? `st` is its lstat (None: no such entry).
    pub(crate) fn is_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: Option<&Stat>,
    ) -> io::Result<bool> {
        match self {
            WhiteoutFormat::Overlay { .. } => Ok(st.is_some_and(is_overlay_whiteout)),
            WhiteoutFormat::Wh => {
                if st.is_some() {
                    return Ok(false);
                }
                Ok(sys::stat_opt(dir, &wh_name(name))?.is_some())
            }
            WhiteoutFormat::Meta => Ok(false),
        }
    }

    /// The other layout, which branches we did not write may use.
    fn other(&self) -> WhiteoutFormat {
        match self {
            WhiteoutFormat::Overlay { .. } => WhiteoutFormat::Wh,
            WhiteoutFormat::Wh => WhiteoutFormat::Overlay {
                user_xattr: sys::geteuid() != 0,
            },
            // unionfs-fuse reads no other layout in its branches.
            WhiteoutFormat::Meta => WhiteoutFormat::Meta,
        }
    }

    /// `is_whiteout` for any branch: a read-only branch (an image layer, say) may use
    /// either layout, and both count there, as fuse-overlayfs reads layers.
    pub(crate) fn is_whiteout_in(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: Option<&Stat>,
        foreign: bool,
    ) -> io::Result<bool> {
        Ok(self.is_whiteout(dir, name, st)?
            || (foreign && self.other().is_whiteout(dir, name, st)?))
    }

    /// `is_opaque` for any branch (see `is_whiteout_in`).
    pub(crate) fn is_opaque_in(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        foreign: bool,
    ) -> io::Result<bool> {
        Ok(self.is_opaque(dir, name)? || (foreign && self.other().is_opaque(dir, name)?))
    }

    /// `classify` for any branch (see `is_whiteout_in`).
    pub(crate) fn classify_in(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        d_type: u8,
        foreign: bool,
    ) -> io::Result<EntryMeaning> {
        let own = self.classify(dir, name, d_type)?;
        if !foreign || !matches!(own, EntryMeaning::Real) {
            return Ok(own);
        }
        self.other().classify(dir, name, d_type)
    }

    /// Whether a name in a branch is the other layout's marker (never an object).
    pub(crate) fn is_foreign_marker(&self, name: &OsStr) -> bool {
        matches!(self, WhiteoutFormat::Overlay { .. }) && name.as_bytes().starts_with(WH_PREFIX)
    }

    /// Classifies a raw readdir entry of a branch directory.
    pub(crate) fn classify(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        d_type: u8,
    ) -> io::Result<EntryMeaning> {
        match self {
            WhiteoutFormat::Overlay { .. } => {
                if d_type == libc::DT_CHR || d_type == libc::DT_UNKNOWN {
                    if let Some(st) = sys::stat_opt(dir, name)? {
                        if is_overlay_whiteout(&st) {
                            return Ok(EntryMeaning::Whiteout(name.to_os_string()));
                        }
                    }
                }
                Ok(EntryMeaning::Real)
            }
            WhiteoutFormat::Wh => {
                let b = name.as_bytes();
                if b == WH_OPAQUE.as_bytes() {
                    Ok(EntryMeaning::Private)
                } else if let Some(rest) = b.strip_prefix(WH_PREFIX) {
                    Ok(EntryMeaning::Whiteout(
                        OsStr::from_bytes(rest).to_os_string(),
                    ))
                } else {
                    Ok(EntryMeaning::Real)
                }
            }
            WhiteoutFormat::Meta => Ok(EntryMeaning::Real),
        }
    }

    /// Is the directory `name` in `dir` opaque?
    pub(crate) fn is_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        match self {
            WhiteoutFormat::Overlay { .. } => {
                match sys::getxattr(dir, name, OsStr::new(self.opaque_xattr())) {
                    Ok(v) => Ok(v.as_deref() == Some(b"y")),
                    Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            WhiteoutFormat::Wh => {
                let sub = sys::open_dir_path(dir, std::path::Path::new(name))?;
                Ok(sys::stat_opt(sub.as_fd_borrow(), OsStr::new(WH_OPAQUE))?.is_some())
            }
            WhiteoutFormat::Meta => Ok(false),
        }
    }

    /// Marks the directory `name` in `dir` opaque.
    pub(crate) fn set_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        match self {
            WhiteoutFormat::Overlay { .. } => {
                sys::setxattr(dir, name, OsStr::new(self.opaque_xattr()), b"y", 0)
            }
            WhiteoutFormat::Wh => {
                let sub = sys::open_dir_path(dir, std::path::Path::new(name))?;
                create_marker(sub.as_fd_borrow(), OsStr::new(WH_OPAQUE))
            }
            // Needs the path: `meta::hide(.., is_dir: true)`.
            WhiteoutFormat::Meta => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Removes the opaque marker of the directory `name` in `dir`, if any.
    pub(crate) fn clear_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let r = match self {
            WhiteoutFormat::Overlay { .. } => {
                sys::removexattr(dir, name, OsStr::new(self.opaque_xattr()))
            }
            WhiteoutFormat::Wh => {
                let sub = sys::open_dir_path(dir, std::path::Path::new(name))?;
                sys::unlinkat(sub.as_fd_borrow(), OsStr::new(WH_OPAQUE), false)
            }
            WhiteoutFormat::Meta => Ok(()),
        };
        match r {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::ENOENT)) => {
                Ok(())
            }
            r => r,
        }
    }

    /// Writes a whiteout for `name` in `dir`. In the overlay format the whiteout is the
    /// entry `name` itself, so `name` must not exist there.
    pub(crate) fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        match self {
            WhiteoutFormat::Overlay { .. } => sys::mknodat(dir, name, libc::S_IFCHR, 0),
            WhiteoutFormat::Wh => create_marker(dir, &wh_name(name)),
            // Needs the path: `meta::hide`.
            WhiteoutFormat::Meta => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Removes the whiteout for `name` in `dir` if there is one; says whether there was.
    pub(crate) fn remove_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        let target = match self {
            WhiteoutFormat::Overlay { .. } => match sys::stat_opt(dir, name)? {
                Some(st) if is_overlay_whiteout(&st) => name.to_os_string(),
                _ => return Ok(false),
            },
            WhiteoutFormat::Wh => wh_name(name),
            WhiteoutFormat::Meta => return Ok(false),
        };
        match sys::unlinkat(dir, &target, false) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Probes whether the format can be written in `dir` (a scratch directory).
    pub(crate) fn probe(&self, dir: BorrowedFd<'_>) -> bool {
        if !matches!(self, WhiteoutFormat::Overlay { .. }) {
            return true;
        }
        let name = OsStr::new("#probe");
        let _ = sys::unlinkat(dir, name, false);
        if sys::mknodat(dir, name, libc::S_IFCHR, 0).is_err() {
            return false;
        }
        let _ = sys::unlinkat(dir, name, false);
        self.probe_xattrs(dir)
    }

    /// The part of `probe` past the whiteout device: whether the format's xattrs can be
    /// written on `dir`.
    pub(crate) fn probe_xattrs(&self, dir: BorrowedFd<'_>) -> bool {
        if !matches!(self, WhiteoutFormat::Overlay { .. }) {
            return true;
        }
        // The opaque xattr on `dir` itself, not on a directory made for it: an rmdir on
        // ext4 mounted with `discard` waits for the device. A marker `dir` already has
        // (EEXIST) says as much, and stays.
        let (here, attr) = (OsStr::new(""), OsStr::new(self.opaque_xattr()));
        match sys::setxattr(dir, here, attr, b"y", libc::XATTR_CREATE) {
            Ok(()) => sys::removexattr(dir, here, attr).is_ok(),
            Err(e) => e.raw_os_error() == Some(libc::EEXIST),
        }
    }
}

/// What one raw entry of a branch says about the format the branch was written in (used
/// by the offline tools, which read branches that are not mounted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// A `.wh.` name: the `wh` format.
    Wh,
    /// A 0/0 character device: an overlay whiteout.
    OverlayDevice,
    /// An `overlay.*` xattr; `user`: under `user.` (rootless, `userxattr`).
    OverlayXattr {
        /// `user.overlay.*` rather than `trusted.overlay.*`.
        user: bool,
    },
}

/// Which format `name` in `dir` (lstat `st`) shows evidence of, if any. Never follows a
/// symlink; an entry whose xattrs cannot be listed shows none.
pub(crate) fn evidence(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
) -> io::Result<Option<Evidence>> {
    if name.as_bytes().starts_with(WH_PREFIX) {
        return Ok(Some(Evidence::Wh));
    }
    if is_overlay_whiteout(st) {
        return Ok(Some(Evidence::OverlayDevice));
    }
    let attrs = match sys::listxattr(dir, name) {
        Ok(a) => a,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    for a in attrs {
        let a = a.as_bytes();
        if a.starts_with(b"trusted.overlay.") {
            return Ok(Some(Evidence::OverlayXattr { user: false }));
        }
        if a.starts_with(b"user.overlay.") {
            return Ok(Some(Evidence::OverlayXattr { user: true }));
        }
    }
    Ok(None)
}

fn is_overlay_whiteout(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn create_marker(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match sys::openat(
        dir,
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        0o444,
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Borrowing helper so `OwnedFd` temporaries read naturally above.
trait AsFdBorrow {
    fn as_fd_borrow(&self) -> BorrowedFd<'_>;
}
impl AsFdBorrow for std::os::fd::OwnedFd {
    fn as_fd_borrow(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn tmp() -> (tempfile::TempDir, std::os::fd::OwnedFd) {
        let d = tempfile::tempdir().unwrap();
        let b =
            super::super::branch::Branch::open(d.path(), super::super::branch::Mode::Rw).unwrap();
        (d, std::sync::Arc::try_unwrap(b.fd).unwrap())
    }

    #[test]
    fn wh_format_round_trip() {
        let (d, fd) = tmp();
        let f = WhiteoutFormat::Wh;
        assert!(f.is_reserved_name(OsStr::new(".wh.x")));
        assert!(!f.is_reserved_name(OsStr::new("x.wh.")));
        f.make_whiteout(fd.as_fd(), OsStr::new("gone")).unwrap();
        assert!(d.path().join(".wh.gone").exists());
        assert!(f.is_whiteout(fd.as_fd(), OsStr::new("gone"), None).unwrap());
        assert!(matches!(
            f.classify(fd.as_fd(), OsStr::new(".wh.gone"), libc::DT_REG).unwrap(),
            EntryMeaning::Whiteout(n) if n == "gone"
        ));
        assert!(f.remove_whiteout(fd.as_fd(), OsStr::new("gone")).unwrap());
        assert!(!f.is_whiteout(fd.as_fd(), OsStr::new("gone"), None).unwrap());
        std::fs::create_dir(d.path().join("dir")).unwrap();
        assert!(!f.is_opaque(fd.as_fd(), OsStr::new("dir")).unwrap());
        f.set_opaque(fd.as_fd(), OsStr::new("dir")).unwrap();
        assert!(d.path().join("dir/.wh..wh..opq").exists());
        assert!(f.is_opaque(fd.as_fd(), OsStr::new("dir")).unwrap());
        f.clear_opaque(fd.as_fd(), OsStr::new("dir")).unwrap();
        assert!(!f.is_opaque(fd.as_fd(), OsStr::new("dir")).unwrap());
    }

    #[test]
    fn evidence_names_the_format() {
        let (d, fd) = tmp();
        std::fs::write(d.path().join("plain"), "x").unwrap();
        std::fs::write(d.path().join(".wh.gone"), "").unwrap();
        let st = |n: &str| sys::fstatat(fd.as_fd(), OsStr::new(n)).unwrap();
        let ev = |n: &str| evidence(fd.as_fd(), OsStr::new(n), &st(n)).unwrap();
        assert_eq!(ev("plain"), None);
        assert_eq!(ev(".wh.gone"), Some(Evidence::Wh));
        let f = WhiteoutFormat::Overlay {
            user_xattr: sys::geteuid() != 0,
        };
        // Root can always write the overlay format here: a probe that fails then is a bug.
        let probed = f.probe(fd.as_fd());
        if crate::core::testutil::require_root("the overlay format's evidence") {
            assert!(probed, "the overlay probe fails as root");
        }
        if probed {
            f.make_whiteout(fd.as_fd(), OsStr::new("dev")).unwrap();
            assert_eq!(ev("dev"), Some(Evidence::OverlayDevice));
            std::fs::create_dir(d.path().join("dir")).unwrap();
            f.set_opaque(fd.as_fd(), OsStr::new("dir")).unwrap();
            assert_eq!(
                ev("dir"),
                Some(Evidence::OverlayXattr {
                    user: sys::geteuid() != 0
                })
            );
        }
    }

    #[test]
    fn the_probe_leaves_the_directory_as_it_was() {
        // Root can make 0/0 devices and trusted xattrs in a temp dir: the probe must pass.
        if !crate::core::testutil::require_root("0/0 devices and trusted.overlay xattrs") {
            return;
        }
        let (d, fd) = tmp();
        let f = WhiteoutFormat::Overlay { user_xattr: false };
        let here = OsStr::new("");
        assert!(
            f.probe(fd.as_fd()),
            "the probe fails for root in a temp dir"
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "no entry left"
        );
        assert!(!f.is_opaque(fd.as_fd(), here).unwrap(), "no marker left");
        // A directory that is opaque already stays so.
        sys::setxattr(fd.as_fd(), here, OsStr::new(f.opaque_xattr()), b"y", 0).unwrap();
        assert!(f.probe(fd.as_fd()));
        assert!(f.is_opaque(fd.as_fd(), here).unwrap(), "its marker stays");
    }

    #[test]
    fn overlay_format_round_trip() {
        let (d, fd) = tmp();
        let f = WhiteoutFormat::Overlay {
            user_xattr: sys::geteuid() != 0,
        };
        if crate::core::testutil::require_root("the overlay format round trip") {
            assert!(f.probe(fd.as_fd()), "the overlay probe fails as root");
        } else if !f.probe(fd.as_fd()) {
            eprintln!("skipped: this user cannot create 0/0 devices or overlay xattrs here");
            return;
        }
        f.make_whiteout(fd.as_fd(), OsStr::new("gone")).unwrap();
        let st = sys::fstatat(fd.as_fd(), OsStr::new("gone")).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(st.st_rdev, 0);
        assert!(f
            .is_whiteout(fd.as_fd(), OsStr::new("gone"), Some(&st))
            .unwrap());
        std::fs::create_dir(d.path().join("dir")).unwrap();
        f.set_opaque(fd.as_fd(), OsStr::new("dir")).unwrap();
        assert!(f.is_opaque(fd.as_fd(), OsStr::new("dir")).unwrap());
        assert!(f.is_private_xattr(OsStr::new(f.opaque_xattr())));
        assert!(!f.is_private_xattr(OsStr::new("user.mine")));
        // A caller's name under the private prefix is escaped, and shown unescaped.
        let pre = if matches!(f, WhiteoutFormat::Overlay { user_xattr: true }) {
            "user"
        } else {
            "trusted"
        };
        let asked = format!("{pre}.overlay.opaque");
        let stored = f.stored_xattr_name(OsStr::new(&asked)).unwrap();
        assert_eq!(stored, OsStr::new(&format!("{pre}.overlay.overlay.opaque")));
        assert_eq!(f.visible_xattr_name(&stored).unwrap(), OsStr::new(&asked));
        assert!(f.remove_whiteout(fd.as_fd(), OsStr::new("gone")).unwrap());
    }
}

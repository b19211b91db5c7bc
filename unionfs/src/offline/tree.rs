//! The branch walker the offline tools share: opening a directory given on the command
//! line (refusing a mounted union view), detecting its whiteout format, listing a
//! directory of a branch as the union reads it (real entries and whiteouts, never the
//! format's or our own bookkeeping), and the metadata the tools compare and copy.
//!
//! Invariants: every access is an `*at()` call beneath the directory fd, never following
//! a symlink (`core::sys`); xattrs are reported by the name the union shows (the overlay
//! format's escaping undone) and private ones (`overlay.opaque`, our origin and link-count
//! records) never appear.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::core::branch::HIDDEN_WORK_NAME;
use crate::core::sys::{self, Stat};
use crate::core::whiteout::{self, EntryMeaning, Evidence, WhiteoutFormat};

use super::{usage, Ctx, FormatArg, Result};

/// Prefix of the temporary names `merge` and `import` build entries under before renaming
/// them into place; leftovers of an interrupted run are removed by the next one.
pub(crate) const TEMP_PREFIX: &str = ".#unionfs-tmp.";

/// Our own bookkeeping xattrs, whatever the format (origin and link-count records).
const RECORD_PREFIXES: [&[u8]; 4] = [
    b"trusted.overlay.unionfs.",
    b"user.overlay.unionfs.",
    b"trusted.unionfs.",
    b"user.unionfs.",
];

/// A directory given on the command line, opened once.
#[derive(Debug)]
pub(crate) struct Tree {
    /// Canonical path (for messages).
    pub(crate) path: PathBuf,
    /// `O_PATH` directory fd; all access goes beneath it.
    pub(crate) root: OwnedFd,
    /// How whiteouts are read; `None`: a plain directory, where nothing is a whiteout.
    pub(crate) format: Option<WhiteoutFormat>,
    /// How xattr names are stored (the overlay format escapes `overlay.*` names).
    pub(crate) xattrs: WhiteoutFormat,
}

impl Tree {
    /// Opens `path` (`what` names it in messages). Bad input (exit 2): missing, not a
    /// directory, or inside a mounted `unionfs` view (whose whiteouts are invisible).
    pub(crate) fn open(path: &Path, what: &str) -> Result<Tree> {
        let root = open_dir_arg(path, what)?;
        let canon = path
            .canonicalize()
            .map_err(|e| usage(format!("{what} {}: {e}", path.display())))?;
        Ok(Tree {
            path: canon,
            root,
            format: None,
            xattrs: default_overlay(),
        })
    }

    /// Sets the format from `--format` (auto: detection, else `fallback`).
    pub(crate) fn with_format(mut self, arg: FormatArg, fallback: WhiteoutFormat) -> Result<Tree> {
        let f = match arg {
            FormatArg::Overlay => default_overlay(),
            FormatArg::Wh => WhiteoutFormat::Wh,
            FormatArg::Auto => detect(self.root.as_fd(), &self.path)?.unwrap_or(fallback),
        };
        self.format = Some(f);
        self.xattrs = f;
        Ok(self)
    }

    /// The root directory, opened for reading.
    pub(crate) fn open_root(&self) -> Result<OwnedFd> {
        open_read(self.root.as_fd(), Path::new("")).ctx("open", &self.path)
    }
}

/// The overlay format as this user writes it (`user.` xattrs when not root).
pub(crate) fn default_overlay() -> WhiteoutFormat {
    WhiteoutFormat::Overlay {
        user_xattr: sys::geteuid() != 0,
    }
}

/// A short name of a format for output.
pub(crate) fn format_name(f: Option<WhiteoutFormat>) -> &'static str {
    match f {
        None => "plain",
        Some(WhiteoutFormat::Wh) => "wh",
        Some(WhiteoutFormat::Overlay { user_xattr: false }) => "overlay",
        Some(WhiteoutFormat::Overlay { user_xattr: true }) => "overlay-user",
        Some(WhiteoutFormat::Meta) => "meta",
    }
}

/// Checks and opens a directory argument (`O_PATH`).
pub(crate) fn open_dir_arg(path: &Path, what: &str) -> Result<OwnedFd> {
    let md = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => usage(format!("{what} {} does not exist", path.display())),
        _ => usage(format!("{what} {}: {e}", path.display())),
    })?;
    if !md.is_dir() {
        return Err(usage(format!(
            "{what} {} is not a directory",
            path.display()
        )));
    }
    let canon = path
        .canonicalize()
        .map_err(|e| usage(format!("{what} {}: {e}", path.display())))?;
    if let Some(mnt) = unionfs_mount_containing(&canon) {
        return Err(usage(format!(
            "{what} {} is inside the unionfs mount at {}: give a branch directory, \
             not the mounted view",
            path.display(),
            mnt.display()
        )));
    }
    open_root_path(&canon).map_err(|e| usage(format!("{what} {}: {e}", path.display())))
}

/// Opens a directory given by the user as an `O_PATH` fd (the path itself may contain
/// symlinks: it is the user's; everything beneath goes through the fd).
fn open_root_path(path: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string; the fd returned is owned by nobody else.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The `unionfs` FUSE mount that `path` (canonical) lies in, if the deepest mount holding
/// it is one (from /proc/self/mountinfo).
pub(crate) fn unionfs_mount_containing(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, bool)> = None;
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = pre.split(' ').collect();
        let g: Vec<&str> = post.split(' ').collect();
        if f.len() < 5 || g.len() < 2 {
            continue;
        }
        let mp = unescape(f[4]);
        if !path.starts_with(&mp) {
            continue;
        }
        let ours = g[0] == "fuse.unionfs" || (g[0].starts_with("fuse") && g[1] == "unionfs");
        // Later lines are mounted later and cover earlier ones at the same place.
        let deeper = match &best {
            None => true,
            Some((b, _)) => mp.as_os_str().len() >= b.as_os_str().len(),
        };
        if deeper {
            best = Some((mp, ours));
        }
    }
    best.and_then(|(p, ours)| ours.then_some(p))
}

fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Opens `rel` beneath `dir` as a readable directory (for getdents), never following a
/// symlink.
pub(crate) fn open_read(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    sys::open_beneath(dir, rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Detects the whiteout format of the tree below `root`: `None` when it shows no
/// evidence of either. A tree with both `.wh.` names and overlay whiteouts is bad input.
pub(crate) fn detect(root: BorrowedFd<'_>, path: &Path) -> Result<Option<WhiteoutFormat>> {
    let mut wh: Option<PathBuf> = None;
    let mut overlay: Option<(PathBuf, Option<bool>)> = None;
    let mut note = |ev: Evidence, at: PathBuf| match ev {
        Evidence::Wh => {
            wh.get_or_insert(at);
        }
        Evidence::OverlayDevice => {
            overlay.get_or_insert((at, None));
        }
        Evidence::OverlayXattr { user } => {
            let o = overlay.get_or_insert((at, Some(user)));
            // A trusted.overlay.* xattr wins over user.*: only root writes it.
            if o.1.is_none() || (!user && o.1 == Some(true)) {
                o.1 = Some(user);
            }
        }
    };
    let root_st = sys::fstat(root).ctx("stat", path)?;
    if let Some(ev) = whiteout::evidence(root, OsStr::new(""), &root_st).ctx("detect", path)? {
        note(ev, path.to_path_buf());
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let fd = open_read(root, &rel).ctx("open", path.join(&rel))?;
        for e in sys::read_dir_fd(&fd).ctx("read directory", path.join(&rel))? {
            if rel.as_os_str().is_empty() && e.name == HIDDEN_WORK_NAME {
                continue;
            }
            let Some(st) = sys::stat_opt(fd.as_fd(), &e.name).ctx("stat", path.join(&rel))? else {
                continue;
            };
            let at = rel.join(&e.name);
            if let Some(ev) =
                whiteout::evidence(fd.as_fd(), &e.name, &st).ctx("detect", path.join(&at))?
            {
                note(ev, at.clone());
            }
            if sys::is_dir(&st) {
                stack.push(at);
            }
        }
    }
    match (wh, overlay) {
        (Some(w), Some((o, _))) => Err(usage(format!(
            "{} mixes whiteout formats ({} is wh, {} is overlay); say which with --format",
            path.display(),
            w.display(),
            o.display()
        ))),
        (Some(_), None) => Ok(Some(WhiteoutFormat::Wh)),
        (None, Some((_, Some(user)))) => Ok(Some(WhiteoutFormat::Overlay { user_xattr: user })),
        (None, Some((_, None))) => Ok(Some(default_overlay())),
        (None, None) => Ok(None),
    }
}

/// One name of a branch directory as the union reads it.
#[derive(Clone, Copy)]
pub(crate) enum Item {
    /// A real entry (lstat).
    Real(Stat),
    /// A whiteout hiding the name below.
    Whiteout,
}

/// A directory of a tree, listed: real entries and whiteouts by name (a real entry wins
/// over a whiteout of the same name, as in `readdir`), plus leftovers of our temp names.
pub(crate) struct Listing {
    pub(crate) items: BTreeMap<OsString, Item>,
    pub(crate) leftovers: Vec<OsString>,
}

/// Lists the directory `dir` (readable fd) of a tree in `format` (`None`: plain).
pub(crate) fn list(
    format: Option<WhiteoutFormat>,
    dir: &OwnedFd,
    at_root: bool,
) -> io::Result<Listing> {
    let mut items = BTreeMap::new();
    let mut leftovers = Vec::new();
    for e in sys::read_dir_fd(dir)? {
        if at_root && e.name == HIDDEN_WORK_NAME {
            continue;
        }
        if at_root && e.name == crate::core::meta::META_DIR {
            // Its markers would be copied as data and its deletions lost.
            return Err(io::Error::other(
                "this tree holds unionfs-fuse's .unionfs-fuse meta directory (whiteout=meta), which the offline tools cannot read yet",
            ));
        }
        if e.name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
            leftovers.push(e.name);
            continue;
        }
        let meaning = match format {
            None => EntryMeaning::Real,
            Some(f) => f.classify(dir.as_fd(), &e.name, e.d_type)?,
        };
        match meaning {
            EntryMeaning::Private => {}
            EntryMeaning::Whiteout(n) => {
                items.entry(n).or_insert(Item::Whiteout);
            }
            EntryMeaning::Real => {
                if let Some(st) = sys::stat_opt(dir.as_fd(), &e.name)? {
                    if st.st_mode & libc::S_IFMT == libc::S_IFREG && is_metacopy(dir, &e.name)? {
                        // Its bytes are below it: diffing, merging or exporting it
                        // alone would carry zeros.
                        return Err(io::Error::other(format!(
                            "{} is a metadata-only copy (-o metacopy=on), which the offline tools cannot read yet; write to it through a mount (or mount without metacopy and copy it) first",
                            e.name.to_string_lossy()
                        )));
                    }
                    items.insert(e.name, Item::Real(st));
                }
            }
        }
    }
    leftovers.sort();
    Ok(Listing { items, leftovers })
}

fn is_metacopy(dir: &OwnedFd, name: &OsStr) -> io::Result<bool> {
    for user_xattr in [false, true] {
        let Some(x) = (WhiteoutFormat::Overlay { user_xattr }).metacopy_xattr() else {
            continue;
        };
        match sys::getxattr(dir.as_fd(), name, OsStr::new(x)) {
            Ok(Some(_)) => return Ok(true),
            Ok(None) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Whether the directory `name` in `dir` is opaque in `format`.
pub(crate) fn is_opaque(
    format: Option<WhiteoutFormat>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<bool> {
    match format {
        None => Ok(false),
        Some(f) => f.is_opaque(dir, name),
    }
}

/// Whether a stored xattr name is bookkeeping that no tool reports or copies.
pub(crate) fn is_private_xattr(xf: WhiteoutFormat, stored: &OsStr) -> bool {
    let b = stored.as_bytes();
    RECORD_PREFIXES.iter().any(|p| b.starts_with(p)) || xf.is_private_xattr(stored)
}

/// The metadata the tools compare and copy.
pub(crate) struct Meta {
    pub(crate) st: Stat,
    /// A symlink's target.
    pub(crate) target: Option<OsString>,
    /// Visible xattrs: the name the union shows, and the value.
    pub(crate) xattrs: BTreeMap<OsString, Vec<u8>>,
}

/// Reads the metadata of `name` in `dir` (empty name: `dir` itself), whose lstat is `st`.
pub(crate) fn read_meta(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: Stat,
    xf: WhiteoutFormat,
) -> io::Result<Meta> {
    let target = (st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        .then(|| sys::readlinkat(dir, name))
        .transpose()?;
    let mut xattrs = BTreeMap::new();
    for stored in sys::listxattr(dir, name)? {
        if is_private_xattr(xf, &stored) {
            continue;
        }
        let Some(shown) = xf.visible_xattr_name(&stored) else {
            continue;
        };
        if let Some(v) = sys::getxattr(dir, name, &stored)? {
            xattrs.insert(shown, v);
        }
    }
    Ok(Meta { st, target, xattrs })
}

/// The type of an entry as the tools name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

impl Kind {
    pub(crate) fn of(st: &Stat) -> Kind {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            _ => Kind::File,
        }
    }
}

/// Which fields differ between `a` (`a_name` in `a_dir`) and `b`, in the order `diff
/// --help` documents: type (then nothing else), content, target, rdev, mode, owner,
/// xattrs, and mtime when `mtime`.
pub(crate) fn differences(
    a: &Meta,
    a_at: (BorrowedFd<'_>, &OsStr),
    b: &Meta,
    b_at: (BorrowedFd<'_>, &OsStr),
    mtime: bool,
) -> io::Result<Vec<&'static str>> {
    let (sa, sb) = (&a.st, &b.st);
    if sa.st_mode & libc::S_IFMT != sb.st_mode & libc::S_IFMT {
        return Ok(vec!["type"]);
    }
    let mut out = Vec::new();
    match Kind::of(sa) {
        Kind::File if sa.st_size != sb.st_size || !same_content(a_at, b_at, sa.st_size as u64)? => {
            out.push("content")
        }
        Kind::Symlink if a.target != b.target => out.push("target"),
        Kind::Char | Kind::Block if sa.st_rdev != sb.st_rdev => out.push("rdev"),
        _ => {}
    }
    if Kind::of(sa) != Kind::Symlink && sa.st_mode & 0o7777 != sb.st_mode & 0o7777 {
        out.push("mode");
    }
    if sa.st_uid != sb.st_uid || sa.st_gid != sb.st_gid {
        out.push("owner");
    }
    if a.xattrs != b.xattrs {
        out.push("xattrs");
    }
    if mtime && (sa.st_mtime, sa.st_mtime_nsec) != (sb.st_mtime, sb.st_mtime_nsec) {
        out.push("mtime");
    }
    Ok(out)
}

/// Compares the bytes of two regular files of equal size `len`.
fn same_content(
    a: (BorrowedFd<'_>, &OsStr),
    b: (BorrowedFd<'_>, &OsStr),
    len: u64,
) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let fa = sys::openat(a.0, a.1, libc::O_RDONLY, 0)?;
    let fb = sys::openat(b.0, b.1, libc::O_RDONLY, 0)?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut off = 0u64;
    while off < len {
        let n = sys::pread(fa.as_fd(), &mut ba, off)?;
        if n == 0 {
            return Ok(false);
        }
        let mut m = 0;
        while m < n {
            let k = sys::pread(fb.as_fd(), &mut bb[m..n], off + m as u64)?;
            if k == 0 {
                return Ok(false);
            }
            m += k;
        }
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// A relative path for output: `.` for the root, a trailing `/` for directories.
pub(crate) fn shown(rel: &Path, dir: bool) -> String {
    let mut s = if rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        rel.to_string_lossy().into_owned()
    };
    if dir && !s.ends_with('/') {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_format_and_refuses_a_mix() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "x").unwrap();
        let t = Tree::open(d.path(), "branch").unwrap();
        assert_eq!(detect(t.root.as_fd(), &t.path).unwrap(), None);
        std::fs::write(d.path().join("a/b/.wh.gone"), "").unwrap();
        assert_eq!(
            detect(t.root.as_fd(), &t.path).unwrap(),
            Some(WhiteoutFormat::Wh)
        );
        let f = default_overlay();
        let sub = open_read(t.root.as_fd(), Path::new("a")).unwrap();
        if f.probe(sub.as_fd()) {
            f.make_whiteout(sub.as_fd(), OsStr::new("dev")).unwrap();
            let e = detect(t.root.as_fd(), &t.path).unwrap_err();
            assert!(e.to_string().contains("mixes"), "{e}");
            std::fs::remove_file(d.path().join("a/b/.wh.gone")).unwrap();
            assert_eq!(detect(t.root.as_fd(), &t.path).unwrap(), Some(f));
        }
    }

    #[test]
    fn listing_hides_bookkeeping_and_lets_real_entries_win() {
        let d = tempfile::tempdir().unwrap();
        for n in ["x", ".wh.x", ".wh.y", ".wh..wh..opq", ".#unionfs-tmp.1"] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        std::fs::create_dir(d.path().join(HIDDEN_WORK_NAME)).unwrap();
        let t = Tree::open(d.path(), "branch").unwrap();
        let fd = t.open_root().unwrap();
        let l = list(Some(WhiteoutFormat::Wh), &fd, true).unwrap();
        let names: Vec<_> = l.items.keys().cloned().collect();
        assert_eq!(names, ["x", "y"]);
        assert!(matches!(l.items[OsStr::new("x")], Item::Real(_)));
        assert!(matches!(l.items[OsStr::new("y")], Item::Whiteout));
        assert_eq!(l.leftovers, [".#unionfs-tmp.1"]);
        let fd = t.open_root().unwrap();
        let plain = list(None, &fd, false).unwrap();
        assert!(plain.items.contains_key(OsStr::new(".wh.y")));
        assert!(plain.items.contains_key(OsStr::new(HIDDEN_WORK_NAME)));
    }

    #[test]
    fn a_file_is_not_a_tree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "").unwrap();
        let e = Tree::open(&d.path().join("f"), "branch").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let e = Tree::open(&d.path().join("none"), "branch").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}

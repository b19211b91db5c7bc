//! Tree snapshots (lstat, never following symlinks) and a readable diff of two of them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::get_xattr;
use super::list_xattrs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// What a snapshot records of one object (lstat, never following symlinks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of files and symlinks (directory sizes differ between filesystems).
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub link: Option<PathBuf>,
    /// (major, minor) of device nodes.
    pub rdev: Option<(u32, u32)>,
    /// Sorted (name, value) of the xattrs selected by [`SnapshotOptions::xattr_prefixes`].
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Link count of non-directories.
    pub nlink: Option<u64>,
    /// (seconds, nanoseconds) if [`SnapshotOptions::mtimes`].
    pub mtime: Option<(i64, i64)>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(s) = self.size {
            write!(f, " size={s}")?;
        }
        if let Some(h) = &self.sha256 {
            write!(f, " sha256={}", &h[..12])?;
        }
        if let Some(l) = &self.link {
            write!(f, " -> {}", l.display())?;
        }
        if let Some((a, b)) = self.rdev {
            write!(f, " rdev={a}:{b}")?;
        }
        if let Some(n) = self.nlink {
            write!(f, " nlink={n}")?;
        }
        if let Some((s, ns)) = self.mtime {
            write!(f, " mtime={s}.{ns:09}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={:?}", String::from_utf8_lossy(v))?;
        }
        Ok(())
    }
}

/// Relative path ("" for the root) to entry.
pub type Snapshot = BTreeMap<PathBuf, Entry>;

#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    pub mtimes: bool,
    pub xattr_prefixes: Vec<String>,
    /// Relative paths left out, with everything below them.
    pub skip: Vec<PathBuf>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            mtimes: false,
            xattr_prefixes: vec!["user.".to_string()],
            skip: Vec::new(),
        }
    }
}

/// Snapshot of everything below `root` (default options: no times, `user.*` xattrs).
pub fn tree_snapshot(root: &Path) -> Snapshot {
    tree_snapshot_with(root, &SnapshotOptions::default())
}

/// Snapshot including mtimes.
pub fn tree_snapshot_with_times(root: &Path) -> Snapshot {
    tree_snapshot_with(
        root,
        &SnapshotOptions {
            mtimes: true,
            ..Default::default()
        },
    )
}

pub fn tree_snapshot_with(root: &Path, opts: &SnapshotOptions) -> Snapshot {
    let mut snap = Snapshot::new();
    walk(root, Path::new(""), opts, &mut snap);
    snap
}

fn walk(root: &Path, rel: &Path, opts: &SnapshotOptions, snap: &mut Snapshot) {
    if opts.skip.iter().any(|s| s == rel) {
        return;
    }
    let path = root.join(rel);
    let e = entry(&path, opts);
    let is_dir = e.kind == Kind::Dir;
    snap.insert(rel.to_path_buf(), e);
    if is_dir {
        let rd = fs::read_dir(&path).unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()));
        for d in rd {
            let d = d.unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()));
            walk(root, &rel.join(d.file_name()), opts, snap);
        }
    }
}

/// The [`Entry`] of one path (lstat).
pub fn entry(path: &Path, opts: &SnapshotOptions) -> Entry {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = md.mode() & libc::S_IFMT;
    let kind = match ft {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFCHR => Kind::CharDev,
        libc::S_IFBLK => Kind::BlockDev,
        other => panic!("{}: unknown file type {other:o}", path.display()),
    };
    let sha256 = (kind == Kind::File).then(|| {
        let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    });
    let mut xattrs: Vec<(String, Vec<u8>)> = list_xattrs(path)
        .into_iter()
        .filter(|n| {
            opts.xattr_prefixes
                .iter()
                .any(|p| n.starts_with(p.as_str()))
        })
        .filter_map(|n| get_xattr(path, &n).map(|v| (n, v)))
        .collect();
    xattrs.sort();
    Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: matches!(kind, Kind::File | Kind::Symlink).then(|| md.size()),
        sha256,
        link: (kind == Kind::Symlink).then(|| fs::read_link(path).expect("readlink")),
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev)
            .then(|| (libc::major(md.rdev()), libc::minor(md.rdev()))),
        xattrs,
        nlink: (kind != Kind::Dir).then(|| md.nlink()),
        mtime: opts.mtimes.then(|| (md.mtime(), md.mtime_nsec())),
    }
}

fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        ".".to_string()
    } else {
        p.display().to_string()
    }
}

/// Human-readable differences between two snapshots (empty if equal).
pub fn snapshot_diff(a_name: &str, a: &Snapshot, b_name: &str, b: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (p, ea) in a {
        match b.get(p) {
            None => out.push(format!("only in {a_name}: {}  ({ea})", show(p))),
            Some(eb) if ea != eb => out.push(format!(
                "differs: {}\n    {a_name}: {ea}\n    {b_name}: {eb}",
                show(p)
            )),
            _ => {}
        }
    }
    for (p, eb) in b {
        if !a.contains_key(p) {
            out.push(format!("only in {b_name}: {}  ({eb})", show(p)));
        }
    }
    out
}

/// Asserts two snapshots are equal, printing a readable diff otherwise.
#[track_caller]
pub fn assert_snapshots_eq(a_name: &str, a: &Snapshot, b_name: &str, b: &Snapshot) {
    let diff = snapshot_diff(a_name, a, b_name, b);
    if !diff.is_empty() {
        let n = diff.len();
        let shown: Vec<&String> = diff.iter().take(60).collect();
        let shown: Vec<&str> = shown.iter().map(|s| s.as_str()).collect();
        panic!(
            "trees differ ({n} difference(s), {a_name} vs {b_name}):\n{}{}",
            shown.join("\n"),
            if n > 60 { "\n..." } else { "" }
        );
    }
}

/// Sorted names in a directory (like `ls -A`).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|d| {
            d.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

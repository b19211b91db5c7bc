//! Snapshots of a tree (a mount's visible tree, or an upper directory) and their diff.

use super::lower::join;
use super::sys;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::DirEntryExt;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A mounted union as users see it: all xattrs listed, nlink of non-directories.
    Visible,
    /// An upper directory: whiteouts (0/0 char devices) and `trusted.overlay.opaque`
    /// count; other `trusted.overlay.*` and `*.unionfs.*` xattrs are bookkeeping.
    Upper,
    /// A kernel read-only overlay of our upper over our lower: as Visible, but our
    /// `*.unionfs.*` bookkeeping xattrs (which the kernel shows as ordinary) are left out.
    Reread,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Meta {
    pub kind: &'static str,
    /// Field name -> value; only fields that exist for this kind.
    pub fields: BTreeMap<String, String>,
    pub ino: u64,
    pub nlink: u64,
}

pub struct Snapshot {
    pub entries: BTreeMap<String, Meta>,
    /// Paths of non-directories grouped by st_ino, groups of two or more.
    pub link_groups: BTreeSet<Vec<String>>,
    /// Things wrong with this side alone (unreadable entries...).
    pub problems: Vec<String>,
    /// readdir's d_ino differs from lstat's st_ino. A requirement for us (DESIGN.md 3);
    /// kernel overlayfs breaks it for copied-up hard links in pure upper directories.
    pub dino_problems: Vec<String>,
}

/// Time class: exact for old times (the lower tree's and utimensat's), "now" for
/// anything set by the clock during this run (a write, a create...).
fn time_class(sec: i64, nsec: i64, now_floor: i64) -> String {
    if sec >= now_floor {
        "now".into()
    } else {
        format!("{sec}.{nsec:09}")
    }
}

fn kind_of(st: &libc::stat, mode: Mode) -> &'static str {
    match sys::fmt_type(st.st_mode) {
        libc::S_IFDIR => "dir",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFBLK => "blockdev",
        libc::S_IFCHR if st.st_rdev == 0 && mode == Mode::Upper => "whiteout",
        libc::S_IFCHR if st.st_rdev == 0 => "chardev 0/0 (a whiteout, visible!)",
        libc::S_IFCHR => "chardev",
        _ => "unknown",
    }
}

fn sha_of(p: &Path) -> String {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nofollow()
        .open(p);
    let mut f = match f {
        Ok(f) => f,
        Err(e) => return format!("open failed: {e}"),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) => return format!("read failed: {e}"),
        }
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
    }
}

fn keep_xattr(name: &str, mode: Mode) -> bool {
    match mode {
        Mode::Visible => true,
        Mode::Reread => !(name.contains(".unionfs.") || name.starts_with("unionfs.")),
        Mode::Upper => {
            if name.contains(".unionfs.") || name.starts_with("unionfs.") {
                return false;
            }
            if let Some(rest) = name.strip_prefix("trusted.overlay.") {
                // `opaque` is meaning; `overlay.*` is a user's escaped overlay xattr
                // (Linux 6.7+ stores trusted.overlay.X set through the union so).
                return rest == "opaque" || rest.starts_with("overlay.");
            }
            true
        }
    }
}

fn meta(p: &Path, st: &libc::stat, mode: Mode, now_floor: i64) -> Meta {
    let kind = kind_of(st, mode);
    let mut f = BTreeMap::new();
    if kind != "whiteout" {
        f.insert("mode".into(), format!("{:04o}", st.st_mode & 0o7777));
        f.insert("owner".into(), format!("{}:{}", st.st_uid, st.st_gid));
    }
    match kind {
        "file" => {
            f.insert("size".into(), st.st_size.to_string());
            f.insert("sha256".into(), sha_of(p));
            if st.st_size >= 64 * 1024 {
                f.insert(
                    "sparse".into(),
                    (st.st_blocks * 512 < st.st_size).to_string(),
                );
            }
        }
        "symlink" => {
            f.insert(
                "target".into(),
                sys::readlink(p)
                    .unwrap_or_else(|e| format!("readlink: {}", super::ops::errname(e))),
            );
        }
        _ => {}
    }
    if mode != Mode::Upper && kind != "dir" {
        f.insert("nlink".into(), st.st_nlink.to_string());
    }
    if mode != Mode::Upper {
        f.insert(
            "mtime".into(),
            time_class(st.st_mtime, st.st_mtime_nsec, now_floor),
        );
    }
    if kind != "whiteout" {
        let mut xs = BTreeMap::new();
        match sys::llistxattr(p) {
            Ok(names) => {
                for n in names.into_iter().filter(|n| keep_xattr(n, mode)) {
                    let v = match sys::lgetxattr(p, &n) {
                        Ok(v) => format!("{v:02x?}").replace(", ", ""),
                        Err(e) => format!("<{}>", super::ops::errname(e)),
                    };
                    xs.insert(n, v);
                }
            }
            Err(e) => {
                xs.insert("<listxattr>".into(), super::ops::errname(e));
            }
        }
        for (n, v) in xs {
            f.insert(format!("xattr {n}"), v);
        }
    }
    Meta {
        kind,
        fields: f,
        ino: st.st_ino,
        nlink: st.st_nlink,
    }
}

pub fn capture(root: &Path, mode: Mode, now_floor: i64) -> Snapshot {
    let mut s = Snapshot {
        entries: BTreeMap::new(),
        link_groups: BTreeSet::new(),
        problems: vec![],
        dino_problems: vec![],
    };
    match sys::lstat(root) {
        Ok(st) => {
            s.entries
                .insert(String::new(), meta(root, &st, mode, now_floor));
        }
        Err(e) => s.problems.push(format!(
            "stat of the root failed: {}",
            super::ops::errname(e)
        )),
    }
    walk(root, "", mode, now_floor, &mut s);
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, m) in &s.entries {
        if m.kind != "dir" && m.kind != "whiteout" {
            by_ino.entry(m.ino).or_default().push(p.clone());
        }
    }
    s.link_groups = by_ino.into_values().filter(|v| v.len() > 1).collect();
    s
}

fn walk(root: &Path, rel: &str, mode: Mode, now_floor: i64, s: &mut Snapshot) {
    let dir = root.join(rel);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            s.problems
                .push(format!("{}: readdir failed: {e}", show(rel)));
            return;
        }
    };
    let mut names = Vec::new();
    for e in rd {
        match e {
            Ok(e) => names.push((e.file_name().to_string_lossy().into_owned(), e.ino())),
            Err(e) => s
                .problems
                .push(format!("{}: readdir entry failed: {e}", show(rel))),
        }
    }
    names.sort();
    let mut subdirs = 0u64;
    for (n, d_ino) in names {
        let p = join(rel, &n);
        let st = match sys::lstat(&root.join(&p)) {
            Ok(st) => st,
            Err(e) => {
                s.problems.push(format!(
                    "{p}: listed by readdir but lstat fails: {}",
                    super::ops::errname(e)
                ));
                continue;
            }
        };
        if mode != Mode::Upper && d_ino != st.st_ino {
            s.dino_problems.push(format!(
                "{p}: readdir d_ino {d_ino} != st_ino {}",
                st.st_ino
            ));
        }
        let m = meta(&root.join(&p), &st, mode, now_floor);
        let is_dir = m.kind == "dir";
        s.entries.insert(p.clone(), m);
        if is_dir {
            subdirs += 1;
            walk(root, &p, mode, now_floor, s);
        }
    }
    if let Some(m) = s.entries.get_mut(rel) {
        m.fields.insert("(subdirs)".into(), subdirs.to_string());
    }
}

pub fn show(p: &str) -> &str {
    if p.is_empty() {
        "."
    } else {
        p
    }
}

/// Differences between `a` (reference, kernel) and `b` (the side under test). `skip(path)`
/// leaves a path out; `fields_for(a, b)` may narrow which fields count for a pair.
pub struct Diff {
    /// (category, text); the category feeds the failure signature.
    pub lines: Vec<(String, String)>,
}

pub struct DiffOpts<'a> {
    pub what: &'a str,
    pub a_name: &'a str,
    pub b_name: &'a str,
    pub skip: &'a dyn Fn(&str) -> bool,
    /// Compare hard link groups.
    pub link_groups: bool,
    /// Fields never compared (besides "(subdirs)", which is bookkeeping for invariants).
    pub ignore: &'a [&'a str],
    /// For entries with nlink > 1 on either side, compare only the kind.
    pub only_kind_if_linked: bool,
}

pub fn diff(a: &Snapshot, b: &Snapshot, o: &DiffOpts) -> Diff {
    let mut lines = Vec::new();
    let keys: BTreeSet<&String> = a.entries.keys().chain(b.entries.keys()).collect();
    for k in keys {
        if (o.skip)(k) {
            continue;
        }
        match (a.entries.get(k), b.entries.get(k)) {
            (Some(x), None) => lines.push((
                format!("{}:missing", o.what),
                format!("{}: {} on {} only", show(k), x.kind, o.a_name),
            )),
            (None, Some(y)) => lines.push((
                format!("{}:extra", o.what),
                format!("{}: {} on {} only", show(k), y.kind, o.b_name),
            )),
            (Some(x), Some(y)) => {
                if x.kind != y.kind {
                    lines.push((
                        format!("{}:kind", o.what),
                        format!(
                            "{}: {} on {}, {} on {}",
                            show(k),
                            x.kind,
                            o.a_name,
                            y.kind,
                            o.b_name
                        ),
                    ));
                    continue;
                }
                if o.only_kind_if_linked && x.kind != "dir" && (x.nlink > 1 || y.nlink > 1) {
                    continue;
                }
                let fields: BTreeSet<&String> = x.fields.keys().chain(y.fields.keys()).collect();
                for f in fields {
                    if f == "(subdirs)" || o.ignore.contains(&f.as_str()) {
                        continue;
                    }
                    let (vx, vy) = (x.fields.get(f), y.fields.get(f));
                    if vx != vy {
                        let n = "(none)".to_string();
                        lines.push((
                            format!("{}:{}", o.what, f.replace(' ', ":")),
                            format!(
                                "{} ({}): {f} {} on {}, {} on {}",
                                show(k),
                                x.kind,
                                vx.unwrap_or(&n),
                                o.a_name,
                                vy.unwrap_or(&n),
                                o.b_name
                            ),
                        ));
                    }
                }
            }
            (None, None) => unreachable!(),
        }
    }
    if o.link_groups {
        let keep = |g: &Vec<String>| -> Vec<String> {
            g.iter().filter(|p| !(o.skip)(p)).cloned().collect()
        };
        let ga: BTreeSet<Vec<String>> = a
            .link_groups
            .iter()
            .map(keep)
            .filter(|g| g.len() > 1)
            .collect();
        let gb: BTreeSet<Vec<String>> = b
            .link_groups
            .iter()
            .map(keep)
            .filter(|g| g.len() > 1)
            .collect();
        for g in ga.difference(&gb) {
            lines.push((
                format!("{}:hardlinks", o.what),
                format!("one inode on {} only: {}", o.a_name, g.join(" = ")),
            ));
        }
        for g in gb.difference(&ga) {
            lines.push((
                format!("{}:hardlinks", o.what),
                format!("one inode on {} only: {}", o.b_name, g.join(" = ")),
            ));
        }
    }
    Diff { lines }
}

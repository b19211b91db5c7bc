//! The operations: what they are, how they are chosen from the visible tree, how they run
//! (raw system calls, on one mount), and the kernel side's `mv`-style fallback for the
//! `EXDEV` that kernel overlayfs (redirect_dir=off) gives for merged/lower directories.

use super::lower::{join, parent, relative, DIR_NAMES, FILE_NAMES, LINK_NAMES, XATTR_NAMES};
use super::rng::Rng;
use super::sys;
use std::fmt;
use std::path::Path;

#[derive(Clone, Debug)]
pub enum Op {
    Create {
        p: String,
        mode: u32,
        excl: bool,
    },
    Write {
        p: String,
        off: u64,
        data: Vec<u8>,
    },
    Append {
        p: String,
        data: Vec<u8>,
    },
    Truncate {
        p: String,
        size: u64,
    },
    OpenTrunc {
        p: String,
    },
    Chmod {
        p: String,
        mode: u32,
    },
    Chown {
        p: String,
        uid: u32,
        gid: u32,
        nofollow: bool,
    },
    Utimens {
        p: String,
        atime: (i64, i64),
        mtime: (i64, i64),
        nofollow: bool,
    },
    SetXattr {
        p: String,
        name: String,
        value: Vec<u8>,
        flags: i32,
    },
    RemoveXattr {
        p: String,
        name: String,
    },
    Link {
        src: String,
        dst: String,
    },
    Symlink {
        target: String,
        p: String,
    },
    Mkdir {
        p: String,
        mode: u32,
    },
    Rename {
        src: String,
        dst: String,
        noreplace: bool,
    },
    Unlink {
        p: String,
    },
    Rmdir {
        p: String,
    },
    Mkfifo {
        p: String,
        mode: u32,
    },
}

/// One step: an operation, run as root or as uid/gid 1000 (fsuid/fsgid of the thread).
#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub as_user: bool,
}

fn id(v: u32) -> String {
    if v == u32::MAX {
        "-1".into()
    } else {
        v.to_string()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Op::Create { p, mode, excl } => write!(
                f,
                "create {p} {mode:04o}{}",
                if *excl { " O_EXCL" } else { "" }
            ),
            Op::Write { p, off, data } => write!(f, "write {p} @{off} {}B", data.len()),
            Op::Append { p, data } => write!(f, "append {p} {}B", data.len()),
            Op::Truncate { p, size } => write!(f, "truncate {p} {size}"),
            Op::OpenTrunc { p } => write!(f, "open {p} O_WRONLY|O_TRUNC"),
            Op::Chmod { p, mode } => write!(f, "chmod {mode:04o} {p}"),
            Op::Chown {
                p,
                uid,
                gid,
                nofollow,
            } => write!(
                f,
                "{} {}:{} {p}",
                if *nofollow { "lchown" } else { "chown" },
                id(*uid),
                id(*gid)
            ),
            Op::Utimens {
                p,
                atime,
                mtime,
                nofollow,
            } => write!(
                f,
                "utimensat {p} atime={}.{:09} mtime={}.{:09}{}",
                atime.0,
                atime.1,
                mtime.0,
                mtime.1,
                if *nofollow {
                    " AT_SYMLINK_NOFOLLOW"
                } else {
                    ""
                }
            ),
            Op::SetXattr {
                p,
                name,
                value,
                flags,
            } => {
                let fl = match *flags {
                    libc::XATTR_CREATE => " XATTR_CREATE",
                    libc::XATTR_REPLACE => " XATTR_REPLACE",
                    _ => "",
                };
                write!(f, "lsetxattr {p} {name}={}B{fl}", value.len())
            }
            Op::RemoveXattr { p, name } => write!(f, "lremovexattr {p} {name}"),
            Op::Link { src, dst } => write!(f, "link {src} {dst}"),
            Op::Symlink { target, p } => write!(f, "symlink {target} {p}"),
            Op::Mkdir { p, mode } => write!(f, "mkdir {p} {mode:04o}"),
            Op::Rename {
                src,
                dst,
                noreplace,
            } => write!(
                f,
                "rename {src} {dst}{}",
                if *noreplace { " RENAME_NOREPLACE" } else { "" }
            ),
            Op::Unlink { p } => write!(f, "unlink {p}"),
            Op::Rmdir { p } => write!(f, "rmdir {p}"),
            Op::Mkfifo { p, mode } => write!(f, "mkfifo {p} {mode:04o}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.as_user {
            write!(f, "[as 1000:1000] {}", self.op)
        } else {
            write!(f, "{}", self.op)
        }
    }
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Write { .. } => "write",
            Op::Append { .. } => "append",
            Op::Truncate { .. } => "truncate",
            Op::OpenTrunc { .. } => "open_trunc",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Utimens { .. } => "utimens",
            Op::SetXattr { .. } => "setxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Mkdir { .. } => "mkdir",
            Op::Rename { .. } => "rename",
            Op::Unlink { .. } => "unlink",
            Op::Rmdir { .. } => "rmdir",
            Op::Mkfifo { .. } => "mkfifo",
        }
    }
}

/// The result of a step on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `Ok(detail)` (bytes written, times read back, whether st_ino was kept) or errno.
    pub res: Result<String, i32>,
    /// The kernel side answered EXDEV to a directory rename and we ran the mv fallback.
    pub emulated: bool,
}

pub fn errname(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESTALE => "ESTALE",
        libc::ENOTCONN => "ENOTCONN",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.emulated {
            write!(f, "EXDEV, mv fallback: ")?;
        }
        match &self.res {
            Ok(d) if d.is_empty() => write!(f, "Ok"),
            Ok(d) => write!(f, "Ok ({d})"),
            Err(e) => write!(f, "{}", errname(*e)),
        }
    }
}

/// What the generator sees of the current visible tree (of the kernel side).
pub struct Visible {
    /// (path, is_dir, is_regular) for every entry but the root, sorted by path.
    pub entries: Vec<(String, bool, bool)>,
}

impl Visible {
    pub fn scan(root: &Path) -> Visible {
        let mut entries = Vec::new();
        fn walk(root: &Path, rel: &str, out: &mut Vec<(String, bool, bool)>) {
            let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
                return;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                let p = join(rel, &n);
                let Ok(st) = sys::lstat(&root.join(&p)) else {
                    continue;
                };
                let t = sys::fmt_type(st.st_mode);
                out.push((p.clone(), t == libc::S_IFDIR, t == libc::S_IFREG));
                if t == libc::S_IFDIR {
                    walk(root, &p, out);
                }
            }
        }
        walk(root, "", &mut entries);
        Visible { entries }
    }

    fn dirs(&self) -> Vec<&str> {
        let mut v = vec![""];
        v.extend(self.entries.iter().filter(|e| e.1).map(|e| e.0.as_str()));
        v
    }
}

struct Gen<'a> {
    rng: &'a mut Rng,
    vis: &'a Visible,
}

impl Gen<'_> {
    fn any(&mut self) -> String {
        if self.vis.entries.is_empty() {
            return self.fresh(FILE_NAMES);
        }
        self.rng.pick(&self.vis.entries).0.clone()
    }

    fn of(&mut self, want_dir: bool) -> String {
        let c: Vec<&String> = self
            .vis
            .entries
            .iter()
            .filter(|e| e.1 == want_dir)
            .map(|e| &e.0)
            .collect();
        if c.is_empty() {
            return self.any();
        }
        self.rng.pick(&c).to_string()
    }

    fn regular(&mut self) -> String {
        let c: Vec<&String> = self
            .vis
            .entries
            .iter()
            .filter(|e| e.2)
            .map(|e| &e.0)
            .collect();
        if c.is_empty() {
            return self.of(false);
        }
        self.rng.pick(&c).to_string()
    }

    fn dir_or_root(&mut self) -> String {
        let d = self.vis.dirs();
        self.rng.pick(&d).to_string()
    }

    /// A name from `pool` in a random visible directory (it may well exist already).
    fn fresh(&mut self, pool: &[&str]) -> String {
        let d = self.dir_or_root();
        let n = if self.rng.chance(15) {
            ["n0", "n1"][self.rng.below(2)]
        } else {
            *self.rng.pick(pool)
        };
        join(&d, n)
    }

    /// A path that cannot work: missing parent (ENOENT) or a non-directory parent (ENOTDIR).
    fn bogus(&mut self) -> String {
        if self.rng.chance(50) {
            let d = self.dir_or_root();
            join(&join(&d, "nx"), self.rng.pick::<&str>(FILE_NAMES))
        } else {
            let f = self.of(false);
            join(&f, self.rng.pick::<&str>(FILE_NAMES))
        }
    }

    /// An existing path of the wanted sort most of the time, else a fresh or bogus one.
    fn target(&mut self, existing: impl FnOnce(&mut Self) -> String) -> String {
        let r = self.rng.below(100);
        if r < 80 {
            existing(self)
        } else if r < 92 {
            self.fresh(FILE_NAMES)
        } else {
            self.bogus()
        }
    }

    fn new_path(&mut self, pool: &[&str]) -> String {
        let r = self.rng.below(100);
        if r < 75 {
            self.fresh(pool)
        } else if r < 92 {
            self.any()
        } else {
            self.bogus()
        }
    }

    fn data(&mut self) -> Vec<u8> {
        let n = self.rng.range(1, 200) as usize;
        self.rng.bytes(n)
    }

    fn time(&mut self) -> (i64, i64) {
        (
            self.rng.range(1_000_000_000, 1_700_000_000) as i64,
            self.rng.range(0, 999_999_999) as i64,
        )
    }

    fn op(&mut self) -> Op {
        const FILE_MODES: &[u32] = &[
            0o644, 0o600, 0o755, 0o444, 0o000, 0o4755, 0o2755, 0o6711, 0o640,
        ];
        const DIR_MODES: &[u32] = &[0o755, 0o700, 0o777, 0o555, 0o1777, 0o2775];
        let r = self.rng.below(104);
        match r {
            0..=7 => {
                let p = self.new_path(FILE_NAMES);
                Op::Create {
                    p,
                    mode: *self.rng.pick(FILE_MODES),
                    excl: self.rng.chance(30),
                }
            }
            8..=16 => {
                let p = self.target(|g| g.regular());
                let off = if self.rng.chance(10) {
                    self.rng.range(0, 300_000)
                } else {
                    self.rng.range(0, 300)
                };
                let data = self.data();
                Op::Write { p, off, data }
            }
            17..=21 => {
                let p = self.target(|g| g.regular());
                let data = self.data();
                Op::Append { p, data }
            }
            22..=27 => {
                let p = self.target(|g| g.regular());
                let size = match self.rng.below(10) {
                    0..=3 => 0,
                    4 => 200_000,
                    _ => self.rng.range(1, 400),
                };
                Op::Truncate { p, size }
            }
            28..=31 => Op::OpenTrunc {
                p: self.target(|g| g.regular()),
            },
            32..=37 => {
                let p = self.target(|g| g.any());
                let mode = if self.rng.chance(50) {
                    *self.rng.pick(FILE_MODES)
                } else {
                    *self.rng.pick(DIR_MODES)
                };
                Op::Chmod { p, mode }
            }
            38..=42 => {
                let p = self.target(|g| g.any());
                let (uid, gid) =
                    *self
                        .rng
                        .pick(&[(1000, 1000), (0, 0), (1000, 1000), (0, 0), (u32::MAX, 1000)]);
                Op::Chown {
                    p,
                    uid,
                    gid,
                    nofollow: self.rng.chance(40),
                }
            }
            43..=46 => {
                let p = self.target(|g| g.any());
                let (atime, mtime) = (self.time(), self.time());
                Op::Utimens {
                    p,
                    atime,
                    mtime,
                    nofollow: self.rng.chance(30),
                }
            }
            47..=52 => {
                let p = self.target(|g| g.any());
                let name = if self.rng.chance(6) {
                    "trusted.overlay.opaque".to_string()
                } else {
                    self.rng.pick(XATTR_NAMES).to_string()
                };
                let len = self.rng.below(16);
                let value = if name.starts_with("trusted") {
                    b"y".to_vec()
                } else {
                    self.rng.bytes(len)
                };
                let flags = *self
                    .rng
                    .pick(&[0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]);
                Op::SetXattr {
                    p,
                    name,
                    value,
                    flags,
                }
            }
            53..=56 => {
                let p = self.target(|g| g.any());
                Op::RemoveXattr {
                    p,
                    name: self.rng.pick(XATTR_NAMES).to_string(),
                }
            }
            57..=61 => {
                let src = self.target(|g| {
                    if g.rng.chance(85) {
                        g.of(false)
                    } else {
                        g.of(true)
                    }
                });
                let dst = self.new_path(FILE_NAMES);
                Op::Link { src, dst }
            }
            62..=65 => {
                let p = self.new_path(LINK_NAMES);
                let target = match self.rng.below(3) {
                    0 => relative(parent(&p), &self.any()),
                    1 => self.rng.pick(FILE_NAMES).to_string(),
                    _ => "dangling".to_string(),
                };
                Op::Symlink { target, p }
            }
            66..=71 => {
                let p = self.new_path(DIR_NAMES);
                Op::Mkdir {
                    p,
                    mode: *self.rng.pick(DIR_MODES),
                }
            }
            72..=79 => {
                // Rename of a non-directory.
                let src = self.target(|g| g.of(false));
                let dst = match self.rng.below(20) {
                    0..=9 => self.fresh(FILE_NAMES),
                    10..=14 => self.of(false),
                    15 | 16 => self.of(true),
                    17 => src.clone(),
                    _ => self.bogus(),
                };
                Op::Rename {
                    src,
                    dst,
                    noreplace: self.rng.chance(12),
                }
            }
            80..=88 => {
                // Rename of a directory (merged, lower-only or upper).
                let src = self.target(|g| g.of(true));
                let dst = match self.rng.below(20) {
                    0..=9 => self.fresh(DIR_NAMES),
                    10..=13 => self.of(true),
                    14 => self.of(false),
                    15 | 16 => join(&src, self.rng.pick::<&str>(DIR_NAMES)),
                    17 if src.contains('/') => parent(&src).to_string(),
                    17 => src.clone(),
                    _ => self.bogus(),
                };
                Op::Rename {
                    src,
                    dst,
                    noreplace: self.rng.chance(12),
                }
            }
            89..=95 => Op::Unlink {
                p: self.target(|g| {
                    if g.rng.chance(85) {
                        g.of(false)
                    } else {
                        g.of(true)
                    }
                }),
            },
            96..=100 => Op::Rmdir {
                p: self.target(|g| {
                    if g.rng.chance(85) {
                        g.of(true)
                    } else {
                        g.of(false)
                    }
                }),
            },
            _ => Op::Mkfifo {
                p: self.new_path(FILE_NAMES),
                mode: 0o644,
            },
        }
    }
}

/// Chooses the next step from the kernel side's current visible tree.
pub fn generate(rng: &mut Rng, vis: &Visible) -> Step {
    let as_user = rng.chance(12);
    let op = Gen { rng, vis }.op();
    Step { op, as_user }
}

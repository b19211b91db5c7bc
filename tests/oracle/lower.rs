//! The random lower tree: generated as a spec from the seed, then materialized once per
//! side, so both sides start from identical (but separate) lower directories.

use super::rng::Rng;
use super::sys;
use std::fmt::Write as _;
use std::path::Path;

pub const FILE_MODES: &[u32] = &[
    0o644, 0o644, 0o600, 0o755, 0o444, 0o000, 0o664, 0o4755, 0o2755, 0o2644,
];
pub const DIR_MODES: &[u32] = &[0o755, 0o755, 0o700, 0o775, 0o555, 0o1777, 0o2775];
pub const DIR_NAMES: &[&str] = &["d0", "d1", "d2", "d3"];
pub const FILE_NAMES: &[&str] = &["f0", "f1", "f2", "f3", "f4"];
pub const LINK_NAMES: &[&str] = &["s0", "s1"];
pub const XATTR_NAMES: &[&str] = &["user.a", "user.b", "user.c"];

pub enum Data {
    Bytes(Vec<u8>),
    /// A sparse file: `size` bytes with data only in `chunks`.
    Sparse {
        size: u64,
        chunks: Vec<(u64, Vec<u8>)>,
    },
}

pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        data: Data,
    },
    Symlink {
        target: String,
    },
    /// A second name for the file at this path.
    HardLink {
        to: String,
    },
    Fifo {
        mode: u32,
    },
}

pub struct Entry {
    pub path: String,
    pub node: Node,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// (sec, nsec) used for both atime and mtime; old, so "now" is recognisable.
    pub time: (i64, i64),
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

pub fn parent(p: &str) -> &str {
    p.rfind('/').map(|i| &p[..i]).unwrap_or("")
}

/// The relative path from directory `from_dir` to `to` (both relative to the root).
pub fn relative(from_dir: &str, to: &str) -> String {
    let depth = if from_dir.is_empty() {
        0
    } else {
        from_dir.split('/').count()
    };
    let mut s = "../".repeat(depth);
    s.push_str(to);
    s
}

pub fn generate(rng: &mut Rng) -> Vec<Entry> {
    let mut spec = Vec::new();
    spec.push(Entry {
        path: String::new(),
        node: Node::Dir { mode: 0o755 },
        uid: 0,
        gid: 0,
        xattrs: vec![],
        time: (1_500_000_000, 0),
    });
    gen_dir(rng, "", 0, &mut spec);

    let dirs: Vec<String> = spec
        .iter()
        .filter(|e| matches!(e.node, Node::Dir { .. }))
        .map(|e| e.path.clone())
        .collect();
    let free_name = |spec: &Vec<Entry>, dir: &str, base: &str| -> String {
        (0..)
            .map(|i| join(dir, &format!("{base}{i}")))
            .find(|p| !spec.iter().any(|e| &e.path == p))
            .unwrap()
    };
    let time = |rng: &mut Rng| {
        (
            rng.range(1_400_000_000, 1_600_000_000) as i64,
            rng.range(0, 999_999_999) as i64,
        )
    };

    // Always: an empty file, a sparse file, a fifo, a dangling symlink.
    let d = rng.pick(&dirs).clone();
    let p = free_name(&spec, &d, "e");
    let t = time(rng);
    spec.push(Entry {
        path: p,
        node: Node::File {
            mode: 0o644,
            data: Data::Bytes(vec![]),
        },
        uid: 0,
        gid: 0,
        xattrs: vec![],
        time: t,
    });
    let d = rng.pick(&dirs).clone();
    let p = free_name(&spec, &d, "sparse");
    // It starts with a hole: kernel overlayfs skips holes only where a 1 MiB copy-up chunk
    // starts in one, so with data at offset 0 its copy-up would be dense.
    let chunks = vec![
        (128 * 1024, rng.bytes(100)),
        (256 * 1024 - 100, rng.bytes(100)),
    ];
    let t = time(rng);
    spec.push(Entry {
        path: p,
        node: Node::File {
            mode: 0o644,
            data: Data::Sparse {
                size: 256 * 1024,
                chunks,
            },
        },
        uid: 0,
        gid: 0,
        xattrs: vec![],
        time: t,
    });
    let d = rng.pick(&dirs).clone();
    let p = free_name(&spec, &d, "p");
    let t = time(rng);
    spec.push(Entry {
        path: p,
        node: Node::Fifo { mode: 0o644 },
        uid: 0,
        gid: 0,
        xattrs: vec![],
        time: t,
    });
    let d = rng.pick(&dirs).clone();
    let p = free_name(&spec, &d, "s");
    let t = time(rng);
    spec.push(Entry {
        path: p,
        node: Node::Symlink {
            target: "gone/x".into(),
        },
        uid: 0,
        gid: 0,
        xattrs: vec![],
        time: t,
    });

    // Symlink targets, now that the tree is known: relative, to something that exists,
    // to a sibling name that may exist, or dangling.
    let all: Vec<String> = spec
        .iter()
        .filter(|e| !e.path.is_empty())
        .map(|e| e.path.clone())
        .collect();
    for e in spec.iter_mut() {
        if let Node::Symlink { target } = &mut e.node {
            if target.is_empty() {
                let r = rng.below(100);
                *target = if r < 55 {
                    relative(parent(&e.path), rng.pick::<String>(&all))
                } else if r < 80 {
                    rng.pick(FILE_NAMES).to_string()
                } else {
                    "missing".to_string()
                };
            }
        }
    }

    // A hard-linked pair: a second name for a random regular file, in a random directory.
    let files: Vec<String> = spec
        .iter()
        .filter(|e| matches!(&e.node, Node::File { data: Data::Bytes(b), .. } if !b.is_empty()))
        .map(|e| e.path.clone())
        .collect();
    let to = if files.is_empty() {
        let p = free_name(&spec, "", "f");
        let t = time(rng);
        let data = rng.bytes(20);
        spec.push(Entry {
            path: p.clone(),
            node: Node::File {
                mode: 0o644,
                data: Data::Bytes(data),
            },
            uid: 0,
            gid: 0,
            xattrs: vec![],
            time: t,
        });
        p
    } else {
        rng.pick(&files).clone()
    };
    let d = rng.pick(&dirs).clone();
    let p = free_name(&spec, &d, "h");
    spec.push(Entry {
        path: p,
        node: Node::HardLink { to },
        uid: 0,
        gid: 0,
        xattrs: vec![],
        time: (0, 0),
    });
    spec
}

fn gen_dir(rng: &mut Rng, dir: &str, depth: usize, spec: &mut Vec<Entry>) {
    let n = if depth == 0 {
        rng.range(4, 7)
    } else {
        rng.range(1, 4)
    } as usize;
    let mut used: Vec<&str> = Vec::new();
    for slot in 0..n {
        // The root always gets two directories (they may collide by name: then one).
        let make_dir =
            depth < 3 && ((depth == 0 && slot < 2) || rng.chance(if depth == 0 { 35 } else { 30 }));
        let pool: &[&str] = if make_dir {
            DIR_NAMES
        } else if rng.chance(20) {
            LINK_NAMES
        } else {
            FILE_NAMES
        };
        let name = *rng.pick(pool);
        if used.contains(&name) {
            continue;
        }
        used.push(name);
        let path = join(dir, name);
        let (uid, gid) = if rng.chance(20) { (1000, 1000) } else { (0, 0) };
        let mut xattrs = Vec::new();
        if rng.chance(25) && !LINK_NAMES.contains(&name) {
            for x in XATTR_NAMES {
                if rng.chance(50) {
                    let len = rng.below(12);
                    xattrs.push((x.to_string(), rng.bytes(len)));
                }
            }
        }
        let time = (
            rng.range(1_400_000_000, 1_600_000_000) as i64,
            rng.range(0, 999_999_999) as i64,
        );
        let node = if make_dir {
            Node::Dir {
                mode: *rng.pick(DIR_MODES),
            }
        } else if LINK_NAMES.contains(&name) {
            Node::Symlink {
                target: String::new(),
            }
        } else if rng.chance(5) {
            Node::Fifo { mode: 0o600 }
        } else {
            let len = if rng.chance(15) {
                0
            } else {
                rng.range(1, 300) as usize
            };
            Node::File {
                mode: *rng.pick(FILE_MODES),
                data: Data::Bytes(rng.bytes(len)),
            }
        };
        if matches!(node, Node::Fifo { .. }) {
            xattrs.clear(); // user.* xattrs exist only on regular files and directories
        }
        let is_dir = matches!(node, Node::Dir { .. });
        spec.push(Entry {
            path: path.clone(),
            node,
            uid,
            gid,
            xattrs,
            time,
        });
        if is_dir {
            gen_dir(rng, &path, depth + 1, spec);
        }
    }
}

/// Creates the spec under `root` (which exists and is empty).
pub fn materialize(spec: &[Entry], root: &Path) -> Result<(), String> {
    let err = |what: &str, p: &str, e: i32| {
        format!(
            "materialize {what} {p:?}: {}",
            std::io::Error::from_raw_os_error(e)
        )
    };
    let mut dir_times = Vec::new();
    for e in spec {
        let p = root.join(&e.path);
        match &e.node {
            Node::Dir { .. } if e.path.is_empty() => {}
            Node::Dir { .. } => sys::mkdir(&p, 0o700).map_err(|x| err("mkdir", &e.path, x))?,
            Node::File { data, .. } => {
                let fd = sys::open(&p, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
                    .map_err(|x| err("create", &e.path, x))?;
                match data {
                    Data::Bytes(b) => {
                        sys::pwrite_all(&fd, b, 0).map_err(|x| err("write", &e.path, x))?;
                    }
                    Data::Sparse { size, chunks } => {
                        for (off, b) in chunks {
                            sys::pwrite_all(&fd, b, *off).map_err(|x| err("write", &e.path, x))?;
                        }
                        sys::check(unsafe { libc::ftruncate(fd.0, *size as libc::off_t) })
                            .map_err(|x| err("ftruncate", &e.path, x))?;
                    }
                }
                fd.close().map_err(|x| err("close", &e.path, x))?;
            }
            Node::Symlink { target } => {
                sys::symlink(target, &p).map_err(|x| err("symlink", &e.path, x))?
            }
            Node::HardLink { to } => {
                sys::link(&root.join(to), &p).map_err(|x| err("link", &e.path, x))?;
                continue;
            }
            Node::Fifo { .. } => {
                sys::mknod(&p, libc::S_IFIFO | 0o600, 0).map_err(|x| err("mkfifo", &e.path, x))?
            }
        }
        // Owner before mode: chown clears setuid/setgid.
        sys::lchown(&p, e.uid, e.gid).map_err(|x| err("lchown", &e.path, x))?;
        match &e.node {
            Node::Dir { mode } | Node::File { mode, .. } | Node::Fifo { mode } => {
                sys::chmod(&p, *mode).map_err(|x| err("chmod", &e.path, x))?
            }
            _ => {}
        }
        for (n, v) in &e.xattrs {
            sys::lsetxattr(&p, n, v, 0).map_err(|x| err("setxattr", &e.path, x))?;
        }
        if matches!(e.node, Node::Dir { .. }) {
            dir_times.push((p, e.time));
        } else {
            sys::utimens(&p, e.time, e.time, true).map_err(|x| err("utimens", &e.path, x))?;
        }
    }
    // Directory times last (children changed them), deepest first.
    for (p, t) in dir_times.iter().rev() {
        sys::utimens(p, *t, *t, true).map_err(|x| err("utimens", &p.display().to_string(), x))?;
    }
    Ok(())
}

/// A readable listing of the spec, for reports.
pub fn describe(spec: &[Entry]) -> String {
    let mut s = String::new();
    for e in spec {
        let p = if e.path.is_empty() { "." } else { &e.path };
        let own = if e.uid != 0 || e.gid != 0 {
            format!(" {}:{}", e.uid, e.gid)
        } else {
            String::new()
        };
        let xa = if e.xattrs.is_empty() {
            String::new()
        } else {
            format!(
                " xattrs[{}]",
                e.xattrs
                    .iter()
                    .map(|(n, v)| format!("{n}={}B", v.len()))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let what = match &e.node {
            Node::Dir { mode } => format!("dir {mode:04o}"),
            Node::File {
                mode,
                data: Data::Bytes(b),
            } => format!("file {mode:04o} {}B", b.len()),
            Node::File {
                mode,
                data: Data::Sparse { size, .. },
            } => format!("sparse file {mode:04o} {size}B"),
            Node::Symlink { target } => format!("symlink -> {target}"),
            Node::HardLink { to } => format!("hard link to {to}"),
            Node::Fifo { mode } => format!("fifo {mode:04o}"),
        };
        let _ = writeln!(s, "    {p}: {what}{own}{xa}");
    }
    s
}

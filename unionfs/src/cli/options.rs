//! From low-level [`Args`] to one validated [`MountConfig`].

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::{Config, CreateMode, DeleteMode, FormatChoice, Mode};
use crate::fuse::Ttls;

use super::args::Args;

/// A refusal at the command line: one sentence for the user, and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: nothing was mounted or changed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A failure at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// The documented exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Everything needed to mount, validated.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Branches, highest first, canonical paths.
    pub branches: Vec<(PathBuf, Mode)>,
    /// overlay-style work directory for the top rw branch.
    pub workdir: Option<PathBuf>,
    /// Where to mount (canonical).
    pub mountpoint: PathBuf,
    /// Source name for /proc/mounts.
    pub fsname: String,
    /// Whiteout format asked for.
    pub format: FormatChoice,
    /// Union rules.
    pub core: Config,
    /// Kernel cache TTLs.
    pub ttl: Ttls,
    /// allow_other.
    pub allow_other: bool,
    /// allow_root.
    pub allow_root: bool,
    /// Mount read-only.
    pub read_only: bool,
    /// Stay in the foreground.
    pub foreground: bool,
    /// Verbosity.
    pub verbose: u8,
}

/// Generic mount options that `mount`, fstab and mount.fuse3 pass along; accepted and
/// ignored (they concern the kernel's view of the mount, which FUSE sets itself).
const GENERIC: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "defaults",
    "user",
    "nouser",
    "users",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "owner",
    "group",
    "comment",
    "loud",
    "silent",
    "nonempty",
    "default_permissions",
    "x-systemd.automount",
    "auto_unmount",
];

fn parse_secs(opt: &str, v: &str) -> Result<Duration, CliError> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| usage(format!("option {opt}={v}: expected a number of seconds")))
}

/// Splits "DIR=rw" into (DIR, Some(rw)); a suffix that is not a mode stays in the path.
fn split_mode(spec: &str) -> Result<(String, Option<Mode>), CliError> {
    if let Some((dir, m)) = spec.rsplit_once('=') {
        let lm = m.to_ascii_lowercase();
        if matches!(lm.as_str(), "rw" | "ro" | "nfsro" | "rr") {
            return Ok((dir.to_string(), Some(m.parse().map_err(usage)?)));
        }
        return Err(usage(format!(
            "branch '{spec}': unknown mode '{m}' (use rw or ro)"
        )));
    }
    Ok((spec.to_string(), None))
}

/// Branch list "A=rw:B=ro" (dirs= and unionfs-fuse syntax).
fn parse_branch_list(list: &str, out: &mut Vec<(String, Option<Mode>)>) -> Result<(), CliError> {
    for part in list.split(':').filter(|p| !p.is_empty()) {
        out.push(split_mode(part)?);
    }
    Ok(())
}

impl MountConfig {
    /// Builds and validates the configuration. Touches nothing on disk.
    pub fn from_args(a: Args) -> Result<MountConfig, CliError> {
        let mut specs: Vec<(String, Option<Mode>)> = Vec::new();
        for b in &a.branch {
            specs.push(split_mode(b)?);
        }
        let (source, mountpoint) = match a.positional.as_slice() {
            [m] => (None, m.clone()),
            [s, m] => (Some(s.clone()), m.clone()),
            _ => return Err(usage("expected [SOURCE] MOUNTPOINT")),
        };
        let mut fsname = "unionfs".to_string();
        if let Some(s) = &source {
            if s.contains('=') {
                parse_branch_list(s, &mut specs)?;
            } else {
                fsname = s.clone();
            }
        }
        let (mut lower, mut upper, mut workdir) = (None, None, None);
        let mut cfg = MountConfig {
            branches: Vec::new(),
            workdir: None,
            mountpoint: PathBuf::new(),
            fsname,
            format: FormatChoice::Auto,
            core: Config::default(),
            ttl: Ttls::default(),
            allow_other: false,
            allow_root: false,
            read_only: false,
            foreground: a.foreground,
            verbose: a.verbose,
        };
        for group in &a.options {
            for opt in split_options(group) {
                let (k, v) = match opt.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (opt.as_str(), None),
                };
                let need = |v: Option<&str>| {
                    v.filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| usage(format!("option {k} needs a value ({k}=...)")))
                };
                match k {
                    "dirs" => parse_branch_list(&need(v)?, &mut specs)?,
                    "lowerdir" => lower = Some(need(v)?),
                    "upperdir" => upper = Some(need(v)?),
                    "workdir" => workdir = Some(need(v)?),
                    "whiteout" => {
                        cfg.format = match need(v)?.as_str() {
                            "auto" => FormatChoice::Auto,
                            "overlay" => FormatChoice::Overlay,
                            "wh" => FormatChoice::Wh,
                            o => {
                                return Err(usage(format!(
                                    "option whiteout={o}: use auto, overlay or wh"
                                )))
                            }
                        }
                    }
                    "delete" => {
                        cfg.core.delete = match need(v)?.as_str() {
                            "all" => DeleteMode::All,
                            "whiteout" => DeleteMode::Whiteout,
                            "first" => DeleteMode::First,
                            o => {
                                return Err(usage(format!(
                                    "option delete={o}: use all, whiteout or first"
                                )))
                            }
                        }
                    }
                    "create" => {
                        cfg.core.create = match need(v)?.as_str() {
                            "parent" => CreateMode::Parent,
                            "top" => CreateMode::Top,
                            o => {
                                return Err(usage(format!("option create={o}: use parent or top")))
                            }
                        }
                    }
                    "entry_timeout" => cfg.ttl.entry = parse_secs(k, &need(v)?)?,
                    "attr_timeout" => cfg.ttl.attr = parse_secs(k, &need(v)?)?,
                    "allow_other" => cfg.allow_other = true,
                    "allow_root" => cfg.allow_root = true,
                    "fsname" => cfg.fsname = need(v)?,
                    "subtype" => {}
                    "ro" => cfg.read_only = true,
                    _ if GENERIC.contains(&k) || k.starts_with("x-") => {}
                    _ => {
                        return Err(usage(format!(
                            "unknown option '{opt}' (see unionfs --help for the options)"
                        )))
                    }
                }
            }
        }
        if let Some(u) = &upper {
            specs.push((u.clone(), Some(Mode::Rw)));
            if workdir.is_none() {
                return Err(usage(
                    "upperdir needs workdir=DIR (an empty directory on the same filesystem)",
                ));
            }
        } else if workdir.is_some() {
            return Err(usage("workdir is only meaningful together with upperdir"));
        }
        if let Some(l) = &lower {
            for d in l.split(':').filter(|p| !p.is_empty()) {
                specs.push((d.to_string(), Some(Mode::Ro)));
            }
        }
        if specs.is_empty() {
            return Err(usage(
                "no branches given: use --branch DIR=rw, -o dirs=A=rw:B=ro, -o lowerdir=...,upperdir=...,workdir=..., or A=RW:B=RO MOUNTPOINT",
            ));
        }

        cfg.mountpoint = canonical_dir(&mountpoint, "mount point")?;
        let mut seen = HashSet::new();
        for (i, (dir, mode)) in specs.iter().enumerate() {
            let p = canonical_dir(dir, "branch")?;
            let md = std::fs::metadata(&p).map_err(|e| usage(format!("branch {dir}: {e}")))?;
            if !seen.insert((md.dev(), md.ino())) {
                return Err(usage(format!("branch {dir} is given twice")));
            }
            if p == cfg.mountpoint {
                return Err(usage(format!(
                    "branch {dir} is the mount point itself; mount somewhere else"
                )));
            }
            if cfg.mountpoint.starts_with(&p) {
                return Err(usage(format!(
                    "branch {dir} contains the mount point {}; mount outside the branches",
                    cfg.mountpoint.display()
                )));
            }
            if p.starts_with(&cfg.mountpoint) {
                return Err(usage(format!("branch {dir} is inside the mount point")));
            }
            let mode = mode.unwrap_or(if i == 0 && upper.is_none() && lower.is_none() {
                Mode::Rw
            } else {
                Mode::Ro
            });
            cfg.branches.push((p, mode));
        }
        // overlay style: the upper branch goes on top.
        if upper.is_some() {
            let pos = specs
                .iter()
                .position(|(d, _)| Some(d) == upper.as_ref())
                .unwrap_or(0);
            let up = cfg.branches.remove(pos);
            cfg.branches.insert(0, up);
        }
        if let Some(w) = &workdir {
            let wp = canonical_dir(w, "workdir")?;
            let up = &cfg.branches[0].0;
            let (wm, um) = (std::fs::metadata(&wp), std::fs::metadata(up));
            if let (Ok(wm), Ok(um)) = (wm, um) {
                if wm.dev() != um.dev() {
                    return Err(usage(format!(
                        "workdir {w} must be on the same filesystem as upperdir"
                    )));
                }
            }
            if wp == *up || wp.starts_with(up) || up.starts_with(&wp) {
                return Err(usage(format!(
                    "workdir {w} and upperdir must be separate directories"
                )));
            }
            if wp.starts_with(&cfg.mountpoint) || cfg.mountpoint.starts_with(&wp) {
                return Err(usage(format!(
                    "workdir {w} and the mount point must be separate"
                )));
            }
            cfg.workdir = Some(wp);
        }
        let any_rw = cfg.branches.iter().any(|(_, m)| *m == Mode::Rw);
        if cfg.core.create == CreateMode::Top && !any_rw {
            return Err(usage(
                "create=top needs a read-write branch, and every branch is read-only",
            ));
        }
        Ok(cfg)
    }
}

/// Splits a -o group on commas, keeping commas escaped with a backslash.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn canonical_dir(p: &str, what: &str) -> Result<PathBuf, CliError> {
    let path = Path::new(p);
    let md = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            usage(format!("{what} {p} does not exist; create it first"))
        }
        _ => usage(format!("{what} {p}: {e}")),
    })?;
    if !md.is_dir() {
        return Err(usage(format!("{what} {p} is not a directory")));
    }
    std::fs::canonicalize(path).map_err(|e| usage(format!("{what} {p}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(argv: &[&str]) -> Result<MountConfig, CliError> {
        let mut v = vec!["unionfs"];
        v.extend_from_slice(argv);
        MountConfig::from_args(Args::try_parse_from(v).unwrap())
    }

    #[test]
    fn all_syntaxes_reach_the_same_model() {
        let d = tempfile::tempdir().unwrap();
        for n in ["u", "l1", "l2", "w", "m"] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
        let want = vec![
            (std::fs::canonicalize(p("u")).unwrap(), Mode::Rw),
            (std::fs::canonicalize(p("l1")).unwrap(), Mode::Ro),
            (std::fs::canonicalize(p("l2")).unwrap(), Mode::Ro),
        ];
        let native = parse(&[
            "--branch",
            &p("u"),
            "-b",
            &format!("{}=ro", p("l1")),
            "--branch",
            &p("l2"),
            &p("m"),
        ])
        .unwrap();
        assert_eq!(native.branches, want);
        let dirs = parse(&[
            "-o",
            &format!("dirs={}=rw:{}=ro:{}=ro", p("u"), p("l1"), p("l2")),
            &p("m"),
        ])
        .unwrap();
        assert_eq!(dirs.branches, want);
        let ovl = parse(&[
            "-o",
            &format!(
                "lowerdir={}:{},upperdir={},workdir={},noatime",
                p("l1"),
                p("l2"),
                p("u"),
                p("w")
            ),
            "none",
            &p("m"),
        ])
        .unwrap();
        assert_eq!(ovl.branches, want);
        assert_eq!(ovl.fsname, "none");
        assert!(ovl.workdir.is_some());
        let uf = parse(&[
            &format!("{}=RW:{}=RO:{}=RO", p("u"), p("l1"), p("l2")),
            &p("m"),
        ])
        .unwrap();
        assert_eq!(uf.branches, want);
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::create_dir(d.path().join("a/m")).unwrap();
        std::fs::create_dir(d.path().join("m")).unwrap();
        std::fs::write(d.path().join("f"), "").unwrap();
        let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
        let cases: Vec<Vec<String>> = vec![
            vec!["--branch".into(), p("missing"), p("m")],
            vec!["--branch".into(), p("f"), p("m")],
            vec!["--branch".into(), p("a"), "--branch".into(), p("a"), p("m")],
            vec!["--branch".into(), p("a"), p("a/m")],
            vec!["--branch".into(), p("m"), p("m")],
            vec![p("m")],
            vec![
                "--branch".into(),
                format!("{}=ro", p("a")),
                "-o".into(),
                "create=top".into(),
                p("m"),
            ],
            vec![
                "--branch".into(),
                p("a"),
                "-o".into(),
                "bogus=1".into(),
                p("m"),
            ],
            vec!["--branch".into(), p("a"), p("missing")],
            vec!["--branch".into(), format!("{}=xx", p("a")), p("m")],
        ];
        for c in cases {
            let refs: Vec<&str> = c.iter().map(|s| s.as_str()).collect();
            match parse(&refs) {
                Err(e @ CliError::Usage(_)) => {
                    assert_eq!(e.exit_code(), 2);
                    assert!(!e.to_string().contains('\n'), "one line: {e}");
                }
                other => panic!("{c:?}: expected a usage error, got {other:?}"),
            }
        }
    }

    #[test]
    fn options_parse() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::create_dir(d.path().join("m")).unwrap();
        let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
        let c = parse(&["-b", &p("a"), "-o", "whiteout=wh,delete=first,create=top,entry_timeout=0.5,attr_timeout=2,allow_other,rw,nosuid", &p("m")]).unwrap();
        assert_eq!(c.format, FormatChoice::Wh);
        assert_eq!(c.core.delete, DeleteMode::First);
        assert_eq!(c.core.create, CreateMode::Top);
        assert_eq!(c.ttl.entry, Duration::from_millis(500));
        assert_eq!(c.ttl.attr, Duration::from_secs(2));
        assert!(c.allow_other);
    }
}

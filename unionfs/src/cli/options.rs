//! From low-level [`Args`] to one validated [`MountConfig`].

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::{Config, CreateMode, DeleteMode, FormatChoice, Mode};
use crate::fuse::Ttls;

use super::args::Args;
use super::foreign::{
    check_bool, check_id_mapping, refuse, GENERIC, LIBFUSE_IGNORED, LIBFUSE_IGNORED_KV,
    UNIONFS_FUSE_ONLY,
};

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

pub(super) fn usage(msg: impl Into<String>) -> CliError {
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
    /// unionfs-fuse compatibility mode: the branches came in unionfs-fuse's form (a SOURCE
    /// branch list `A=RW:B=RO`) or a unionfs-fuse-only option was given. Branches without
    /// a mode are then read-only, as in unionfs-fuse. Needs daemon/core behaviour: that
    /// mode's rules (EXDEV/EACCES where unionfs-fuse gives them).
    pub unionfs_fuse: bool,
    /// Copy-up of lower objects allowed. Always true, except in unionfs-fuse mode without
    /// `-o cow` (copies `core.copy_up`): when false, writing to a lower file or creating in
    /// a directory that only an ro branch holds fails as in unionfs-fuse (EACCES), deleting
    /// a lower file EROFS; new files in rw directories still work.
    pub cow: bool,
    /// unionfs-fuse `hide_meta_files`: its meta directory (and `.fuse_hidden*` files) do
    /// not show in readdir (copied to `core.hide_meta_files`).
    pub hide_meta_files: bool,
    /// unionfs-fuse `max_files=N`: the daemon's RLIMIT_NOFILE (applied by the binary
    /// before it serves).
    pub max_files: Option<u64>,
    /// unionfs-fuse `statfs_omit_ro`: statfs does not count read-only branches. Our statfs
    /// already reports only the topmost rw branch, so this changes nothing today; kept so
    /// a future "sum of all branches" default (unionfs-fuse's) can honour it.
    pub statfs_omit_ro: bool,
    /// unionfs-fuse `chroot=DIR`: branch paths are relative to DIR. Already applied to
    /// `branches` here; the daemon never needs to chroot (it works on branch fds).
    pub chroot: Option<PathBuf>,
    /// unionfs-fuse 2.x `preserve_branch` (not in Debian's 1.0): new files stay in the
    /// branch of their parent directory when it is rw, which `create=parent` (the default)
    /// already does.
    pub preserve_branch: bool,
    /// `-o passthrough=off|auto|on`: FUSE passthrough of file io (kernel 6.9+).
    pub passthrough: crate::fuse::PassthroughMode,
    /// `-o uring=off|auto|on`: FUSE over io_uring (Linux 6.14+, enable_uring on).
    pub uring: fuser::UringMode,
    /// `-o uring_pin=on|off` (default on): each io_uring worker runs on its queue's CPU.
    pub uring_pin: bool,
    /// `-o dir_readahead=on|off` (default on): during a tree walk, subdirectories are
    /// listed ahead on another thread.
    pub dir_readahead: bool,
}

/// The value of a switch `NAME=on|off` (`opt` as given, `k` its name).
fn on_off(opt: &str, k: &str, v: Option<&str>) -> Result<bool, CliError> {
    match v {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err(usage(format!("option {opt}: expected {k}=on or {k}=off"))),
    }
}

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
        let mut source_list = false;
        if let Some(s) = &source {
            if s.contains('=') {
                parse_branch_list(s, &mut specs)?;
                source_list = true;
            } else {
                fsname = s.clone();
            }
        }
        let (mut lower, mut upper, mut workdir) = (None, None, None);
        let mut cow_opt = false;
        let mut format_given = false;
        let mut chroot = None;
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
            foreground: a.foreground || a.debug,
            verbose: if a.debug { a.verbose.max(2) } else { a.verbose },
            unionfs_fuse: source_list,
            cow: true,
            hide_meta_files: false,
            max_files: None,
            passthrough: Default::default(),
            // The default can come from the environment (the test suite runs once per
            // transport).
            uring: match std::env::var("UNIONFS_URING") {
                Ok(v) => parse_uring(&v).map_err(|e| usage(format!("UNIONFS_URING: {e}")))?,
                Err(_) => fuser::UringMode::Auto,
            },
            uring_pin: true,
            dir_readahead: true,
            statfs_omit_ro: false,
            chroot: None,
            preserve_branch: false,
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
                if UNIONFS_FUSE_ONLY.contains(&k) {
                    cfg.unionfs_fuse = true;
                }
                match k {
                    "dirs" => parse_branch_list(&need(v)?, &mut specs)?,
                    "lowerdir" => lower = Some(need(v)?),
                    "upperdir" => upper = Some(need(v)?),
                    "workdir" => workdir = Some(need(v)?),
                    "whiteout" => {
                        format_given = true;
                        cfg.format = match need(v)?.as_str() {
                            "auto" => FormatChoice::Auto,
                            "overlay" => FormatChoice::Overlay,
                            "wh" => FormatChoice::Wh,
                            "meta" => FormatChoice::Meta,
                            o => {
                                return Err(usage(format!(
                                    "option whiteout={o}: use auto, overlay, wh or meta"
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
                    "debug" => {
                        cfg.foreground = true;
                        cfg.verbose = cfg.verbose.max(2);
                    }

                    // ---- unionfs-fuse (docs/compat.md) ----
                    "cow" => cow_opt = true,
                    "hide_meta_files" => cfg.hide_meta_files = true,
                    "statfs_omit_ro" => cfg.statfs_omit_ro = true,
                    "preserve_branch" => cfg.preserve_branch = true,
                    "max_files" => {
                        let n = need(v)?;
                        cfg.max_files =
                            Some(n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                                usage(format!("option max_files={n}: expected a positive number"))
                            })?);
                    }
                    "chroot" => chroot = Some(need(v)?),
                    // Without effect in unionfs-fuse since 0.23, kept there for compatibility.
                    "noinitgroups" => {}
                    // unionfs-fuse's own debug log file: we log to stderr (-v, -d, RUST_LOG).
                    "debug_file" => {}
                    // unionfs-fuse drops default_permissions with it (non-root only); we
                    // keep the kernel's checks, which for the one user a mount without
                    // allow_other serves ask the same as the branches would.
                    "relaxed_permissions" => {
                        if nix::unistd::geteuid().is_root() {
                            return Err(usage(
                                "option relaxed_permissions is not allowed when running as root (as in unionfs-fuse)",
                            ));
                        }
                    }

                    // ---- fuse-overlayfs / containers-storage (docs/compat.md) ----
                    // Honoured: kernel cache timeout for names and attributes.
                    "passthrough" => cfg.passthrough = need(v)?.parse().map_err(usage)?,
                    "uring" => cfg.uring = parse_uring(&need(v)?).map_err(usage)?,
                    "uring_pin" => cfg.uring_pin = on_off(&opt, k, v)?,
                    "dir_readahead" => cfg.dir_readahead = on_off(&opt, k, v)?,
                    "timeout" => {
                        let t = parse_secs(k, &need(v)?)?;
                        cfg.ttl.entry = t;
                        cfg.ttl.attr = t;
                    }
                    "uidmapping" | "gidmapping" => check_id_mapping(k, &need(v)?)?,
                    // SELinux label for the mount: FUSE mounts here carry no labels
                    // (fuse-overlayfs accepts and ignores it too).
                    "context" | "fscontext" | "defcontext" | "rootcontext" => {}
                    // Permission to skip fsync: syncing anyway is correct, only slower.
                    "volatile" => {}
                    "fsync" => {
                        let v = need(v)?;
                        if v != "0" && v != "1" {
                            return Err(usage(format!("option fsync={v}: expected 0 or 1")));
                        }
                    }
                    // We never enable POSIX ACLs in the kernel: noacl is what we do.
                    "noacl" => {}
                    // Speed switches: exact st_nlink, our inode numbers, our cache mode.
                    "static_nlink" | "threaded" | "fast_ino" | "writeback" => {}
                    // Kernel overlayfs features we do not write; a tree without them reads
                    // the same.
                    "redirect_dir" => {}
                    "index" | "nfs_export" if v == Some("off") => {}
                    "metacopy" => match v {
                        Some("on") => cfg.core.metacopy = true,
                        Some("off") => cfg.core.metacopy = false,
                        _ => {
                            return Err(usage(format!(
                                "option {opt}: expected metacopy=on or metacopy=off"
                            )))
                        }
                    },
                    "xino" if matches!(v, Some("off" | "auto")) => {}
                    "noxattrs" => check_bool(k, &need(v)?, "0", "xattrs stay supported")?,
                    "xattr_permissions" => {
                        check_bool(k, &need(v)?, "0", "permissions are never stored in xattrs")?
                    }
                    "squash_to_root" | "squash_to_uid" | "squash_to_gid" => {
                        return Err(refuse(
                            &opt,
                            "files always show their real owners (no squashing yet)",
                        ))
                    }
                    "plugins" => return Err(refuse(&opt, "no fuse-overlayfs plugins")),
                    "userxattr" => {
                        if nix::unistd::geteuid().is_root() {
                            return Err(refuse(
                                &opt,
                                "as root the overlay format uses trusted.overlay.* xattrs",
                            ));
                        }
                    }

                    // ---- libfuse options that would change what callers see ----
                    "uid" | "gid" | "umask" | "modules" | "subdir" | "rellinks" | "norellinks"
                    | "from_code" | "to_code" => {
                        return Err(refuse(
                            &opt,
                            "it changes what callers see and unionfs does not implement it",
                        ))
                    }
                    _ if LIBFUSE_IGNORED.contains(&k) && v.is_none() => {}
                    _ if LIBFUSE_IGNORED_KV.contains(&k) && v.is_some() => {}
                    _ if GENERIC.contains(&k) || k.starts_with("x-") => {}
                    _ => {
                        return Err(usage(format!(
                            "unknown option '{opt}' (see unionfs --help for the options)"
                        )))
                    }
                }
            }
        }
        // As fuse-overlayfs does as root: a container's processes run as other uids.
        if (upper.is_some() || lower.is_some()) && nix::unistd::geteuid().is_root() {
            cfg.allow_other = true;
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
        // `unionfs /a:/b MNT` (unionfs-fuse without modes): a SOURCE without `=` is a
        // branch list when nothing else names branches and it starts with a directory.
        if specs.is_empty() {
            if let Some(s) = &source {
                let first = s.split(':').next().unwrap_or("");
                let base = chroot.as_deref().map(Path::new);
                let probe = match base {
                    Some(b) => b.join(first.trim_start_matches('/')),
                    None => PathBuf::from(first),
                };
                if !first.is_empty() && probe.is_dir() {
                    parse_branch_list(s, &mut specs)?;
                    cfg.fsname = "unionfs".to_string();
                    cfg.unionfs_fuse = true;
                }
            }
        }
        cfg.cow = !cfg.unionfs_fuse || cow_opt;
        cfg.core.copy_up = cfg.cow;
        // A drop-in for unionfs-fuse reads and writes the trees it left.
        if cfg.unionfs_fuse && !format_given {
            cfg.format = FormatChoice::Meta;
        }
        cfg.core.hide_meta_files = cfg.hide_meta_files;
        if cfg.core.metacopy && matches!(cfg.format, FormatChoice::Wh | FormatChoice::Meta) {
            return Err(usage(
                "option metacopy=on needs the overlay whiteout format (whiteout=overlay or auto)",
            ));
        }
        if let Some(c) = &chroot {
            let cp = canonical_dir(c, "chroot")?;
            for (d, _) in specs.iter_mut() {
                *d = cp
                    .join(d.trim_start_matches('/'))
                    .to_string_lossy()
                    .into_owned();
            }
            cfg.chroot = Some(cp);
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
            // unionfs-fuse: "When neither RO nor RW is specified, selection defaults to RO."
            let mode = mode.unwrap_or(
                if i == 0 && !cfg.unionfs_fuse && upper.is_none() && lower.is_none() {
                    Mode::Rw
                } else {
                    Mode::Ro
                },
            );
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

/// `uring=off|auto|on`.
fn parse_uring(v: &str) -> Result<fuser::UringMode, String> {
    match v {
        "off" | "0" | "no" => Ok(fuser::UringMode::Off),
        "auto" => Ok(fuser::UringMode::Auto),
        "on" | "1" | "yes" => Ok(fuser::UringMode::On),
        _ => Err(format!("option uring={v}: expected off, auto or on")),
    }
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

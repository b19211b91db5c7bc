//! What to run and how to isolate it: the validated [`Spec`].
//!
//! The command line (`cli.rs`) only collects strings; this module turns them into typed
//! values and refuses every bad value or combination *before* any side effect (no daemon,
//! no cgroup, no namespace exists yet), one sentence per problem (bubblewrap's rule).
//! Everything after this point may assume the spec is consistent.

use std::path::{Path, PathBuf};

use caps::{Capability, CapsHashSet};
use thiserror::Error;

/// A bad option value or combination. The message is the whole user-facing line.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn bad(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

/// Which union serves the rootfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// Our FUSE `unionfs` daemon (the default).
    Fuse,
    /// Kernel overlayfs, mounted inside the container's mount namespace.
    Overlay,
    /// Kernel overlayfs when it mounts, else ours.
    Auto,
}

/// What to do when limits are asked for and no writable cgroup exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupPolicy {
    /// Fail (exit 125): limits are never dropped silently.
    Require,
    /// Print a warning and run without limits.
    Warn,
}

/// The container's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// A new network namespace with only `lo`, up.
    None,
    /// The host's network namespace.
    Host,
}

/// The seccomp policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeccompMode {
    /// The default filter (`security/seccomp.rs`).
    Default,
    /// No filter.
    Unconfined,
}

/// Resource limits; `None` means "not asked for".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU bandwidth in CPUs (0.5 = half a CPU).
    pub cpus: Option<f64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
}

impl Limits {
    /// Whether any limit was asked for.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// `--bind SRC:DST[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Host path (canonical).
    pub src: PathBuf,
    /// Absolute path inside the container.
    pub dst: PathBuf,
    /// Read-only, applied to every submount too.
    pub read_only: bool,
}

/// `--tmpfs DST[:SIZE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    /// Absolute path inside the container.
    pub dst: PathBuf,
    /// Size in bytes (tmpfs default: half of RAM).
    pub size: Option<u64>,
}

/// `--user UID[:GID]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    /// uid inside the container.
    pub uid: u32,
    /// gid inside the container.
    pub gid: u32,
}

/// Whether the container gets its own user namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserNs {
    /// No user namespace (root only).
    Off,
    /// A user namespace: always when not root, or on request (`--userns`).
    On,
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Container name (also the default hostname and the state record's key).
    pub id: String,
    /// Lower branches, highest precedence first (canonical paths).
    pub lowers: Vec<PathBuf>,
    /// The upper branch; `None`: a temporary one.
    pub upper: Option<PathBuf>,
    /// Keep the temporary upper directory at exit.
    pub keep: bool,
    /// Which union.
    pub fs: FsKind,
    /// Limits.
    pub limits: Limits,
    /// `--cgroups`.
    pub cgroups: CgroupPolicy,
    /// Hostname inside the container.
    pub hostname: String,
    /// Network.
    pub net: NetMode,
    /// User binds, in order.
    pub binds: Vec<Bind>,
    /// tmpfs mounts, in order.
    pub tmpfs: Vec<Tmpfs>,
    /// Read-only rootfs.
    pub read_only: bool,
    /// Environment of the payload (after the defaults).
    pub env: Vec<(String, String)>,
    /// Working directory inside the container.
    pub workdir: PathBuf,
    /// Payload user; `None`: root (uid 0) inside the container.
    pub user: Option<User>,
    /// The capability bounding set of the payload.
    pub caps: CapsHashSet,
    /// seccomp.
    pub seccomp: SeccompMode,
    /// Our tiny init as PID 1 (else the payload is PID 1).
    pub init: bool,
    /// User namespace.
    pub userns: UserNs,
    /// Verbosity (`-v`).
    pub verbose: u8,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Directory that holds the state records (`--root`).
    pub state_root: PathBuf,
}

/// The default capability set, the one Docker and Podman grant (moby's
/// `oci/caps/defaults.go`): enough for package managers and daemons that drop
/// privileges, none that reach the kernel (no SYS_ADMIN, SYS_MODULE, NET_ADMIN, ...).
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Parses a size: `512`, `64k`, `100m`, `1.5g`, `2GiB`, `10MB` (binary multiples, as
/// Docker's `--memory`). Refuses zero, negatives, garbage and overflow.
pub fn parse_size(s: &str) -> Result<u64, SpecError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(bad(format!(
                "bad size {s:?}: expected a number with an optional unit k, m, g or t (e.g. 64m)"
            )))
        }
    };
    let n: f64 = num.parse().map_err(|_| {
        bad(format!(
            "bad size {s:?}: expected a number such as 64m or 1.5g"
        ))
    })?;
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad(format!("bad size {s:?}: must be at least 1 byte")));
    }
    Ok(bytes as u64)
}

/// Parses `--cpus`: a positive number of CPUs, at least 0.01 (1 ms per 100 ms period).
pub fn parse_cpus(s: &str) -> Result<f64, SpecError> {
    match s.trim().parse::<f64>() {
        Ok(n) if (0.01..=1024.0).contains(&n) => Ok(n),
        _ => Err(bad(format!(
            "bad --cpus {s:?}: expected a number of CPUs between 0.01 and 1024, e.g. 0.5"
        ))),
    }
}

/// Parses `--pids`: a positive task count.
pub fn parse_pids(s: &str) -> Result<u64, SpecError> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(bad(format!(
            "bad --pids {s:?}: expected a positive number of tasks"
        ))),
    }
}

/// An absolute container path without `..` (a bind may not escape its target).
fn container_path(s: &str, what: &str) -> Result<PathBuf, SpecError> {
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(bad(format!("{what} {s:?}: must be an absolute path")));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(bad(format!("{what} {s:?}: may not contain '..'")));
    }
    if p == Path::new("/") {
        return Err(bad(format!("{what} {s:?}: cannot replace the root")));
    }
    Ok(p)
}

/// Parses `--bind SRC:DST[:ro|rw]`. SRC must exist on the host.
pub fn parse_bind(s: &str) -> Result<Bind, SpecError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => {
            return Err(bad(format!(
                "bad --bind {s:?}: expected SRC:DST or SRC:DST:ro"
            )))
        }
    };
    let src_path = Path::new(src)
        .canonicalize()
        .map_err(|e| bad(format!("--bind {s:?}: source {src}: {e}")))?;
    Ok(Bind {
        src: src_path,
        dst: container_path(dst, "--bind destination")?,
        read_only: ro,
    })
}

/// Parses `--tmpfs DST[:SIZE]`.
pub fn parse_tmpfs(s: &str) -> Result<Tmpfs, SpecError> {
    let (dst, size) = match s.split_once(':') {
        Some((d, sz)) => (d, Some(parse_size(sz)?)),
        None => (s, None),
    };
    Ok(Tmpfs {
        dst: container_path(dst, "--tmpfs destination")?,
        size,
    })
}

/// Parses `--user UID[:GID]` (numeric: the rootfs's /etc/passwd is not consulted).
pub fn parse_user(s: &str) -> Result<User, SpecError> {
    let num = |v: &str| {
        v.parse::<u32>().map_err(|_| {
            bad(format!(
                "bad --user {s:?}: expected numeric UID or UID:GID, e.g. 1000:1000"
            ))
        })
    };
    match s.split_once(':') {
        Some((u, g)) => Ok(User {
            uid: num(u)?,
            gid: num(g)?,
        }),
        None => {
            let u = num(s)?;
            Ok(User { uid: u, gid: u })
        }
    }
}

/// Parses `--env K=V`.
pub fn parse_env(s: &str) -> Result<(String, String), SpecError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(bad(format!("bad --env {s:?}: expected KEY=VALUE"))),
    }
}

/// A capability name: `CAP_SYS_ADMIN`, `sys_admin`, `SYS_ADMIN`; `ALL` is handled by the
/// caller.
pub fn parse_cap(s: &str) -> Result<Capability, SpecError> {
    let up = s.trim().to_ascii_uppercase();
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    name.parse()
        .map_err(|_| bad(format!("unknown capability {s:?} (e.g. CAP_NET_ADMIN)")))
}

/// The bounding set: the default, then `--cap-drop`, then `--cap-add` (as Docker: an add
/// wins over a drop of the same name).
pub fn cap_set(add: &[String], drop: &[String]) -> Result<CapsHashSet, SpecError> {
    let mut set: CapsHashSet = DEFAULT_CAPS.into_iter().collect();
    for d in drop {
        if d.eq_ignore_ascii_case("all") {
            set.clear();
        } else {
            set.remove(&parse_cap(d)?);
        }
    }
    for a in add {
        if a.eq_ignore_ascii_case("all") {
            set.extend(caps::all());
        } else {
            set.insert(parse_cap(a)?);
        }
    }
    Ok(set)
}

/// A hostname the kernel accepts (1-64 bytes, no NUL or '/').
pub fn check_hostname(h: &str) -> Result<(), SpecError> {
    if h.is_empty() || h.len() > 64 || h.contains(['\0', '/', ' ']) {
        return Err(bad(format!(
            "bad --hostname {h:?}: 1 to 64 characters without spaces or '/'"
        )));
    }
    Ok(())
}

/// A container name usable as a directory and cgroup name.
pub fn check_name(n: &str) -> Result<(), SpecError> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !n.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "bad --name {n:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

/// Checks that a lower branch exists and is a directory; returns its canonical path.
pub fn check_lower(s: &Path) -> Result<PathBuf, SpecError> {
    let p = s
        .canonicalize()
        .map_err(|e| bad(format!("lower directory {}: {e}", s.display())))?;
    if !p.is_dir() {
        return Err(bad(format!(
            "lower directory {}: not a directory",
            s.display()
        )));
    }
    Ok(p)
}

/// Checks the whole spec for combinations no single value shows.
pub fn check_combinations(spec: &Spec) -> Result<(), SpecError> {
    if spec.argv.is_empty() {
        return Err(bad(
            "no command given: unionrun run --lower DIR -- CMD [ARGS...]",
        ));
    }
    if spec.lowers.is_empty() {
        return Err(bad("at least one --lower DIR is needed (the rootfs)"));
    }
    if let Some(u) = &spec.upper {
        for l in &spec.lowers {
            if u == l || u.starts_with(l) || l.starts_with(u) {
                return Err(bad(format!(
                    "--upper {} and --lower {} overlap: use separate directories",
                    u.display(),
                    l.display()
                )));
            }
        }
    }
    if !spec.workdir.is_absolute() {
        return Err(bad(format!(
            "--workdir {}: must be an absolute path",
            spec.workdir.display()
        )));
    }
    if spec.keep && spec.upper.is_some() {
        return Err(bad(
            "--keep only applies to the temporary upper directory; with --upper it is always kept",
        ));
    }
    Ok(())
}

/// A fresh container id: 12 hex digits from the kernel's random pool.
pub fn random_id() -> String {
    let mut b = [0u8; 6];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Fall back on time and pid: uniqueness per host is all we need.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let v = t as u64 ^ ((std::process::id() as u64) << 32);
        b.copy_from_slice(&v.to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        for b in ["", "0", "-1m", "12x", "m", "1..2m", "nanm"] {
            assert!(parse_size(b).is_err(), "{b:?} accepted");
        }
        assert!(parse_size("12x").unwrap_err().0.contains("12x"));
    }

    #[test]
    fn cpus_and_pids() {
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("abc").is_err());
        assert_eq!(parse_pids("20").unwrap(), 20);
        assert!(parse_pids("0").is_err());
        assert!(parse_pids("-3").is_err());
    }

    #[test]
    fn binds_and_tmpfs() {
        let b = parse_bind("/tmp:/data:ro").unwrap();
        assert_eq!(b.dst, PathBuf::from("/data"));
        assert!(b.read_only);
        assert!(!parse_bind("/tmp:/data").unwrap().read_only);
        assert!(parse_bind("/tmp:data").is_err());
        assert!(parse_bind("/tmp:/a/../b").is_err());
        assert!(parse_bind("/nonexistent-unionrun:/x").is_err());
        assert!(parse_bind("/tmp:/x:rx").is_err());
        let t = parse_tmpfs("/scratch:16m").unwrap();
        assert_eq!(t.size, Some(16 << 20));
        assert_eq!(parse_tmpfs("/s").unwrap().size, None);
        assert!(parse_tmpfs("/").is_err());
    }

    #[test]
    fn users_envs_caps() {
        assert_eq!(
            parse_user("1000").unwrap(),
            User {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(parse_user("1:2").unwrap(), User { uid: 1, gid: 2 });
        assert!(parse_user("bob").is_err());
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
        assert_eq!(parse_cap("sys_admin").unwrap(), Capability::CAP_SYS_ADMIN);
        assert_eq!(parse_cap("CAP_KILL").unwrap(), Capability::CAP_KILL);
        assert!(parse_cap("CAP_NOPE").is_err());
        let s = cap_set(&["net_admin".into()], &["chown".into()]).unwrap();
        assert!(s.contains(&Capability::CAP_NET_ADMIN));
        assert!(!s.contains(&Capability::CAP_CHOWN));
        assert_eq!(s.len(), DEFAULT_CAPS.len());
        assert!(cap_set(&[], &["all".into()]).unwrap().is_empty());
    }

    #[test]
    fn names_and_hostnames() {
        assert!(check_name("web-1").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name(".x").is_err());
        assert!(check_hostname("box").is_ok());
        assert!(check_hostname(&"a".repeat(65)).is_err());
        assert_eq!(random_id().len(), 12);
    }
}

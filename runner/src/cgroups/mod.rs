//! cgroups behind one trait, [`Cgroups`], with a v1 and a v2 implementation.
//!
//! Which one is chosen by looking at the cgroup root (`/sys/fs/cgroup`, or a fake tree in
//! tests), see [`detect`]:
//! - *unified*: the root itself is cgroup2 (it has `cgroup.controllers`) -> v2;
//! - *hybrid*: v1 controller hierarchies plus a cgroup2 tree at `unified/` -> v1. The
//!   unified tree is never used or written, even when it holds stray controllers (crun
//!   mistakes such a host for a v2 one and fails): the v1 hierarchies are what the host's
//!   init manages;
//! - *legacy*: v1 hierarchies only -> v1.
//!
//! Where: the container's cgroup is `<caller's own cgroup>/unionrun/<id>` in each
//! hierarchy. Nesting below the caller keeps whatever limits and accounting apply to the
//! caller (it works the same under a delegated rootless subtree), and `unionrun/<id>` is
//! a name no one else uses: the runner only ever writes to, kills in and removes
//! directories it created itself.

pub mod v1;
pub mod v2;

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::spec::Limits;

/// A cgroup operation failed.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// Reading, writing or creating a cgroup file or directory failed.
    #[error("cgroup: cannot {op} {}{}", path.display(), data.as_ref().map(|d| format!(" ({d:?})")).unwrap_or_default())]
    Io {
        /// What we did ("write", "create", "remove", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What was written, if anything.
        data: Option<String>,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// No usable cgroup (missing controller, nothing writable, no cgroupfs).
    #[error("no usable cgroup: {0}")]
    Unavailable(String),
}

impl CgroupError {
    /// Whether this means "the caller may not create cgroups here" (rootless, read-only
    /// cgroupfs), which the `--cgroups` policy may turn into a warning.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CgroupError::Unavailable(_) => true,
            CgroupError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) | Some(libc::ENOENT)
            ),
        }
    }
}

/// `wrap_write`-style helpers (libcgroups' `WrapIoResult`): attach path and data.
pub(crate) fn write(path: &Path, data: &str) -> Result<(), CgroupError> {
    std::fs::write(path, data).map_err(|source| CgroupError::Io {
        op: "write",
        path: path.to_path_buf(),
        data: Some(data.to_string()),
        source,
    })
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        op: "read",
        path: path.to_path_buf(),
        data: None,
        source,
    })
}

/// `mkdir -p` below `base` (which must exist), tolerating a concurrent creator and a
/// concurrent remover of the shared `unionrun` level (retried).
pub(crate) fn create_dir(path: &Path) -> Result<(), CgroupError> {
    for _ in 0..5 {
        match std::fs::create_dir_all(path) {
            Ok(()) => return Ok(()),
            // Another runner removed the shared `unionrun` level between our two mkdirs.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "create",
                    path: path.to_path_buf(),
                    data: None,
                    source,
                })
            }
        }
    }
    Err(CgroupError::Unavailable(format!(
        "{} kept disappearing while being created",
        path.display()
    )))
}

/// Removes a cgroup directory, retrying while its last tasks finish exiting (EBUSY).
pub(crate) fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    for i in 0..100 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && i < 99 => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "remove",
                    path: path.to_path_buf(),
                    data: None,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Removes the shared `unionrun` level if it is empty now (another container may still
/// use it: then it stays, and that container's runner removes it later).
pub(crate) fn remove_shared_parent(parent: &Path) {
    let _ = std::fs::remove_dir(parent);
}

/// The pids listed in a `cgroup.procs` file.
pub(crate) fn read_pids(procs: &Path) -> Result<Vec<i32>, CgroupError> {
    match std::fs::read_to_string(procs) {
        Ok(t) => Ok(t.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io {
            op: "read",
            path: procs.to_path_buf(),
            data: None,
            source,
        }),
    }
}

/// SIGKILLs every task listed in `procs` until it is empty (or ~2 s pass).
pub(crate) fn kill_listed(procs: &Path) -> Result<(), CgroupError> {
    for _ in 0..200 {
        let pids = read_pids(procs)?;
        if pids.is_empty() {
            return Ok(());
        }
        for p in pids {
            // SAFETY: plain kill of a task that is in our own cgroup.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

/// What [`detect`] found at the cgroup root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The root is cgroup2.
    Unified,
    /// v1 hierarchies and a cgroup2 tree at `unified/`.
    Hybrid,
    /// v1 hierarchies only.
    Legacy,
    /// Nothing usable.
    None,
}

/// The v1 controllers the runner uses (cpuacct only for usage figures).
pub const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Looks at a cgroup root (normally /sys/fs/cgroup).
pub fn detect(root: &Path) -> Layout {
    if root.join("cgroup.controllers").is_file() {
        return Layout::Unified;
    }
    let any_v1 = V1_CONTROLLERS
        .iter()
        .chain(["cpuacct", "freezer", "devices", "blkio"].iter())
        .any(|c| root.join(c).join("tasks").is_file());
    if !any_v1 {
        return Layout::None;
    }
    if root.join("unified/cgroup.controllers").is_file() {
        Layout::Hybrid
    } else {
        Layout::Legacy
    }
}

/// The caller's own cgroups, from /proc/self/cgroup text: v1 `(controllers, path)` lines
/// and the v2 path (`0::/...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnCgroups {
    /// v1: each line's controller list and path.
    pub v1: Vec<(Vec<String>, String)>,
    /// v2: the unified path.
    pub v2: Option<String>,
}

impl OwnCgroups {
    /// Parses /proc/self/cgroup.
    pub fn parse(text: &str) -> OwnCgroups {
        let mut o = OwnCgroups::default();
        for l in text.lines() {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = match (f.next(), f.next(), f.next()) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => continue,
            };
            if ctrls.is_empty() {
                o.v2 = Some(path.to_string());
            } else {
                o.v1.push((
                    ctrls.split(',').map(String::from).collect(),
                    path.to_string(),
                ));
            }
        }
        o
    }

    /// The path of the v1 hierarchy holding `controller`.
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == controller))
            .map(|(_, p)| p.as_str())
    }

    /// Reads the calling process's own.
    pub fn current() -> OwnCgroups {
        OwnCgroups::parse(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default())
    }
}

/// `path` (absolute cgroup path like "/a/b") joined below `base`.
pub(crate) fn below(base: &Path, cg_path: &str) -> PathBuf {
    base.join(cg_path.trim_start_matches('/'))
}

/// One container's cgroup, whatever the version.
pub trait Cgroups {
    /// "v1" or "v2".
    fn version(&self) -> &'static str;
    /// Creates the directories (and, for v2, enables the controllers on the way).
    fn create(&mut self) -> Result<(), CgroupError>;
    /// Writes the limits.
    fn apply(&self, limits: &Limits) -> Result<(), CgroupError>;
    /// Moves a task in (before it execs anything).
    fn add_task(&self, pid: i32) -> Result<(), CgroupError>;
    /// The tasks inside.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Kills every task inside.
    fn kill_all(&self) -> Result<(), CgroupError>;
    /// Removes what `create` made.
    fn remove(&mut self) -> Result<(), CgroupError>;
    /// Every directory `create` made, leaf first (for the state record).
    fn dirs(&self) -> Vec<PathBuf>;
}

/// Picks the implementation for `root` (normally /sys/fs/cgroup).
pub fn for_root(root: &Path, own: &OwnCgroups, id: &str) -> Result<Box<dyn Cgroups>, CgroupError> {
    match detect(root) {
        Layout::Unified => Ok(Box::new(v2::V2::new(
            root,
            own.v2.as_deref().unwrap_or("/"),
            id,
        ))),
        Layout::Hybrid | Layout::Legacy => Ok(Box::new(v1::V1::new(root, own, id))),
        Layout::None => Err(CgroupError::Unavailable(format!(
            "no cgroup filesystem found at {}",
            root.display()
        ))),
    }
}

/// The cgroup at an exact path below the hierarchy roots (an OCI cgroupsPath): made
/// with its missing ancestors, which go with it.
pub fn for_path(root: &Path, rel: &Path) -> Result<Box<dyn Cgroups>, CgroupError> {
    match detect(root) {
        Layout::Unified => Ok(Box::new(v2::V2::at(root, rel))),
        Layout::Hybrid | Layout::Legacy => Ok(Box::new(v1::V1::at(root, rel))),
        Layout::None => Err(CgroupError::Unavailable(format!(
            "no cgroup filesystem found at {}",
            root.display()
        ))),
    }
}

/// The ancestors of `dir` that do not exist yet, outermost first.
pub(crate) fn missing_ancestors(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| !a.exists())
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

/// Removes cgroup directories an OCI container recorded (leaf first, then the ancestors
/// its `create` made): kills what is inside, then rmdir; an ancestor still in use stays.
pub fn remove_recorded(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    let mut first_err = None;
    for (i, d) in dirs.iter().enumerate() {
        if !d.is_dir() {
            continue;
        }
        let leaf = i == 0 || d.file_name() == dirs[0].file_name();
        // cgroup.kill reaches every descendant: only ever on a leaf of ours, never on a
        // shared ancestor (other containers live below it).
        let kill = d.join("cgroup.kill");
        if leaf && kill.exists() {
            let _ = write(&kill, "1");
        }
        if let Err(e) = kill_listed(&d.join("cgroup.procs")) {
            first_err.get_or_insert(e);
        }
        match remove_dir(d) {
            Ok(()) => {}
            // Only a leaf must go; an ancestor others use now stays.
            Err(e) if leaf => {
                first_err.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Creates the container's cgroup and applies the limits (nothing is left behind on
/// failure).
pub fn setup(root: &Path, id: &str, limits: &Limits) -> Result<Box<dyn Cgroups>, CgroupError> {
    let mut cg = for_root(root, &OwnCgroups::current(), id)?;
    if let Err(e) = cg.create().and_then(|_| cg.apply(limits)) {
        let _ = cg.remove();
        return Err(e);
    }
    Ok(cg)
}

/// Removes cgroup directories recorded by a dead runner, leaf first: kills what is still
/// inside, then rmdir. Only directories under a `unionrun` level are touched.
pub fn sweep(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for d in dirs {
        let ours = d
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "unionrun")
            || d.file_name().is_some_and(|n| n == "unionrun");
        if !ours || !d.exists() {
            continue;
        }
        if d.file_name().is_some_and(|n| n == "unionrun") {
            remove_shared_parent(d);
            continue;
        }
        if d.join("cgroup.kill").is_file() {
            let _ = write(&d.join("cgroup.kill"), "1");
        }
        kill_listed(&d.join("cgroup.procs"))?;
        remove_dir(d)?;
        if let Some(p) = d.parent() {
            remove_shared_parent(p);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake cgroupfs trees in temp dirs (libcgroups' `test.rs` style).
    use std::fs;
    use std::path::Path;

    /// A v2 root: `cgroup.controllers` lists `ctrls`.
    pub fn v2_root(root: &Path, ctrls: &str) {
        fs::create_dir_all(root).unwrap();
        fs::write(root.join("cgroup.controllers"), ctrls).unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
    }

    /// A v1 hierarchy for `ctrl` below `root`.
    pub fn v1_hierarchy(root: &Path, ctrl: &str) {
        let d = root.join(ctrl);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("tasks"), "").unwrap();
        fs::write(d.join("cgroup.procs"), "").unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_layouts() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert_eq!(detect(r), Layout::None);
        fake::v1_hierarchy(r, "memory");
        assert_eq!(detect(r), Layout::Legacy);
        // A hybrid host whose unified tree holds stray controllers is still v1.
        fake::v2_root(&r.join("unified"), "memory pids");
        assert_eq!(detect(r), Layout::Hybrid);
        let u = tempfile::tempdir().unwrap();
        fake::v2_root(u.path(), "cpu memory pids");
        assert_eq!(detect(u.path()), Layout::Unified);
    }

    #[test]
    fn parses_own_cgroups() {
        let o =
            OwnCgroups::parse("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\nbad\n");
        assert_eq!(o.v1_path("memory"), Some("/process_api/abc"));
        assert_eq!(o.v1_path("cpuacct"), Some("/"));
        assert_eq!(o.v1_path("pids"), None);
        assert_eq!(o.v2.as_deref(), Some("/user.slice"));
        assert_eq!(below(Path::new("/r"), "/a/b"), PathBuf::from("/r/a/b"));
    }

    #[test]
    fn hybrid_picks_v1_and_never_writes_unified() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for c in V1_CONTROLLERS {
            fake::v1_hierarchy(r, c);
        }
        fake::v2_root(&r.join("unified"), "memory pids");
        let own = OwnCgroups::parse("3:memory:/\n2:cpu:/\n1:pids:/\n0::/\n");
        let mut cg = for_root(r, &own, "c1").unwrap();
        assert_eq!(cg.version(), "v1");
        cg.create().unwrap();
        cg.apply(&Limits {
            pids: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(fs_read(&r.join("pids/unionrun/c1/pids.max")), "5");
        assert_eq!(fs_read(&r.join("unified/cgroup.subtree_control")), "");
        assert!(!r.join("unified/unionrun").exists());
    }

    #[test]
    fn sweep_only_touches_unionrun_dirs() {
        let t = tempfile::tempdir().unwrap();
        let mine = t.path().join("memory/unionrun/x");
        let other = t.path().join("memory/other");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        sweep(&[
            mine.clone(),
            other.clone(),
            t.path().join("memory/unionrun"),
        ])
        .unwrap();
        assert!(!mine.exists());
        assert!(!t.path().join("memory/unionrun").exists());
        assert!(other.exists());
    }

    fn fs_read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }
}

//! The state record of a run, and `unionrun cleanup`.
//!
//! Each run owns `<state root>/<id>/`: `state.json` (this [`Record`]) and `mnt/` (the
//! union's mount point). The record is rewritten after every resource is created, so a
//! runner killed at any point (SIGKILL included) leaves a record naming exactly what it
//! had: its own pid, the container's init and the daemon (each with its start time, so a
//! recycled pid is never signalled), the mount, the cgroup directories and the temporary
//! directories. [`sweep`] undoes a record whose runner is gone.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Reading or writing state failed.
#[derive(Debug, Error)]
pub enum StateError {
    /// A file operation on the state directory.
    #[error("state: cannot {op} {}", path.display())]
    Io {
        /// What we did.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The name is taken by a live run or an uncleaned record.
    #[error("the container name {id:?} is in use ({}); {hint}", dir.display())]
    InUse {
        /// The name.
        id: String,
        /// Its state directory.
        dir: PathBuf,
        /// What to do.
        hint: &'static str,
    },
    /// A record that does not parse.
    #[error("state: {} is not a valid record: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        why: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A process identified by pid and start time (field 22 of /proc/PID/stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// pid in the host's pid namespace.
    pub pid: i32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

impl ProcId {
    /// Identifies a live process.
    pub fn of(pid: i32) -> Option<ProcId> {
        start_time(pid).map(|start| ProcId { pid, start })
    }

    /// Whether this very process still exists (not a recycled pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start) && !is_zombie(self.pid)
    }

    /// Sends `sig` if the process is still the same one.
    pub fn signal(&self, sig: i32) {
        if self.alive() {
            // SAFETY: plain kill of a process we identified by pid and start time.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }
}

/// The start time of `pid`, from /proc/PID/stat.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')': split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// What a run created, for `unionrun cleanup`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Container name.
    pub id: String,
    /// The runner.
    pub runner: Option<ProcId>,
    /// The container's first process (init, or the payload with --no-init).
    pub container: Option<ProcId>,
    /// The union daemon.
    pub daemon: Option<ProcId>,
    /// The union's mount point (FUSE mounts live in the runner's mount namespace).
    pub mountpoint: Option<PathBuf>,
    /// cgroup directories, leaf first.
    pub cgroups: Vec<PathBuf>,
    /// Temporary directories to remove.
    pub temp_dirs: Vec<PathBuf>,
}

/// The state directory of one run.
pub struct StateDir {
    dir: PathBuf,
}

const RECORD: &str = "state.json";

impl StateDir {
    /// Creates `<root>/<id>` (refusing a name in use).
    pub fn create(root: &Path, id: &str) -> Result<StateDir, StateError> {
        std::fs::create_dir_all(root).map_err(io_err("create", root))?;
        let dir = root.join(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let live = load(&dir)
                    .ok()
                    .and_then(|r| r.runner)
                    .is_some_and(|p| p.alive());
                return Err(StateError::InUse {
                    id: id.to_string(),
                    dir,
                    hint: if live {
                        "a container of that name is running"
                    } else {
                        "its runner is gone: run `unionrun cleanup` first"
                    },
                });
            }
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes the record atomically (write a temp file, rename over).
    pub fn save(&self, r: &Record) -> Result<(), StateError> {
        let tmp = self.dir.join(".state.json.tmp");
        let text = serde_json::to_string_pretty(r).map_err(|e| StateError::Corrupt {
            path: tmp.clone(),
            why: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
        let dst = self.dir.join(RECORD);
        std::fs::rename(&tmp, &dst).map_err(io_err("write", &dst))
    }

    /// Removes the directory (the mount point below it must be gone).
    pub fn remove(self) {
        let _ = remove_tree(&self.dir);
    }
}

/// Loads the record in a state directory.
pub fn load(dir: &Path) -> Result<Record, StateError> {
    let p = dir.join(RECORD);
    let t = std::fs::read_to_string(&p).map_err(io_err("read", &p))?;
    serde_json::from_str(&t).map_err(|e| StateError::Corrupt {
        path: p,
        why: e.to_string(),
    })
}

/// `rm -rf` that also gets through directories without write or search permission (an
/// overlayfs work dir is left mode 000), and refuses to start if anything is mounted
/// below `p` (it would delete the mounted files, e.g. a user's bind source).
pub fn remove_tree(p: &Path) -> io::Result<()> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let busy = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m).starts_with(p));
    if busy {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    remove_inner(p)
}

fn remove_inner(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return std::fs::remove_file(p);
    }
    if md.permissions().mode() & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
    }
    for e in std::fs::read_dir(p)? {
        remove_inner(&e?.path())?;
    }
    std::fs::remove_dir(p)
}

/// Undoes one record (its runner must be gone). Returns what was done, for `-v`.
pub fn undo(r: &Record) -> Vec<String> {
    let mut done = Vec::new();
    if let Some(c) = r.container.filter(ProcId::alive) {
        c.signal(libc::SIGKILL);
        done.push(format!("killed container init {}", c.pid));
    }
    if let Some(d) = r.daemon.filter(ProcId::alive) {
        d.signal(libc::SIGTERM);
        let mut waited = 0;
        while d.alive() && waited < 200 {
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        if d.alive() {
            d.signal(libc::SIGKILL);
        }
        done.push(format!("stopped union daemon {}", d.pid));
    }
    if let Some(m) = &r.mountpoint {
        if crate::fsd::is_mounted(m) {
            crate::fsd::lazy_unmount(m);
            done.push(format!("unmounted {}", m.display()));
        }
    }
    if !r.cgroups.is_empty() && r.cgroups.iter().any(|d| d.exists()) {
        match crate::cgroups::sweep(&r.cgroups) {
            Ok(()) => done.push("removed the cgroup".into()),
            Err(e) => done.push(format!("cgroup: {e}")),
        }
    }
    for t in &r.temp_dirs {
        if t.exists() {
            match remove_tree(t) {
                Ok(()) => done.push(format!("removed {}", t.display())),
                Err(e) => done.push(format!("cannot remove {}: {e}", t.display())),
            }
        }
    }
    done
}

/// `unionrun cleanup [NAMES]`: undoes every record (or the named ones) whose runner is
/// gone. Returns (id, what was done) per swept record; live runs are left alone.
pub fn sweep(root: &Path, names: &[String]) -> Result<Vec<(String, Vec<String>)>, StateError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("read", root)(e)),
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if !names.is_empty() && !names.contains(&id) {
            continue;
        }
        let dir = e.path();
        let rec = match load(&dir) {
            Ok(r) => r,
            // No record yet: a run that is just starting (it writes one right after
            // creating the directory). Never guess: leave it.
            Err(StateError::Io { .. }) => continue,
            Err(err) => return Err(err),
        };
        if rec.runner.is_some_and(|p| p.alive()) {
            continue;
        }
        let mut done = undo(&rec);
        if remove_tree(&dir).is_ok() {
            done.push(format!("removed {}", dir.display()));
        }
        out.push((id, done));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_ids_survive_odd_names_and_detect_recycling() {
        let me = ProcId::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        let fake = ProcId {
            start: me.start + 1,
            ..me
        };
        assert!(!fake.alive(), "a different start time is another process");
    }

    #[test]
    fn records_round_trip_and_sweep_skips_live_runs() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::create(t.path(), "live").unwrap();
        let mut r = Record {
            id: "live".into(),
            runner: ProcId::of(std::process::id() as i32),
            ..Default::default()
        };
        sd.save(&r).unwrap();
        assert_eq!(load(sd.path()).unwrap(), r);
        assert!(matches!(
            StateDir::create(t.path(), "live"),
            Err(StateError::InUse { .. })
        ));
        let dead = StateDir::create(t.path(), "dead").unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let tmp = scratch.path().join("tmp-upper");
        std::fs::create_dir_all(tmp.join("a/b")).unwrap();
        r.id = "dead".into();
        r.runner = Some(ProcId { pid: 1, start: 1 });
        r.temp_dirs = vec![tmp.clone()];
        dead.save(&r).unwrap();
        let swept = sweep(t.path(), &[]).unwrap();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].0, "dead");
        assert!(!tmp.exists());
        assert!(!t.path().join("dead").exists());
        assert!(t.path().join("live").exists());
    }

    #[test]
    fn remove_tree_handles_mode_000_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("w/work");
        std::fs::create_dir_all(d.join("x")).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&t.path().join("w")).unwrap();
        assert!(!t.path().join("w").exists());
    }
}

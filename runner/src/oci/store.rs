//! Where OCI containers live between commands: `<root>/<id>/` holds `oci.json` (what
//! `create` made: pids, cgroups, bundle) and, until `start`, the `exec.fifo` the
//! container's process waits on. (`state.json` in the same root belongs to `unionrun
//! run` records, which `unionrun cleanup` sweeps; this file is named apart.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::OciError;
use crate::state::ProcId;

/// The record's file name.
pub const RECORD: &str = "oci.json";
/// The fifo `start` writes to.
pub const FIFO: &str = "exec.fifo";

/// What `create` made.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Rootfs (host path).
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// The container's process (pid in our namespace).
    pub init: Option<ProcId>,
    /// config.json's annotations.
    pub annotations: HashMap<String, String>,
    /// cgroup directories we made, leaf first.
    pub cgroups: Vec<PathBuf>,
    /// config.json's hooks, for start and delete.
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The uid that created it.
    pub owner: u32,
    /// The union daemon serving the rootfs (annotations `unionrun.lower`).
    #[serde(default)]
    pub daemon: Option<ProcId>,
    /// Its mount point.
    #[serde(default)]
    pub mountpoint: Option<PathBuf>,
    /// Directories `create` made outside the state directory (a work dir next to a
    /// given upper).
    #[serde(default)]
    pub temp_dirs: Vec<PathBuf>,
}

/// The container's status, as the runtime spec names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `create` is still running.
    Creating,
    /// Waiting for `start`.
    Created,
    /// The process runs.
    Running,
    /// The process has exited.
    Stopped,
}

impl Status {
    /// The spec's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// The state root.
pub struct Store {
    root: PathBuf,
}

/// Checks a container id: runc's characters, no path tricks.
pub fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(OciError::Usage(format!(
            "invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.'"
        )))
    }
}

impl Store {
    /// The store at `root`.
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    /// A container's directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes a new container's directory (refusing an id in use).
    pub fn create(&self, id: &str) -> Result<PathBuf, OciError> {
        check_id(id)?;
        std::fs::create_dir_all(&self.root)
            .map_err(|e| OciError::io(format!("create {}", self.root.display()), e))?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(OciError::Usage(format!("container {id} already exists")))
            }
            Err(e) => Err(OciError::io(format!("create {}", dir.display()), e)),
        }
    }

    /// Loads a container's record.
    pub fn load(&self, id: &str) -> Result<Saved, OciError> {
        check_id(id)?;
        let p = self.dir(id).join(RECORD);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                OciError::NotFound(id.to_string())
            } else {
                OciError::io(format!("read {}", p.display()), e)
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|e| OciError::io(format!("read {}", p.display()), std::io::Error::other(e)))
    }

    /// Writes a record atomically.
    pub fn save(&self, s: &Saved) -> Result<(), OciError> {
        let dir = self.dir(&s.id);
        let tmp = dir.join(".oci.json.tmp");
        let text = serde_json::to_string_pretty(s).unwrap_or_default();
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, dir.join(RECORD)))
            .map_err(|e| OciError::io(format!("write {}", dir.display()), e))
    }

    /// The status of a container.
    pub fn status(&self, s: &Saved) -> Status {
        match s.init {
            None => Status::Creating,
            Some(p) if p.alive() => {
                if self.dir(&s.id).join(FIFO).exists() {
                    Status::Created
                } else {
                    Status::Running
                }
            }
            Some(_) => Status::Stopped,
        }
    }

    /// Every container id in the store.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(RECORD).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Removes a container's directory (refusing to descend into a mount left there).
    pub fn remove(&self, id: &str) {
        let _ = crate::state::remove_tree(&self.dir(id));
    }
}

//! cgroup v2: one directory, `<root>/<caller's path>/unionrun/<id>`. The controllers a
//! limit needs are enabled on the way down (`+memory` etc. in `cgroup.subtree_control`
//! of the caller's cgroup and of `unionrun/`); the "no internal processes" rule means the
//! caller's own cgroup must then be the root or hold no processes itself, which is what a
//! delegated subtree (systemd `Delegate=yes`, a user's `user@.service`) provides.

use std::path::{Path, PathBuf};

use super::{
    below, create_dir, kill_listed, read, read_pids, remove_dir, remove_shared_parent, write,
};
use super::{CgroupError, Cgroups};
use crate::spec::Limits;

/// The CFS period written to `cpu.max`.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A v2 cgroup.
pub struct V2 {
    root: PathBuf,
    base: PathBuf,
    leaf: PathBuf,
    created: Vec<PathBuf>,
    /// An exact path (OCI cgroupsPath): the ancestors `create` had to make, outermost
    /// first; no shared `unionrun` level.
    exact: Option<Vec<PathBuf>>,
}

impl V2 {
    /// Plans the leaf (nothing is created yet).
    pub fn new(root: &Path, own_path: &str, id: &str) -> V2 {
        let base = below(root, own_path);
        V2 {
            root: root.to_path_buf(),
            leaf: base.join("unionrun").join(id),
            base,
            created: Vec::new(),
            exact: None,
        }
    }

    /// The cgroup at `rel` below the root (an OCI cgroupsPath).
    pub fn at(root: &Path, rel: &Path) -> V2 {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        V2 {
            root: root.to_path_buf(),
            leaf: root.join(rel),
            base: root.to_path_buf(),
            created: Vec::new(),
            exact: Some(Vec::new()),
        }
    }

    /// The directories between the base and the leaf whose subtree_control must list
    /// the controllers, outermost first.
    fn levels(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .leaf
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&self.base))
            .map(Path::to_path_buf)
            .collect();
        v.reverse();
        v
    }

    /// The controllers the limits need.
    fn needed(limits: &Limits) -> Vec<&'static str> {
        let mut v = Vec::new();
        if limits.memory.is_some() {
            v.push("memory");
        }
        if limits.cpus.is_some() {
            v.push("cpu");
        }
        if limits.pids.is_some() {
            v.push("pids");
        }
        v
    }

    /// Enables `ctrls` in `dir/cgroup.subtree_control` unless already there.
    fn enable(dir: &Path, ctrls: &[&str]) -> Result<(), CgroupError> {
        let have = read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
        let missing: Vec<String> = ctrls
            .iter()
            .filter(|c| !have.split_whitespace().any(|h| h == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        write(&dir.join("cgroup.subtree_control"), &missing.join(" "))
    }
}

fn memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    write(&dir.join("memory.max"), &bytes.to_string())?;
    // No swap on top of the limit (what v1's memsw limit does): the limit is the limit.
    let sw = dir.join("memory.swap.max");
    if sw.exists() {
        write(&sw, "0")?;
    }
    Ok(())
}

fn cpu(dir: &Path, cpus: f64) -> Result<(), CgroupError> {
    let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
}

fn pids(dir: &Path, max: u64) -> Result<(), CgroupError> {
    write(&dir.join("pids.max"), &max.to_string())
}

impl Cgroups for V2 {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn create(&mut self) -> Result<(), CgroupError> {
        if !self.base.is_dir() {
            return Err(CgroupError::Unavailable(format!(
                "the caller's cgroup {} does not exist",
                self.base.display()
            )));
        }
        if let Some(made) = &mut self.exact {
            made.extend(super::missing_ancestors(&self.leaf));
        } else {
            let shared = self.base.join("unionrun");
            if !shared.is_dir() {
                create_dir(&shared)?;
                self.created.push(shared.clone());
            }
        }
        create_dir(&self.leaf)?;
        self.created.insert(0, self.leaf.clone());
        Ok(())
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let need = V2::needed(limits);
        if need.is_empty() {
            return Ok(());
        }
        let avail = read(&self.base.join("cgroup.controllers"))
            .or_else(|_| read(&self.root.join("cgroup.controllers")))?;
        if let Some(m) = need
            .iter()
            .find(|c| !avail.split_whitespace().any(|a| a == **c))
        {
            return Err(CgroupError::Unavailable(format!(
                "the cgroup v2 {m} controller is not available in {} (cgroup.controllers: {:?})",
                self.base.display(),
                avail.trim()
            )));
        }
        for level in self.levels() {
            V2::enable(&level, &need)?;
        }
        if let Some(m) = limits.memory {
            memory(&self.leaf, m)?;
        }
        if let Some(c) = limits.cpus {
            cpu(&self.leaf, c)?;
        }
        if let Some(p) = limits.pids {
            pids(&self.leaf, p)?;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        write(&self.leaf.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        read_pids(&self.leaf.join("cgroup.procs"))
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        // cgroup.kill (5.14+) kills atomically, forks in flight included.
        let k = self.leaf.join("cgroup.kill");
        if k.exists() {
            write(&k, "1")?;
        }
        kill_listed(&self.leaf.join("cgroup.procs"))
    }

    fn remove(&mut self) -> Result<(), CgroupError> {
        if self.created.is_empty() {
            return Ok(());
        }
        remove_dir(&self.leaf)?;
        self.created.clear();
        match &mut self.exact {
            Some(made) => {
                for d in made.drain(..).rev() {
                    remove_shared_parent(&d);
                }
            }
            None => remove_shared_parent(&self.base.join("unionrun")),
        }
        Ok(())
    }

    fn dirs(&self) -> Vec<PathBuf> {
        match &self.exact {
            Some(made) => std::iter::once(self.leaf.clone())
                .chain(made.iter().rev().cloned())
                .collect(),
            None => vec![self.leaf.clone(), self.base.join("unionrun")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake;
    use super::*;

    fn r(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// What it writes, and where, on a fake unified tree.
    #[test]
    fn writes_limits_and_enables_controllers() {
        let t = tempfile::tempdir().unwrap();
        fake::v2_root(t.path(), "cpuset cpu io memory pids");
        let base = t.path().join("user.slice");
        fake::v2_root(&base, "cpu memory pids");
        let mut cg = V2::new(t.path(), "/user.slice", "c1");
        cg.create().unwrap();
        let shared = base.join("unionrun");
        std::fs::write(shared.join("cgroup.subtree_control"), "").unwrap();
        cg.apply(&Limits {
            memory: Some(32 << 20),
            cpus: Some(1.5),
            pids: Some(64),
        })
        .unwrap();
        let leaf = shared.join("c1");
        assert_eq!(r(&leaf.join("memory.max")), "33554432");
        assert_eq!(r(&leaf.join("cpu.max")), "150000 100000");
        assert_eq!(r(&leaf.join("pids.max")), "64");
        assert_eq!(
            r(&base.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(
            r(&shared.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        assert_eq!(
            r(&t.path().join("cgroup.subtree_control")),
            "",
            "root untouched"
        );
        cg.add_task(7).unwrap();
        assert_eq!(r(&leaf.join("cgroup.procs")), "7");
        assert_eq!(cg.dirs()[0], leaf);
    }

    #[test]
    fn already_enabled_controllers_are_not_rewritten() {
        let t = tempfile::tempdir().unwrap();
        fake::v2_root(t.path(), "memory pids");
        std::fs::write(t.path().join("cgroup.subtree_control"), "memory pids").unwrap();
        let mut cg = V2::new(t.path(), "/", "c2");
        cg.create().unwrap();
        std::fs::write(t.path().join("unionrun/cgroup.subtree_control"), "").unwrap();
        cg.apply(&Limits {
            pids: Some(3),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r(&t.path().join("cgroup.subtree_control")), "memory pids");
        assert_eq!(
            r(&t.path().join("unionrun/cgroup.subtree_control")),
            "+pids"
        );
    }

    #[test]
    fn missing_controller_is_unavailable() {
        let t = tempfile::tempdir().unwrap();
        fake::v2_root(t.path(), "");
        let mut cg = V2::new(t.path(), "/", "c3");
        cg.create().unwrap();
        let e = cg
            .apply(&Limits {
                memory: Some(1 << 20),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        // No limit asked: nothing to enable, nothing written.
        cg.apply(&Limits::default()).unwrap();
        cg.remove().unwrap();
        assert!(!t.path().join("unionrun").exists());
    }

    #[test]
    fn an_exact_path_enables_controllers_on_every_level_and_goes_whole() {
        let t = tempfile::tempdir().unwrap();
        fake::v2_root(t.path(), "cpu memory pids");
        let mut cg = V2::at(t.path(), Path::new("/pod/ctr"));
        cg.create().unwrap();
        cg.apply(&Limits {
            pids: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r(&t.path().join("cgroup.subtree_control")), "+pids");
        assert_eq!(r(&t.path().join("pod/cgroup.subtree_control")), "+pids");
        assert_eq!(r(&t.path().join("pod/ctr/pids.max")), "5");
        assert_eq!(
            cg.dirs(),
            vec![t.path().join("pod/ctr"), t.path().join("pod")]
        );
        // (A fake tree keeps written files; the kernel's has none to remove.)
        std::fs::remove_file(t.path().join("pod/ctr/pids.max")).unwrap();
        std::fs::remove_file(t.path().join("pod/cgroup.subtree_control")).unwrap();
        cg.remove().unwrap();
        assert!(!t.path().join("pod").exists());
    }
}

//! cgroup v1: one directory per controller hierarchy (`memory`, `cpu`, `pids`), each at
//! `<root>/<ctrl>/<caller's path>/unionrun/<id>`. A hierarchy that is not mounted is
//! skipped unless a limit needs it. Every limit is one small function writing one or two
//! files (libcgroups' one-file-per-controller rule, kept short here).

use std::path::{Path, PathBuf};

use super::{below, create_dir, kill_listed, read_pids, remove_dir, remove_shared_parent, write};
use super::{CgroupError, Cgroups, OwnCgroups, V1_CONTROLLERS};
use crate::spec::Limits;

/// The CFS period we use: 100 ms, the kernel default (quota = cpus * period).
pub const CFS_PERIOD_US: u64 = 100_000;

/// A v1 cgroup: one leaf per mounted controller.
pub struct V1 {
    /// (controller, leaf dir) for each mounted controller.
    leaves: Vec<(&'static str, PathBuf)>,
    created: Vec<PathBuf>,
    /// An exact path (OCI cgroupsPath): no shared `unionrun` level; the ancestors
    /// `create` had to make, outermost first, go with the leaves.
    exact: Option<Vec<PathBuf>>,
}

impl V1 {
    /// Plans the leaves (nothing is created yet).
    pub fn new(root: &Path, own: &OwnCgroups, id: &str) -> V1 {
        let leaves = V1_CONTROLLERS
            .iter()
            .filter(|c| root.join(c).join("tasks").is_file())
            .map(|c| {
                let base = below(&root.join(c), own.v1_path(c).unwrap_or("/"));
                (*c, base.join("unionrun").join(id))
            })
            .collect();
        V1 {
            leaves,
            created: Vec::new(),
            exact: None,
        }
    }

    /// The cgroup at `rel` below each mounted hierarchy's root (an OCI cgroupsPath).
    pub fn at(root: &Path, rel: &Path) -> V1 {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        let leaves = V1_CONTROLLERS
            .iter()
            .filter(|c| root.join(c).join("tasks").is_file())
            .map(|c| (*c, root.join(c).join(rel)))
            .collect();
        V1 {
            leaves,
            created: Vec::new(),
            exact: Some(Vec::new()),
        }
    }

    fn leaf(&self, ctrl: &str) -> Result<&Path, CgroupError> {
        self.leaves
            .iter()
            .find(|(c, _)| *c == ctrl)
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| {
                CgroupError::Unavailable(format!(
                    "the cgroup v1 {ctrl} controller is not mounted (needed for the --{} limit)",
                    match ctrl {
                        "cpu" => "cpus",
                        c => c,
                    }
                ))
            })
    }
}

/// memory.limit_in_bytes, and memsw (memory + swap) to the same value where the kernel
/// accounts swap, so a limit cannot be escaped by swapping.
fn memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
    let sw = dir.join("memory.memsw.limit_in_bytes");
    if sw.exists() {
        write(&sw, &bytes.to_string())?;
    }
    Ok(())
}

/// CFS bandwidth: `cpus` CPUs' worth of time per period.
fn cpu(dir: &Path, cpus: f64) -> Result<(), CgroupError> {
    let quota = ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
    write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
}

fn pids(dir: &Path, max: u64) -> Result<(), CgroupError> {
    write(&dir.join("pids.max"), &max.to_string())
}

impl Cgroups for V1 {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn create(&mut self) -> Result<(), CgroupError> {
        if self.leaves.is_empty() {
            return Err(CgroupError::Unavailable(
                "none of the memory, cpu and pids v1 controllers is mounted".into(),
            ));
        }
        for (_, leaf) in &self.leaves {
            if self.created.contains(leaf) {
                continue;
            }
            if let Some(made) = &mut self.exact {
                made.extend(super::missing_ancestors(leaf));
            }
            create_dir(leaf)?;
            self.created.push(leaf.clone());
        }
        Ok(())
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(m) = limits.memory {
            memory(self.leaf("memory")?, m)?;
        }
        if let Some(c) = limits.cpus {
            cpu(self.leaf("cpu")?, c)?;
        }
        if let Some(p) = limits.pids {
            pids(self.leaf("pids")?, p)?;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        for leaf in &self.created {
            write(&leaf.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for leaf in &self.created {
            for p in read_pids(&leaf.join("cgroup.procs"))? {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        Ok(all)
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        // v1 has no cgroup.kill; the pids hierarchy (or any) lists every task.
        for leaf in &self.created {
            kill_listed(&leaf.join("cgroup.procs"))?;
        }
        Ok(())
    }

    fn remove(&mut self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for leaf in self.created.drain(..) {
            if let Err(e) = remove_dir(&leaf) {
                first_err.get_or_insert(e);
                continue;
            }
            if self.exact.is_none() {
                if let Some(p) = leaf.parent() {
                    remove_shared_parent(p);
                }
            }
        }
        for d in self.exact.iter_mut().flat_map(|m| m.drain(..).rev()) {
            remove_shared_parent(&d);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.leaves.iter().map(|(_, p)| p.clone()).collect();
        if let Some(made) = &self.exact {
            v.extend(made.iter().rev().cloned());
            return v;
        }
        v.extend(
            self.leaves
                .iter()
                .filter_map(|(_, p)| p.parent().map(Path::to_path_buf)),
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake;
    use super::*;

    fn tree() -> (tempfile::TempDir, OwnCgroups) {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "pids"] {
            fake::v1_hierarchy(t.path(), c);
            std::fs::create_dir_all(t.path().join(c).join("me")).unwrap();
        }
        let own = OwnCgroups::parse("3:memory:/me\n2:cpu,cpuacct:/me\n1:pids:/me\n");
        (t, own)
    }

    #[test]
    fn writes_limits_where_expected() {
        let (t, own) = tree();
        let mut cg = V1::new(t.path(), &own, "c1");
        cg.create().unwrap();
        cg.apply(&Limits {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(20),
        })
        .unwrap();
        let r = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(r("memory/me/unionrun/c1/memory.limit_in_bytes"), "67108864");
        assert_eq!(r("cpu/me/unionrun/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!(r("cpu/me/unionrun/c1/cpu.cfs_period_us"), "100000");
        assert_eq!(r("pids/me/unionrun/c1/pids.max"), "20");
        cg.add_task(42).unwrap();
        assert_eq!(r("pids/me/unionrun/c1/cgroup.procs"), "42");
        assert_eq!(cg.dirs().len(), 6);
    }

    #[test]
    fn missing_controller_is_unavailable_only_when_needed() {
        let t = tempfile::tempdir().unwrap();
        fake::v1_hierarchy(t.path(), "memory");
        let own = OwnCgroups::parse("1:memory:/\n");
        let mut cg = V1::new(t.path(), &own, "c2");
        cg.create().unwrap();
        cg.apply(&Limits {
            memory: Some(1 << 20),
            ..Default::default()
        })
        .unwrap();
        let e = cg
            .apply(&Limits {
                pids: Some(3),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.is_unavailable());
        assert!(e.to_string().contains("pids"), "{e}");
    }

    #[test]
    fn removes_only_what_it_created() {
        let (t, own) = tree();
        let mut cg = V1::new(t.path(), &own, "c3");
        cg.create().unwrap();
        cg.remove().unwrap();
        assert!(!t.path().join("memory/me/unionrun").exists());
        assert!(t.path().join("memory/me").is_dir());
    }

    #[test]
    fn an_exact_path_takes_its_missing_ancestors_along() {
        let (t, _) = tree();
        let mut cg = V1::at(t.path(), Path::new("/me/pod/ctr"));
        cg.create().unwrap();
        cg.apply(&Limits {
            memory: Some(1 << 20),
            ..Default::default()
        })
        .unwrap();
        let leaf = t.path().join("memory/me/pod/ctr");
        assert_eq!(
            std::fs::read_to_string(leaf.join("memory.limit_in_bytes")).unwrap(),
            "1048576"
        );
        let dirs = cg.dirs();
        assert_eq!(
            dirs.len(),
            6,
            "three leaves, three made ancestors: {dirs:?}"
        );
        assert!(dirs.contains(&t.path().join("memory/me/pod")));
        // (A fake tree keeps written files; the kernel's has none to remove.)
        std::fs::remove_file(leaf.join("memory.limit_in_bytes")).unwrap();
        cg.remove().unwrap();
        assert!(!t.path().join("memory/me/pod").exists());
        assert!(t.path().join("memory/me").is_dir(), "what existed stays");
    }
}

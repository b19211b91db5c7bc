//! A bundle's config.json, validated and turned into what the container side executes:
//! the mount plan, the namespaces, the process. Every refusal happens here, before any
//! side effect (as `spec.rs` does for `unionrun run`).

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use caps::{Capability, CapsHashSet};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};

use super::OciError;
use crate::rootfs::{mounts, MountOp};

fn bad(msg: impl Into<String>) -> OciError {
    OciError::Config(msg.into())
}

/// A namespace the container gets: a new one, or one to join (`path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The clone flag naming its type.
    pub flag: CloneFlags,
    /// Join this one instead of creating one.
    pub path: Option<PathBuf>,
}

/// The five capability sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: CapsHashSet,
    /// Effective set.
    pub effective: CapsHashSet,
    /// Permitted set.
    pub permitted: CapsHashSet,
    /// Inheritable set.
    pub inheritable: CapsHashSet,
    /// Ambient set.
    pub ambient: CapsHashSet,
}

/// One rlimit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// RLIMIT_* number.
    pub resource: i32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The process to run (config.json's `process`, or `exec --process`).
#[derive(Clone, Debug)]
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<CString>,
    /// envp, exactly as given (no defaults: that is the caller's job in OCI).
    pub env: Vec<CString>,
    /// PATH from env, for the command lookup.
    pub path: String,
    /// Working directory (container path).
    pub cwd: PathBuf,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask.
    pub umask: Option<u32>,
    /// Capabilities.
    pub caps: CapSets,
    /// no_new_privs.
    pub no_new_privs: bool,
    /// rlimits.
    pub rlimits: Vec<Rlimit>,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// A pty for stdio, its master sent to the console socket.
    pub terminal: bool,
    /// linux.seccomp, compiled (empty: none).
    pub seccomp: Vec<seccompiler::BpfProgram>,
}

/// A union rootfs asked for by annotations: `unionrun.lower=DIR:DIR` (highest
/// precedence first, relative to the bundle), `unionrun.upper=DIR` (else a temporary one
/// in the container's state directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnionRoot {
    /// Read-only branches, canonical.
    pub lowers: Vec<PathBuf>,
    /// The writable branch, canonical, if given.
    pub upper: Option<PathBuf>,
}

/// The annotation keys.
pub const LOWER_KEY: &str = "unionrun.lower";
/// See [`LOWER_KEY`].
pub const UPPER_KEY: &str = "unionrun.upper";

fn union_root(spec: &Spec, dir: &Path) -> Result<Option<UnionRoot>, OciError> {
    let ann = spec.annotations().clone().unwrap_or_default();
    let Some(lower) = ann.get(LOWER_KEY) else {
        if ann.contains_key(UPPER_KEY) {
            return Err(bad(format!("{UPPER_KEY} needs {LOWER_KEY}")));
        }
        return Ok(None);
    };
    let dir_of = |s: &str, key: &str| -> Result<PathBuf, OciError> {
        let p = dir.join(s);
        std::fs::canonicalize(&p)
            .ok()
            .filter(|c| c.is_dir())
            .ok_or_else(|| bad(format!("{key}: {} is not a directory", p.display())))
    };
    let lowers = lower
        .split(':')
        .filter(|s| !s.is_empty())
        .map(|s| dir_of(s, LOWER_KEY))
        .collect::<Result<Vec<_>, _>>()?;
    if lowers.is_empty() {
        return Err(bad(format!("{LOWER_KEY} names no directory")));
    }
    let upper = ann
        .get(UPPER_KEY)
        .map(|u| dir_of(u, UPPER_KEY))
        .transpose()?;
    Ok(Some(UnionRoot { lowers, upper }))
}

/// A loaded bundle.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory (canonical).
    pub dir: PathBuf,
    /// The whole config, as read.
    pub spec: Spec,
    /// The rootfs (canonical); for a union rootfs, its mount point once mounted.
    pub rootfs: PathBuf,
    /// A union rootfs (annotations), mounted by `create` instead of using root.path.
    pub union: Option<UnionRoot>,
    /// root.readonly.
    pub readonly: bool,
    /// Namespaces, in config order.
    pub namespaces: Vec<Namespace>,
    /// The process.
    pub process: ProcessPlan,
    /// hostname (needs a uts namespace).
    pub hostname: Option<String>,
    /// Mounts, masked and read-only paths, in order (before pivot_root).
    pub mounts: Vec<MountOp>,
    /// linux.sysctl.
    pub sysctl: Vec<(String, String)>,
    /// The maps of a new user namespace (linux.uidMappings/gidMappings).
    pub userns: Option<crate::namespaces::idmap::IdMaps>,
}

impl Bundle {
    /// Reads and checks `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Bundle, OciError> {
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| bad(format!("bundle {}: {e}", dir.display())))?;
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let spec: Spec = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{} is not a valid OCI config: {e}", path.display())))?;
        let union = union_root(&spec, &dir)?;
        let root = spec.root().clone().unwrap_or_default();
        let rootfs = if union.is_some() {
            // Mounted by `create`; root.path is not used.
            PathBuf::new()
        } else {
            if spec.root().is_none() {
                return Err(bad(format!("{}: root.path is missing", path.display())));
            }
            let rootfs = dir.join(root.path());
            std::fs::canonicalize(&rootfs)
                .ok()
                .filter(|p| p.is_dir())
                .ok_or_else(|| bad(format!("root.path {} is not a directory", rootfs.display())))?
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| bad(format!("{}: process is missing", path.display())))?;
        let mut process = ProcessPlan::from_oci(process)?;
        let linux = spec.linux().clone().unwrap_or_default();
        if let Some(s) = linux.seccomp() {
            process.seccomp = super::seccomp::programs(s)?;
        }
        let mut namespaces = Vec::new();
        for ns in linux.namespaces().clone().unwrap_or_default() {
            let flag = match ns.typ() {
                LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
                LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
                LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
                LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
                other => return Err(bad(format!("namespace type {other:?} is not supported"))),
            };
            if namespaces.iter().any(|n: &Namespace| n.flag == flag) {
                return Err(bad(format!("namespace {:?} is listed twice", ns.typ())));
            }
            let path = ns.path().clone();
            if path.is_some() && flag == CloneFlags::CLONE_NEWUSER {
                return Err(bad(format!(
                    "joining an existing {:?} namespace (path) is not supported yet",
                    ns.typ()
                )));
            }
            if let Some(p) = &path {
                if !p.exists() {
                    return Err(bad(format!(
                        "namespace path {} does not exist",
                        p.display()
                    )));
                }
            }
            namespaces.push(Namespace { flag, path });
        }
        if !namespaces
            .iter()
            .any(|n| n.flag == CloneFlags::CLONE_NEWNS && n.path.is_none())
        {
            return Err(bad(
                "a new mount namespace is required (linux.namespaces has no \"mount\")",
            ));
        }
        let own = |f| namespaces.iter().any(|n: &Namespace| n.flag == f);
        let userns = if own(CloneFlags::CLONE_NEWUSER) {
            // SAFETY: geteuid/getegid cannot fail.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            Some(super::userns::maps_of(&linux, uid, gid)?)
        } else {
            None
        };
        if !process.additional_gids.is_empty()
            && userns
                .as_ref()
                .is_some_and(|m| !m.helpers && unsafe { libc::geteuid() } != 0)
        {
            return Err(bad(
                "process.user.additionalGids cannot be set: an unprivileged user namespace \
                 without newgidmap has setgroups denied",
            ));
        }
        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        if hostname.is_some() && !own(CloneFlags::CLONE_NEWUTS) {
            return Err(bad("hostname is set but there is no new uts namespace"));
        }
        let mut ops = Vec::new();
        let mut has_dev = false;
        for m in spec.mounts().clone().unwrap_or_default() {
            has_dev |= m.destination() == Path::new("/dev");
            convert_mount(&m, &dir, &mut ops)?;
            if m.destination() == Path::new("/dev") {
                mounts::device_nodes(&mut ops);
            }
        }
        if !has_dev {
            // runc's rule: the default device nodes exist even without a /dev mount.
            mounts::device_nodes(&mut ops);
        }
        for d in linux.devices().clone().unwrap_or_default() {
            let p = d.path().clone();
            if !p.is_absolute() || !p.starts_with("/dev") {
                return Err(bad(format!("device {} must be under /dev", p.display())));
            }
            if !p.exists() {
                return Err(bad(format!(
                    "device {} does not exist on the host (devices are bound from the host's /dev)",
                    p.display()
                )));
            }
            ops.push(MountOp::Bind {
                src: p.clone(),
                dst: p,
                recursive: false,
                read_only: false,
                file: true,
            });
        }
        for m in linux.masked_paths().clone().unwrap_or_default() {
            ops.push(MountOp::Mask {
                dst: container_path(&m)?,
            });
        }
        for r in linux.readonly_paths().clone().unwrap_or_default() {
            ops.push(MountOp::ReadOnly {
                dst: container_path(&r)?,
            });
        }
        let sysctl = linux
            .sysctl()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<Vec<_>>();
        for (k, _) in &sysctl {
            if k.contains('/') || k.contains("..") {
                return Err(bad(format!("bad sysctl name {k:?}")));
            }
            // Only what a namespace of the container's own scopes (runc's list): any
            // other would change the host.
            let ipc = matches!(
                k.as_str(),
                "kernel.msgmax"
                    | "kernel.msgmnb"
                    | "kernel.msgmni"
                    | "kernel.sem"
                    | "kernel.shmall"
                    | "kernel.shmmax"
                    | "kernel.shmmni"
                    | "kernel.shm_rmid_forced"
            ) || k.starts_with("fs.mqueue.");
            let scoped = (ipc && own(CloneFlags::CLONE_NEWIPC))
                || (k.starts_with("net.") && own(CloneFlags::CLONE_NEWNET))
                || (matches!(k.as_str(), "kernel.hostname" | "kernel.domainname")
                    && own(CloneFlags::CLONE_NEWUTS));
            if !scoped {
                return Err(bad(format!(
                    "sysctl {k} is not scoped to a namespace of the container's own: it would change the host"
                )));
            }
        }
        Ok(Bundle {
            readonly: root.readonly().unwrap_or(false),
            dir,
            rootfs,
            union,
            namespaces,
            process,
            hostname,
            mounts: ops,
            sysctl,
            userns,
            spec,
        })
    }

    /// The clone flags for the new namespaces (the cgroup one is unshared later, after the
    /// process joined its cgroup).
    pub fn clone_flags(&self) -> CloneFlags {
        self.namespaces
            .iter()
            .filter(|n| n.path.is_none() && n.flag != CloneFlags::CLONE_NEWCGROUP)
            .fold(CloneFlags::empty(), |f, n| f | n.flag)
    }

    /// The path of a namespace of this type to join, if the config names one.
    pub fn join_path(&self, flag: CloneFlags) -> Option<&Path> {
        self.namespaces
            .iter()
            .find(|n| n.flag == flag)
            .and_then(|n| n.path.as_deref())
    }

    /// Whether the container gets a namespace of this type of its own (new).
    pub fn has_new(&self, flag: CloneFlags) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.flag == flag && n.path.is_none())
    }
}

/// An absolute container path without `..`.
fn container_path(s: &str) -> Result<PathBuf, OciError> {
    let p = PathBuf::from(s);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!(
            "{s:?}: a container path must be absolute, without '..'"
        )));
    }
    Ok(p)
}

/// What mount options say: flags, propagation, bind, mount_setattr attributes, data.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    flags: MsFlags,
    propagation: Option<MsFlags>,
    bind: Option<bool>,
    read_only: bool,
    attrs: u64,
    data: Vec<String>,
}

fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        propagation: None,
        bind: None,
        read_only: false,
        attrs: 0,
        data: Vec::new(),
    };
    for opt in opts {
        let (set, clear, attr) = match opt.as_str() {
            "ro" => {
                o.read_only = true;
                (MsFlags::MS_RDONLY, MsFlags::empty(), 0)
            }
            "rw" => {
                o.read_only = false;
                (MsFlags::empty(), MsFlags::MS_RDONLY, 0)
            }
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), ATTR_NOSUID),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, 0),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), ATTR_NODEV),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, 0),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), ATTR_NOEXEC),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, 0),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), 0),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, 0),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), 0),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), 0),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), 0),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), 0),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), 0),
            "mand" | "nomand" | "defaults" => (MsFlags::empty(), MsFlags::empty(), 0),
            "bind" => {
                o.bind = Some(false);
                continue;
            }
            "rbind" => {
                o.bind = Some(true);
                continue;
            }
            p @ ("private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared"
            | "unbindable" | "runbindable") => {
                let mut f = match p.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "slave" => MsFlags::MS_SLAVE,
                    "shared" => MsFlags::MS_SHARED,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if p.starts_with('r') {
                    f |= MsFlags::MS_REC;
                }
                o.propagation = Some(f);
                continue;
            }
            // Options of the mount tool or of idmapped mounts, not of the kernel.
            "tmpcopyup" | "notmpcopyup" | "copy-symlink" | "idmap" | "ridmap" => continue,
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
        o.attrs |= attr;
    }
    o
}

/// `MOUNT_ATTR_NOSUID`, `_NODEV`, `_NOEXEC`.
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;

fn convert_mount(m: &Mount, bundle: &Path, ops: &mut Vec<MountOp>) -> Result<(), OciError> {
    let dst = container_path(&m.destination().to_string_lossy())?;
    let o = parse_options(&m.options().clone().unwrap_or_default());
    let typ = m.typ().clone().unwrap_or_default();
    let source = m.source().clone().unwrap_or_default();
    if typ == "bind" || o.bind.is_some() {
        let src = if source.is_absolute() {
            source
        } else {
            bundle.join(source)
        };
        if !src.exists() {
            return Err(bad(format!(
                "mount {}: source {} does not exist",
                dst.display(),
                src.display()
            )));
        }
        ops.push(MountOp::Bind {
            file: !src.is_dir(),
            src,
            dst: dst.clone(),
            recursive: o.bind.unwrap_or(false),
            read_only: o.read_only,
        });
        if o.attrs != 0 {
            ops.push(MountOp::Attr {
                dst: dst.clone(),
                recursive: o.bind.unwrap_or(false),
                set: o.attrs,
            });
        }
    } else {
        if typ.is_empty() {
            return Err(bad(format!("mount {}: no type", dst.display())));
        }
        // cgroup (v1) hierarchies cannot be mounted one by one here; the container sees
        // the unified hierarchy of its cgroup namespace (docs/oci.md).
        if typ == "cgroup" || typ == "cgroup2" {
            ops.push(MountOp::Cgroup {
                dst: dst.clone(),
                flags: o.flags,
            });
            if let Some(p) = o.propagation {
                ops.push(MountOp::Propagation { dst, flags: p });
            }
            return Ok(());
        }
        let fstype = typ;
        let data = (!o.data.is_empty()).then(|| o.data.join(","));
        ops.push(MountOp::Any {
            source: if source.as_os_str().is_empty() {
                fstype.clone()
            } else {
                source.to_string_lossy().into_owned()
            },
            fstype,
            dst: dst.clone(),
            flags: o.flags,
            data,
        });
    }
    if let Some(p) = o.propagation {
        ops.push(MountOp::Propagation { dst, flags: p });
    }
    Ok(())
}

fn cstrings(v: &[String], what: &str) -> Result<Vec<CString>, OciError> {
    v.iter()
        .map(|s| CString::new(s.as_str()).map_err(|_| bad(format!("{what} contains a NUL byte"))))
        .collect()
}

fn cap_set(set: &Option<oci_spec::runtime::Capabilities>) -> Result<CapsHashSet, OciError> {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match name.parse::<Capability>() {
            Ok(cap) => {
                out.insert(cap);
            }
            // A capability this kernel's headers do not know: runc warns and goes on.
            Err(_) => tracing::warn!("unknown capability {name}, ignored"),
        }
    }
    Ok(out)
}

impl ProcessPlan {
    /// Checks and converts an OCI `process`.
    pub fn from_oci(p: &Process) -> Result<ProcessPlan, OciError> {
        let args = p.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(bad("process.args is empty: there is nothing to run"));
        }
        let env = p.env().clone().unwrap_or_default();
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .to_string();
        let cwd = p.cwd().clone();
        if !cwd.is_absolute() {
            return Err(bad(format!(
                "process.cwd {:?} must be an absolute path",
                cwd.display()
            )));
        }
        let caps = match p.capabilities() {
            Some(c) => CapSets {
                bounding: cap_set(c.bounding())?,
                effective: cap_set(c.effective())?,
                permitted: cap_set(c.permitted())?,
                inheritable: cap_set(c.inheritable())?,
                ambient: cap_set(c.ambient())?,
            },
            None => CapSets::default(),
        };
        let mut rlimits = Vec::new();
        for r in p.rlimits().clone().unwrap_or_default() {
            let name = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let resource =
                rlimit_number(&name).ok_or_else(|| bad(format!("unknown rlimit {name}")))?;
            if r.soft() > r.hard() {
                return Err(bad(format!(
                    "rlimit {name}: soft {} is above hard {}",
                    r.soft(),
                    r.hard()
                )));
            }
            rlimits.push(Rlimit {
                resource,
                soft: r.soft(),
                hard: r.hard(),
            });
        }
        let user = p.user();
        Ok(ProcessPlan {
            args: cstrings(&args, "process.args")?,
            env: cstrings(&env, "process.env")?,
            path,
            cwd,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            caps,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            rlimits,
            oom_score_adj: p.oom_score_adj(),
            terminal: p.terminal().unwrap_or(false),
            seccomp: Vec::new(),
        })
    }
}

fn rlimit_number(name: &str) -> Option<i32> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &[&str]) -> Options {
        parse_options(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let o = opts(&[
            "nosuid",
            "noexec",
            "nodev",
            "mode=755",
            "size=65536k",
            "rprivate",
        ]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
        );
        assert_eq!(o.propagation, Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC));
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        let o = opts(&["rbind", "ro", "rw", "nosuid"]);
        assert_eq!(o.bind, Some(true));
        assert!(!o.read_only, "the last of ro/rw wins");
        assert_eq!(o.attrs, ATTR_NOSUID);
    }

    #[test]
    fn a_minimal_config_loads_and_bad_ones_say_why() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("rootfs")).unwrap();
        let write = |v: serde_json::Value| {
            std::fs::write(t.path().join("config.json"), v.to_string()).unwrap()
        };
        let good = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 1, "gid": 2},
                        "env": ["PATH=/bin"],
                        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]},
            "hostname": "box",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "pid"}],
                      "maskedPaths": ["/proc/kcore"]}
        });
        write(good.clone());
        let b = Bundle::load(t.path()).unwrap();
        assert!(b.readonly);
        assert_eq!(b.process.path, "/bin");
        assert_eq!(b.process.rlimits[0].resource, libc::RLIMIT_NOFILE as i32);
        assert_eq!(
            b.clone_flags(),
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID
        );
        assert!(b.mounts.contains(&MountOp::Mask {
            dst: "/proc/kcore".into()
        }));
        for (patch, why) in [
            (serde_json::json!({"root": {"path": "nope"}}), "root.path"),
            (
                serde_json::json!({"process": {"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}}),
                "process.args",
            ),
            (
                serde_json::json!({"process": {"args": ["x"], "cwd": "rel", "user": {"uid": 0, "gid": 0}}}),
                "process.cwd",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "uts"}]}}),
                "mount namespace",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}]}}),
                "uts",
            ),
        ] {
            let mut v = good.clone();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            write(v);
            let e = Bundle::load(t.path()).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        std::fs::write(t.path().join("config.json"), "{not json").unwrap();
        let e = Bundle::load(t.path()).unwrap_err().to_string();
        assert!(e.contains("not a valid OCI config"), "{e}");
    }
}

//! The command line (clap derive). It only collects strings and flags; turning them into a
//! validated [`Spec`] is [`RunArgs::into_spec`]'s job (ripgrep's low/high args split), so
//! every refusal happens before any side effect.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::spec::{
    self, CgroupPolicy, FsKind, Limits, NetMode, SeccompMode, Spec, SpecError, UserNs,
};

/// `unionrun`: run a command on a union root filesystem, isolated by namespaces and
/// cgroups, as root or rootless.
#[derive(Debug, Parser)]
#[command(name = "unionrun", version, long_version = LONG_VERSION, about, long_about = None)]
pub struct Args {
    /// Directory for state records [default: /run/unionrun as root, else
    /// $XDG_RUNTIME_DIR/unionrun or /tmp/unionrun-UID; $UNIONRUN_ROOT overrides].
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// More output on stderr (repeat for more); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// runc's global flags (OCI runtime mode).
    #[command(flatten)]
    pub oci: crate::oci::args::OciGlobal,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--version`, as runc prints it (podman shows it): name and version, then the spec.
const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0");

/// The exit status contract, printed by `unionrun run --help`.
const EXIT_STATUS: &str = "Exit status: the payload's exit code; 128+N if it died of \
signal N; 125 if unionrun itself failed (bad usage, setup); 126 if CMD exists in the rootfs \
but cannot be executed; 127 if CMD was not found in the rootfs.";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run CMD in a new container whose root is a union of the lower directories.
    #[command(after_help = EXIT_STATUS)]
    Run(Box<RunArgs>),
    /// Sweep what runners that died left behind (mount, daemon, cgroup, temp dirs).
    Cleanup(CleanupArgs),
    /// OCI: create a container from a bundle; its process waits for `start`.
    Create(crate::oci::args::CreateArgs),
    /// OCI: start a created container's process.
    Start(crate::oci::args::IdArg),
    /// OCI: print a container's state (JSON).
    State(crate::oci::args::IdArg),
    /// OCI: send a signal to a container's process (or all of them).
    Kill(crate::oci::args::KillArgs),
    /// OCI: delete a container (what create made).
    Delete(crate::oci::args::DeleteArgs),
    /// OCI: list containers.
    List(crate::oci::args::ListArgs),
    /// OCI: run a new process in a running container.
    Exec(Box<crate::oci::args::ExecArgs>),
    /// OCI: write a default config.json.
    Spec(crate::oci::args::SpecArgs),
    /// OCI: print the features this runtime implements (JSON).
    Features,
    /// OCI (runc): not supported; refused with a clear message.
    #[command(hide = true, external_subcommand)]
    Other(Vec<String>),
}

/// `--fs`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FsArg {
    /// Our FUSE union (unionfs).
    Fuse,
    /// Kernel overlayfs.
    Overlay,
    /// Kernel overlayfs if it mounts, else ours.
    Auto,
}

/// `--cgroups`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CgroupsArg {
    /// Fail when limits are asked for and no writable cgroup exists.
    Require,
    /// Warn and run without limits instead.
    Warn,
}

/// `--net`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NetArg {
    /// A new network namespace with only the loopback interface, up.
    None,
    /// The host's network.
    Host,
}

/// `--seccomp`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SeccompArg {
    /// The default filter.
    Default,
    /// No seccomp filter.
    Unconfined,
}

/// `unionrun run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A read-only lower branch (repeatable, highest precedence first).
    #[arg(long = "lower", value_name = "DIR", required = true)]
    pub lowers: Vec<PathBuf>,
    /// The writable upper branch [default: a temporary directory, removed at exit].
    #[arg(long, value_name = "DIR")]
    pub upper: Option<PathBuf>,
    /// Keep the temporary upper directory at exit (its path is printed).
    #[arg(long)]
    pub keep: bool,
    /// Which union serves the rootfs.
    #[arg(long, value_enum, default_value = "fuse")]
    pub fs: FsArg,
    /// Memory limit, e.g. 64m, 1g.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU bandwidth limit in CPUs, e.g. 0.5.
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Maximum number of tasks (processes and threads).
    #[arg(long, value_name = "N")]
    pub pids: Option<String>,
    /// When limits are asked for but no writable cgroup exists: fail, or warn and go on.
    #[arg(long, value_enum, default_value = "require")]
    pub cgroups: CgroupsArg,
    /// Hostname inside the container [default: the container name].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network: none (only lo) or host.
    #[arg(long, value_enum, default_value = "none")]
    pub net: NetArg,
    /// Bind a host path: SRC:DST[:ro] (recursive; ro applies to every submount).
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    pub binds: Vec<String>,
    /// Mount a tmpfs: DST[:SIZE].
    #[arg(long = "tmpfs", value_name = "DST[:SIZE]")]
    pub tmpfs: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Set an environment variable in the container (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long, value_name = "DIR", default_value = "/")]
    pub workdir: PathBuf,
    /// Run the payload as UID[:GID] (numeric) inside the container.
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Add a capability to the default set (repeatable; ALL for every one).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the default set (repeatable; ALL for every one).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// seccomp profile.
    #[arg(long, value_enum, default_value = "default")]
    pub seccomp: SeccompArg,
    /// Run the payload as PID 1 instead of behind our tiny init.
    #[arg(long)]
    pub no_init: bool,
    /// Use a user namespace even when running as root (always on when not root).
    #[arg(long)]
    pub userns: bool,
    /// Container name [default: 12 random hex digits].
    #[arg(long)]
    pub name: Option<String>,
    /// The command to run and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `unionrun cleanup`.
#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// Only these containers (default: every record whose runner is gone).
    pub names: Vec<String>,
}

/// The default state directory for the calling user.
pub fn default_state_root() -> PathBuf {
    if let Some(r) = std::env::var_os("UNIONRUN_ROOT") {
        return PathBuf::from(r);
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    // Root of a user namespace (rootless podman calls its runtime that way) is not root
    // of the host: runc's rule, and /run is not ours to write there.
    let host_root = uid == 0
        && (!in_user_namespace()
            || std::env::var_os("XDG_RUNTIME_DIR").is_none()
            || std::env::var("USER").is_ok_and(|u| u == "root"));
    if host_root {
        return PathBuf::from("/run/unionrun");
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        let p = PathBuf::from(x);
        if p.is_dir() {
            return p.join("unionrun");
        }
    }
    std::env::temp_dir().join(format!("unionrun-{uid}"))
}

/// Whether we run in a user namespace other than the initial one (whose uid map is the
/// identity over every id).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

impl RunArgs {
    /// Validates everything and builds the [`Spec`]; no side effect.
    pub fn into_spec(self, root: Option<PathBuf>, verbose: u8) -> Result<Spec, SpecError> {
        let id = match self.name {
            Some(n) => {
                spec::check_name(&n)?;
                n
            }
            None => spec::random_id(),
        };
        let lowers = self
            .lowers
            .iter()
            .map(|l| spec::check_lower(l))
            .collect::<Result<Vec<_>, _>>()?;
        let upper = match self.upper {
            Some(u) => {
                let p = u
                    .canonicalize()
                    .map_err(|e| SpecError(format!("--upper {}: {e}", u.display())))?;
                if !p.is_dir() {
                    return Err(SpecError(format!(
                        "--upper {}: not a directory",
                        u.display()
                    )));
                }
                Some(p)
            }
            None => None,
        };
        let limits = Limits {
            memory: self.memory.as_deref().map(spec::parse_size).transpose()?,
            cpus: self.cpus.as_deref().map(spec::parse_cpus).transpose()?,
            pids: self.pids.as_deref().map(spec::parse_pids).transpose()?,
        };
        let hostname = self.hostname.unwrap_or_else(|| id.clone());
        spec::check_hostname(&hostname)?;
        let binds = self
            .binds
            .iter()
            .map(|b| spec::parse_bind(b))
            .collect::<Result<Vec<_>, _>>()?;
        let tmpfs = self
            .tmpfs
            .iter()
            .map(|t| spec::parse_tmpfs(t))
            .collect::<Result<Vec<_>, _>>()?;
        let env = self
            .env
            .iter()
            .map(|e| spec::parse_env(e))
            .collect::<Result<Vec<_>, _>>()?;
        let user = self.user.as_deref().map(spec::parse_user).transpose()?;
        let caps = spec::cap_set(&self.cap_add, &self.cap_drop)?;
        // SAFETY: geteuid cannot fail.
        let rootless = unsafe { libc::geteuid() } != 0;
        let s = Spec {
            id,
            lowers,
            upper,
            keep: self.keep,
            fs: match self.fs {
                FsArg::Fuse => FsKind::Fuse,
                FsArg::Overlay => FsKind::Overlay,
                FsArg::Auto => FsKind::Auto,
            },
            limits,
            cgroups: match self.cgroups {
                CgroupsArg::Require => CgroupPolicy::Require,
                CgroupsArg::Warn => CgroupPolicy::Warn,
            },
            hostname,
            net: match self.net {
                NetArg::None => NetMode::None,
                NetArg::Host => NetMode::Host,
            },
            binds,
            tmpfs,
            read_only: self.read_only,
            env,
            workdir: self.workdir,
            user,
            caps,
            seccomp: match self.seccomp {
                SeccompArg::Default => SeccompMode::Default,
                SeccompArg::Unconfined => SeccompMode::Unconfined,
            },
            init: !self.no_init,
            userns: if rootless || self.userns {
                UserNs::On
            } else {
                UserNs::Off
            },
            verbose,
            argv: self.command,
            state_root: root.unwrap_or_else(default_state_root),
        };
        spec::check_combinations(&s)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Spec, String> {
        let a = Args::try_parse_from(v).map_err(|e| e.to_string())?;
        match a.command {
            Command::Run(r) => r.into_spec(a.root, a.verbose).map_err(|e| e.0),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn run_parses_and_validates() {
        let s = parse(&[
            "unionrun", "-v", "run", "--lower", "/tmp", "--memory", "64m", "--cpus", "0.5",
            "--name", "t1", "--", "sh", "-c", "exit 7",
        ])
        .unwrap();
        assert_eq!(s.limits.memory, Some(64 << 20));
        assert_eq!(s.hostname, "t1");
        assert_eq!(s.argv, ["sh", "-c", "exit 7"]);
        assert_eq!(s.verbose, 1);
        assert!(s.init);
        assert!(
            parse(&["unionrun", "run", "--lower", "/nonexistent-x", "--", "true"])
                .unwrap_err()
                .contains("/nonexistent-x")
        );
        assert!(
            parse(&["unionrun", "run", "--lower", "/tmp", "--memory", "lots", "--", "true"])
                .unwrap_err()
                .contains("lots")
        );
        assert!(parse(&["unionrun", "run", "--bogus", "--lower", "/tmp", "--", "true"]).is_err());
        assert!(parse(&["unionrun", "run", "--lower", "/tmp"]).is_err());
    }
}

//! The OCI runtime command line, as runc has it and podman/conmon call it
//! (docs/oci.md lists every flag: what it does here, what is accepted and ignored, what
//! is refused). Like `cli.rs`, it only collects strings.

use std::path::PathBuf;

/// Global flags runc takes before the subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OciGlobal {
    /// Write errors (and with --debug, progress) to this file as well as stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of --log: text or json (what conmon reads).
    #[arg(
        long = "log-format",
        global = true,
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: String,
    /// Accepted for runc compatibility; a cgroupsPath "slice:prefix:name" is then read as
    /// cgroupfs path `slice/prefix-name.scope` (no systemd is asked).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility (more on --log).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility (true|false|auto), before the subcommand:
    /// rootless is detected.
    #[arg(long = "rootless", id = "global_rootless", value_name = "BOOL")]
    pub rootless: Option<String>,
}

/// `create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The bundle directory (holds config.json) [default: the current directory].
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container process's pid here.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket that receives the pty master (process.terminal).
    #[arg(long = "console-socket", value_name = "SOCK")]
    pub console_socket: Option<PathBuf>,
    /// Pass N more fds (3..3+N) to the container process.
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for runc compatibility (no pivot_root: refused, see docs/oci.md).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for runc compatibility (the session keyring is not touched).
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// The container id.
    pub id: String,
}

/// `start`, `state`, `ps`-less commands that name one container.
#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The container id.
    pub id: String,
}

/// `kill`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Signal every process of the container (its cgroup), not only its first.
    #[arg(short, long)]
    pub all: bool,
    /// The container id.
    pub id: String,
    /// Signal name or number [default: TERM].
    #[arg(default_value = "TERM")]
    pub signal: String,
}

/// `delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Kill a running container first; no error when it does not exist.
    #[arg(short, long)]
    pub force: bool,
    /// The container id.
    pub id: String,
}

/// `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Only the ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `spec`.
#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// Where to write config.json [default: the current directory].
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// A spec for an unprivileged caller (user namespace mapping the caller to root).
    #[arg(long)]
    pub rootless: bool,
}

/// `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// A process.json (the config's `process` object) instead of the command line.
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Allocate a pty (its master goes to --console-socket).
    #[arg(short, long)]
    pub tty: bool,
    /// Do not wait for the process: print nothing, exit once it runs.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid here.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket that receives the pty master.
    #[arg(long = "console-socket", value_name = "SOCK")]
    pub console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (repeatable).
    #[arg(short, long, value_name = "K=V")]
    pub env: Vec<String>,
    /// UID[:GID].
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Additional gids (repeatable).
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (repeatable).
    #[arg(short, long, value_name = "CAP")]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Pass N more fds (3..3+N).
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for runc compatibility (AppArmor is not applied).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Accepted for runc compatibility (SELinux labels are not applied).
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Accepted for runc compatibility (the container's cgroup is joined).
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// The container id.
    pub id: String,
    /// The command and its arguments (unless --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

//! Shared helpers for the integration tests: finding the binary, skipping (locally) or
//! failing (on CI) when a requirement is missing, temporary trees, mount guards that always
//! unmount, commands with timeouts, and tree snapshots with a readable diff.
//!
//! Invariants every test relies on:
//! - each test works in its own [`TempTree`]; nothing is shared between tests, so they run
//!   in parallel;
//! - a [`MountGuard`] unmounts lazily on drop, also when the test panics, and a
//!   [`TempTree`] lazily unmounts anything still mounted below it before it is deleted, so
//!   deleting the tree never walks into a live mount;
//! - every command runs with a timeout and its output goes to files, not pipes, so a daemon
//!   that keeps stderr open in the background can never hang a test.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged user that `scripts/test.sh` creates for the rootless tests.
pub const TEST_USER: &str = "unionfs-test";

/// Default timeout for one command run by a test.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The binary and requirements
// ---------------------------------------------------------------------------------------------

/// The `unionfs` binary under test: `$UNIONFS_BIN`, else `<target>/debug/unionfs` next to the
/// directory holding this test executable (`<target>/debug/deps/tests-*`).
pub fn unionfs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UNIONFS_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "UNIONFS_BIN={} does not exist or is not a file",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps");
    let p = dir.join("unionfs");
    assert!(
        p.is_file(),
        "the unionfs binary is missing at {}: build it first with `cargo build -p unionfs` \
         (scripts/test.sh does `cargo build --workspace --bins`), or set UNIONFS_BIN=/path/to/unionfs",
        p.display()
    );
    p
}

/// True when running on CI (`CI=true`), where a test that cannot run is a failure.
pub fn on_ci() -> bool {
    matches!(
        std::env::var("CI").map(|v| v.to_ascii_lowercase()),
        Ok(v) if v == "true" || v == "1"
    )
}

/// Returns `cond`. When it is false: on CI panic (a test that cannot run fails), locally
/// print why the test is skipped and return false (the caller then returns early).
#[track_caller]
pub fn require(cond: bool, why: &str) -> bool {
    if cond {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    if on_ci() {
        panic!("{test}: cannot run on CI (CI=true makes this a failure): {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Most mount tests need root (fusermount3 is not used, mount(2) is called directly).
#[track_caller]
pub fn require_root() -> bool {
    require(
        is_root(),
        "needs root (run the suite as root, e.g. scripts/test.sh)",
    )
}

/// uid and gid of a local user, if it exists.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name(name).ok().flatten()?;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

/// Requires root and the rootless test user; returns its uid/gid.
#[track_caller]
pub fn require_test_user() -> Option<(u32, u32)> {
    if !require_root() {
        return None;
    }
    let ids = user_ids(TEST_USER);
    if require(
        ids.is_some(),
        &format!("needs the user {TEST_USER} (scripts/test.sh creates it: useradd -m {TEST_USER})"),
    ) {
        ids
    } else {
        None
    }
}

/// Requires root, the rootless test user and a /dev/fuse that user may open (mode 0666,
/// as scripts/test.sh sets it); returns the user's uid/gid.
#[track_caller]
pub fn require_rootless_fuse() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let ids = require_test_user()?;
    let mode = std::fs::metadata("/dev/fuse")
        .map(|m| m.mode() & 0o777)
        .unwrap_or(0);
    require(
        mode & 0o666 == 0o666,
        &format!("/dev/fuse must be mode 0666 for rootless mounts (it is {mode:o}; scripts/test.sh runs chmod 0666 /dev/fuse)"),
    )
    .then_some(ids)
}

/// The `unionrun` binary: `$UNIONRUN_BIN`, else next to the unionfs binary under test.
pub fn unionrun_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UNIONRUN_BIN") {
        return PathBuf::from(p);
    }
    let p = unionfs_bin().with_file_name("unionrun");
    assert!(
        p.is_file(),
        "the unionrun binary is missing at {} (cargo build -p runner)",
        p.display()
    );
    p
}

/// A busybox rootfs at `rel` in `t` (Debian's busybox-static, every applet linked, an
/// /etc/passwd, /etc/motd, a 1777 /tmp); `None` (skipped, or a failure on CI) without
/// busybox.
pub fn busybox_rootfs(t: &TempTree, rel: &str) -> Option<PathBuf> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if !require(
        bb.is_some(),
        "needs busybox (apt-get install busybox-static)",
    ) {
        return None;
    }
    let rootfs = t.mkdir(rel);
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        t.mkdir(format!("{rel}/{d}"));
    }
    let bb = bb.unwrap();
    std::fs::copy(&bb, rootfs.join("bin/busybox")).expect("copy busybox");
    // The host's copy lists the applets: the fresh copy may still be open for writing in
    // a child another test thread just forked (ETXTBSY until that child execs).
    let list = run_ok(Command::new(&bb).arg("--list")).stdout;
    for applet in list.lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    t.write(
        format!("{rel}/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    );
    t.write(format!("{rel}/etc/motd"), "lower motd\n");
    t.chmod(format!("{rel}/tmp"), 0o1777);
    Some(rootfs)
}

/// A command that runs `program args...` as `user` (`runuser -u USER -- ...`).
pub fn as_user(user: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("runuser");
    c.arg("-u").arg(user).arg("--").arg(program);
    c
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// What a finished command did.
#[derive(Debug)]
pub struct Outcome {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn success(&self) -> bool {
        self.status.success()
    }
    /// Panics with the full outcome unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => writeln!(f, "exit code: {c}")?,
            (None, Some(s)) => writeln!(f, "killed by signal {s}")?,
            _ => writeln!(f, "status: {:?}", self.status)?,
        }
        writeln!(f, "--- stdout ---\n{}", tail(&self.stdout, 4000))?;
        write!(f, "--- stderr ---\n{}", tail(&self.stderr, 4000))
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Output captured in anonymous files: a daemon that inherits them cannot block us.
pub(crate) struct Capture {
    out: File,
    err: File,
}

impl Capture {
    pub(crate) fn attach(cmd: &mut Command) -> Capture {
        let out = tempfile::tempfile().expect("tempfile");
        let err = tempfile::tempfile().expect("tempfile");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"));
        Capture { out, err }
    }
    pub(crate) fn read(&mut self) -> (String, String) {
        (read_all(&mut self.out), read_all(&mut self.err))
    }
}

fn read_all(f: &mut File) -> String {
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.read_to_end(&mut v).expect("read capture");
    String::from_utf8_lossy(&v).into_owned()
}

/// Runs `cmd` (own process group, stdin null) with the default timeout.
pub fn run(cmd: &mut Command) -> Outcome {
    run_timeout(cmd, CMD_TIMEOUT)
}

/// Runs `cmd`; on timeout kills its process group and panics with what it printed.
#[track_caller]
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Outcome {
    let line = cmdline(cmd);
    let mut cap = Capture::attach(cmd);
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            kill_group(&child);
            let _ = child.wait();
            let (o, e) = cap.read();
            panic!(
                "`{line}` timed out after {timeout:?}\n--- stdout ---\n{o}\n--- stderr ---\n{e}"
            );
        }
    };
    let (stdout, stderr) = cap.read();
    Outcome {
        cmdline: line,
        status,
        stdout,
        stderr,
    }
}

/// `run(cmd).ok()`.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Outcome {
    run(cmd).ok()
}

/// Runs a bash script (`bash -c SCRIPT`).
pub fn sh(script: &str) -> Outcome {
    run(Command::new("bash").arg("-c").arg(script))
}

#[track_caller]
pub fn sh_ok(script: &str) -> Outcome {
    sh(script).ok()
}

/// Waits for a child for at most `timeout`; None if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the process group we created for `child` (spawned with `process_group(0)`).
fn kill_group(child: &Child) {
    let pid = child.id() as i32;
    // SAFETY: plain syscall; the group id is our own child's pid.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// The threads of process `pid`: (name, allowed CPUs as /proc writes them, "0-3,6").
pub fn threads_of(pid: u32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?.path();
            let name = std::fs::read_to_string(t.join("comm"))
                .ok()?
                .trim()
                .to_string();
            Some((name, cpus_allowed(&t.join("status"))))
        })
        .collect()
}

/// The `Cpus_allowed_list` of a /proc `status` file.
pub fn cpus_allowed(status: &Path) -> String {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

mod mounts;
mod selfcheck;
mod snapshot;
mod tree;

pub use mounts::*;
pub use snapshot::*;
pub use tree::*;

//! The container side, from clone to exec, as one ordered list of steps (youki's
//! `container_init_process`). Each step's comment says why it sits where it does.
//!
//! Runs after `clone` in a copy of the runner: single-threaded, no `unwrap()` (a panic
//! here would never be seen), every failure becomes one line sent to the monitor through
//! the error pipe, plus an exit code (125 setup, 126 cannot execute, 127 not found).
//! Everything that can be computed before the clone (the mount plan, the seccomp
//! programs, the environment, argv as C strings) is, and arrives here ready-made.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use crate::error::{EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_RUNNER};
use crate::rootfs::MountPlan;
use crate::spec::{NetMode, SeccompMode, Spec};
use crate::sys::Syscall;

/// Everything the child needs, prepared by the monitor before the clone.
pub struct ChildPlan {
    /// The rootfs mount point (host path, also valid in the child's mount namespace).
    pub root: PathBuf,
    /// The mount plan.
    pub plan: MountPlan,
    /// seccomp programs, in installation order (empty: unconfined).
    pub seccomp: Vec<(&'static str, seccompiler::BpfProgram)>,
    /// argv.
    pub argv: Vec<CString>,
    /// envp ("K=V").
    pub env: Vec<CString>,
    /// PATH inside the container, for the command lookup.
    pub path: String,
    /// setgroups(2) is allowed (false in a user namespace whose maps we wrote directly).
    pub setgroups: bool,
}

/// A failed step: exit code and one line.
pub type Failure = (i32, String);

fn fail(code: i32, e: impl std::fmt::Display) -> Failure {
    (code, e.to_string())
}

/// The default environment: a clean one (as Docker, unlike bubblewrap, which passes the
/// host's through), then `--env` on top.
pub fn environment(spec: &Spec) -> Vec<(String, String)> {
    let home = if spec.user.is_some_and(|u| u.uid != 0) {
        "/"
    } else {
        "/root"
    };
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), home.into()),
        ("HOSTNAME".into(), spec.hostname.clone()),
        ("container".into(), "unionrun".into()),
    ];
    if let Ok(t) = std::env::var("TERM") {
        env.push(("TERM".into(), t));
    }
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// The steps between "the monitor said go" and exec (or init). Generic over the syscall
/// seam, so the order is unit-tested with the recording fake.
pub fn setup(spec: &Spec, plan: &ChildPlan, sys: &dyn Syscall) -> Result<(), Failure> {
    // The monitor has moved us into the container's cgroup: a cgroup namespace made now
    // has that cgroup as its root, and /proc/self/cgroup shows "/".
    sys.unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| fail(EXIT_RUNNER, e))?;
    // Before the mounts: sysfs in a new netns shows its interfaces; lo must be up first.
    if spec.net == NetMode::None {
        sys.loopback_up().map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    // Host paths (bind sources, /dev nodes) are reachable only until pivot_root.
    plan.plan
        .execute(&plan.root, sys)
        .map_err(|e| fail(EXIT_RUNNER, crate::error::one_line(&e)))?;
    sys.sethostname(&spec.hostname)
        .map_err(|e| fail(EXIT_RUNNER, e))?;
    // After pivot_root: the working directory is a container path.
    let wd = &spec.workdir;
    if wd != Path::new("/") {
        if !spec.read_only {
            let _ = std::fs::create_dir_all(wd);
        }
        sys.chdir(wd).map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    Ok(())
}

/// The payload's last steps: privileges, fds, seccomp, exec. Returns only on failure.
pub fn finalize(spec: &Spec, plan: &ChildPlan, sys: &dyn Syscall) -> Failure {
    match finalize_inner(spec, plan, sys) {
        Ok(f) | Err(f) => f,
    }
}

fn finalize_inner(spec: &Spec, plan: &ChildPlan, sys: &dyn Syscall) -> Result<Failure, Failure> {
    // The bounding set first: it needs CAP_SETPCAP, which the user switch may take away.
    sys.drop_bounding(&spec.caps)
        .map_err(|e| fail(EXIT_RUNNER, e))?;
    // setuid needs CAP_SETUID, so before the process capabilities are cut down.
    let uid = match spec.user {
        Some(u) => {
            sys.set_ids(u.uid, u.gid, plan.setgroups).map_err(|e| {
                let hint = if e.errno() == Some(libc::EINVAL) {
                    " (not mapped in the container's user namespace)"
                } else {
                    ""
                };
                fail(EXIT_RUNNER, format!("{e}{hint}"))
            })?;
            u.uid
        }
        None => 0,
    };
    // Root keeps the default set; for another uid the kernel cleared them at setuid.
    if uid == 0 {
        sys.set_caps(&spec.caps).map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    sys.no_new_privs().map_err(|e| fail(EXIT_RUNNER, e))?;
    let exe = resolve(&spec.argv[0], &plan.path)?;
    // Every inherited fd >= 3 closes at exec (the error pipe too, which is how the
    // monitor learns that exec succeeded).
    sys.cloexec_from(3).map_err(|e| fail(EXIT_RUNNER, e))?;
    restore_signals();
    // Last: after seccomp only the exec itself remains.
    if spec.seccomp == SeccompMode::Default {
        for (name, prog) in &plan.seccomp {
            sys.seccomp(name, prog).map_err(|e| fail(EXIT_RUNNER, e))?;
        }
    }
    Ok(exec(&exe, plan))
}

/// Unblocks every signal and resets every disposition to the default. An ignored signal
/// stays ignored across exec: Rust ignores SIGPIPE (`yes | head` would spin on EPIPE),
/// and a shell without job control starts background commands with SIGINT and SIGQUIT
/// ignored (a payload would then shrug off the SIGINT we forward). A container starts
/// clean, as with runc.
pub fn restore_signals() {
    // The kernel's struct sigaction (x86_64 and aarch64 alike). glibc's signal() refuses
    // 32 and 33, which it keeps for itself, yet a parent may have left them ignored.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: plain signal mask and disposition calls; SIGKILL/SIGSTOP just fail.
    unsafe {
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// execvp's lookup, on the container's PATH: the first executable candidate, or a
/// failure that says "not found" (127) or "cannot execute" (126).
pub fn resolve(cmd: &str, path: &str) -> Result<CString, Failure> {
    let candidates: Vec<PathBuf> = if cmd.contains('/') {
        vec![PathBuf::from(cmd)]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(cmd))
            .collect()
    };
    let mut denied = None;
    for c in &candidates {
        let cs = CString::new(c.as_os_str().as_bytes())
            .map_err(|_| fail(EXIT_NOT_FOUND, format!("bad command name {cmd:?}")))?;
        // SAFETY: valid C string.
        if unsafe { libc::access(cs.as_ptr(), libc::X_OK) } == 0 && !c.is_dir() {
            return Ok(cs);
        }
        // Exists but not executable, or not even visible to us (EACCES on a parent:
        // e.g. a rootless FUSE rootfs that only the container's root may enter).
        let visible = match std::fs::metadata(c) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        };
        if visible {
            denied.get_or_insert_with(|| c.clone());
        }
    }
    match denied {
        Some(d) => Err(fail(
            EXIT_CANNOT_EXEC,
            format!(
                "cannot execute {} in the container: permission denied",
                d.display()
            ),
        )),
        None => Err(fail(
            EXIT_NOT_FOUND,
            format!("command not found in the container: {cmd}"),
        )),
    }
}

/// execve(2); returns only on failure, with its error.
pub fn execve(exe: &CString, args: &[CString], env: &[CString]) -> std::io::Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    std::io::Error::last_os_error()
}

fn exec(exe: &CString, plan: &ChildPlan) -> Failure {
    let e = execve(exe, &plan.argv, &plan.env);
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_EXEC,
    };
    (
        code,
        format!("cannot execute {}: {e}", exe.to_string_lossy()),
    )
}

/// Reports a failure to the monitor and exits.
pub fn die(err: &OwnedFd, f: Failure) -> ! {
    let line = format!("{}\t{}\n", f.0, f.1.replace('\n', " "));
    let mut file = std::mem::ManuallyDrop::new(unsafe_file(err));
    let _ = file.write_all(line.as_bytes());
    // SAFETY: leaving without destructors, as a forked child must.
    unsafe { libc::_exit(f.0) }
}

fn unsafe_file(fd: &OwnedFd) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: wrapped in ManuallyDrop by the caller, so the fd is not closed twice.
    unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) }
}

/// The child's entry point, right after the clone; never returns.
///
/// `go`: the monitor writes one byte once the id maps are written and we are in the
/// cgroup (EOF instead: the monitor is gone or failed, so we leave quietly). `err`: the
/// error pipe (close-on-exec), see [`die`].
pub fn child_main(spec: &Spec, plan: &ChildPlan, go: OwnedFd, err: OwnedFd) -> ! {
    // If the runner dies, so does the container (its pid namespace with it): a container
    // is never left running without a monitor that will clean up after it.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a local buffer.
    let n = unsafe { libc::read(go.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
    drop(go);
    if n != 1 {
        // SAFETY: leaving without destructors.
        unsafe { libc::_exit(EXIT_RUNNER) };
    }
    let sys = crate::sys::Linux;
    if let Err(f) = setup(spec, plan, &sys) {
        die(&err, f);
    }
    if !spec.init {
        let f = finalize(spec, plan, &sys);
        die(&err, f);
    }
    // SAFETY: single-threaded; the child only runs `finalize` and exits.
    match unsafe { libc::fork() } {
        0 => {
            let f = finalize(spec, plan, &sys);
            die(&err, f)
        }
        -1 => die(
            &err,
            fail(
                EXIT_RUNNER,
                format!("fork the payload: {}", std::io::Error::last_os_error()),
            ),
        ),
        pid => {
            // Init keeps no copy of the error pipe: EOF on it then means "exec done".
            drop(err);
            crate::init::shed_privileges(&spec.caps);
            crate::init::run(pid)
        }
    }
}

/// Parses a failure line sent by [`die`].
pub fn parse_failure(text: &str) -> Option<Failure> {
    let line = text.lines().next()?;
    let (code, msg) = line.split_once('\t')?;
    Some((code.parse().ok()?, msg.to_string()))
}

#[cfg(test)]
mod tests;

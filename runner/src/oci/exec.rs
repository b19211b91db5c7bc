//! `exec`: a new process in a running container's namespaces and cgroup.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use super::args::ExecArgs;
use super::bundle::{Bundle, ProcessPlan};
use super::init;
use super::lifecycle::{connect, leaves, pipe, write_pid_file};
use super::store::{Saved, Status, Store};
use super::OciError;

/// The namespaces of a running process, in the order `exec` joins them.
const EXEC_NAMESPACES: [(&str, i32); 5] = [
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

fn same_ns(pid: i32, name: &str) -> bool {
    let a = std::fs::metadata(format!("/proc/self/ns/{name}"));
    let b = std::fs::metadata(format!("/proc/{pid}/ns/{name}"));
    use std::os::unix::fs::MetadataExt;
    matches!((a, b), (Ok(a), Ok(b)) if a.ino() == b.ino())
}

/// The process `exec` runs: process.json, or the config's process with the command line.
fn exec_process(saved: &Saved, a: &ExecArgs) -> Result<ProcessPlan, OciError> {
    if let Some(p) = &a.process {
        let text = std::fs::read_to_string(p)
            .map_err(|e| OciError::Config(format!("cannot read {}: {e}", p.display())))?;
        let proc: oci_spec::runtime::Process = serde_json::from_str(&text).map_err(|e| {
            OciError::Config(format!("{} is not a valid OCI process: {e}", p.display()))
        })?;
        let mut plan = ProcessPlan::from_oci(&proc)?;
        // The container's seccomp profile holds for every process in it.
        plan.seccomp = Bundle::load(&saved.bundle)?.process.seccomp;
        return Ok(plan);
    }
    if a.command.is_empty() {
        return Err(OciError::Usage(
            "exec needs a command, or --process FILE".into(),
        ));
    }
    let bundle = Bundle::load(&saved.bundle)?;
    let mut proc = bundle
        .spec
        .process()
        .clone()
        .ok_or_else(|| OciError::Config("the container's config has no process".into()))?;
    proc.set_args(Some(a.command.clone()));
    proc.set_terminal(Some(a.tty));
    let mut env = proc.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    proc.set_env(Some(env));
    if let Some(c) = &a.cwd {
        proc.set_cwd(c.clone());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u.parse().ok(), g.parse().ok()),
            None => (u.parse().ok(), Some(0)),
        };
        let (Some(uid), Some(gid)) = (uid, gid) else {
            return Err(OciError::Usage(format!(
                "bad --user {u:?}: expected UID[:GID]"
            )));
        };
        proc.user_mut().set_uid(uid);
        proc.user_mut().set_gid(gid);
    }
    if !a.additional_gids.is_empty() {
        proc.user_mut()
            .set_additional_gids(Some(a.additional_gids.clone()));
    }
    if a.no_new_privs {
        proc.set_no_new_privileges(Some(true));
    }
    let mut plan = ProcessPlan::from_oci(&proc)?;
    plan.seccomp = bundle.process.seccomp.clone();
    for c in &a.cap {
        let cap: caps::Capability = c
            .parse()
            .map_err(|_| OciError::Usage(format!("unknown capability {c:?}")))?;
        for set in [
            &mut plan.caps.bounding,
            &mut plan.caps.effective,
            &mut plan.caps.permitted,
        ] {
            set.insert(cap);
        }
    }
    Ok(plan)
}

/// `exec`: a new process in a running container. Returns its exit code (0 with
/// --detach, once it has exec'd).
pub fn exec(store: &Store, a: &ExecArgs) -> Result<i32, OciError> {
    let saved = store.load(&a.id)?;
    if store.status(&saved) != Status::Running {
        return Err(OciError::Usage(format!(
            "cannot exec in container {}: it is {}",
            a.id,
            store.status(&saved).as_str()
        )));
    }
    let init_pid = saved.init.map(|p| p.pid).unwrap_or(0);
    let mut plan = exec_process(&saved, a)?;
    plan.terminal |= a.tty;
    if plan.terminal && a.console_socket.is_none() && a.detach {
        return Err(OciError::Usage(
            "a terminal with --detach needs --console-socket".into(),
        ));
    }
    let console = match &a.console_socket {
        Some(s) if plan.terminal => Some(connect(s)?),
        _ => None,
    };
    // Namespace fds opened before any setns (the /proc paths are ours).
    let mut ns_fds = Vec::new();
    for (name, flag) in EXEC_NAMESPACES {
        if !same_ns(init_pid, name) {
            let f = std::fs::File::open(format!("/proc/{init_pid}/ns/{name}"))
                .map_err(|e| OciError::io(format!("open the container's {name} namespace"), e))?;
            ns_fds.push((f, flag));
        }
    }
    // The user namespace first, here: it gives us the capabilities the other joins need
    // (an unprivileged owner of the container has none of its own). Then the pid
    // namespace, also here: it applies to the children we fork.
    join_here(init_pid, "user", libc::CLONE_NEWUSER)?;
    join_here(init_pid, "pid", libc::CLONE_NEWPID)?;
    let (err_rd, err_wr) = pipe()?;
    // SAFETY: single-threaded; the child only makes plain syscalls and execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(OciError::io("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(err_rd);
        let f = exec_child(&saved, &plan, &ns_fds, console.as_ref(), a.preserve_fds);
        let line = format!("{}\t{}\n", f.0, f.1.replace('\n', " "));
        // SAFETY: writing to our pipe, then leaving without destructors.
        unsafe {
            libc::write(err_wr.as_raw_fd(), line.as_ptr().cast(), line.len());
            libc::_exit(f.0)
        }
    }
    drop(err_wr);
    drop(console);
    let mut msg = String::new();
    let _ = std::fs::File::from(err_rd).read_to_string(&mut msg);
    if let Some((_, m)) = msg.split_once('\t') {
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(OciError::Container(m.trim_end().to_string()));
    }
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid)?;
    }
    if a.detach {
        return Ok(0);
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    Ok(crate::init::exit_code(st))
}

/// Joins the container's namespace `name` in this process, unless we are in it already.
fn join_here(init_pid: i32, name: &str, flag: i32) -> Result<(), OciError> {
    if same_ns(init_pid, name) {
        return Ok(());
    }
    let f = std::fs::File::open(format!("/proc/{init_pid}/ns/{name}"))
        .map_err(|e| OciError::io(format!("open the container's {name} namespace"), e))?;
    // SAFETY: plain setns on an fd we own; we are single-threaded.
    if unsafe { libc::setns(f.as_raw_fd(), flag) } != 0 {
        return Err(OciError::io(
            format!("join the container's {name} namespace"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn exec_child(
    saved: &Saved,
    plan: &ProcessPlan,
    ns: &[(std::fs::File, i32)],
    console: Option<&OwnedFd>,
    preserve: u32,
) -> crate::container::Failure {
    let fail = |m: String| (crate::error::EXIT_RUNNER, m);
    for leaf in leaves(&saved.cgroups) {
        if leaf.join("cgroup.procs").exists() {
            if let Err(e) = std::fs::write(leaf.join("cgroup.procs"), "0") {
                return fail(format!(
                    "join the container's cgroup {}: {e}",
                    leaf.display()
                ));
            }
        }
    }
    for (f, flag) in ns {
        // SAFETY: plain setns on an fd we own.
        if unsafe { libc::setns(f.as_raw_fd(), *flag) } != 0 {
            return fail(format!(
                "join a namespace of the container: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Err(e) = std::env::set_current_dir(&plan.cwd) {
        return fail(format!("chdir {}: {e}", plan.cwd.display()));
    }
    if let Some(c) = console {
        if let Err(f) = init_console(c) {
            return f;
        }
    }
    if let Err(f) = init::limits(plan) {
        return f;
    }
    init::become_process(plan, &crate::sys::Linux, preserve)
}

fn init_console(c: &OwnedFd) -> Result<(), crate::container::Failure> {
    init::console(c)
}

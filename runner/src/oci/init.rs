//! The container's process between clone and exec, for `create` (runc's `runc init`):
//! namespaces joined, filesystem built, pty handed over, then it reports "ready" and
//! waits on the exec fifo until `start`, and only then drops privileges and execs.
//!
//! Single-threaded, after clone: no `unwrap()`, every failure is one line. Before
//! "ready" it goes to `create` through the sync pipe; after it, `create` is gone, so it
//! goes to the process's stderr (the container's log for conmon).

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use caps::CapSet;
use nix::sched::CloneFlags;

use super::bundle::{Bundle, ProcessPlan};
use crate::container::{resolve, Failure};
use crate::error::{EXIT_CANNOT_EXEC, EXIT_RUNNER};
use crate::rootfs::{MountOp, MountPlan};
use crate::sys::Syscall;

/// The fds the child inherits from `create`.
pub struct ChildFds {
    /// `create` writes one byte once the child is in its cgroup.
    pub go: OwnedFd,
    /// Lines to `create`: "ready" or "CODE\tmessage".
    pub sync: OwnedFd,
    /// The exec fifo, opened read-write (so opening it never blocks).
    pub fifo: OwnedFd,
    /// The connected console socket (process.terminal).
    pub console: Option<OwnedFd>,
    /// fds 3.. to keep (--preserve-fds).
    pub preserve: u32,
}

fn fail(code: i32, e: impl std::fmt::Display) -> Failure {
    (code, e.to_string())
}

fn errno_fail(what: &str) -> Failure {
    fail(
        EXIT_RUNNER,
        format!("{what}: {}", std::io::Error::last_os_error()),
    )
}

/// The plan of mounts in two parts around the createContainer hooks: the rootfs bound
/// onto itself and the config's mounts; then pivot_root (and the read-only `/`).
pub fn mount_plan(b: &Bundle) -> (MountPlan, MountPlan) {
    let mut ops = vec![MountOp::RSlaveAll, MountOp::BindRootfs];
    ops.extend(b.mounts.iter().cloned());
    let mut pivot = vec![MountOp::PivotRoot];
    if b.readonly {
        pivot.push(MountOp::RootReadOnly);
    }
    (MountPlan { ops }, MountPlan { ops: pivot })
}

/// The container's own hooks (createContainer: before pivot_root, host paths;
/// startContainer: after start, before exec, container paths).
fn container_hooks(b: &Bundle, start: bool, state: &str) -> Result<(), Failure> {
    let Some(h) = b.spec.hooks() else {
        return Ok(());
    };
    let list = if start {
        h.start_container()
    } else {
        h.create_container()
    };
    for hook in list.iter().flatten() {
        super::hooks::run_hook(hook, state).map_err(|e| {
            let which = if start {
                "startContainer"
            } else {
                "createContainer"
            };
            fail(
                EXIT_RUNNER,
                format!("{which} hook {}: {e}", hook.path().display()),
            )
        })?;
    }
    Ok(())
}

/// Joins the namespaces the config names by path (before anything else, so the mounts
/// and the hostname land in them).
fn join_namespaces(b: &Bundle) -> Result<(), Failure> {
    for ns in &b.namespaces {
        let Some(p) = &ns.path else { continue };
        if ns.flag == CloneFlags::CLONE_NEWPID {
            // Joined by `create` before the clone: we were born in it.
            continue;
        }
        let f = std::fs::File::open(p)
            .map_err(|e| fail(EXIT_RUNNER, format!("open namespace {}: {e}", p.display())))?;
        // SAFETY: plain setns on an fd we own.
        if unsafe { libc::setns(f.as_raw_fd(), ns.flag.bits()) } != 0 {
            return Err(errno_fail(&format!("join namespace {}", p.display())));
        }
    }
    Ok(())
}

/// Writes the sysctls (namespaced ones only: the bundle refused the others).
fn sysctls(b: &Bundle) -> Result<(), Failure> {
    for (k, v) in &b.sysctl {
        let p = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&p, v).map_err(|e| fail(EXIT_RUNNER, format!("sysctl {k}={v}: {e}")))?;
    }
    Ok(())
}

/// A pty from the container's devpts: the slave becomes stdio and the controlling
/// terminal, the master goes to the console socket (conmon's protocol: one message with
/// the fd in SCM_RIGHTS).
pub fn console(sock: &OwnedFd) -> Result<(), Failure> {
    // SAFETY: plain pty calls; every fd is checked.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            return Err(errno_fail("open /dev/ptmx"));
        }
        if libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
            return Err(errno_fail("unlock the pty"));
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(master, name.as_mut_ptr(), name.len()) != 0 {
            return Err(errno_fail("ptsname"));
        }
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if slave < 0 {
            return Err(errno_fail("open the pty slave"));
        }
        send_fd(sock.as_raw_fd(), master)?;
        libc::close(master);
        if libc::setsid() < 0 {
            return Err(errno_fail("setsid"));
        }
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(errno_fail("make the pty the controlling terminal"));
        }
        for fd in 0..3 {
            if libc::dup2(slave, fd) < 0 {
                return Err(errno_fail("dup2 the pty"));
            }
        }
        if slave > 2 {
            libc::close(slave);
        }
    }
    Ok(())
}

/// Sends `fd` over a unix socket with SCM_RIGHTS.
pub fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), Failure> {
    let mut data = *b"/dev/ptmx";
    // SAFETY: a msghdr over local buffers sized with CMSG_SPACE.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut buf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(errno_fail("send the pty to the console socket"));
        }
    }
    Ok(())
}

/// rlimits and oom_score_adj: while we are still root in the container.
pub fn limits(p: &ProcessPlan) -> Result<(), Failure> {
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| fail(EXIT_RUNNER, format!("oom_score_adj {adj}: {e}")))?;
    }
    for r in &p.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: plain setrlimit with a local struct.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            return Err(errno_fail(&format!(
                "setrlimit {} to {}/{} (above this host's hard limit?)",
                r.resource, r.soft, r.hard
            )));
        }
    }
    Ok(())
}

/// The user switch and capability sets, then exec. Returns only on failure.
pub fn become_process(p: &ProcessPlan, sys: &dyn Syscall, keep_fds: u32) -> Failure {
    become_process_then(p, sys, keep_fds, &|| Ok(()))
}

/// [`become_process`], running `last` once the process has its ids and capabilities.
fn become_process_then(
    p: &ProcessPlan,
    sys: &dyn Syscall,
    keep_fds: u32,
    last: &dyn Fn() -> Result<(), Failure>,
) -> Failure {
    match become_inner(p, sys, keep_fds, last) {
        Ok(f) | Err(f) => f,
    }
}

fn become_inner(
    p: &ProcessPlan,
    sys: &dyn Syscall,
    keep_fds: u32,
    last: &dyn Fn() -> Result<(), Failure>,
) -> Result<Failure, Failure> {
    // Without no_new_privs the filter needs CAP_SYS_ADMIN to go in: before the
    // capabilities go (runc's order; the profile must then allow what follows).
    if !p.no_new_privs {
        super::seccomp::install(&p.seccomp).map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    // The bounding set first: it needs CAP_SETPCAP.
    sys.drop_bounding(&p.caps.bounding)
        .map_err(|e| fail(EXIT_RUNNER, e))?;
    // SAFETY: plain credential calls; each result is checked.
    unsafe {
        // Keep the permitted set across setuid, then set every set as asked.
        libc::prctl(libc::PR_SET_KEEPCAPS, 1);
        let gids: Vec<libc::gid_t> = p.additional_gids.clone();
        // Denied (an unprivileged user namespace): there are no groups to drop either.
        let denied = gids.is_empty() && super::userns::setgroups_denied();
        if !denied && libc::setgroups(gids.len(), gids.as_ptr()) != 0 {
            return Err(errno_fail("setgroups"));
        }
        if libc::setresgid(p.gid, p.gid, p.gid) != 0 {
            return Err(errno_fail(&format!("setgid {}", p.gid)));
        }
        if libc::setresuid(p.uid, p.uid, p.uid) != 0 {
            return Err(errno_fail(&format!("setuid {}", p.uid)));
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0);
        if let Some(m) = p.umask {
            libc::umask(m as libc::mode_t);
        }
    }
    let c = &p.caps;
    for (set, caps) in [
        (CapSet::Effective, &c.permitted),
        (CapSet::Permitted, &c.permitted),
        (CapSet::Inheritable, &c.inheritable),
        (CapSet::Effective, &c.effective),
    ] {
        caps::set(None, set, caps)
            .map_err(|e| fail(EXIT_RUNNER, format!("set {set:?} capabilities: {e}")))?;
    }
    caps::clear(None, CapSet::Ambient).ok();
    for cap in &c.ambient {
        caps::raise(None, CapSet::Ambient, *cap)
            .map_err(|e| fail(EXIT_RUNNER, format!("raise ambient {cap}: {e}")))?;
    }
    if p.no_new_privs {
        sys.no_new_privs().map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    last()?;
    let cmd = p.args[0].to_string_lossy().into_owned();
    // runc's words: engines (podman) map them to exit codes 127 and 126.
    let exe = resolve(&cmd, &p.path).map_err(|(code, msg)| match code {
        crate::error::EXIT_NOT_FOUND => (
            code,
            format!("exec: {cmd:?}: executable file not found in $PATH"),
        ),
        _ => (code, format!("exec: {cmd:?}: permission denied ({msg})")),
    })?;
    sys.cloexec_from(3 + keep_fds)
        .map_err(|e| fail(EXIT_RUNNER, e))?;
    crate::container::restore_signals();
    // With no_new_privs: last, so only the exec itself runs under the filter.
    if p.no_new_privs {
        super::seccomp::install(&p.seccomp).map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    Ok(exec(&exe, p))
}

fn exec(exe: &CString, p: &ProcessPlan) -> Failure {
    let e = crate::container::execve(exe, &p.args, &p.env);
    (
        EXIT_CANNOT_EXEC,
        format!("cannot execute {}: {e}", exe.to_string_lossy()),
    )
}

fn write_line(fd: &OwnedFd, line: &str) {
    // SAFETY: the fd stays owned by the caller; ManuallyDrop keeps it open.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
    let _ = f.write_all(line.as_bytes());
}

/// The steps up to "ready".
fn prepare(b: &Bundle, fds: &ChildFds, sys: &dyn Syscall, state: &str) -> Result<(), Failure> {
    if b.userns.is_some() {
        super::userns::become_root().map_err(|e| fail(EXIT_RUNNER, e))?;
        // The credential change cleared the death signal and made us non-dumpable (our
        // /proc files then belong to the host's root: oom_score_adj could not be
        // written). Set both again, and leave if `create` died meanwhile.
        // SAFETY: plain prctl and getppid.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            libc::prctl(libc::PR_SET_DUMPABLE, 1);
            // `create` reads the sync pipe until "ready": a closed reader means it is gone.
            let mut p = libc::pollfd {
                fd: fds.sync.as_raw_fd(),
                events: 0,
                revents: 0,
            };
            if libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLERR != 0 {
                libc::_exit(EXIT_RUNNER);
            }
        }
    }
    join_namespaces(b)?;
    // In the cgroup already (create moved us): a cgroup namespace made now is rooted there.
    if b.has_new(CloneFlags::CLONE_NEWCGROUP) {
        sys.unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    if b.has_new(CloneFlags::CLONE_NEWNET) {
        sys.loopback_up().map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    sysctls(b)?;
    let (mounts, pivot) = mount_plan(b);
    let run = |plan: &MountPlan| {
        plan.execute(&b.rootfs, sys)
            .map_err(|e| fail(EXIT_RUNNER, crate::error::one_line(&e)))
    };
    run(&mounts)?;
    container_hooks(b, false, state)?;
    run(&pivot)?;
    if let Some(h) = &b.hostname {
        sys.sethostname(h).map_err(|e| fail(EXIT_RUNNER, e))?;
    }
    if let Some(c) = &fds.console {
        console(c)?;
    }
    sys.chdir(&b.process.cwd)
        .map_err(|e| fail(EXIT_RUNNER, e))?;
    limits(&b.process)
}

/// The child's entry point; never returns.
pub fn child_main(b: &Bundle, fds: ChildFds) -> ! {
    // Until "ready", a dead `create` takes us with it.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let mut byte = [0u8; 1];
    // "g" and the state for our hooks, up to EOF (EOF alone: create is gone or failed).
    let mut go = Vec::new();
    // SAFETY: the fd stays owned by `fds`; ManuallyDrop keeps it from being closed twice.
    let mut f =
        std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fds.go.as_raw_fd()) });
    if std::io::Read::read_to_end(&mut *f, &mut go).is_err() || go.first() != Some(&b'g') {
        // SAFETY: leaving a forked child without destructors.
        unsafe { libc::_exit(EXIT_RUNNER) };
    }
    let state = String::from_utf8_lossy(&go[1..]).into_owned();
    let sys = crate::sys::Linux;
    if let Err((code, msg)) = prepare(b, &fds, &sys, &state) {
        write_line(&fds.sync, &format!("{code}\t{}\n", msg.replace('\n', " ")));
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: plain prctl: from now on we outlive `create` (conmon is our reaper).
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    write_line(&fds.sync, "ready\n");
    drop(fds.sync);
    drop(fds.console);
    // `start` writes one byte; EOF cannot happen while we hold the write side too.
    // SAFETY: one byte into a local buffer.
    let n = unsafe { libc::read(fds.fifo.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    drop(fds.fifo);
    if n != 1 {
        // SAFETY: as above.
        unsafe { libc::_exit(EXIT_RUNNER) };
    }
    // startContainer hooks run as the process will (its user, capabilities and, without
    // no_new_privs, its seccomp filter), right before exec: runc's order.
    let hooks = || container_hooks(b, true, &state);
    let (code, msg) = become_process_then(&b.process, &sys, fds.preserve, &hooks);
    eprintln!("unionrun: {msg}");
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

//! The monitor: the runner's side of a run, in order (DESIGN.md 5), and the cleanup that
//! always follows it.
//!
//! 1. Block the forwarded signals and SIGCHLD first and read them from a signalfd, so a
//!    Ctrl-C at any moment ends in the cleanup below instead of killing us half-way.
//! 2. State record, then the upper/work directories (temporary unless `--upper`).
//! 3. The rootfs source: our union daemon, started and awaited outside the container (or
//!    kernel overlayfs, mounted later by the child in its own mount namespace).
//! 4. The cgroup, recorded before it is created, limits written.
//! 5. Everything the child needs is computed here (mount plan, seccomp programs, argv,
//!    environment), then one clone creates the namespaces.
//! 6. The id maps are written and the child is put into the cgroup *before* it may go on:
//!    so it joins the cgroup before it execs anything.
//! 7. Wait: forward signals to the container's PID 1, read setup errors from the error
//!    pipe, reap the child, turn its status into our exit code (128+N for signal N).
//! 8. [`Run`]'s cleanup (also its `Drop`): kill what is left in the cgroup, stop the
//!    daemon (which unmounts), remove the cgroup, the temporary directories and the state
//!    directory. Each step is tried even if an earlier one failed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroups::{self, Cgroups, OwnCgroups};
use crate::container::{self, ChildPlan};
use crate::error::{RunError, EXIT_RUNNER};
use crate::fsd::{self, Daemon, UnionConfig};
use crate::init;
use crate::namespaces::{self, idmap, Forked};
use crate::rootfs::{self, MountPlan, PlanContext, RootSource};
use crate::security::seccomp;
use crate::spec::{CgroupPolicy, FsKind, SeccompMode, Spec, UserNs};
use crate::state::{self, ProcId, Record, StateDir};

/// How long the union may take to mount.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints a warning on stderr (always: limits and cleanup problems are never silent).
fn warn(msg: impl std::fmt::Display) {
    eprintln!("unionrun: warning: {msg}");
}

/// An error with its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error::one_line(e)
}

/// Blocks the forwarded signals and SIGCHLD; returns a signalfd for them.
fn block_signals() -> Result<OwnedFd, RunError> {
    let set = init::wait_set();
    // SAFETY: valid signal set; single-threaded.
    unsafe {
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(RunError::last_os("block signals"));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(RunError::last_os("signalfd"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(RunError::last_os("pipe"));
    }
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything a run created; cleaned up by [`Run::cleanup`] or on drop.
struct Run<'a> {
    spec: &'a Spec,
    state: Option<StateDir>,
    record: Record,
    daemon: Option<Daemon>,
    cgroup: Option<Box<dyn Cgroups>>,
    kept_upper: Option<PathBuf>,
}

impl Run<'_> {
    fn save(&self) -> Result<(), RunError> {
        if let Some(s) = &self.state {
            s.save(&self.record)?;
        }
        Ok(())
    }

    /// Upper and work directories. Temporary ones live in `$TMPDIR/unionrun-ID/`; for a
    /// given `--upper`, the work dir must share its filesystem, so it goes into the state
    /// directory when that does, else next to the upper directory.
    fn prepare_dirs(&mut self, state: &Path) -> Result<(PathBuf, PathBuf), RunError> {
        let io = |op: &str, p: &Path| {
            let op = format!("{op} {}", p.display());
            move |source| RunError::Sys { op, source }
        };
        match &self.spec.upper {
            None => {
                let tmp = std::env::temp_dir().join(format!("unionrun-{}", self.spec.id));
                self.record.temp_dirs.push(tmp.clone());
                self.save()?;
                std::fs::create_dir(&tmp).map_err(io("create", &tmp))?;
                let (upper, work) = (tmp.join("upper"), tmp.join("work"));
                for d in [&upper, &work] {
                    std::fs::create_dir(d).map_err(io("create", d))?;
                }
                // The union's root takes the upper root's attributes: match the rootfs.
                if let Ok(m) = std::fs::metadata(&self.spec.lowers[0]) {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::Permissions::from_mode(m.mode() & 0o7777);
                    let _ = std::fs::set_permissions(&upper, mode);
                }
                if self.spec.keep {
                    self.record.temp_dirs = vec![work.clone()];
                    self.kept_upper = Some(upper.clone());
                    self.save()?;
                }
                Ok((upper, work))
            }
            Some(u) => {
                let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
                let work = if dev(u) == dev(state) {
                    state.join("work")
                } else {
                    let parent = u.parent().unwrap_or(Path::new("/"));
                    let name = u.file_name().map(|n| n.to_string_lossy().into_owned());
                    parent.join(format!(
                        ".{}.unionrun-work-{}",
                        name.unwrap_or_default(),
                        self.spec.id
                    ))
                };
                self.record.temp_dirs.push(work.clone());
                self.save()?;
                std::fs::create_dir(&work).map_err(io("create", &work))?;
                Ok((u.clone(), work))
            }
        }
    }

    /// The rootfs source: starts the daemon (fuse), or prepares overlay options.
    fn rootfs(&mut self, upper: &Path, work: &Path, mnt: &Path) -> Result<RootSource, RunError> {
        let spec = self.spec;
        let userns = spec.userns == UserNs::On;
        let data = rootfs::overlay_data(&spec.lowers, upper, work, userns);
        let use_overlay = match spec.fs {
            FsKind::Fuse => false,
            FsKind::Overlay => true,
            FsKind::Auto => rootfs::overlay_works(&data, mnt, userns),
        };
        if use_overlay {
            tracing::info!("rootfs: kernel overlayfs ({data})");
            if spec.verbose > 0 && spec.fs == FsKind::Auto {
                eprintln!("unionrun: --fs auto: kernel overlayfs mounts here, using it");
            }
            return Ok(RootSource::Overlay(data));
        }
        if spec.verbose > 0 && spec.fs == FsKind::Auto {
            eprintln!("unionrun: --fs auto: kernel overlayfs does not mount here, using unionfs");
        }
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let cfg = UnionConfig {
            lowers: spec.lowers.clone(),
            upper: upper.to_path_buf(),
            work: work.to_path_buf(),
            mnt: mnt.to_path_buf(),
            // Root: other container uids (--user) must reach the rootfs too.
            allow_other: root || fsd::user_allow_other(),
            fsname: format!("unionrun-{}", spec.id),
            verbose: spec.verbose >= 2,
        };
        let bin = fsd::find_binary()?;
        self.record.mountpoint = Some(mnt.to_path_buf());
        let d = Daemon::start(&bin, &cfg, MOUNT_TIMEOUT)?;
        tracing::info!("rootfs: unionfs (pid {}) on {}", d.pid(), mnt.display());
        self.record.daemon = ProcId::of(d.pid() as i32);
        self.daemon = Some(d);
        self.save()?;
        Ok(RootSource::Union)
    }

    /// The cgroup, under the `--cgroups` policy.
    fn cgroup(&mut self) -> Result<(), RunError> {
        let spec = self.spec;
        let root = Path::new("/sys/fs/cgroup");
        let attempt = cgroups::for_root(root, &OwnCgroups::current(), &spec.id).inspect(|cg| {
            // Recorded before anything is created: a SIGKILL right after mkdir is swept.
            self.record.cgroups = cg.dirs();
        });
        let res = attempt.and_then(|mut cg| {
            let _ = self.save();
            match cg.create().and_then(|_| cg.apply(&spec.limits)) {
                Ok(()) => Ok(cg),
                Err(e) => {
                    let _ = cg.remove();
                    Err(e)
                }
            }
        });
        match res {
            Ok(cg) => {
                tracing::info!("cgroup {}: {:?}", cg.version(), cg.dirs().first());
                self.cgroup = Some(cg);
                Ok(())
            }
            Err(e) if !spec.limits.any() => {
                warn(format!("running without a cgroup: {}", chain(&e)));
                Ok(())
            }
            Err(e) if e.is_unavailable() && spec.cgroups == CgroupPolicy::Warn => {
                warn(format!(
                    "limits NOT applied (--cgroups warn): {}",
                    chain(&e)
                ));
                Ok(())
            }
            Err(e) if e.is_unavailable() => Err(RunError::Sys {
                op: "the limits cannot be applied (use --cgroups warn to run without them)".into(),
                source: std::io::Error::other(chain(&e)),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Undoes everything, in order; every step is tried.
    fn cleanup(&mut self) {
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.kill_all() {
                warn(e);
            }
        }
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        if let Some(mut cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                warn(e);
            }
        }
        for t in std::mem::take(&mut self.record.temp_dirs) {
            if let Err(e) = state::remove_tree(&t) {
                warn(format!("cannot remove {}: {e}", t.display()));
            }
        }
        if let Some(u) = self.kept_upper.take() {
            eprintln!("unionrun: kept the upper directory at {}", u.display());
        }
        if let Some(s) = self.state.take() {
            s.remove();
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn cstrings<I: IntoIterator<Item = String>>(v: I) -> Result<Vec<CString>, RunError> {
    v.into_iter()
        .map(|s| {
            CString::new(s).map_err(|_| RunError::Sys {
                op: "an argument or variable contains a NUL byte".into(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })
        })
        .collect()
}

/// Builds what the child needs (all fallible work happens here, before the clone).
fn child_plan(
    spec: &Spec,
    root: &Path,
    source: RootSource,
    maps: Option<&idmap::IdMaps>,
) -> Result<ChildPlan, RunError> {
    let userns = spec.userns == UserNs::On;
    let plan = MountPlan::build(spec, &PlanContext { userns, source });
    if spec.verbose >= 2 {
        eprint!("unionrun: mount plan:\n{}", plan.describe());
    }
    let programs = match spec.seccomp {
        SeccompMode::Default => seccomp::default_programs().map_err(|e| RunError::Sys {
            op: "seccomp".into(),
            source: std::io::Error::other(e.to_string()),
        })?,
        SeccompMode::Unconfined => Vec::new(),
    };
    let env = container::environment(spec);
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Ok(ChildPlan {
        root: root.to_path_buf(),
        plan,
        seccomp: programs,
        argv: cstrings(spec.argv.clone())?,
        env: cstrings(env.into_iter().map(|(k, v)| format!("{k}={v}")))?,
        path,
        // Directly written maps of an unprivileged caller come with setgroups denied.
        setgroups: maps.is_none_or(|m| m.helpers || unsafe { libc::getuid() } == 0),
    })
}

/// Runs the container; returns the exit code for `unionrun`.
pub fn run(spec: &Spec) -> Result<i32, RunError> {
    let sigfd = block_signals()?;
    let mut run = Run {
        spec,
        state: None,
        record: Record {
            id: spec.id.clone(),
            runner: ProcId::of(std::process::id() as i32),
            ..Default::default()
        },
        daemon: None,
        cgroup: None,
        kept_upper: None,
    };
    let sd = StateDir::create(&spec.state_root, &spec.id)?;
    let state_path = sd.path().to_path_buf();
    run.state = Some(sd);
    run.save()?;
    let mnt = state_path.join("mnt");
    std::fs::create_dir(&mnt).map_err(|source| RunError::Sys {
        op: format!("create {}", mnt.display()),
        source,
    })?;
    let (upper, work) = run.prepare_dirs(&state_path)?;
    let source = run.rootfs(&upper, &work, &mnt)?;
    run.cgroup()?;
    let maps = (spec.userns == UserNs::On).then(idmap::plan_for_caller);
    let plan = child_plan(spec, &mnt, source, maps.as_ref())?;
    let (go_rd, go_wr) = pipe()?;
    let (err_rd, err_wr) = pipe()?;
    let flags = namespaces::clone_flags(spec);
    // SAFETY: single-threaded (the daemon is a separate process); the child never returns
    // from child_main.
    let pid = match unsafe { namespaces::clone_process(flags) }? {
        Forked::Child => {
            drop(go_wr);
            drop(err_rd);
            container::child_main(spec, &plan, go_rd, err_wr)
        }
        Forked::Parent(pid) => pid,
    };
    drop(go_rd);
    drop(err_wr);
    run.record.container = ProcId::of(pid);
    run.save()?;
    let kill_child = |e: RunError| {
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        e
    };
    if let Some(m) = &maps {
        idmap::write(pid, m).map_err(|e| kill_child(namespaces::NamespaceError::from(e).into()))?;
    }
    if let Some(cg) = &run.cgroup {
        cg.add_task(pid).map_err(|e| kill_child(e.into()))?;
    }
    // SAFETY: one byte from a local buffer to our pipe.
    if unsafe { libc::write(go_wr.as_raw_fd(), b"g".as_ptr().cast(), 1) } != 1 {
        return Err(kill_child(RunError::last_os("start the container")));
    }
    drop(go_wr);
    let (status, failure) = wait(pid, &sigfd, &err_rd);
    run.cleanup();
    if let Some((code, message)) = failure {
        return Err(RunError::Container { code, message });
    }
    Ok(init::exit_code(status))
}

/// The wait loop: forwards signals, collects the error pipe, reaps the child.
fn wait(pid: i32, sigfd: &OwnedFd, err: &OwnedFd) -> (i32, Option<(i32, String)>) {
    let mut status = None;
    let mut err_open = true;
    let mut msg = Vec::new();
    while status.is_none() || err_open {
        let mut fds = vec![libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if err_open {
            fds.push(libc::pollfd {
                fd: err.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: valid pollfd array.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if err_open && fds.get(1).is_some_and(|f| f.revents != 0) {
            let mut buf = [0u8; 512];
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(err.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                err_open = false;
            } else {
                msg.extend_from_slice(&buf[..n as usize]);
            }
        }
        if fds[0].revents != 0 {
            // SAFETY: signalfd_siginfo is plain data; reading one record.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let n = unsafe {
                libc::read(
                    sigfd.as_raw_fd(),
                    (&mut si as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if n <= 0 {
                continue;
            }
            let sig = si.ssi_signo as i32;
            if sig != libc::SIGCHLD {
                if status.is_none() {
                    tracing::info!("forwarding signal {sig} to the container");
                    // SAFETY: signalling our own (unreaped) child.
                    unsafe { libc::kill(pid, sig) };
                }
                continue;
            }
        }
        if status.is_none() {
            let mut st = 0;
            // SAFETY: plain waitpid on our child.
            if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                status = Some(st);
            }
        }
    }
    let failure = container::parse_failure(&String::from_utf8_lossy(&msg));
    (status.unwrap_or(EXIT_RUNNER << 8), failure)
}

/// `unionrun cleanup`: sweeps records whose runner is gone.
pub fn cleanup(root: &Path, names: &[String], verbose: u8) -> Result<i32, RunError> {
    let swept = state::sweep(root, names)?;
    for (id, done) in &swept {
        if verbose > 0 || !done.is_empty() {
            eprintln!("unionrun: cleaned up {id}: {}", done.join(", "));
        }
    }
    for n in names {
        if !swept.iter().any(|(id, _)| id == n) && root.join(n).exists() {
            eprintln!("unionrun: {n} is still running; not touched");
        }
    }
    Ok(0)
}

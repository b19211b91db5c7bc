//! The OCI commands, runc's behaviour the reference: `create` leaves the container's
//! process waiting on the exec fifo and returns; `start` releases it; `state` reads the
//! record and the process; `kill` signals; `delete` removes what `create` made.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::args::{CreateArgs, DeleteArgs, KillArgs, ListArgs, SpecArgs};
use super::bundle::Bundle;
use super::hooks::{run_hooks, Hook};
use super::init::{self, ChildFds};
use super::store::{Saved, Status, Store, FIFO};
use super::OciError;
use crate::cgroups::{self, Cgroups, OwnCgroups};
use crate::namespaces::{clone_process, Forked};
use crate::spec::Limits;
use crate::state::ProcId;

/// The runtime-spec version we implement.
pub const OCI_VERSION: &str = "1.2.0";

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), OciError> {
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(OciError::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Connects to the console socket (a host path, so before the child's pivot_root).
pub(super) fn connect(sock: &Path) -> Result<OwnedFd, OciError> {
    let s = std::os::unix::net::UnixStream::connect(sock).map_err(|e| {
        OciError::io(
            format!("connect to the console socket {}", sock.display()),
            e,
        )
    })?;
    Ok(OwnedFd::from(s))
}

/// Limits from linux.resources (memory, cpu quota/period, pids).
fn limits_of(b: &Bundle) -> Limits {
    let r = b
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let memory = r
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|&l| l > 0)
        .map(|l| l as u64);
    let cpus = r
        .cpu()
        .as_ref()
        .and_then(|c| match (c.quota(), c.period()) {
            (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
            _ => None,
        });
    let pids = r
        .pids()
        .as_ref()
        .map(|p| p.limit())
        .filter(|&l| l > 0)
        .map(|l| l as u64);
    Limits { memory, cpus, pids }
}

/// Where the container's cgroup goes: linux.cgroupsPath (absolute: below the hierarchy
/// roots; relative: below our own cgroup; `slice:prefix:name` with --systemd-cgroup: the
/// cgroupfs path systemd would use, `slice/prefix-name.scope`), else
/// `<own cgroup>/unionrun/<id>` as for `unionrun run`.
pub fn cgroup_path(b: &Bundle, systemd: bool) -> Option<PathBuf> {
    let p = b.spec.linux().as_ref()?.cgroups_path().clone()?;
    let s = p.to_string_lossy().into_owned();
    if s.is_empty() {
        return None;
    }
    if systemd {
        if let [slice, prefix, name] = s.split(':').collect::<Vec<_>>()[..] {
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            let unit = if name.ends_with(".slice") || name.ends_with(".scope") {
                name.to_string()
            } else {
                format!("{prefix}-{name}.scope")
            };
            return Some(Path::new("/").join(slice).join(unit));
        }
    }
    if p.is_absolute() {
        return Some(p);
    }
    let own = OwnCgroups::current();
    let base = own
        .v2
        .clone()
        .or_else(|| own.v1_path("memory").map(str::to_string))
        .unwrap_or_else(|| "/".into());
    Some(Path::new(&base).join(p))
}

/// The container's cgroup with its limits (none at all if no limit is asked for and no
/// cgroup can be made: a warning).
fn make_cgroup(
    id: &str,
    at: Option<&Path>,
    limits: &Limits,
) -> Result<Option<Box<dyn Cgroups>>, OciError> {
    let root = Path::new("/sys/fs/cgroup");
    let planned = match at {
        Some(p) => cgroups::for_path(root, p),
        None => cgroups::for_root(root, &OwnCgroups::current(), id),
    };
    let mut cg = match planned {
        Ok(cg) => cg,
        Err(e) if !limits.any() => {
            tracing::warn!("no cgroup: {e}");
            return Ok(None);
        }
        Err(e) => {
            return Err(OciError::Container(format!(
                "cannot apply linux.resources: {e}"
            )))
        }
    };
    match cg.create().and_then(|_| cg.apply(limits)) {
        Ok(()) => Ok(Some(cg)),
        Err(e) => {
            let _ = cg.remove();
            if limits.any() {
                Err(OciError::Container(format!(
                    "cannot apply linux.resources: {e}"
                )))
            } else {
                tracing::warn!("no cgroup: {e}");
                Ok(None)
            }
        }
    }
}

/// The leaves among recorded cgroup dirs (they share the first one's name).
pub fn leaves(dirs: &[PathBuf]) -> impl Iterator<Item = &PathBuf> {
    let name = dirs.first().and_then(|d| d.file_name());
    dirs.iter().filter(move |d| d.file_name() == name)
}

/// What `create` made so far, undone on failure (nothing half-done stays).
struct Creating<'a> {
    store: &'a Store,
    id: String,
    cgroup: Option<Box<dyn Cgroups>>,
    child: Option<i32>,
    daemon: Option<crate::fsd::Daemon>,
    temp_dirs: Vec<PathBuf>,
    done: bool,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(pid) = self.child {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(mut cg) = self.cgroup.take() {
            let _ = cg.kill_all();
            let _ = cg.remove();
        }
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        for t in &self.temp_dirs {
            let _ = crate::state::remove_tree(t);
        }
        self.store.remove(&self.id);
    }
}

/// Mounts the union rootfs (annotations) at `<state>/rootfs`: the daemon outlives
/// `create` and is stopped by `delete`.
fn mount_union(
    c: &mut Creating<'_>,
    saved: &mut Saved,
    u: &super::bundle::UnionRoot,
    dir: &Path,
) -> Result<PathBuf, OciError> {
    let mkdir = |p: &Path| {
        std::fs::create_dir(p).map_err(|e| OciError::io(format!("create {}", p.display()), e))
    };
    let mnt = dir.join("rootfs");
    mkdir(&mnt)?;
    let (upper, work) = match &u.upper {
        Some(up) => {
            // The work dir shares the upper's filesystem: next to it.
            let parent = up.parent().unwrap_or(Path::new("/"));
            let name = up.file_name().map(|n| n.to_string_lossy().into_owned());
            let work = parent.join(format!(
                ".{}.unionrun-work-{}",
                name.unwrap_or_default(),
                saved.id
            ));
            saved.temp_dirs.push(work.clone());
            c.temp_dirs.push(work.clone());
            (up.clone(), work)
        }
        None => {
            let upper = dir.join("upper");
            mkdir(&upper)?;
            // The union's root takes the upper root's attributes: match the rootfs.
            if let Ok(m) = std::fs::metadata(&u.lowers[0]) {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(
                    &upper,
                    std::fs::Permissions::from_mode(m.permissions().mode() & 0o7777),
                );
            }
            (upper, dir.join("work"))
        }
    };
    mkdir(&work)?;
    saved.mountpoint = Some(mnt.clone());
    c.store.save(saved)?;
    let cfg = crate::fsd::UnionConfig {
        lowers: u.lowers.clone(),
        upper,
        work,
        mnt: mnt.clone(),
        allow_other: true,
        fsname: format!("unionrun-{}", saved.id),
        verbose: false,
    };
    let bin = crate::fsd::find_binary().map_err(|e| OciError::Container(e.to_string()))?;
    let d = crate::fsd::Daemon::start_detached(
        &bin,
        &cfg,
        Duration::from_secs(10),
        &dir.join("unionfs.log"),
    )
    .map_err(|e| OciError::Container(crate::error::one_line(&e)))?;
    saved.daemon = ProcId::of(d.pid() as i32);
    c.daemon = Some(d);
    c.store.save(saved)?;
    Ok(mnt)
}

/// Stops a union rootfs's daemon (it unmounts) and removes what `create` made for it.
fn unmount_union(saved: &Saved) {
    if let Some(d) = saved.daemon {
        d.signal(libc::SIGTERM);
        if !wait_gone(d, Duration::from_secs(5)) {
            if let Some(m) = &saved.mountpoint {
                crate::fsd::lazy_unmount(m);
            }
            d.signal(libc::SIGKILL);
            wait_gone(d, Duration::from_secs(5));
        }
    }
    if let Some(m) = &saved.mountpoint {
        if crate::fsd::is_mounted(m) {
            crate::fsd::lazy_unmount(m);
        }
    }
    for t in &saved.temp_dirs {
        if let Err(e) = crate::state::remove_tree(t) {
            tracing::warn!("cannot remove {}: {e}", t.display());
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// `create`.
pub fn create(store: &Store, a: &CreateArgs, systemd: bool) -> Result<(), OciError> {
    super::store::check_id(&a.id)?;
    let mut bundle = Bundle::load(&a.bundle)?;
    if bundle.process.terminal && a.console_socket.is_none() {
        return Err(OciError::Usage(
            "process.terminal is true: --console-socket is required".into(),
        ));
    }
    if a.no_pivot {
        return Err(OciError::Usage(
            "--no-pivot is not supported (pivot_root is how the old root is detached)".into(),
        ));
    }
    let dir = store.create(&a.id)?;
    let mut c = Creating {
        store,
        id: a.id.clone(),
        cgroup: None,
        child: None,
        daemon: None,
        temp_dirs: Vec::new(),
        done: false,
    };
    let mut saved = Saved {
        id: a.id.clone(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: now_rfc3339(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        hooks: bundle.spec.hooks().clone(),
        // SAFETY: geteuid cannot fail.
        owner: unsafe { libc::geteuid() },
        ..Default::default()
    };
    store.save(&saved)?;
    if let Some(u) = bundle.union.clone() {
        bundle.rootfs = mount_union(&mut c, &mut saved, &u, &dir)?;
        saved.rootfs = bundle.rootfs.clone();
        store.save(&saved)?;
    }
    let fifo = dir.join(FIFO);
    let cpath = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
        .map_err(|_| OciError::Usage("bad state path".into()))?;
    // SAFETY: valid C string.
    if unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) } != 0 {
        return Err(OciError::io(
            format!("mkfifo {}", fifo.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: valid C string; O_RDWR on a fifo never blocks.
    let fifo_fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fifo_fd < 0 {
        return Err(OciError::io(
            "open the exec fifo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fd.
    let fifo_fd = unsafe { OwnedFd::from_raw_fd(fifo_fd) };
    c.cgroup = make_cgroup(
        &a.id,
        cgroup_path(&bundle, systemd).as_deref(),
        &limits_of(&bundle),
    )?;
    saved.cgroups = c.cgroup.as_ref().map(|g| g.dirs()).unwrap_or_default();
    store.save(&saved)?;
    let console = match &a.console_socket {
        Some(s) if bundle.process.terminal => Some(connect(s)?),
        _ => None,
    };
    let (go_rd, go_wr) = pipe()?;
    let (sync_rd, sync_wr) = pipe()?;
    // A pid namespace to join applies to the children we make: entered around the clone.
    let pid_ns = bundle
        .join_path(nix::sched::CloneFlags::CLONE_NEWPID)
        .map(PidNsFor::enter)
        .transpose()?;
    // SAFETY: single-threaded; the child never returns from child_main.
    let cloned = unsafe { clone_process(bundle.clone_flags()) };
    // Only the parent goes back (the child is in the namespace for good).
    if let (Some(ns), Ok(Forked::Parent(_)) | Err(_)) = (pid_ns, &cloned) {
        ns.leave()?;
    }
    let pid = match cloned.map_err(|e| OciError::Container(crate::error::one_line(&e)))? {
        Forked::Child => {
            drop(go_wr);
            drop(sync_rd);
            // Never unwind out of here: the parent's cleanup (Creating's Drop) is below.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                init::child_main(
                    &bundle,
                    ChildFds {
                        go: go_rd,
                        sync: sync_wr,
                        fifo: fifo_fd,
                        console,
                        preserve: a.preserve_fds,
                    },
                )
            }));
            // SAFETY: leaving the forked child without destructors.
            unsafe { libc::_exit(crate::error::EXIT_RUNNER) }
        }
        Forked::Parent(pid) => pid,
    };
    c.child = Some(pid);
    drop((go_rd, sync_wr, fifo_fd, console));
    if let Some(cg) = &c.cgroup {
        cg.add_task(pid)
            .map_err(|e| OciError::Container(e.to_string()))?;
    }
    if let Some(m) = &bundle.userns {
        crate::namespaces::idmap::write(pid, m)
            .map_err(|e| OciError::Container(crate::error::one_line(&e)))?;
    }
    saved.init = ProcId::of(pid);
    store.save(&saved)?;
    run_hooks(&saved, store, Hook::CreateRuntime)?;
    // "g", then the state the container's own hooks get on stdin; EOF ends it.
    let go = format!("g{}", state_json(store, &saved));
    if (&std::fs::File::from(go_wr))
        .write_all(go.as_bytes())
        .is_err()
    {
        return Err(OciError::io(
            "start the container's process",
            std::io::Error::last_os_error(),
        ));
    }
    let mut reply = String::new();
    let _ = std::fs::File::from(sync_rd).read_to_string(&mut reply);
    if reply.trim_end() != "ready" {
        let msg = reply
            .split_once('\t')
            .map(|(_, m)| m.trim_end().to_string())
            .unwrap_or_else(|| "the container's process died during setup".into());
        return Err(OciError::Container(msg));
    }
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid)?;
    }
    c.done = true;
    // The daemon outlives us; delete stops it (its pid is in the record).
    drop(c.daemon.take());
    Ok(())
}

/// Our children's pid namespace switched to another one, and back.
struct PidNsFor {
    own: std::fs::File,
}

impl PidNsFor {
    fn enter(path: &Path) -> Result<PidNsFor, OciError> {
        let own = std::fs::File::open("/proc/self/ns/pid_for_children")
            .map_err(|e| OciError::io("open our pid namespace", e))?;
        let target = std::fs::File::open(path)
            .map_err(|e| OciError::io(format!("open namespace {}", path.display()), e))?;
        setns(&target, libc::CLONE_NEWPID)
            .map_err(|e| OciError::io(format!("join namespace {}", path.display()), e))?;
        Ok(PidNsFor { own })
    }

    fn leave(self) -> Result<(), OciError> {
        setns(&self.own, libc::CLONE_NEWPID)
            .map_err(|e| OciError::io("return to our pid namespace", e))
    }
}

fn setns(f: &std::fs::File, flag: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain setns on an fd we own.
    if unsafe { libc::setns(f.as_raw_fd(), flag) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pid file, written whole or not at all (a temp file renamed over).
pub(super) fn write_pid_file(p: &Path, pid: i32) -> Result<(), OciError> {
    let tmp = p.with_extension("unionrun-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, p))
        .map_err(|e| OciError::io(format!("write the pid file {}", p.display()), e))
}

/// `start`.
pub fn start(store: &Store, id: &str) -> Result<(), OciError> {
    let saved = store.load(id)?;
    match store.status(&saved) {
        Status::Created => {}
        s => {
            return Err(OciError::Usage(format!(
                "cannot start container {id}: it is {} (only a created one can start)",
                s.as_str()
            )))
        }
    }
    let fifo = store.dir(id).join(FIFO);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open(&fifo)
        .map_err(|e| OciError::io("open the exec fifo (is the container's process gone?)", e))?;
    use std::io::Write;
    (&f).write_all(b"0")
        .map_err(|e| OciError::io("write the exec fifo", e))?;
    drop(f);
    let _ = std::fs::remove_file(&fifo);
    run_hooks(&saved, store, Hook::Poststart)
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// The spec's state object.
pub fn state_json(store: &Store, saved: &Saved) -> serde_json::Value {
    let status = store.status(saved);
    let pid = match status {
        Status::Stopped | Status::Creating => 0,
        _ => saved.init.map(|p| p.pid).unwrap_or(0),
    };
    serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": saved.id,
        "pid": pid,
        "status": status.as_str(),
        "bundle": saved.bundle,
        "rootfs": saved.rootfs,
        "created": saved.created,
        "owner": "",
        "annotations": saved.annotations,
    })
}

/// `state`.
pub fn state(store: &Store, id: &str) -> Result<(), OciError> {
    let saved = store.load(id)?;
    let text = serde_json::to_string_pretty(&state_json(store, &saved)).unwrap_or_default();
    println!("{text}");
    Ok(())
}

/// A signal by name (TERM, SIGTERM) or number.
pub fn parse_signal(s: &str) -> Result<i32, OciError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            return Err(OciError::Usage(format!(
                "unknown signal {s:?}: use a name such as TERM or KILL, or a number"
            )))
        }
    };
    Ok(n)
}

/// `kill`.
pub fn kill(store: &Store, a: &KillArgs) -> Result<(), OciError> {
    let saved = store.load(&a.id)?;
    let sig = parse_signal(&a.signal)?;
    let status = store.status(&saved);
    if !matches!(status, Status::Created | Status::Running) {
        return Err(OciError::Usage(format!(
            "cannot kill container {}: it is {}",
            a.id,
            status.as_str()
        )));
    }
    if a.all {
        for leaf in leaves(&saved.cgroups) {
            for p in std::fs::read_to_string(leaf.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                // SAFETY: plain kill of a task in the container's own cgroup.
                unsafe { libc::kill(p, sig) };
            }
        }
    }
    if let Some(p) = saved.init {
        p.signal(sig);
    }
    Ok(())
}

/// Waits until a process we cannot wait(2) for is gone.
fn wait_gone(p: ProcId, timeout: Duration) -> bool {
    let t = Instant::now();
    while p.alive() {
        if t.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `delete`.
pub fn delete(store: &Store, a: &DeleteArgs) -> Result<(), OciError> {
    let saved = match store.load(&a.id) {
        Ok(s) => s,
        Err(OciError::NotFound(_)) if a.force => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = store.status(&saved);
    if status == Status::Running && !a.force {
        return Err(OciError::Usage(format!(
            "cannot delete container {}: it is running (stop it first, or use --force)",
            a.id
        )));
    }
    if let Some(p) = saved.init {
        p.signal(libc::SIGKILL);
        if !wait_gone(p, Duration::from_secs(10)) {
            return Err(OciError::Usage(format!(
                "container {}'s process {} does not die",
                a.id, p.pid
            )));
        }
    }
    cgroups::remove_recorded(&saved.cgroups).map_err(|e| OciError::Container(e.to_string()))?;
    unmount_union(&saved);
    let hooks = run_hooks(&saved, store, Hook::Poststop);
    store.remove(&a.id);
    if let Err(e) = hooks {
        tracing::warn!("{e}");
    }
    Ok(())
}

/// `list`.
pub fn list(store: &Store, a: &ListArgs) -> Result<(), OciError> {
    let all: Vec<Saved> = store
        .ids()
        .iter()
        .filter_map(|i| store.load(i).ok())
        .collect();
    if a.quiet {
        for s in &all {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match a.format.as_str() {
        "json" => {
            let v: Vec<serde_json::Value> = all.iter().map(|s| state_json(store, s)).collect();
            println!("{}", serde_json::Value::Array(v));
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} CREATED",
                "ID", "PID", "STATUS", "BUNDLE"
            );
            for s in &all {
                let j = state_json(store, s);
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {}",
                    s.id,
                    j["pid"],
                    store.status(s).as_str(),
                    s.bundle.display(),
                    s.created
                );
            }
        }
        f => {
            return Err(OciError::Usage(format!(
                "unknown --format {f:?}: use table or json"
            )))
        }
    }
    Ok(())
}

/// `spec`: a default config.json (runc's), refusing to overwrite one.
pub fn spec(a: &SpecArgs) -> Result<(), OciError> {
    let path = a.bundle.join("config.json");
    if path.exists() {
        return Err(OciError::Usage(format!(
            "{} already exists: remove it first",
            path.display()
        )));
    }
    let mut s = if a.rootless {
        // SAFETY: getuid/getgid cannot fail.
        oci_spec::runtime::Spec::rootless(unsafe { libc::getuid() }, unsafe { libc::getgid() })
    } else {
        oci_spec::runtime::Spec::default()
    };
    s.set_hostname(Some("unionrun".into()));
    let text = serde_json::to_string_pretty(&s).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| OciError::io(format!("write {}", path.display()), e))
}

/// `features`: what this runtime implements (runtime-spec features.md).
pub fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "bind", "defaults", "dev", "dirsync", "exec", "mand", "noatime",
            "nodev", "nodiratime", "noexec", "nomand", "nosuid", "private", "rbind", "relatime",
            "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave",
            "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"],
                "operators": ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                    "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"],
                "archs": [if cfg!(target_arch = "aarch64") { "SCMP_ARCH_AARCH64" } else { "SCMP_ARCH_X86_64" }],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.github.unionrun.version": env!("CARGO_PKG_VERSION"),
        },
    })
}

/// The state root the OCI commands use: `--root`, else the runner's default.
pub fn store_root(root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(crate::cli::default_state_root)
}

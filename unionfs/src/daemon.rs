//! Serving a validated [`MountConfig`]: open the branches, build the union, mount, then
//! daemonize, unmount cleanly on SIGTERM/SIGINT/SIGHUP.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use fuser::{Config as FuseConfig, MountOption, SessionACL};

use crate::cli::{CliError, MountConfig};
use crate::core::{Branch, Stack, Union};
use crate::fuse::UnionFs;

fn runtime(msg: impl Into<String>) -> CliError {
    CliError::Runtime(msg.into())
}

/// Checks that need the machine: the mount point is free, /dev/fuse is usable.
pub fn preflight(cfg: &MountConfig) -> Result<(), CliError> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mp = cfg.mountpoint.to_string_lossy();
    if mi.lines().any(|l| l.split(' ').nth(4) == Some(&mp)) {
        return Err(CliError::Usage(format!(
            "mount point {mp} is busy (already a mount point); unmount it first or choose another"
        )));
    }
    let uid = unsafe { libc::geteuid() };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "load the fuse module (modprobe fuse) or, in a container, pass /dev/fuse in"
        } else if uid == 0 {
            "check that the fuse device is allowed here"
        } else {
            "make it usable for this user (chmod 0666 /dev/fuse, as most distributions ship it)"
        };
        return Err(CliError::Usage(format!(
            "cannot open /dev/fuse: {e}; {hint}"
        )));
    }
    Ok(())
}

/// Opens the branches and builds the union (still nothing mounted).
pub fn build_union(cfg: &MountConfig) -> Result<Union, CliError> {
    let mut branches = Vec::new();
    let mut first_rw = true;
    for (path, mode) in &cfg.branches {
        let mut b = Branch::open(path, *mode)
            .map_err(|e| CliError::Usage(format!("branch {}: {e}", path.display())))?;
        if b.is_rw() {
            let wd = if first_rw {
                cfg.workdir.as_deref()
            } else {
                None
            };
            first_rw = false;
            b.attach_work(wd, cfg.format == crate::core::FormatChoice::Meta)
                .map_err(|e| {
                    CliError::Usage(format!(
                        "branch {}: cannot prepare its work directory: {e}",
                        path.display()
                    ))
                })?;
        }
        branches.push(b);
    }
    let stack = Stack::new(branches, cfg.format).map_err(|e| CliError::Usage(e.to_string()))?;
    tracing::info!("whiteout format: {}", stack.format);
    if cfg.verbose > 0 {
        eprintln!("unionfs: whiteout format {}", stack.format);
    }
    Ok(Union::new(stack, cfg.core))
}

fn fuse_config(cfg: &MountConfig) -> FuseConfig {
    let mut c = FuseConfig::default();
    let mut o = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("unionfs".into()),
        MountOption::DefaultPermissions,
    ];
    if unsafe { libc::geteuid() } == 0 {
        // A union can be a container's root: device nodes and set-id programs work.
        o.push(MountOption::Dev);
        o.push(MountOption::Suid);
    }
    if cfg.read_only {
        o.push(MountOption::RO);
    }
    c.mount_options = o;
    c.acl = if cfg.allow_other {
        SessionACL::All
    } else if cfg.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    let cores = crate::core::cpus();
    // The most /dev/fuse loops (fuser starts four, and more as requests wait for one).
    // At least 8: opens waiting for a RELEASE in flight (a snapshot draining
    // passthrough writers) must leave threads to serve that RELEASE.
    c.n_threads = Some((cores * 2).clamp(8, 16));
    c.clone_fd = true;
    c.uring = cfg.uring;
    c.uring_pin = cfg.uring_pin;
    c
}

/// Blocks the stop signals in this thread (and every thread started after).
fn block_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    let _ = set.thread_block();
    set
}

/// The stop signals (blocked in every thread), read from a signalfd: each unmounts.
struct StopSignals {
    fd: nix::sys::signalfd::SignalFd,
    unmount: Arc<dyn Fn() + Send + Sync>,
}

impl StopSignals {
    fn new(
        set: &nix::sys::signal::SigSet,
        unmount: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<StopSignals> {
        let fd = nix::sys::signalfd::SignalFd::with_flags(
            set,
            nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )?;
        Ok(StopSignals { fd, unmount })
    }

    /// Takes a pending stop signal, if any, and unmounts; false when the signalfd
    /// fails (it is not read again).
    fn take(&self) -> bool {
        match self.fd.read_signal() {
            Ok(Some(info)) => {
                let sig = nix::sys::signal::Signal::try_from(info.ssi_signo as i32);
                tracing::info!("{sig:?}: unmounting");
                (self.unmount)();
                true
            }
            Ok(None) | Err(nix::errno::Errno::EINTR) => true,
            Err(_) => false,
        }
    }

    /// Waits for the stop signals (a blocking read), unmounting at each.
    fn wait(&self) {
        while self.take() {}
    }
}

/// Mounts and serves until unmounted. `ready` (daemon mode) hears "ok" once the mount
/// is live, or the error.
pub fn serve(cfg: &MountConfig, union: Union, ready: Option<OwnedFd>) -> Result<(), CliError> {
    let mut ready = ready.map(std::fs::File::from);
    let r = mount(cfg, union).and_then(|live| {
        if let Some(mut f) = ready.take() {
            let _ = f.write_all(b"ok\n");
            detach_stdio();
        }
        live.serve(cfg)
    });
    if let (Err(e), Some(f)) = (&r, ready.as_mut()) {
        let _ = writeln!(f, "{}:{e}", e.exit_code());
    }
    r
}

/// A live mount that nothing serves yet. No thread exists, so it can still be forked.
struct Mounted {
    session: fuser::Session<UnionFs>,
    unmount: Arc<dyn Fn() + Send + Sync>,
    socket: Option<Arc<crate::ctl::server::Server>>,
    control: crate::fuse::Control,
    signals: nix::sys::signal::SigSet,
}

/// Binds the control socket and mounts. With `init_on_run` (all but uring=on) nothing
/// here waits for the kernel's FUSE_INIT: the mount is usable once mount(2) returns (its
/// first access waits for INIT), as with libfuse's daemon mode. With uring=on the
/// handshake happens here, as a refused ring must fail the mount.
fn mount(cfg: &MountConfig, union: Union) -> Result<Mounted, CliError> {
    let signals = block_signals();
    crate::core::prepare_process();
    let fs = UnionFs::new(Arc::new(union), cfg.ttl)
        .map_err(|e| runtime(e.to_string()))?
        .with_passthrough(cfg.passthrough)
        .with_dir_readahead(cfg.dir_readahead);
    let control = fs.control();
    let mut fcfg = fuse_config(cfg);
    fcfg.init_on_run = cfg.uring != fuser::UringMode::On;
    // Bound before mounting, so that `unionfs ctl` right after the mount connects (the
    // listen backlog holds it until the control thread accepts).
    let socket = match crate::ctl::server::bind(&cfg.mountpoint) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!("no control socket for {}: {e}", cfg.mountpoint.display());
            None
        }
    };
    let cannot = |e: std::io::Error| {
        if let Some(s) = &socket {
            s.remove();
        }
        runtime(format!("cannot mount on {}: {e}", cfg.mountpoint.display()))
    };
    let (session, unmount): (_, Arc<dyn Fn() + Send + Sync>) = if unsafe { libc::geteuid() } == 0 {
        // As root, mount type fuse.unionfs ourselves (see mount.rs).
        let opts = crate::mount::RootMountOptions {
            fsname: &cfg.fsname,
            allow_other: cfg.allow_other || cfg.allow_root,
            read_only: cfg.read_only,
        };
        let (fd, m) = crate::mount::mount(&cfg.mountpoint, &opts).map_err(cannot)?;
        let acl = fcfg.acl;
        match fuser::Session::from_fd(fs, fd, acl, fcfg) {
            Ok(s) => (
                s,
                Arc::new(move || {
                    let _ = m.unmount();
                }),
            ),
            Err(e) => {
                let _ = m.unmount();
                return Err(cannot(e));
            }
        }
    } else {
        let mut s = fuser::Session::new(fs, &cfg.mountpoint, &fcfg).map_err(cannot)?;
        let unmounter = std::sync::Mutex::new(s.unmount_callable());
        (
            s,
            Arc::new(move || {
                if let Ok(mut u) = unmounter.lock() {
                    let _ = u.unmount();
                }
            }),
        )
    };
    control.set_notifier(session.notifier());
    Ok(Mounted {
        session,
        unmount,
        socket,
        control,
        signals,
    })
}

impl Mounted {
    /// Takes the mount away again (a daemon that could not be started).
    fn abandon(self) {
        (self.unmount)();
        if let Some(s) = &self.socket {
            s.remove();
        }
    }

    /// Serves until unmounted or stopped by a signal.
    fn serve(self, cfg: &MountConfig) -> Result<(), CliError> {
        let Mounted {
            session,
            unmount,
            socket,
            control,
            signals,
        } = self;
        // A stop signal that comes before it is watched stays pending, as the signals
        // are blocked, until it is read. The control thread watches them, so that a
        // mount starts one thread fewer; without a control socket, a thread of its own.
        let cannot_watch = |e: std::io::Error| {
            unmount();
            runtime(format!("cannot watch the stop signals: {e}"))
        };
        let stop = StopSignals::new(&signals, unmount.clone()).map_err(cannot_watch)?;
        let watching = match &socket {
            Some(s) => {
                let (s, mp) = (s.clone(), cfg.mountpoint.clone());
                std::thread::Builder::new()
                    .name("unionfs-ctl".into())
                    .spawn(move || {
                        s.serve(
                            control,
                            mp,
                            Some((stop.fd.as_fd(), &|| {
                                let _ = stop.take();
                            })),
                        )
                    })
            }
            None => std::thread::Builder::new()
                .name("unionfs-signals".into())
                .spawn(move || stop.wait()),
        };
        watching.map_err(cannot_watch)?;
        let r = session
            .run()
            .map_err(|e| runtime(format!("serving {}: {e}", cfg.mountpoint.display())));
        if r.is_err() {
            // A failed INIT (or a stopped transport) leaves a dead mount: take it away.
            unmount();
        }
        if let Some(s) = socket {
            s.remove();
        }
        r
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

/// Daemon mode. The mount command returns once the mount is live, or with the error.
/// Must run before any thread exists.
pub fn daemonize(cfg: &MountConfig, union: Union) -> Result<(), CliError> {
    if cfg.uring == fuser::UringMode::On {
        return fork_then_mount(cfg, union);
    }
    // Mount here, then fork: the command exits right after the fork, as libfuse's does,
    // without waiting for the forked daemon to be scheduled and to mount (0.4 of a 2.5 ms
    // mount command in interleaved cycles on a 2-vCPU VM).
    let live = mount(cfg, union)?;
    // SAFETY: single-threaded here (see above); the child only goes on to serve.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            live.abandon();
            Err(runtime(format!("fork: {e}")))
        }
        0 => {
            unsafe {
                libc::setsid();
            }
            detach_stdio();
            // The fork gave the child a fd table sized to its open fds: grow it again
            // before threads exist (see prepare_process).
            crate::core::prepare_process();
            let code = match live.serve(cfg) {
                Ok(()) => 0,
                Err(e) => e.exit_code(),
            };
            std::process::exit(code);
        }
        _child => {
            // The mount, its socket and its session belong to the child now.
            std::mem::forget(live);
            Ok(())
        }
    }
}

/// uring=on: forks first; the child mounts (with the handshake, which sets up the ring
/// workers' threads) and serves, and the parent waits for its "ok" or its error.
fn fork_then_mount(cfg: &MountConfig, union: Union) -> Result<(), CliError> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(runtime(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh fds from pipe2.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    match unsafe { libc::fork() } {
        -1 => Err(runtime(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(rd);
            unsafe {
                libc::setsid();
            }
            let code = match serve(cfg, union, Some(wr)) {
                Ok(()) => 0,
                Err(e) => e.exit_code(),
            };
            std::process::exit(code);
        }
        _child => {
            drop(wr);
            drop(union);
            // One line: "ok" once the mount is live, else "CODE:message". The child
            // keeps its end open while serving, so read a line, not to EOF.
            let mut msg = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(std::fs::File::from(rd)),
                &mut msg,
            );
            if msg.starts_with("ok") {
                return Ok(());
            }
            let line = msg.lines().next().unwrap_or("").to_string();
            match line.split_once(':') {
                Some(("2", m)) => Err(CliError::Usage(m.to_string())),
                Some((_, m)) => Err(runtime(m)),
                None => Err(runtime("the daemon exited before the mount was live")),
            }
        }
    }
}

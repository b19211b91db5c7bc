//! The union daemon: start `unionfs` as a separate process, wait until its mount is live,
//! and stop it at the end.
//!
//! Why a separate process, started before the container exists (DESIGN.md 5.2): it must
//! sit outside the container's pid namespace (the payload can neither see nor signal it)
//! and outside its cgroup (a frozen, OOM-killed or pid-limited daemon would hang or break
//! the container's root filesystem). It runs in the foreground (`-f`) as our child, so we
//! know its pid; in its own session (a Ctrl-C on the terminal goes to the container, not
//! to the filesystem under it); with SIGTERM as its parent-death signal, so a runner
//! killed with SIGKILL still gets its mount unmounted (unionfs unmounts on SIGTERM).
//!
//! Rootless, the daemon runs as the caller in the caller's mount namespace and mounts
//! through the setuid `fusermount3` on a directory the caller owns; the container's new
//! user+mount namespace inherits that mount and binds it onto itself. (Mounting FUSE from
//! inside the user namespace works too since Linux 4.18, but then the daemon would be
//! ns-root, and `trusted.*` xattrs, hence the overlay whiteout format, are out of reach.)
//! Without `user_allow_other` in /etc/fuse.conf such a mount admits only the caller's
//! uid, i.e. container root: a `--user N` payload then gets EACCES on its own rootfs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Starting or stopping the daemon failed.
#[derive(Debug, Error)]
pub enum FsdError {
    /// No unionfs binary where we looked.
    #[error("the unionfs binary was not found at {0} (set UNIONFS_BIN or install unionfs next to unionrun)")]
    NoBinary(PathBuf),
    /// A branch path the overlay-style option syntax cannot carry.
    #[error("branch path {0} contains ',', ':' or '=', which the union options cannot carry")]
    BadPath(PathBuf),
    /// spawn failed.
    #[error("cannot start {bin}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The daemon exited before mounting.
    #[error("the union daemon exited ({status}) before mounting {}", mnt.display())]
    Exited {
        /// Its exit status.
        status: String,
        /// The mount point.
        mnt: PathBuf,
    },
    /// No mount within the timeout.
    #[error("the union did not appear on {} within {timeout:?}", mnt.display())]
    Timeout {
        /// The mount point.
        mnt: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Finds the unionfs binary: `$UNIONFS_BIN`, else next to the running `unionrun`.
pub fn find_binary() -> Result<PathBuf, FsdError> {
    if let Some(p) = std::env::var_os("UNIONFS_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(FsdError::NoBinary(p))
        };
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let p = exe
        .parent()
        .map(|d| d.join("unionfs"))
        .unwrap_or_else(|| PathBuf::from("unionfs"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(FsdError::NoBinary(p))
    }
}

/// What the daemon serves.
#[derive(Clone, Debug)]
pub struct UnionConfig {
    /// Lower branches, highest first.
    pub lowers: Vec<PathBuf>,
    /// The upper branch.
    pub upper: PathBuf,
    /// Its work directory (same filesystem).
    pub work: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    /// Let other users in (root: so `--user N` can reach the rootfs).
    pub allow_other: bool,
    /// Shown as the mount's source in /proc/mounts ("unionrun-ID").
    pub fsname: String,
    /// `-v` for the daemon.
    pub verbose: bool,
}

impl UnionConfig {
    /// The daemon's command-line arguments.
    pub fn args(&self) -> Result<Vec<String>, FsdError> {
        let check = |p: &Path| {
            let s = p.display().to_string();
            if s.contains([',', ':', '=']) {
                Err(FsdError::BadPath(p.to_path_buf()))
            } else {
                Ok(s)
            }
        };
        let lowers = self
            .lowers
            .iter()
            .map(|l| check(l))
            .collect::<Result<Vec<_>, _>>()?;
        let mut o = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            check(&self.upper)?,
            check(&self.work)?
        );
        if self.allow_other {
            o.push_str(",allow_other");
        }
        let mut a = vec!["-f".to_string()];
        if self.verbose {
            a.push("-v".into());
        }
        a.extend(["-o".into(), o, self.fsname.clone(), check(&self.mnt)?]);
        Ok(a)
    }
}

/// The running daemon.
pub struct Daemon {
    child: Child,
    mnt: PathBuf,
    pidfd: Option<OwnedFd>,
}

/// Whether something is mounted exactly at `mnt` in our mount namespace.
pub fn is_mounted(mnt: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| mountinfo_has(&t, mnt))
        .unwrap_or(false)
}

/// Whether mountinfo text lists a mount at `mnt` (octal escapes decoded).
pub fn mountinfo_has(text: &str, mnt: &Path) -> bool {
    let want = mnt.as_os_str().as_encoded_bytes();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|f| unescape(f) == want)
}

/// Decodes mountinfo's octal escapes (`\040` for a space, ...).
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a fresh fd.
    (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Polls `fds` for `events` for at most `ms` (EINTR counts as a wakeup).
fn poll(fds: &mut [libc::pollfd], ms: i32) {
    // SAFETY: valid array of pollfd.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
    }
}

impl Daemon {
    /// Starts the daemon and returns once the mount is live.
    pub fn start(bin: &Path, cfg: &UnionConfig, timeout: Duration) -> Result<Daemon, FsdError> {
        Daemon::start_with(bin, cfg, timeout, None)
    }

    /// [`Daemon::start`] for a daemon that outlives us (OCI `create` exits while the
    /// container runs): no parent-death signal, stderr to `log` (never our stderr, which
    /// an engine waits on until it closes).
    pub fn start_detached(
        bin: &Path,
        cfg: &UnionConfig,
        timeout: Duration,
        log: &Path,
    ) -> Result<Daemon, FsdError> {
        Daemon::start_with(bin, cfg, timeout, Some(log))
    }

    fn start_with(
        bin: &Path,
        cfg: &UnionConfig,
        timeout: Duration,
        detached_log: Option<&Path>,
    ) -> Result<Daemon, FsdError> {
        let args = cfg.args()?;
        tracing::debug!("starting {} {}", bin.display(), args.join(" "));
        // mountinfo signals POLLPRI on every mount table change: no busy polling.
        let mi = std::fs::File::open("/proc/self/mountinfo").ok();
        // SAFETY: getpid cannot fail.
        let parent = unsafe { libc::getpid() };
        let mut cmd = Command::new(bin);
        let stderr = match detached_log {
            Some(log) => std::fs::File::create(log)
                .map(Stdio::from)
                .map_err(|source| FsdError::Spawn {
                    bin: log.to_path_buf(),
                    source,
                })?,
            None => Stdio::inherit(),
        };
        let detached = detached_log.is_some();
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let empty: libc::sigset_t = std::mem::zeroed();
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::setsid();
                if detached {
                    return Ok(());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                if libc::getppid() != parent {
                    // The runner died before PDEATHSIG was armed.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| FsdError::Spawn {
            bin: bin.to_path_buf(),
            source,
        })?;
        let pidfd = pidfd_open(child.id());
        let mut d = Daemon {
            child,
            mnt: cfg.mnt.clone(),
            pidfd,
        };
        let start = Instant::now();
        loop {
            if is_mounted(&d.mnt) {
                return Ok(d);
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                return Err(FsdError::Exited {
                    status: st.to_string(),
                    mnt: d.mnt.clone(),
                });
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                d.kill();
                return Err(FsdError::Timeout {
                    mnt: d.mnt.clone(),
                    timeout,
                });
            }
            let mut fds = Vec::new();
            if let Some(f) = &mi {
                fds.push(libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLPRI,
                    revents: 0,
                });
            }
            if let Some(p) = &d.pidfd {
                fds.push(libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // Cap the wait: a missed wakeup costs at most 50 ms.
            poll(&mut fds, left.as_millis().min(50) as i32);
            if let Some(f) = &mi {
                // Re-arm POLLPRI: it stays raised until the file is read again.
                let _ = std::io::Read::read(&mut &*f, &mut [0u8; 4096]);
                // SAFETY: plain lseek on our fd.
                unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_SET) };
            }
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The mount point.
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// Waits up to `t` for the daemon to exit.
    fn wait_for(&mut self, t: Duration) -> bool {
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            let left = t.saturating_sub(start.elapsed());
            if left.is_zero() {
                return false;
            }
            match &self.pidfd {
                Some(p) => {
                    let mut fds = [libc::pollfd {
                        fd: p.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    poll(&mut fds, left.as_millis().min(100) as i32);
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon: SIGTERM (it unmounts and exits), then, if it hangs, a lazy
    /// unmount and SIGKILL. The mount is gone afterwards in every case.
    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        if !self.wait_for(Duration::from_secs(5)) {
            tracing::warn!("the union daemon did not stop within 5 s; killing it");
            lazy_unmount(&self.mnt);
            self.kill();
        }
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
    }
}

/// Detaches a (FUSE) mount: umount2(MNT_DETACH) as root, `fusermount3 -uz` otherwise.
pub fn lazy_unmount(mnt: &Path) {
    if nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH).is_ok() {
        return;
    }
    let _ = Command::new("fusermount3")
        .arg("-uz")
        .arg(mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether non-root users may pass `allow_other` (fusermount3 reads /etc/fuse.conf).
pub fn user_allow_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .map(|t| t.lines().any(|l| l.trim() == "user_allow_other"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_overlay_style() {
        let c = UnionConfig {
            lowers: vec!["/l1".into(), "/l2".into()],
            upper: "/u".into(),
            work: "/w".into(),
            mnt: "/m".into(),
            allow_other: true,
            fsname: "unionrun-x".into(),
            verbose: false,
        };
        assert_eq!(
            c.args().unwrap(),
            [
                "-f",
                "-o",
                "lowerdir=/l1:/l2,upperdir=/u,workdir=/w,allow_other",
                "unionrun-x",
                "/m"
            ]
        );
        let mut bad = c.clone();
        bad.lowers = vec!["/a,b".into()];
        assert!(matches!(bad.args(), Err(FsdError::BadPath(_))));
    }

    #[test]
    fn mountinfo_matching_decodes_escapes() {
        let t = "36 35 98:0 / /mnt/with\\040space rw - ext4 /dev/x rw\n";
        assert!(mountinfo_has(t, Path::new("/mnt/with space")));
        assert!(!mountinfo_has(t, Path::new("/mnt/with")));
    }
}

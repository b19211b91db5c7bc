//! Mounts the oracle makes, each lazily unmounted on Drop (also when a test panics), and
//! the per-side directory layout.

use super::sys;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `ROOT/{lower,upper,work,mnt}` for one side.
pub struct Layout {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl Layout {
    pub fn create(root: &Path) -> Result<Layout, String> {
        let l = Layout {
            lower: root.join("lower"),
            upper: root.join("upper"),
            work: root.join("work"),
            mnt: root.join("mnt"),
        };
        for d in [root, &l.lower, &l.upper, &l.work, &l.mnt] {
            std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        // Same root mode on both sides and on the kernel's.
        sys::chmod(&l.upper, 0o755).map_err(|e| format!("chmod upper: errno {e}"))?;
        Ok(l)
    }
}

/// Which implementation serves a side.
#[derive(Clone, Debug)]
pub enum Backend {
    Kernel,
    Unionfs(PathBuf),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Unionfs(_) => "ours",
        }
    }
}

pub struct Mount {
    mnt: PathBuf,
    child: Option<Child>,
    log: Option<PathBuf>,
    pub warnings: Vec<String>,
}

fn is_mountpoint(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

fn kernel_mount(opts: &str, mnt: &Path, flags: libc::c_ulong) -> Result<Mount, String> {
    let src = sys::cname("overlay");
    let c_mnt = sys::cstr(mnt);
    let data = sys::cname(opts);
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            c_mnt.as_ptr(),
            src.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    sys::check(r).map_err(|e| {
        format!(
            "mount -t overlay -o {opts} {}: {}",
            mnt.display(),
            std::io::Error::from_raw_os_error(e)
        )
    })?;
    Ok(Mount {
        mnt: mnt.to_path_buf(),
        child: None,
        log: None,
        warnings: vec![],
    })
}

impl Mount {
    /// `metacopy`: both sides with `metacopy=on`.
    pub fn new(backend: &Backend, l: &Layout, metacopy: bool) -> Result<Mount, String> {
        let mc = if metacopy { ",metacopy=on" } else { "" };
        match backend {
            Backend::Kernel => {
                let opts = format!(
                    "lowerdir={},upperdir={},workdir={},index=on{mc}",
                    l.lower.display(),
                    l.upper.display(),
                    l.work.display()
                );
                kernel_mount(&opts, &l.mnt, 0)
            }
            Backend::Unionfs(bin) => {
                // allow_other: the kernel overlay serves every user, and FUSE (Linux 6.18)
                // refuses a caller whose fsuid is not the mounter's without it; some steps
                // run with fsuid 1000.
                let opts = format!(
                    "lowerdir={},upperdir={},workdir={},whiteout=overlay,allow_other{mc}",
                    l.lower.display(),
                    l.upper.display(),
                    l.work.display()
                );
                let log = l.mnt.with_extension("log");
                let out = std::fs::File::create(&log)
                    .map_err(|e| format!("create {}: {e}", log.display()))?;
                let err = out.try_clone().map_err(|e| e.to_string())?;
                // -f: we own the daemon's process, can reap it and keep its stderr.
                let child = Command::new(bin)
                    .args(["-f", "-o", &opts, "none"])
                    .arg(&l.mnt)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
                let mut m = Mount {
                    mnt: l.mnt.clone(),
                    child: Some(child),
                    log: Some(log.clone()),
                    warnings: vec![],
                };
                let start = Instant::now();
                loop {
                    if is_mountpoint(&l.mnt) {
                        return Ok(m);
                    }
                    if let Ok(Some(st)) = m.child.as_mut().unwrap().try_wait() {
                        m.child = None;
                        let msg = std::fs::read_to_string(&log).unwrap_or_default();
                        return Err(format!(
                            "{} {opts} none {} exited with {st} before mounting: {msg}",
                            bin.display(),
                            l.mnt.display()
                        ));
                    }
                    if start.elapsed() > Duration::from_secs(15) {
                        return Err(format!(
                            "{} did not mount {} within 15 s",
                            bin.display(),
                            l.mnt.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// A read-only kernel overlay of `layers` (top first): how the kernel reads a stack.
    pub fn kernel_ro(layers: &[&Path], mnt: &Path, metacopy: bool) -> Result<Mount, String> {
        std::fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let lower: Vec<String> = layers.iter().map(|p| p.display().to_string()).collect();
        let mc = if metacopy { ",metacopy=on" } else { "" };
        kernel_mount(
            &format!("lowerdir={}{mc}", lower.join(":")),
            mnt,
            libc::MS_RDONLY,
        )
    }

    /// The daemon's pid (None for the kernel).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// The daemon's log so far (empty for the kernel).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Is the daemon still alive (always true for the kernel)?
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => Err(format!("daemon died ({st}); log:\n{}", self.log())),
            _ => Ok(()),
        }
    }

    /// Unmount now (lazily) and reap the daemon; records a warning if it had to be killed.
    pub fn unmount(&mut self) {
        let c = sys::cstr(&self.mnt);
        if is_mountpoint(&self.mnt) {
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        if let Some(mut child) = self.child.take() {
            let start = Instant::now();
            let mut sent_term = false;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => {}
                }
                if !sent_term && start.elapsed() > Duration::from_secs(5) {
                    self.warnings
                        .push("daemon still running 5 s after unmount; sent SIGTERM".into());
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    sent_term = true;
                }
                if start.elapsed() > Duration::from_secs(8) {
                    self.warnings.push("daemon ignored SIGTERM; killed".into());
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            // A daemon that was killed (the watchdog's) could not remove its control
            // socket; it is gone now, and the socket names this test's mount point.
            let uid = unsafe { libc::geteuid() };
            let _ = std::fs::remove_file(unionfs::ctl::protocol::socket_path(uid, &self.mnt));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Kills our daemon if the oracle makes no progress for `limit` (a hung FUSE request would
/// otherwise hang the test forever; killing the daemon aborts its connection and the
/// blocked system call returns ENOTCONN). Stop it before the daemon is reaped.
/// (last progress, what it is doing, stop requested) and whether it fired.
type WatchState = (
    std::sync::Mutex<(Instant, String, bool)>,
    std::sync::atomic::AtomicBool,
);

pub struct Watchdog {
    state: std::sync::Arc<WatchState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(pid: Option<i32>, limit: Duration) -> Watchdog {
        use std::sync::atomic::Ordering;
        let state = std::sync::Arc::new((
            std::sync::Mutex::new((Instant::now(), String::from("setup"), false)),
            std::sync::atomic::AtomicBool::new(false),
        ));
        let thread = pid.map(|pid| {
            let st = state.clone();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(50));
                let mut g = st.0.lock().unwrap();
                if g.2 {
                    return;
                }
                if g.0.elapsed() > limit && !st.1.load(Ordering::SeqCst) {
                    st.1.store(true, Ordering::SeqCst);
                    g.1 = format!(
                        "no progress for {limit:?} during {}: killed the daemon",
                        g.1
                    );
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            })
        });
        Watchdog { state, thread }
    }

    /// Progress: now doing `what`.
    pub fn beat(&self, what: impl Into<String>) {
        let mut g = self.state.0.lock().unwrap();
        if !self.state.1.load(std::sync::atomic::Ordering::SeqCst) {
            *g = (Instant::now(), what.into(), false);
        }
    }

    /// Why it fired, if it did.
    pub fn fired(&self) -> Option<String> {
        self.state
            .1
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| self.state.0.lock().unwrap().1.clone())
    }

    pub fn stop(&mut self) {
        self.state.0.lock().unwrap().2 = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

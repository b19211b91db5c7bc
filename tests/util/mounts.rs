//! Mounts: /proc/self/mountinfo parsing and [`MountGuard`], which always unmounts.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{cmdline, run, unionfs_bin, wait_timeout, wait_until, Capture, Outcome};

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug)]
pub struct MountInfo {
    pub mount_id: u64,
    /// `major:minor` of the mounted filesystem (for FUSE the minor is the connection number).
    pub dev: String,
    pub mount_point: PathBuf,
    pub mount_opts: String,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

/// Decodes the octal escapes (`\040` ...) used by /proc/self/mountinfo.
pub fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// All mounts visible to this process.
pub fn mounts() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let g: Vec<&str> = post.split(' ').collect();
            if f.len() < 6 || g.len() < 3 {
                return None;
            }
            Some(MountInfo {
                mount_id: f[0].parse().ok()?,
                dev: f[2].to_string(),
                mount_point: unescape(f[4]),
                mount_opts: f[5].to_string(),
                fstype: g[0].to_string(),
                source: unescape(g[1]).to_string_lossy().into_owned(),
                super_opts: g[2].to_string(),
            })
        })
        .collect()
}

/// The canonical form of a path, without touching the last component (a FUSE mount of
/// another user cannot be stat'ed, even by root).
pub fn canon(p: &Path) -> PathBuf {
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => parent
            .canonicalize()
            .map(|c| c.join(name))
            .unwrap_or_else(|_| p.to_path_buf()),
        _ => p.to_path_buf(),
    }
}

/// The mounts stacked on `p`, bottom first.
pub fn mounts_at(p: &Path) -> Vec<MountInfo> {
    let p = canon(p);
    mounts()
        .into_iter()
        .filter(|m| m.mount_point == p)
        .collect()
}

pub fn is_mounted(p: &Path) -> bool {
    !mounts_at(p).is_empty()
}

/// Lazily detaches `mnt`: `fusermount3 -uz`, falling back to `umount -l`.
pub(crate) fn lazy_unmount(mnt: &Path, fuse: bool) {
    let quiet = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if fuse && quiet(Command::new("fusermount3").arg("-uz").arg(mnt)) && !is_mounted(mnt) {
        return;
    }
    quiet(Command::new("umount").arg("-l").arg(mnt));
}

/// Aborts a FUSE connection (needs fusectl mounted; silently does nothing otherwise), so
/// that processes blocked on a hung daemon get ENOTCONN instead of hanging forever.
fn abort_fuse_connection(dev: &str) {
    if let Some((_, minor)) = dev.split_once(':') {
        let _ = fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MountKind {
    Fuse,
    Kernel,
}

/// A live mount that is lazily unmounted on drop (also on panic). For a foreground daemon
/// (`-f`) it also owns the child process and reaps it.
pub struct MountGuard {
    mnt: PathBuf,
    kind: MountKind,
    child: Option<Child>,
    child_capture: Option<Capture>,
    info: MountInfo,
    output: Option<Outcome>,
    done: bool,
}

impl MountGuard {
    /// Runs `unionfs ARGS` (the args must name `mnt`), expects exit 0 and the mount live
    /// at `mnt` as soon as it returns.
    #[track_caller]
    pub fn mount<I, S>(args: I, mnt: &Path) -> MountGuard
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(unionfs_bin());
        cmd.args(args);
        Self::run(cmd, mnt)
    }

    /// Runs any mounting command (runuser, mount.fuse3, ...) and expects the same.
    #[track_caller]
    pub fn run(cmd: Command, mnt: &Path) -> MountGuard {
        match Self::try_run(cmd, mnt) {
            Ok(g) => g,
            Err(out) => panic!("mount did not succeed:\n{out}"),
        }
    }

    /// Like [`MountGuard::run`], but returns the outcome when the command fails. If the
    /// command exits 0 without the mount being live, that is a failure too (and anything
    /// that shows up later is still cleaned up by the [`TempTree`]).
    pub fn try_run(mut cmd: Command, mnt: &Path) -> Result<MountGuard, Outcome> {
        let mnt = canon(mnt);
        let before = mounts_at(&mnt).len();
        let out = run(&mut cmd);
        let now = mounts_at(&mnt);
        if now.len() > before {
            let info = now.last().cloned().expect("mount");
            let kind = if info.fstype.starts_with("fuse") {
                MountKind::Fuse
            } else {
                MountKind::Kernel
            };
            let mut g = MountGuard {
                mnt,
                kind,
                child: None,
                child_capture: None,
                info,
                output: Some(out),
                done: false,
            };
            if !g.output().success() {
                let o = g.output.take();
                drop(g);
                return Err(o.expect("output"));
            }
            return Ok(g);
        }
        if out.success() {
            let mut out = out;
            out.stderr.push_str(&format!(
                "\n[test] exit status 0 but nothing is mounted on {} (the command must return only once the mount is live)",
                mnt.display()
            ));
            return Err(out);
        }
        Err(out)
    }

    /// Starts `cmd` (a foreground daemon, e.g. `unionfs -f ...`) as a child and waits up to
    /// `timeout` for the mount to appear. Panics with its output if it exits or times out.
    #[track_caller]
    pub fn foreground(mut cmd: Command, mnt: &Path, timeout: Duration) -> MountGuard {
        let mnt = canon(mnt);
        let line = cmdline(&cmd);
        let before = mounts_at(&mnt).len();
        let mut cap = Capture::attach(&mut cmd);
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
        let mut exited = None;
        let live = wait_until(timeout, || {
            if mounts_at(&mnt).len() > before {
                return true;
            }
            exited = child.try_wait().expect("try_wait");
            exited.is_some()
        }) && exited.is_none();
        let info = mounts_at(&mnt).last().cloned();
        if !live || info.is_none() {
            if exited.is_none() {
                let _ = child.kill();
            }
            let status = child.wait().expect("wait");
            if let Some(m) = info {
                lazy_unmount(&m.mount_point, true);
            }
            let (o, e) = cap.read();
            panic!(
                "`{line}` did not mount {} within {timeout:?} (status {status:?})\n--- stdout ---\n{o}\n--- stderr ---\n{e}",
                mnt.display()
            );
        }
        MountGuard {
            mnt,
            kind: MountKind::Fuse,
            child: Some(child),
            child_capture: Some(cap),
            info: info.expect("mount info"),
            output: None,
            done: false,
        }
    }

    /// Mounts kernel overlayfs (`lowers` highest first; `upper`/`work` both or neither).
    #[track_caller]
    pub fn kernel_overlay(
        lowers: &[&Path],
        upper_work: Option<(&Path, &Path)>,
        mnt: &Path,
        extra_opts: &[&str],
    ) -> MountGuard {
        let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut opts = vec![format!("lowerdir={}", lower.join(":"))];
        if let Some((u, w)) = upper_work {
            opts.push(format!("upperdir={}", u.display()));
            opts.push(format!("workdir={}", w.display()));
        }
        opts.extend(extra_opts.iter().map(|s| s.to_string()));
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "overlay", "overlay", "-o", &opts.join(",")])
            .arg(mnt);
        let g = Self::run(cmd, mnt);
        assert_eq!(g.info.fstype, "overlay");
        g
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The mountinfo line of this mount as seen right after mounting.
    pub fn info(&self) -> &MountInfo {
        &self.info
    }

    /// Output of the mounting command (not for foreground daemons).
    pub fn output(&self) -> &Outcome {
        self.output
            .as_ref()
            .expect("no command output for this guard")
    }

    /// The foreground daemon, if this guard started one.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// What the foreground daemon has printed so far (stdout, stderr).
    pub fn child_output(&mut self) -> (String, String) {
        self.child_capture
            .as_mut()
            .map(Capture::read)
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for the foreground daemon to exit.
    pub fn wait_child(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(self.child.as_mut().expect("no child"), timeout)
    }

    /// Unmounts properly (`fusermount3 -u` / `umount`), asserting success, and waits for a
    /// foreground daemon to exit (returns its status).
    #[track_caller]
    pub fn unmount(mut self) -> Option<ExitStatus> {
        let mut cmd = match self.kind {
            MountKind::Fuse => Command::new("fusermount3"),
            MountKind::Kernel => Command::new("umount"),
        };
        if self.kind == MountKind::Fuse {
            cmd.arg("-u");
        }
        cmd.arg(&self.mnt);
        // EBUSY can be transient: a container test running in parallel clones a mount
        // namespace, which holds a copy of every mount until it pivots away. Retry for a
        // few seconds before calling it a failure.
        let mut out = run(&mut cmd);
        for _ in 0..50 {
            if out.success() || !out.stderr.contains("busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            out = run(&mut cmd);
        }
        out.ok();
        assert!(
            wait_until(Duration::from_secs(10), || !self.still_ours()),
            "{} still mounted after unmount",
            self.mnt.display()
        );
        self.done = true;
        let status = self.child.as_mut().map(|c| {
            wait_timeout(c, Duration::from_secs(10))
                .expect("daemon did not exit within 10 s after unmount")
        });
        status
    }

    /// Marks the mount as already gone (the test unmounted it another way).
    pub fn forget(mut self) {
        self.done = true;
    }

    fn still_ours(&self) -> bool {
        mounts().iter().any(|m| m.mount_id == self.info.mount_id)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.done && self.still_ours() {
            if std::thread::panicking() && self.kind == MountKind::Fuse {
                abort_fuse_connection(&self.info.dev);
            }
            lazy_unmount(&self.mnt, self.kind == MountKind::Fuse);
        }
        if let Some(c) = self.child.as_mut() {
            if wait_timeout(c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

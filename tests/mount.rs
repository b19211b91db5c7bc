//! Mounting through every accepted syntax (docs/cli.md), through mount.fuse3 and
//! `mount -t fuse.unionfs`, and the daemon's lifetime: background by default, `-f` in the
//! foreground, SIGTERM/SIGINT unmount cleanly.
//!
//! How `mount -t fuse.unionfs` finds our binary (Debian 12, util-linux 2.38, fuse3 3.14):
//! mount(8) runs `/sbin/mount.fuse` (a symlink to mount.fuse3) with an environment that has
//! no PATH at all; mount.fuse3 runs `/bin/sh -c "'unionfs' SOURCE MNT -o OPTS,dev,suid"`,
//! and dash without PATH searches its built-in default
//! `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`. So a PATH set for
//! mount(8) is ignored (mount.fuse3 called directly does honour PATH). The test therefore
//! runs mount(8) in a private mount namespace where a temp dir holding a `unionfs` symlink
//! is bound over /usr/local/sbin; the machine's /usr/local/sbin is never touched.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::*;

/// upper `U` over lower `L` (and a workdir `W` for the overlay syntax).
struct Union {
    t: TempTree,
    upper: PathBuf,
    lower: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    lower_before: Snapshot,
}

fn union() -> Union {
    let t = TempTree::new();
    t.write("L/a.txt", "lower a\n");
    t.write("L/shadow.txt", "lower shadow\n");
    t.write("L/dir/b.txt", "lower b\n");
    t.write("U/shadow.txt", "upper shadow\n");
    t.write("U/u.txt", "upper u\n");
    let (upper, lower) = (t.join("U"), t.join("L"));
    let (work, mnt) = (t.mkdir("W"), t.mkdir("mnt"));
    let lower_before = tree_snapshot_with_times(&lower);
    Union {
        t,
        upper,
        lower,
        work,
        mnt,
        lower_before,
    }
}

impl Union {
    fn overlay_opts(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            self.upper.display(),
            self.work.display()
        )
    }

    fn native_args(&self) -> Vec<OsString> {
        vec![
            "--branch".into(),
            format!("{}=rw", self.upper.display()).into(),
            "--branch".into(),
            format!("{}=ro", self.lower.display()).into(),
            self.mnt.clone().into(),
        ]
    }

    /// The merged view, reading through, and a write landing in the upper branch. With
    /// `copy_up`, appending to a lower file copies it up and leaves the lower one alone.
    #[track_caller]
    fn check(&self, copy_up: bool) {
        let m = &self.mnt;
        assert_eq!(list_dir(m), ["a.txt", "dir", "shadow.txt", "u.txt"]);
        assert_eq!(list_dir(&m.join("dir")), ["b.txt"]);
        assert_eq!(fs::read_to_string(m.join("a.txt")).unwrap(), "lower a\n");
        assert_eq!(
            fs::read_to_string(m.join("dir/b.txt")).unwrap(),
            "lower b\n"
        );
        assert_eq!(
            fs::read_to_string(m.join("shadow.txt")).unwrap(),
            "upper shadow\n",
            "the upper branch takes precedence"
        );
        fs::write(m.join("new.txt"), "new\n").unwrap();
        assert_eq!(
            fs::read_to_string(self.upper.join("new.txt")).unwrap(),
            "new\n"
        );
        assert!(!self.lower.join("new.txt").exists());
        if copy_up {
            append(&m.join("a.txt"), "more\n");
            assert_eq!(
                fs::read_to_string(m.join("a.txt")).unwrap(),
                "lower a\nmore\n"
            );
            assert_eq!(
                fs::read_to_string(self.upper.join("a.txt")).unwrap(),
                "lower a\nmore\n",
                "the appended file must be copied up into the upper branch"
            );
        }
        self.check_lower_unchanged();
    }

    #[track_caller]
    fn check_lower_unchanged(&self) {
        let now = tree_snapshot_with_times(&self.lower);
        assert_snapshots_eq("lower before", &self.lower_before, "lower now", &now);
    }
}

fn append(p: &Path, s: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(s.as_bytes()).unwrap();
}

fn unionfs_cmd() -> Command {
    Command::new(unionfs_bin())
}

#[test]
fn native_branch_syntax() {
    if !require_root() {
        return;
    }
    let u = union();
    let g = MountGuard::mount(u.native_args(), &u.mnt);
    assert!(g.info().fstype.starts_with("fuse"), "{:?}", g.info());
    u.check(true);
    g.unmount();
    u.check_lower_unchanged();
}

#[test]
fn dirs_option_syntax() {
    if !require_root() {
        return;
    }
    let u = union();
    let dirs = format!("dirs={}=rw:{}=ro", u.upper.display(), u.lower.display());
    let g = MountGuard::mount(
        [OsString::from("-o"), dirs.into(), u.mnt.clone().into()],
        &u.mnt,
    );
    u.check(true);
    g.unmount();
}

#[test]
fn overlay_option_syntax() {
    if !require_root() {
        return;
    }
    let u = union();
    let g = MountGuard::mount(
        [
            OsString::from("-o"),
            u.overlay_opts().into(),
            u.mnt.clone().into(),
        ],
        &u.mnt,
    );
    u.check(true);
    g.unmount();
}

#[test]
fn unionfs_fuse_syntax() {
    if !require_root() {
        return;
    }
    let u = union();
    let src = format!("{}=RW:{}=RO", u.upper.display(), u.lower.display());
    let g = MountGuard::mount([OsString::from(src), u.mnt.clone().into()], &u.mnt);
    // Only a new file: whether unionfs-fuse style copies up without `-o cow` is that
    // mode's own rule.
    u.check(false);
    g.unmount();
}

#[test]
fn source_name_then_options_syntax() {
    if !require_root() {
        return;
    }
    let u = union();
    let g = MountGuard::mount(
        [
            OsString::from("myunion"),
            u.mnt.clone().into(),
            "-o".into(),
            u.overlay_opts().into(),
        ],
        &u.mnt,
    );
    assert_eq!(
        g.info().source,
        "myunion",
        "a SOURCE without `=` is the name in /proc/mounts: {:?}",
        g.info()
    );
    u.check(true);
    g.unmount();
}

#[test]
fn generic_mount_options_are_accepted() {
    if !require_root() {
        return;
    }
    let u = union();
    let mut args = u.native_args();
    args.extend([
        "-o".into(),
        "rw,dev,suid,exec,noatime,relatime,defaults,auto,_netdev,nofail".into(),
    ]);
    let g = MountGuard::mount(args, &u.mnt);
    u.check(true);
    g.unmount();
}

#[test]
fn read_only_union_without_upperdir() {
    if !require_root() {
        return;
    }
    let t = TempTree::new();
    t.write("L1/a.txt", "L1 a\n");
    t.write("L2/a.txt", "L2 a\n");
    t.write("L2/b.txt", "L2 b\n");
    let mnt = t.mkdir("mnt");
    let opts = format!(
        "lowerdir={}:{}",
        t.join("L1").display(),
        t.join("L2").display()
    );
    let g = MountGuard::mount(
        [OsString::from("-o"), opts.into(), mnt.clone().into()],
        &mnt,
    );
    assert_eq!(list_dir(&mnt), ["a.txt", "b.txt"]);
    assert_eq!(
        fs::read_to_string(mnt.join("a.txt")).unwrap(),
        "L1 a\n",
        "L1 is above L2"
    );
    let err = fs::write(mnt.join("new.txt"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("b.txt"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    g.unmount();
}

/// A temp dir holding `unionfs` -> the binary under test.
fn helper_bin_dir(t: &TempTree) -> PathBuf {
    let dir = t.mkdir("helper-bin");
    std::os::unix::fs::symlink(unionfs_bin(), dir.join("unionfs")).unwrap();
    t.chmod("helper-bin", 0o755);
    dir
}

fn mount_fuse3() -> Option<PathBuf> {
    ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn through_mount_fuse3_helper() {
    if !require_root() {
        return;
    }
    let Some(helper) = mount_fuse3() else {
        require(
            false,
            "mount.fuse3 is not installed (apt-get install fuse3)",
        );
        return;
    };
    let u = union();
    let bin_dir = helper_bin_dir(&u.t);
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(helper);
    cmd.arg("myunion")
        .arg(&u.mnt)
        .args(["-t", "fuse.unionfs", "-o", &u.overlay_opts()])
        .env("PATH", path);
    let g = MountGuard::run(cmd, &u.mnt);
    assert_eq!(g.info().source, "myunion", "{:?}", g.info());
    u.check(true);
    g.unmount();
}

#[test]
fn through_mount_t_fuse_unionfs() {
    if !require_root() {
        return;
    }
    if mount_fuse3().is_none() {
        require(
            false,
            "mount.fuse3 is not installed (apt-get install fuse3)",
        );
        return;
    }
    let u = union();
    let bin_dir = helper_bin_dir(&u.t);
    let m = u.mnt.display();
    // Everything that needs the mount runs inside the namespace; the trap unmounts even if
    // a step fails. The branches are on the shared filesystem and are checked from here.
    let script = format!(
        r#"set -e
mount --bind '{bin}' /usr/local/sbin
trap "umount -l '{m}' 2>/dev/null || true" EXIT
mount -t fuse.unionfs myunion '{m}' -o '{opts}'
grep -F ' {m} ' /proc/self/mountinfo
echo ---
ls -1A '{m}'
echo ---
cat '{m}/a.txt'
echo new > '{m}/new.txt'
echo more >> '{m}/a.txt'
cat '{m}/a.txt'
umount '{m}'
trap - EXIT
grep -qF ' {m} ' /proc/self/mountinfo && echo STILL-MOUNTED || echo UNMOUNTED"#,
        bin = bin_dir.display(),
        opts = u.overlay_opts(),
    );
    let out = run_timeout(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]),
        Duration::from_secs(60),
    )
    .ok();
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    assert!(
        parts[0].contains(" - fuse") && parts[0].contains(" myunion "),
        "mountinfo line: {out}"
    );
    assert_eq!(parts[1], "a.txt\ndir\nshadow.txt\nu.txt\n", "{out}");
    assert_eq!(parts[2], "lower a\nlower a\nmore\nUNMOUNTED\n", "{out}");
    assert_eq!(
        fs::read_to_string(u.upper.join("new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(u.upper.join("a.txt")).unwrap(),
        "lower a\nmore\n"
    );
    u.check_lower_unchanged();
}

fn foreground(u: &Union) -> MountGuard {
    let mut cmd = unionfs_cmd();
    cmd.arg("-f").args(u.native_args());
    MountGuard::foreground(cmd, &u.mnt, Duration::from_secs(15))
}

#[test]
fn foreground_stays_until_unmounted() {
    if !require_root() {
        return;
    }
    let u = union();
    let mut g = foreground(&u);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        g.child().unwrap().try_wait().unwrap().is_none(),
        "with -f the daemon must stay in the foreground while mounted"
    );
    u.check(true);
    assert!(g.child().unwrap().try_wait().unwrap().is_none());
    let status = g.unmount().expect("status");
    assert!(
        status.success(),
        "after fusermount3 -u the daemon exits 0: {status:?}"
    );
}

fn signal_unmounts(sig: Signal) {
    let u = union();
    let mut g = foreground(&u);
    u.check(true);
    let pid = g.child().unwrap().id() as i32;
    kill(Pid::from_raw(pid), sig).unwrap();
    let status = g.wait_child(Duration::from_secs(15));
    let (_, stderr) = g.child_output();
    let status = status.unwrap_or_else(|| panic!("daemon still running 15 s after {sig:?}"));
    assert!(
        !is_mounted(&u.mnt),
        "{sig:?} must unmount {} (daemon {status:?}); stderr:\n{stderr}",
        u.mnt.display()
    );
    assert!(
        status.success(),
        "after {sig:?} the daemon unmounts and exits 0, got {status:?}; stderr:\n{stderr}"
    );
    g.forget();
    assert_eq!(
        fs::read_to_string(u.upper.join("new.txt")).unwrap(),
        "new\n"
    );
    u.check_lower_unchanged();
}

#[test]
fn sigterm_unmounts_cleanly() {
    if require_root() {
        signal_unmounts(Signal::SIGTERM);
    }
}

#[test]
fn sigint_unmounts_cleanly() {
    if require_root() {
        signal_unmounts(Signal::SIGINT);
    }
}

/// A foreground daemon, killed and its mount lazily unmounted on drop (also on panic).
struct Daemon<'a> {
    child: std::process::Child,
    mnt: &'a Path,
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if is_mounted(self.mnt) {
            lazy_unmount(self.mnt, true);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon answers FUSE_INIT once the mount is live (a mount command does not wait
/// for it, as with libfuse): an unmount or a stop signal that comes first, as soon as
/// the mount shows in mountinfo, still ends the daemon cleanly, with exit status 0 and
/// nothing left mounted.
#[test]
fn an_unmount_or_a_signal_right_after_the_mount_ends_the_daemon_cleanly() {
    if !require_root() {
        return;
    }
    let u = union();
    let mnt = canon(&u.mnt);
    let target = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
    for round in 0..20 {
        let mut cmd = unionfs_cmd();
        cmd.arg("-f").args(u.native_args());
        let mut d = Daemon {
            child: cmd
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start unionfs -f"),
            mnt: &mnt,
        };
        // No sleep between looks: act before the daemon gets to read FUSE_INIT.
        let start = std::time::Instant::now();
        while !is_mounted(&mnt) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "round {round}: never mounted"
            );
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "round {round}: daemon exited"
            );
        }
        if round % 2 == 0 {
            // SAFETY: a valid C string; the mount is this test's.
            let r = unsafe { libc::umount2(target.as_ptr(), 0) };
            assert_eq!(r, 0, "umount: {}", std::io::Error::last_os_error());
        } else {
            kill(Pid::from_raw(d.child.id() as i32), Signal::SIGTERM).unwrap();
        }
        let status = wait_timeout(&mut d.child, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("round {round}: daemon still running 15 s later"));
        assert!(!is_mounted(&mnt), "round {round}: still mounted");
        let mut stderr = String::new();
        if let Some(mut e) = d.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        assert!(
            status.success(),
            "round {round}: the daemon exited with {status:?}; stderr:\n{stderr}"
        );
    }
    u.check_lower_unchanged();
}

/// The daemon's /dev/fuse loops: the first on its main thread, the others on threads
/// named `fuser-N`.
fn request_loops(pid: u32) -> usize {
    1 + threads_of(pid)
        .iter()
        .filter(|(name, _)| {
            name.strip_prefix("fuser-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

#[test]
fn request_threads_start_as_requests_wait_for_one() {
    if !require_root() {
        return;
    }
    let u = union();
    let chunk = vec![7u8; 8 << 20];
    for i in 0..8 {
        fs::write(u.lower.join(format!("big{i}")), &chunk).unwrap();
    }
    let mut cmd = unionfs_cmd();
    cmd.args(["-f", "-o", "uring=off"]).args(u.native_args());
    let mut g = MountGuard::foreground(cmd, &u.mnt, Duration::from_secs(15));
    let pid = g.child().unwrap().id();
    // A mount that served a request: the four loops it starts with, maybe one more.
    // (Requests one after the other can start more: the next may come before the loop
    // that answered the last one is back to waiting.)
    // A thread is named once it runs: on a loaded machine, give them a moment.
    fs::metadata(u.mnt.join("a.txt")).unwrap();
    wait_until(Duration::from_secs(5), || request_loops(pid) >= 4);
    let idle = request_loops(pid);
    assert!((4..=5).contains(&idle), "{idle} loops after one request");
    // Eight copy-ups at once: each holds its loop for a while, and loops start for the
    // others (at most n_threads: 8 to 16).
    let start = std::sync::Arc::new(std::sync::Barrier::new(8));
    let copies: Vec<_> = (0..8)
        .map(|i| {
            let (p, start) = (u.mnt.join(format!("big{i}")), start.clone());
            std::thread::spawn(move || {
                use std::os::unix::fs::PermissionsExt;
                start.wait();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
            })
        })
        .collect();
    for c in copies {
        c.join().unwrap().unwrap();
    }
    let busy = request_loops(pid);
    assert!(
        busy > idle && busy <= 16,
        "{busy} loops after eight copy-ups at once ({idle} before)"
    );
    for i in 0..8 {
        assert_eq!(fs::read(u.upper.join(format!("big{i}"))).unwrap(), chunk);
    }
    assert!(g.unmount().expect("status").success());
}

/// A field of /proc/PID/status or /proc/PID/limits, as its first number.
fn proc_number(path: &str, field: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .find_map(|w| w.parse().ok())
}

#[test]
fn the_daemon_grows_its_fd_table_before_it_serves() {
    if !require_root() {
        return;
    }
    let u = union();
    let mut cmd = unionfs_cmd();
    cmd.arg("-f").args(u.native_args());
    let mut g = MountGuard::foreground(cmd, &u.mnt, Duration::from_secs(15));
    let pid = g.child().unwrap().id();
    // Grown later, with its threads running, each step would wait for an RCU grace
    // period in the middle of a request.
    let soft = proc_number(&format!("/proc/{pid}/limits"), "Max open files").unwrap();
    let size = proc_number(&format!("/proc/{pid}/status"), "FDSize:").unwrap();
    assert!(
        size >= soft.min(4096),
        "fd table of {size} slots, open-file limit {soft}"
    );
    assert!(g.unmount().expect("status").success());
}

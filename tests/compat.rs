//! Drop-in compatibility (issue 7, docs/compat.md): podman with `unionfs` as its overlay
//! `mount_program` (root and rootless), fstab mounts through mount.fuse3 (root and a user
//! with `user` in fstab, from a private fstab via `mount -T`), bad input in each syntax,
//! `--version`/`--help`. unionfs-fuse's own command line: tests/unionfs_fuse.rs.
//!
//! Podman runs with a private storage (`--root`/`--runroot`/`--tmpdir` in the test's temp
//! tree, never the machine's configuration), `--runtime runc` (Debian's crun refuses this
//! host's hybrid cgroup layout), `--network none`, and `--ulimit` values within the hard
//! limits (root here lacks CAP_SYS_RESOURCE). Everything a test creates (containers,
//! images, storage, mounts) lives under its temp tree and is removed at the end.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::unionfs_fuse::uf_tree;
use crate::util::*;

fn have(tool: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

// ---------------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------------

/// A private podman world in a temp tree: storage, run root, tmp dir, a busybox image.
pub(crate) struct Podman {
    pub(crate) t: TempTree,
    /// Runs podman as this user (None: root).
    user: Option<&'static str>,
    bin: PathBuf,
    /// The OCI runtime podman calls.
    runtime: PathBuf,
    /// overlay with our unionfs as mount_program (else vfs).
    mount_program: bool,
}

pub(crate) const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

impl Podman {
    fn new(user: Option<&'static str>) -> Option<Podman> {
        Podman::with(user, PathBuf::from("runc"), true)
    }

    /// A podman world calling `runtime`, with overlay+unionfs storage or vfs.
    pub(crate) fn with(
        user: Option<&'static str>,
        runtime: PathBuf,
        mount_program: bool,
    ) -> Option<Podman> {
        if !require(
            have("podman") && have("runc"),
            "needs podman and runc (scripts/test.sh installs podman runc uidmap slirp4netns)",
        ) {
            return None;
        }
        let t = TempTree::new();
        let bin = t.install_bin();
        // Our runtime, where the unprivileged user can run it (the checkout may be 0700).
        let runtime = if runtime.is_absolute() {
            let dst = t
                .join("bin")
                .join(runtime.file_name().expect("runtime file name"));
            fs::copy(&runtime, &dst).expect("copy the runtime");
            dst
        } else {
            runtime
        };
        // A busybox rootfs tarball, no network.
        let rootfs = t.mkdir("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::create_dir_all(rootfs.join("tmp")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox");
        for c in [
            "sh", "cat", "ls", "echo", "rm", "mkdir", "id", "sleep", "true", "tty", "hostname",
            "head", "grep",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(c)).unwrap();
        }
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(t.join("bb.tar"))
                .arg("."),
        );
        t.mkdir("xdg");
        if let Some(u) = user {
            let (uid, gid) = user_ids(u).expect("test user");
            t.give_to(uid, gid);
            fs::set_permissions(
                t.join("xdg"),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
        }
        let p = Podman {
            t,
            user,
            bin,
            runtime,
            mount_program,
        };
        let out = p.podman(&[
            "import",
            p.t.join("bb.tar").to_str().unwrap(),
            "localhost/uf-bb:1",
        ]);
        assert!(out.success(), "podman import failed:\n{out}");
        Some(p)
    }

    /// The podman command line for this world.
    pub(crate) fn podman_command(&self, args: &[&str]) -> Command {
        let d = self.t.path();
        let mut c = match self.user {
            Some(u) => {
                let mut c = as_user(u, "env");
                c.arg(format!("XDG_RUNTIME_DIR={}", d.join("xdg").display()))
                    .arg(format!("HOME={}", d.display()))
                    .arg("podman");
                c
            }
            None => Command::new("podman"),
        };
        c.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(if self.mount_program {
                vec![
                    "--storage-driver".to_string(),
                    "overlay".into(),
                    "--storage-opt".into(),
                    format!("overlay.mount_program={}", self.bin.display()),
                ]
            } else {
                vec!["--storage-driver".to_string(), "vfs".into()]
            })
            .arg("--runtime")
            .arg(&self.runtime)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .current_dir(d);
        c
    }

    pub(crate) fn podman(&self, args: &[&str]) -> Outcome {
        run_timeout(&mut self.podman_command(args), Duration::from_secs(180))
    }

    #[track_caller]
    pub(crate) fn ok(&self, args: &[&str]) -> Outcome {
        let out = self.podman(args);
        assert!(out.success(), "podman failed:\n{out}");
        out
    }

    /// Our daemons for this storage still alive (by the binary's private path).
    pub(crate) fn daemons(&self) -> Vec<String> {
        let out = sh(&format!(
            "ps -eo stat=,args= | grep -v '^Z' | grep -F '{}' | grep -v grep || true",
            self.bin.display()
        ));
        out.stdout.lines().map(str::to_string).collect()
    }

    pub(crate) fn our_mounts(&self) -> Vec<MountInfo> {
        let root = self.t.path().to_path_buf();
        mounts()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&root))
            .collect()
    }

    pub(crate) fn round_trip(&self) {
        let run = |args: &[&str]| {
            let mut v = vec!["run", "--network", "none"];
            v.extend_from_slice(ULIMITS);
            v.extend_from_slice(args);
            self.ok(&v)
        };
        let out = run(&[
            "--name",
            "uf-c1",
            "localhost/uf-bb:1",
            "sh",
            "-c",
            "echo hello-unionfs > /tmp/hi && rm /bin/id && cat /tmp/hi",
        ]);
        assert!(out.stdout.contains("hello-unionfs"), "{out}");
        let diff = self.ok(&["diff", "uf-c1"]);
        assert!(
            diff.stdout.lines().any(|l| l.trim() == "A /tmp/hi"),
            "podman diff lists the new file:\n{diff}"
        );
        assert!(
            diff.stdout.lines().any(|l| l.trim() == "D /bin/id"),
            "podman diff lists the deletion:\n{diff}"
        );
        self.ok(&["commit", "uf-c1", "localhost/uf-bb:2"]);
        // --rm: containers-storage adds `volatile`.
        let out = run(&[
            "--rm",
            "localhost/uf-bb:2",
            "sh",
            "-c",
            "cat /tmp/hi; ls /bin/id 2>/dev/null || echo id-gone",
        ]);
        assert!(out.stdout.contains("hello-unionfs"), "{out}");
        assert!(out.stdout.contains("id-gone"), "{out}");
        self.ok(&["rm", "uf-c1"]);
        assert!(
            wait_until(Duration::from_secs(10), || self.our_mounts().is_empty()),
            "podman rm left mounts: {:?}",
            self.our_mounts()
        );
        assert!(
            wait_until(Duration::from_secs(10), || self.daemons().is_empty()),
            "podman rm left daemons: {:?}",
            self.daemons()
        );
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af"]);
        let _ = self.podman(&["rmi", "-af"]);
        // Storage files may belong to sub-uids: remove them from inside the user namespace.
        if self.user.is_some() {
            let _ = self.podman(&[
                "unshare",
                "rm",
                "-rf",
                self.t.join("storage").to_str().unwrap(),
            ]);
            // Rootless podman leaves a pause process holding its user namespace; this
            // one is ours (its pid file is in our XDG_RUNTIME_DIR).
            for pid in ["tmp/pause.pid", "xdg/libpod/tmp/pause.pid"]
                .iter()
                .filter_map(|f| fs::read_to_string(self.t.join(f)).ok())
                .filter_map(|s| s.trim().parse::<i32>().ok())
            {
                // SAFETY: plain kill of the process our podman started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn podman_mount_program_round_trip_as_root() {
    if !require_root() {
        return;
    }
    let Some(p) = Podman::new(None) else { return };
    p.round_trip();
}

#[test]
fn podman_mount_program_round_trip_rootless() {
    if require_test_user().is_none() {
        return;
    }
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !require(
        subuid
            .lines()
            .any(|l| l.starts_with(&format!("{TEST_USER}:"))),
        "needs /etc/subuid and /etc/subgid ranges for unionfs-test (scripts/test.sh adds them)",
    ) {
        return;
    }
    let Some(p) = Podman::new(Some(TEST_USER)) else {
        return;
    };
    p.round_trip();
}

// ---------------------------------------------------------------------------------------------
// mount -t / fstab through mount.fuse3
// ---------------------------------------------------------------------------------------------

/// A union tree: U (upper), L (lower), W (work), mnt; and a private fstab line for it.
struct Fstab {
    t: TempTree,
    fstab: PathBuf,
    mnt: PathBuf,
}

fn fstab(extra: &str, user: Option<(u32, u32)>) -> Fstab {
    let t = TempTree::new();
    t.install_bin();
    // `fuse` with `PROGRAM#SOURCE`: mount.fuse3 runs PROGRAM. (`fuse.unionfs` would run
    // `unionfs` from mount(8)'s own PATH, where Debian's unionfs-fuse is /usr/bin/unionfs.)
    t.write("L/low.txt", "low\n");
    t.mkdir("U");
    t.mkdir("W");
    let mnt = t.mkdir("mnt");
    let line = format!(
        "{bin}#uf-fstab-test {mnt} fuse lowerdir={l},upperdir={u},workdir={w},noauto{extra} 0 0\n",
        bin = t.join("bin/unionfs").display(),
        mnt = mnt.display(),
        l = t.join("L").display(),
        u = t.join("U").display(),
        w = t.join("W").display(),
    );
    let fstab = t.write("fstab", line);
    if let Some((uid, gid)) = user {
        t.give_to(uid, gid);
    }
    Fstab { t, fstab, mnt }
}

impl Fstab {
    fn path_env(&self) -> String {
        format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            self.t.join("bin").display()
        )
    }
}

#[test]
fn mount_t_fuse_unionfs_as_root() {
    if !require_root() || !require(have("mount.fuse3"), "needs mount.fuse3 (fuse3)") {
        return;
    }
    let f = fstab("", None);
    let mut c = Command::new("mount");
    c.env("PATH", f.path_env())
        .args(["-t", "fuse", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            f.t.join("L").display(),
            f.t.join("U").display(),
            f.t.join("W").display()
        ))
        .arg(format!("{}#mysrc", f.t.join("bin/unionfs").display()))
        .arg(&f.mnt);
    let g = MountGuard::run(c, &f.mnt);
    assert_eq!(g.info().fstype, "fuse.unionfs", "{:?}", g.info());
    assert_eq!(g.info().source, "mysrc");
    assert_eq!(fs::read_to_string(f.mnt.join("low.txt")).unwrap(), "low\n");
    fs::write(f.mnt.join("new.txt"), "new\n").unwrap();
    let mut u = Command::new("umount");
    u.arg(&f.mnt);
    run_ok(&mut u);
    g.forget();
    assert!(!is_mounted(&f.mnt));
    assert_eq!(fs::read_to_string(f.t.join("U/new.txt")).unwrap(), "new\n");
}

#[test]
fn private_fstab_mount_as_root() {
    if !require_root() || !require(have("mount.fuse3"), "needs mount.fuse3 (fuse3)") {
        return;
    }
    let f = fstab("", None);
    let mut c = Command::new("mount");
    c.env("PATH", f.path_env())
        .arg("-T")
        .arg(&f.fstab)
        .arg(&f.mnt);
    let g = MountGuard::run(c, &f.mnt);
    assert_eq!(g.info().source, "uf-fstab-test");
    assert_eq!(fs::read_to_string(f.mnt.join("low.txt")).unwrap(), "low\n");
    let mut u = Command::new("umount");
    u.arg(&f.mnt); // util-linux 2.38's umount has no -T
    run_ok(&mut u);
    g.forget();
    assert!(!is_mounted(&f.mnt));
}

#[test]
fn private_fstab_mount_as_user() {
    let Some((uid, gid)) = require_test_user() else {
        return;
    };
    if !require(have("mount.fuse3"), "needs mount.fuse3 (fuse3)") {
        return;
    }
    // mount(8) honours `user` only for /etc/fstab; with -T as non-root it refuses
    // ("only root can use --fstab"), so the user path is the one fstab documents: a
    // `user` line mounted by mount point. We check that mount.fuse3 + unionfs do the
    // user's part: the same line's options, run as the user (what mount(8) does after
    // checking `user`).
    let f = fstab(",user", Some((uid, gid)));
    let mut c = as_user(TEST_USER, "env");
    c.arg(format!("PATH={}", f.path_env()))
        .arg("mount.fuse3")
        .arg(format!(
            "{}#uf-fstab-test",
            f.t.join("bin/unionfs").display()
        ))
        .arg(&f.mnt)
        .arg("-o")
        .arg(format!(
            "lowerdir={},upperdir={},workdir={},noauto,user",
            f.t.join("L").display(),
            f.t.join("U").display(),
            f.t.join("W").display()
        ));
    let g = MountGuard::run(c, &f.mnt);
    assert_eq!(g.info().source, "uf-fstab-test");
    let out = run(as_user(TEST_USER, "cat").arg(f.mnt.join("low.txt")));
    assert_eq!(out.stdout, "low\n", "{out}");
    run_ok(as_user(TEST_USER, "fusermount3").arg("-u").arg(&f.mnt));
    g.forget();
    assert!(!is_mounted(&f.mnt));
}

// ---------------------------------------------------------------------------------------------
// Bad input in each syntax: one line, exit 2, nothing mounted
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_in_each_syntax() {
    let u = uf_tree();
    let d = |n: &str| u.t.join(n).display().to_string();
    let m = d("mnt");
    let w = u.t.mkdir("w");
    let ovl = format!(
        "lowerdir={},upperdir={},workdir={}",
        d("ro"),
        d("rw"),
        w.display()
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        // unionfs-fuse
        (
            vec!["-o".into(), "cow,bogus_opt".into(), u.src(), m.clone()],
            "bogus_opt",
        ),
        (
            vec!["-o".into(), "max_files=lots".into(), u.src(), m.clone()],
            "max_files",
        ),
        (
            vec![format!("{}=RW:{}=XX", d("rw"), d("ro")), m.clone()],
            "XX",
        ),
        (
            vec![format!("{}=RW:{}=RO", d("rw"), d("nope")), m.clone()],
            "nope",
        ),
        (
            vec![
                "-o".into(),
                format!("chroot={}", d("nope")),
                u.src(),
                m.clone(),
            ],
            "nope",
        ),
        // fuse-overlayfs / podman form
        (
            vec!["-o".into(), format!("{ovl},squash_to_uid=0"), m.clone()],
            "squash_to_uid",
        ),
        (
            vec![
                "-o".into(),
                format!("{ovl},uidmapping=:0:100000:65536"),
                m.clone(),
            ],
            "uidmapping",
        ),
        (
            vec!["-o".into(), format!("{ovl},plugins=x"), m.clone()],
            "plugins",
        ),
        (
            vec!["-o".into(), format!("{ovl},fsync=2"), m.clone()],
            "fsync",
        ),
        // mount -t / fstab form
        (
            vec![
                "src".into(),
                m.clone(),
                "-o".into(),
                format!("{ovl},frobnicate"),
            ],
            "frobnicate",
        ),
        (
            vec![
                "src".into(),
                m.clone(),
                "-o".into(),
                format!("{ovl},umask=022"),
            ],
            "umask",
        ),
        // native
        (
            vec![
                "--branch".into(),
                d("rw"),
                "-o".into(),
                "whiteout=unionfs".into(),
                m.clone(),
            ],
            "whiteout=unionfs",
        ),
    ];
    for (args, name) in cases {
        let before = mounts_at(&u.mnt).len();
        let out = run_timeout(
            Command::new(unionfs_bin()).args(&args),
            Duration::from_secs(30),
        );
        assert_eq!(
            mounts_at(&u.mnt).len(),
            before,
            "mounted on bad input:\n{out}"
        );
        assert_eq!(out.code(), Some(2), "{out}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line:\n{out}");
        assert!(lines[0].starts_with("unionfs: "), "{out}");
        assert!(lines[0].contains(name), "the line names {name}:\n{out}");
    }
}

#[test]
fn version_and_help() {
    let out = run_ok(Command::new(unionfs_bin()).arg("--version"));
    let want = format!("unionfs {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(out.stdout.trim(), want, "{out}");
    let help = run_ok(Command::new(unionfs_bin()).arg("--help"));
    for word in [
        "lowerdir=",
        "whiteout=",
        "cow",
        "max_files=",
        "uidmapping=",
        "mount_program",
        "docs/compat.md",
    ] {
        assert!(
            help.stdout.contains(word),
            "--help mentions {word}:\n{help}"
        );
    }
}

#[test]
fn overlay_form_as_root_serves_every_uid_as_fuse_overlayfs_does() {
    if !require_root() || require_test_user().is_none() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let t = TempTree::new();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    t.write("L/low.txt", "low\n");
    let (up, work, mnt, mnt2) = (t.mkdir("U"), t.mkdir("W"), t.mkdir("m"), t.mkdir("m2"));
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        t.join("L").display(),
        up.display(),
        work.display()
    );
    let g = MountGuard::mount(["-o", &opts, mnt.to_str().unwrap()], &mnt);
    let out = run(as_user(TEST_USER, "cat").arg(mnt.join("low.txt")));
    assert!(out.success() && out.stdout == "low\n", "{out}");
    g.unmount();
    // The native form stays private to the mounter unless asked (allow_other).
    let g = MountGuard::mount(
        [
            "--branch",
            &format!("{}=rw", up.display()),
            "--branch",
            &format!("{}=ro", t.join("L").display()),
            mnt2.to_str().unwrap(),
        ],
        &mnt2,
    );
    let out = run(as_user(TEST_USER, "cat").arg(mnt2.join("low.txt")));
    assert!(!out.success(), "another uid reached a private mount: {out}");
    g.unmount();
}

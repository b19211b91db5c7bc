//! Rootless: the unprivileged user `unionfs-test` (created by scripts/test.sh) mounts through
//! fusermount3, reads, writes and deletes, and unmounts with `fusermount3 -u`.
//!
//! Needs /dev/fuse mode 0666 (scripts/test.sh sets it). FUSE denies every other user,
//! root included, access to the mount (no allow_other), so everything that goes through
//! the mount runs as the user; the branches are inspected directly.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

struct Rootless {
    uid: u32,
    gid: u32,
    bin: PathBuf,
    upper: PathBuf,
    lower: PathBuf,
    mnt: PathBuf,
    t: TempTree,
}

fn setup() -> Option<Rootless> {
    let (uid, gid) = require_rootless_fuse()?;
    let t = TempTree::new();
    let bin = t.install_bin();
    t.write("L/a.txt", "lower a\n");
    t.write("L/gone.txt", "delete me\n");
    t.write("L/dir/b.txt", "lower b\n");
    t.write("L/olddir/x.txt", "x\n");
    t.mkdir("U");
    t.mkdir("mnt");
    t.give_to(uid, gid);
    Some(Rootless {
        uid,
        gid,
        bin,
        upper: t.join("U"),
        lower: t.join("L"),
        mnt: t.join("mnt"),
        t,
    })
}

impl Rootless {
    /// Runs a shell snippet as the test user, in the temp tree.
    #[track_caller]
    fn user_sh(&self, script: &str) -> Outcome {
        let mut c = as_user(TEST_USER, "sh");
        c.arg("-c").arg(script).current_dir(self.t.path());
        run_timeout(&mut c, Duration::from_secs(60))
    }
}

/// Which whiteout format a `-v` log line names, if any (e.g. "whiteout format: overlay").
fn reported_format(stderr: &str) -> Option<&'static str> {
    for line in stderr.lines().map(str::to_ascii_lowercase) {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(i) = words
            .iter()
            .position(|w| *w == "whiteout" || *w == "whiteouts")
        {
            for w in words.iter().skip(i + 1).take(3) {
                match *w {
                    "overlay" => return Some("overlay"),
                    "wh" | ".wh." => return Some("wh"),
                    _ => {}
                }
            }
        }
    }
    None
}

/// The whiteout the upper branch holds for `name` in `dir`: "overlay" (a 0/0 char device
/// under the name) or "wh" (`.wh.NAME`); panics unless exactly one is there.
#[track_caller]
fn whiteout_in(dir: &Path, name: &str) -> &'static str {
    let dev = fs::symlink_metadata(dir.join(name))
        .ok()
        .filter(|m| m.file_type().is_char_device() && m.rdev() == 0);
    let wh = fs::symlink_metadata(dir.join(format!(".wh.{name}"))).is_ok();
    match (dev.is_some(), wh) {
        (true, false) => "overlay",
        (false, true) => "wh",
        other => panic!(
            "expected exactly one whiteout for {name} in {} (0/0 char device or .wh.{name}), found {other:?}: {:?}",
            dir.display(),
            list_dir(dir)
        ),
    }
}

#[test]
fn user_mounts_reads_writes_deletes_and_unmounts() {
    let Some(r) = setup() else { return };
    let mut cmd = as_user(TEST_USER, &r.bin);
    cmd.arg("-v")
        .arg("--branch")
        .arg(format!("{}=rw", r.upper.display()))
        .arg("--branch")
        .arg(format!("{}=ro", r.lower.display()))
        .arg(&r.mnt)
        .current_dir(r.t.path());
    let g = MountGuard::run(cmd, &r.mnt);
    assert!(g.info().fstype.starts_with("fuse"), "{:?}", g.info());
    assert!(
        g.info().super_opts.contains(&format!("user_id={}", r.uid)),
        "mounted on behalf of the user: {:?}",
        g.info()
    );
    let lower_before = tree_snapshot_with_times(&r.lower);

    let m = r.mnt.display();
    let out = r
        .user_sh(&format!("ls -1A '{m}' && cat '{m}/a.txt' '{m}/dir/b.txt'"))
        .ok();
    assert_eq!(
        out.stdout, "a.txt\ndir\ngone.txt\nolddir\nlower a\nlower b\n",
        "{out}"
    );

    // A new file and a copy-up, both owned by the user.
    r.user_sh(&format!(
        "echo new > '{m}/new.txt' && echo more >> '{m}/a.txt'"
    ))
    .ok();
    assert_eq!(
        fs::read_to_string(r.upper.join("new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(r.upper.join("a.txt")).unwrap(),
        "lower a\nmore\n"
    );
    for f in ["new.txt", "a.txt"] {
        let md = fs::symlink_metadata(r.upper.join(f)).unwrap();
        assert_eq!((md.uid(), md.gid()), (r.uid, r.gid), "owner of upper/{f}");
    }

    // Passthrough needs CAP_SYS_ADMIN in the initial namespace: a user's mount falls back
    // to serving reads and writes itself, and they work (above).
    let out = r
        .user_sh(&format!("'{}' ctl '{m}' stats --json", r.bin.display()))
        .ok();
    let st: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(st["passthrough_opens"].as_u64(), Some(0), "{out}");
    assert!(st["data_requests"].as_u64().unwrap() > 0, "{out}");

    // Delete a lower file: a whiteout in the upper branch, the name gone from the union.
    r.user_sh(&format!("rm '{m}/gone.txt'")).ok();
    let format = whiteout_in(&r.upper, "gone.txt");
    eprintln!("rootless whiteout format: {format}");
    let out = r
        .user_sh(&format!("test ! -e '{m}/gone.txt' && ls -1A '{m}'"))
        .ok();
    assert_eq!(out.stdout, "a.txt\ndir\nnew.txt\nolddir\n", "{out}");
    if let Some(reported) = reported_format(&g.output().stderr) {
        assert_eq!(
            reported,
            format,
            "-v reported {reported}; stderr:\n{}",
            g.output().stderr
        );
    }

    // Replace a lower directory: the new one is opaque and empty.
    r.user_sh(&format!("rm -r '{m}/olddir' && mkdir '{m}/olddir'"))
        .ok();
    let out = r.user_sh(&format!("ls -1A '{m}/olddir'")).ok();
    assert_eq!(
        out.stdout, "",
        "a directory made over a deleted one is empty"
    );
    let opaque = match format {
        "overlay" => get_xattr(&r.upper.join("olddir"), "user.overlay.opaque").is_some(),
        _ => r.upper.join("olddir/.wh..wh..opq").exists(),
    };
    assert!(
        opaque,
        "upper/olddir must be opaque in the {format} format (rootless: user.overlay.opaque or .wh..wh..opq); xattrs {:?}, entries {:?}",
        list_xattrs(&r.upper.join("olddir")),
        list_dir(&r.upper.join("olddir"))
    );

    // The user unmounts.
    let out = r.user_sh(&format!("fusermount3 -u '{m}'"));
    assert!(out.success(), "fusermount3 -u as the user:\n{out}");
    assert!(
        wait_until(Duration::from_secs(10), || !is_mounted(&r.mnt)),
        "still mounted after fusermount3 -u"
    );
    g.forget();
    let after = tree_snapshot_with_times(&r.lower);
    assert_snapshots_eq("lower before", &lower_before, "lower after", &after);
}

#[test]
fn user_mount_overlay_syntax_with_explicit_wh_format() {
    let Some(r) = setup() else { return };
    let work = r.t.mkdir("W");
    chown_tree(&work, r.uid, r.gid);
    let mut cmd = as_user(TEST_USER, &r.bin);
    cmd.arg("-o")
        .arg(format!(
            "lowerdir={},upperdir={},workdir={},whiteout=wh",
            r.lower.display(),
            r.upper.display(),
            work.display()
        ))
        .arg(&r.mnt)
        .current_dir(r.t.path());
    let g = MountGuard::run(cmd, &r.mnt);
    let m = r.mnt.display();
    r.user_sh(&format!("rm '{m}/gone.txt' && echo x > '{m}/dir/c.txt'"))
        .ok();
    assert_eq!(whiteout_in(&r.upper, "gone.txt"), "wh");
    assert_eq!(
        fs::read_to_string(r.upper.join("dir/c.txt")).unwrap(),
        "x\n"
    );
    let out = r.user_sh(&format!("ls -1A '{m}' '{m}/dir'")).ok();
    assert!(
        !out.stdout.contains("gone.txt") && !out.stdout.contains(".wh."),
        "{out}"
    );
    // Names with the format's prefix cannot be created through the union.
    let out = r.user_sh(&format!("echo x > '{m}/.wh.sneaky'"));
    assert!(!out.success(), "creating .wh.* must fail (EPERM):\n{out}");
    assert!(!r.upper.join(".wh.sneaky").exists());
    let out = r.user_sh(&format!("fusermount3 -u '{m}'"));
    assert!(out.success(), "fusermount3 -u as the user:\n{out}");
    assert!(wait_until(Duration::from_secs(10), || !is_mounted(&r.mnt)));
    g.forget();
}

//! Bad input on the command line (docs/cli.md): exit code 2, exactly one line on stderr
//! starting `unionfs: `, nothing mounted and nothing changed on disk. Plus `--help`, a busy
//! mount point, and an inaccessible /dev/fuse (a run-time failure whose message must say
//! what to do).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A tree with an upper branch `A`, a lower branch `B` and an empty mount point `mnt`.
struct Setup {
    t: TempTree,
    a: PathBuf,
    b: PathBuf,
    mnt: PathBuf,
}

fn setup() -> Setup {
    let t = TempTree::new();
    t.write("A/top.txt", "from A\n");
    t.write("B/low.txt", "from B\n");
    t.write("B/sub/deep.txt", "deep\n");
    let (a, b, mnt) = (t.join("A"), t.join("B"), t.mkdir("mnt"));
    Setup { t, a, b, mnt }
}

fn branch(dir: &Path, mode: &str) -> Vec<OsString> {
    let mut v = OsString::from(dir);
    v.push("=");
    v.push(mode);
    vec!["--branch".into(), v]
}

/// Runs `unionfs ARGS` and checks the bad-input contract. `mnt` is where a mistaken mount
/// would appear; `skip` are tree-relative paths left out of the before/after comparison.
/// `names` must all appear in the error line (the option or path at fault).
#[track_caller]
fn expect_bad_input(s: &Setup, args: Vec<OsString>, skip: &[&str], names: &[&str]) -> Outcome {
    let opts = SnapshotOptions {
        mtimes: true,
        skip: skip.iter().map(PathBuf::from).collect(),
        ..Default::default()
    };
    let before = tree_snapshot_with(s.t.path(), &opts);
    let mounted_before = mounts_at(&s.mnt).len();
    let out = run_timeout(
        Command::new(unionfs_bin()).args(&args),
        Duration::from_secs(30),
    );
    // Checked first and right away: a mistaken mount is the worst outcome (TempTree's drop
    // unmounts it).
    assert_eq!(
        mounts_at(&s.mnt).len(),
        mounted_before,
        "bad input must mount nothing, but {} got mounted:\n{out}",
        s.mnt.display()
    );
    assert_eq!(out.code(), Some(2), "bad input must exit with 2:\n{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("unionfs: "),
        "bad input must print exactly one line on stderr starting with `unionfs: `:\n{out}"
    );
    for n in names {
        assert!(
            lines[0].contains(n),
            "the error line should name `{n}`:\n{out}"
        );
    }
    let after = tree_snapshot_with(s.t.path(), &opts);
    assert_snapshots_eq("before", &before, "after", &after);
    out
}

fn with_mnt(mut args: Vec<OsString>, mnt: &Path) -> Vec<OsString> {
    args.push(mnt.into());
    args
}

#[test]
fn missing_branch_dir() {
    let s = setup();
    let missing = s.t.join("no-such-branch");
    let args = [branch(&s.a, "rw"), branch(&missing, "ro")].concat();
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &["no-such-branch"]);
}

#[test]
fn missing_branch_dir_overlay_syntax() {
    let s = setup();
    let w = s.t.mkdir("work");
    let opt = format!(
        "lowerdir={}/missing-lower,upperdir={},workdir={}",
        s.t.path().display(),
        s.a.display(),
        w.display()
    );
    let args = vec!["-o".into(), opt.into(), s.mnt.clone().into()];
    expect_bad_input(&s, args, &[], &["missing-lower"]);
}

#[test]
fn branch_is_a_file() {
    let s = setup();
    let file = s.t.write("plain-file", "not a dir\n");
    let args = [branch(&s.a, "rw"), branch(&file, "ro")].concat();
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &["plain-file"]);
}

#[test]
fn same_branch_twice() {
    let s = setup();
    let args = [branch(&s.a, "rw"), branch(&s.b, "ro"), branch(&s.a, "ro")].concat();
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &[]);
}

#[test]
fn same_branch_twice_through_a_symlink() {
    // The same directory under another name is still the same branch (compare dev/ino,
    // not strings).
    let s = setup();
    let alias = s.t.symlink(&s.b, "alias-of-B");
    let args = [branch(&s.a, "rw"), branch(&s.b, "ro"), branch(&alias, "ro")].concat();
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &[]);
}

#[test]
fn branch_contains_the_mount_point() {
    let s = setup();
    let inner = s.t.mkdir("A/inner-mnt");
    let args = [branch(&s.a, "rw"), branch(&s.b, "ro")].concat();
    let s2 = Setup {
        mnt: inner.clone(),
        ..s
    };
    expect_bad_input(&s2, with_mnt(args, &inner), &[], &[]);
}

#[test]
fn branch_inside_the_mount_point() {
    let s = setup();
    let inside = s.t.mkdir("mnt/inside");
    let args = [branch(&inside, "rw"), branch(&s.b, "ro")].concat();
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &[]);
}

#[test]
fn mount_point_as_a_branch() {
    let s = setup();
    let args = [branch(&s.mnt, "rw"), branch(&s.b, "ro")].concat();
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &[]);
}

#[test]
fn no_branches() {
    let s = setup();
    expect_bad_input(&s, vec![s.mnt.clone().into()], &[], &[]);
}

#[test]
fn no_mount_point() {
    let s = setup();
    let args = [branch(&s.a, "rw"), branch(&s.b, "ro")].concat();
    expect_bad_input(&s, args, &[], &[]);
}

#[test]
fn create_top_without_rw_branch() {
    let s = setup();
    let mut args = branch(&s.b, "ro");
    args.extend(["-o".into(), "create=top".into()]);
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &[]);
}

#[test]
fn unknown_option() {
    let s = setup();
    let mut args = [branch(&s.a, "rw"), branch(&s.b, "ro")].concat();
    args.extend(["-o".into(), "bogus=1".into()]);
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &["bogus"]);
}

#[test]
fn bad_option_values() {
    for opt in [
        "whiteout=sideways",
        "delete=some",
        "create=bottom",
        "entry_timeout=soon",
        "attr_timeout=-1",
    ] {
        let s = setup();
        let mut args = [branch(&s.a, "rw"), branch(&s.b, "ro")].concat();
        args.extend(["-o".into(), opt.into()]);
        let name = opt.split('=').next().unwrap();
        expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &[name]);
    }
}

#[test]
fn bad_branch_mode() {
    let s = setup();
    let args = [branch(&s.a, "rw"), branch(&s.b, "rx")].concat();
    expect_bad_input(&s, with_mnt(args, &s.mnt), &[], &["rx"]);
}

#[test]
fn missing_mount_point() {
    let s = setup();
    let missing = s.t.join("no-such-mnt");
    let args = [branch(&s.a, "rw"), branch(&s.b, "ro")].concat();
    let s2 = Setup {
        mnt: missing.clone(),
        ..s
    };
    expect_bad_input(&s2, with_mnt(args, &missing), &[], &["no-such-mnt"]);
    assert!(
        !missing.exists(),
        "the missing mount point must not be created"
    );
}

#[test]
fn busy_mount_point() {
    if !require_root() {
        return;
    }
    let s = setup();
    let args = with_mnt([branch(&s.a, "rw"), branch(&s.b, "ro")].concat(), &s.mnt);
    let g = MountGuard::mount(&args, &s.mnt);
    // The branches must not change either; the live mount itself is left out.
    expect_bad_input(&s, args, &["mnt"], &[]);
    assert_eq!(
        mounts_at(&s.mnt).len(),
        1,
        "exactly the first mount must remain"
    );
    assert_eq!(
        std::fs::read_to_string(s.mnt.join("low.txt")).unwrap(),
        "from B\n"
    );
    g.unmount();
}

#[test]
fn help_mentions_every_option() {
    let out = run_ok(Command::new(unionfs_bin()).arg("--help"));
    let help = &out.stdout;
    for word in [
        "--branch",
        "-f",
        "-v",
        "-o",
        "dirs",
        "lowerdir",
        "upperdir",
        "workdir",
        "whiteout",
        "delete",
        "create",
        "entry_timeout",
        "attr_timeout",
        "allow_other",
        "allow_root",
        "overlay",
        "wh",
        "parent",
        "top",
        "first",
    ] {
        assert!(
            help.contains(word),
            "--help should mention `{word}` (docs/cli.md):\n{out}"
        );
    }
}

/// /dev/fuse that the user cannot open: inside a private mount namespace a root-only file
/// is bound over /dev/fuse (the machine's /dev/fuse is not touched), then the binary runs
/// as the unprivileged test user. The issue counts this as bad input: exit 2 and a message
/// that names /dev/fuse and says what to do.
#[test]
fn dev_fuse_not_accessible() {
    let Some((uid, gid)) = require_test_user() else {
        return;
    };
    let s = setup();
    let bin = s.t.install_bin();
    s.t.give_to(uid, gid);
    let denied = s.t.write("denied-fuse", "");
    std::os::unix::fs::lchown(&denied, Some(0), Some(0)).unwrap();
    s.t.chmod("denied-fuse", 0o600);
    let script = format!(
        r#"mount --bind '{denied}' /dev/fuse || exit 99
runuser -u {TEST_USER} -- '{bin}' --branch '{a}=rw' --branch '{b}=ro' '{mnt}'
rc=$?
if grep -qF ' {mnt} ' /proc/self/mountinfo; then echo MOUNTED; umount -l '{mnt}'; fi
exit $rc"#,
        denied = denied.display(),
        bin = bin.display(),
        a = s.a.display(),
        b = s.b.display(),
        mnt = s.mnt.display(),
    );
    let out = run_timeout(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .current_dir(s.t.path()),
        Duration::from_secs(30),
    );
    assert_ne!(out.code(), Some(99), "test setup failed:\n{out}");
    assert!(!out.stdout.contains("MOUNTED"), "mounted anyway:\n{out}");
    assert_eq!(
        out.code(),
        Some(2),
        "an unusable /dev/fuse exits with 2:\n{out}"
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("unionfs: "))
        .unwrap_or_else(|| panic!("no `unionfs: ` line on stderr:\n{out}"));
    assert!(
        line.contains("/dev/fuse"),
        "the message must name /dev/fuse:\n{out}"
    );
    assert!(
        ["chmod", "666", "udev", "group", "modprobe", "as root"]
            .iter()
            .any(|w| line.contains(w)),
        "the message must say what to do (e.g. `chmod 0666 /dev/fuse`):\n{out}"
    );
}

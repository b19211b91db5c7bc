//! Everyday tools on a union whose lower branch is read-only: find, tar (both ways), cp -a,
//! rm -rf, git and cargo must all succeed, and afterwards the lower branch must be byte for
//! byte unchanged, mtimes included.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A mounted union: empty upper `U` (rw) over the generated lower `L` (ro).
struct Fixture {
    // Field order is drop order: unmount before the tree is deleted.
    guard: Option<MountGuard>,
    lower: PathBuf,
    upper: PathBuf,
    mnt: PathBuf,
    lower_before: Snapshot,
    t: TempTree,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if !require_root() {
            return None;
        }
        let t = TempTree::new();
        let lower = make_lower(&t, "L");
        let upper = t.mkdir("U");
        let mnt = t.mkdir("mnt");
        let lower_before = tree_snapshot_with_times(&lower);
        let guard = MountGuard::mount(
            [
                "--branch".to_string(),
                format!("{}=rw", upper.display()),
                "--branch".to_string(),
                format!("{}=ro", lower.display()),
                mnt.display().to_string(),
            ],
            &mnt,
        );
        Some(Fixture {
            guard: Some(guard),
            lower,
            upper,
            mnt,
            lower_before,
            t,
        })
    }

    fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Unmounts and checks that the lower branch did not change at all.
    #[track_caller]
    fn finish(mut self) {
        self.guard.take().expect("mounted").unmount();
        let after = tree_snapshot_with_times(&self.lower);
        assert_snapshots_eq("lower before", &self.lower_before, "lower after", &after);
    }
}

/// Deterministic pseudo-random bytes (xorshift), for a file bigger than one FUSE request.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A small source tree (several kinds of objects) plus a cargo crate without dependencies,
/// with fixed mtimes (nanoseconds included) so that preservation is visible.
fn make_lower(t: &TempTree, name: &str) -> PathBuf {
    let p = |rel: &str| format!("{name}/{rel}");
    for d in 0..6 {
        for f in 0..10 {
            let line = format!("// module {d}, file {f}\n");
            t.write(
                p(&format!("src/mod{d}/file{f}.rs")),
                line.repeat(d * 10 + f),
            );
        }
    }
    t.write(p("src/big.bin"), noise(300_000, 42));
    t.write(p("src/empty"), "");
    t.write(p("src/a/b/c/d/e/f/leaf.txt"), "deep\n");
    t.symlink("mod0/file1.rs", p("src/link-to-file"));
    t.symlink("mod1", p("src/link-to-dir"));
    t.symlink("nowhere/at/all", p("src/dangling"));
    t.write(p("src/hard1"), "two names, one inode\n");
    t.hardlink(p("src/hard1"), p("src/hard2"));
    t.write(p("bin/run.sh"), "#!/bin/sh\necho run\n");
    t.chmod(p("bin/run.sh"), 0o755);
    t.write(p("private/secret"), "secret\n");
    t.chmod(p("private/secret"), 0o600);
    t.chmod(p("private"), 0o700);
    set_xattr(&t.join(p("src/mod2/file3.rs")), "user.comment", b"kept");
    t.write(
        p("proj/Cargo.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    );
    t.write(
        p("proj/src/lib.rs"),
        "pub fn greeting() -> &'static str {\n    \"hello from the union\"\n}\n",
    );
    t.write(
        p("proj/src/main.rs"),
        "fn main() {\n    println!(\"{}\", hello::greeting());\n}\n",
    );
    let root = t.join(name);
    stamp_times(&root, &mut 0);
    root
}

/// Sets distinct fixed times on everything below `dir`, children before their directory.
fn stamp_times(path: &Path, n: &mut i64) {
    if fs::symlink_metadata(path).unwrap().is_dir() {
        let mut kids: Vec<PathBuf> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        kids.sort();
        for k in kids {
            stamp_times(&k, n);
        }
    }
    *n += 1;
    // 2020-01-02 plus n minutes, with a non-zero nanosecond part.
    let t = 1_577_923_200 + *n * 60;
    set_times(path, (t, 0), (t, 123_456_789 + *n));
}

/// Relative paths below `root`, as `find ROOT -printf '%P\n'` prints them.
fn rel_paths(snap: &Snapshot) -> Vec<String> {
    snap.keys()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn find_lists_the_merged_tree() {
    let Some(fx) = Fixture::new() else { return };
    let out = run_ok(Command::new("find").arg(&fx.mnt).args(["-printf", "%P\\n"]));
    let mut found: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    found.sort();
    let mut expected = rel_paths(&fx.lower_before);
    expected.sort();
    assert_eq!(found, expected, "find through the mount");
    let out = run_ok(Command::new("find").arg(&fx.mnt).args(["-type", "l"]));
    assert_eq!(out.stdout.lines().count(), 3, "symlinks:\n{out}");
    fx.finish();
}

fn tar() -> Command {
    let mut c = Command::new("tar");
    c.args(["--format=posix", "--xattrs", "--xattrs-include=user.*"]);
    c
}

#[test]
fn tar_c_of_the_mount() {
    let Some(fx) = Fixture::new() else { return };
    let archive = fx.t.join("union.tar");
    run_ok(
        tar()
            .arg("-C")
            .arg(&fx.mnt)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    );
    let out_dir = fx.t.mkdir("extracted");
    run_ok(tar().arg("-C").arg(&out_dir).arg("-xpf").arg(&archive));
    // pax archives keep nanosecond mtimes, hard links, symlinks, modes and user xattrs.
    // The root is left out: the union's root is the upper dir's (its mtime is now).
    let mut got = tree_snapshot_with_times(&out_dir);
    let mut want = fx.lower_before.clone();
    got.remove(Path::new(""));
    want.remove(Path::new(""));
    assert_snapshots_eq("lower", &want, "tar c of the mount", &got);
    fx.finish();
}

#[test]
fn tar_x_into_the_mount() {
    let Some(fx) = Fixture::new() else { return };
    // A separate tree to extract: new files plus a file that replaces a lower one.
    let src = fx.t.mkdir("incoming");
    fx.t.write("incoming/new/one.txt", "one\n");
    fx.t.write("incoming/new/deep/two.txt", noise(70_000, 7));
    fx.t.symlink("one.txt", "incoming/new/link");
    fx.t.hardlink("incoming/new/one.txt", "incoming/new/one-again.txt");
    fx.t.write("incoming/src/mod0/file0.rs", "// replaced by tar x\n");
    set_xattr(&fx.t.join("incoming/new/one.txt"), "user.from", b"tar");
    stamp_times(&src, &mut 1000);
    let archive = fx.t.join("incoming.tar");
    run_ok(
        tar()
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&archive)
            .arg("new")
            .arg("src"),
    );

    run_ok(tar().arg("-C").arg(&fx.mnt).arg("-xpf").arg(&archive));
    let want = tree_snapshot_with_times(&src.join("new"));
    let got = tree_snapshot_with_times(&fx.m("new"));
    assert_snapshots_eq("archived", &want, "extracted into the mount", &got);
    assert_eq!(
        fs::read_to_string(fx.m("src/mod0/file0.rs")).unwrap(),
        "// replaced by tar x\n"
    );
    assert_eq!(
        fs::read_to_string(fx.upper.join("src/mod0/file0.rs")).unwrap(),
        "// replaced by tar x\n",
        "the replaced file lives in the upper branch"
    );
    assert!(fx.upper.join("new/deep/two.txt").is_file());
    fx.finish();
}

#[test]
fn cp_a_within_the_mount() {
    let Some(fx) = Fixture::new() else { return };
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(fx.m("src"))
            .arg(fx.m("src-copy")),
    );
    let orig = tree_snapshot_with_times(&fx.m("src"));
    let copy = tree_snapshot_with_times(&fx.m("src-copy"));
    assert_snapshots_eq("src", &orig, "src-copy", &copy);
    assert!(fx.upper.join("src-copy/big.bin").is_file());
    assert!(!fx.lower.join("src-copy").exists());
    fx.finish();
}

#[test]
fn rm_rf_of_a_lower_subtree() {
    let Some(fx) = Fixture::new() else { return };
    run_ok(
        Command::new("rm")
            .arg("-rf")
            .arg(fx.m("src/mod3"))
            .arg(fx.m("src/a")),
    );
    assert!(!fx.m("src/mod3").exists());
    let names = list_dir(&fx.m("src"));
    assert!(!names.contains(&"mod3".to_string()), "{names:?}");
    assert!(!names.contains(&"a".to_string()), "{names:?}");
    assert!(names.contains(&"mod2".to_string()), "{names:?}");
    // A directory made where a deleted one stood is empty (opaque), not the old one.
    fs::create_dir(fx.m("src/mod3")).unwrap();
    assert!(list_dir(&fx.m("src/mod3")).is_empty());
    // And the whole rest of the tree can go too.
    run_ok(
        Command::new("rm")
            .arg("-rf")
            .arg(fx.m("src"))
            .arg(fx.m("proj")),
    );
    assert_eq!(list_dir(&fx.mnt), ["bin", "private"]);
    fx.finish();
}

#[test]
fn git_init_add_commit() {
    let Some(fx) = Fixture::new() else { return };
    let home = fx.t.mkdir("home");
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.current_dir(&fx.mnt)
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "-c",
                "user.name=Union Test",
                "-c",
                "user.email=union@test.invalid",
            ])
            .args(["-c", "init.defaultBranch=main", "-c", "safe.directory=*"])
            .args(args);
        run_timeout(&mut c, Duration::from_secs(120)).ok()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "initial import"]);
    let status = git(&["status", "--porcelain"]);
    assert_eq!(status.stdout, "", "working tree clean after commit");
    let files = git(&["ls-files"]);
    let expected = fx
        .lower_before
        .values()
        .filter(|e| e.kind != Kind::Dir)
        .count();
    assert_eq!(files.stdout.lines().count(), expected, "{files}");
    git(&["fsck", "--no-progress"]);
    assert_eq!(git(&["rev-list", "--count", "HEAD"]).stdout.trim(), "1");
    assert!(fx.upper.join(".git/HEAD").is_file());
    fx.finish();
}

#[test]
fn cargo_build_offline() {
    let Some(fx) = Fixture::new() else { return };
    let target = fx.m("proj/target-in-union");
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["build", "--offline", "--manifest-path"])
        .arg(fx.m("proj/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .current_dir(fx.m("proj"));
    run_timeout(&mut c, Duration::from_secs(300)).ok();
    let out = run_ok(&mut Command::new(target.join("debug/hello")));
    assert_eq!(out.stdout, "hello from the union\n");
    assert!(fx.upper.join("proj/Cargo.lock").is_file());
    assert!(fx.upper.join("proj/target-in-union/debug/hello").is_file());
    fx.finish();
}

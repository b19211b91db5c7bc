//! Tests of the helpers themselves, on kernel overlayfs and plain directories (no unionfs
//! binary needed): if these fail, every other failure is suspect.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

fn overlay_tree() -> (TempTree, PathBuf, PathBuf, PathBuf, PathBuf) {
    let t = TempTree::new();
    t.write("lower/a.txt", "lower a\n");
    t.write("lower/gone.txt", "gone\n");
    t.write("lower/d/b.txt", "b\n");
    t.symlink("a.txt", "lower/link");
    t.write("upper/u.txt", "u\n");
    let (l, u, w, m) = (
        t.join("lower"),
        t.join("upper"),
        t.mkdir("work"),
        t.mkdir("mnt"),
    );
    (t, l, u, w, m)
}

#[test]
fn kernel_overlay_guard_snapshot_and_whiteout() {
    if !require_root() {
        return;
    }
    let (t, l, u, w, m) = overlay_tree();
    let g = MountGuard::kernel_overlay(&[&l], Some((&u, &w)), &m, &["index=on"]);
    assert_eq!(g.info().fstype, "overlay");
    assert!(is_mounted(&m));
    let snap = tree_snapshot(&m);
    let keys: Vec<String> = snap.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        keys,
        ["", "a.txt", "d", "d/b.txt", "gone.txt", "link", "u.txt"]
    );
    assert_eq!(snap[&PathBuf::from("link")].kind, Kind::Symlink);
    assert_eq!(
        snap[&PathBuf::from("link")].link,
        Some(PathBuf::from("a.txt"))
    );
    assert_eq!(snap[&PathBuf::from("a.txt")].size, Some(8));
    fs::remove_file(m.join("gone.txt")).unwrap();
    let up = tree_snapshot(&u);
    let wh = &up[&PathBuf::from("gone.txt")];
    assert_eq!((wh.kind, wh.rdev), (Kind::CharDev, Some((0, 0))), "{wh}");
    // The merged view equals lower + upper with the deletion applied.
    let mut expected = tree_snapshot(&l);
    expected.remove(&PathBuf::from("gone.txt"));
    expected.insert(
        "u.txt".into(),
        tree_snapshot(&u)[&PathBuf::from("u.txt")].clone(),
    );
    let mut merged = tree_snapshot(&m);
    // The root's mode/owner come from the upper dir; both are 0755 root here.
    merged.remove(&PathBuf::new());
    expected.remove(&PathBuf::new());
    assert_snapshots_eq("expected", &expected, "merged", &merged);
    let mp = g.path().to_path_buf();
    g.unmount();
    assert!(!is_mounted(&mp));
    drop(t);
}

#[test]
fn guard_unmounts_when_the_test_panics() {
    if !require_root() {
        return;
    }
    let (t, l, u, w, m) = overlay_tree();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = MountGuard::kernel_overlay(&[&l], Some((&u, &w)), &m, &[]);
        assert!(is_mounted(&m));
        panic!("deliberate panic inside a mounted test");
    }));
    assert!(r.is_err());
    assert!(!is_mounted(&m), "the guard must unmount on panic");
    drop(t);
}

#[test]
fn temp_tree_drop_unmounts_leftovers() {
    if !require_root() {
        return;
    }
    let (t, l, u, _w, m) = overlay_tree();
    let root = t.path().to_path_buf();
    // Read-only overlay (two lowers), guard leaked on purpose: the tree must still clean up.
    std::mem::forget(MountGuard::kernel_overlay(&[&u, &l], None, &m, &[]));
    assert!(is_mounted(&m));
    drop(t);
    assert!(!is_mounted(&m));
    assert!(!root.exists(), "{} should be deleted", root.display());
}

#[test]
fn snapshot_diff_names_each_difference() {
    let a = TempTree::new();
    let b = TempTree::new();
    for t in [&a, &b] {
        t.write("same.txt", "same\n");
        t.write("content.txt", "one\n");
        t.write("mode.txt", "m\n");
        t.symlink("x", "link");
    }
    b.write("content.txt", "two\n");
    b.chmod("mode.txt", 0o600);
    set_xattr(&b.join("same.txt"), "user.k", b"v");
    b.write("extra.txt", "");
    set_times(&a.join("link"), (1, 0), (1_000_000_000, 5));
    let (sa, sb) = (tree_snapshot(a.path()), tree_snapshot(b.path()));
    let diff = snapshot_diff("a", &sa, "b", &sb);
    let text = diff.join("\n");
    assert_eq!(diff.len(), 4, "{text}");
    for needle in [
        "only in b: extra.txt",
        "differs: content.txt",
        "differs: mode.txt",
        "user.k",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // Times only count when asked for; symlink times are read with lstat.
    let (ta, tb) = (
        tree_snapshot_with_times(a.path()),
        tree_snapshot_with_times(b.path()),
    );
    assert!(snapshot_diff("a", &ta, "b", &tb)
        .iter()
        .any(|l| l.starts_with("differs: link")));
    let r = catch_unwind(|| assert_snapshots_eq("a", &sa, "b", &sb));
    assert!(r.is_err(), "assert_snapshots_eq must panic on a difference");
    assert_snapshots_eq("a", &sa, "a again", &tree_snapshot(a.path()));
}

#[test]
fn hard_links_and_devices_in_snapshots() {
    let t = TempTree::new();
    t.write("one", "x");
    t.hardlink("one", "two");
    let s = tree_snapshot(t.path());
    assert_eq!(s[&PathBuf::from("one")].nlink, Some(2));
    assert_eq!(
        s[&PathBuf::from("")].nlink,
        None,
        "no link count for directories"
    );
    if is_root() {
        mknod(&t.join("wh"), libc::S_IFCHR | 0o600, 0, 0);
        let s = tree_snapshot(t.path());
        assert_eq!(s[&PathBuf::from("wh")].rdev, Some((0, 0)));
    }
}

#[test]
fn run_does_not_wait_for_background_children() {
    // A daemon that keeps our stdout/stderr open must not make run() wait for it.
    let start = Instant::now();
    let out = sh_ok("sleep 3 & echo started; echo oops >&2");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.stdout, "started\n");
    assert_eq!(out.stderr, "oops\n");
}

#[test]
fn run_timeout_kills_and_panics() {
    let start = Instant::now();
    let r =
        catch_unwind(|| run_timeout(Command::new("sleep").arg("30"), Duration::from_millis(300)));
    assert!(r.is_err());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn require_skips_locally_and_fails_on_ci() {
    assert!(require(true, "always met"));
    let r = catch_unwind(|| require(false, "never met"));
    if on_ci() {
        assert!(r.is_err(), "on CI an unmet requirement fails the test");
    } else {
        assert_eq!(r.ok(), Some(false));
    }
}

#[test]
fn mountinfo_parsing() {
    assert_eq!(
        unescape("/tmp/a\\040b\\011c\\134d"),
        PathBuf::from("/tmp/a b\tc\\d")
    );
    assert_eq!(unescape("/x\\04"), PathBuf::from("/x\\04"));
    let root = mounts()
        .into_iter()
        .find(|m| m.mount_point == std::path::Path::new("/"));
    assert!(root.is_some(), "/ must be in /proc/self/mountinfo");
    assert!(!mounts_at(&PathBuf::from("/")).is_empty());
}

#[test]
fn unionfs_bin_honours_the_environment_variable() {
    // Only checks the lookup when UNIONFS_BIN is set; otherwise the default location is
    // exercised by every mount test.
    if let Some(p) = std::env::var_os("UNIONFS_BIN") {
        assert_eq!(unionfs_bin(), PathBuf::from(p));
    } else {
        let r = catch_unwind(unionfs_bin);
        if let Ok(p) = r {
            assert!(p.ends_with("unionfs") && p.is_file());
        }
    }
}

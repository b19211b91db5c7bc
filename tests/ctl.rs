//! `unionfs ctl`: branch changes on a live mount, snapshots with open writers, cache
//! invalidation (no sleeps: a change must show at once), and bad input.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::util::*;

pub(crate) struct Fx {
    pub(crate) t: TempTree,
    pub(crate) up: PathBuf,
    pub(crate) low: PathBuf,
    pub(crate) mnt: PathBuf,
    _g: MountGuard,
}

fn mount() -> Option<Fx> {
    mount_with(&[])
}

/// A union `up=rw:low=ro` with `low/base`, mounted with extra arguments.
pub(crate) fn mount_with(extra: &[&str]) -> Option<Fx> {
    if !require_root() {
        return None;
    }
    let t = TempTree::new();
    let up = t.mkdir("up");
    let low = t.mkdir("low");
    let mnt = t.mkdir("mnt");
    t.write("low/base", "base\n");
    let g = MountGuard::mount(
        extra.iter().map(|s| s.to_string()).chain([
            "--branch".to_string(),
            format!("{}=rw", up.display()),
            "--branch".to_string(),
            format!("{}=ro", low.display()),
            mnt.display().to_string(),
        ]),
        &mnt,
    );
    Some(Fx {
        t,
        up,
        low,
        mnt,
        _g: g,
    })
}

pub(crate) fn ctl(mnt: &Path, args: &[&str]) -> Outcome {
    let mut c = Command::new(unionfs_bin());
    c.arg("ctl").arg(mnt).args(args);
    run(&mut c)
}

/// `unionfs ctl MNT stats --json`, parsed.
pub(crate) fn stats(mnt: &Path) -> serde_json::Value {
    let out = ctl(mnt, &["stats", "--json"]).ok();
    serde_json::from_str(out.stdout.trim()).unwrap()
}

pub(crate) fn list(mnt: &Path) -> Vec<(String, PathBuf)> {
    let out = ctl(mnt, &["list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("list --json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| {
            (
                b["mode"].as_str().unwrap().to_string(),
                PathBuf::from(b["path"].as_str().unwrap()),
            )
        })
        .collect()
}

#[test]
fn add_and_remove_show_at_once() {
    let Some(fx) = mount() else { return };
    let extra = fx.t.mkdir("extra");
    fx.t.write("extra/only-extra", "from extra\n");
    // Prime the kernel's caches: the name is absent, the directory listed.
    assert!(fs::symlink_metadata(fx.mnt.join("only-extra")).is_err());
    assert_eq!(list_dir(&fx.mnt), ["base"]);
    ctl(&fx.mnt, &["add", extra.to_str().unwrap(), "--bottom"]).ok();
    assert_eq!(
        fs::read_to_string(fx.mnt.join("only-extra")).unwrap(),
        "from extra\n"
    );
    assert_eq!(list_dir(&fx.mnt), ["base", "only-extra"]);
    let l = list(&fx.mnt);
    assert_eq!(l.len(), 3);
    assert_eq!(l[2], ("ro".to_string(), extra.clone()));
    // The same directory again is refused, and nothing changes.
    let again = ctl(&fx.mnt, &["add", extra.to_str().unwrap()]);
    assert_eq!(again.code(), Some(2), "{again}");
    assert_eq!(list(&fx.mnt).len(), 3);
    ctl(&fx.mnt, &["remove", extra.to_str().unwrap()]).ok();
    assert!(fs::symlink_metadata(fx.mnt.join("only-extra")).is_err());
    assert_eq!(list_dir(&fx.mnt), ["base"]);
    // Re-moding: with every branch ro the union refuses writes at once; a lower branch
    // made rw takes the copy-up of its own file; the top made rw again takes new files.
    ctl(&fx.mnt, &["mode", "0", "ro"]).ok();
    assert_eq!(list(&fx.mnt)[0].0, "ro");
    let e = fs::write(fx.mnt.join("new"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    ctl(&fx.mnt, &["mode", fx.low.to_str().unwrap(), "rw"]).ok();
    fs::write(fx.mnt.join("base"), "changed in place\n").unwrap();
    assert_eq!(
        fs::read_to_string(fx.low.join("base")).unwrap(),
        "changed in place\n"
    );
    ctl(&fx.mnt, &["mode", "0", "rw"]).ok();
    fs::write(fx.mnt.join("new"), "x").unwrap();
    assert!(fx.up.join("new").exists());
}

#[test]
fn a_writer_keeps_writing_across_a_snapshot() {
    // Writers served by the daemon follow a snapshot by a copy-up at their next write
    // (passthrough writers move up with their inode: tests/passthrough.rs, snapshots.rs).
    let Some(fx) = mount_with(&["-o", "passthrough=off"]) else {
        return;
    };
    let mut f = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(fx.mnt.join("base"))
        .unwrap();
    f.write_all(b"one\n").unwrap();
    let snap = fx.t.join("snap");
    ctl(&fx.mnt, &["snapshot", snap.to_str().unwrap()]).ok();
    let l = list(&fx.mnt);
    assert_eq!(l[0], ("rw".to_string(), snap.clone()));
    assert_eq!(l[1], ("ro".to_string(), fx.up.clone()));
    f.write_all(b"two\n").unwrap();
    f.flush().unwrap();
    // Reading through the same descriptor sees everything it wrote.
    let mut all = String::new();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut all).unwrap();
    assert_eq!(all, "base\none\ntwo\n");
    drop(f);
    assert_eq!(
        fs::read_to_string(fx.up.join("base")).unwrap(),
        "base\none\n"
    );
    assert_eq!(
        fs::read_to_string(snap.join("base")).unwrap(),
        "base\none\ntwo\n"
    );
    assert_eq!(
        fs::read_to_string(fx.mnt.join("base")).unwrap(),
        "base\none\ntwo\n"
    );
    assert_eq!(fs::read_to_string(fx.low.join("base")).unwrap(), "base\n");
}

#[test]
fn bad_input_changes_nothing() {
    let Some(fx) = mount() else { return };
    let before = list(&fx.mnt);
    for args in [
        vec!["remove", "7"],
        vec!["mode", "9", "rw"],
        vec!["remove", "/nonexistent/branch"],
        vec!["add", "/nonexistent/dir"],
    ] {
        let out = ctl(&fx.mnt, &args);
        assert_eq!(out.code(), Some(2), "{out}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {out}");
        assert!(lines[0].starts_with("unionfs: ctl: "), "{out}");
    }
    let out = ctl(
        &fx.mnt,
        &["add", "--index", "9", fx.t.mkdir("x").to_str().unwrap()],
    );
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("out of range"), "{out}");
    // Not a union at all.
    let out = ctl(fx.t.path(), &["list"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("not a mount point"), "{out}");
    // Files open on a branch: remove is refused without --force.
    let _open = fs::File::open(fx.mnt.join("base")).unwrap();
    let out = ctl(&fx.mnt, &["remove", fx.low.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "EBUSY: {out}");
    assert!(out.stderr.contains("open files"), "{out}");
    assert_eq!(list(&fx.mnt), before);
    // Another user may not use root's socket.
    if let Some((uid, gid)) = require_test_user() {
        let bin = fx.t.install_bin();
        let _ = (uid, gid);
        let out = run(as_user(TEST_USER, &bin).arg("ctl").arg(&fx.mnt).arg("list"));
        assert_eq!(out.code(), Some(2), "{out}");
        assert!(out.stderr.contains("belongs to user 0"), "{out}");
    }
    assert_eq!(list(&fx.mnt), before);
    let help = ctl(&fx.mnt, &["--help"]).ok();
    for op in [
        "list", "add", "remove", "mode", "snapshot", "refresh", "stats",
    ] {
        assert!(
            help.stdout.contains(op),
            "--help lacks {op}:\n{}",
            help.stdout
        );
    }
}

/// The union's expected view from the branch list alone (no deletes happen in the load
/// test, so the first branch holding a name wins).
fn model(branches: &[PathBuf]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for b in branches.iter().rev() {
        for e in fs::read_dir(b).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".unionfs") || !e.file_type().unwrap().is_file() {
                continue;
            }
            m.insert(name, fs::read_to_string(e.path()).unwrap());
        }
    }
    m
}

#[test]
fn stack_changes_under_load() {
    // Default mode: as root the workers' writers are passthrough handles, which each
    // snapshot moves up with their inode.
    let Some(fx) = mount() else { return };
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..4 {
        let (mnt, stop) = (fx.mnt.clone(), stop.clone());
        workers.push(std::thread::spawn(move || -> Result<u64, String> {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = mnt.join(format!("w{t}"));
                let v = format!("{t}:{n}\n");
                fs::write(&p, &v).map_err(|e| format!("write {p:?} #{n}: {e}"))?;
                let back = fs::read_to_string(&p).map_err(|e| format!("read {p:?} #{n}: {e}"))?;
                if back != v {
                    return Err(format!("{p:?}: wrote {v:?}, read {back:?}"));
                }
                let base =
                    fs::read_to_string(mnt.join("base")).map_err(|e| format!("base: {e}"))?;
                if base != "base\n" {
                    return Err(format!("base reads {base:?}"));
                }
                n += 1;
            }
            Ok(n)
        }));
    }
    let extra = fx.t.mkdir("extra");
    fx.t.write("extra/e", "e\n");
    for i in 0..50 {
        let snap = fx.t.join(format!("snap{i:02}"));
        ctl(&fx.mnt, &["snapshot", snap.to_str().unwrap()]).ok();
        if i % 10 == 0 {
            ctl(&fx.mnt, &["add", extra.to_str().unwrap(), "--bottom"]).ok();
            ctl(&fx.mnt, &["mode", extra.to_str().unwrap(), "rw"]).ok();
            ctl(&fx.mnt, &["mode", extra.to_str().unwrap(), "ro"]).ok();
            ctl(&fx.mnt, &["remove", extra.to_str().unwrap()]).ok();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let n = w
            .join()
            .expect("worker panicked")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "a worker made no progress");
    }
    let l = list(&fx.mnt);
    assert_eq!(l.len(), 52, "50 snapshots + 2 branches: {l:?}");
    assert!(
        l[0].0 == "rw" && l[1..].iter().all(|(m, _)| m == "ro"),
        "{l:?}"
    );
    let want = model(&l.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>());
    let mut got = BTreeMap::new();
    for name in list_dir(&fx.mnt) {
        got.insert(
            name.clone(),
            fs::read_to_string(fx.mnt.join(&name)).unwrap(),
        );
    }
    assert_eq!(got, want);
    let s = stats(&fx.mnt);
    assert!(s["copy_ups"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn merge_waits_for_a_branch_to_leave_read_write_use() {
    let Some(fx) = mount() else { return };
    fs::write(fx.mnt.join("new"), "made in the union\n").unwrap();
    let merge = |branch: &Path| {
        let mut c = Command::new(unionfs_bin());
        c.arg("merge").arg(branch).arg("--into").arg(&fx.low);
        run(&mut c)
    };
    // The daemon holds the rw branch's lock: merging it now is refused, nothing changes.
    let out = merge(&fx.up);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(!fx.low.join("new").exists());
    // After a snapshot the old top is read-only in the mount and can be merged down.
    let snap = fx.t.join("snap");
    ctl(&fx.mnt, &["snapshot", snap.to_str().unwrap()]).ok();
    merge(&fx.up).ok();
    assert_eq!(
        fs::read_to_string(fx.low.join("new")).unwrap(),
        "made in the union\n"
    );
    ctl(&fx.mnt, &["refresh"]).ok();
    assert_eq!(
        fs::read_to_string(fx.mnt.join("new")).unwrap(),
        "made in the union\n"
    );
}

#[test]
fn merge_refuses_the_live_upper_of_an_overlay_style_mount() {
    if !require_root() {
        return;
    }
    // The work dir is outside the upper branch here, so no lock file sits in it: merge
    // must learn from the daemon itself that the upper is read-write.
    let t = TempTree::new();
    let (up, low, work, mnt) = (
        t.mkdir("up"),
        t.mkdir("low"),
        t.mkdir("work"),
        t.mkdir("mnt"),
    );
    let _g = MountGuard::mount(
        [
            "-o".to_string(),
            format!(
                "lowerdir={},upperdir={},workdir={}",
                low.display(),
                up.display(),
                work.display()
            ),
            "none".to_string(),
            mnt.display().to_string(),
        ],
        &mnt,
    );
    fs::write(mnt.join("f"), "x").unwrap();
    let out = run(Command::new(unionfs_bin())
        .arg("merge")
        .arg(&up)
        .arg("--into")
        .arg(&low));
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("read-write in the live unionfs mount"),
        "{out}"
    );
    assert!(!low.join("f").exists());
}

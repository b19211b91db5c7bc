//! `-o metacopy=on`: attribute changes and write-only opens of a lower file copy its
//! metadata only (a sparse upper file marked `overlay.metacopy`, the kernel's own
//! `metacopy=on` layout); the data follows at the first write. Kernel overlayfs is the
//! oracle for the layout.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

use crate::util::*;

struct Fx {
    t: TempTree,
    low: PathBuf,
    up: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    data: Vec<u8>,
}

fn fixture() -> Option<Fx> {
    if !require_root() {
        return None;
    }
    let t = TempTree::new();
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    t.write("L/f", &data);
    t.write("L/d/g", &data);
    let (low, up, work, mnt) = (t.join("L"), t.mkdir("U"), t.mkdir("W"), t.mkdir("m"));
    Some(Fx {
        t,
        low,
        up,
        work,
        mnt,
        data,
    })
}

impl Fx {
    fn mount(&self) -> MountGuard {
        self.mount_with("")
    }

    /// Mounts overlay style with `metacopy=on` and `extra` options.
    fn mount_with(&self, extra: &str) -> MountGuard {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},metacopy=on{extra}",
            self.low.display(),
            self.up.display(),
            self.work.display()
        );
        MountGuard::mount(["-o", &opts, self.mnt.to_str().unwrap()], &self.mnt)
    }

    fn is_metacopy(&self, rel: &str) -> bool {
        get_xattr(&self.up.join(rel), "trusted.overlay.metacopy").is_some()
    }
}

fn bytes_copied(mnt: &std::path::Path) -> u64 {
    let out = run_ok(
        Command::new(unionfs_bin())
            .arg("ctl")
            .arg(mnt)
            .args(["stats", "--json"]),
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    v["bytes_copied"].as_u64().unwrap()
}

#[test]
fn touch_and_chmod_copy_metadata_only_and_the_data_still_reads() {
    let Some(fx) = fixture() else { return };
    let g = fx.mount();
    run_ok(Command::new("touch").arg(fx.mnt.join("f")));
    fs::set_permissions(fx.mnt.join("d/g"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(bytes_copied(&fx.mnt), 0, "no data moved");
    for rel in ["f", "d/g"] {
        assert!(fx.is_metacopy(rel), "{rel} is a metadata-only copy");
        let up = fs::metadata(fx.up.join(rel)).unwrap();
        assert_eq!(
            (up.len(), up.blocks()),
            (fx.data.len() as u64, 0),
            "{rel}: sparse, full size"
        );
        assert_eq!(
            fs::read(fx.mnt.join(rel)).unwrap(),
            fx.data,
            "{rel} reads its data"
        );
        // The union reports the blocks of the data, as the kernel does.
        assert!(fs::metadata(fx.mnt.join(rel)).unwrap().blocks() > 0);
    }
    assert_eq!(
        fs::metadata(fx.mnt.join("d/g")).unwrap().mode() & 0o777,
        0o600
    );
    g.unmount();
    // Kernel overlayfs with its own metacopy=on reads the same tree the same way.
    let kw = fx.t.mkdir("KW");
    let k = MountGuard::kernel_overlay(&[&fx.low], Some((&fx.up, &kw)), &fx.mnt, &["metacopy=on"]);
    assert_eq!(fs::read(fx.mnt.join("f")).unwrap(), fx.data);
    assert_eq!(fs::read(fx.mnt.join("d/g")).unwrap(), fx.data);
    assert_eq!(
        fs::metadata(fx.mnt.join("d/g")).unwrap().mode() & 0o777,
        0o600
    );
    k.unmount();
}

#[test]
fn the_first_write_brings_the_data_up() {
    let Some(fx) = fixture() else { return };
    let g = fx.mount();
    run_ok(Command::new("touch").arg(fx.mnt.join("f")));
    run_ok(Command::new("touch").arg(fx.mnt.join("d/g")));
    // A write into the middle through a write-only fd opened before the data was up.
    let mut w = fs::OpenOptions::new()
        .write(true)
        .open(fx.mnt.join("f"))
        .unwrap();
    assert!(fx.is_metacopy("f"), "opening write-only moves no data yet");
    std::os::unix::fs::FileExt::write_all_at(&w, b"HELLO", 100).unwrap();
    w.flush().unwrap();
    drop(w);
    let mut want = fx.data.clone();
    want[100..105].copy_from_slice(b"HELLO");
    assert!(!fx.is_metacopy("f"));
    assert_eq!(
        fs::read(fx.up.join("f")).unwrap(),
        want,
        "the upper holds all the data"
    );
    assert_eq!(fs::read(fx.mnt.join("f")).unwrap(), want);
    // Truncation keeps the data before the cut.
    run_ok(
        Command::new("truncate")
            .args(["-s", "1000"])
            .arg(fx.mnt.join("d/g")),
    );
    assert_eq!(fs::read(fx.mnt.join("d/g")).unwrap(), &fx.data[..1000]);
    assert!(!fx.is_metacopy("d/g"));
    // The lower branch never changes.
    assert_eq!(fs::read(fx.low.join("f")).unwrap(), fx.data);
    g.unmount();
}

#[test]
fn a_metadata_only_copy_keeps_its_data_when_renamed_or_snapshotted() {
    let Some(fx) = fixture() else { return };
    let g = fx.mount();
    fs::set_permissions(fx.mnt.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(fx.mnt.join("d/g"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::rename(fx.mnt.join("f"), fx.mnt.join("moved")).unwrap();
    assert_eq!(fs::read(fx.mnt.join("moved")).unwrap(), fx.data);
    fs::rename(fx.mnt.join("d"), fx.mnt.join("d2")).unwrap();
    assert_eq!(fs::read(fx.mnt.join("d2/g")).unwrap(), fx.data);
    g.unmount();

    // Through a snapshot: the copy sits in a read-only middle layer, its data below.
    let fx = fixture().unwrap();
    let g = fx.mount();
    fs::set_permissions(fx.mnt.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    let snap = fx.t.join("snap");
    run_ok(
        Command::new(unionfs_bin())
            .arg("ctl")
            .arg(&fx.mnt)
            .arg("snapshot")
            .arg(&snap),
    );
    assert_eq!(fs::read(fx.mnt.join("f")).unwrap(), fx.data);
    fs::OpenOptions::new()
        .append(true)
        .open(fx.mnt.join("f"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let mut want = fx.data.clone();
    want.push(b'x');
    assert_eq!(
        fs::read(snap.join("f")).unwrap(),
        want,
        "the new top got the whole file"
    );
    assert!(fx.is_metacopy("f"), "the snapshot keeps what it had");
    g.unmount();
}

#[test]
fn offline_tools_refuse_metadata_only_copies_and_bad_options_are_refused() {
    let Some(fx) = fixture() else { return };
    let g = fx.mount();
    run_ok(Command::new("touch").arg(fx.mnt.join("f")));
    g.unmount();
    let out = run(Command::new(unionfs_bin())
        .arg("diff")
        .arg(&fx.up)
        .arg("--base")
        .arg(&fx.low));
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("metadata-only"), "{out}");
    let out = run(Command::new(unionfs_bin())
        .args(["-o", "metacopy=on,whiteout=wh", "--branch"])
        .arg(format!("{}=rw", fx.up.display()))
        .arg(&fx.mnt));
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("metacopy"), "{out}");
    assert!(mounts_at(&fx.mnt).is_empty());
}

#[test]
fn a_write_only_handle_keeps_writing_across_a_snapshot() {
    let Some(fx) = fixture() else { return };
    // Without passthrough, so the handle follows the snapshot through the daemon.
    let g = fx.mount_with(",passthrough=off");
    let w = fs::OpenOptions::new()
        .write(true)
        .open(fx.mnt.join("f"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&w, b"one", 0).unwrap();
    let snap = fx.t.join("snap");
    run_ok(
        Command::new(unionfs_bin())
            .arg("ctl")
            .arg(&fx.mnt)
            .arg("snapshot")
            .arg(&snap),
    );
    std::os::unix::fs::FileExt::write_all_at(&w, b"two", 10).unwrap();
    drop(w);
    let mut want = fx.data.clone();
    want[0..3].copy_from_slice(b"one");
    let frozen = want.clone();
    want[10..13].copy_from_slice(b"two");
    assert_eq!(
        fs::read(fx.mnt.join("f")).unwrap(),
        want,
        "both writes show"
    );
    assert_eq!(
        fs::read(snap.join("f")).unwrap(),
        want,
        "in the new top, with all its data"
    );
    assert_eq!(
        fs::read(fx.up.join("f")).unwrap(),
        frozen,
        "the snapshot kept its bytes"
    );
    g.unmount();
}

//! FUSE passthrough: which opens the kernel serves without the daemon (counted by the
//! daemon's `data_requests`, which passthrough handles never add to), what they write
//! where, and the refusals that keep the union's semantics where a passthrough handle
//! cannot follow a file.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::ctl::{ctl, list, mount_with, stats};
use crate::util::*;

fn data_requests(mnt: &std::path::Path) -> u64 {
    stats(mnt)["data_requests"].as_u64().unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn new_files_are_written_and_read_by_passthrough() {
    let Some(fx) = mount_with(&[]) else { return };
    let before = data_requests(&fx.mnt);
    let data = pattern(8 << 20, 3);
    let mut f = fs::File::create(fx.mnt.join("new")).unwrap();
    f.write_all(&data).unwrap();
    // The kernel keeps the size it sees in step with passthrough writes.
    assert_eq!(
        fs::metadata(fx.mnt.join("new")).unwrap().len(),
        data.len() as u64
    );
    drop(f);
    assert_eq!(
        fs::read(fx.up.join("new")).unwrap(),
        data,
        "bytes land in the upper"
    );
    assert_eq!(fs::read(fx.mnt.join("new")).unwrap(), data);
    // Writes into the middle through a second open reuse the inode's backing file.
    let g = fs::OpenOptions::new()
        .write(true)
        .open(fx.mnt.join("new"))
        .unwrap();
    g.write_all_at(b"hello", 4096).unwrap();
    drop(g);
    assert_eq!(&fs::read(fx.up.join("new")).unwrap()[4096..4101], b"hello");
    let s = stats(&fx.mnt);
    assert_eq!(
        s["data_requests"].as_u64().unwrap(),
        before,
        "no read or write reached the daemon: {s}"
    );
    assert!(s["passthrough_opens"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(
        s["passthrough_inodes"].as_u64().unwrap(),
        0,
        "all closed: {s}"
    );
}

#[test]
fn a_copied_up_file_passes_through_and_the_lower_stays() {
    let Some(fx) = mount_with(&[]) else { return };
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(fx.mnt.join("base"))
        .unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    let before = data_requests(&fx.mnt);
    assert_eq!(
        fs::read_to_string(fx.mnt.join("base")).unwrap(),
        "base\nmore\n"
    );
    assert_eq!(data_requests(&fx.mnt), before);
    assert_eq!(fs::read_to_string(fx.low.join("base")).unwrap(), "base\n");
}

#[test]
fn off_and_auto_serve_lower_reads_through_the_daemon() {
    for opts in [&["-o", "passthrough=off"][..], &[][..]] {
        let Some(fx) = mount_with(opts) else { return };
        // The daemon serves the data: by READ requests, or (a small file) by storing
        // it in the page cache at the open. No passthrough.
        let served = |s: &serde_json::Value| {
            s["data_requests"].as_u64().unwrap() + s["prefilled"].as_u64().unwrap()
        };
        let before = stats(&fx.mnt);
        assert_eq!(fs::read_to_string(fx.mnt.join("base")).unwrap(), "base\n");
        let after = stats(&fx.mnt);
        assert!(
            served(&after) > served(&before),
            "{opts:?}: a lower read goes via the daemon: {after}"
        );
        assert_eq!(
            after["passthrough_opens"], before["passthrough_opens"],
            "{opts:?}: {after}"
        );
    }
    let Some(fx) = mount_with(&["-o", "passthrough=off"]) else {
        return;
    };
    fs::write(fx.mnt.join("new"), "x").unwrap();
    assert_eq!(stats(&fx.mnt)["passthrough_opens"].as_u64().unwrap(), 0);
}

#[test]
fn on_passes_lower_reads_and_refuses_a_copy_up_under_them() {
    let Some(fx) = mount_with(&["-o", "passthrough=on"]) else {
        return;
    };
    let before = data_requests(&fx.mnt);
    let mut reader = fs::File::open(fx.mnt.join("base")).unwrap();
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(s, "base\n");
    assert_eq!(
        data_requests(&fx.mnt),
        before,
        "the lower read passed through"
    );
    // The reader's backing file is the lower one: a writer would need the copy.
    let e = fs::OpenOptions::new()
        .append(true)
        .open(fx.mnt.join("base"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}");
    assert!(!fx.up.join("base").exists(), "nothing was copied up");
    drop(reader);
    fs::OpenOptions::new()
        .append(true)
        .open(fx.mnt.join("base"))
        .unwrap()
        .write_all(b"two\n")
        .unwrap();
    assert_eq!(
        fs::read_to_string(fx.mnt.join("base")).unwrap(),
        "base\ntwo\n"
    );
    assert_eq!(fs::read_to_string(fx.low.join("base")).unwrap(), "base\n");
}

#[test]
fn a_snapshot_moves_passthrough_writers_up_with_their_inode() {
    let Some(fx) = mount_with(&[]) else { return };
    let mut w = fs::File::create(fx.mnt.join("log")).unwrap();
    w.write_all(b"one\n").unwrap();
    assert_eq!(stats(&fx.mnt)["passthrough_inodes"], 1);
    let ino = fs::metadata(fx.up.join("log")).unwrap().ino();
    let snap = fx.t.join("snap");
    ctl(&fx.mnt, &["snapshot", snap.to_str().unwrap()]).ok();
    assert_eq!(list(&fx.mnt)[0], ("rw".to_string(), snap.clone()));
    w.write_all(b"two\n").unwrap();
    let before = data_requests(&fx.mnt);
    assert_eq!(fs::read_to_string(fx.up.join("log")).unwrap(), "one\n");
    assert_eq!(fs::read_to_string(snap.join("log")).unwrap(), "one\ntwo\n");
    assert_eq!(
        fs::metadata(snap.join("log")).unwrap().ino(),
        ino,
        "the live inode moved up"
    );
    assert_ne!(fs::metadata(fx.up.join("log")).unwrap().ino(), ino);
    assert_eq!(
        fs::read_to_string(fx.mnt.join("log")).unwrap(),
        "one\ntwo\n"
    );
    w.write_all(b"three\n").unwrap();
    assert_eq!(
        data_requests(&fx.mnt),
        before,
        "still written by passthrough"
    );

    // No rw branch would take its writes if the only one turned ro: refused, like a
    // remount read-only with files open for writing.
    let before = list(&fx.mnt);
    let out = ctl(&fx.mnt, &["mode", "0", "ro"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("log") && out.stderr.contains("passthrough"),
        "{out}"
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    assert_eq!(list(&fx.mnt), before);

    // A new top on another mount cannot receive the live file (rename only): refused,
    // nothing changes, the directory stays empty (no work dir, no parents a lift made).
    fs::create_dir_all(fx.mnt.join("d/e")).unwrap();
    let mut deep = fs::File::create(fx.mnt.join("d/e/deep")).unwrap();
    deep.write_all(b"deep\n").unwrap();
    let other = fx.t.mkdir("tmpfs");
    let mut mount_tmpfs = std::process::Command::new("mount");
    mount_tmpfs
        .args(["-t", "tmpfs", "unionfs-test-tmpfs"])
        .arg(&other);
    let tmpfs = MountGuard::run(mount_tmpfs, &other);
    let out = ctl(&fx.mnt, &["snapshot", other.to_str().unwrap()]);
    let left: Vec<_> = fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    drop(tmpfs);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("another mount"), "{out}");
    assert!(left.is_empty(), "the refused snapshot left {left:?}");
    assert_eq!(list(&fx.mnt), before);
    drop(deep);
    assert_eq!(
        fs::read_to_string(fx.mnt.join("d/e/deep")).unwrap(),
        "deep\n"
    );
    w.write_all(b"four\n").unwrap();
    drop(w);
    assert_eq!(
        fs::read_to_string(snap.join("log")).unwrap(),
        "one\ntwo\nthree\nfour\n"
    );
    assert_eq!(fs::read_to_string(fx.up.join("log")).unwrap(), "one\n");
}

#[test]
fn mmap_writes_pass_through() {
    let Some(fx) = mount_with(&[]) else { return };
    fs::write(fx.mnt.join("m"), vec![0u8; 8192]).unwrap();
    let out = sh(&format!(
        "python3 -c \"import mmap; f=open('{}','r+b'); m=mmap.mmap(f.fileno(),0); m[100:105]=b'hello'; m.flush()\"",
        fx.mnt.join("m").display()
    ));
    assert!(out.success(), "{out}");
    assert_eq!(&fs::read(fx.up.join("m")).unwrap()[100..105], b"hello");
    assert_eq!(&fs::read(fx.mnt.join("m")).unwrap()[100..105], b"hello");
}

#[test]
fn bad_passthrough_value_is_refused() {
    let t = TempTree::new();
    let mnt = t.mkdir("mnt");
    let up = t.mkdir("up");
    let out = run(std::process::Command::new(unionfs_bin()).args([
        "-o",
        "passthrough=maybe",
        "--branch",
        &format!("{}=rw", up.display()),
        mnt.to_str().unwrap(),
    ]));
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("passthrough=maybe"), "{out}");
    assert!(mounts_at(&mnt).is_empty());
}

#[test]
fn a_reader_held_across_a_snapshot_lets_writers_in() {
    let Some(fx) = mount_with(&[]) else { return };
    fs::write(fx.mnt.join("f"), "v1\n").unwrap();
    let mut held = fs::File::open(fx.mnt.join("f")).unwrap();
    let snap = fx.t.join("snap");
    ctl(&fx.mnt, &["snapshot", snap.to_str().unwrap()]).ok();
    // The held file moved up with its passthrough reader: an attribute change and a
    // writer reach it there, without a copy-up the reader could not follow.
    let out = sh(&format!(
        "touch -m -d @1000000000 {}",
        fx.mnt.join("f").display()
    ));
    assert!(out.success(), "{out}");
    fs::OpenOptions::new()
        .append(true)
        .open(fx.mnt.join("f"))
        .unwrap()
        .write_all(b"v2\n")
        .unwrap();
    let mut seen = String::new();
    held.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "v1\nv2\n", "the reader sees the union's file");
    assert_eq!(fs::read_to_string(fx.mnt.join("f")).unwrap(), "v1\nv2\n");
    assert_eq!(fs::read_to_string(snap.join("f")).unwrap(), "v1\nv2\n");
    assert_eq!(fs::read_to_string(fx.up.join("f")).unwrap(), "v1\n");
}

#[test]
fn a_writer_whose_file_gained_a_name_refuses_a_snapshot_until_closed() {
    let Some(fx) = mount_with(&[]) else { return };
    let mut w = fs::File::create(fx.mnt.join("log")).unwrap();
    w.write_all(b"one\n").unwrap();
    fs::hard_link(fx.mnt.join("log"), fx.mnt.join("log.link")).unwrap();
    let before = list(&fx.mnt);
    let snap = fx.t.join("snap");
    let out = ctl(&fx.mnt, &["snapshot", snap.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("log") && out.stderr.contains("hard links"),
        "{out}"
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    assert_eq!(list(&fx.mnt), before, "nothing changed");
    assert!(!snap.exists(), "the directory the command made is gone");
    w.write_all(b"two\n").unwrap();
    drop(w);
    ctl(&fx.mnt, &["snapshot", snap.to_str().unwrap()]).ok();
    fs::OpenOptions::new()
        .append(true)
        .open(fx.mnt.join("log.link"))
        .unwrap()
        .write_all(b"three\n")
        .unwrap();
    assert_eq!(
        fs::read_to_string(fx.up.join("log")).unwrap(),
        "one\ntwo\n",
        "the snapshot keeps both names' bytes"
    );
    assert_eq!(
        fs::read_to_string(fx.mnt.join("log.link")).unwrap(),
        "one\ntwo\nthree\n"
    );
}

/// Small files of a read-only branch go into the kernel's page cache at their open:
/// their reads reach the daemon not at all, and a change through the mount shows.
#[test]
fn small_lower_files_are_stored_at_open_and_read_without_the_daemon() {
    let Some(fx) = mount_with(&[]) else { return };
    let sizes = [1usize, 4095, 4096, 5000, 64 << 10];
    for (i, n) in sizes.iter().enumerate() {
        fs::write(fx.low.join(format!("s{i}")), pattern(*n, i as u8)).unwrap();
    }
    fs::write(fx.low.join("big"), pattern((64 << 10) + 1, 9)).unwrap();
    let n = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let before = stats(&fx.mnt);
    for (i, len) in sizes.iter().enumerate() {
        let got = fs::read(fx.mnt.join(format!("s{i}"))).unwrap();
        assert_eq!(got, pattern(*len, i as u8), "s{i} ({len} bytes)");
    }
    let s = stats(&fx.mnt);
    assert_eq!(
        n(&s, "data_requests"),
        n(&before, "data_requests"),
        "no READ: {s}"
    );
    assert_eq!(
        n(&s, "prefilled") - n(&before, "prefilled"),
        sizes.len() as u64,
        "{s}"
    );
    // Opened again, unchanged: not stored again, and still no READ.
    assert_eq!(fs::read(fx.mnt.join("s3")).unwrap(), pattern(5000, 3));
    let again = stats(&fx.mnt);
    assert_eq!(n(&again, "prefilled"), n(&s, "prefilled"), "{again}");
    assert_eq!(
        n(&again, "data_requests"),
        n(&s, "data_requests"),
        "{again}"
    );
    // Past 64 KiB the reads come to the daemon, as before.
    assert_eq!(
        fs::read(fx.mnt.join("big")).unwrap(),
        pattern((64 << 10) + 1, 9)
    );
    let big = stats(&fx.mnt);
    assert!(
        n(&big, "data_requests") > n(&again, "data_requests"),
        "{big}"
    );
    assert_eq!(n(&big, "prefilled"), n(&again, "prefilled"), "{big}");
    // Written through the mount (a copy-up): the new data reads back, the lower stays.
    fs::write(fx.mnt.join("s3"), b"changed\n").unwrap();
    assert_eq!(fs::read(fx.mnt.join("s3")).unwrap(), b"changed\n");
    assert_eq!(fs::read(fx.low.join("s3")).unwrap(), pattern(5000, 3));
    assert_eq!(fs::read(fx.up.join("s3")).unwrap(), b"changed\n");
}

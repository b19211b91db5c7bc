//! Directory listings through the mount. Offsets are cookies (hashes of names), so: a big
//! merged directory read in many chunks shows every name once; a name present for a whole
//! scan shows exactly once while the directory changes and other scans start; telldir and
//! seekdir come back to the same place, also in another open of the directory. The kernel
//! caches listings (no OPENDIR with attributes cached): an out-of-band change shows after
//! `ctl refresh`, and at once with `attr_timeout=0`. Lookups in a directory use branch
//! fds the daemon keeps for at most the entry timeout: a directory moved out of its branch
//! behind the union's back stops serving names after that, or at once after `refresh`.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ctl::{ctl, mount_with, stats};

fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn assert_once(got: &[String]) -> HashSet<String> {
    let set: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len(), "a name listed twice");
    set
}

#[test]
fn a_big_merged_directory_lists_every_name_once_with_d_ino_equal_to_st_ino() {
    let Some(fx) = mount_with(&[]) else { return };
    fs::create_dir(fx.low.join("d")).unwrap();
    fs::create_dir(fx.up.join("d")).unwrap();
    for i in 0..2000 {
        fs::write(fx.low.join(format!("d/low{i}")), "").unwrap();
    }
    for i in 0..1000 {
        fs::write(fx.up.join(format!("d/up{i}")), "").unwrap();
        // The same names in both branches: shown once.
        fs::write(fx.low.join(format!("d/up{i}")), "").unwrap();
    }
    let d = fx.mnt.join("d");
    for i in (0..2000).step_by(3) {
        fs::remove_file(d.join(format!("low{i}"))).unwrap(); // whiteouts
    }
    let mut want: HashSet<String> = (0..1000).map(|i| format!("up{i}")).collect();
    want.extend((0..2000).filter(|i| i % 3 != 0).map(|i| format!("low{i}")));
    for _ in 0..2 {
        // The second scan may come from the kernel's cache: the same answer.
        assert_eq!(assert_once(&names(&d)), want);
    }
    for e in fs::read_dir(&d).unwrap().take(50) {
        let e = e.unwrap();
        assert_eq!(
            std::os::unix::fs::DirEntryExt::ino(&e),
            fs::symlink_metadata(e.path()).unwrap().ino(),
            "{:?}",
            e.file_name()
        );
    }
}

#[test]
fn a_name_present_for_a_whole_scan_is_listed_exactly_once_while_the_directory_changes() {
    let Some(fx) = mount_with(&[]) else { return };
    fs::create_dir(fx.low.join("d")).unwrap();
    for i in 0..3000 {
        fs::write(fx.low.join(format!("d/stay{i}")), "").unwrap();
    }
    let d = fx.mnt.join("d");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Churn: names come and go, and every round starts a scan of its own (a fresh
        // merge in the daemon, from offset 0).
        let churn = s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::write(d.join(format!("churn{i}")), "").unwrap();
                if i > 0 {
                    fs::remove_file(d.join(format!("churn{}", i - 1))).unwrap();
                }
                let _ = fs::read_dir(&d).unwrap().next();
                i += 1;
            }
            i
        });
        for _ in 0..5 {
            let got = names(&d);
            let stay: Vec<String> = got.into_iter().filter(|n| n.starts_with("stay")).collect();
            assert_eq!(assert_once(&stay).len(), 3000);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(churn.join().unwrap() > 0, "the churn never ran");
    });
}

/// The names `n` readdir(3) calls return from `dir`.
unsafe fn read_n(dir: *mut libc::DIR, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = libc::readdir(dir);
        if e.is_null() {
            break;
        }
        out.push(
            CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned(),
        );
    }
    out
}

#[test]
fn seekdir_to_a_telldir_position_returns_to_the_same_place_in_any_open() {
    let Some(fx) = mount_with(&[]) else { return };
    fs::create_dir(fx.low.join("d")).unwrap();
    for i in 0..1500 {
        fs::write(fx.low.join(format!("d/f{i}")), "").unwrap();
    }
    let path = CString::new(fx.mnt.join("d").as_os_str().as_bytes()).unwrap();
    // SAFETY: plain libc directory stream calls on streams this test opens and closes.
    unsafe {
        let a = libc::opendir(path.as_ptr());
        assert!(!a.is_null());
        assert_eq!(read_n(a, 700).len(), 700);
        let pos = libc::telldir(a);
        let next = read_n(a, 100);
        assert_eq!(next.len(), 100);
        read_n(a, 300);
        libc::seekdir(a, pos);
        assert_eq!(read_n(a, 100), next, "seekdir in the same stream");
        let b = libc::opendir(path.as_ptr());
        assert!(!b.is_null());
        libc::seekdir(b, pos);
        assert_eq!(read_n(b, 100), next, "seekdir in another open");
        libc::closedir(a);
        libc::closedir(b);
    }
}

#[test]
fn an_out_of_band_change_shows_after_refresh_and_at_once_without_attribute_caching() {
    for (extra, needs_refresh) in [
        (&[][..], true),
        (&["-o", "attr_timeout=0,entry_timeout=0"][..], false),
    ] {
        let Some(fx) = mount_with(extra) else { return };
        fs::create_dir(fx.low.join("d")).unwrap();
        fs::create_dir(fx.up.join("d")).unwrap();
        fs::write(fx.up.join("d/a"), "").unwrap();
        let d = fx.mnt.join("d");
        assert_eq!(names(&d), ["a"]);
        // Into the lower branch, behind the union's back: the merged directory's own
        // attributes (the upper's) do not change.
        fs::write(fx.low.join("d/b"), "").unwrap();
        if needs_refresh {
            ctl(&fx.mnt, &["refresh"]).ok();
        }
        let mut got = names(&d);
        got.sort();
        assert_eq!(got, ["a", "b"], "{extra:?}");
    }
}

/// `fstatat(dir, name)`: a lookup in `dir` itself, which the kernel does not revalidate.
fn stat_in(dir: &fs::File, name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let name = CString::new(name).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd, NUL-terminated name, and a buffer the kernel fills.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn a_directory_moved_out_of_a_branch_is_noticed_after_the_entry_timeout_or_a_refresh() {
    // The daemon keeps each directory's branch fds for lookups in it, at most for the
    // entry timeout. A directory moved out of the branch behind the union's back must not
    // keep serving names from its new place, outside the branches.
    for refresh in [false, true] {
        let timeout = if refresh {
            "entry_timeout=60"
        } else {
            "entry_timeout=0.3"
        };
        let Some(fx) = mount_with(&["-o", timeout]) else {
            return;
        };
        fs::create_dir(fx.low.join("d")).unwrap();
        fs::write(fx.low.join("d/f"), "").unwrap();
        let d = fs::File::open(fx.mnt.join("d")).unwrap();
        stat_in(&d, "f").unwrap();
        let outside = fx.t.mkdir("outside");
        fs::rename(fx.low.join("d"), outside.join("d")).unwrap();
        fs::write(outside.join("d/g"), "").unwrap();
        if refresh {
            ctl(&fx.mnt, &["refresh"]).ok();
        } else {
            std::thread::sleep(std::time::Duration::from_millis(600));
        }
        let e = stat_in(&d, "g").expect_err("a name from outside the branches");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{timeout}: {e}");
    }
}

fn nodes_held(mnt: &Path) -> u64 {
    stats(mnt)["nodes"].as_u64().unwrap()
}

/// Walks `dir` by the listings' d_type alone (as find does), returning (dirs, files).
fn walk_by_d_type(dir: &Path, out: &mut (Vec<std::path::PathBuf>, Vec<fs::DirEntry>)) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.0.push(e.path());
            walk_by_d_type(&e.path(), out);
        } else {
            out.1.push(e);
        }
    }
}

#[test]
fn a_tree_walk_that_stats_no_file_makes_no_inode_for_one_and_numbers_still_match() {
    let Some(fx) = mount_with(&[]) else { return };
    for d in 0..20 {
        fs::create_dir_all(fx.low.join(format!("t/d{d}/sub"))).unwrap();
        for f in 0..30 {
            fs::write(fx.low.join(format!("t/d{d}/f{f}")), "x").unwrap();
            fs::write(fx.low.join(format!("t/d{d}/sub/g{f}")), "y").unwrap();
        }
    }
    let before = nodes_held(&fx.mnt);
    let mut found = (Vec::new(), Vec::new());
    walk_by_d_type(&fx.mnt.join("t"), &mut found);
    assert_eq!((found.0.len(), found.1.len()), (40, 1200));
    let after_walk = nodes_held(&fx.mnt);
    // The directories (and "t") became inodes; the 1,200 files did not.
    assert!(
        after_walk - before <= 41 + 5,
        "{} inodes for a walk of 41 directories",
        after_walk - before
    );
    // The numbers the listings gave are the ones stat gives.
    for e in &found.1 {
        let m = fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(
            std::os::unix::fs::DirEntryExt::ino(e),
            m.ino(),
            "{:?}",
            e.path()
        );
        assert!(m.is_file());
    }
    assert!(nodes_held(&fx.mnt) >= after_walk + 1200);
}

/// (listings read ahead, of those used) from `ctl stats`.
fn read_ahead(mnt: &Path) -> (u64, u64) {
    let s = stats(mnt);
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("no {k} in stats: {s}"))
    };
    (n("listings_read_ahead"), n("listings_read_ahead_used"))
}

/// Waits (up to 5 s) until at least `n` listings were read ahead.
fn wait_read_ahead(mnt: &Path, n: u64) {
    assert!(
        crate::util::wait_until(std::time::Duration::from_secs(5), || read_ahead(mnt).0 >= n),
        "read ahead: {:?}, {n} expected",
        read_ahead(mnt)
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_walk_lists_subdirectories_ahead_and_never_misses_a_change_made_meanwhile() {
    let Some(fx) = mount_with(&[]) else { return };
    for s in 0..3 {
        fs::create_dir_all(fx.low.join(format!("t/d/s{s}"))).unwrap();
        fs::write(fx.low.join(format!("t/d/s{s}/f")), "x").unwrap();
    }
    // Already in the rw branch, so that the change below moves no directory up (which
    // alone would make the daemon list it afresh).
    fs::create_dir_all(fx.up.join("t/d/s2")).unwrap();
    // Two listings right after each other: a walk. The subdirectories of the second
    // are read ahead.
    names(&fx.mnt.join("t"));
    names(&fx.mnt.join("t/d"));
    wait_read_ahead(&fx.mnt, 3);
    let (_, used) = read_ahead(&fx.mnt);
    // Unchanged since: its listing serves.
    assert_eq!(names(&fx.mnt.join("t/d/s0")), ["f"]);
    assert_eq!(read_ahead(&fx.mnt).1, used + 1);
    // A change through the mount: what was read before it does not serve.
    fs::write(fx.mnt.join("t/d/s2/new"), "y").unwrap();
    assert_eq!(sorted(names(&fx.mnt.join("t/d/s2"))), ["f", "new"]);
    assert_eq!(read_ahead(&fx.mnt).1, used + 1);
}

#[test]
fn with_dir_readahead_off_a_walk_reads_nothing_ahead() {
    let Some(fx) = mount_with(&["-o", "dir_readahead=off"]) else {
        return;
    };
    for d in 0..10 {
        fs::create_dir_all(fx.low.join(format!("t/d{d}/sub"))).unwrap();
    }
    let mut found = (Vec::new(), Vec::new());
    walk_by_d_type(&fx.mnt.join("t"), &mut found);
    assert_eq!(found.0.len(), 20);
    // With it on, this walk has some read ahead within milliseconds.
    let any = || read_ahead(&fx.mnt) != (0, 0);
    assert!(
        !crate::util::wait_until(std::time::Duration::from_millis(300), any),
        "read ahead: {:?}",
        read_ahead(&fx.mnt)
    );
}

#[test]
fn a_file_written_by_passthrough_after_its_directory_was_read_ahead_shows_its_new_size() {
    use std::io::Write;
    let Some(fx) = mount_with(&[]) else { return };
    fs::create_dir_all(fx.low.join("t/d/s")).unwrap();
    fs::write(fx.low.join("t/d/s/low"), "x").unwrap();
    fs::create_dir_all(fx.up.join("t/d/s")).unwrap();
    fs::write(fx.up.join("t/d/s/f"), "").unwrap();
    // A writer the kernel serves itself: its writes send the daemon no request.
    let mut w = fs::OpenOptions::new()
        .write(true)
        .open(fx.mnt.join("t/d/s/f"))
        .unwrap();
    let passthrough = stats(&fx.mnt)["passthrough_opens"].as_u64().unwrap() >= 1;
    if !crate::util::require(passthrough, "the kernel refused FUSE passthrough here") {
        return;
    }
    // A walk that stats files (as du does): the listings read ahead look files up too.
    fs::symlink_metadata(fx.mnt.join("t/d/s/low")).unwrap();
    names(&fx.mnt.join("t"));
    names(&fx.mnt.join("t/d"));
    wait_read_ahead(&fx.mnt, 1);
    w.write_all(&[7u8; 100]).unwrap();
    let used = read_ahead(&fx.mnt).1;
    assert_eq!(sorted(names(&fx.mnt.join("t/d/s"))), ["f", "low"]);
    assert_eq!(
        read_ahead(&fx.mnt).1,
        used + 1,
        "the listing read ahead served"
    );
    // Its attributes for f would be from before the write.
    assert_eq!(
        fs::symlink_metadata(fx.mnt.join("t/d/s/f")).unwrap().len(),
        100
    );
}

#[test]
fn a_directory_replaced_behind_the_union_is_listed_as_it_is_now_without_attribute_caching() {
    // Names cached for a minute, attributes not: every listing reaches the daemon, whose
    // branch fds for the directory may be older than the directory now in the branch.
    let Some(fx) = mount_with(&["-o", "attr_timeout=0"]) else {
        return;
    };
    fs::create_dir(fx.low.join("d")).unwrap();
    fs::write(fx.low.join("d/old"), "").unwrap();
    let d = fx.mnt.join("d");
    assert_eq!(names(&d), ["old"]);
    fs::symlink_metadata(d.join("old")).unwrap();
    fs::rename(fx.low.join("d"), fx.low.join("gone")).unwrap();
    fs::create_dir(fx.low.join("d")).unwrap();
    fs::write(fx.low.join("d/new"), "").unwrap();
    // The listing reads the branch as it is now, not the directory that moved away;
    // names in it are looked up on the old fds until the entry timeout (or
    // a refresh), as documented, so "new" may not show yet.
    let got = names(&d);
    assert!(got.is_empty() || got == ["new"], "{got:?}");
    ctl(&fx.mnt, &["refresh"]).ok();
    assert_eq!(names(&d), ["new"]);
}

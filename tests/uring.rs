//! FUSE over io_uring (`-o uring=off|auto|on`): the ring serves the requests when the
//! kernel offers it and /dev/fuse when off (counted by `ctl stats`); `on` where the kernel
//! does not offer it is refused in one line, with nothing mounted; a daemon killed with
//! requests in flight on the ring leaves a mount that `fusermount3 -u` removes and an
//! upper with nothing partial; a rootless mount uses the ring too; ring workers run on
//! their queue's CPU unless `uring_pin=off`.
//!
//! The kernel side is the fuse module's `enable_uring` parameter (scripts/test.sh sets
//! it). The one test that flips it holds `KNOB`, as does every test here that needs it on;
//! it puts the old value back on drop, also on panic.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::ctl::{mount_with, stats};
use crate::util::*;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

static KNOB: Mutex<()> = Mutex::new(());

fn knob() -> std::sync::MutexGuard<'static, ()> {
    KNOB.lock().unwrap_or_else(|e| e.into_inner())
}

fn uring_enabled() -> bool {
    fs::read_to_string(PARAM).is_ok_and(|v| v.trim() == "Y")
}

fn require_uring() -> bool {
    require_root()
        && require(
            uring_enabled(),
            "needs FUSE over io_uring: Linux 6.14+ built with CONFIG_FUSE_IO_URING and Y in \
             /sys/module/fuse/parameters/enable_uring (scripts/test.sh sets it)",
        )
}

fn uring_requests(mnt: &Path) -> u64 {
    stats(mnt)["uring_requests"]
        .as_u64()
        .expect("uring_requests in stats")
}

/// 100 creates and stats: requests the daemon must serve.
fn some_requests(mnt: &Path) {
    for i in 0..100 {
        let p = mnt.join(format!("f{i}"));
        fs::write(&p, format!("{i}\n")).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("{i}\n"));
    }
}

#[test]
fn the_ring_serves_requests_when_on_and_none_when_off() {
    if !require_uring() {
        return;
    }
    let _k = knob();
    let Some(on) = mount_with(&["-o", "uring=on"]) else {
        return;
    };
    some_requests(&on.mnt);
    let n = uring_requests(&on.mnt);
    assert!(n >= 200, "requests through the ring with uring=on: {n}");
    let Some(off) = mount_with(&["-o", "uring=off"]) else {
        return;
    };
    some_requests(&off.mnt);
    assert_eq!(uring_requests(&off.mnt), 0, "uring=off uses /dev/fuse only");
}

/// Sets enable_uring for the guard's life.
struct Param {
    old: String,
}

impl Param {
    fn set(v: &str) -> Param {
        let old = fs::read_to_string(PARAM).unwrap();
        fs::write(PARAM, v).unwrap();
        Param { old }
    }
}

impl Drop for Param {
    fn drop(&mut self) {
        let _ = fs::write(PARAM, self.old.trim());
    }
}

#[test]
fn uring_on_is_refused_in_one_line_where_the_kernel_does_not_offer_it() {
    if !require_root()
        || !require(
            Path::new(PARAM).exists(),
            "needs a kernel with CONFIG_FUSE_IO_URING (Linux 6.14+)",
        )
    {
        return;
    }
    let _k = knob();
    let _p = Param::set("N");
    let t = TempTree::new();
    let (up, low, mnt) = (t.mkdir("up"), t.mkdir("low"), t.mkdir("mnt"));
    let mut c = Command::new(unionfs_bin());
    c.args(["-o", "uring=on"])
        .arg(format!("{}=rw:{}=ro", up.display(), low.display()))
        .arg(&mnt);
    match MountGuard::try_run(c, &mnt) {
        Ok(_) => panic!("uring=on mounted although the kernel does not offer io_uring"),
        Err(out) => {
            assert!(!out.success(), "{out}");
            assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out}");
            assert!(out.stderr.contains("io_uring"), "{out}");
        }
    }
    assert!(!is_mounted(&mnt), "nothing mounted");
    // auto falls back to /dev/fuse.
    let Some(auto) = mount_with(&["-o", "uring=auto"]) else {
        return;
    };
    some_requests(&auto.mnt);
    assert_eq!(uring_requests(&auto.mnt), 0);
}

#[test]
fn a_daemon_killed_with_requests_on_the_ring_leaves_a_clean_unmountable_mount() {
    if !require_uring() {
        return;
    }
    let _k = knob();
    let t = TempTree::new();
    let (up, low, mnt) = (t.mkdir("up"), t.mkdir("low"), t.mkdir("mnt"));
    let chunk: Vec<u8> = (0..(2 << 20)).map(|i| (i % 251) as u8).collect();
    for i in 0..24 {
        let p = low.join(format!("big{i}"));
        fs::write(&p, &chunk).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut cmd = Command::new(unionfs_bin());
    cmd.args(["-f", "-o", "uring=on,cow"])
        .arg(format!("{}=rw:{}=ro", up.display(), low.display()))
        .arg(&mnt);
    let mut g = MountGuard::foreground(cmd, &mnt, Duration::from_secs(15));
    fs::metadata(mnt.join("big0")).unwrap();
    assert!(uring_requests(&mnt) > 0, "the ring serves this mount");
    let copied = |up: &Path| {
        (0..24)
            .filter(|i| up.join(format!("big{i}")).exists())
            .count()
    };
    // Copy-ups (chmod of lower files) from two threads, while the daemon is killed. A
    // worker that sees an error stops and says so: its request was cut off by the kill.
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let mnt = mnt.clone();
            std::thread::spawn(move || {
                for i in (w..24).step_by(2) {
                    let p = mnt.join(format!("big{i}"));
                    if let Err(e) = fs::set_permissions(&p, fs::Permissions::from_mode(0o600)) {
                        return Some(e);
                    }
                }
                None
            })
        })
        .collect();
    // Kill once the ring has served requests and the first copy-up is in the upper, so
    // the others are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while copied(&up) == 0 {
        assert!(std::time::Instant::now() < deadline, "no copy-up in 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = g.child().unwrap().id() as i32;
    // SAFETY: killing the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let before = copied(&up);
    let errors: Vec<_> = workers
        .into_iter()
        .filter_map(|w| w.join().unwrap())
        .collect();
    assert!(
        before < 24 && !errors.is_empty(),
        "the kill came after the work: {before} copy-ups done, errors {errors:?}"
    );
    assert!(
        g.wait_child(Duration::from_secs(10)).is_some(),
        "the daemon is gone"
    );
    let out = run(Command::new("fusermount3").arg("-u").arg(&mnt));
    assert!(out.success(), "fusermount3 -u after the kill: {out}");
    assert!(!is_mounted(&mnt), "the mount is gone");
    g.forget();
    // Every copy-up in the upper is whole: the file is there entirely or not at all, and
    // nothing else is there but the meta and work directories.
    for e in fs::read_dir(&up).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name == ".unionfs-fuse" || name == ".unionfs-work" {
            continue;
        }
        let i: usize = name
            .strip_prefix("big")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} in the upper after the kill"));
        let p = up.join(&name);
        assert_eq!(fs::read(&p).unwrap(), chunk, "{} is partial", p.display());
        assert!(i < 24);
    }
    // The branches are fit for a new mount, which sees the finished copy-ups.
    let mut cmd = Command::new(unionfs_bin());
    cmd.args(["-o", "uring=on,cow"])
        .arg(format!("{}=rw:{}=ro", up.display(), low.display()))
        .arg(&mnt);
    let _again = MountGuard::run(cmd, &mnt);
    // A chmod the kill cut off may leave a whole copy with the old mode, never a new
    // mode without a copy.
    for i in 0..24 {
        let name = format!("big{i}");
        let mode = fs::metadata(mnt.join(&name)).unwrap().permissions().mode() & 0o777;
        assert!(
            mode == 0o644 || (mode == 0o600 && up.join(&name).exists()),
            "{name}: mode {mode:o}"
        );
        assert_eq!(
            fs::read(mnt.join(&name)).unwrap(),
            chunk,
            "{name} through the mount"
        );
    }
    let tmp = up.join(".unionfs-fuse/.unionfs-work/tmp");
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "the cut-off copies are swept: {left:?}");
}

#[test]
fn a_rootless_mount_uses_the_ring_too() {
    if !require_uring() {
        return;
    }
    let Some((uid, gid)) = require_rootless_fuse() else {
        return;
    };
    let _k = knob();
    let t = TempTree::new();
    let bin = t.install_bin();
    t.write("L/a", "lower\n");
    t.mkdir("U");
    t.mkdir("mnt");
    t.give_to(uid, gid);
    let mnt = t.join("mnt");
    let mut cmd = as_user(TEST_USER, &bin);
    cmd.args(["-o", "uring=on"])
        .arg(format!(
            "{}=rw:{}=ro",
            t.join("U").display(),
            t.join("L").display()
        ))
        .arg(&mnt)
        .current_dir(t.path());
    let _g = MountGuard::run(cmd, &mnt);
    let m = mnt.display();
    let mut c = as_user(TEST_USER, "sh");
    c.arg("-c").arg(format!(
        "cat '{m}/a' && for i in 1 2 3 4 5; do echo $i > '{m}/f'$i; done && \
         '{}' ctl '{m}' stats --json",
        bin.display()
    ));
    let out = run(&mut c).ok();
    assert!(out.stdout.starts_with("lower\n"), "{out}");
    let json = out.stdout.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(
        v["uring_requests"].as_u64().unwrap_or(0) >= 10,
        "requests through the ring: {out}"
    );
}

/// The daemon's ring workers (threads `fuser-uring-Q.I`): queue and allowed CPUs.
fn ring_workers(pid: u32) -> Vec<(String, String)> {
    threads_of(pid)
        .into_iter()
        .filter_map(|(name, cpus)| {
            let queue = name
                .strip_prefix("fuser-uring-")?
                .split('.')
                .next()?
                .to_string();
            Some((queue, cpus))
        })
        .collect()
}

/// Whether a CPU list such as "0-3,6" names `cpu`.
fn cpu_list_has(list: &str, cpu: &str) -> bool {
    let Ok(cpu) = cpu.parse::<u32>() else {
        return false;
    };
    list.split(',').any(|part| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        matches!((a.trim().parse::<u32>(), b.trim().parse::<u32>()), (Ok(a), Ok(b)) if a <= cpu && cpu <= b)
    })
}

#[test]
fn ring_workers_run_on_their_queues_cpu_unless_uring_pin_is_off() {
    if !require_uring() {
        return;
    }
    let _k = knob();
    let mine = cpus_allowed(Path::new("/proc/self/status"));
    for pin in ["on", "off"] {
        let t = TempTree::new();
        let (up, low, mnt) = (t.mkdir("up"), t.mkdir("low"), t.mkdir("mnt"));
        let mut cmd = Command::new(unionfs_bin());
        cmd.args(["-f", "-o", &format!("uring=on,uring_pin={pin}")])
            .arg(format!("{}=rw:{}=ro", up.display(), low.display()))
            .arg(&mnt);
        let mut g = MountGuard::foreground(cmd, &mnt, Duration::from_secs(15));
        // Requests from each of our CPUs: queue N serves those issued on CPU N.
        let ours: Vec<usize> = (0..1024)
            .filter(|c| cpu_list_has(&mine, &c.to_string()))
            .collect();
        for &cpu in &ours {
            let m = mnt.clone();
            std::thread::spawn(move || {
                pin_this_thread(cpu);
                some_requests(&m);
            })
            .join()
            .unwrap();
        }
        let workers = ring_workers(g.child().unwrap().id());
        assert!(!workers.is_empty(), "no ring workers with uring=on");
        for (queue, cpus) in &workers {
            if pin == "on" {
                // A worker moves to its queue's CPU with its first request (a spare
                // that has served none yet still runs anywhere).
                assert!(
                    cpus == queue || cpus == &mine,
                    "uring_pin=on: worker of queue {queue} on {cpus}"
                );
            } else {
                assert_eq!(cpus, &mine, "uring_pin=off: worker of queue {queue}");
            }
        }
        if pin == "on" {
            for cpu in &ours {
                let q = cpu.to_string();
                assert!(
                    workers
                        .iter()
                        .any(|(queue, cpus)| *queue == q && *cpus == q),
                    "uring_pin=on: no worker of queue {q} runs on CPU {q}: {workers:?}"
                );
            }
        }
        assert!(g.unmount().expect("status").success());
    }
}

/// Runs the calling thread on `cpu` alone.
fn pin_this_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; sched_setaffinity on this thread only.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        r,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn a_queue_gets_another_worker_when_a_request_finds_none_waiting() {
    if !require_uring() {
        return;
    }
    let _k = knob();
    let t = TempTree::new();
    let (up, low, mnt) = (t.mkdir("up"), t.mkdir("low"), t.mkdir("mnt"));
    // A copy-up long enough to overlap many lookups: 256 MiB of data (not a hole).
    {
        use std::io::Write;
        let mut f = fs::File::create(low.join("big")).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        for _ in 0..256 {
            f.write_all(&chunk).unwrap();
        }
    }
    let mut cmd = Command::new(unionfs_bin());
    cmd.args(["-f", "-o", "cow,uring=on,uring_pin=on"])
        .arg(format!("{}=rw:{}=ro", up.display(), low.display()))
        .arg(&mnt);
    let mut g = MountGuard::foreground(cmd, &mnt, Duration::from_secs(15));
    let pid = g.child().unwrap().id();
    // Every request of this test is issued on CPU 0, so it goes to queue 0.
    let cpu = cpus_allowed(Path::new("/proc/self/status"))
        .split([',', '-'])
        .next()
        .unwrap()
        .trim()
        .to_string();
    let queue_workers = || ring_workers(pid).iter().filter(|(q, _)| *q == cpu).count();
    let cpu_n: usize = cpu.parse().unwrap();
    pin_this_thread(cpu_n);
    for i in 0..20 {
        assert!(fs::metadata(mnt.join(format!("before{i}"))).is_err());
    }
    let before = queue_workers();
    assert!(before > 0, "no ring worker for queue {cpu}");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let (big, done) = (mnt.join("big"), done.clone());
        std::thread::spawn(move || {
            pin_this_thread(cpu_n);
            // Opening a lower file for writing copies it up inside the OPEN request.
            let r = fs::OpenOptions::new().write(true).open(&big).map(drop);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        })
    };
    // New names: each lookup is a request (nothing cached), issued while the copy-up
    // holds a worker of the same queue.
    let mut during = 0;
    let mut i = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(fs::metadata(mnt.join(format!("during{i}"))).is_err());
        i += 1;
        if !done.load(std::sync::atomic::Ordering::SeqCst) {
            during += 1;
        }
    }
    opener.join().unwrap().expect("open for writing (copy-up)");
    assert!(
        during > 10,
        "only {during} lookups finished during the copy-up: it was too short to test with"
    );
    let after = queue_workers();
    assert!(
        after > before,
        "queue {cpu} kept {before} workers while one was busy with a copy-up ({during} \
         lookups served meanwhile)"
    );
    assert_eq!(fs::metadata(up.join("big")).unwrap().len(), 256 << 20);
    assert!(g.unmount().expect("status").success());
}

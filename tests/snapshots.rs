//! Snapshots while files stay open for writing, in the default mode (passthrough=auto):
//! a writer held across 20 snapshots, forking writers, a shared-mmap writer. As root the
//! writers are FUSE passthrough handles (the kernel writes the branch file itself, and a
//! snapshot moves the live file up with its inode, leaving a copy below); rootless they
//! are served by the daemon (no CAP_SYS_ADMIN, no passthrough), and their next write
//! copies the file up. Either way each snapshot must hold exactly the bytes written
//! before it returned, and every later write must land in the new top.
//!
//! The workloads run as one process (python3) that writes, calls `unionfs ctl`, and
//! writes again, as root or as the test user; the branches are read directly.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::*;

struct World {
    t: TempTree,
    up: PathBuf,
    mnt: PathBuf,
    bin: PathBuf,
    /// Runs as the test user (rootless), else as root.
    user: bool,
    _g: MountGuard,
}

fn world(rootless: bool) -> Option<World> {
    if !require_root() {
        return None;
    }
    let ids = if rootless {
        Some(require_rootless_fuse()?)
    } else {
        None
    };
    if !require(
        std::path::Path::new("/usr/bin/python3").exists(),
        "/usr/bin/python3 is missing (scripts/test.sh installs python3)",
    ) {
        return None;
    }
    let t = TempTree::new();
    let bin = t.install_bin();
    let up = t.mkdir("up");
    let low = t.mkdir("low");
    let mnt = t.mkdir("mnt");
    t.write("low/base", "base\n");
    let mut cmd = match ids {
        Some((uid, gid)) => {
            t.give_to(uid, gid);
            as_user(TEST_USER, &bin)
        }
        None => std::process::Command::new(&bin),
    };
    cmd.arg("--branch")
        .arg(format!("{}=rw", up.display()))
        .arg("--branch")
        .arg(format!("{}=ro", low.display()))
        .arg(&mnt)
        .current_dir(t.path());
    let g = MountGuard::run(cmd, &mnt);
    Some(World {
        t,
        up,
        mnt,
        bin,
        user: rootless,
        _g: g,
    })
}

impl World {
    /// Runs a python3 program with `MNT`, `TREE` and `UNIONFS` in its environment.
    #[track_caller]
    fn py(&self, program: &str) -> Outcome {
        let mut c = if self.user {
            let mut c = as_user(TEST_USER, "/usr/bin/env");
            c.arg(format!("MNT={}", self.mnt.display()))
                .arg(format!("TREE={}", self.t.path().display()))
                .arg(format!("UNIONFS={}", self.bin.display()))
                .arg("/usr/bin/python3");
            c
        } else {
            let mut c = std::process::Command::new("/usr/bin/python3");
            c.env("MNT", &self.mnt)
                .env("TREE", self.t.path())
                .env("UNIONFS", &self.bin);
            c
        };
        c.arg("-c").arg(program).current_dir(self.t.path());
        let out = run_timeout(&mut c, Duration::from_secs(300));
        assert!(out.success(), "{out}");
        out
    }

    /// The ctl stats of the mount (as whoever owns it).
    fn passthrough_inodes_seen(&self, out: &Outcome) -> u64 {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("passthrough_inodes="))
            .and_then(|v| v.trim().parse().ok())
            .expect("the workload prints passthrough_inodes=")
    }
}

/// Python helpers every workload shares: a snapshot call and the stats read.
const PRELUDE: &str = r#"
import os, subprocess, json, sys
M, T, U = os.environ["MNT"], os.environ["TREE"], os.environ["UNIONFS"]
def snapshot(name):
    subprocess.run([U, "ctl", M, "snapshot", os.path.join(T, name)], check=True)
def stats():
    out = subprocess.run([U, "ctl", M, "stats", "--json"], check=True, capture_output=True)
    return json.loads(out.stdout)
def chunk(i, n=65536):
    return bytes((i * 7 + j) % 251 for j in range(n))
"#;

fn chunk(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|j| ((i * 7 + j) % 251) as u8).collect()
}

fn writer_open_across_20_snapshots(rootless: bool) {
    let Some(w) = world(rootless) else { return };
    let out = w.py(&format!(
        "{PRELUDE}
f = os.open(os.path.join(M, 'log'), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
os.write(f, chunk(0))
print('passthrough_inodes=%d' % stats()['passthrough_inodes'])
for i in range(1, 21):
    snapshot('snap%d' % i)
    os.write(f, chunk(i))
# The same descriptor reads back everything it wrote.
os.lseek(f, 0, os.SEEK_SET)
got = b''
while True:
    b = os.read(f, 1 << 20)
    if not b: break
    got += b
assert got == b''.join(chunk(i) for i in range(21)), len(got)
os.close(f)
"
    ));
    let pt = w.passthrough_inodes_seen(&out);
    if rootless {
        assert_eq!(pt, 0, "a rootless mount has no passthrough");
    } else {
        assert_eq!(pt, 1, "as root the writer is a passthrough handle");
    }
    let want = |k: usize| -> Vec<u8> { (0..=k).flat_map(|i| chunk(i, 65536)).collect() };
    // up holds chunk 0; snapK (top from snapshot K to K+1) holds chunks 0..=K.
    let mut branches = vec![w.up.clone()];
    branches.extend((1..=20).map(|i| w.t.join(format!("snap{i}"))));
    for (k, b) in branches.iter().enumerate() {
        let got = fs::read(b.join("log")).unwrap();
        assert!(
            got == want(k),
            "{}: {} bytes, want the {} bytes of chunks 0..={k}",
            b.display(),
            got.len(),
            want(k).len()
        );
    }
    assert_eq!(fs::read(w.t.join("snap20/log")).unwrap(), want(20));
}

#[test]
fn a_writer_open_across_20_snapshots_leaves_each_its_bytes() {
    writer_open_across_20_snapshots(false);
}

#[test]
fn rootless_a_writer_open_across_20_snapshots_leaves_each_its_bytes() {
    writer_open_across_20_snapshots(true);
}

fn forking_writer_across_snapshots(rootless: bool) {
    let Some(w) = world(rootless) else { return };
    // A shell appends numbered lines from child processes, through an inherited
    // descriptor and by opening the file anew, while five snapshots are taken.
    w.py(&format!(
        "{PRELUDE}
import time
script = '''
exec 3>>\"$MNT/log\"
i=0
while [ ! -e \"$TREE/stop\" ]; do
    i=$((i+1)); sh -c \"echo $i >&3\"
    i=$((i+1)); sh -c \"echo $i >> '$MNT/log'\"
done
echo $i > \"$TREE/count\"
'''
open(os.path.join(T, 'w.sh'), 'w').write(script)
p = subprocess.Popen(['sh', os.path.join(T, 'w.sh')])
def lines():
    return len(open(os.path.join(M, 'log')).read().split()) if os.path.exists(os.path.join(M, 'log')) else 0
for s in range(1, 6):
    start = time.time()
    while lines() < 20 * s and time.time() - start < 60:
        time.sleep(0.01)
    snapshot('fsnap%d' % s)
open(os.path.join(T, 'stop'), 'w').close()
assert p.wait() == 0
open(os.path.join(T, 'view'), 'w').write(open(os.path.join(M, 'log')).read())
"
    ));
    let count: usize = fs::read_to_string(w.t.join("count"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let all: String = (1..=count).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        fs::read_to_string(w.t.join("view")).unwrap(),
        all,
        "the mount shows every line once, in order"
    );
    assert_eq!(
        fs::read_to_string(w.t.join("fsnap5/log")).unwrap(),
        all,
        "the top after the last snapshot holds the whole file"
    );
    // Each snapshot is a whole-line prefix of the next: nothing lost, torn or misplaced.
    let mut prev = String::new();
    for b in std::iter::once(w.up.clone()).chain((1..=5).map(|i| w.t.join(format!("fsnap{i}")))) {
        let s = fs::read_to_string(b.join("log")).unwrap();
        assert!(
            s.starts_with(&prev),
            "{}: not an extension of the snapshot before",
            b.display()
        );
        assert!(
            all.starts_with(&s) && s.ends_with('\n'),
            "{}: not a prefix of the file",
            b.display()
        );
        assert!(
            s.len() > prev.len(),
            "{}: no line landed between two snapshots",
            b.display()
        );
        prev = s;
    }
}

#[test]
fn a_forking_writer_across_snapshots_loses_and_misplaces_nothing() {
    forking_writer_across_snapshots(false);
}

#[test]
fn rootless_a_forking_writer_across_snapshots_loses_and_misplaces_nothing() {
    forking_writer_across_snapshots(true);
}

fn mmap_writer_across_a_snapshot(rootless: bool) {
    let Some(w) = world(rootless) else { return };
    // Stores before the snapshot are not msynced: they belong to it all the same.
    w.py(&format!(
        "{PRELUDE}
import mmap
p = os.path.join(M, 'm')
with open(p, 'wb') as f:
    f.write(bytes(16384))
f = open(p, 'r+b')
m = mmap.mmap(f.fileno(), 0)
m[0:4096] = b'A' * 4096
snapshot('msnap')
m[4096:8192] = b'B' * 4096
m[0:10] = b'C' * 10
m.flush()
m.close()
f.close()
"
    ));
    let snap = fs::read(w.up.join("m")).unwrap();
    let mut want = vec![0u8; 16384];
    want[..4096].fill(b'A');
    assert!(snap == want, "the snapshot holds the stores made before it");
    want[4096..8192].fill(b'B');
    want[..10].fill(b'C');
    assert!(
        fs::read(w.t.join("msnap/m")).unwrap() == want,
        "the new top holds every store"
    );
    if !rootless {
        assert!(
            fs::read(w.mnt.join("m")).unwrap() == want,
            "the mount shows the new top"
        );
    }
}

#[test]
fn an_mmap_writer_across_a_snapshot() {
    mmap_writer_across_a_snapshot(false);
}

#[test]
fn rootless_an_mmap_writer_across_a_snapshot() {
    mmap_writer_across_a_snapshot(true);
}

//! Spare empty files in a work directory's scratch space, made ahead by a thread of
//! their own, so that a copy-up starts from one instead of allocating an inode while
//! its caller waits.
//!
//! Allocating an inode is most of a small copy-up's cost on ext4 (without a journal,
//! its allocator steps over every recently freed inode of the group one by one), and a
//! copy-up is synchronous: `touch` of a lower file waits for it. The spares are made on
//! another CPU while the copy-ups run. They start with the first copy-up, so a mount
//! that copies nothing up makes none; their number follows demand (doubling whenever a
//! copy-up finds none left, up to `MAX_SPARES`). They are plain empty files owned by the
//! daemon, mode 0600, and a copy-up sets the owner, mode, times and xattrs of the one it
//! takes as it does for a file it makes. Left over at unmount, they are removed; after a
//! crash, the next mount's sweep of the scratch directory removes them.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::sys;

/// The prefix of this process's spare files' names.
pub(crate) fn name_prefix() -> String {
    format!("#{:x}.s", std::process::id())
}

/// At most this many spares at a time.
const MAX_SPARES: usize = 64;
/// Spares wanted at first.
const FIRST_TARGET: usize = 4;

#[derive(Debug, Default)]
struct State {
    ready: Vec<OsString>,
    target: usize,
    started: bool,
    stopped: bool,
}

/// What the maker thread and the work directory share.
#[derive(Debug)]
struct Shared {
    /// The scratch directory (a duplicate of the work directory's fd).
    dir: OwnedFd,
    /// The prefix of the spares' names (unique to this process and work directory).
    prefix: String,
    state: Mutex<State>,
    wanted: Condvar,
}

/// The spares of one scratch directory.
#[derive(Debug)]
pub(crate) struct Spares {
    shared: Arc<Shared>,
}

impl Spares {
    /// Spares in `dir`, named `prefix` and a number (none made yet).
    pub(crate) fn new(dir: &OwnedFd, prefix: String) -> std::io::Result<Spares> {
        Ok(Spares {
            shared: Arc::new(Shared {
                dir: dir.try_clone()?,
                prefix,
                state: Mutex::new(State {
                    target: FIRST_TARGET,
                    ..State::default()
                }),
                wanted: Condvar::new(),
            }),
        })
    }

    /// Takes a spare: the name of an empty regular file in the scratch directory, now
    /// the caller's. None: none is ready (the maker is asked for more).
    pub(crate) fn take(&self) -> Option<OsString> {
        let mut st = self.shared.state.lock();
        if st.stopped {
            return None;
        }
        if !st.started {
            st.started = true;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("unionfs-spares".into())
                .spawn(move || shared.make());
            if let Err(e) = spawned {
                tracing::debug!("no spare files: {e}");
                st.stopped = true;
                return None;
            }
        }
        let got = st.ready.pop();
        if got.is_none() {
            st.target = (st.target * 2).min(MAX_SPARES);
        }
        self.shared.wanted.notify_one();
        got
    }

    /// How many spares are ready (for tests).
    #[cfg(test)]
    pub(crate) fn ready(&self) -> usize {
        self.shared.state.lock().ready.len()
    }
}

impl Spares {
    /// Stops the maker and removes the spares left (also when dropped).
    pub(crate) fn stop(&self) {
        let left = {
            let mut st = self.shared.state.lock();
            st.stopped = true;
            std::mem::take(&mut st.ready)
        };
        self.shared.wanted.notify_one();
        for name in left {
            let _ = sys::unlinkat(self.shared.dir.as_fd(), &name, false);
        }
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// The maker thread: keeps `target` spares ready until stopped.
    fn make(&self) {
        let mut n: u64 = 0;
        loop {
            {
                let mut st = self.state.lock();
                while !st.stopped && st.ready.len() >= st.target {
                    self.wanted.wait(&mut st);
                }
                if st.stopped {
                    return;
                }
            }
            let name = OsString::from(format!("{}{n}", self.prefix));
            n += 1;
            let made = sys::openat(
                self.dir.as_fd(),
                &name,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o600,
            );
            if let Err(e) = made {
                // A full disk, a quota: the copy-ups make their own files (and report).
                tracing::debug!("no more spare files: {e}");
                self.state.lock().stopped = true;
                return;
            }
            let mut st = self.state.lock();
            if st.stopped {
                drop(st);
                let _ = sys::unlinkat(self.dir.as_fd(), &name, false);
                return;
            }
            st.ready.push(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::copyup::Data;
    use crate::core::testutil::{lookup_path, read, Tree};
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn spares_are_made_on_demand_taken_once_and_removed_when_stopped() {
        let t = tempfile::tempdir().unwrap();
        let fd: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let s = Spares::new(&fd, "#t.s".into()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(names(t.path()).is_empty(), "none before the first copy-up");
        assert_eq!(s.take(), None, "the first asks for some");
        wait_for("the first spares", || s.ready() >= FIRST_TARGET);
        let got = s.take().expect("a spare");
        let m = std::fs::symlink_metadata(t.path().join(&got)).unwrap();
        assert!(
            m.file_type().is_file() && m.len() == 0,
            "an empty regular file"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let mut taken = vec![got.clone()];
        for _ in 0..3 * FIRST_TARGET {
            if let Some(n) = s.take() {
                assert!(!taken.contains(&n), "{n:?} handed out twice");
                taken.push(n);
            }
        }
        s.stop();
        let mut left = names(t.path());
        let mut want: Vec<String> = taken.iter().map(|n| n.to_string_lossy().into()).collect();
        want.sort();
        // The maker may finish one file after the stop: it removes that one itself.
        wait_for("the maker to remove its last file", || {
            left = names(t.path());
            left == want
        });
        assert_eq!(s.take(), None, "none after the stop");
    }

    #[test]
    fn copy_ups_start_from_spare_files_which_the_end_of_the_mount_removes() {
        use std::os::unix::fs::PermissionsExt;
        let t = Tree::new(&["rw", "ro"]);
        for i in 0..40 {
            t.file("ro", &format!("f{i}"), &format!("data {i}\n"));
            let p = t.path("ro").join(format!("f{i}"));
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640 + (i % 8))).unwrap();
        }
        let tmp = t
            .path("rw")
            .join(crate::core::branch::HIDDEN_WORK_NAME)
            .join("tmp");
        let u = t.union(crate::core::FormatChoice::Wh);
        for i in 0..40 {
            let data = if i % 2 == 0 { Data::Full } else { Data::Meta };
            u.copy_up(&lookup_path(&u, &format!("f{i}")), data).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // Spares wait in tmp (once the maker is done with its last one), and the next
        // copy-up is one of them.
        let inodes = || -> Vec<u64> {
            let mut v: Vec<u64> = std::fs::read_dir(&tmp)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().ino())
                .collect();
            v.sort_unstable();
            v
        };
        let mut spares = inodes();
        wait_for("the maker to settle", || {
            std::thread::sleep(Duration::from_millis(20));
            let now = inodes();
            std::mem::replace(&mut spares, now) == spares
        });
        assert!(!spares.is_empty(), "spares ready in tmp");
        t.file("ro", "next", "next\n");
        u.copy_up(&lookup_path(&u, "next"), Data::Full).unwrap();
        let next = std::fs::metadata(t.path("rw").join("next")).unwrap();
        assert!(spares.contains(&next.ino()), "the copy-up took a spare");
        assert_eq!(
            std::fs::read_to_string(t.path("rw").join("next")).unwrap(),
            "next\n"
        );
        for i in 0..40 {
            let (lo, up) = (
                std::fs::metadata(t.path("ro").join(format!("f{i}"))).unwrap(),
                std::fs::metadata(t.path("rw").join(format!("f{i}"))).unwrap(),
            );
            assert_eq!(
                up.permissions().mode(),
                lo.permissions().mode(),
                "f{i}: mode"
            );
            assert_eq!(
                (up.uid(), up.gid(), up.mtime()),
                (lo.uid(), lo.gid(), lo.mtime())
            );
            assert_eq!(
                read(&u, &lookup_path(&u, &format!("f{i}"))),
                format!("data {i}\n")
            );
        }
        u.end_of_mount();
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "spares removed"
        );
        // Later copy-ups make their own files again.
        t.file("ro", "late", "late\n");
        u.copy_up(&lookup_path(&u, "late"), Data::Full).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path("rw").join("late")).unwrap(),
            "late\n"
        );
    }
}

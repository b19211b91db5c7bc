//! Directory readahead: while a tree walk (find, du, `ls -R`, git status) lists one
//! directory after another, the subdirectories each listing shows are merged ahead on a
//! thread of their own, so that the walk's READDIRPLUS of each finds its listing taken.
//! The walk's CPU then does the transport and the reply while another CPU lists.
//!
//! A walk is two listings begun less than [`WALK_GAP`] apart; a lone `ls` reads nothing
//! ahead. Subdirectories are read in the order a depth-first walk visits them: those of
//! the latest listing first, in listing order.
//!
//! A listing taken ahead serves only if no operation that may change the tree started
//! through the mount since it was taken, or was in flight then
//! ([`Union::quiet_changes`]); if its directory's layers and the stack are still what
//! they were ([`DirFds::fits`]); and if it is younger than the entry timeout, so that a
//! change behind the union's back shows as soon as it would for a cached name.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::{Condvar, Mutex};

use super::listing::Listing;
use crate::core::{DirFds, Obj, Union};

/// Two listings begun at most this far apart are a walk.
const WALK_GAP: Duration = Duration::from_millis(50);
/// Directories waiting to be read ahead, at most (the oldest are dropped).
const MAX_QUEUED: usize = 64;
/// Listings read ahead and not yet used, at most (each holds its fds).
const MAX_READY: usize = 64;
/// Entries (listed and looked up) those listings hold in all, at most.
const MAX_READY_ENTRIES: usize = 16 * 1024;
/// Branch directory fds they hold, at most (the daemon's open-file limit may be 1,024).
const MAX_READY_FDS: usize = 128;
/// A directory with more entries than this gets only its subdirectories looked up ahead.
const MAX_FILES_LOOKED_UP: usize = 4096;
/// No read ahead yet.
const NEVER: u64 = u64::MAX;
/// Directories remembered as listed by the walk, at most (then forgotten at once).
const MAX_LISTED: usize = 16 * 1024;

/// A listing read ahead.
pub(super) struct Ahead {
    pub(super) list: Arc<Listing>,
    /// The fds it was read on, for the lookups of the reply.
    pub(super) fds: Arc<DirFds>,
    /// Its entries looked up as well: the subdirectories, and if the walk looks files
    /// up too (du, `ls -lR`) the files of read-only branches.
    pub(super) found: HashMap<OsString, Obj>,
    changes: u64,
}

/// A directory to read ahead.
pub(super) struct Job {
    /// Its node number.
    pub(super) ino: u64,
    pub(super) dir: Obj,
    /// Whether to look its files up as well.
    pub(super) files: bool,
}

impl Job {
    /// Reads `dir` ahead (its files looked up too if `files`).
    pub(super) fn new(dir: &Obj, files: bool) -> Job {
        Job {
            ino: dir.ino,
            dir: dir.clone(),
            files,
        }
    }
}

/// How many listings were read ahead, and how many of those served.
#[derive(Default)]
pub(super) struct AheadStats {
    pub(super) read: AtomicU64,
    pub(super) used: AtomicU64,
}

pub(super) struct ReadAhead {
    union: Arc<Union>,
    /// How long a listing read ahead may serve (zero: no readahead).
    max_age: Duration,
    start: Instant,
    /// When the latest listing began: microseconds since `start`, plus one (0: never).
    last_scan: AtomicU64,
    queue: Mutex<VecDeque<Job>>,
    wake: Condvar,
    ready: DashMap<u64, Ahead>,
    /// Entries and fds the listings in `ready` hold.
    held_entries: AtomicU64,
    held_fds: AtomicU64,
    /// Directories the walk listed lately (not to be read ahead again).
    listed: DashMap<u64, ()>,
    thread: AtomicBool,
    /// The thread waits for work or room.
    waiting: AtomicBool,
    /// The union's change count at the last read ahead ([`NEVER`] before the first).
    last_changes: AtomicU64,
    pub(super) stats: AheadStats,
}

impl ReadAhead {
    pub(super) fn new(union: Arc<Union>, max_age: Duration) -> ReadAhead {
        ReadAhead {
            union,
            max_age,
            start: Instant::now(),
            last_scan: AtomicU64::new(0),
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            ready: crate::core::new_map(),
            held_entries: AtomicU64::new(0),
            held_fds: AtomicU64::new(0),
            listed: crate::core::new_map(),
            thread: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            last_changes: AtomicU64::new(NEVER),
            stats: AheadStats::default(),
        }
    }

    /// A listing of a directory begins: whether it is part of a walk (its
    /// subdirectories are then worth reading ahead).
    pub(super) fn scan_begins(&self) -> bool {
        if self.max_age.is_zero() {
            return false;
        }
        let now = self.start.elapsed().as_micros() as u64 + 1;
        let last = self.last_scan.swap(now, Ordering::Relaxed);
        let gap = now.saturating_sub(last);
        if gap > self.max_age.as_micros() as u64 {
            // A new walk, after a pause longer than anything read ahead lives: what the
            // last one listed may be worth reading ahead again.
            self.listed.clear();
        }
        last != 0 && gap < WALK_GAP.as_micros() as u64
    }

    /// The listing of `ino` read ahead, if it still serves for `dir`. Either way the
    /// walk now lists `ino` itself, so it is not read ahead again.
    pub(super) fn take(&self, ino: u64, dir: &Obj) -> Option<Ahead> {
        if self.max_age.is_zero() {
            return None;
        }
        if self.listed.len() >= MAX_LISTED {
            self.listed.clear();
        }
        self.listed.insert(ino, ());
        let Some((_, a)) = self.ready.remove(&ino) else {
            self.queue.lock().retain(|j| j.ino != ino);
            return None;
        };
        self.release(&a);
        // Room again: the thread refills from half full (woken for each one, it would
        // cost the walk a wakeup per directory). The queue's lock orders this with its
        // check for room before it waits.
        if self.ready.len() <= MAX_READY / 2 {
            let q = self.queue.lock();
            if !q.is_empty() {
                self.notify();
            }
        }
        let serves =
            self.union.unchanged_since(a.changes) && a.fds.fits(&self.union, dir, self.max_age);
        if serves {
            self.stats.used.fetch_add(1, Ordering::Relaxed);
        }
        serves.then_some(a)
    }

    /// Whether `ino` is read ahead, or was listed by the walk lately.
    fn known(&self, ino: u64) -> bool {
        self.ready.contains_key(&ino) || self.listed.contains_key(&ino)
    }

    /// Reads `dirs` ahead, before anything queued earlier.
    pub(super) fn queue(self: &Arc<Self>, dirs: Vec<Job>) {
        if dirs.is_empty() {
            return;
        }
        let dirs: Vec<_> = dirs.into_iter().filter(|j| !self.known(j.ino)).collect();
        if dirs.is_empty() {
            return;
        }
        self.push_front(dirs);
        if !self.thread.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name("unionfs-readahead".into())
                .spawn(move || me.serve());
            if let Err(e) = started {
                tracing::debug!("no readahead thread: {e}");
                self.queue.lock().clear();
                return;
            }
        }
        self.notify();
    }

    /// Wakes the thread if it waits.
    fn notify(&self) {
        if self.waiting.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Queues `dirs` before everything else, in their order.
    fn push_front(&self, dirs: Vec<Job>) {
        let mut q = self.queue.lock();
        for d in dirs.into_iter().rev() {
            q.push_front(d);
        }
        q.truncate(MAX_QUEUED);
    }

    /// Drops what was read ahead for `ino` (the kernel forgot it).
    pub(super) fn forget(&self, ino: u64) {
        if let Some((_, a)) = self.ready.remove(&ino) {
            self.release(&a);
        }
    }

    /// Drops everything read ahead (a stack change or `ctl refresh`).
    pub(super) fn clear(&self) {
        self.queue.lock().clear();
        self.listed.clear();
        self.ready.retain(|_, a| {
            self.release(a);
            false
        });
    }

    /// The thread: reads queued directories, depth first (the subdirectories of each
    /// before the rest of the queue, as the walk will visit them), while there is room
    /// for their listings; until the mount is gone (it then holds the last reference).
    fn serve(self: Arc<Self>) {
        loop {
            let next = {
                let mut q = self.queue.lock();
                loop {
                    if !q.is_empty() && self.room() {
                        break q.pop_front();
                    }
                    if Arc::strong_count(&self) == 1 {
                        break None;
                    }
                    // (Set under the queue's lock, which `notify`'s callers' pushes take.)
                    self.waiting.store(true, Ordering::Release);
                    let idle = self.wake.wait_for(&mut q, Duration::from_secs(1));
                    self.waiting.store(false, Ordering::Release);
                    if idle.timed_out() {
                        // A walk that stopped early leaves no fds held.
                        self.prune();
                    }
                }
            };
            let Some(job) = next else { return };
            let below = self.read(&job);
            if !below.is_empty() {
                self.push_front(below);
            }
        }
    }

    /// Whether another listing read ahead fits, after dropping those too old to serve.
    fn room(&self) -> bool {
        let full = || {
            self.ready.len() >= MAX_READY
                || self.held_entries.load(Ordering::Relaxed) as usize >= MAX_READY_ENTRIES
                || self.held_fds.load(Ordering::Relaxed) as usize >= MAX_READY_FDS
        };
        if full() {
            self.prune();
        }
        !full()
    }

    /// Counts what `a` holds, as it enters `ready`.
    fn hold(&self, a: &Ahead) {
        let entries = (a.list.len() + a.found.len()) as u64;
        self.held_entries.fetch_add(entries, Ordering::Relaxed);
        self.held_fds
            .fetch_add(a.fds.capacity() as u64, Ordering::Relaxed);
    }

    /// Stops counting what `a` holds, as it leaves `ready`. (Saturating: a `clear`
    /// racing with a `take` may release one twice.)
    fn release(&self, a: &Ahead) {
        let entries = (a.list.len() + a.found.len()) as u64;
        let sub = |c: &AtomicU64, n: u64| {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        };
        sub(&self.held_entries, entries);
        sub(&self.held_fds, a.fds.capacity() as u64);
    }

    /// Drops the listings read ahead that are too old to serve (and their fds).
    fn prune(&self) {
        self.ready.retain(|_, a| {
            let young = a.fds.young(self.max_age);
            if !young {
                self.release(a);
            }
            young
        });
    }

    /// Reads a directory ahead; returns its subdirectories, in listing order.
    fn read(&self, job: &Job) -> Vec<Job> {
        let (ino, dir) = (job.ino, &job.dir);
        if self.known(ino) {
            return Vec::new();
        }
        // A change in flight may be half done: what the directory shows now need not
        // be what it shows once the change is done. And a walk that changes the tree as
        // it goes (rm -rf, chmod -R) would make all it reads ahead stale: after a change
        // the queue is dropped, and the next walk starts it again.
        let Some(changes) = self.union.quiet_changes() else {
            self.queue.lock().clear();
            return Vec::new();
        };
        let before = self.last_changes.swap(changes, Ordering::Relaxed);
        if before != NEVER && before != changes {
            self.queue.lock().clear();
            self.listed.clear();
            return Vec::new();
        }
        // (No gate: a stack change meanwhile fails `fits`, and counts as a change.)
        let fds = Arc::new(self.union.dir_fds(dir));
        let mut cursor = self.union.dir_cursor_on(dir, fds.clone());
        let Ok(entries) = self.union.readdir_in(&cursor) else {
            return Vec::new();
        };
        let list = Arc::new(Listing::new(entries));
        let stack = self.union.stack();
        let mut found = HashMap::new();
        let mut below = Vec::new();
        for (_, e) in list.after(0) {
            let files = job.files && list.len() <= MAX_FILES_LOOKED_UP;
            if e.d_type != libc::DT_DIR && !files {
                continue;
            }
            let Ok(child) = cursor.lookup(&e.name) else {
                continue;
            };
            if child.is_dir() && below.len() < MAX_QUEUED && !self.known(child.ino) {
                below.push(Job::new(&child, job.files));
            }
            // A file on a rw branch may have passthrough writers, whose writes change
            // its size and times without a request: it is looked up at reply time. So is
            // a lower hard link whose inode was copied up (its data is in the rw index).
            if child.is_dir() || (!stack.is_rw(child.layers[0]) && child.indexed.is_none()) {
                found.insert(e.name.clone(), child);
            }
        }

        self.stats.read.fetch_add(1, Ordering::Relaxed);
        let a = Ahead {
            list,
            fds,
            found,
            changes,
        };
        self.hold(&a);
        self.ready.insert(ino, a);
        below
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::create::NewKind;
    use crate::core::testutil::*;
    use crate::core::FormatChoice;
    use std::ffi::OsStr;

    fn sorted_names(l: &Listing) -> Vec<String> {
        let mut v: Vec<_> = l
            .after(0)
            .map(|(_, e)| e.name.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Waits until the thread has read `n` listings ahead and waits for more work.
    fn settle(ra: &ReadAhead, n: u64) {
        let t0 = Instant::now();
        while ra.stats.read.load(Ordering::Relaxed) < n
            || !ra.waiting.load(Ordering::Acquire)
            || !ra.queue.lock().is_empty()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{} read ahead, {n} expected",
                ra.stats.read.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A union over `t` (wh format) and a readahead on it.
    fn setup(t: &Tree) -> (Arc<Union>, Arc<ReadAhead>) {
        let u = Arc::new(t.union(FormatChoice::Wh));
        let ra = Arc::new(ReadAhead::new(u.clone(), Duration::from_secs(10)));
        (u, ra)
    }

    fn tree() -> Tree {
        let t = Tree::new(&["rw", "ro"]);
        t.dir("ro", "d/a/deep");
        t.dir("ro", "d/b");
        t.file("ro", "d/a/f", "x");
        t
    }

    #[test]
    fn a_walk_reads_the_tree_below_ahead_until_something_changes() {
        let t = tree();
        // Already in the rw branch: the change below moves no directory up.
        t.dir("rw", "d/b");
        let (u, ra) = setup(&t);
        assert!(!ra.scan_begins(), "a first listing is no walk");
        assert!(ra.scan_begins(), "a second one right after it is");
        let d = lookup_path(&u, "d");
        ra.queue(vec![Job::new(&d, true)]);
        // d, and below it a, a/deep and b.
        settle(&ra, 4);
        let a = lookup_path(&u, "d/a");
        let got = ra.take(a.ino, &a).expect("d/a was read ahead");
        assert_eq!(sorted_names(&got.list), ["deep", "f"]);
        // Looked up too (files as well: the walk asked for them).
        let mut found: Vec<_> = got.found.keys().cloned().collect();
        found.sort();
        assert_eq!(found, ["deep", "f"]);
        let (f, want) = (&got.found[OsStr::new("f")], lookup_path(&u, "d/a/f"));
        assert_eq!(
            (f.ino, &f.path, &f.layers),
            (want.ino, &want.path, &want.layers)
        );
        assert_eq!(ra.stats.used.load(Ordering::Relaxed), 1);
        // A change through the union: nothing read ahead before it serves.
        {
            let _change = u.op_guard();
            let b = lookup_path(&u, "d/b");
            let file = NewKind::File {
                flags: libc::O_WRONLY,
            };
            u.create(&b, os("new"), 0o644, file, caller()).unwrap();
        }
        let b = lookup_path(&u, "d/b");
        assert_eq!(b.layers.len(), 2);
        assert!(ra.take(b.ino, &b).is_none(), "d/b read before the change");
        assert!(ra.take(d.ino, &d).is_none(), "d read before the change");
        assert_eq!(ra.stats.used.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn after_a_change_the_queue_is_dropped_and_the_next_walk_reads_ahead_again() {
        let t = tree();
        let (u, ra) = setup(&t);
        let b = lookup_path(&u, "d/b");
        ra.queue(vec![Job::new(&b, true)]);
        settle(&ra, 1);
        drop(u.op_guard());
        let a = lookup_path(&u, "d/a");
        ra.queue(vec![Job::new(&a, true)]);
        settle(&ra, 1);
        assert_eq!(
            ra.stats.read.load(Ordering::Relaxed),
            1,
            "read after a change"
        );
        // Quiet since: the walk's next listing starts it again.
        ra.queue(vec![Job::new(&a, true)]);
        settle(&ra, 3);
        assert!(ra.take(a.ino, &a).is_some());
    }

    #[test]
    fn nothing_is_read_ahead_while_a_change_is_in_flight() {
        let t = tree();
        let (u, ra) = setup(&t);
        let d = lookup_path(&u, "d");
        let change = u.op_guard();
        ra.queue(vec![Job::new(&d, true)]);
        settle(&ra, 0);
        assert_eq!(ra.stats.read.load(Ordering::Relaxed), 0);
        drop(change);
        assert!(ra.take(d.ino, &d).is_none());
    }

    #[test]
    fn a_directory_whose_layers_changed_behind_the_union_is_listed_afresh() {
        let t = tree();
        let (u, ra) = setup(&t);
        let b = lookup_path(&u, "d/b");
        ra.queue(vec![Job::new(&b, true)]);
        settle(&ra, 1);
        // d/b appears in the rw branch too (not through the union).
        t.dir("rw", "d/b");
        t.file("rw", "d/b/up", "x");
        let now = lookup_path(&u, "d/b");
        assert_eq!(now.layers.len(), 2);
        assert!(ra.take(now.ino, &now).is_none());
    }

    #[test]
    fn off_reads_nothing_ahead() {
        let t = tree();
        let u = Arc::new(t.union(FormatChoice::Wh));
        let ra = Arc::new(ReadAhead::new(u.clone(), Duration::ZERO));
        assert!(!ra.scan_begins() && !ra.scan_begins());
        let d = lookup_path(&u, "d");
        assert!(ra.take(d.ino, &d).is_none());
    }
}

//! FUSE over io_uring (Linux 6.14+, with the fuse module's `enable_uring` on): once
//! FUSE_INIT has negotiated `FUSE_OVER_IO_URING`, requests are fetched and replies
//! committed through io_uring commands on the /dev/fuse fd instead of a read(2) and a
//! writev(2) each. One commit-and-fetch (an `io_uring_enter` that also waits for the
//! next request) per request.
//!
//! The kernel has one queue per possible CPU and activates the ring once every queue has
//! an entry; a request goes to the queue of the CPU it was issued on. With
//! `Config::uring_pin` the queue's workers run on that CPU: a synchronous request is then
//! served where its caller sleeps, without waking another CPU (on a 2-vCPU VM, find and
//! 64 KiB writes twice as fast), but an asynchronous one (readahead of a file the daemon
//! reads) waits until its caller leaves the CPU (a 256 MiB read was 20% slower once).
//! Each queue gets
//! several workers, each with its own small io_uring and exactly one entry: a handler
//! that blocks (an open that waits for a RELEASE) holds only its own entry, and the
//! kernel hands the next request of that queue to another worker. FORGET and INTERRUPT
//! still come through /dev/fuse, so the classic loops keep running beside the ring.
//!
//! A request arrives split in the entry's header (`fuse_in_header`, then the opcode's
//! fixed struct in `op_in`) and payload (names, write data); it is put back together in
//! the classic layout for the unchanged request parser. A reply is the reverse: the
//! `fuse_out_header` goes in the header, the rest in the payload.

use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::thread::ThreadId;

use io_uring::IoUring;
use io_uring::opcode;
use io_uring::squeue::Entry128;
use io_uring::types;
use log::debug;
use log::warn;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::ReplyEmpty;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll::Operation;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// How a session uses FUSE over io_uring.
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Hash)]
pub enum UringMode {
    /// Never: requests are read from /dev/fuse.
    #[default]
    Off,
    /// When the kernel offers it after FUSE_INIT, else /dev/fuse.
    Auto,
    /// Required: the session fails to start where the kernel does not offer it.
    On,
}

/// Requests served through the ring since the process started (all sessions).
static SERVED: AtomicU64 = AtomicU64::new(0);

/// How many requests were served through io_uring (0: the ring was never used).
pub fn uring_requests_served() -> u64 {
    SERVED.load(Ordering::Relaxed)
}

const HEADER_SZ: usize = 128;
const OP_IN_SZ: usize = 128;
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: usize = 16;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// At most this many workers in all (unless there are more queues than that).
const MAX_WORKERS: usize = 64;
/// Workers per queue at the start; another starts as soon as a request finds none of
/// its queue's workers waiting, so a sequential caller's queue keeps one spare. A mount
/// that serves a few requests (and its unmount) pays for few threads.
const INITIAL_PER_QUEUE: usize = 1;
/// The kernel's FUSE_MIN_READ_BUFFER: no payload buffer may be smaller.
const MIN_PAYLOAD: usize = 8192;

/// `struct fuse_uring_ent_in_out`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct EntInOut {
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct fuse_uring_req_header` (288 bytes).
#[repr(C, align(8))]
struct Header {
    in_out: [u8; HEADER_SZ],
    op_in: [u8; OP_IN_SZ],
    ent: EntInOut,
}

/// What the session negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UringParams {
    /// Payload buffer size: at least the kernel's max(8 KiB, max_write, max_pages pages).
    pub(crate) payload: usize,
    /// `UringMode::On`: a worker that cannot run fails the session.
    pub(crate) required: bool,
    /// `Config::uring_pin`: each worker runs on its queue's CPU.
    pub(crate) pin: bool,
}

/// One worker: its ring and its entry's buffers (the kernel writes them between a fetch
/// and its completion; we own them from the completion to the commit). The buffers are
/// leaked on purpose: the kernel may still hold their addresses while a closing ring's
/// commands are cancelled, so they are never freed (one set per worker, per process).
pub(crate) struct Worker {
    qid: u16,
    pool: Arc<RingPool>,
    ring: IoUring<Entry128>,
    /// Serializes pushes to the submission queue (a reply may come from another thread).
    sq: Mutex<()>,
    header: *mut Header,
    payload: *mut [u8],
    iov: *mut [libc::iovec; 2],
    /// The /dev/fuse fd (kept open by `ch`).
    ch: Channel,
    thread: OnceLock<ThreadId>,
    /// A completion seen while checking the registration, handled first by `run`.
    early: Mutex<Option<i32>>,
    /// The current request's reply is queued (only the worker's thread submits: the
    /// kernel delivers the next request through the task that submitted the fetch).
    replied: Mutex<bool>,
    replied_cv: parking_lot::Condvar,
}

// SAFETY: the buffers are only touched by the kernel (while an entry is fetched) or by
// the one request that owns the entry (between its completion and its commit).
unsafe impl Send for Worker {}
// SAFETY: as above; the submission queue is behind `sq`, the completion queue is only
// read by the worker's own thread.
unsafe impl Sync for Worker {}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("qid", &self.qid).finish()
    }
}

/// The reply path of one request that came through the ring.
#[derive(Debug, Clone)]
pub(crate) struct UringReply {
    worker: Arc<Worker>,
    ch: ChannelSender,
}

impl UringReply {
    /// /dev/fuse, for the ioctls a reply may need (passthrough backing files).
    pub(crate) fn channel(&self) -> &ChannelSender {
        &self.ch
    }

    /// Copies the reply into the entry and commits it (and fetches the next request).
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let w = &*self.worker;
        // SAFETY: the entry is ours until this commit (one reply per request).
        let (header, payload) = unsafe { (&mut *w.header, &mut *w.payload) };
        let total: usize = data.iter().map(|d| d.len()).sum();
        if total < OUT_HEADER_LEN || total - OUT_HEADER_LEN > payload.len() {
            // Cannot happen for replies the kernel asked for; never leave it waiting.
            warn!("io_uring reply of {total} bytes does not fit; answering EIO");
            let unique = u64::from_ne_bytes(header.in_out[8..16].try_into().unwrap());
            write_out_header(header, OUT_HEADER_LEN as u32, -libc::EIO, unique);
            header.ent.payload_sz = 0;
        } else {
            let mut at = 0usize;
            for d in data {
                let mut b: &[u8] = d;
                if at < OUT_HEADER_LEN {
                    let n = (OUT_HEADER_LEN - at).min(b.len());
                    header.in_out[at..at + n].copy_from_slice(&b[..n]);
                    at += n;
                    b = &b[n..];
                }
                let p = at - OUT_HEADER_LEN;
                payload[p..p + b.len()].copy_from_slice(b);
                at += b.len();
            }
            header.ent.payload_sz = (total - OUT_HEADER_LEN) as u32;
        }
        let commit_id = header.ent.commit_id;
        w.push(CMD_COMMIT_AND_FETCH, commit_id, false)?;
        // The worker's next wait submits it (from another thread: wake the worker).
        *w.replied.lock() = true;
        w.replied_cv.notify_one();
        Ok(())
    }
}

fn write_out_header(h: &mut Header, len: u32, error: i32, unique: u64) {
    h.in_out[0..4].copy_from_slice(&len.to_ne_bytes());
    h.in_out[4..8].copy_from_slice(&error.to_ne_bytes());
    h.in_out[8..16].copy_from_slice(&unique.to_ne_bytes());
}

/// Errors that mean "the connection is going away", not a failure.
pub(crate) fn is_teardown(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOTCONN | libc::ECONNABORTED | libc::ENODEV | libc::ECANCELED
    )
}

/// The kernel's number of queues: the possible CPUs.
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            n = n.max(b + 1).max(a + 1);
        }
    }
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

/// How busy one queue's workers are.
#[derive(Debug, Default)]
struct QueueLoad {
    /// Workers started (or starting).
    live: AtomicUsize,
    /// Workers waiting for a request.
    idle: AtomicUsize,
}

/// What a session's workers share: each queue's load, and the threads to join. As with
/// the classic loops, a queue gets one more worker whenever a request finds none of its
/// workers waiting, up to `max_per_queue`: a handler that blocks (an open waiting for a
/// RELEASE) then leaves a worker for the requests issued on its CPU.
#[derive(Debug)]
pub(crate) struct RingPool {
    ch: Channel,
    params: UringParams,
    queues: Vec<QueueLoad>,
    max_per_queue: usize,
    threads: Mutex<Vec<JoinHandle<io::Result<()>>>>,
}

impl RingPool {
    /// A worker thread that ended, or that may still run, to join (None: all taken).
    pub(crate) fn take_thread(&self) -> Option<JoinHandle<io::Result<()>>> {
        self.threads.lock().pop()
    }

    /// Makes a worker of queue `qid` on the calling thread, which is then its thread
    /// (the kernel delivers requests through the task that submitted the fetch). It
    /// moves to its queue's CPU with its first request (`Worker::run`): until then it
    /// runs where the scheduler finds room, not beside whatever runs on that CPU (at
    /// mount, often the next command).
    fn start_here(self: &Arc<Self>, qid: u16) -> io::Result<Arc<Worker>> {
        let w = Worker::new(qid, self.clone())?;
        let _ = w.thread.set(std::thread::current().id());
        w.register()?;
        Ok(w)
    }

    /// No worker of queue `qid` is left waiting: start one more if the queue may grow.
    fn grow<FS: Filesystem>(self: &Arc<Self>, qid: u16, el: &SessionEventLoop<FS>) {
        let load = &self.queues[qid as usize];
        let n = load.live.fetch_add(1, Ordering::SeqCst);
        if n >= self.max_per_queue {
            load.live.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let name = format!("fuser-uring-{qid}.{n}");
        let el = el.sibling(name.clone());
        let pool = self.clone();
        // Counted as waiting from now on: a request that comes before it is up is not
        // a reason to start yet another.
        load.idle.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            match pool.start_here(qid) {
                Ok(w) => w.run(&el, true),
                Err(e) => {
                    pool.queues[qid as usize].idle.fetch_sub(1, Ordering::SeqCst);
                    pool.queues[qid as usize].live.fetch_sub(1, Ordering::SeqCst);
                    if !e.raw_os_error().is_some_and(is_teardown) {
                        warn!("cannot start another io_uring worker for queue {qid}: {e}");
                    }
                    Ok(())
                }
            }
        });
        match spawned {
            Ok(h) => self.threads.lock().push(h),
            Err(e) => {
                load.idle.fetch_sub(1, Ordering::SeqCst);
                load.live.fetch_sub(1, Ordering::SeqCst);
                warn!("cannot start another io_uring worker for queue {qid}: {e}");
            }
        }
    }
}

impl Worker {
    fn new(qid: u16, pool: Arc<RingPool>) -> io::Result<Arc<Worker>> {
        let (ch, payload) = (pool.ch.clone(), pool.params.payload);
        let ring = IoUring::<Entry128>::builder().build(4)?;
        let header = Box::leak(Box::new(Header {
            in_out: [0; HEADER_SZ],
            op_in: [0; OP_IN_SZ],
            ent: EntInOut::default(),
        })) as *mut Header;
        // Mapped, not allocated: pages the kernel never writes cost nothing, where calloc
        // in a new thread's arena clears all of it (8 MiB per mount for 8 workers). Never
        // unmapped, as the boxes here are never freed: the kernel may write into an entry
        // until the ring is torn down.
        let len = payload.max(MIN_PAYLOAD);
        // SAFETY: a fresh private anonymous mapping, owned by this worker alone.
        let payload: &mut [u8] = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            std::slice::from_raw_parts_mut(p.cast::<u8>(), len)
        };
        let iov = Box::leak(Box::new([
            libc::iovec {
                iov_base: header.cast(),
                iov_len: std::mem::size_of::<Header>(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ])) as *mut [libc::iovec; 2];
        Ok(Arc::new(Worker {
            qid,
            pool,
            ring,
            sq: Mutex::new(()),
            header,
            payload: payload as *mut [u8],
            iov,
            ch,
            thread: OnceLock::new(),
            early: Mutex::new(None),
            replied: Mutex::new(false),
            replied_cv: parking_lot::Condvar::new(),
        }))
    }

    /// Queues a FUSE uring command: REGISTER (with the entry's two iovecs) or
    /// COMMIT_AND_FETCH (for `commit_id`).
    fn push(&self, cmd: u32, commit_id: u64, register: bool) -> io::Result<()> {
        let mut area = [0u8; 80];
        area[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        area[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        let mut op = opcode::UringCmd80::new(types::Fd(self.ch.as_fd().as_raw_fd()), cmd).cmd(area);
        if register {
            op = op.addr(Some(self.iov as u64));
        }
        let mut sqe = op.build();
        if register {
            // sqe->len: the number of iovecs (the crate has no setter for it).
            // SAFETY: Entry128 is repr(C), 128 bytes, the kernel's io_uring_sqe layout
            // (len is the u32 at offset 24).
            let raw: &mut [u8; 128] = unsafe { &mut *(&mut sqe as *mut Entry128).cast() };
            raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
        }
        let _g = self.sq.lock();
        // SAFETY: pushes are serialized by `sq`; the iovecs and buffers outlive the
        // command.
        unsafe { self.ring.submission_shared().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    /// Registers the entry and reports an immediate refusal (it comes back at once; a
    /// good registration completes only when a request arrives).
    fn register(&self) -> io::Result<()> {
        self.push(CMD_REGISTER, 0, true)?;
        self.ring.submit()?;
        // SAFETY: only this function and `run` (later, on one thread) read the CQ.
        if let Some(cqe) = unsafe { self.ring.completion_shared() }.next() {
            let res = cqe.result();
            if res < 0 {
                return Err(io::Error::from_raw_os_error(-res));
            }
            *self.early.lock() = Some(res);
        }
        Ok(())
    }

    /// Serves requests until the connection goes away.
    /// `counted`: the pool counted this worker as waiting when it started it.
    fn run<FS: Filesystem>(self: &Arc<Self>, el: &SessionEventLoop<FS>, counted: bool) -> io::Result<()> {
        let mut buf = Vec::with_capacity(IN_HEADER_LEN + OP_IN_SZ + MIN_PAYLOAD);
        let mut pending = self.early.lock().take();
        let mut failures = 0;
        let mut pinned = !self.pool.params.pin;
        let mut grow = false;
        let load = &self.pool.queues[self.qid as usize];
        let mut counted = counted;
        loop {
            if !std::mem::take(&mut counted) {
                load.idle.fetch_add(1, Ordering::SeqCst);
            }
            // Another worker for this queue, once the last reply is on its way (the
            // caller does not wait for a thread to start), and while this one counts as
            // waiting: its entry takes the next request as soon as it is back.
            if std::mem::take(&mut grow) {
                match self.ring.submit() {
                    Err(e) if e.raw_os_error() != Some(libc::EINTR) => return Err(e),
                    // Interrupted: the wait below submits it.
                    _ => {}
                }
                self.pool.grow(self.qid, el);
            }
            let res = self.next_completion(&mut pending);
            let none_waiting = load.idle.fetch_sub(1, Ordering::SeqCst) == 1;
            let res = res?;
            if res < 0 {
                if is_teardown(-res) {
                    debug!("io_uring queue {}: connection closed", self.qid);
                    return Ok(());
                }
                // The entry is out of the kernel's hands: put it back, or the queue
                // loses it for good.
                failures += 1;
                warn!("io_uring queue {}: {}", self.qid, io::Error::from_raw_os_error(-res));
                if failures > 3 {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                self.push(CMD_REGISTER, 0, true)?;
                continue;
            }
            failures = 0;
            if !pinned {
                pin_to_cpu(self.qid as usize);
                pinned = true;
            }
            SERVED.fetch_add(1, Ordering::Relaxed);
            self.assemble(&mut buf);
            *self.replied.lock() = false;
            let reply = ReplySender::Uring(UringReply {
                worker: self.clone(),
                ch: self.ch.sender(),
            });
            match RequestWithSender::new(reply, &buf) {
                Some(req) => {
                    if let Ok(Operation::Destroy(_)) = req.request.operation() {
                        req.reply::<ReplyEmpty>().ok();
                        self.ring.submit()?;
                        return Ok(());
                    }
                    req.dispatch(el);
                }
                None => {
                    // Unparsable: answer it, or the kernel waits for ever.
                    // SAFETY: the entry is ours until the commit.
                    let h = unsafe { &mut *self.header };
                    let unique = u64::from_ne_bytes(h.in_out[8..16].try_into().unwrap());
                    write_out_header(h, OUT_HEADER_LEN as u32, -libc::EIO, unique);
                    h.ent.payload_sz = 0;
                    let commit_id = h.ent.commit_id;
                    self.push(CMD_COMMIT_AND_FETCH, commit_id, false)?;
                    *self.replied.lock() = true;
                }
            }
            // A reply sent later from another thread: wait for it, then submit it here.
            let mut r = self.replied.lock();
            while !*r {
                self.replied_cv.wait(&mut r);
            }
            drop(r);
            grow = none_waiting;
        }
    }

    /// Submits what is queued (the last reply's commit) and waits for the next
    /// completion: a request, or the entry's end.
    fn next_completion(&self, pending: &mut Option<i32>) -> io::Result<i32> {
        if let Some(r) = pending.take() {
            return Ok(r);
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            // SAFETY: the CQ is only read on this thread.
            if let Some(cqe) = unsafe { self.ring.completion_shared() }.next() {
                return Ok(cqe.result());
            }
        }
    }

    /// The request in the classic layout: in header, the opcode's struct, the payload.
    fn assemble(&self, buf: &mut Vec<u8>) {
        // SAFETY: the entry is ours from the completion to the commit.
        let (h, p) = unsafe { (&*self.header, &*self.payload) };
        let len = u32::from_ne_bytes(h.in_out[0..4].try_into().unwrap()) as usize;
        let payload = (h.ent.payload_sz as usize).min(p.len());
        // in_header.len counts everything; what is neither header nor payload is the
        // opcode's fixed struct (in op_in).
        let op = len
            .saturating_sub(IN_HEADER_LEN + payload)
            .min(OP_IN_SZ);
        buf.clear();
        buf.extend_from_slice(&h.in_out[..IN_HEADER_LEN]);
        buf.extend_from_slice(&h.op_in[..op]);
        buf.extend_from_slice(&p[..payload]);
    }
}


/// Runs this thread on `cpu` alone; where the process may not use it (a cpuset, an
/// offline CPU) the thread keeps the process's CPUs.
fn pin_to_cpu(cpu: usize) {
    if cpu >= libc::CPU_SETSIZE as usize {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is empty; sched_setaffinity on this thread only.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        debug!("io_uring worker of queue {cpu} not pinned: {}", io::Error::last_os_error());
    }
}

/// What a worker thread runs once the session runs (None: the session ended first).
pub(crate) type Job = Box<dyn FnOnce(&Arc<Worker>) -> io::Result<()> + Send>;

/// The first workers of a session. Each runs on its own thread from the start: it makes
/// its ring and registers its entry there, reports the registration, and waits for its
/// job (the session must run before requests can be served).
#[derive(Debug)]
pub(crate) struct Workers {
    threads: Vec<(JoinHandle<io::Result<()>>, std::sync::mpsc::Sender<Option<Job>>)>,
    pool: Arc<RingPool>,
    pub(crate) required: bool,
}

impl Workers {
    /// `INITIAL_PER_QUEUE` workers on each of the kernel's queues. A queue grows to the
    /// session's `threads` spread over the queues, at least 4 and at most 8: a request
    /// waits for a free entry of its own CPU's queue, so that many handlers may block (a
    /// bounded wait, e.g. an open waiting for a RELEASE) on one CPU before its requests
    /// wait too.
    pub(crate) fn start(ch: &Channel, params: UringParams, threads: usize) -> io::Result<Workers> {
        let queues = possible_cpus();
        // Many possible but few online CPUs (common in VMs) would mean hundreds of idle
        // workers: at most MAX_WORKERS in all, and one per queue at least (the kernel
        // uses the ring only once every queue has an entry).
        let max_per_queue = (threads / queues)
            .clamp(4, 8)
            .min((MAX_WORKERS / queues).max(1));
        let initial = INITIAL_PER_QUEUE.min(max_per_queue);
        let pool = Arc::new(RingPool {
            ch: ch.clone(),
            params,
            queues: (0..queues)
                .map(|_| QueueLoad {
                    live: initial.into(),
                    idle: 0.into(),
                })
                .collect(),
            max_per_queue,
            threads: Mutex::new(Vec::new()),
        });
        let mut ws = Workers {
            threads: Vec::with_capacity(queues * initial),
            pool: pool.clone(),
            required: params.required,
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        for qid in 0..queues {
            for i in 0..initial {
                let (job_tx, job_rx) = std::sync::mpsc::channel::<Option<Job>>();
                let (pool, done) = (pool.clone(), done_tx.clone());
                let h = std::thread::Builder::new()
                    .name(format!("fuser-uring-{qid}.{i}"))
                    .spawn(move || {
                        let w = match pool.start_here(qid as u16) {
                            Ok(w) => w,
                            Err(e) => {
                                let _ = done.send(Err(e));
                                return Ok(());
                            }
                        };
                        let _ = done.send(Ok(()));
                        match job_rx.recv() {
                            Ok(Some(job)) => job(&w),
                            _ => Ok(()),
                        }
                    })?;
                ws.threads.push((h, job_tx));
            }
        }
        drop(done_tx);
        for _ in 0..ws.threads.len() {
            done_rx
                .recv()
                .map_err(|_| io::Error::other("an io_uring worker died"))??;
        }
        debug!(
            "io_uring: {queues} queues x {initial} workers (up to {max_per_queue}), {} KiB payload each",
            params.payload / 1024
        );
        Ok(ws)
    }

    /// Starts serving: `job` makes each first worker's job. Returns the pool, whose
    /// threads (these and those started later) the session joins.
    pub(crate) fn serve(mut self, mut job: impl FnMut(usize) -> Job) -> Arc<RingPool> {
        for (i, (h, tx)) in std::mem::take(&mut self.threads).into_iter().enumerate() {
            let _ = tx.send(Some(job(i)));
            self.pool.threads.lock().push(h);
        }
        self.pool.clone()
    }
}

impl Drop for Workers {
    /// Not served (an error before the session ran): let the threads go.
    fn drop(&mut self) {
        for (h, tx) in self.threads.drain(..) {
            let _ = tx.send(None);
            let _ = h.join();
        }
    }
}

/// The body of a worker thread.
pub(crate) fn serve<FS: Filesystem>(w: &Arc<Worker>, el: &SessionEventLoop<FS>) -> io::Result<()> {
    w.run(el, false)
}

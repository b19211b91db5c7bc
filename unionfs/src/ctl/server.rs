//! The daemon's side of the control socket: one thread accepting connections, each
//! request applied atomically to the stack, then the kernel's caches dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use super::protocol::{BranchInfo, ErrorKind, Op, Request, Response, StatsInfo, VERSION};
use crate::core::stackops::{self, StackError};
use crate::core::Mode;
use crate::fuse::Control;

/// A bound control socket, removed when dropped.
pub struct Server {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket of the mount at `mountpoint` for the current user.
pub fn bind(mountpoint: &Path) -> std::io::Result<Server> {
    let uid = unsafe { libc::geteuid() };
    let path = super::protocol::socket_path(uid, mountpoint);
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    // Only the mounting user reaches the socket (root passes anyway).
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // The mount point was free, so a socket left here belongs to a daemon that died.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok(Server { path, listener })
}

impl Server {
    /// Removes the socket file (the daemon is going away).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Serves requests until the process ends (run it on its own thread). `also`: a
    /// descriptor this thread watches too, and what to do when it is readable (the
    /// daemon's stop signals, so that they need no thread of their own).
    pub fn serve(
        &self,
        ctl: Control,
        mountpoint: PathBuf,
        also: Option<(BorrowedFd<'_>, &dyn Fn())>,
    ) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            if let Some((fd, _)) = &also {
                fds.push(PollFd::new(*fd, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            if let (Some((_, on_ready)), Some(fd)) = (&also, fds.get(1)) {
                if ready(fd) {
                    on_ready();
                }
            }
            if !ready(&fds[0]) {
                continue;
            }
            let Ok((conn, _)) = self.listener.accept() else {
                continue;
            };
            let ctl = ctl.clone();
            let mp = mountpoint.clone();
            let _ = std::thread::Builder::new()
                .name("unionfs-ctl".into())
                .spawn(move || handle_conn(conn, &ctl, &mp));
        }
    }
}

fn peer_uid(s: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for the kernel to fill in.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn handle_conn(conn: UnixStream, ctl: &Control, mountpoint: &Path) {
    let me = unsafe { libc::geteuid() };
    let allowed = peer_uid(&conn).is_some_and(|u| u == me || u == 0);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let resp = if !allowed {
            Response::err(
                ErrorKind::Usage,
                "only the user who mounted this union (or root) may control it",
            )
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(r) if r.version != VERSION => Response::err(
                    ErrorKind::Usage,
                    format!(
                        "protocol version {} is not {VERSION}: use the matching unionfs",
                        r.version
                    ),
                ),
                Ok(r) => execute(ctl, mountpoint, r.op),
                Err(e) => Response::err(ErrorKind::Usage, format!("bad request: {e}")),
            }
        };
        let mut s = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        if out.write_all(s.as_bytes()).is_err() {
            return;
        }
    }
}

fn refusal(e: StackError) -> Response {
    let kind = match e {
        StackError::Busy(_) | StackError::CannotLift { .. } => ErrorKind::Runtime,
        _ => ErrorKind::Usage,
    };
    Response::err(kind, e.to_string())
}

/// Applies one operation.
pub fn execute(ctl: &Control, mountpoint: &Path, op: Op) -> Response {
    let u = &ctl.union;
    let changed = match op {
        Op::List => {
            let stack = u.stack();
            let list: Vec<BranchInfo> = stack
                .branches
                .iter()
                .enumerate()
                .map(|(index, b)| BranchInfo {
                    index,
                    path: b.path.clone(),
                    mode: b.mode,
                    format: stack.format.to_string(),
                    free_bytes: nix::sys::statvfs::statvfs(&b.path)
                        .map(|s| s.blocks_available() * s.fragment_size())
                        .unwrap_or(0),
                })
                .collect();
            return Response::ok(serde_json::to_value(list).unwrap_or_default());
        }
        Op::Stats => {
            let (read_ahead, read_ahead_used) = ctl.listings_read_ahead();
            let s = StatsInfo {
                ops: u.stats.ops.load(Relaxed),
                copy_ups: u.stats.copy_ups.load(Relaxed),
                bytes_copied: u.stats.bytes_copied.load(Relaxed),
                open_handles: ctl.open_handles() as u64,
                data_requests: u.stats.data_requests.load(Relaxed),
                passthrough_opens: u.stats.passthrough_opens.load(Relaxed),
                passthrough_inodes: ctl.passthrough_inodes() as u64,
                nodes: ctl.nodes() as u64,
                uring_requests: fuser::uring_requests_served(),
                listings_read_ahead: read_ahead,
                listings_read_ahead_used: read_ahead_used,
                prefilled: u.stats.prefilled.load(Relaxed),
            };
            return Response::ok(serde_json::to_value(s).unwrap_or_default());
        }
        Op::Refresh => {
            u.stack().bump_layers();
            Ok(serde_json::Value::Null)
        }
        Op::Add {
            dir,
            mode,
            position,
        } => u.change_stack(|s| {
            let b = stackops::open_new_branch(s, &dir, mode, mountpoint)?;
            let path = b.path.clone();
            Ok((
                stackops::with_added(s, b, position)?,
                serde_json::json!({ "path": path }),
            ))
        }),
        Op::Remove { branch, force } => u.change_stack(|s| {
            let i = s.find(&branch)?;
            let b = &s.branches[i];
            if !force && ctl.open_on(b.id) > 0 {
                return Err(StackError::Busy(b.path.display().to_string()));
            }
            Ok((
                stackops::without(s, i)?,
                serde_json::json!({ "path": b.path }),
            ))
        }),
        Op::Mode { branch, mode } => {
            if mode == Mode::Ro {
                ctl.write_back_cached_writers();
            }
            let from = std::cell::Cell::new(None);
            u.change_stack_then(
                |s| {
                    let i = s.find(&branch)?;
                    if mode == Mode::Ro && s.branches[i].is_rw() {
                        from.set(Some(s.branches[i].id));
                    }
                    Ok((stackops::with_mode(s, i, mode)?, serde_json::Value::Null))
                },
                |_| {
                    from.get()
                        .map_or(Ok(()), |id| ctl.lift_passthrough_files(id))
                },
            )
        }
        Op::Snapshot { dir } => {
            let dir = dir.unwrap_or_else(|| stackops::default_snapshot_dir(&u.stack()));
            // What shared mmaps left dirty belongs to the snapshot.
            ctl.write_back_cached_writers();
            match prepare_snapshot_dir(&dir) {
                Ok(created) => {
                    let from = std::cell::Cell::new(None);
                    u.change_stack_then(
                        |s| {
                            from.set(s.branches.first().filter(|b| b.is_rw()).map(|b| b.id));
                            let b = stackops::open_new_branch(s, &dir, Mode::Rw, mountpoint)?;
                            let path = b.path.clone();
                            Ok((
                                stackops::with_snapshot(s, b),
                                serde_json::json!({ "path": path }),
                            ))
                        },
                        |_| {
                            from.get()
                                .map_or(Ok(()), |id| ctl.lift_passthrough_files(id))
                        },
                    )
                    .inspect_err(|_| stackops::discard_new_branch(&dir, created))
                }
                Err(e) => Err(e),
            }
        }
    };
    match changed {
        Ok(data) => {
            // Outside the gate: the kernel may need locks in-flight requests hold.
            ctl.invalidate_all();
            Response::ok(data)
        }
        Err(e) => refusal(e),
    }
}

/// A snapshot's new top must be an empty directory; it is created if missing (true).
fn prepare_snapshot_dir(dir: &Path) -> Result<bool, StackError> {
    let bad = |why: String| StackError::BadDir {
        path: dir.to_path_buf(),
        why,
    };
    match std::fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(bad(
                    "is not empty; a snapshot needs an empty directory".into()
                ));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(dir)
            .map(|()| true)
            .map_err(|e| bad(e.to_string())),
        Err(e) => Err(bad(e.to_string())),
    }
}

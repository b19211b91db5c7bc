//! The wire format shared by server and client: one JSON object per line each way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::stackops::{BranchRef, Position};
use crate::core::Mode;

/// Protocol version; a server refuses requests of another version.
pub const VERSION: u32 = 1;

/// A request: the version and one operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// [`VERSION`].
    pub version: u32,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// Branches, modes, format, free space.
    List,
    /// Add a branch.
    Add {
        /// The directory.
        dir: PathBuf,
        /// Its mode.
        mode: Mode,
        /// Where in the stack.
        position: Position,
    },
    /// Remove a branch.
    Remove {
        /// Which.
        branch: BranchRef,
        /// Even with files open on it.
        force: bool,
    },
    /// Change a branch's mode.
    Mode {
        /// Which.
        branch: BranchRef,
        /// The new mode.
        mode: Mode,
    },
    /// New empty rw branch on top; the previous top becomes ro.
    Snapshot {
        /// The new branch's directory (default: next to the current top).
        dir: Option<PathBuf>,
    },
    /// Drop the kernel's caches after out-of-band changes to branches.
    Refresh,
    /// Counters.
    Stats,
}

/// How a refusal should be reported by the client.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Bad input (exit 2).
    Usage,
    /// Busy or failed at run time (exit 1).
    Runtime,
}

/// The answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// [`VERSION`].
    pub version: u32,
    /// Whether it worked.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Kind of refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    /// The result.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    /// A success with data.
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            version: VERSION,
            ok: true,
            error: None,
            kind: None,
            data,
        }
    }

    /// A refusal.
    pub fn err(kind: ErrorKind, msg: impl Into<String>) -> Response {
        Response {
            version: VERSION,
            ok: false,
            error: Some(msg.into()),
            kind: Some(kind),
            data: serde_json::Value::Null,
        }
    }
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BranchInfo {
    /// Position (0 = top).
    pub index: usize,
    /// Directory.
    pub path: PathBuf,
    /// rw or ro.
    pub mode: Mode,
    /// Whiteout format of the union.
    pub format: String,
    /// Bytes available to unprivileged users on its filesystem.
    pub free_bytes: u64,
}

/// `stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsInfo {
    /// File-system operations served.
    pub ops: u64,
    /// Copy-ups done.
    pub copy_ups: u64,
    /// Bytes copied by copy-ups.
    pub bytes_copied: u64,
    /// Open file and directory handles.
    pub open_handles: u64,
    /// Inodes the kernel holds.
    pub nodes: u64,
    /// Read and write requests the daemon served.
    #[serde(default)]
    pub data_requests: u64,
    /// Opens served by FUSE passthrough so far.
    #[serde(default)]
    pub passthrough_opens: u64,
    /// Inodes with passthrough handles open now.
    #[serde(default)]
    pub passthrough_inodes: u64,
    /// Requests that came through FUSE over io_uring (0: the ring is not in use).
    #[serde(default)]
    pub uring_requests: u64,
    /// Directory listings read ahead during tree walks.
    #[serde(default)]
    pub listings_read_ahead: u64,
    /// Of those, the ones a listing then used.
    #[serde(default)]
    pub listings_read_ahead_used: u64,
    /// Small lower files put in the kernel's page cache at their open.
    #[serde(default)]
    pub prefilled: u64,
}

/// FNV-1a: a stable hash of the mount point for the socket name.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The directory holding the control sockets of `uid`'s mounts.
pub fn socket_dir(uid: u32) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/run/unionfs");
    }
    let run = PathBuf::from(format!("/run/user/{uid}"));
    if run.is_dir() {
        run.join("unionfs")
    } else {
        PathBuf::from(format!("/tmp/unionfs-{uid}"))
    }
}

/// The control socket of the mount at `mountpoint` (canonical) made by `uid`.
pub fn socket_path(uid: u32, mountpoint: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let h = fnv1a(mountpoint.as_os_str().as_bytes());
    socket_dir(uid).join(format!("{h:016x}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let ops = vec![
            Op::List,
            Op::Add {
                dir: "/a".into(),
                mode: Mode::Ro,
                position: Position::Index(2),
            },
            Op::Remove {
                branch: BranchRef::Index(1),
                force: false,
            },
            Op::Mode {
                branch: BranchRef::Path("/b".into()),
                mode: Mode::Rw,
            },
            Op::Snapshot { dir: None },
            Op::Refresh,
            Op::Stats,
        ];
        for op in ops {
            let line = serde_json::to_string(&Request {
                version: VERSION,
                op: op.clone(),
            })
            .unwrap();
            assert!(!line.contains('\n'));
            let back: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(back.op, op, "{line}");
        }
    }

    #[test]
    fn socket_paths_follow_from_user_and_mount_point() {
        let a = socket_path(0, Path::new("/mnt/a"));
        assert_eq!(a, socket_path(0, Path::new("/mnt/a")));
        assert_ne!(a, socket_path(0, Path::new("/mnt/b")));
        assert!(a.starts_with("/run/unionfs"));
    }
}

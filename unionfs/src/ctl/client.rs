//! `unionfs ctl MOUNTPOINT <op>`: finds the mount's control socket from the mount point
//! alone (mountinfo gives the mounting user; the socket path follows), sends one
//! request, prints the answer. Exit 0 on success, 2 on bad input, 1 otherwise.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use super::protocol::{self, BranchInfo, ErrorKind, Op, Request, Response, StatsInfo, VERSION};
use crate::core::stackops::{BranchRef, Position};
use crate::core::Mode;

/// Control a mounted union: its branch stack, snapshots, counters.
#[derive(Parser, Debug)]
#[command(name = "unionfs ctl", version)]
struct CtlArgs {
    /// The union's mount point.
    mountpoint: PathBuf,
    #[command(subcommand)]
    op: CtlOp,
}

#[derive(Subcommand, Debug)]
enum CtlOp {
    /// List the branches: index (0 = top), mode, whiteout format, free space, path.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a branch (default: read-only, on top).
    Add {
        /// The directory.
        dir: PathBuf,
        /// ro or rw.
        #[arg(long, default_value = "ro")]
        mode: Mode,
        /// Put it at this index (0 = top).
        #[arg(long, conflicts_with_all = ["top", "bottom"])]
        index: Option<usize>,
        /// Put it above every branch (the default).
        #[arg(long, conflicts_with = "bottom")]
        top: bool,
        /// Put it below every branch.
        #[arg(long)]
        bottom: bool,
    },
    /// Remove a branch, named by index or path (refused while files on it are open).
    Remove {
        /// Index or path.
        branch: String,
        /// Remove it even with files open on it (they keep their old data).
        #[arg(long)]
        force: bool,
    },
    /// Make a branch ro or rw.
    Mode {
        /// Index or path.
        branch: String,
        /// ro or rw.
        mode: Mode,
    },
    /// In one step: a new empty rw branch on top, the previous top made read-only.
    /// Without DIR the new branch is TOP.snapN next to the current top branch.
    Snapshot {
        /// Directory for the new top branch (created if missing; must be empty).
        dir: Option<PathBuf>,
    },
    /// Drop cached names and attributes after changing branches behind the union's back.
    Refresh,
    /// Counters: operations served, copy-ups, bytes copied, open handles, inodes held.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn branch_ref(s: &str) -> BranchRef {
    match s.parse::<usize>() {
        Ok(i) => BranchRef::Index(i),
        Err(_) => BranchRef::Path(PathBuf::from(s)),
    }
}

/// Why the client could not get an answer.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

/// The mounting user of the `fuse.unionfs` mount at `mp`, from mountinfo.
fn mount_owner(mp: &Path) -> Result<u32, ClientError> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mp.to_string_lossy();
    for line in mi.lines() {
        let (pre, post) = line.split_once(" - ").unwrap_or((line, ""));
        if pre.split(' ').nth(4) != Some(&want) {
            continue;
        }
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let opts = post.nth(1).unwrap_or("");
        if fstype != "fuse.unionfs" {
            return Err(ClientError::Usage(format!(
                "{want} is a {fstype} mount, not a unionfs mount"
            )));
        }
        return opts
            .split(',')
            .find_map(|o| o.strip_prefix("user_id="))
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| ClientError::Runtime(format!("{want}: mount shows no user_id")));
    }
    Err(ClientError::Usage(format!(
        "{want} is not a mount point (mount a union there first)"
    )))
}

/// Every read-write branch of every live `fuse.unionfs` mount whose control socket this
/// user may reach: (mount point, branch). Mounts of other users that we cannot ask are
/// skipped (their branches are theirs).
pub fn live_rw_branches() -> Vec<(PathBuf, PathBuf)> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in mi.lines() {
        let (pre, post) = line.split_once(" - ").unwrap_or((line, ""));
        if !post.starts_with("fuse.unionfs ") {
            continue;
        }
        let Some(mp) = pre.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(mp);
        let Ok(r) = send(&mp, Op::List) else { continue };
        let list: Vec<BranchInfo> = serde_json::from_value(r.data).unwrap_or_default();
        for b in list.into_iter().filter(|b| b.mode == Mode::Rw) {
            out.push((mp.clone(), b.path));
        }
    }
    out
}

fn send(mp: &Path, op: Op) -> Result<Response, ClientError> {
    let owner = mount_owner(mp)?;
    let path = protocol::socket_path(owner, mp);
    let mut s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Usage(format!(
            "the control socket of {} belongs to user {owner}; run unionfs ctl as that user (or root)",
            mp.display()
        )),
        _ => ClientError::Runtime(format!(
            "cannot reach the control socket {} of {}: {e}",
            path.display(),
            mp.display()
        )),
    })?;
    let mut line = serde_json::to_string(&Request {
        version: VERSION,
        op,
    })
    .map_err(|e| ClientError::Runtime(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| ClientError::Runtime(format!("control socket: {e}")))?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| ClientError::Runtime(format!("control socket: {e}")))?;
    serde_json::from_str(&answer)
        .map_err(|e| ClientError::Runtime(format!("bad answer from the daemon: {e}")))
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn print(op_json: Option<bool>, is_list: bool, is_stats: bool, data: &serde_json::Value) {
    if op_json == Some(true) {
        println!("{data}");
        return;
    }
    if is_list {
        let list: Vec<BranchInfo> = serde_json::from_value(data.clone()).unwrap_or_default();
        println!(
            "{:<5} {:<4} {:<22} {:>10}  PATH",
            "INDEX", "MODE", "FORMAT", "FREE"
        );
        for b in list {
            println!(
                "{:<5} {:<4} {:<22} {:>10}  {}",
                b.index,
                b.mode.to_string(),
                b.format,
                human(b.free_bytes),
                b.path.display()
            );
        }
    } else if is_stats {
        if let Ok(s) = serde_json::from_value::<StatsInfo>(data.clone()) {
            println!("ops served:   {}", s.ops);
            println!("copy-ups:     {}", s.copy_ups);
            println!("bytes copied: {}", s.bytes_copied);
            println!("open handles: {}", s.open_handles);
            println!("inodes held:  {}", s.nodes);
            println!("data requests: {}", s.data_requests);
            println!(
                "passthrough opens: {} ({} inodes now)",
                s.passthrough_opens, s.passthrough_inodes
            );
            println!("io_uring requests: {}", s.uring_requests);
            println!("files stored at open: {}", s.prefilled);
            println!(
                "listings read ahead: {} ({} used)",
                s.listings_read_ahead, s.listings_read_ahead_used
            );
        }
    } else if let Some(p) = data.get("path").and_then(|p| p.as_str()) {
        println!("{p}");
    }
}

/// Runs `unionfs ctl ...` (`args[0]` is "ctl"); returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let a = match CtlArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                };
            }
            let s = e.to_string();
            let line = s
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            eprintln!("unionfs: ctl: {line} (see unionfs ctl --help)");
            return 2;
        }
    };
    let mp = std::fs::canonicalize(&a.mountpoint).unwrap_or(a.mountpoint.clone());
    let (json, is_list, is_stats, op) = match a.op {
        CtlOp::List { json } => (Some(json), true, false, Op::List),
        CtlOp::Stats { json } => (Some(json), false, true, Op::Stats),
        CtlOp::Add {
            dir,
            mode,
            index,
            top: _,
            bottom,
        } => {
            let position = match (index, bottom) {
                (Some(i), _) => Position::Index(i),
                (None, true) => Position::Bottom,
                _ => Position::Top,
            };
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            (
                None,
                false,
                false,
                Op::Add {
                    dir,
                    mode,
                    position,
                },
            )
        }
        CtlOp::Remove { branch, force } => (
            None,
            false,
            false,
            Op::Remove {
                branch: branch_ref(&branch),
                force,
            },
        ),
        CtlOp::Mode { branch, mode } => (
            None,
            false,
            false,
            Op::Mode {
                branch: branch_ref(&branch),
                mode,
            },
        ),
        CtlOp::Snapshot { dir } => {
            let dir = dir.map(|d| {
                if d.is_absolute() {
                    d
                } else {
                    std::env::current_dir().map(|c| c.join(&d)).unwrap_or(d)
                }
            });
            (None, false, false, Op::Snapshot { dir })
        }
        CtlOp::Refresh => (None, false, false, Op::Refresh),
    };
    match send(&mp, op) {
        Ok(r) if r.ok => {
            print(json, is_list, is_stats, &r.data);
            0
        }
        Ok(r) => {
            eprintln!(
                "unionfs: ctl: {}",
                r.error.unwrap_or_else(|| "refused".into())
            );
            match r.kind {
                Some(ErrorKind::Runtime) => 1,
                _ => 2,
            }
        }
        Err(ClientError::Usage(m)) => {
            eprintln!("unionfs: ctl: {m}");
            2
        }
        Err(ClientError::Runtime(m)) => {
            eprintln!("unionfs: ctl: {m}");
            1
        }
    }
}

//! uid/gid maps of the container's user namespace.
//!
//! Rootless, by default one line: container root is the caller (`0 UID 1`). When
//! /etc/subuid and /etc/subgid give the caller a range and `newuidmap`/`newgidmap` exist,
//! container ids 1..=N map to that range through the setuid helpers (their exit status is
//! checked; a failure is an error, not a silent fallback). Written directly, the kernel
//! requires `deny` in /proc/PID/setgroups before an unprivileged gid_map (CVE-2014-8989),
//! so we write it first. As root with `--userns`, the whole id space maps onto itself:
//! ids stay what they are on disk, and the container's capabilities are confined to its
//! user namespace.

use std::io;
use std::path::Path;
use std::process::Command;

use thiserror::Error;

/// Writing the maps failed.
#[derive(Debug, Error)]
pub enum IdMapError {
    /// A direct write to /proc/PID/{uid_map,gid_map,setgroups} failed.
    #[error("cannot write {file} ({data:?})")]
    Write {
        /// The file.
        file: String,
        /// What we wrote.
        data: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// newuidmap/newgidmap could not be started or exited non-zero.
    #[error("{helper} {args} failed: {why}")]
    Helper {
        /// The helper's name.
        helper: &'static str,
        /// Its arguments.
        args: String,
        /// Exit status or start error, and its stderr.
        why: String,
    },
}

/// One map line: `count` ids from `inside` map to `outside`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the parent namespace).
    pub outside: u32,
    /// How many.
    pub count: u32,
}

/// The uid and gid maps, and how to write them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMaps {
    /// uid map lines.
    pub uid: Vec<Range>,
    /// gid map lines.
    pub gid: Vec<Range>,
    /// Through newuidmap/newgidmap (else written directly).
    pub helpers: bool,
}

/// Finds `name`'s (or `uid`'s) first range in /etc/subuid-style text.
pub fn sub_range(text: &str, name: &str, uid: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who != uid.to_string() {
            return None;
        }
        let (s, c) = (start.parse().ok()?, count.parse().ok()?);
        (c > 0).then_some((s, c))
    })
}

/// The maps for a caller. `subuid`/`subgid` are the files' contents (None if absent).
pub fn plan(
    uid: u32,
    gid: u32,
    name: &str,
    subuid: Option<&str>,
    subgid: Option<&str>,
    have_helpers: bool,
) -> IdMaps {
    if uid == 0 {
        let all = vec![Range {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }];
        return IdMaps {
            uid: all.clone(),
            gid: all,
            helpers: false,
        };
    }
    let own_u = Range {
        inside: 0,
        outside: uid,
        count: 1,
    };
    let own_g = Range {
        inside: 0,
        outside: gid,
        count: 1,
    };
    let ranges = (
        subuid.and_then(|t| sub_range(t, name, uid)),
        subgid.and_then(|t| sub_range(t, name, uid)),
    );
    match ranges {
        (Some((us, uc)), Some((gs, gc))) if have_helpers => IdMaps {
            uid: vec![
                own_u,
                Range {
                    inside: 1,
                    outside: us,
                    count: uc,
                },
            ],
            gid: vec![
                own_g,
                Range {
                    inside: 1,
                    outside: gs,
                    count: gc,
                },
            ],
            helpers: true,
        },
        _ => IdMaps {
            uid: vec![own_u],
            gid: vec![own_g],
            helpers: false,
        },
    }
}

/// The caller's maps, from the real /etc/subuid, /etc/subgid and PATH.
pub fn plan_for_caller() -> IdMaps {
    // SAFETY: these cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let name = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let su = std::fs::read_to_string("/etc/subuid").ok();
    let sg = std::fs::read_to_string("/etc/subgid").ok();
    let helpers = find_helper("newuidmap").is_some() && find_helper("newgidmap").is_some();
    plan(uid, gid, &name, su.as_deref(), sg.as_deref(), helpers)
}

/// Looks a helper up in PATH (and the usual sbin/bin directories).
pub fn find_helper(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// The text of a map file.
pub fn render(ranges: &[Range]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

fn write_file(file: String, data: &str) -> Result<(), IdMapError> {
    std::fs::write(&file, data).map_err(|source| IdMapError::Write {
        file,
        data: data.to_string(),
        source,
    })
}

fn run_helper(helper: &'static str, pid: i32, ranges: &[Range]) -> Result<(), IdMapError> {
    let mut args = vec![pid.to_string()];
    for r in ranges {
        args.extend([r.inside, r.outside, r.count].map(|v| v.to_string()));
    }
    let shown = args.join(" ");
    let bin = find_helper(helper).ok_or_else(|| IdMapError::Helper {
        helper,
        args: shown.clone(),
        why: "not found".into(),
    })?;
    let out = Command::new(bin)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| IdMapError::Helper {
            helper,
            args: shown.clone(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(IdMapError::Helper {
            helper,
            args: shown,
            why: format!(
                "{} ({})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Writes the maps of process `pid` (whose user namespace is new and unmapped).
pub fn write(pid: i32, maps: &IdMaps) -> Result<(), IdMapError> {
    if maps.helpers {
        run_helper("newuidmap", pid, &maps.uid)?;
        return run_helper("newgidmap", pid, &maps.gid);
    }
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        // The kernel refuses an unprivileged gid_map while setgroups is allowed.
        write_file(format!("/proc/{pid}/setgroups"), "deny")?;
    }
    write_file(format!("/proc/{pid}/uid_map"), &render(&maps.uid))?;
    write_file(format!("/proc/{pid}/gid_map"), &render(&maps.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "other:200000:65536\nunionfs-test:100000:65536\n";

    #[test]
    fn default_is_root_to_caller() {
        let m = plan(1000, 1000, "bob", Some(SUB), Some(SUB), true);
        assert!(!m.helpers);
        assert_eq!(render(&m.uid), "0 1000 1\n");
        assert_eq!(render(&m.gid), "0 1000 1\n");
    }

    #[test]
    fn ranges_need_both_files_and_helpers() {
        let m = plan(1001, 1001, "unionfs-test", Some(SUB), Some(SUB), true);
        assert!(m.helpers);
        assert_eq!(render(&m.uid), "0 1001 1\n1 100000 65536\n");
        let m = plan(1001, 1001, "unionfs-test", Some(SUB), Some(SUB), false);
        assert!(!m.helpers);
        let m = plan(1001, 1001, "unionfs-test", Some(SUB), None, true);
        assert!(!m.helpers);
        // By numeric uid too.
        assert_eq!(sub_range("1001:5:10\n", "x", 1001), Some((5, 10)));
        assert_eq!(sub_range("bad line\n", "x", 1), None);
    }

    #[test]
    fn root_maps_identity() {
        let m = plan(0, 0, "root", None, None, false);
        assert_eq!(render(&m.uid), format!("0 0 {}\n", u32::MAX));
    }
}

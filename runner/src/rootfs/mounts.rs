//! The standard mounts of a container: /proc, /dev and its parts, /sys, and the masked
//! and read-only paths. Each function appends its [`MountOp`]s; the lists and flags follow
//! runc's defaults (`libcontainer/specconv/example.go`) and bubblewrap's `--dev`.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::MountOp;
use crate::sys::{Create, SysError, Syscall};

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// Device nodes bound from the host's /dev (a user namespace cannot mknod; a bind works
/// everywhere, as bubblewrap does).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Files hidden behind /dev/null or an empty tmpfs: kernel memory, keys, timers, ...
pub const MASKED: [&str; 8] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
];

/// Paths made read-only: kernel tunables and trigger files.
pub const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// /proc of the container's pid namespace.
pub fn proc(ops: &mut Vec<MountOp>) {
    ops.push(MountOp::Fs {
        fstype: "proc",
        dst: p("/proc"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: None,
    });
}

/// A tmpfs /dev with bound device nodes, the usual symlinks, pts, shm and mqueue.
/// `userns`: no `gid=5` for devpts (gid 5 is usually unmapped, and the mount fails).
pub fn dev(ops: &mut Vec<MountOp>, userns: bool) {
    ops.push(MountOp::Fs {
        fstype: "tmpfs",
        dst: p("/dev"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        data: Some("mode=755,size=65536k".into()),
    });
    device_nodes(ops);
    let mut pts = "newinstance,ptmxmode=0666,mode=0620".to_string();
    if !userns {
        pts.push_str(",gid=5");
    }
    ops.push(MountOp::Fs {
        fstype: "devpts",
        dst: p("/dev/pts"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: Some(pts),
    });
    ops.push(MountOp::Fs {
        fstype: "tmpfs",
        dst: p("/dev/shm"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: Some("mode=1777,size=65536k".into()),
    });
    ops.push(MountOp::Fs {
        fstype: "mqueue",
        dst: p("/dev/mqueue"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: None,
    });
}

/// The default device nodes (bound from the host's /dev, so they also work in a user
/// namespace) and the usual /dev symlinks: runc's set.
pub fn device_nodes(ops: &mut Vec<MountOp>) {
    for d in DEVICES {
        ops.push(MountOp::Bind {
            src: Path::new("/dev").join(d),
            dst: Path::new("/dev").join(d),
            recursive: false,
            read_only: false,
            file: true,
        });
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        ops.push(MountOp::Symlink {
            target: p(target),
            link: p(link),
        });
    }
}

/// /sys read-only: a fresh sysfs in a new network namespace (it shows that namespace's
/// interfaces); with the host's network the kernel refuses a new sysfs to a user
/// namespace, so the host's /sys is bound read-only instead, every submount included.
pub fn sys(ops: &mut Vec<MountOp>, own_netns: bool) {
    if own_netns {
        ops.push(MountOp::Fs {
            fstype: "sysfs",
            dst: p("/sys"),
            flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: None,
        });
    } else {
        ops.push(MountOp::Bind {
            src: p("/sys"),
            dst: p("/sys"),
            recursive: true,
            read_only: true,
            file: false,
        });
    }
}

/// Masked and read-only paths.
pub fn masks(ops: &mut Vec<MountOp>) {
    for m in MASKED {
        ops.push(MountOp::Mask { dst: p(m) });
    }
    for r in READ_ONLY {
        ops.push(MountOp::ReadOnly { dst: p(r) });
    }
}

/// Executes a [`MountOp::Mask`]: skipped if the path does not exist.
pub fn mask(root: &Path, dst: &Path, sys: &dyn Syscall) -> Result<(), SysError> {
    let t = match sys.open_in_root(root, dst, Create::Nothing) {
        Ok(t) => t,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let is_dir = std::fs::metadata(t.mount_path())
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if is_dir {
        sys.mount(
            Some(Path::new("tmpfs")),
            &t,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=555"),
        )
    } else {
        // Reads give EOF, writes vanish: nothing of the original is reachable.
        sys.mount(
            Some(Path::new("/dev/null")),
            &t,
            None,
            MsFlags::MS_BIND,
            None,
        )
    }
}

/// The calling process's own cgroup2 directory on the host: the cgroup2 mount in
/// mountinfo joined with the `0::` path of /proc/self/cgroup.
pub fn own_cgroup2_dir() -> Option<PathBuf> {
    let own = crate::cgroups::OwnCgroups::current().v2?;
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_dir_in(&mi, &own)
}

/// [`own_cgroup2_dir`] over mountinfo text and the process's cgroup2 path.
pub fn cgroup2_dir_in(mountinfo: &str, own: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = pre.split_whitespace().collect();
        let (mount_root, mount_point) = (f.get(3)?, f.get(4)?);
        let rel = Path::new(own).strip_prefix(mount_root).ok()?;
        let point = std::ffi::OsString::from_vec(crate::fsd::unescape(mount_point));
        let dir = Path::new(&point).join(rel);
        dir.is_dir().then_some(dir)
    })
}

/// The MOUNT_ATTR_* bits for the MS_* flags a bind mount cannot take at once.
pub fn attrs_of(flags: MsFlags) -> u64 {
    [
        (MsFlags::MS_RDONLY, super::ATTR_RDONLY),
        (MsFlags::MS_NOSUID, 0x2),
        (MsFlags::MS_NODEV, 0x4),
        (MsFlags::MS_NOEXEC, 0x8),
    ]
    .iter()
    .filter(|(f, _)| flags.contains(*f))
    .fold(0, |a, (_, b)| a | b)
}

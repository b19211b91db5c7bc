//! Options other tools pass, which a drop-in must take: the generic mount options of
//! mount(8) and fstab, libfuse's, fuse-overlayfs' switches and id maps, and the options
//! only unionfs-fuse has. Each is accepted and ignored, honoured, or refused in one line
//! (docs/compat.md has the table).

use super::options::{usage, CliError};

/// Generic mount options that `mount`, fstab and mount.fuse3 pass along; accepted and
/// ignored (they concern the kernel's view of the mount, which FUSE sets itself).
pub(super) const GENERIC: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "defaults",
    "user",
    "nouser",
    "users",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "owner",
    "group",
    "comment",
    "loud",
    "silent",
    "nonempty",
    "default_permissions",
    "x-systemd.automount",
    "auto_unmount",
];

/// libfuse tuning and behaviour options that fuse-overlayfs and unionfs-fuse pass to
/// libfuse. Accepted and ignored: they tune how requests travel (read sizes, splice,
/// threads, caches) and never what a caller sees; fuser picks its own values.
/// `use_ino`/`readdir_ino`: we always report our own stable inode numbers.
/// `hard_remove`: we never leave `.fuse_hidden` files. `noforget`/`remember=`: inodes are
/// remembered as the kernel asks. `intr`: requests are not interrupted, which is allowed.
pub(super) const LIBFUSE_IGNORED: &[&str] = &[
    "use_ino",
    "readdir_ino",
    "hard_remove",
    "big_writes",
    "kernel_cache",
    "auto_cache",
    "noauto_cache",
    "direct_io",
    "async_read",
    "sync_read",
    "atomic_o_trunc",
    "no_remote_lock",
    "no_remote_flock",
    "no_remote_posix_lock",
    "splice_write",
    "no_splice_write",
    "splice_move",
    "no_splice_move",
    "splice_read",
    "no_splice_read",
    "intr",
    "noforget",
    "nopath",
    "clone_fd",
    "large_read",
    "writeback_cache",
    "no_writeback_cache",
];

/// The same, with a value (`max_read=N` ...).
pub(super) const LIBFUSE_IGNORED_KV: &[&str] = &[
    "max_read",
    "max_write",
    "max_readahead",
    "max_background",
    "congestion_threshold",
    "intr_signal",
    "remember",
    "negative_timeout",
    "ac_attr_timeout",
    "max_threads",
    "max_idle_threads",
    "blksize",
];

/// unionfs-fuse-only options: any of them selects unionfs-fuse compatibility mode.
pub(super) const UNIONFS_FUSE_ONLY: &[&str] = &[
    "cow",
    "preserve_branch",
    "hide_meta_files",
    "max_files",
    "relaxed_permissions",
    "statfs_omit_ro",
    "chroot",
    "noinitgroups",
    "debug_file",
];

/// Checks a fuse-overlayfs `uidmapping=`/`gidmapping=` value: `[:]ID:HOSTID:LEN[:...]`
/// (containers-storage writes a leading `:`). Only identity maps are accepted: shifting
/// ids is not implemented, and ignoring a real shift would show wrong owners.
pub(super) fn check_id_mapping(k: &str, v: &str) -> Result<(), CliError> {
    let nums: Result<Vec<u64>, _> = v
        .split(':')
        .filter(|p| !p.is_empty())
        .map(str::parse::<u64>)
        .collect();
    let nums = match nums {
        Ok(n) if !n.is_empty() && n.len() % 3 == 0 => n,
        _ => {
            return Err(usage(format!(
                "option {k}={v}: expected ID:HOSTID:LEN[:ID:HOSTID:LEN...]"
            )))
        }
    };
    for c in nums.chunks(3) {
        if c[0] != c[1] {
            return Err(usage(format!(
                "option {k}={v}: id shifting ({} -> {}) is not supported; use an identity map or no {k} (see docs/compat.md)",
                c[0], c[1]
            )));
        }
    }
    Ok(())
}

/// An option we refuse because ignoring it would change what callers see.
pub(super) fn refuse(opt: &str, why: &str) -> CliError {
    usage(format!(
        "option {opt} is not supported: {why} (see docs/compat.md)"
    ))
}

/// fuse-overlayfs switches of the form `NAME=0|1`: `ok` is the value we behave as.
pub(super) fn check_bool(k: &str, v: &str, ok: &str, why: &str) -> Result<(), CliError> {
    match v {
        "0" | "1" if v == ok => Ok(()),
        "0" | "1" => Err(refuse(&format!("{k}={v}"), why)),
        _ => Err(usage(format!("option {k}={v}: expected 0 or 1"))),
    }
}

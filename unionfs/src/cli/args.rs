//! Low-level arguments, as clap parses them. No validation here.

use clap::Parser;

/// A userspace union filesystem: merges directories ("branches") into one view.
#[derive(Parser, Debug)]
#[command(
    name = "unionfs",
    version,
    about = "Merge directories (branches) into one view, Unionfs-style, over FUSE",
    after_long_help = AFTER_HELP
)]
pub struct Args {
    /// A branch, highest precedence first: DIR, DIR=rw or DIR=ro. Repeat for more.
    /// Without a mode the first branch is rw and the others ro.
    #[arg(short = 'b', long = "branch", value_name = "DIR[=rw|ro]")]
    pub branch: Vec<String>,

    /// Mount options, comma separated (see below). May be repeated; `,` inside a value
    /// is escaped as `\,`.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,

    /// Stay in the foreground (default: return once the mount is live and serve in the
    /// background).
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,

    /// Debug output: implies -f and -vv (as in fuse-overlayfs and unionfs-fuse).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,

    /// Accepted for libfuse compatibility and ignored (the daemon is always
    /// multi-threaded; results are the same).
    #[arg(short = 's', hide = true)]
    pub single_threaded: bool,

    /// More log output on stderr (repeat for more; RUST_LOG also works).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// [SOURCE] MOUNTPOINT. SOURCE is a unionfs-fuse branch list (A=RW:B=RO) when it
    /// contains '=', else only the name shown in /proc/mounts (mount -t fuse.unionfs).
    #[arg(value_name = "[SOURCE] MOUNTPOINT", num_args = 1..=2, required = true)]
    pub positional: Vec<String>,
}

const AFTER_HELP: &str = "\
Branch syntaxes (all mean the same thing):
  unionfs --branch UPPER=rw --branch LOWER=ro MOUNTPOINT
  unionfs -o dirs=UPPER=rw:LOWER=ro MOUNTPOINT
  unionfs -o lowerdir=L1:L2,upperdir=U,workdir=W none MOUNTPOINT   (overlay style; L1 above L2)
  unionfs UPPER=RW:LOWER=RO MOUNTPOINT                            (unionfs-fuse style)
  mount -t fuse.unionfs none MOUNTPOINT -o lowerdir=...,upperdir=...,workdir=...
  unionfs -o lowerdir=L1:L2,upperdir=U,workdir=W MOUNTPOINT        (fuse-overlayfs style, as
                            podman's mount_program calls it)

Union options (-o):
  dirs=A=rw:B=ro            branches, highest first
  lowerdir=L1:L2            read-only branches, highest first (overlay style)
  upperdir=U                the read-write branch on top (overlay style; needs workdir)
  workdir=W                 empty directory on the same filesystem as upperdir, for copy-up
  whiteout=auto|overlay|wh|meta
                            how deletions are recorded: overlay = 0/0 character device and
                            the overlay.opaque xattr (readable by kernel overlayfs), wh = .wh.NAME
                            files (OCI/AUFS), meta = unionfs-fuse's .unionfs-fuse/PATH_HIDDEN~
                            markers (the default with unionfs-fuse's command line); auto
                            (default otherwise) = overlay where the top rw branch allows it,
                            else wh
  delete=all|whiteout|first all (default): remove every rw copy and whiteout what an ro branch
                            still shows; whiteout: keep lower copies, hide them; first: remove
                            only the top copy so a lower version shows through
  create=parent|top         where new files go: parent (default) = the highest branch holding
                            the parent directory if rw, else the topmost rw branch above it;
                            top = always the topmost rw branch
  entry_timeout=SECS        how long the kernel caches name lookups (default 60)
  attr_timeout=SECS         how long the kernel caches attributes (default 60)
  metacopy=on|off           on: chmod/chown/touch/xattr changes of a lower file copy its
                            metadata only, the data follows at the first write (the layout
                            kernel overlayfs reads with its own metacopy=on); default off
  passthrough=off|auto|on   FUSE passthrough (Linux 6.9+, daemon running as real root):
                            the kernel reads and writes open files itself. auto (default):
                            files on rw branches; on: also lower files opened read-only (a
                            write-open that must copy such a file up while it is held fails
                            with ETXTBSY); off: every read and write goes via the daemon.
                            With passthrough, `ctl snapshot` (and `ctl mode ro`) wait up to
                            2 s for files open for writing on the branch, then refuse
  uring=off|auto|on         FUSE over io_uring (Linux 6.14+ with Y in
                            /sys/module/fuse/parameters/enable_uring): requests and replies
                            go through io_uring queues instead of /dev/fuse reads and
                            writes. auto (default): when the kernel offers it; on: required
                            (the mount fails where it is not offered); off: /dev/fuse
  uring_pin=on|off          run each io_uring queue's workers on its CPU (default on)
  dir_readahead=on|off      during a tree walk (find, du, ls -R), list the subdirectories
                            ahead on another thread (default on)
  allow_other               let other users use the mount (needs user_allow_other in
                            /etc/fuse.conf when not root)
  allow_root                let root use a user's mount
  fsname=NAME               the source shown in /proc/mounts
  ro                        mount read-only
  debug                     same as -d: stay in the foreground, debug log on stderr
Generic mount options (rw, dev, nodev, suid, nosuid, exec, noexec, atime, noatime, relatime,
defaults, user, users, auto, noauto, nofail, _netdev, ...) are accepted and ignored, as are
libfuse tuning options (use_ino, big_writes, max_read=N, kernel_cache, ...).

unionfs-fuse compatibility (selected by an A=RW:B=RO branch list or any option below; a
branch without a mode is then read-only, as in unionfs-fuse):
  cow                       copy-on-write: copy lower files up when written. Without it
                            lower files cannot be changed (unionfs-fuse's rule)
  dirs=A=RW:B=RO            the branches, as an option
  chroot=DIR                branch paths are relative to DIR
  max_files=N               raise the daemon's open-file limit (RLIMIT_NOFILE) to N
  hide_meta_files           leave unionfs-fuse's meta directory (.unionfs-fuse) and
                            .fuse_hidden* files out of listings
  statfs_omit_ro            statfs leaves out read-only branches (always so here)
  relaxed_permissions       accepted when not root (the kernel still checks permissions,
                            which for the mounting user ask the same); refused as root
  noinitgroups, debug_file=FILE   accepted, no effect

fuse-overlayfs / containers-storage options (podman: mount_program = \"/path/to/unionfs\"):
  timeout=SECS              entry and attribute cache timeout
  uidmapping=ID:HOST:LEN[:...], gidmapping=...
                            identity maps only; a map that shifts ids is refused
  volatile, fsync=0|1       accepted: we sync when asked, which is always correct
  context=LABEL, noacl, static_nlink, threaded=, fast_ino=, writeback=, redirect_dir=
                            accepted, no effect on what callers see
  squash_to_root, squash_to_uid=, squash_to_gid=, plugins=, noxattrs=1,
  xattr_permissions=1|2, uid=, gid=, umask=
                            refused (not implemented; ignoring them would show wrong data)
See docs/compat.md for every option of fuse-overlayfs and unionfs-fuse.

Unmount with: fusermount3 -u MOUNTPOINT  (or umount MOUNTPOINT as root, or SIGTERM the daemon)

Exit status: 0 mounted; 1 failure at run time; 2 bad input (nothing mounted, nothing changed).";

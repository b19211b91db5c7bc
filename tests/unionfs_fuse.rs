//! unionfs-fuse's command line and its options, and trees shared with Debian's
//! unionfs-fuse (written by one, read through the other, in its `.unionfs-fuse` layout).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

// ---------------------------------------------------------------------------------------------
// unionfs-fuse's command line
// ---------------------------------------------------------------------------------------------

pub(crate) struct Uf {
    pub(crate) t: TempTree,
    pub(crate) rw: PathBuf,
    pub(crate) ro: PathBuf,
    pub(crate) mnt: PathBuf,
}

pub(crate) fn uf_tree() -> Uf {
    let t = TempTree::new();
    t.write("ro/a.txt", "lower a\n");
    t.write("ro/d/b.txt", "lower b\n");
    t.mkdir("rw");
    let (rw, ro, mnt) = (t.join("rw"), t.join("ro"), t.mkdir("mnt"));
    Uf { t, rw, ro, mnt }
}

impl Uf {
    pub(crate) fn src(&self) -> String {
        format!("{}=RW:{}=RO", self.rw.display(), self.ro.display())
    }
    fn mount(&self, opts: &str) -> MountGuard {
        let mut a: Vec<OsString> = Vec::new();
        if !opts.is_empty() {
            a.push("-o".into());
            a.push(opts.into());
        }
        a.push(self.src().into());
        a.push(self.mnt.clone().into());
        MountGuard::mount(a, &self.mnt)
    }
}

#[test]
fn unionfs_fuse_cow_copies_up() {
    if !require_root() {
        return;
    }
    let u = uf_tree();
    let g = u.mount("cow");
    fs::write(u.mnt.join("a.txt"), "changed\n").unwrap();
    assert_eq!(fs::read_to_string(u.rw.join("a.txt")).unwrap(), "changed\n");
    assert_eq!(fs::read_to_string(u.ro.join("a.txt")).unwrap(), "lower a\n");
    g.unmount();
}

#[test]
fn unionfs_fuse_without_cow_does_not_copy_up() {
    if !require_root() {
        return;
    }
    let u = uf_tree();
    let g = u.mount("");
    let e = fs::OpenOptions::new()
        .append(true)
        .open(u.mnt.join("a.txt"))
        .expect_err("writing a lower file without cow must fail (unionfs-fuse: EACCES)");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EROFS)),
        "{e}"
    );
    assert!(!u.rw.join("a.txt").exists(), "no copy-up without cow");
    // New files in a directory the rw branch holds still work.
    fs::write(u.mnt.join("new.txt"), "n\n").unwrap();
    assert!(u.rw.join("new.txt").exists());
    g.unmount();
}

#[test]
fn unionfs_fuse_default_mode_is_ro() {
    if !require_root() {
        return;
    }
    // unionfs-fuse: "When neither RO nor RW is specified, selection defaults to RO."
    let u = uf_tree();
    let src = format!("{}:{}", u.rw.display(), u.ro.display());
    let g = MountGuard::mount([OsString::from(src), u.mnt.clone().into()], &u.mnt);
    assert_eq!(
        fs::read_to_string(u.mnt.join("a.txt")).unwrap(),
        "lower a\n"
    );
    let e = fs::write(u.mnt.join("x"), "x").expect_err("read-only union");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    g.unmount();
}

#[test]
fn unionfs_fuse_dirs_option_and_chroot() {
    if !require_root() {
        return;
    }
    let u = uf_tree();
    // dirs= relative to chroot=
    let opts = format!("cow,chroot={},dirs=/rw=RW:/ro=RO", u.t.path().display());
    let g = MountGuard::mount(["-o".into(), opts, u.mnt.display().to_string()], &u.mnt);
    assert_eq!(
        fs::read_to_string(u.mnt.join("d/b.txt")).unwrap(),
        "lower b\n"
    );
    fs::write(u.mnt.join("c.txt"), "c\n").unwrap();
    assert!(u.rw.join("c.txt").exists());
    g.unmount();
}

#[test]
fn unionfs_fuse_max_files_raises_the_limit() {
    if !require_root() {
        return;
    }
    let u = uf_tree();
    let g = u.mount("cow,max_files=4096");
    let pid = sh(&format!(
        "ps -eo pid=,args= | grep -F -- '{}' | grep -v grep | awk '{{print $1}}' | head -1",
        u.mnt.display()
    ))
    .stdout
    .trim()
    .to_string();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("")
        .to_string();
    assert!(line.contains("4096"), "daemon {pid}: {line:?}");
    g.unmount();
}

#[test]
fn unionfs_fuse_accepted_options_mount() {
    if !require_root() {
        return;
    }
    // Options honoured trivially or ignored with a reason (docs/compat.md): they mount.
    for opts in [
        "cow,statfs_omit_ro",
        "cow,noinitgroups,debug_file=/dev/null",
        "cow,use_ino,nonempty,allow_other,suid,dev",
    ] {
        let u = uf_tree();
        let g = u.mount(opts);
        assert_eq!(
            fs::read_to_string(u.mnt.join("a.txt")).unwrap(),
            "lower a\n"
        );
        g.unmount();
    }
}

#[test]
fn unionfs_fuse_relaxed_permissions_refused_as_root() {
    if !require_root() {
        return;
    }
    let u = uf_tree();
    let out = run(Command::new(unionfs_bin())
        .args(["-o", "relaxed_permissions"])
        .arg(u.src())
        .arg(&u.mnt));
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("relaxed_permissions"), "{out}");
    assert!(!is_mounted(&u.mnt));
}

#[test]
fn unionfs_fuse_hide_meta_files() {
    if !require_root() {
        return;
    }
    let u = uf_tree();
    let g = u.mount("cow,whiteout=meta,hide_meta_files");
    fs::remove_file(u.mnt.join("a.txt")).unwrap();
    let names = list_dir(&u.mnt);
    assert!(
        !names.iter().any(|n| n.starts_with(".unionfs")),
        "{names:?}"
    );
    g.unmount();
}

// ---------------------------------------------------------------------------------------------
// Interop with Debian's unionfs-fuse (its binary is /usr/bin/unionfs)
// ---------------------------------------------------------------------------------------------

const UNIONFS_FUSE: &str = "/usr/bin/unionfs-fuse";

/// Creates, modifies and deletes through a mount of `rw=RW:ro=RO` at `mnt`.
fn scribble(mnt: &Path) {
    fs::write(mnt.join("new.txt"), "new\n").unwrap();
    fs::write(mnt.join("a.txt"), "modified a\n").unwrap();
    fs::remove_file(mnt.join("gone.txt")).unwrap();
    fs::remove_dir_all(mnt.join("olddir")).unwrap();
    fs::create_dir(mnt.join("newdir")).unwrap();
    fs::write(mnt.join("newdir/f"), "f\n").unwrap();
    fs::rename(mnt.join("ren.txt"), mnt.join("renamed.txt")).unwrap();
    // A directory deleted and made again shows only its new entries.
    fs::remove_dir_all(mnt.join("again")).unwrap();
    fs::create_dir(mnt.join("again")).unwrap();
    fs::write(mnt.join("again/new"), "n\n").unwrap();
}

fn interop_tree() -> Uf {
    let u = uf_tree();
    u.t.write("ro/gone.txt", "gone\n");
    u.t.write("ro/olddir/x", "x\n");
    u.t.write("ro/olddir/sub/y", "y\n");
    u.t.write("ro/ren.txt", "ren\n");
    u.t.write("ro/again/old", "o\n");
    u
}

#[test]
fn unionfs_fuse_mode_writes_its_markers_by_default() {
    if !require_root() {
        return;
    }
    let u = interop_tree();
    let g = u.mount("cow");
    fs::remove_file(u.mnt.join("gone.txt")).unwrap();
    fs::remove_dir_all(u.mnt.join("olddir")).unwrap();
    let names = list_dir(&u.mnt);
    assert!(names.contains(&".unionfs-fuse".to_string()), "{names:?}");
    assert!(!names.contains(&"gone.txt".to_string()), "{names:?}");
    g.unmount();
    let meta = u.t.join("rw/.unionfs-fuse");
    assert!(meta.join("gone.txt_HIDDEN~").is_file());
    assert!(meta.join("olddir_HIDDEN~").is_dir());
    assert!(meta.join("olddir/sub/y_HIDDEN~").is_file());
    // Nothing of another layout, and no copied-up parents for the markers.
    assert!(!u.t.join("rw/olddir").exists());
    assert!(!u.t.join("rw/.unionfs-work").exists());
}

/// The interop tree, if Debian's unionfs-fuse can run here (root, its binary).
fn interop() -> Option<Uf> {
    if !require_root()
        || !require(
            Path::new(UNIONFS_FUSE).exists(),
            "needs Debian's unionfs-fuse",
        )
    {
        return None;
    }
    Some(interop_tree())
}

/// Mounts the tree with Debian's unionfs-fuse (`cow,hide_meta_files`), and with ours in
/// the same layout.
fn theirs(u: &Uf) -> MountGuard {
    let mut c = Command::new(UNIONFS_FUSE);
    c.args(["-o", "cow,hide_meta_files"])
        .arg(u.src())
        .arg(&u.mnt);
    MountGuard::run(c, &u.mnt)
}

fn ours(u: &Uf) -> MountGuard {
    u.mount("cow,whiteout=meta,hide_meta_files")
}

#[test]
fn tree_written_by_unionfs_fuse_reads_the_same_through_ours() {
    let Some(u) = interop() else { return };
    let g = theirs(&u);
    scribble(&u.mnt);
    let written = tree_snapshot(&u.mnt);
    g.unmount();
    let g = ours(&u);
    let read = tree_snapshot(&u.mnt);
    g.unmount();
    assert_snapshots_eq("unionfs-fuse", &written, "unionfs whiteout=meta", &read);
}

#[test]
fn tree_written_by_ours_reads_the_same_through_unionfs_fuse() {
    let Some(u) = interop() else { return };
    let g = ours(&u);
    scribble(&u.mnt);
    let written = tree_snapshot(&u.mnt);
    g.unmount();
    let g = theirs(&u);
    let read = tree_snapshot(&u.mnt);
    g.unmount();
    assert_snapshots_eq("unionfs whiteout=meta", &written, "unionfs-fuse", &read);
}

#[test]
fn unionfs_fuse_preserve_branch_keeps_new_files_in_their_parents_branch() {
    if !require_root() {
        return;
    }
    // A=RW over B=RW over C=RO; `p` exists only in B: a new file in it stays in B
    // (unionfs-fuse's rule for a writable parent branch), it is not copied to A.
    let t = TempTree::new();
    t.mkdir("A");
    t.write("B/p/old", "old\n");
    t.write("C/c.txt", "c\n");
    let mnt = t.mkdir("mnt");
    let src = format!(
        "{}=RW:{}=RW:{}=RO",
        t.join("A").display(),
        t.join("B").display(),
        t.join("C").display()
    );
    for opts in ["cow,preserve_branch", "cow"] {
        let g = MountGuard::mount(["-o", opts, &src, mnt.to_str().unwrap()], &mnt);
        let name = format!("new-{}", opts.len());
        fs::write(mnt.join("p").join(&name), "n\n").unwrap();
        assert!(
            t.join("B/p").join(&name).is_file(),
            "{opts}: in the parent's branch"
        );
        assert!(!t.join("A/p").exists(), "{opts}: nothing copied to the top");
        g.unmount();
    }
}

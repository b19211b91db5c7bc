//! `unionfs merge` (snapmerge): apply a branch's changes to the directory below it, so
//! that the directory alone shows what the union of the two showed.
//!
//! The plan is the `diff` of the branch against the directory read as a plain directory
//! (with mtimes compared), turned into steps: remove (whiteouts and what opaque
//! directories hide), put (a non-directory, built under a temporary name and renamed into
//! place), link (a further name of a hard-linked file), mkdir, and, last and deepest
//! first, the metadata of every directory touched. Each step is atomic or idempotent, so
//! a run killed at any point leaves a state from which the next run (which cleans up the
//! temporary names first) finishes the job; a run after a complete one plans nothing.
//!
//! Live mounts: a daemon that has a branch read-write holds a shared `flock` on
//! `BRANCH/.unionfs-work/lock`; merge takes an exclusive non-blocking lock on that file
//! (in the branch and in the target) for its whole run and refuses if it cannot.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::core::branch::HIDDEN_WORK_NAME;
use crate::core::sys;

use super::apply::{self, split, Temps};
use super::compare;
use super::diff::{Change, ChangeKind, Summary};
use super::tree::{self, Kind, Tree};
use super::{usage, Ctx, FormatArg, Result};

/// Arguments of `unionfs merge`.
#[derive(clap::Args, Debug)]
#[command(
    about = "Apply a branch's changes, deletions and opaque directories included, to the \
             directory below it (snapmerge)",
    long_about = "Apply a branch's changes to the directory below it (snapmerge), so that \
        DIR alone shows what the union of BRANCH over DIR showed: new and modified entries \
        are copied with their data (holes kept), owner, mode, xattrs (but the union's \
        private ones) and times, hard links between names of the branch stay hard links, \
        whiteouted entries are removed from DIR (directories with all they hold), and an \
        opaque directory's contents replace DIR's. Each entry is applied atomically \
        (built under a temporary name, then renamed into place). A merge interrupted at \
        any point (crash, kill) is finished by running it again, and a merge run again \
        after it finished changes nothing. BRANCH itself is never changed.\n\n\
        DIR is read as a plain directory: merge into the bottom of a stack (a directory \
        that is itself a branch over lower ones would lose the whiteouts it needs).\n\n\
        Refuses (exit 2, nothing changed) if BRANCH or DIR is read-write in a live unionfs \
        mount (make it read-only there first, or unmount), if either is not a directory \
        or is a mounted union view, or if one contains the other. Prints a progress bar \
        on a terminal and always a summary line: 'merged: N added, M modified, K \
        deleted, O opaque'. Exit code 0 done, 1 failure at run time (run again to \
        finish), 2 bad input."
)]
pub(crate) struct MergeArgs {
    /// The branch whose changes are applied (never changed itself).
    #[arg(value_name = "BRANCH")]
    branch: PathBuf,
    /// The directory below the branch that receives the changes.
    #[arg(long, value_name = "DIR", required = true)]
    into: PathBuf,
    /// Print the plan ('A/M/D/O PATH' lines as diff prints them, 'C PATH' for a leftover
    /// of an interrupted merge) and the summary, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout: {"version":1,"branch","into","format","dry_run",
    /// "changes":[...as diff --json...],"leftovers":[...],"summary":{...}}; the summary
    /// line goes to stderr.
    #[arg(long)]
    json: bool,
    /// Whiteout format of the branch (auto: detected).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto, value_name = "FORMAT")]
    format: FormatArg,
}

/// One step of a merge, on paths relative to the branch and DIR.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Remove a leftover temporary name of an interrupted run.
    Clean(PathBuf),
    /// Remove the entry (whiteout, or hidden by an opaque directory).
    Remove(PathBuf),
    /// Copy the branch's non-directory over DIR's.
    Put(PathBuf),
    /// Make the path a hard link of an earlier one (already in DIR).
    Link(PathBuf, PathBuf),
    /// Create the directory (replacing a non-directory).
    MkDir(PathBuf),
    /// Give DIR's directory the branch's metadata (after everything inside it).
    DirMeta(PathBuf),
}

/// Turns the changes into steps (in walk order, directory metadata last, deepest first).
fn plan(changes: &[Change], leftovers: &[PathBuf]) -> Vec<Step> {
    let mut steps: Vec<Step> = leftovers.iter().cloned().map(Step::Clean).collect();
    let mut touched: BTreeSet<PathBuf> = leftovers.iter().map(|p| split(p).0.into()).collect();
    for c in changes {
        let p = c.path.clone();
        let is_dir = c.kind == Some(Kind::Dir);
        let step = match c.change {
            ChangeKind::Deleted => Some(Step::Remove(p.clone())),
            ChangeKind::Opaque => None,
            _ => match &c.link_to {
                Some(to) => Some(Step::Link(p.clone(), to.clone())),
                None if is_dir && (c.change == ChangeKind::Added || c.fields == ["type"]) => {
                    Some(Step::MkDir(p.clone()))
                }
                None if is_dir => None,
                None => Some(Step::Put(p.clone())),
            },
        };
        if is_dir && c.change != ChangeKind::Deleted {
            touched.insert(p.clone());
        }
        if let Some(s) = step {
            if !p.as_os_str().is_empty() {
                touched.insert(split(&p).0.into());
            }
            steps.push(s);
        }
    }
    let mut dirs: Vec<PathBuf> = touched.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    steps.extend(dirs.into_iter().map(Step::DirMeta));
    steps
}

/// Holds the exclusive lock on `tree`'s `.unionfs-work/lock`, if it has one; refuses if
/// a live daemon holds it (the branch is read-write in a mount).
fn lock_against_daemons(t: &Tree, what: &str) -> Result<Option<OwnedFd>> {
    let rel = Path::new(HIDDEN_WORK_NAME).join("lock");
    let fd = match sys::open_beneath(t.root.as_fd(), &rel, libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(None)
        }
        Err(e) => {
            return Err(usage(format!(
                "{what} {}: {e}",
                t.path.join(&rel).display()
            )))
        }
    };
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(usage(format!(
                "{what} {} is read-write in a live unionfs mount (a daemon holds {}); \
                 make it read-only there (unionfs ctl MOUNTPOINT mode {} ro) or unmount first",
                t.path.display(),
                t.path.join(&rel).display(),
                t.path.display()
            )));
        }
        return Err(usage(format!(
            "{what} {}: {e}",
            t.path.join(&rel).display()
        )));
    }
    Ok(Some(fd))
}

pub(crate) fn run(a: MergeArgs) -> Result<()> {
    let branch = Tree::open(&a.branch, "branch")?.with_format(a.format, tree::default_overlay())?;
    let mut into = Tree::open(&a.into, "--into")?;
    if into.path.starts_with(&branch.path) || branch.path.starts_with(&into.path) {
        return Err(usage(format!(
            "branch {} and --into {} must not contain one another",
            branch.path.display(),
            into.path.display()
        )));
    }
    // DIR is plain (its names are what they are); its xattrs are named as the union names
    // them, in the branch's format.
    into.format = None;
    into.xattrs = branch.xattrs;
    let _locks = (
        lock_against_daemons(&branch, "branch")?,
        lock_against_daemons(&into, "--into")?,
    );
    // Mounts whose work dir is elsewhere (overlay syntax) hold no lock in the branch:
    // ask every live union we can reach which branches it has read-write.
    for (mp, rw) in crate::ctl::client::live_rw_branches() {
        for (what, t) in [("branch", &branch), ("--into", &into)] {
            if rw == t.path {
                return Err(usage(format!(
                    "{what} {} is read-write in the live unionfs mount {}; make it read-only \
                     there (unionfs ctl {} mode {} ro) or unmount first",
                    t.path.display(),
                    mp.display(),
                    mp.display(),
                    t.path.display()
                )));
            }
        }
    }
    let out = compare::compare(&branch, std::slice::from_ref(&into), true)?;
    let summary = Summary::of(&out.changes);
    let steps = plan(&out.changes, &out.leftovers);
    if !a.dry_run {
        let bar = progress(steps.len() as u64, a.json);
        let r = apply_all(&branch, &into, &steps, &bar);
        bar.finish_and_clear();
        r?;
    }
    report(&a, &branch, &into, &out, summary)
}

fn progress(len: u64, json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() || !std::io::stdout().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("merging {bar:40} {pos}/{len} {wide_msg}")
    {
        bar.set_style(style);
    }
    bar
}

fn report(a: &MergeArgs, b: &Tree, into: &Tree, out: &compare::Outcome, s: Summary) -> Result<()> {
    let head = if a.dry_run { "would merge" } else { "merged" };
    let mut stdout = std::io::stdout().lock();
    let w = if a.json {
        let v = serde_json::json!({
            "version": 1,
            "branch": b.path.to_string_lossy(),
            "into": into.path.to_string_lossy(),
            "format": tree::format_name(b.format),
            "dry_run": a.dry_run,
            "changes": out.changes,
            "leftovers": out.leftovers.iter().map(|p| tree::shown(p, false)).collect::<Vec<_>>(),
            "summary": s,
        });
        eprintln!("{head}: {s}");
        writeln!(stdout, "{v}")
    } else {
        (|| {
            if a.dry_run {
                for p in &out.leftovers {
                    writeln!(
                        stdout,
                        "C  {}  (leftover of an interrupted merge)",
                        tree::shown(p, false)
                    )?;
                }
                for c in &out.changes {
                    writeln!(stdout, "{}", c.line())?;
                }
            }
            writeln!(stdout, "{head}: {s}")
        })()
    };
    w.ctx("write", "stdout")
}

/// Carries out the steps in order.
fn apply_all(b: &Tree, d: &Tree, steps: &[Step], bar: &indicatif::ProgressBar) -> Result<()> {
    let temps = Temps::new();
    let (broot, droot) = (b.root.as_fd(), d.root.as_fd());
    let dir_of =
        |root, rel: &Path, at: &Path| sys::open_dir_path(root, rel).ctx("open", at.join(rel));
    for s in steps {
        match s {
            Step::Clean(p) | Step::Remove(p) => {
                let (parent, name) = split(p);
                let dp = dir_of(droot, parent, &d.path)?;
                apply::remove(dp.as_fd(), name, &temps).ctx("remove", d.path.join(p))?;
            }
            Step::Put(p) => {
                let (parent, name) = split(p);
                let sp = dir_of(broot, parent, &b.path)?;
                let dp = dir_of(droot, parent, &d.path)?;
                let st = sys::fstatat(sp.as_fd(), name).ctx("stat", b.path.join(p))?;
                let m =
                    tree::read_meta(sp.as_fd(), name, st, b.xattrs).ctx("read", b.path.join(p))?;
                let tmp = temps.next();
                let built = apply::build_copy(sp.as_fd(), name, &m, dp.as_fd(), &tmp)
                    .and_then(|()| apply::set_meta(dp.as_fd(), &tmp, &m, d.xattrs, true))
                    .and_then(|()| apply::replace(dp.as_fd(), &tmp, name, &temps));
                if built.is_err() {
                    let _ = apply::remove(dp.as_fd(), &tmp, &temps);
                }
                built.ctx("copy", d.path.join(p))?;
            }
            Step::Link(p, to) => {
                let (parent, name) = split(p);
                let (tparent, tname) = split(to);
                let dp = dir_of(droot, parent, &d.path)?;
                let tp = dir_of(droot, tparent, &d.path)?;
                let tmp = temps.next();
                sys::linkat(tp.as_fd(), tname, dp.as_fd(), &tmp).ctx("link", d.path.join(to))?;
                let r = apply::replace(dp.as_fd(), &tmp, name, &temps);
                if r.is_err() {
                    let _ = sys::unlinkat(dp.as_fd(), &tmp, false);
                }
                r.ctx("link", d.path.join(p))?;
            }
            Step::MkDir(p) => {
                let (parent, name) = split(p);
                let sp = dir_of(broot, parent, &b.path)?;
                let dp = dir_of(droot, parent, &d.path)?;
                let st = sys::fstatat(sp.as_fd(), name).ctx("stat", b.path.join(p))?;
                let mut m =
                    tree::read_meta(sp.as_fd(), name, st, b.xattrs).ctx("read", b.path.join(p))?;
                // Writable for what goes inside; its own mode and times come last.
                m.st.st_mode = libc::S_IFDIR | 0o700;
                let tmp = temps.next();
                let built = sys::mkdirat(dp.as_fd(), &tmp, 0o700)
                    .and_then(|()| apply::set_meta(dp.as_fd(), &tmp, &m, d.xattrs, false))
                    .and_then(|()| apply::replace(dp.as_fd(), &tmp, name, &temps));
                if built.is_err() {
                    let _ = apply::remove(dp.as_fd(), &tmp, &temps);
                }
                built.ctx("mkdir", d.path.join(p))?;
            }
            Step::DirMeta(p) => {
                let sfd = tree::open_read(broot, p).ctx("open", b.path.join(p))?;
                let st = sys::fstat(sfd.as_fd()).ctx("stat", b.path.join(p))?;
                let m = tree::read_meta(sfd.as_fd(), OsStr::new(""), st, b.xattrs)
                    .ctx("read", b.path.join(p))?;
                let dfd = tree::open_read(droot, p).ctx("open", d.path.join(p))?;
                apply::sync_dir_meta(dfd.as_fd(), &m, d.xattrs)
                    .ctx("set metadata", d.path.join(p))?;
            }
        }
        bar.inc(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::WhiteoutFormat;
    use std::fs;

    fn args(b: &Path, d: &Path, dry_run: bool) -> MergeArgs {
        MergeArgs {
            branch: b.into(),
            into: d.into(),
            dry_run,
            json: false,
            format: FormatArg::Auto,
        }
    }

    fn listing(root: &Path) -> Vec<String> {
        let mut v = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for e in fs::read_dir(root.join(&rel)).unwrap() {
                let e = e.unwrap();
                let r = rel.join(e.file_name());
                let md = fs::symlink_metadata(e.path()).unwrap();
                if md.is_dir() {
                    stack.push(r.clone());
                    v.push(format!("{}/", r.display()));
                } else if md.file_type().is_symlink() {
                    v.push(format!(
                        "{} -> {}",
                        r.display(),
                        fs::read_link(e.path()).unwrap().display()
                    ));
                } else {
                    v.push(format!(
                        "{}={}",
                        r.display(),
                        fs::read_to_string(e.path()).unwrap_or_default()
                    ));
                }
            }
        }
        v.sort();
        v
    }

    #[test]
    fn merges_every_kind_of_change_and_then_plans_nothing() {
        for f in [WhiteoutFormat::Wh, tree::default_overlay()] {
            let d = tempfile::tempdir().unwrap();
            let (b, l) = (d.path().join("B"), d.path().join("L"));
            for p in [
                "L/old/x",
                "L/op/y",
                "L/keep",
                "B/op",
                "B/keep",
                "B/new/deep",
            ] {
                fs::create_dir_all(d.path().join(p)).unwrap();
            }
            fs::write(l.join("keep/a"), "old").unwrap();
            fs::write(l.join("op/y/z"), "z").unwrap();
            fs::write(l.join("op/gone"), "g").unwrap();
            fs::write(l.join("dir"), "file").unwrap();
            fs::write(b.join("keep/a"), "new").unwrap();
            fs::write(b.join("op/kept"), "k").unwrap();
            fs::write(b.join("new/deep/f"), "f").unwrap();
            fs::create_dir(b.join("dir")).unwrap();
            std::os::unix::fs::symlink("../keep/a", b.join("new/link")).unwrap();
            fs::hard_link(b.join("new/deep/f"), b.join("new/f2")).unwrap();
            let bt = Tree::open(&b, "b").unwrap();
            let fd = bt.open_root().unwrap();
            if f != WhiteoutFormat::Wh && !f.probe(fd.as_fd()) {
                continue;
            }
            f.make_whiteout(fd.as_fd(), OsStr::new("old")).unwrap();
            f.set_opaque(fd.as_fd(), OsStr::new("op")).unwrap();
            let before = listing(&b);
            run(args(&b, &l, true)).unwrap();
            assert!(l.join("old/x").exists(), "dry run changed nothing");
            run(args(&b, &l, false)).unwrap();
            assert_eq!(
                listing(&l),
                [
                    "dir/",
                    "keep/",
                    "keep/a=new",
                    "new/",
                    "new/deep/",
                    "new/deep/f=f",
                    "new/f2=f",
                    "new/link -> ../keep/a",
                    "op/",
                    "op/kept=k",
                ],
                "{f:?}"
            );
            assert_eq!(listing(&b), before, "the branch is never changed");
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                fs::metadata(l.join("new/f2")).unwrap().ino(),
                fs::metadata(l.join("new/deep/f")).unwrap().ino()
            );
            let mut bi = Tree::open(&b, "b")
                .unwrap()
                .with_format(FormatArg::Auto, f)
                .unwrap();
            bi.xattrs = f;
            let mut li = Tree::open(&l, "l").unwrap();
            li.xattrs = f;
            let again = compare::compare(&bi, &[li], true).unwrap();
            assert!(again.changes.is_empty(), "{:?}", again.changes);
        }
    }

    #[test]
    fn leftovers_are_cleaned_and_bad_input_refused() {
        let d = tempfile::tempdir().unwrap();
        let (b, l) = (d.path().join("B"), d.path().join("L"));
        fs::create_dir_all(b.join("sub")).unwrap();
        fs::create_dir_all(l.join("sub")).unwrap();
        fs::write(b.join("sub/f"), "f").unwrap();
        fs::write(l.join("sub/.#unionfs-tmp.1.0"), "half").unwrap();
        fs::write(d.path().join("file"), "").unwrap();
        let e = run(args(&b, &d.path().join("file"), false)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = run(args(&b, &b.join("sub"), false)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        run(args(&b, &l, false)).unwrap();
        assert_eq!(listing(&l), ["sub/", "sub/f=f"]);
    }

    #[test]
    fn a_daemon_lock_refuses_the_merge() {
        let d = tempfile::tempdir().unwrap();
        let (b, l) = (d.path().join("B"), d.path().join("L"));
        fs::create_dir_all(b.join(HIDDEN_WORK_NAME)).unwrap();
        fs::create_dir_all(&l).unwrap();
        fs::write(b.join("f"), "f").unwrap();
        let lock = fs::File::create(b.join(HIDDEN_WORK_NAME).join("lock")).unwrap();
        // Another open file description, as a daemon process would have.
        // SAFETY: plain syscall on an fd we own.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH) }, 0);
        let e = run(args(&b, &l, false)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("live unionfs mount"), "{e}");
        assert!(!l.join("f").exists());
        drop(lock);
        run(args(&b, &l, false)).unwrap();
        assert!(l.join("f").exists());
        assert!(!l.join(HIDDEN_WORK_NAME).exists());
    }
}

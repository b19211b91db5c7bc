//! The offline tools against the union's own view: for every whiteout format, merging a
//! branch into its base gives exactly the tree the mounted union showed; a merge killed at
//! random points finishes on the next run with the same result; export then import gives
//! the same union view and `tar tvf` lists the whiteouts; bad input is refused with exit
//! code 2, one line on stderr and nothing changed; every option is in `--help`.
//!
//! The branches are written by the union itself (a rw mount over the base, then
//! unmounted), so the tools read what the daemon really writes in each format.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::util::*;

const FORMATS: [&str; 2] = ["overlay", "wh"];

fn tool<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    run(Command::new(unionfs_bin()).args(args))
}

fn p(path: &Path) -> OsString {
    path.as_os_str().to_os_string()
}

fn branch_arg(dir: &Path, mode: &str) -> [OsString; 2] {
    let mut v = OsString::from(dir);
    v.push("=");
    v.push(mode);
    ["--branch".into(), v]
}

/// A base with a bit of everything, with fixed times.
fn make_base(t: &TempTree) -> PathBuf {
    for (rel, body) in [
        ("L/keep.txt", "keep\n"),
        ("L/edit.txt", "edit me\n"),
        ("L/gone.txt", "delete me\n"),
        ("L/chmod.sh", "#!/bin/sh\n"),
        ("L/dir/a", "a\n"),
        ("L/dir/sub/b", "b\n"),
        ("L/deldir/x/y", "y\n"),
        ("L/opaque/old1", "1\n"),
        ("L/opaque/inner/old2", "2\n"),
        ("L/replace", "a file that becomes a directory\n"),
        ("L/todir/c", "c\n"),
        ("L/xattr.txt", "x\n"),
    ] {
        t.write(rel, body);
    }
    t.chmod("L/chmod.sh", 0o755);
    t.symlink("keep.txt", "L/link");
    set_xattr(&t.join("L/xattr.txt"), "user.k", b"v");
    run_ok(Command::new("mkfifo").arg(t.join("L/fifo")));
    let l = t.join("L");
    let mut n = 1_500_000_000;
    stamp(&l, &mut n);
    l
}

/// Gives every entry below `p` its own fixed mtime (ns included), children first.
fn stamp(p: &Path, n: &mut i64) {
    let md = fs::symlink_metadata(p).expect("lstat");
    if md.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for c in names {
            stamp(&c, n);
        }
    }
    *n += 1000;
    set_times(p, (*n, 7), (*n, 123_456_789));
}

/// Writes branch `B` over `L` through a rw mount in `fmt`, then unmounts.
fn make_branch(t: &TempTree, l: &Path, fmt: &str, name: &str) -> PathBuf {
    let b = t.mkdir(name);
    let mnt = t.mkdir(format!("{name}-mnt"));
    let mut args: Vec<OsString> = Vec::new();
    args.extend(branch_arg(&b, "rw"));
    args.extend(branch_arg(l, "ro"));
    args.push(p(&mnt));
    args.extend(["-o".into(), format!("whiteout={fmt}").into()]);
    let g = MountGuard::mount(args, &mnt);
    let script = r#"
        set -e
        echo more >> edit.txt
        rm gone.txt
        chmod 0700 chmod.sh
        rm -rf deldir
        rm -rf opaque && mkdir opaque && echo fresh > opaque/new && mkdir opaque/inner
        rm replace && mkdir replace && echo inner > replace/inner
        rm -rf todir && echo now a file > todir
        echo n > dir/sub/new.txt
        mv dir/a dir/a-renamed
        mkdir -p brand/new/deep && echo d > brand/new/deep/f
        ln brand/new/deep/f brand/hardlink
        ln -s ../keep.txt brand/sym
        mkfifo brand/fifo
        setfattr -n user.k -v changed xattr.txt
        setfattr -n user.fresh -v 1 dir
        touch -m -d @1600000000.25 keep.txt
    "#;
    run_ok(Command::new("bash").arg("-c").arg(script).current_dir(&mnt));
    g.unmount();
    // The daemon really wrote the format asked for.
    match fmt {
        "wh" => assert!(
            b.join(".wh.gone.txt").is_file(),
            "no .wh. whiteout in {name}"
        ),
        _ => {
            let ft = fs::symlink_metadata(b.join("gone.txt"))
                .expect("whiteout")
                .file_type();
            assert!(ft.is_char_device(), "no 0/0 whiteout in {name}");
        }
    }
    b
}

/// The tree the union of `branches` (all read-only, highest first) shows, with times.
fn union_view(t: &TempTree, branches: &[&Path], fmt: &str) -> Snapshot {
    let mnt = t.mkdir(format!("view-{}", rand::random::<u32>()));
    let mut args: Vec<OsString> = Vec::new();
    for b in branches {
        args.extend(branch_arg(b, "ro"));
    }
    args.push(p(&mnt));
    args.extend(["-o".into(), format!("whiteout={fmt}").into()]);
    let g = MountGuard::mount(args, &mnt);
    let snap = tree_snapshot_with_times(&mnt);
    g.unmount();
    fs::remove_dir(&mnt).expect("rmdir view");
    snap
}

/// A number from the `"summary"` object of a tool's JSON output.
fn summary_num(json: &str, key: &str) -> usize {
    let s = &json[json.find("\"summary\"").expect("summary in JSON")..];
    let k = format!("\"{key}\":");
    let rest = &s[s.find(&k).unwrap_or_else(|| panic!("{key} in {s}")) + k.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a number")
}

fn summary_line(json: &str) -> String {
    format!(
        "merged: {} added, {} modified, {} deleted, {} opaque",
        summary_num(json, "added"),
        summary_num(json, "modified"),
        summary_num(json, "deleted"),
        summary_num(json, "opaque")
    )
}

const NOTHING: &str = "merged: 0 added, 0 modified, 0 deleted, 0 opaque";

#[test]
fn merge_gives_exactly_the_union_view_in_every_format() {
    if !require_root() {
        return;
    }
    for fmt in FORMATS {
        let t = TempTree::new();
        let l = make_base(&t);
        let b = make_branch(&t, &l, fmt, "B");
        let view = union_view(&t, &[&b, &l], fmt);
        let (b_before, l_before) = (tree_snapshot_with_times(&b), tree_snapshot_with_times(&l));

        let diff = tool([
            "diff".into(),
            p(&b),
            "--base".into(),
            p(&l),
            "--json".into(),
            "--mtime".into(),
        ])
        .ok();
        for want in [
            r#"{"change":"deleted","path":"gone.txt""#,
            r#"{"change":"deleted","path":"deldir","type":"dir"}"#,
            r#"{"change":"opaque","fields":["mtime"],"path":"opaque","type":"dir"}"#,
            r#"{"change":"deleted","path":"opaque/old1","type":"file"}"#,
            r#"{"change":"modified","fields":["content","mtime"],"path":"edit.txt","type":"file"}"#,
            r#"{"change":"modified","fields":["mtime"],"path":"keep.txt","type":"file"}"#,
            r#"{"change":"modified","fields":["type"],"path":"replace","type":"dir"}"#,
            r#""link_to":"brand/hardlink","path":"brand/new/deep/f""#,
            r#"{"change":"added","path":"dir/a-renamed","type":"file"}"#,
            r#"{"change":"deleted","path":"dir/a","type":"file"}"#,
        ] {
            assert!(
                diff.stdout.contains(want),
                "{fmt}: diff lacks {want}:\n{diff}"
            );
        }
        let human = tool(["diff".into(), p(&b), "--base".into(), p(&l)]).ok();
        assert!(human.stdout.contains("D  gone.txt\n"), "{human}");
        assert!(human.stdout.contains("O  opaque/\n"), "{human}");
        assert!(
            !human.stdout.contains("keep.txt"),
            "mtime only with --mtime:\n{human}"
        );

        let dry = tool([
            "merge".into(),
            p(&b),
            "--into".into(),
            p(&l),
            "--dry-run".into(),
        ])
        .ok();
        assert!(dry.stdout.contains("D  deldir/\n"), "{dry}");
        assert_snapshots_eq(
            "base before",
            &l_before,
            "after a dry run",
            &tree_snapshot_with_times(&l),
        );

        let merged = tool(["merge".into(), p(&b), "--into".into(), p(&l)]).ok();
        assert_eq!(
            merged.stdout.trim_end(),
            summary_line(&diff.stdout),
            "{fmt}: {merged}"
        );
        assert_snapshots_eq(
            &format!("union view ({fmt})"),
            &view,
            "merged base",
            &tree_snapshot_with_times(&l),
        );
        assert_snapshots_eq(
            "branch before",
            &b_before,
            "branch after",
            &tree_snapshot_with_times(&b),
        );

        let merged_once = tree_snapshot_with_times(&l);
        let again = tool([
            "merge".into(),
            p(&b),
            "--into".into(),
            p(&l),
            "--json".into(),
        ])
        .ok();
        assert!(again.stderr.contains(NOTHING), "{again}");
        assert!(
            again.stdout.starts_with('{') && again.stdout.contains(r#""changes":[]"#),
            "{again}"
        );
        assert_snapshots_eq(
            "merged once",
            &merged_once,
            "merged twice",
            &tree_snapshot_with_times(&l),
        );
        let nodiff = tool(["diff".into(), p(&b), "--base".into(), p(&l)]).ok();
        assert_eq!(nodiff.stdout, "", "{nodiff}");
    }
}

/// A wide base and a branch changing much of it, written by hand in `fmt`.
fn big_pair(t: &TempTree, fmt: &str) -> (PathBuf, PathBuf) {
    let (l, b) = (t.mkdir("L"), t.mkdir("B"));
    let body = |d: usize, f: usize, v: &str| format!("{v} {d}/{f}\n").repeat(1 + (d * 7 + f) % 40);
    for d in 0..30 {
        for f in 0..40 {
            t.write(format!("L/d{d}/f{f}"), body(d, f, "old"));
        }
    }
    for d in 0..30 {
        let dir = b.join(format!("d{d}"));
        match d % 6 {
            // A deleted directory.
            0 => whiteout(fmt, &b, &format!("d{d}")),
            // An opaque one with new contents.
            1 => {
                fs::create_dir(&dir).unwrap();
                opaque(fmt, &dir);
                for f in 0..20 {
                    t.write(format!("B/d{d}/n{f}"), body(d, f, "opaque"));
                }
            }
            // Modified, deleted and new files, a hard link.
            _ => {
                fs::create_dir(&dir).unwrap();
                for f in 0..40 {
                    match f % 4 {
                        0 => t.write(format!("B/d{d}/f{f}"), body(d, f, "new")),
                        1 => {
                            whiteout(fmt, &dir, &format!("f{f}"));
                            dir.join(format!("f{f}"))
                        }
                        2 => t.write(format!("B/d{d}/g{f}"), body(d, f, "added")),
                        _ => dir.clone(),
                    };
                }
                t.hardlink(format!("B/d{d}/g2"), format!("B/d{d}/link"));
            }
        }
    }
    for d in 30..45 {
        for f in 0..30 {
            t.write(format!("B/new{d}/sub/f{f}"), body(d, f, "brand new"));
        }
    }
    let mut n = 1_400_000_000;
    stamp(&l, &mut n);
    stamp(&b, &mut n);
    (l, b)
}

fn whiteout(fmt: &str, dir: &Path, name: &str) {
    if fmt == "wh" {
        fs::write(dir.join(format!(".wh.{name}")), "").unwrap();
    } else {
        mknod(&dir.join(name), libc::S_IFCHR, 0, 0);
    }
}

fn opaque(fmt: &str, dir: &Path) {
    if fmt == "wh" {
        fs::write(dir.join(".wh..wh..opq"), "").unwrap();
    } else {
        set_xattr(dir, "trusted.overlay.opaque", b"y");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn a_merge_killed_at_random_points_finishes_on_the_next_run() {
    // The overlay format's opaque xattr is trusted.*, which needs root to write by hand.
    let formats: &[&str] = if is_root() { &FORMATS } else { &["wh"] };
    let seed: u64 = std::env::var("UNIONFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("a_merge_killed_at_random_points: UNIONFS_SEED={seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    for fmt in formats {
        let t = TempTree::new();
        let (l, b) = big_pair(&t, fmt);
        let reference = t.join("Lref");
        copy_tree(&l, &reference);
        let start = Instant::now();
        let out = tool(["merge".into(), p(&b), "--into".into(), p(&reference)]).ok();
        let full = start.elapsed();
        assert!(!out.stdout.contains(" 0 added"), "{out}");
        let expected = tree_snapshot_with_times(&reference);
        let original = tree_snapshot_with_times(&l);
        let (mut kills, mut partial) = (0, 0);
        // Kill within the first 60% of a full run; `full` was measured once and may be
        // inflated by a busy machine, so a merge that finishes before its kill halves
        // the window. At least 6 rounds, more (up to 16) until a kill hit mid-way.
        let mut window = (full.as_micros() as u64 * 6 / 10).max(1);
        for round in 0..16 {
            if round >= 6 && kills >= 3 && partial >= 1 {
                break;
            }
            let li = t.join(format!("L{round}"));
            copy_tree(&l, &li);
            // Kill it at a random moment, up to three times in a row, then let it finish.
            for _ in 0..3 {
                let mut child = Command::new(unionfs_bin())
                    .args(["merge".into(), p(&b), "--into".into(), p(&li)])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn merge");
                let micros = rng.random_range(0..window);
                std::thread::sleep(Duration::from_micros(micros));
                let _ = child.kill();
                let status = child.wait().expect("wait");
                if status.signal() == Some(libc::SIGKILL) {
                    kills += 1;
                    let now = tree_snapshot_with_times(&li);
                    if now != original && now != expected {
                        partial += 1;
                    }
                } else {
                    assert!(status.success(), "merge failed by itself: {status:?}");
                    window = (window / 2).max(1);
                    break;
                }
            }
            let done = tool(["merge".into(), p(&b), "--into".into(), p(&li)]).ok();
            assert_snapshots_eq(
                &format!("uninterrupted merge ({fmt})"),
                &expected,
                &format!("merge finished after kills (round {round}, seed {seed})"),
                &tree_snapshot_with_times(&li),
            );
            let again = tool(["merge".into(), p(&b), "--into".into(), p(&li)]).ok();
            assert_eq!(again.stdout.trim_end(), NOTHING, "{done}\n{again}");
            fs::remove_dir_all(&li).unwrap();
        }
        eprintln!("{fmt}: {kills} kills, {partial} left a half-merged tree (full merge {full:?})");
        assert!(
            kills >= 3 && partial >= 1,
            "{fmt}: the kills never hit a merge mid-way (seed {seed})"
        );
    }
}

#[test]
fn export_then_import_gives_the_same_union_view() {
    if !require_root() {
        return;
    }
    for fmt in FORMATS {
        let t = TempTree::new();
        let l = make_base(&t);
        let b = make_branch(&t, &l, fmt, "B");
        let mut view = union_view(&t, &[&b, &l], fmt);
        view.remove(Path::new(""));
        let layer = t.join("layer.tar");
        tool(["export".into(), p(&b), "-o".into(), p(&layer)]).ok();
        let listing = run_ok(Command::new("tar").arg("tvf").arg(&layer)).stdout;
        for want in [
            " .wh.gone.txt\n",
            " .wh.deldir\n",
            " opaque/\n",
            " opaque/.wh..wh..opq\n",
            " dir/.wh.a\n",
            " brand/sym -> ../keep.txt\n",
            " brand/new/deep/f link to brand/hardlink\n",
        ] {
            assert!(
                listing.contains(want),
                "{fmt}: tar tvf lacks {want:?}:\n{listing}"
            );
        }
        assert!(!listing.contains(".unionfs-work"), "{listing}");
        assert!(
            !listing.lines().any(|l| l.starts_with('c')),
            "no 0/0 devices:\n{listing}"
        );
        for into in FORMATS {
            let b2 = t.join(format!("B2-{into}"));
            tool([
                "import".into(),
                p(&layer),
                p(&b2),
                "--format".into(),
                into.into(),
            ])
            .ok();
            let gone = fs::symlink_metadata(b2.join("gone.txt"));
            match into {
                "wh" => assert!(b2.join(".wh.gone.txt").is_file() && gone.is_err()),
                _ => assert!(gone.expect("whiteout").file_type().is_char_device()),
            }
            let mut view2 = union_view(&t, &[&b2, &l], into);
            view2.remove(Path::new(""));
            assert_snapshots_eq(
                &format!("union of the {fmt} branch"),
                &view,
                &format!("union of its export imported as {into}"),
                &view2,
            );
        }
    }
}

/// Runs a tool that must refuse: exit 2, one line `unionfs: ...` naming `names`, and no
/// change anywhere in the tree (times included), `skip` left out of the comparison.
#[track_caller]
fn refused(t: &TempTree, args: Vec<OsString>, names: &[&str], skip: &[&str]) {
    let opts = SnapshotOptions {
        mtimes: true,
        skip: skip.iter().map(PathBuf::from).collect(),
        ..Default::default()
    };
    let before = tree_snapshot_with(t.path(), &opts);
    let out = tool(args);
    assert_eq!(out.code(), Some(2), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{out}");
    assert!(lines[0].starts_with("unionfs: "), "{out}");
    for n in names {
        assert!(lines[0].contains(n), "the message names {n}:\n{out}");
    }
    assert_eq!(out.stdout, "", "{out}");
    assert_snapshots_eq(
        "before",
        &before,
        "after",
        &tree_snapshot_with(t.path(), &opts),
    );
}

#[test]
fn bad_input_is_refused_and_nothing_changes() {
    let t = TempTree::new();
    t.write("B/f", "f\n");
    t.write("B/.wh.x", "");
    t.write("L/x", "x\n");
    t.write("file.txt", "not a directory\n");
    t.write("garbage.tar", "this is not a tar archive\n".repeat(40));
    let (b, l, file) = (t.join("B"), t.join("L"), t.join("file.txt"));
    let s = |v: &[&OsString]| v.iter().map(|a| (*a).clone()).collect::<Vec<_>>();
    let (bo, lo, fo) = (p(&b), p(&l), p(&file));
    let (merge, into, diff, import, export) = (
        OsString::from("merge"),
        OsString::from("--into"),
        OsString::from("diff"),
        OsString::from("import"),
        OsString::from("export"),
    );
    refused(
        &t,
        s(&[&merge, &bo, &into, &fo]),
        &["file.txt", "not a directory"],
        &[],
    );
    refused(
        &t,
        s(&[&merge, &fo, &into, &lo]),
        &["file.txt", "not a directory"],
        &[],
    );
    let missing = p(&t.join("missing"));
    refused(
        &t,
        s(&[&merge, &missing, &into, &lo]),
        &["missing", "does not exist"],
        &[],
    );
    refused(
        &t,
        s(&[&merge, &bo, &into, &p(&b.join("."))]),
        &["contain"],
        &[],
    );
    refused(&t, s(&[&merge, &bo]), &["--into"], &[]);
    refused(
        &t,
        s(&[&diff, &bo, &OsString::from("--base"), &fo]),
        &["not a directory"],
        &[],
    );
    refused(
        &t,
        s(&[
            &export,
            &bo,
            &OsString::from("-o"),
            &p(&t.join("nodir/x.tar")),
        ]),
        &["nodir"],
        &[],
    );
    let newdir = p(&t.join("newdir"));
    refused(
        &t,
        s(&[&import, &p(&t.join("missing.tar")), &newdir]),
        &["missing.tar", "does not exist"],
        &[],
    );
    refused(
        &t,
        s(&[&import, &p(&t.join("garbage.tar")), &newdir]),
        &["garbage.tar", "tar"],
        &[],
    );
    refused(
        &t,
        s(&[&import, &p(&t.join("garbage.tar")), &fo]),
        &["not a directory"],
        &[],
    );

    // A branch held read-write by a live daemon (the lock convention merge documents).
    t.write("B/.unionfs-work/lock", "");
    let lock = fs::File::open(t.join("B/.unionfs-work/lock")).unwrap();
    // SAFETY: plain syscall on an fd we own.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_SH) },
        0
    );
    refused(
        &t,
        s(&[&merge, &bo, &into, &lo]),
        &["live unionfs mount", "read-only"],
        &[],
    );
    drop(lock);

    // A mounted union view is not a branch.
    if is_root() {
        let mnt = t.mkdir("mnt");
        let mut args: Vec<OsString> = Vec::new();
        args.extend(branch_arg(&b, "ro"));
        args.extend(branch_arg(&l, "ro"));
        args.push(p(&mnt));
        let g = MountGuard::mount(args, &mnt);
        refused(
            &t,
            s(&[&merge, &p(&mnt), &into, &lo]),
            &["inside the unionfs mount"],
            &["mnt"],
        );
        refused(
            &t,
            s(&[
                &export,
                &p(&mnt),
                &OsString::from("-o"),
                &p(&t.join("x.tar")),
            ]),
            &["unionfs mount"],
            &["mnt"],
        );
        g.unmount();
    }
    // And after all that the merge still works.
    let ok = tool([merge, bo, into, lo]).ok();
    assert_eq!(
        ok.stdout.trim_end(),
        "merged: 1 added, 0 modified, 1 deleted, 0 opaque",
        "{ok}"
    );
    assert!(!l.join("x").exists() && l.join("f").is_file());
}

#[test]
fn help_describes_every_option() {
    for (tool_name, opts) in [
        ("diff", &["--base", "--json", "--mtime", "--format"][..]),
        ("merge", &["--into", "--dry-run", "--json", "--format"][..]),
        ("export", &["--output", "-o", "--format"][..]),
        ("import", &["--format", "FILE.tar", "DIR"][..]),
    ] {
        let out = tool([tool_name, "--help"]).ok();
        for o in opts {
            assert!(
                out.stdout.contains(o),
                "{tool_name} --help lacks {o}:\n{out}"
            );
        }
        assert!(out.stdout.contains("Exit code"), "{out}");
    }
}

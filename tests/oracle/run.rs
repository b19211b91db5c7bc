//! One sequence: set up both sides, run the steps, compare, report; and the minimizer.

use super::exec;
use super::lower;
use super::mounts::{Backend, Layout, Mount, Watchdog};
use super::ops::{self, Op, Outcome, Step, Visible};
use super::rng::Rng;
use super::snap::{self, DiffOpts, Mode, Snapshot};
use super::sys;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A deliberate fault on the side under test, to prove the oracle can fail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Perturb {
    /// The first step is `mkdir zz`, pre-created on the side under test: EEXIST vs Ok.
    Errno,
    /// A user xattr set through the side under test's mount before the steps.
    Visible,
    /// A stray whiteout put straight into the side under test's upper at the end.
    Upper,
    /// The daemon is stopped (SIGSTOP) before step #3: the watchdog must catch the hang.
    Hang,
}

#[derive(Clone)]
pub struct Config {
    pub peer: Backend,
    /// Both sides mounted with `metacopy=on`.
    pub metacopy: bool,
    pub ops: usize,
    /// Compare the visible trees after every `every` steps (0: only at the end).
    pub every: usize,
    pub perturb: Option<Perturb>,
    /// No progress for this long is a hang: the watchdog kills the daemon.
    pub hang_limit: std::time::Duration,
    /// Times at or after this (seconds) are "now" (set by the clock during the run).
    pub now_floor: i64,
    pub base: PathBuf,
    /// Difference categories (signature prefixes) to let pass: a diagnostic knob
    /// (`UNIONFS_ORACLE_IGNORE`) to look past a known bug; empty by default.
    pub ignore: Vec<String>,
}

impl Config {
    fn ignored(&self, category: &str) -> bool {
        self.ignore.iter().any(|i| category.starts_with(i.as_str()))
    }
}

pub struct Record {
    pub step: Step,
    pub kernel: Outcome,
    pub ours: Outcome,
}

pub struct Failure {
    /// Number of steps run when it was seen.
    pub after: usize,
    pub signature: String,
    pub text: String,
}

pub struct Run {
    pub records: Vec<Record>,
    pub failure: Option<Failure>,
    pub warnings: Vec<String>,
    pub log: String,
}

fn same_outcome(k: &Outcome, o: &Outcome) -> bool {
    if k.emulated || o.emulated {
        // The rename was done by the mv fallback on a side: compare success/errno only
        // (st_ino of a directory rebuilt by mv is new by construction).
        match (&k.res, &o.res) {
            (Ok(_), Ok(_)) => true,
            (Err(a), Err(b)) => a == b,
            _ => false,
        }
    } else {
        k.res == o.res
    }
}

fn res_name(o: &Outcome) -> String {
    match &o.res {
        Ok(_) => "Ok".into(),
        Err(e) => ops::errname(*e),
    }
}

fn setup_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("oracle setup: {what}: {e}")
}

/// Runs one sequence: generated from `seed` (`script == None`) or the given steps.
/// `Err` only for a harness problem (the kernel side or the temp dirs failed).
pub fn run(seed: u64, cfg: &Config, script: Option<&[Step]>, every: usize) -> Result<Run, String> {
    let spec = lower::generate(&mut Rng::new(seed));
    let tmp = tempfile::Builder::new()
        .prefix(&format!("oracle-{seed}-"))
        .tempdir_in(&cfg.base)
        .map_err(|e| setup_err("tempdir", e))?;
    let lk = Layout::create(&tmp.path().join("k"))?;
    let lo = Layout::create(&tmp.path().join("o"))?;
    lower::materialize(&spec, &lk.lower)?;
    lower::materialize(&spec, &lo.lower)?;
    let mut run = Run {
        records: vec![],
        failure: None,
        warnings: vec![],
        log: String::new(),
    };
    // Declared after `tmp`, so dropped (unmounted) before the directories are removed.
    let mut mk = Mount::new(&Backend::Kernel, &lk, cfg.metacopy)?;
    let mut mo = match Mount::new(&cfg.peer, &lo, cfg.metacopy) {
        Ok(m) => m,
        Err(e) => {
            run.failure = Some(Failure {
                after: 0,
                signature: "mount".into(),
                text: e,
            });
            return Ok(run);
        }
    };
    let mut wd = Watchdog::new(mo.pid(), cfg.hang_limit);
    let result = drive(cfg, seed, script, every, &lk, &lo, &mut mo, &wd, &mut run);
    wd.stop();
    if let Some(why) = wd.fired() {
        let after = run.records.len();
        run.failure = Some(Failure {
            after,
            signature: "hang".into(),
            text: why,
        });
    }
    run.log = mo.log();
    mo.unmount();
    mk.unmount();
    run.warnings.append(&mut mo.warnings);
    drop(mo);
    drop(mk);
    if run.failure.is_some() && std::env::var_os("UNIONFS_ORACLE_KEEP").is_some() {
        let kept = tmp.keep();
        run.warnings.push(format!(
            "kept the directories in {} (k = kernel, o = ours)",
            kept.display()
        ));
    }
    result?;
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
fn drive(
    cfg: &Config,
    seed: u64,
    script: Option<&[Step]>,
    every: usize,
    lk: &Layout,
    lo: &Layout,
    mo: &mut Mount,
    wd: &Watchdog,
    run: &mut Run,
) -> Result<(), String> {
    let peer_kernel = matches!(cfg.peer, Backend::Kernel);
    let ours = cfg.peer.name();
    if cfg.perturb == Some(Perturb::Visible) {
        sys::lsetxattr(&lo.mnt, "user.perturb", b"1", 0).map_err(|e| setup_err("perturb", e))?;
    }
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x0123_4567);
    let n = script.map_or(cfg.ops, |s| s.len());
    for i in 0..n {
        let step = match script {
            Some(s) => s[i].clone(),
            None if i == 0 && cfg.perturb == Some(Perturb::Errno) => {
                sys::mkdir(&lo.mnt.join("zz"), 0o755).map_err(|e| setup_err("perturb", e))?;
                Step {
                    op: Op::Mkdir {
                        p: "zz".into(),
                        mode: 0o755,
                    },
                    as_user: false,
                }
            }
            None => ops::generate(&mut rng, &Visible::scan(&lk.mnt)),
        };
        wd.beat(format!("step #{i} {step}"));
        if i == 3 && cfg.perturb == Some(Perturb::Hang) {
            if let Some(pid) = mo.pid() {
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
        }
        let k = exec::execute(&step, &lk.mnt, true);
        let o = exec::execute(&step, &lo.mnt, peer_kernel);
        let same = same_outcome(&k, &o);
        let sig = format!("errno:{}:{}/{}", step.op.kind(), res_name(&k), res_name(&o));
        run.records.push(Record {
            step,
            kernel: k,
            ours: o,
        });
        if let Err(e) = mo.alive() {
            run.failure = Some(Failure {
                after: i + 1,
                signature: "daemon-died".into(),
                text: e,
            });
            return Ok(());
        }
        if !same
            && !cfg.ignored(&sig)
            && !cfg.ignored(&format!("detail:{}", run.records[i].step.op.kind()))
        {
            let sig = if sig.ends_with("Ok/Ok") {
                format!("detail:{}", run.records[i].step.op.kind())
            } else {
                sig
            };
            let text = format!(
                "step #{i} answered differently: kernel {}, {ours} {}",
                run.records[i].kernel, run.records[i].ours
            );
            run.failure = Some(Failure {
                after: i + 1,
                signature: sig,
                text,
            });
            return Ok(());
        }
        if every > 0 && (i + 1) % every == 0 && i + 1 < n {
            wd.beat(format!("comparing the trees after step #{i}"));
            if let Some((sig, text)) = compare_visible(cfg, lk, lo).0 {
                run.failure = Some(Failure {
                    after: i + 1,
                    signature: sig,
                    text,
                });
                return Ok(());
            }
        }
    }
    // At the end: the visible trees, the upper directories, and how the kernel reads ours.
    wd.beat("comparing the trees at the end");
    let (vis, ours_snap) = compare_visible(cfg, lk, lo);
    if let Some((sig, text)) = vis {
        run.failure = Some(Failure {
            after: n,
            signature: sig,
            text,
        });
        return Ok(());
    }
    if cfg.perturb == Some(Perturb::Upper) {
        sys::mknod(&lo.upper.join("zz"), libc::S_IFCHR, 0).map_err(|e| setup_err("perturb", e))?;
    }
    let ku = snap::capture(&lk.upper, Mode::Upper, cfg.now_floor);
    let ou = snap::capture(&lo.upper, Mode::Upper, cfg.now_floor);
    // Compared everywhere, renamed directories included: after the kernel side's mv
    // fallback, its upper holds the tree rebuilt from what was visible, which ours
    // must equal (no whiteout or opaque marker left inside a moved tree).
    let skip = |_: &str| false;
    let d = snap::diff(
        &ku,
        &ou,
        &DiffOpts {
            what: "upper",
            a_name: "kernel",
            b_name: ours,
            skip: &skip,
            link_groups: true,
            ignore: &[],
            only_kind_if_linked: false,
        },
    );
    let mut lines = d.lines;
    for p in &ou.problems {
        lines.push(("upper:problem".into(), format!("{ours} upper: {p}")));
    }
    lines.retain(|(c, _)| !cfg.ignored(c));
    if !lines.is_empty() {
        let text = String::from("upper directories differ");
        run.failure = Some(Failure {
            after: n,
            signature: lines[0].0.clone(),
            text: fmt_lines(&text, &lines),
        });
        return Ok(());
    }
    // The meaning of our upper: the kernel, reading our upper over our lower (read-only,
    // no index), must see what our mount shows. Link counts and the content of hard
    // links are left out: without overlayfs' index the kernel breaks copied-up links.
    let rr = lo.mnt.with_file_name("reread");
    let m = Mount::kernel_ro(&[&lo.upper, &lo.lower], &rr, cfg.metacopy)
        .map_err(|e| format!("kernel cannot mount our upper: {e}"));
    match m {
        Err(e) => {
            run.failure = Some(Failure {
                after: n,
                signature: "reread:mount".into(),
                text: e,
            });
        }
        Ok(m) => {
            let rs = snap::capture(&rr, Mode::Reread, cfg.now_floor);
            drop(m);
            let none = |_: &str| false;
            let d = snap::diff(
                &ours_snap,
                &rs,
                &DiffOpts {
                    what: "reread",
                    a_name: ours,
                    b_name: "kernel reading our upper",
                    skip: &none,
                    link_groups: false,
                    ignore: &["nlink"],
                    only_kind_if_linked: true,
                },
            );
            let mut d = d;
            d.lines.retain(|(c, _)| !cfg.ignored(c));
            if !d.lines.is_empty() {
                let text = fmt_lines(
                    "the kernel reads our upper+lower differently from what our mount shows",
                    &d.lines,
                );
                run.failure = Some(Failure {
                    after: n,
                    signature: d.lines[0].0.clone(),
                    text,
                });
            }
        }
    }
    Ok(())
}

fn fmt_lines(head: &str, lines: &[(String, String)]) -> String {
    let mut s = format!("{head}:\n");
    for (_, l) in lines.iter().take(40) {
        let _ = writeln!(s, "      {l}");
    }
    if lines.len() > 40 {
        let _ = writeln!(s, "      ... {} more", lines.len() - 40);
    }
    s
}

/// For each non-directory: how many names in the tree share its inode.
fn link_truth(s: &Snapshot) -> Vec<(String, u64)> {
    let mut count: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for m in s.entries.values().filter(|m| m.kind != "dir") {
        *count.entry(m.ino).or_default() += 1;
    }
    s.entries
        .iter()
        .filter(|(_, m)| m.kind != "dir" && m.kind != "whiteout")
        .map(|(p, m)| (p.clone(), count[&m.ino]))
        .collect()
}

/// Compares the visible trees; returns the failure (if any) and our snapshot.
fn compare_visible(cfg: &Config, lk: &Layout, lo: &Layout) -> (Option<(String, String)>, Snapshot) {
    let ours = cfg.peer.name();
    let mut a = snap::capture(&lk.mnt, Mode::Visible, cfg.now_floor);
    let mut b = snap::capture(&lo.mnt, Mode::Visible, cfg.now_floor);
    // A non-directory's link count must equal the number of its names in the tree (every
    // name of the random lower tree is inside it). Kernel overlayfs does not always get
    // that right for copied-up hard links (seen: renaming one name of a lower pair makes
    // the other report 1). Where the kernel contradicts its own tree, the truth, not the
    // kernel, is the reference: that entry's nlink is checked on our side only.
    let mut nlink_lines = Vec::new();
    for (p, want) in link_truth(&a) {
        if a.entries[&p].nlink != want {
            a.entries.get_mut(&p).map(|m| m.fields.remove("nlink"));
            if let Some(m) = b.entries.get_mut(&p) {
                m.fields.remove("nlink");
            }
        }
    }
    for (p, want) in link_truth(&b) {
        if b.entries[&p].nlink != want && matches!(cfg.peer, Backend::Unionfs(_)) {
            nlink_lines.push((
                "invariant:nlink".into(),
                format!(
                    "{ours}: {} has nlink {} but {want} names",
                    snap::show(&p),
                    b.entries[&p].nlink
                ),
            ));
        }
    }
    let none = |_: &str| false;
    let d = snap::diff(
        &a,
        &b,
        &DiffOpts {
            what: "visible",
            a_name: "kernel",
            b_name: ours,
            skip: &none,
            link_groups: true,
            ignore: &[],
            only_kind_if_linked: false,
        },
    );
    let mut lines = d.lines;
    lines.extend(nlink_lines);
    for p in &a.problems {
        lines.push(("harness:kernel-problem".into(), format!("kernel: {p}")));
    }
    for p in &b.problems {
        lines.push(("invariant:problem".into(), format!("{ours}: {p}")));
    }
    if matches!(cfg.peer, Backend::Unionfs(_)) {
        for p in &b.dino_problems {
            lines.push(("invariant:d_ino".into(), format!("{ours}: {p}")));
        }
        // Directory link counts: ours to get right (2 + subdirectories), not to copy from
        // the kernel (which says 1 for merged directories).
        for (p, m) in &b.entries {
            if m.kind == "dir" {
                let subdirs: u64 = m
                    .fields
                    .get("(subdirs)")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if m.nlink != 2 + subdirs {
                    lines.push((
                        "invariant:dir-nlink".into(),
                        format!(
                            "{}: dir nlink {} but it has {subdirs} subdirectories",
                            snap::show(p),
                            m.nlink
                        ),
                    ));
                }
            }
        }
    }
    lines.retain(|(c, _)| !cfg.ignored(c));
    if lines.is_empty() {
        (None, b)
    } else {
        let sig = lines[0].0.clone();
        (Some((sig, fmt_lines("visible trees differ", &lines))), b)
    }
}

pub fn report(seed: u64, cfg: &Config, run: &Run, title: &str, with_tree: bool) -> String {
    let (sig, after) = run
        .failure
        .as_ref()
        .map_or(("no difference", run.records.len()), |f| {
            (f.signature.as_str(), f.after)
        });
    let mut s = format!(
        "=== oracle seed {seed}: {title} [{sig}] ({} vs kernel, {} ops/sequence) ===\n",
        cfg.peer.name(),
        cfg.ops
    );
    if with_tree {
        s.push_str("  lower tree:\n");
        s.push_str(&lower::describe(&lower::generate(&mut Rng::new(seed))));
    }
    let _ = writeln!(s, "  steps (kernel | {}):", cfg.peer.name());
    for (i, r) in run.records.iter().enumerate().take(after) {
        let mark = if same_outcome(&r.kernel, &r.ours) {
            " "
        } else {
            "*"
        };
        let _ = writeln!(
            s,
            "   {mark}#{i:<2} {}  ->  {} | {}",
            r.step, r.kernel, r.ours
        );
    }
    if let Some(f) = &run.failure {
        let _ = writeln!(
            s,
            "  difference after step #{}: {}",
            f.after as i64 - 1,
            f.text.trim_end()
        );
    }
    for w in &run.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    let log: Vec<&str> = run.log.lines().collect();
    if !log.is_empty() {
        let _ = writeln!(s, "  daemon log (last lines):");
        for l in &log[log.len().saturating_sub(15)..] {
            let _ = writeln!(s, "    | {l}");
        }
    }
    s
}

/// Replays the failing prefix with a check after every step, then drops steps (chunks,
/// then single steps) as long as the failure keeps its signature. Returns the minimal
/// steps and their run, or None if the failure did not reproduce.
pub fn minimize(
    seed: u64,
    cfg: &Config,
    run: &Run,
    budget: usize,
) -> Result<Option<(Vec<Step>, Run)>, String> {
    let f = run.failure.as_ref().expect("a failure");
    let mut cur: Vec<Step> = run
        .records
        .iter()
        .take(f.after)
        .map(|r| r.step.clone())
        .collect();
    let first = self::run(seed, cfg, Some(&cur), 1)?;
    let Some(ff) = &first.failure else {
        return Ok(None);
    };
    let sig = ff.signature.clone();
    cur.truncate(ff.after);
    let mut best = first;
    let mut tries = 0;
    let mut chunk = (cur.len() / 2).max(1);
    loop {
        let mut i = 0;
        while i < cur.len() && tries < budget {
            let mut cand = cur.clone();
            cand.drain(i..(i + chunk).min(cand.len()));
            tries += 1;
            let r = self::run(seed, cfg, Some(&cand), 1)?;
            match &r.failure {
                Some(rf) if rf.signature == sig => {
                    cand.truncate(rf.after);
                    cur = cand;
                    best = r;
                }
                _ => i += chunk,
            }
        }
        if chunk == 1 || tries >= budget {
            break;
        }
        chunk = (chunk / 2).max(1);
    }
    Ok(Some((cur, best)))
}

pub fn tmp_base() -> Result<PathBuf, String> {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    for d in ["/tmp", "/var/tmp"] {
        let c = sys::cstr(Path::new(d));
        let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut sf) } == 0 && sf.f_type as i64 == EXT4_SUPER_MAGIC
        {
            return Ok(PathBuf::from(d));
        }
    }
    Err("neither /tmp nor /var/tmp is on ext4".into())
}

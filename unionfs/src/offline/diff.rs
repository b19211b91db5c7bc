//! `unionfs diff`: what a branch changes relative to what it sits on.
//!
//! This file owns the command line, the [`Change`] records and their text and JSON
//! forms, and the summary counts `merge` prints too; the comparison itself is
//! `compare.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::compare::{compare, open_trees};
use super::tree::{self, Kind};
use super::{Ctx, FormatArg, Result};

/// Arguments of `unionfs diff`.
#[derive(clap::Args, Debug)]
#[command(
    about = "List what a branch changes: added, modified, deleted and opaque paths",
    long_about = "List what a branch directory changes relative to the directories below it: \
        added, modified (content or metadata), deleted (whiteouts) and opaque-replaced \
        paths, in every whiteout format.\n\n\
        Output lines: 'A PATH' added, 'M PATH (FIELDS)' modified, 'D PATH' deleted, \
        'O PATH' an opaque directory that hides entries of the bases. A path ending in / is \
        a directory; '.' is the branch root. A modified entry lists the fields that \
        differ: type, content (bytes of a file), target (of a symlink), rdev (of a \
        device), mode (permission bits incl. setuid/setgid/sticky), owner (uid/gid), \
        xattrs (all but the union's private ones), mtime (only with --mtime), link (a \
        hard link of the branch that the bases do not have). Access times and ctime are \
        never compared. Exit code 0 whether or not there are changes, 1 on a failure at \
        run time, 2 on bad input."
)]
pub(crate) struct DiffArgs {
    /// The branch directory to inspect (the directory itself, never a mounted view).
    #[arg(value_name = "BRANCH")]
    branch: PathBuf,
    /// A directory the branch sits on; repeat for a stack, highest first. Without any,
    /// every entry of the branch is reported as added, every whiteout as deleted and
    /// every opaque directory as opaque.
    #[arg(long = "base", value_name = "DIR")]
    bases: Vec<PathBuf>,
    /// Print one JSON object instead of lines: {"version":1,"branch",...,"changes":[{
    /// "path","change":"added|modified|deleted|opaque","type","fields","link_to"}],
    /// "summary":{...}}.
    #[arg(long)]
    json: bool,
    /// Also compare modification times (off by default: copy-up and editors change them
    /// without changing anything else).
    #[arg(long)]
    mtime: bool,
    /// Whiteout format of the branch and the bases (auto: detected per directory).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto, value_name = "FORMAT")]
    format: FormatArg,
}

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
    Opaque,
}

/// One difference between the two views.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Change {
    #[serde(serialize_with = "ser_path")]
    pub(crate) path: PathBuf,
    pub(crate) change: ChangeKind,
    /// The type in the branch; for a deletion, what is hidden (unknown without a base).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<Kind>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) fields: Vec<&'static str>,
    /// An earlier path of the branch this one is a hard link of.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    pub(crate) link_to: Option<PathBuf>,
}

fn ser_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&tree::shown(p, false))
}

fn ser_opt_path<S: serde::Serializer>(
    p: &Option<PathBuf>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match p {
        Some(p) => ser_path(p, s),
        None => s.serialize_none(),
    }
}

impl Change {
    /// The line `diff` prints.
    pub(crate) fn line(&self) -> String {
        let tag = match self.change {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'M',
            ChangeKind::Deleted => 'D',
            ChangeKind::Opaque => 'O',
        };
        let mut s = format!(
            "{tag}  {}",
            tree::shown(&self.path, self.kind == Some(Kind::Dir))
        );
        let mut notes: Vec<String> = Vec::new();
        if !self.fields.is_empty() {
            notes.push(self.fields.join(", "));
        }
        if let Some(l) = &self.link_to {
            notes.push(format!("hard link to {}", tree::shown(l, false)));
        }
        if !notes.is_empty() {
            s.push_str(&format!("  ({})", notes.join("; ")));
        }
        s
    }
}

/// Counts of changes, as the summary lines print them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Summary {
    pub(crate) added: usize,
    pub(crate) modified: usize,
    pub(crate) deleted: usize,
    pub(crate) opaque: usize,
}

impl Summary {
    /// Counts `changes`; a directory whose only difference is its mtime is not counted
    /// (it follows from the changes inside it).
    pub(crate) fn of(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            match c.change {
                ChangeKind::Added => s.added += 1,
                ChangeKind::Modified
                    if c.kind == Some(Kind::Dir) && c.fields.as_slice() == ["mtime"] => {}
                ChangeKind::Modified => s.modified += 1,
                ChangeKind::Deleted => s.deleted += 1,
                ChangeKind::Opaque => s.opaque += 1,
            }
        }
        s
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} modified, {} deleted, {} opaque",
            self.added, self.modified, self.deleted, self.opaque
        )
    }
}
pub(crate) fn run(a: DiffArgs) -> Result<()> {
    let (branch, bases) = open_trees(&a.branch, &a.bases, a.format)?;
    let out = compare(&branch, &bases, a.mtime)?;
    let summary = Summary::of(&out.changes);
    let mut stdout = std::io::stdout().lock();
    let w = if a.json {
        let bases: Vec<_> = bases
            .iter()
            .map(|t| {
                serde_json::json!({
                    "path": t.path.to_string_lossy(),
                    "format": tree::format_name(t.format),
                })
            })
            .collect();
        let v = serde_json::json!({
            "version": 1,
            "branch": branch.path.to_string_lossy(),
            "format": tree::format_name(branch.format),
            "bases": bases,
            "changes": out.changes,
            "summary": summary,
        });
        writeln!(stdout, "{v}")
    } else {
        out.changes
            .iter()
            .try_for_each(|c| writeln!(stdout, "{}", c.line()))
    };
    w.ctx("write", "stdout")
}

//! Offline tools over branch directories (no mount needed): `diff`, `merge`, `export`
//! and `import` (DESIGN.md section 3, "Runtime control, snapshots, diff and merge").
//!
//! This module owns the command line of the tools and their error type; each tool lives
//! in its own file, and `tree.rs` is the shared branch walker. The tools read branches
//! the way the union core does: through `*at()` calls beneath a directory fd, never
//! following a symlink inside a branch, with the whiteout format of `core/whiteout.rs`.
//! They never touch a mount. Bad input (exit 2) is refused before anything is written.

mod apply;
mod compare;
mod diff;
mod export;
mod import;
mod merge;
mod tree;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// What went wrong in an offline tool.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Bad input: nothing was changed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A failure at run time (exit 1).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The system's answer.
        source: io::Error,
    },
}

impl OfflineError {
    /// The documented exit code: 2 for bad input, 1 for a failure at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            OfflineError::Usage(_) => 2,
            OfflineError::Io { .. } => 1,
        }
    }
}

/// Result of the offline tools.
pub type Result<T> = std::result::Result<T, OfflineError>;

fn usage(msg: impl Into<String>) -> OfflineError {
    OfflineError::Usage(msg.into())
}

/// Attaches the operation and path to an `io::Error` (the core's `ctx` idiom).
trait Ctx<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| OfflineError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

/// How to read (or write) whiteouts and opaque directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatArg {
    /// Detect per directory: 0/0 devices or overlay.* xattrs mean overlay, `.wh.` names
    /// mean wh; a directory with neither reads the same either way.
    Auto,
    /// Kernel overlayfs layout: 0/0 character devices, the overlay.opaque xattr.
    Overlay,
    /// AUFS/OCI layout: `.wh.NAME` files, `.wh..wh..opq`.
    Wh,
}

/// The format `import` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum WriteFormat {
    /// 0/0 character devices and `trusted.overlay.opaque` (`user.overlay.opaque` when not
    /// root), as kernel overlayfs and `unionfs -o whiteout=overlay` read them.
    Overlay,
    /// `.wh.NAME` files and `.wh..wh..opq` (`unionfs -o whiteout=wh`).
    Wh,
}

#[derive(Parser, Debug)]
#[command(
    name = "unionfs",
    about = "Offline tools over unionfs branch directories (no mount needed)",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    tool: Tool,
}

#[derive(Subcommand, Debug)]
enum Tool {
    Diff(diff::DiffArgs),
    Merge(merge::MergeArgs),
    Export(export::ExportArgs),
    Import(import::ImportArgs),
}

/// Runs `unionfs diff|merge|export|import ...` (`args[0]` is the subcommand) and returns
/// the exit code: 0 done, 1 failure at run time, 2 bad input (nothing changed).
pub fn main(args: &[OsString]) -> i32 {
    let argv = std::iter::once(OsString::from("unionfs")).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            let tool = args.first().and_then(|a| a.to_str()).unwrap_or("");
            // clap's message may span lines (a list of missing arguments): make it one.
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let line = parts.join(" ");
            let line = line.trim_start_matches("error: ");
            eprintln!("unionfs: {tool}: {line} (see unionfs {tool} --help)");
            return 2;
        }
    };
    let (name, r) = match cli.tool {
        Tool::Diff(a) => ("diff", diff::run(a)),
        Tool::Merge(a) => ("merge", merge::run(a)),
        Tool::Export(a) => ("export", export::run(a)),
        Tool::Import(a) => ("import", import::run(a)),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            let code = e.exit_code();
            if code == 2 {
                eprintln!("unionfs: {name}: {e} (nothing changed)");
            } else {
                eprintln!("unionfs: {name}: {e}");
            }
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_help_for_every_option() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
            for arg in sub.get_arguments() {
                assert!(
                    arg.get_help().is_some(),
                    "{} {} has no help",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn bad_arguments_exit_2() {
        assert_eq!(main(&["merge".into(), "/nonexistent-branch".into()]), 2);
        assert_eq!(main(&["diff".into(), "--bogus".into()]), 2);
        assert_eq!(main(&["diff".into(), "--help".into()]), 0);
    }
}

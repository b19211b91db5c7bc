//! Offline tools over branch directories (no mount needed): diff, merge, export, import.
//! Being written; until then each subcommand refuses with exit 2.

use std::ffi::OsString;

/// Runs `unionfs diff|merge|export|import ...` (`args[0]` is the subcommand).
pub fn main(args: &[OsString]) -> i32 {
    eprintln!(
        "unionfs: {} is not available in this build yet",
        args.first().and_then(|a| a.to_str()).unwrap_or("this tool")
    );
    2
}

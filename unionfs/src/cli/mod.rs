//! The command line: every accepted syntax parses into low-level [`args::Args`], which
//! become one validated [`MountConfig`] (ripgrep's low/high args split). Only the
//! `MountConfig` is validated, so each syntax gets the same checks and messages.

pub mod args;
mod foreign;
pub mod options;

pub use options::{CliError, MountConfig};

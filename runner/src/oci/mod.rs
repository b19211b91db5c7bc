//! unionrun as an OCI runtime: runc's command line (`create`, `start`, `state`, `kill`,
//! `delete`, `list`, `exec`, `spec`, `features`) over a bundle's config.json, so that
//! podman, conmon and other engines can start containers with it (docs/oci.md).
//!
//! - [`args`]: the command line; [`bundle`]: config.json checked and turned into a
//!   mount plan, namespaces and a process (every refusal happens there);
//! - [`store`]: the per-container record between commands;
//! - [`lifecycle`]: the commands, [`exec`] and [`hooks`] apart; [`init`]: the
//!   container's process up to exec.

pub mod args;
pub mod bundle;
pub mod exec;
pub mod hooks;
pub mod init;
pub mod lifecycle;
pub mod seccomp;
pub mod store;
pub mod userns;

use thiserror::Error;

/// An OCI command failed. Every one exits 1 (runc's convention) with one line.
#[derive(Debug, Error)]
pub enum OciError {
    /// config.json (or process.json) is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// A bad argument, or a command that does not fit the container's state.
    #[error("{0}")]
    Usage(String),
    /// No such container.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What we did.
        op: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The container's setup failed (message from its process).
    #[error("{0}")]
    Container(String),
}

impl OciError {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> OciError {
        OciError::Io {
            op: op.into(),
            source,
        }
    }
}

/// Exit code of a failed OCI command.
pub const EXIT_FAILURE: i32 = 1;

//! The runner's top-level error and its exit codes.
//!
//! Every module has its own error enum; [`RunError`] gathers them with `#[from]` so the
//! binary can print one line (the whole cause chain, joined with ": ") and exit with the
//! documented code. The codes follow the convention of `docker run` and `chroot(1)`:
//!
//! | code | meaning |
//! |------|---------|
//! | payload's | the payload exited normally with that code |
//! | 128+N | the payload died of signal N |
//! | 125 | `unionrun` itself failed: bad usage, or setting up the container failed |
//! | 126 | the command exists in the rootfs but cannot be executed (permission, format) |
//! | 127 | the command was not found in the rootfs |

use thiserror::Error;

/// `unionrun` itself failed (usage, setup, cleanup of a previous run).
pub const EXIT_RUNNER: i32 = 125;
/// The command was found but could not be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The command was not found inside the container.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Anything that stops a run before the payload's own exit status is known.
#[derive(Debug, Error)]
pub enum RunError {
    /// Bad command-line input, refused before any side effect.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The union daemon could not be started or did not mount.
    #[error(transparent)]
    Fsd(#[from] crate::fsd::FsdError),
    /// Creating, configuring or joining the cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// Creating the namespaces or writing the id maps failed.
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    /// The state record could not be written or read.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The container process reported a failure while setting itself up.
    #[error("{message}")]
    Container {
        /// Exit code to return (125, 126 or 127).
        code: i32,
        /// The child's one-line description.
        message: String,
    },
    /// A plain system call in the monitor failed.
    #[error("{op}: {source}")]
    Sys {
        /// What the monitor was doing.
        op: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// The exit code `unionrun` returns for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Container { code, .. } => *code,
            _ => EXIT_RUNNER,
        }
    }

    /// A `Sys` error from the current errno.
    pub(crate) fn last_os(op: impl Into<String>) -> RunError {
        RunError::Sys {
            op: op.into(),
            source: std::io::Error::last_os_error(),
        }
    }
}

/// Renders an error and its sources on one line: "a: b: c" (ripgrep style), skipping a
/// source whose text the outer message already contains.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_errors_keep_their_code() {
        let e = RunError::Container {
            code: EXIT_NOT_FOUND,
            message: "x".into(),
        };
        assert_eq!(e.exit_code(), 127);
        let e = RunError::Sys {
            op: "fork".into(),
            source: std::io::Error::from_raw_os_error(libc::EAGAIN),
        };
        assert_eq!(e.exit_code(), EXIT_RUNNER);
        assert!(one_line(&e).starts_with("fork: "), "{}", one_line(&e));
    }
}

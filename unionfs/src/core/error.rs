//! The core's error type: the operation, the union path and the cause, plus the one
//! mapping to an errno that the FUSE edge uses.

use std::io;
use std::path::PathBuf;

/// What went wrong in a union operation.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A system call on a branch failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// The union operation.
        op: &'static str,
        /// The path inside the union.
        path: PathBuf,
        /// The failing call's error.
        #[source]
        source: io::Error,
    },
    /// The name is not visible in the union.
    #[error("{op} {path:?}: no such file or directory in the union")]
    NotFound {
        /// The union operation.
        op: &'static str,
        /// The path inside the union.
        path: PathBuf,
    },
    /// The object lives only on read-only branches and no rw branch can take a copy.
    #[error("{op} {path:?}: no read-write branch can hold the change")]
    ReadOnly {
        /// The union operation.
        op: &'static str,
        /// The path inside the union.
        path: PathBuf,
    },
    /// The name is reserved by the whiteout format or the work directory.
    #[error("{op} {path:?}: name is reserved by the union")]
    Reserved {
        /// The union operation.
        op: &'static str,
        /// The path inside the union.
        path: PathBuf,
    },
    /// An xattr name private to the whiteout format.
    #[error("{op} {path:?}: xattr is private to the union")]
    PrivateXattr {
        /// The union operation.
        op: &'static str,
        /// The path inside the union.
        path: PathBuf,
    },
    /// Any other plain errno answer (EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, EINVAL, ...).
    #[error("{op} {path:?}: {}", io::Error::from_raw_os_error(*errno))]
    Errno {
        /// The union operation.
        op: &'static str,
        /// The path inside the union.
        path: PathBuf,
        /// The errno the caller gets.
        errno: i32,
    },
}

impl CoreError {
    /// The errno a filesystem caller sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            CoreError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            CoreError::NotFound { .. } => libc::ENOENT,
            CoreError::ReadOnly { .. } => libc::EROFS,
            CoreError::Reserved { .. } => libc::EPERM,
            CoreError::PrivateXattr { .. } => libc::EOPNOTSUPP,
            CoreError::Errno { errno, .. } => *errno,
        }
    }
}

/// Result of a core operation.
pub type Result<T> = std::result::Result<T, CoreError>;

/// Attaches the operation and union path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| CoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

pub(crate) fn errno(op: &'static str, path: &std::path::Path, errno: i32) -> CoreError {
    CoreError::Errno {
        op,
        path: path.to_path_buf(),
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("a/b")
    }

    #[test]
    fn every_arm_maps_to_its_errno() {
        let io = CoreError::Io {
            op: "x",
            path: p(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(io.errno(), libc::EACCES);
        let other = CoreError::Io {
            op: "x",
            path: p(),
            source: io::Error::other("no errno"),
        };
        assert_eq!(other.errno(), libc::EIO);
        assert_eq!(
            CoreError::NotFound { op: "x", path: p() }.errno(),
            libc::ENOENT
        );
        assert_eq!(
            CoreError::ReadOnly { op: "x", path: p() }.errno(),
            libc::EROFS
        );
        assert_eq!(
            CoreError::Reserved { op: "x", path: p() }.errno(),
            libc::EPERM
        );
        assert_eq!(
            CoreError::PrivateXattr { op: "x", path: p() }.errno(),
            libc::EOPNOTSUPP
        );
        assert_eq!(errno("x", &p(), libc::ENOTEMPTY).errno(), libc::ENOTEMPTY);
    }

    #[test]
    fn messages_name_the_operation_and_path() {
        let e = CoreError::ReadOnly {
            op: "unlink",
            path: p(),
        };
        let s = e.to_string();
        assert!(s.contains("unlink") && s.contains("a/b"), "{s}");
    }
}

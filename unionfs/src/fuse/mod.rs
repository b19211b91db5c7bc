//! The FUSE adapter (written next).

//! `unionfs`: a userspace union filesystem in the style of Unionfs.
//!
//! Three layers, kept apart (DESIGN.md section 2): [`core`] holds the union semantics
//! and knows nothing of FUSE; [`fuse`] adapts it to `fuser`; [`cli`] parses every
//! accepted command-line syntax into one [`cli::MountConfig`].
#![warn(missing_docs)]

pub mod cli;
pub mod core;
pub mod ctl;
pub mod daemon;
pub mod fuse;
pub mod mount;
pub mod offline;

//! `unionrun`: a minimal container runner whose root filesystem is a union (our FUSE
//! `unionfs` daemon by default, kernel overlayfs on request), isolated with namespaces and
//! cgroups, as root or rootless. DESIGN.md section 5 gives the process model; each module
//! owns one concern:
//!
//! - [`cli`], [`spec`]: the command line, and the validated [`spec::Spec`] (every refusal
//!   happens there, before any side effect);
//! - [`monitor`]: the runner's ordered steps, the wait loop and the cleanup;
//! - [`fsd`]: the union daemon, outside the container; [`state`]: the record that
//!   `unionrun cleanup` sweeps;
//! - [`namespaces`] (clone, id maps, loopback), [`cgroups`] (v1/v2 behind one trait),
//!   [`rootfs`] (the mount plan, pivot_root), [`security`] (capabilities, seccomp);
//! - [`container`]: the child's ordered steps up to exec; [`init`]: the tiny PID 1;
//! - [`sys`]: the syscall seam the container side goes through, with a recording fake.
#![warn(missing_docs)]

pub mod cgroups;
pub mod cli;
pub mod container;
pub mod error;
pub mod fsd;
pub mod init;
pub mod monitor;
pub mod namespaces;
pub mod oci;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod state;
pub mod sys;

//! The one integration test binary (ripgrep style): a module per area, shared helpers in
//! `util`. Most tests mount for real and need root; locally they skip with a message when a
//! requirement is missing, on CI (`CI=true`) they fail instead. Run everything with
//! `scripts/test.sh`.

mod util;

mod cli;
mod compat;
mod ctl;
mod listing;
mod memory;
mod metacopy;
mod mount;
mod oci;
mod oci_ns;
mod oci_podman;
mod offline;
mod oracle;
mod passthrough;
mod rootless;
mod runner;
mod snapshots;
mod tools;
mod unionfs_fuse;
mod uring;

//! The control socket: `unionfs ctl MOUNTPOINT <op>` changes a live union's branch
//! stack (DESIGN.md section 3, "Runtime control"). JSON lines over a Unix socket whose
//! path follows from the mount point and the mounting user, so the client needs only
//! the mount point. Only the mounting user (or root) may use it.

pub mod client;
pub mod protocol;
pub mod server;

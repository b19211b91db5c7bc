//! The payload's privileges: the capability bounding set ([`caps`]), no_new_privs and the
//! default seccomp filter ([`seccomp`]). `container.rs` applies them in a fixed order:
//! bounding set, user switch, process capabilities, no_new_privs, close-on-exec for
//! fds >= 3, and seccomp last (anything after it would need its syscalls allowed).

pub mod caps;
pub mod seccomp;

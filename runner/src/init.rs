//! The tiny PID 1 (tini's job, in a few lines): forward signals to the payload, reap every
//! zombie (orphans are re-parented to PID 1 inside a pid namespace), and exit with the
//! payload's status once it is gone. The kernel then kills whatever is left in the
//! namespace, so a payload's stray daemons never outlive it.
//!
//! Why a separate init at all: a payload that is PID 1 gets no default signal actions
//! (a SIGTERM without a handler is ignored) and would have to reap orphans itself.
//!
//! Runs after fork in the container: no allocation-heavy work, no unwrap, every failure
//! ends in `_exit`.

use crate::security::caps;

/// Signals the monitor and init pass on to the payload.
pub const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The set of forwarded signals plus SIGCHLD (blocked, and waited for with sigwait).
pub fn wait_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// The exit code for a wait status: the code, or 128+N for signal N.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        crate::error::EXIT_RUNNER
    }
}

/// Drops what init does not need: it keeps only CAP_KILL (to signal a payload running
/// under another uid) and sets no_new_privs. Failures are not fatal: init runs no
/// untrusted code.
pub fn shed_privileges(bounding: &::caps::CapsHashSet) {
    let _ = caps::drop_bounding(bounding);
    let keep: ::caps::CapsHashSet = [::caps::Capability::CAP_KILL].into_iter().collect();
    let _ = caps::set_process_caps(&keep);
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
}

/// Runs init for `payload` (its pid in our namespace); never returns.
pub fn run(payload: libc::pid_t) -> ! {
    // We are a fork of the runner: without this, `ps` in the container calls PID 1
    // "unionrun".
    // SAFETY: a NUL-terminated name of at most 16 bytes.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"init".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let set = wait_set();
    // The signals are already blocked (inherited from the monitor, which blocked them
    // before cloning us), so none is lost between fork and here.
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: valid set and out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(payload, sig);
            }
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == payload {
                // SAFETY: leaving the process without running destructors, as after fork.
                unsafe { libc::_exit(exit_code(status)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        // Wait statuses as the kernel encodes them.
        assert_eq!(exit_code(7 << 8), 7);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM), 143);
    }
}

//! The default seccomp filter, as two small programs (both must allow a call):
//!
//! - **deny** (built with `seccompiler`): known-dangerous syscalls -> `EPERM`. The list
//!   follows what Docker's default profile refuses to a container without extra
//!   capabilities: kernel modules and kexec, keyrings, bpf, perf, handle-based opens that
//!   bypass the mount namespace (the "shocker" escape), the mount API, namespace creation
//!   (`unshare`, `setns`, and `clone` with any `CLONE_NEW*` flag), clock and swap control,
//!   reboot, userfaultfd, io_uring, process_vm_* and ptrace-like peeking (kcmp), plus the
//!   terminal-injection ioctls `TIOCSTI` and `TIOCLINUX`.
//! - **unknown** (hand-written, three instructions): a syscall number above the highest
//!   one this filter was written for ([`LAST_KNOWN`]), or `clone3` (whose flags live in
//!   memory, out of seccomp's reach), -> `ENOSYS`. Programs then take their fallback
//!   path (glibc falls back from clone3 to clone), as they do on an older kernel,
//!   instead of seeing EPERM and giving up. Other ABIs (i386, x32) get `ENOSYS` too.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use thiserror::Error;

/// Building a filter failed (a bug in the tables, not a user error).
#[derive(Debug, Error)]
#[error("cannot build the seccomp filter: {0}")]
pub struct SeccompError(String);

/// The highest syscall number this filter knows (x86_64: `file_setattr`, Linux 6.17).
#[cfg(target_arch = "x86_64")]
pub const LAST_KNOWN: u32 = 469;
#[cfg(target_arch = "aarch64")]
pub const LAST_KNOWN: u32 = 469;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Syscalls refused with EPERM, whatever their arguments.
pub fn denied() -> Vec<(&'static str, i64)> {
    let mut v: Vec<(&'static str, i64)> = vec![
        ("acct", libc::SYS_acct),
        ("add_key", libc::SYS_add_key),
        ("bpf", libc::SYS_bpf),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("clock_settime", libc::SYS_clock_settime),
        ("delete_module", libc::SYS_delete_module),
        ("finit_module", libc::SYS_finit_module),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fsopen", libc::SYS_fsopen),
        ("fspick", libc::SYS_fspick),
        ("init_module", libc::SYS_init_module),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("kcmp", libc::SYS_kcmp),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("kexec_load", libc::SYS_kexec_load),
        ("keyctl", libc::SYS_keyctl),
        ("mount", libc::SYS_mount),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("move_mount", libc::SYS_move_mount),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("open_tree", libc::SYS_open_tree),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("pivot_root", libc::SYS_pivot_root),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("quotactl", libc::SYS_quotactl),
        ("reboot", libc::SYS_reboot),
        ("request_key", libc::SYS_request_key),
        ("setns", libc::SYS_setns),
        ("settimeofday", libc::SYS_settimeofday),
        ("swapoff", libc::SYS_swapoff),
        ("swapon", libc::SYS_swapon),
        ("umount2", libc::SYS_umount2),
        ("unshare", libc::SYS_unshare),
        ("userfaultfd", libc::SYS_userfaultfd),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("ioperm", libc::SYS_ioperm),
        ("iopl", libc::SYS_iopl),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("nfsservctl", libc::SYS_nfsservctl),
        ("_sysctl", libc::SYS__sysctl),
        ("uselib", libc::SYS_uselib),
        ("ustat", libc::SYS_ustat),
    ]);
    v
}

/// The `CLONE_NEW*` flags a `clone` may not carry.
const CLONE_NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Terminal ioctls that inject input or reach the console.
const DENIED_IOCTLS: [u64; 2] = [libc::TIOCSTI, 0x541C /* TIOCLINUX */];

fn e(x: seccompiler::BackendError) -> SeccompError {
    SeccompError(x.to_string())
}

/// The deny program: EPERM for the dangerous calls, allow everything else.
pub fn deny_program() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in denied() {
        rules.insert(nr, Vec::new());
    }
    let masked = |arg: u8, flag: u64| {
        SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
    };
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|f| masked(0, *f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    rules.insert(libc::SYS_clone, clone_rules);
    let ioctl_rules = DENIED_IOCTLS
        .iter()
        .map(|req| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *req)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )
    .map_err(e)?;
    BpfProgram::try_from(f).map_err(e)
}

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The unknown-syscall program: ENOSYS for another ABI, for `clone3` and above
/// [`LAST_KNOWN`] (x32 numbers, with bit 30 set, are above it too); allow the rest.
pub fn unknown_program() -> BpfProgram {
    let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JMP_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, enosys),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
        jump(JMP_JEQ_K, libc::SYS_clone3 as u32, 2, 0),
        jump(JMP_JGT_K, LAST_KNOWN, 1, 0),
        stmt(RET_K, SECCOMP_RET_ALLOW),
        stmt(RET_K, enosys),
    ]
}

/// Both programs, named, in installation order.
pub fn default_programs() -> Result<Vec<(&'static str, BpfProgram)>, SeccompError> {
    Ok(vec![
        ("unknown-syscalls", unknown_program()),
        ("deny", deny_program()?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter over `seccomp_data`, enough for our programs.
    fn eval(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &prog[pc];
            pc += 1;
            match ins.code {
                0x20 => {
                    let k = ins.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap())
                }
                0x06 => return ins.k,
                0x05 => pc += ins.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let t = match ins.code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        0x35 => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += if t { ins.jt } else { ins.jf } as usize;
                }
                0x54 => acc &= ins.k,
                c => panic!("opcode {c:#x} not in the test interpreter"),
            }
        }
    }

    fn both(nr: i64, args: [u64; 6]) -> Vec<u32> {
        let d = deny_program().unwrap();
        let u = unknown_program();
        vec![
            eval(&u, AUDIT_ARCH, nr as u32, args),
            eval(&d, AUDIT_ARCH, nr as u32, args),
        ]
    }

    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn dangerous_calls_get_eperm() {
        for nr in [
            libc::SYS_kexec_load,
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_open_by_handle_at,
        ] {
            assert_eq!(both(nr, [0; 6]), [SECCOMP_RET_ALLOW, EPERM], "syscall {nr}");
        }
        let tiocsti = [0, libc::TIOCSTI, 0, 0, 0, 0];
        assert_eq!(both(libc::SYS_ioctl, tiocsti)[1], EPERM);
        let tcgets = [0, libc::TCGETS, 0, 0, 0, 0];
        assert_eq!(both(libc::SYS_ioctl, tcgets), [SECCOMP_RET_ALLOW; 2]);
    }

    #[test]
    fn clone_with_namespace_flags_is_refused() {
        let fork_like = [libc::SIGCHLD as u64, 0, 0, 0, 0, 0];
        assert_eq!(both(libc::SYS_clone, fork_like), [SECCOMP_RET_ALLOW; 2]);
        let userns = [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0];
        assert_eq!(both(libc::SYS_clone, userns)[1], EPERM);
    }

    #[test]
    fn unknown_calls_get_enosys() {
        assert_eq!(both(LAST_KNOWN as i64 + 1, [0; 6])[0], ENOSYS);
        assert_eq!(both(libc::SYS_clone3, [0; 6])[0], ENOSYS);
        assert_eq!(both(0x4000_0000 | libc::SYS_read, [0; 6])[0], ENOSYS);
        assert_eq!(both(libc::SYS_read, [0; 6]), [SECCOMP_RET_ALLOW; 2]);
        assert_eq!(both(LAST_KNOWN as i64, [0; 6]), [SECCOMP_RET_ALLOW; 2]);
        let u = unknown_program();
        assert_eq!(eval(&u, 0x4000_0003 /* i386 */, 1, [0; 6]), ENOSYS);
    }
}

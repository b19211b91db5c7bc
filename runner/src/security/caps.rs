//! Capabilities: the bounding set is cut down to the spec's set (by default the 14 that
//! Docker grants, `spec::DEFAULT_CAPS`), every capability number the running kernel
//! knows included (from /proc/sys/kernel/cap_last_cap), so a capability newer than the
//! `caps` crate is dropped too. Root in the container then gets exactly that set as its
//! effective and permitted sets at exec; a non-root payload gets none (the kernel clears
//! them at setuid), only the bounding set stays.

use std::io;

use ::caps::{CapSet, CapsHashSet};

/// The highest capability number of the running kernel.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The bit mask of a set (as /proc/PID/status shows CapBnd, CapEff, ...).
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

/// Drops every capability not in `keep` from the bounding set.
pub fn drop_bounding(keep: &CapsHashSet) -> io::Result<()> {
    let keep = mask(keep);
    for n in 0..=last_cap().min(63) {
        if keep & (1u64 << n) != 0 {
            continue;
        }
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: a number this kernel does not have.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(io::Error::new(e.kind(), format!("capability {n}: {e}")));
            }
        }
    }
    Ok(())
}

fn err(what: &str, e: ::caps::errors::CapsError) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Sets effective and permitted to `set` (intersected with what we hold), inheritable
/// and ambient to nothing (as moby does since 23.0: inheritable caps only matter for
/// file capabilities, and granting them lets such files gain privileges).
pub fn set_process_caps(set: &CapsHashSet) -> io::Result<()> {
    let have = ::caps::read(None, CapSet::Permitted).map_err(|e| err("read permitted", e))?;
    let want: CapsHashSet = set.iter().copied().filter(|c| have.contains(c)).collect();
    ::caps::clear(None, CapSet::Ambient).map_err(|e| err("clear ambient", e))?;
    ::caps::clear(None, CapSet::Inheritable).map_err(|e| err("clear inheritable", e))?;
    // Effective first: it must stay a subset of permitted at every step.
    ::caps::set(None, CapSet::Effective, &want).map_err(|e| err("set effective", e))?;
    ::caps::set(None, CapSet::Permitted, &want).map_err(|e| err("set permitted", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CAPS;

    #[test]
    fn default_mask_is_dockers() {
        let set: ::caps::CapsHashSet = DEFAULT_CAPS.into_iter().collect();
        // Docker's default CapBnd: 00000000a80425fb.
        assert_eq!(mask(&set), 0xa80425fb);
        assert!(last_cap() >= 37);
    }
}

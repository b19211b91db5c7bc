//! A user namespace of the container's own (linux.uidMappings/gidMappings), runc's way:
//! `create` writes the maps of the cloned process before it goes on, directly where it
//! may (root, or an unprivileged caller mapping only its own ids, with setgroups denied),
//! through newuidmap/newgidmap otherwise; the process then becomes root of its
//! namespace before it mounts anything.

use oci_spec::runtime::{Linux, LinuxIdMapping};

use super::OciError;
use crate::namespaces::idmap::{self, IdMaps, Range};

fn ranges(list: &[LinuxIdMapping]) -> Vec<Range> {
    list.iter()
        .map(|m| Range {
            inside: m.container_id(),
            outside: m.host_id(),
            count: m.size(),
        })
        .collect()
}

/// The maps a config asks for, and how `create` (running as `euid`/`egid`) writes them.
pub fn maps_of(linux: &Linux, euid: u32, egid: u32) -> Result<IdMaps, OciError> {
    let uid = ranges(linux.uid_mappings().as_deref().unwrap_or_default());
    let gid = ranges(linux.gid_mappings().as_deref().unwrap_or_default());
    if uid.is_empty() || gid.is_empty() {
        return Err(OciError::Config(
            "a new user namespace needs linux.uidMappings and linux.gidMappings".into(),
        ));
    }
    for r in uid.iter().chain(&gid) {
        if r.count == 0 || r.inside.checked_add(r.count - 1).is_none() {
            return Err(OciError::Config(format!(
                "bad id mapping {} {} {}",
                r.inside, r.outside, r.count
            )));
        }
    }
    let only_own = |v: &[Range], id: u32| matches!(v, [r] if r.outside == id && r.count == 1);
    let helpers = euid != 0 && !(only_own(&uid, euid) && only_own(&gid, egid));
    if helpers
        && (idmap::find_helper("newuidmap").is_none() || idmap::find_helper("newgidmap").is_none())
    {
        return Err(OciError::Config(
            "mapping ids other than your own needs newuidmap and newgidmap (package uidmap) \
             and ranges in /etc/subuid and /etc/subgid"
                .into(),
        ));
    }
    Ok(IdMaps { uid, gid, helpers })
}

/// Whether setgroups(2) is denied in our user namespace (an unprivileged caller wrote
/// the gid map directly).
pub fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// In the child once its maps are written: become root of the namespace (our own uid is
/// unmapped when root maps the container onto other ids), so what the setup creates
/// belongs to the container's root. Raw calls: we run between clone and exec.
pub fn become_root() -> Result<(), String> {
    // SAFETY: plain credential calls; each result is checked.
    unsafe {
        if !setgroups_denied() && libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(format!(
                "setgid 0 in the user namespace (is gid 0 mapped?): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(format!(
                "setuid 0 in the user namespace (is uid 0 mapped?): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(u: serde_json::Value, g: serde_json::Value) -> Linux {
        serde_json::from_value(serde_json::json!({"uidMappings": u, "gidMappings": g})).unwrap()
    }

    fn m(c: u32, h: u32, s: u32) -> serde_json::Value {
        serde_json::json!({"containerID": c, "hostID": h, "size": s})
    }

    #[test]
    fn root_writes_directly_an_unprivileged_caller_only_its_own_ids() {
        let l = linux(
            serde_json::json!([m(0, 100000, 65536)]),
            serde_json::json!([m(0, 100000, 65536)]),
        );
        let maps = maps_of(&l, 0, 0).unwrap();
        assert!(!maps.helpers);
        assert_eq!(idmap::render(&maps.uid), "0 100000 65536\n");
        let own = linux(
            serde_json::json!([m(0, 1000, 1)]),
            serde_json::json!([m(0, 1000, 1)]),
        );
        assert!(!maps_of(&own, 1000, 1000).unwrap().helpers);
        // Someone else's id: only the setuid helpers may map it.
        let other = linux(
            serde_json::json!([m(0, 1000, 1), m(1, 100000, 10)]),
            serde_json::json!([m(0, 1000, 1)]),
        );
        if idmap::find_helper("newuidmap").is_some() && idmap::find_helper("newgidmap").is_some() {
            assert!(maps_of(&other, 1000, 1000).unwrap().helpers);
        }
    }

    #[test]
    fn missing_or_empty_maps_are_refused() {
        let l = linux(serde_json::json!([]), serde_json::json!([m(0, 0, 1)]));
        assert!(maps_of(&l, 0, 0).is_err());
        let l = linux(
            serde_json::json!([m(0, 0, 0)]),
            serde_json::json!([m(0, 0, 1)]),
        );
        assert!(maps_of(&l, 0, 0).is_err());
    }
}

//! Namespaces in OCI mode: user namespaces (linux.uidMappings/gidMappings written by
//! `create` as root, so the container's root is another host id; the whole lifecycle as
//! an unprivileged user with `spec --rootless`, runc's rootless mode, exec included), and
//! joining another container's pid namespace by path.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::json;

use crate::oci::{pid_of, Oci};
use crate::util::*;

/// A script that records what the container sees, then waits to be exec'd into.
const SEE: &str = "id -u > /tmp/uid; cat /proc/self/uid_map > /tmp/map; \
                   cat /proc/self/oom_score_adj > /tmp/oom; \
                   touch /tmp/made; echo up > /tmp/up; exec sleep 60";

/// `exec ID sh -c SCRIPT` output, asserting exit code `want`.
#[track_caller]
fn exec(o: &Oci, script: &str, want: i32) -> String {
    let out = o.run(&["exec", &o.id, "sh", "-c", script]);
    assert_eq!(out.code(), Some(want), "{out}");
    out.stdout
}

fn first_map_line(text: &str) -> Vec<String> {
    text.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn a_user_namespace_maps_the_container_root_onto_another_host_id() {
    let Some(o) = Oci::new("userns") else { return };
    o.script(SEE);
    o.config(|v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        // Written by the process after its credentials changed.
        v["process"]["oomScoreAdj"] = json!(100);
    });
    // As with runc, the rootfs must belong to the mapped root to be writable.
    chown_tree(&o.rootfs, 100000, 100000);
    assert!(o.create().success());
    assert!(o.run(&["start", &o.id]).success());
    assert!(wait_until(Duration::from_secs(10), || o.read("tmp/up") == "up\n"));
    assert_eq!(o.read("tmp/uid").trim(), "0");
    assert_eq!(first_map_line(&o.read("tmp/map")), ["0", "100000", "65536"]);
    assert_eq!(o.read("tmp/oom").trim(), "100");
    let made = fs::metadata(o.rootfs.join("tmp/made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (100000, 100000));
    // exec joins the user namespace too.
    let seen = exec(&o, "id -u; cat /proc/self/uid_map; exit 3", 3);
    assert_eq!(seen.lines().next(), Some("0"), "{seen}");
    assert_eq!(
        first_map_line(seen.lines().nth(1).unwrap_or("")),
        ["0", "100000", "65536"]
    );
    assert!(o.run(&["kill", &o.id, "KILL"]).success());
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert!(o.run(&["delete", &o.id]).success());
    o.assert_gone();
}

#[test]
fn rootless_create_start_exec_kill_delete() {
    let Some(o) = Oci::rootless("rootless") else {
        return;
    };
    let (uid, _) = user_ids(TEST_USER).unwrap();
    o.script(SEE);
    let out = o.create();
    assert!(out.success(), "{out}");
    let st = o.state();
    assert_eq!(st["status"], "created");
    let pid = pid_of(&st);
    let host_uid = fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_eq!(
        host_uid, uid,
        "the container runs as the caller on the host"
    );
    assert!(o.run(&["start", &o.id]).success());
    assert!(wait_until(Duration::from_secs(10), || o.read("tmp/up") == "up\n"));
    assert_eq!(o.status(), "running");
    assert_eq!(o.read("tmp/uid").trim(), "0", "root in the container");
    assert_eq!(
        first_map_line(&o.read("tmp/map")),
        ["0".to_string(), uid.to_string(), "1".to_string()]
    );
    let made = fs::metadata(o.rootfs.join("tmp/made")).unwrap();
    assert_eq!(made.uid(), uid, "files it makes are the caller's");
    let seen = exec(&o, "id -u; hostname; exit 4", 4);
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["0", "unionrun"],
        "{seen}"
    );
    // KILL: sleep as PID 1 of its namespace has no SIGTERM handler (as with runc).
    assert!(o.run(&["kill", &o.id, "KILL"]).success());
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert!(o.run(&["delete", &o.id]).success());
    assert!(!o.state.join(&o.id).exists(), "the state directory is left");
    let gone = wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(
        gone,
        "the container's process is gone: {}",
        fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
    );
}

#[test]
fn rootless_bad_id_mappings_are_refused_in_one_line() {
    let Some(o) = Oci::rootless("rootless-bad") else {
        return;
    };
    o.script("true");
    // Someone else's uid, and an empty gid map.
    o.config(|v| {
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 1}]);
        v["linux"]["gidMappings"] = json!([]);
    });
    let out = o.create();
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    assert!(out.stderr.contains("gidMappings"), "{out}");
    assert!(!o.state.join(&o.id).exists(), "nothing left");
}

#[test]
fn a_pid_namespace_is_joined_by_path() {
    let Some(a) = Oci::new("pidns-a") else { return };
    let Some(b) = Oci::new("pidns-b") else { return };
    a.script("exec sleep 60");
    assert!(a.create().success());
    assert!(a.run(&["start", &a.id]).success());
    let a_pid = pid_of(&a.state());
    b.script("cat /proc/1/cmdline > /tmp/one; echo $$ > /tmp/me");
    let ns = format!("/proc/{a_pid}/ns/pid");
    b.config(|v| {
        for n in v["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "pid" {
                n["path"] = json!(ns);
            }
        }
    });
    let out = b.create();
    assert!(out.success(), "{out}");
    let b_pid = pid_of(&b.state());
    let ns_of = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(
        ns_of(b_pid),
        ns_of(a_pid),
        "b was born in a's pid namespace"
    );
    assert_ne!(
        fs::read_link("/proc/self/ns/pid").unwrap(),
        ns_of(a_pid),
        "not we"
    );
    assert!(b.run(&["start", &b.id]).success());
    assert!(wait_until(Duration::from_secs(10), || b.status() == "stopped"));
    assert_eq!(
        b.read("tmp/one"),
        "sleep\u{0}60\u{0}",
        "PID 1 there is a's process"
    );
    let me: i32 = b.read("tmp/me").trim().parse().unwrap();
    assert!(me > 1, "b is not PID 1 in a's namespace: {me}");
    assert!(b.run(&["delete", &b.id]).success());
    assert!(a.run(&["delete", "--force", &a.id]).success());
    b.assert_gone();
    a.assert_gone();
}

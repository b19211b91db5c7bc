//! The container's steps in order, against the recording fake.

use super::*;
use crate::cli::{Args, Command};
use crate::rootfs::{PlanContext, RootSource};
use crate::sys::Recorder;
use clap::Parser;

fn spec(extra: &[&str]) -> Spec {
    let mut v = vec!["unionrun", "run", "--lower", "/tmp"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--", "sh", "-c", "true"]);
    match Args::try_parse_from(v).unwrap().command {
        Command::Run(r) => r.into_spec(Some("/tmp/x".into()), 0).unwrap(),
        _ => unreachable!(),
    }
}

fn plan(s: &Spec) -> ChildPlan {
    ChildPlan {
        root: "/r".into(),
        plan: MountPlan::build(
            s,
            &PlanContext {
                userns: false,
                source: RootSource::Union,
            },
        ),
        seccomp: crate::security::seccomp::default_programs().unwrap(),
        argv: vec![],
        env: vec![],
        path: "/nonexistent-dir".into(),
        setgroups: true,
    }
}

#[test]
fn setup_order() {
    let s = spec(&["--hostname", "box", "--workdir", "/"]);
    let rec = Recorder::default();
    setup(&s, &plan(&s), &rec).unwrap();
    let cg = rec.index("unshare CloneFlags(CLONE_NEWCGROUP)");
    let lo = rec.index("loopback_up");
    let mnt = rec.index("mount proc");
    let pivot = rec.index("pivot_root");
    let host = rec.index("sethostname box");
    assert!(cg < lo && lo < mnt && mnt < pivot && pivot < host);
}

#[test]
fn host_network_keeps_lo_alone() {
    let s = spec(&["--net", "host"]);
    let rec = Recorder::default();
    setup(&s, &plan(&s), &rec).unwrap();
    assert!(!rec.lines().iter().any(|l| l.contains("loopback")));
}

/// Privileges are cut before the lookup; the lookup fails here (no such PATH), so the
/// failure is 127 and neither seccomp nor exec is reached.
#[test]
fn finalize_order_and_not_found() {
    let s = spec(&["--user", "1000:1000"]);
    let rec = Recorder::default();
    let (code, msg) = finalize(&s, &plan(&s), &rec);
    assert_eq!(code, EXIT_NOT_FOUND, "{msg}");
    assert!(msg.contains("sh"), "{msg}");
    let b = rec.index("drop_bounding");
    let ids = rec.index("set_ids 1000:1000 setgroups=true");
    let nnp = rec.index("no_new_privs");
    assert!(b < ids && ids < nnp);
    assert!(
        !rec.lines().iter().any(|l| l.contains("set_caps")),
        "uid 1000 gets no caps"
    );
    assert!(!rec.lines().iter().any(|l| l.contains("seccomp")));
}

/// Caps, no_new_privs, close-on-exec, then seccomp: failing the seccomp step (the fake
/// cannot exec) shows everything that ran before it.
#[test]
fn seccomp_comes_last_before_exec() {
    let s = spec(&[]);
    let mut p = plan(&s);
    p.path = "/bin:/usr/bin".into();
    let failing = Recorder {
        fail_on: Some("seccomp".into()),
        ..Default::default()
    };
    let (code, _) = finalize(&s, &p, &failing);
    assert_eq!(code, EXIT_RUNNER);
    let caps = failing.index("set_caps");
    let nnp = failing.index("no_new_privs");
    let cloexec = failing.index("cloexec_from 3");
    let sec = failing.index("seccomp unknown-syscalls");
    assert!(
        caps < nnp && nnp < cloexec && cloexec < sec,
        "{:?}",
        failing.lines()
    );
}

#[test]
fn resolve_and_failure_lines() {
    assert!(resolve("sh", "/bin:/usr/bin").is_ok());
    assert_eq!(
        resolve("no-such-cmd-x", "/bin").unwrap_err().0,
        EXIT_NOT_FOUND
    );
    assert_eq!(resolve("/etc/passwd", "").unwrap_err().0, EXIT_CANNOT_EXEC);
    assert_eq!(
        parse_failure("127\tnot found\n"),
        Some((127, "not found".into()))
    );
    assert_eq!(parse_failure(""), None);
}

#[test]
fn environment_is_clean_with_overrides() {
    let s = spec(&["-e", "PATH=/x", "-e", "A=1"]);
    let env = environment(&s);
    assert!(env.contains(&("PATH".into(), "/x".into())));
    assert!(env.contains(&("A".into(), "1".into())));
    assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    assert!(!env.iter().any(|(k, _)| k == "USER" || k == "SSH_AUTH_SOCK"));
}

//! config.json's `linux.seccomp` (libseccomp's profile format, as podman and Docker send
//! it) compiled to BPF with `seccompiler`.
//!
//! seccompiler builds filters with one action for every match and one for a mismatch;
//! a profile has a default action and rules with actions of their own. So a profile
//! becomes a stack of filters, which the kernel evaluates all, taking the most severe
//! answer (KILL > TRAP > ERRNO > TRACE > LOG > ALLOW):
//! - the first allows every listed syscall (under its argument conditions), anything
//!   else gets the default action;
//! - one more per other action (and errno) returns that action for its syscalls and
//!   allows the rest.
//!
//! Syscall names this architecture does not have are skipped (profiles list several
//! architectures' calls), as libseccomp does. Filters are built for the native
//! architecture only: calls through another ABI (i386, x32) are refused.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use serde_json::{json, Value};

use super::OciError;

fn bad(msg: impl Into<String>) -> OciError {
    OciError::Config(format!("linux.seccomp: {}", msg.into()))
}

#[cfg(target_arch = "x86_64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;

/// seccompiler's JSON for an action.
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<Value, OciError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({"errno": errno.unwrap_or(libc::EPERM as u32)}),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => json!({"trace": errno.unwrap_or(libc::EPERM as u32)}),
        other => return Err(bad(format!("action {other:?} is not supported"))),
    })
}

/// Whether this architecture has a syscall of that name (seccompiler's table decides).
fn known(name: &str) -> bool {
    let probe = json!({"p": {"mismatch_action": "allow", "match_action": "trap",
                             "filter": [{"syscall": name}]}});
    seccompiler::compile_from_json(probe.to_string().as_bytes(), ARCH).is_ok()
}

fn rule(name: &str, args: &[oci_spec::runtime::LinuxSeccompArg]) -> Result<Value, OciError> {
    let mut conds = Vec::new();
    for a in args {
        let op = match a.op() {
            LinuxSeccompOperator::ScmpCmpNe => json!("ne"),
            LinuxSeccompOperator::ScmpCmpLt => json!("lt"),
            LinuxSeccompOperator::ScmpCmpLe => json!("le"),
            LinuxSeccompOperator::ScmpCmpEq => json!("eq"),
            LinuxSeccompOperator::ScmpCmpGe => json!("ge"),
            LinuxSeccompOperator::ScmpCmpGt => json!("gt"),
            LinuxSeccompOperator::ScmpCmpMaskedEq => json!({"masked_eq": a.value()}),
        };
        let val = match a.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
            _ => a.value(),
        };
        if a.index() > 5 {
            return Err(bad(format!(
                "{name}: argument index {} is above 5",
                a.index()
            )));
        }
        conds.push(json!({"index": a.index(), "type": "qword", "op": op, "val": val}));
    }
    Ok(if conds.is_empty() {
        json!({"syscall": name})
    } else {
        json!({"syscall": name, "args": conds})
    })
}

/// The profile's programs, in installation order.
pub fn programs(p: &LinuxSeccomp) -> Result<Vec<seccompiler::BpfProgram>, OciError> {
    let default = p.default_action();
    let default_errno = p.default_errno_ret();
    let mut allow_rules: Vec<Value> = Vec::new();
    // (action JSON, rules) for each other action.
    let mut groups: Vec<(Value, Vec<Value>)> = Vec::new();
    let mut cache = std::collections::HashMap::new();
    for s in p.syscalls().iter().flatten() {
        let act = s.action();
        let errno = s.errno_ret();
        if act == default && errno.or(default_errno) == default_errno {
            continue;
        }
        let args = s.args().clone().unwrap_or_default();
        for name in s.names() {
            if !*cache.entry(name.clone()).or_insert_with(|| known(name)) {
                continue;
            }
            let r = rule(name, &args)?;
            allow_rules.push(r.clone());
            if act != LinuxSeccompAction::ScmpActAllow {
                let a = action(act, errno)?;
                match groups.iter_mut().find(|(g, _)| *g == a) {
                    Some((_, rules)) => rules.push(r),
                    None => groups.push((a, vec![r])),
                }
            }
        }
    }
    let mut filters = Vec::new();
    let default_action = action(default, default_errno)?;
    if default_action != json!("allow") {
        filters.push(
            json!({"mismatch_action": default_action, "match_action": "allow",
                            "filter": dedup(allow_rules)}),
        );
    }
    for (a, rules) in groups {
        filters
            .push(json!({"mismatch_action": "allow", "match_action": a, "filter": dedup(rules)}));
    }
    let mut out = Vec::new();
    for (i, f) in filters.into_iter().enumerate() {
        let doc = json!({ format!("f{i}"): f });
        let mut map = seccompiler::compile_from_json(doc.to_string().as_bytes(), ARCH)
            .map_err(|e| bad(e.to_string()))?;
        if let Some(prog) = map.remove(&format!("f{i}")) {
            out.push(prog);
        }
    }
    Ok(out)
}

/// One entry per syscall: an unconditional rule covers every conditional one, and
/// seccompiler refuses a syscall listed twice, so conditional ones are merged under one.
fn dedup(rules: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for r in rules {
        let name = r["syscall"].clone();
        match out.iter_mut().find(|o| o["syscall"] == name) {
            None => out.push(r),
            Some(o) if o.get("args").is_none() => {}
            Some(o) if r.get("args").is_none() => *o = r,
            // Two conditional rules for one call: keep the looser (unconditional) one
            // would allow too much; keep both is refused; keep the first.
            Some(_) => {}
        }
    }
    out
}

/// Installs the programs (the last filter installed is evaluated first; all are).
pub fn install(progs: &[seccompiler::BpfProgram]) -> Result<(), String> {
    for p in progs {
        seccompiler::apply_filter(p).map_err(|e| format!("install the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_podman_like_profile_compiles_and_skips_unknown_names() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write", "exit_group", "s390_runtime_instr"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mount", "umount2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"}
            ]
        }));
        let progs = programs(&p).unwrap();
        assert_eq!(progs.len(), 3, "default, errno 1, kill");
        let p = profile(json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        assert!(programs(&p)
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        let p = profile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}));
        assert_eq!(programs(&p).unwrap().len(), 1);
    }
}

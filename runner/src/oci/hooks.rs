//! The hooks of config.json: which run when, each with the state JSON on stdin.

use std::time::{Duration, Instant};

use super::lifecycle::state_json;
use super::store::{Saved, Store};
use super::OciError;

/// Which hooks.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// prestart + createRuntime: after the namespaces exist, before the setup goes on.
    CreateRuntime,
    /// After start.
    Poststart,
    /// After delete.
    Poststop,
}

/// Runs hooks with the state on stdin; one failing fails the step (poststop: reported).
pub fn run_hooks(saved: &Saved, store: &Store, which: Hook) -> Result<(), OciError> {
    let Some(h) = &saved.hooks else { return Ok(()) };
    #[allow(deprecated)]
    let list: Vec<oci_spec::runtime::Hook> = match which {
        Hook::CreateRuntime => h
            .prestart()
            .iter()
            .flatten()
            .chain(h.create_runtime().iter().flatten())
            .cloned()
            .collect(),
        Hook::Poststart => h.poststart().clone().unwrap_or_default(),
        Hook::Poststop => h.poststop().clone().unwrap_or_default(),
    };
    let state = state_json(store, saved).to_string();
    for hook in list {
        run_hook(&hook, &state).map_err(|e| {
            OciError::Container(format!("{which:?} hook {}: {e}", hook.path().display()))
        })?;
    }
    Ok(())
}

/// Runs one hook: args[0] as argv0, env exactly as given, the state on stdin.
pub fn run_hook(hook: &oci_spec::runtime::Hook, state: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = std::process::Command::new(hook.path());
    if let Some((a0, rest)) = args.split_first() {
        cmd.arg0(a0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(state.as_bytes());
    }
    let limit = hook
        .timeout()
        .filter(|&t| t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let t = Instant::now();
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(st) if st.success() => return Ok(()),
            Some(st) => return Err(format!("exited with {st}")),
            None if limit.is_some_and(|l| t.elapsed() > l) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out".into());
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

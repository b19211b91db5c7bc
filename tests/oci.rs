//! `unionrun` as an OCI runtime, straight against its command line as an engine calls it
//! (create, state, start, kill, delete, exec, spec, features), on a busybox bundle: the
//! lifecycle and its states, the config.json parts (resources, hooks, a pty through a
//! console socket), and bad input (one line, exit 1, nothing left).
//!
//! Every test has its own state root (`--root`) and bundle in a TempTree, and a guard that
//! runs `delete --force` even when it panics; it ends by checking that the state and the
//! container's cgroups are gone. Needs root and busybox.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

/// A bundle and a state root; deletes its container on drop.
pub(crate) struct Oci {
    pub(crate) t: TempTree,
    pub(crate) bundle: PathBuf,
    pub(crate) rootfs: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) id: String,
    /// Run every command as this user (a copy of unionrun in the tree), else as root.
    user: Option<(&'static str, PathBuf)>,
}

impl Oci {
    pub(crate) fn new(name: &str) -> Option<Oci> {
        if !require_root() {
            return None;
        }
        let o = Oci::make(name, None)?;
        let out = o.run(&["spec", "--bundle", o.bundle.to_str().unwrap()]);
        assert!(out.success(), "{out}");
        Some(o)
    }

    /// As the unprivileged test user, with `spec --rootless` (its own ids mapped to root).
    pub(crate) fn rootless(name: &str) -> Option<Oci> {
        let (uid, gid) = require_test_user()?;
        let o = Oci::make(name, Some(TEST_USER))?;
        o.t.give_to(uid, gid);
        let out = o.run(&["spec", "--rootless", "--bundle", o.bundle.to_str().unwrap()]);
        assert!(out.success(), "{out}");
        Some(o)
    }

    fn make(name: &str, user: Option<&'static str>) -> Option<Oci> {
        let t = TempTree::new();
        let bundle = t.mkdir("bundle");
        let rootfs = busybox_rootfs(&t, "bundle/rootfs")?;
        let state = t.mkdir("state");
        let user = user.map(|u| {
            let bin = t.mkdir("bin").join("unionrun");
            fs::copy(unionrun_bin(), &bin).expect("copy unionrun");
            (u, bin)
        });
        Some(Oci {
            id: format!("oci-{name}-{}", std::process::id()),
            t,
            bundle,
            rootfs,
            state,
            user,
        })
    }

    /// `unionrun --root STATE ARGS`.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match &self.user {
            Some((u, bin)) => as_user(u, bin),
            None => Command::new(unionrun_bin()),
        };
        c.arg("--root").arg(&self.state).args(args);
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Outcome {
        run_timeout(&mut self.cmd(args), Duration::from_secs(60))
    }

    /// Edits config.json.
    pub(crate) fn config(&self, edit: impl FnOnce(&mut Value)) {
        let p = self.bundle.join("config.json");
        let mut v: Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        edit(&mut v);
        fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }

    /// The process: `sh -c SCRIPT`, no terminal.
    pub(crate) fn script(&self, script: &str) {
        self.config(|v| {
            v["process"]["terminal"] = json!(false);
            v["process"]["args"] = json!(["sh", "-c", script]);
            v["root"]["readonly"] = json!(false);
        });
    }

    pub(crate) fn create(&self) -> Outcome {
        let pid_file = self.t.join("pid");
        self.run(&[
            "create",
            "--bundle",
            self.bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &self.id,
        ])
    }

    pub(crate) fn state(&self) -> Value {
        let out = self.run(&["state", &self.id]);
        assert!(out.success(), "{out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("state JSON: {e}\n{out}"))
    }

    pub(crate) fn status(&self) -> String {
        self.state()["status"].as_str().unwrap_or("").to_string()
    }

    /// A file the container wrote in its rootfs.
    pub(crate) fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.rootfs.join(rel)).unwrap_or_default()
    }

    pub(crate) fn assert_gone(&self) {
        assert!(
            !self.state.join(&self.id).exists(),
            "the state directory is left"
        );
        assert!(
            cgroup_leaves(&self.id).is_empty(),
            "cgroups left: {:?}",
            cgroup_leaves(&self.id)
        );
    }
}

impl Drop for Oci {
    fn drop(&mut self) {
        let _ = run_timeout(
            &mut self.cmd(&["delete", "--force", &self.id]),
            Duration::from_secs(30),
        );
    }
}

/// The container's cgroup leaves (`unionrun/<id>` in any hierarchy).
pub(crate) fn cgroup_leaves(id: &str) -> Vec<PathBuf> {
    let out = Command::new("find")
        .args([
            "/sys/fs/cgroup",
            "-maxdepth",
            "6",
            "-type",
            "d",
            "-name",
            id,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.parent().is_some_and(|q| q.ends_with("unionrun")))
        .collect()
}

pub(crate) fn pid_of(v: &Value) -> i32 {
    v["pid"].as_i64().unwrap_or(0) as i32
}

#[test]
fn lifecycle_created_running_stopped_deleted() {
    let Some(o) = Oci::new("life") else { return };
    o.script("echo $$ > /tmp/pid1; hostname > /tmp/host; trap 'echo term > /tmp/sig; exit 3' TERM; while :; do sleep 0.05; done");
    let out = o.create();
    assert!(out.success(), "{out}");
    let st = o.state();
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], o.id.as_str());
    assert_eq!(
        st["bundle"],
        o.bundle.canonicalize().unwrap().to_str().unwrap()
    );
    let pid = pid_of(&st);
    assert_eq!(
        fs::read_to_string(o.t.join("pid")).unwrap().trim(),
        pid.to_string(),
        "the pid file names the container's process"
    );
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(o.read("tmp/pid1"), "", "nothing runs before start");
    let again = o.create();
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(again.stderr.contains("already exists"), "{again}");

    let out = o.run(&["start", &o.id]);
    assert!(out.success(), "{out}");
    assert!(wait_until(Duration::from_secs(10), || !o
        .read("tmp/host")
        .is_empty()));
    assert_eq!(
        o.read("tmp/pid1").trim(),
        "1",
        "the process is PID 1 of its namespace"
    );
    assert_eq!(
        o.read("tmp/host").trim(),
        "unionrun",
        "hostname from config.json"
    );
    assert_eq!(o.status(), "running");
    let out = o.run(&["start", &o.id]);
    assert_eq!(out.code(), Some(1), "a second start is refused: {out}");
    let out = o.run(&["delete", &o.id]);
    assert_eq!(
        out.code(),
        Some(1),
        "a running container is not deleted: {out}"
    );
    assert!(out.stderr.contains("running"), "{out}");

    let out = o.run(&["kill", &o.id, "TERM"]);
    assert!(out.success(), "{out}");
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert_eq!(o.read("tmp/sig").trim(), "term", "TERM reached the process");
    assert_eq!(pid_of(&o.state()), 0);
    let out = o.run(&["kill", &o.id, "KILL"]);
    assert_eq!(
        out.code(),
        Some(1),
        "a stopped container cannot be killed: {out}"
    );

    let out = o.run(&["delete", &o.id]);
    assert!(out.success(), "{out}");
    o.assert_gone();
    let out = o.run(&["state", &o.id]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("does not exist"), "{out}");
    assert!(o.run(&["delete", "--force", &o.id]).success());
}

#[test]
fn exec_joins_the_container_and_returns_the_exit_code() {
    let Some(o) = Oci::new("exec") else { return };
    o.script("touch /tmp/up; while :; do sleep 0.05; done");
    assert!(o.create().success());
    assert!(o.run(&["start", &o.id]).success());
    assert!(wait_until(Duration::from_secs(10), || o
        .rootfs
        .join("tmp/up")
        .exists()));
    let out = o.run(&[
        "exec",
        &o.id,
        "sh",
        "-c",
        "echo host=$(hostname) pid=$$; ls /tmp; exit 7",
    ]);
    assert_eq!(out.code(), Some(7), "{out}");
    assert!(out.stdout.contains("host=unionrun"), "{out}");
    assert!(
        out.stdout.contains("up"),
        "the container's filesystem: {out}"
    );
    let pid: i32 = out
        .stdout
        .split("pid=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        pid > 1 && pid < 100,
        "a pid of the container's namespace: {out}"
    );
    // --process with a process.json and --detach, as conmon runs it.
    let pj = o.t.write(
        "process.json",
        json!({"args": ["sh", "-c", "echo detached > /tmp/d"], "cwd": "/tmp",
               "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]})
        .to_string(),
    );
    let pidf = o.t.join("exec.pid");
    let out = o.run(&[
        "exec",
        "--process",
        pj.to_str().unwrap(),
        "--detach",
        "--pid-file",
        pidf.to_str().unwrap(),
        &o.id,
    ]);
    assert!(out.success(), "{out}");
    assert!(fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse::<i32>()
        .is_ok());
    assert!(wait_until(Duration::from_secs(10), || o.read("tmp/d") == "detached\n"));
    // runc's exit code and words, which podman turns into its 127.
    let out = o.run(&["exec", &o.id, "no-such-command"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("executable file not found"), "{out}");
    assert!(o.run(&["kill", &o.id, "KILL"]).success());
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert!(o.run(&["delete", &o.id]).success());
    o.assert_gone();
}

/// The memory and pids limits the container's cgroup holds (v1 or v2 names).
pub(crate) fn cgroup_limits(pid: i32) -> (String, String) {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut mem = String::new();
    let mut pids = String::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == "memory") {
            mem = fs::read_to_string(
                Path::new("/sys/fs/cgroup/memory")
                    .join(rel)
                    .join("memory.limit_in_bytes"),
            )
            .unwrap_or_default();
        }
        if ctrls.split(',').any(|c| c == "pids") {
            pids = fs::read_to_string(Path::new("/sys/fs/cgroup/pids").join(rel).join("pids.max"))
                .unwrap_or_default();
        }
        if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let d = Path::new("/sys/fs/cgroup").join(rel);
            mem = fs::read_to_string(d.join("memory.max")).unwrap_or_default();
            pids = fs::read_to_string(d.join("pids.max")).unwrap_or_default();
        }
    }
    (mem.trim().to_string(), pids.trim().to_string())
}

#[test]
fn resources_limit_the_container_and_go_with_it() {
    let Some(o) = Oci::new("res") else { return };
    o.script("sleep 30");
    o.config(|v| {
        v["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "pids": {"limit": 20}});
    });
    let out = o.create();
    assert!(out.success(), "{out}");
    let pid = pid_of(&o.state());
    assert_eq!(cgroup_limits(pid), ("67108864".into(), "20".into()));
    assert!(!cgroup_leaves(&o.id).is_empty());
    // A created container is deleted without --force (runc does so too).
    let out = o.run(&["delete", &o.id]);
    assert!(out.success(), "{out}");
    o.assert_gone();

    // linux.cgroupsPath: made with its missing ancestors, and all of it goes.
    let top = format!("unionrun-test-{}", std::process::id());
    o.config(|v| v["linux"]["cgroupsPath"] = json!(format!("/{top}/ctr")));
    let out = o.create();
    assert!(out.success(), "{out}");
    let pid = pid_of(&o.state());
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(&format!("/{top}/ctr")), "{cg}");
    assert_eq!(cgroup_limits(pid), ("67108864".into(), "20".into()));
    assert!(o.run(&["delete", "--force", &o.id]).success());
    let left = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "3", "-name", &top])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    o.assert_gone();
}

#[test]
fn hooks_get_the_state_on_stdin() {
    let Some(o) = Oci::new("hooks") else { return };
    o.script("true");
    let dir = o.t.mkdir("hooks");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}", dir.display())]});
    o.config(|v| {
        v["hooks"] = json!({
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            // Run in the container, after start: its paths.
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/startContainer"]}],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
    });
    assert!(o.create().success());
    let created: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("createRuntime")).unwrap()).unwrap();
    assert_eq!(created["id"], o.id.as_str());
    assert!(pid_of(&created) > 0, "{created}");
    let in_ns: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("createContainer")).unwrap()).unwrap();
    assert_eq!(
        in_ns["pid"], created["pid"],
        "createContainer ran, with the state"
    );
    assert!(!dir.join("poststart").exists());
    assert!(
        !o.rootfs.join("tmp/startContainer").exists(),
        "not before start"
    );
    assert!(o.run(&["start", &o.id]).success());
    assert!(dir.join("poststart").exists());
    assert!(wait_until(Duration::from_secs(10), || o
        .read("tmp/startContainer")
        .contains(&o.id)));
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert!(o.run(&["delete", &o.id]).success());
    let stopped: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("poststop")).unwrap()).unwrap();
    assert_eq!(stopped["status"], "stopped");
    o.assert_gone();

    // A failing createRuntime hook fails create, and nothing is left.
    o.config(|v| {
        v["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    });
    let out = o.create();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("hook"), "{out}");
    o.assert_gone();
}

/// Receives one fd over a unix socket (what conmon does with the console socket).
fn recv_fd(sock: &std::os::unix::net::UnixStream) -> Option<OwnedFd> {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: a fresh fd the kernel gave us.
            return fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

#[test]
fn a_terminal_goes_to_the_console_socket() {
    let Some(o) = Oci::new("tty") else { return };
    o.config(|v| {
        v["process"]["terminal"] = json!(true);
        v["process"]["args"] = json!([
            "sh",
            "-c",
            "tty; test -t 0 && echo stdin-is-a-tty; sleep 0.2"
        ]);
    });
    let sock_path = o.t.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let out = o.run(&[
        "create",
        "--bundle",
        o.bundle.to_str().unwrap(),
        "--console-socket",
        sock_path.to_str().unwrap(),
        &o.id,
    ]);
    assert!(out.success(), "{out}");
    listener.set_nonblocking(true).unwrap();
    let (conn, _) = listener
        .accept()
        .expect("create connected to the console socket");
    conn.set_nonblocking(false).unwrap();
    let master = recv_fd(&conn).expect("the pty master arrived");
    assert!(o.run(&["start", &o.id]).success());
    let mut got = Vec::new();
    let mut f = fs::File::from(master);
    let mut buf = [0u8; 256];
    while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains("stdin-is-a-tty") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("stdin-is-a-tty"), "{text}");
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert!(o.run(&["delete", &o.id]).success());
    o.assert_gone();

    // Without a console socket a terminal is refused up front.
    let out = o.create();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("--console-socket"), "{out}");
    o.assert_gone();
}

#[test]
fn bad_input_is_one_line_exit_1_and_leaves_nothing() {
    let Some(o) = Oci::new("bad") else { return };
    let check = |out: &Outcome, needle: &str| {
        assert_eq!(out.code(), Some(1), "{out}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
        assert!(out.stderr.contains(needle), "{needle}: {out}");
        o.assert_gone();
    };
    let missing = o.t.join("nope");
    check(
        &o.run(&["create", "--bundle", missing.to_str().unwrap(), &o.id]),
        "bundle",
    );
    fs::write(o.bundle.join("config.json"), "{\"ociVersion\": ").unwrap();
    check(
        &o.run(&["create", "--bundle", o.bundle.to_str().unwrap(), &o.id]),
        "not a valid OCI config",
    );
    fs::remove_file(o.bundle.join("config.json")).unwrap();
    assert!(o
        .run(&["spec", "--bundle", o.bundle.to_str().unwrap()])
        .success());
    check(
        &o.run(&["spec", "--bundle", o.bundle.to_str().unwrap()]),
        "already exists",
    );
    o.config(|v| v["process"]["args"] = json!(["/no/such/binary"]));
    o.config(|v| v["process"]["terminal"] = json!(false));
    // A missing command is found at start, as with runc: create succeeds.
    assert!(o.create().success());
    o.run(&["delete", "--force", &o.id]).ok();
    o.assert_gone();
    o.config(|v| v["root"]["path"] = json!("missing-rootfs"));
    check(&o.create(), "root.path");
    check(&o.run(&["start", "no-such-container"]), "does not exist");
    check(&o.run(&["kill", "no-such-container"]), "does not exist");
    check(
        &o.run(&["create", "--bundle", ".", "../escape"]),
        "invalid container id",
    );
    check(&o.run(&["pause", &o.id]), "not supported");
    // A log file gets the error too, as JSON for conmon.
    let log = o.t.join("log.json");
    let out = o.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "start",
        "nope",
    ]);
    assert_eq!(out.code(), Some(1));
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
}

#[test]
fn features_and_version_describe_the_runtime() {
    if !require_root() {
        return;
    }
    let out = run_ok(Command::new(unionrun_bin()).arg("features"));
    let f: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("pid")));
    assert!(f["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_SYS_ADMIN")));
    let out = run_ok(Command::new(unionrun_bin()).arg("--version"));
    assert!(out.stdout.contains("spec: 1."), "{out}");
}

#[test]
fn a_runtime_killed_during_create_leaves_nothing_after_delete() {
    let Some(o) = Oci::new("killed") else { return };
    o.script("sleep 30");
    let hook_pid = o.t.join("hook.pid");
    o.config(|v| {
        v["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c",
            format!("echo $$ > {}; exec sleep 30", hook_pid.display())]}]});
        v["linux"]["resources"] = json!({"pids": {"limit": 50}});
    });
    let mut create = o.cmd(&["create", "--bundle", o.bundle.to_str().unwrap(), &o.id]);
    let mut child = create
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hook_started = wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&hook_pid).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    let st = o.state();
    // SAFETY: killing our own child, then the hook process it started.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    if let Some(h) = fs::read_to_string(&hook_pid)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        unsafe { libc::kill(h, libc::SIGKILL) };
    }
    assert!(hook_started, "the hook never ran");
    let pid = pid_of(&st);
    assert!(pid > 0, "{st}");
    assert!(
        wait_until(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()
            || fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z"))),
        "the container's process outlived its runtime"
    );
    assert_eq!(o.status(), "stopped");
    assert!(!cgroup_leaves(&o.id).is_empty(), "the cgroup was made");
    let out = o.run(&["delete", &o.id]);
    assert!(out.success(), "{out}");
    o.assert_gone();
}

#[test]
fn a_union_rootfs_from_annotations() {
    let Some(o) = Oci::new("union") else { return };
    let upper = o.t.mkdir("upper");
    o.script("echo new > /tmp/x; rm /etc/motd; cat /etc/passwd > /tmp/pw; grep -c unionrun- /proc/mounts > /tmp/fuse");
    o.config(|v| {
        v["root"] = json!({"path": "no-such-dir", "readonly": false});
        v["annotations"] = json!({"unionrun.lower": "rootfs", "unionrun.upper": "../upper"});
    });
    let out = o.create();
    assert!(out.success(), "{out}");
    let st = o.state();
    let mnt = PathBuf::from(st["rootfs"].as_str().unwrap());
    assert!(
        mnt.starts_with(&o.state),
        "the union is mounted in the state dir: {st}"
    );
    assert!(o.run(&["start", &o.id]).success());
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert_eq!(fs::read_to_string(upper.join("tmp/x")).unwrap(), "new\n");
    assert!(upper.join("tmp/pw").exists(), "writes land in the upper");
    assert!(o.rootfs.join("etc/motd").exists(), "the lower is untouched");
    assert!(!o.rootfs.join("tmp/x").exists());
    let marks: Vec<String> = fs::read_dir(upper.join("etc"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        marks.iter().any(|n| n == "motd" || n == ".wh.motd"),
        "the deletion is recorded in the upper: {marks:?}"
    );
    let rec: Value =
        serde_json::from_str(&fs::read_to_string(o.state.join(&o.id).join("oci.json")).unwrap())
            .unwrap();
    let daemon = rec["daemon"]["pid"].as_i64().expect("a daemon is recorded") as i32;
    let cmd = fs::read_to_string(format!("/proc/{daemon}/cmdline")).unwrap_or_default();
    assert!(
        cmd.contains("unionfs"),
        "the union daemon serves the container: {cmd:?}"
    );
    assert!(o.run(&["delete", &o.id]).success());
    assert!(
        !mounts().iter().any(|m| m.mount_point.starts_with(&o.state)),
        "the union is unmounted"
    );
    let alive =
        fs::read_to_string(format!("/proc/{daemon}/stat")).is_ok_and(|s| !s.contains(") Z"));
    assert!(!alive, "the union daemon {daemon} is left");
    let work_left: Vec<_> = fs::read_dir(o.t.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("unionrun-work"))
        .collect();
    assert!(work_left.is_empty(), "{work_left:?}");
    o.assert_gone();

    // Without an upper: a temporary one in the state directory, gone with it.
    o.config(|v| v["annotations"] = json!({"unionrun.lower": "rootfs"}));
    assert!(o.create().success());
    assert!(o.run(&["start", &o.id]).success());
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert!(o.run(&["delete", &o.id]).success());
    assert!(!o.rootfs.join("tmp/x").exists());
    o.assert_gone();

    // A missing lower is refused up front.
    o.config(|v| v["annotations"] = json!({"unionrun.lower": "nope"}));
    let out = o.create();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("unionrun.lower"), "{out}");
    o.assert_gone();
}

#[test]
fn a_seccomp_profile_from_the_config_is_enforced() {
    let Some(o) = Oci::new("seccomp") else { return };
    o.script(
        "mkdir /tmp/d 2> /tmp/err; echo rc=$? > /tmp/rc; grep Seccomp: /proc/self/status > /tmp/st",
    );
    o.config(|v| {
        v["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
    });
    assert!(o.create().success());
    assert!(o.run(&["start", &o.id]).success());
    assert!(wait_until(Duration::from_secs(10), || o.status() == "stopped"));
    assert_eq!(o.read("tmp/rc").trim(), "rc=1", "{}", o.read("tmp/err"));
    assert!(
        o.read("tmp/err").contains("Permission denied"),
        "errnoRet 13: {}",
        o.read("tmp/err")
    );
    assert!(
        o.read("tmp/st").contains("2"),
        "filter mode: {}",
        o.read("tmp/st")
    );
    assert!(!o.rootfs.join("tmp/d").exists());
    assert!(o.run(&["delete", &o.id]).success());
    o.assert_gone();
    // An action we cannot do is refused at create.
    o.config(|v| v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
    let out = o.create();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("seccomp"), "{out}");
    o.assert_gone();
}

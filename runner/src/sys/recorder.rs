//! The recording fake of the syscall seam: each call becomes one line of text, in order;
//! `fail_on` makes the first call whose line contains it fail with EPERM.

use std::io;
use std::path::{Path, PathBuf};

use caps::CapsHashSet;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{relative, Create, SysError, Syscall, Target};

/// The recording fake: every call becomes one line in `calls`; `fail_on` makes the
/// first call whose line contains it fail with EPERM.
#[derive(Default)]
pub struct Recorder {
    /// One line per call, in order.
    pub calls: std::cell::RefCell<Vec<String>>,
    /// A substring that makes a call fail.
    pub fail_on: Option<String>,
}

impl Recorder {
    fn rec(&self, line: String) -> Result<(), SysError> {
        let fail = self.fail_on.as_ref().is_some_and(|f| line.contains(f));
        self.calls.borrow_mut().push(line.clone());
        if fail {
            return Err(SysError {
                op: line,
                path: PathBuf::new(),
                source: io::Error::from_raw_os_error(libc::EPERM),
            });
        }
        Ok(())
    }

    /// The recorded lines.
    pub fn lines(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// Index of the first line containing `s` (panics if none).
    pub fn index(&self, s: &str) -> usize {
        self.lines()
            .iter()
            .position(|l| l.contains(s))
            .unwrap_or_else(|| panic!("no call contains {s:?}:\n{}", self.lines().join("\n")))
    }
}

impl Syscall for Recorder {
    fn open_in_root(&self, root: &Path, rel: &Path, create: Create) -> Result<Target, SysError> {
        let shown = Path::new("/").join(relative(rel));
        if create != Create::Nothing {
            self.rec(format!("create {create:?} {}", shown.display()))?;
        }
        Ok(Target {
            shown: shown.clone(),
            fd: None,
            path: root.join(relative(rel)),
        })
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Target,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError> {
        self.rec(format!(
            "mount {} {} {} {:?} {}",
            source
                .map(|s| s.display().to_string())
                .unwrap_or("-".into()),
            target.shown.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ))
    }
    fn mount_setattr(&self, t: &Target, rec: bool, set: u64, clear: u64) -> Result<(), SysError> {
        self.rec(format!(
            "setattr {} rec={rec} set={set:#x} clear={clear:#x}",
            t.shown.display()
        ))
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SysError> {
        self.rec(format!("umount2 {} {flags:?}", target.display()))
    }
    fn chdir(&self, dir: &Path) -> Result<(), SysError> {
        self.rec(format!("chdir {}", dir.display()))
    }
    fn pivot_root(&self, n: &Path, o: &Path) -> Result<(), SysError> {
        self.rec(format!("pivot_root {} {}", n.display(), o.display()))
    }
    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        self.rec(format!("sethostname {name}"))
    }
    fn unshare(&self, flags: CloneFlags) -> Result<(), SysError> {
        self.rec(format!("unshare {flags:?}"))
    }
    fn loopback_up(&self) -> Result<(), SysError> {
        self.rec("loopback_up".into())
    }
    fn drop_bounding(&self, keep: &CapsHashSet) -> Result<(), SysError> {
        self.rec(format!("drop_bounding keep={}", keep.len()))
    }
    fn set_caps(&self, set: &CapsHashSet) -> Result<(), SysError> {
        self.rec(format!("set_caps {}", set.len()))
    }
    fn set_ids(&self, uid: u32, gid: u32, setgroups: bool) -> Result<(), SysError> {
        self.rec(format!("set_ids {uid}:{gid} setgroups={setgroups}"))
    }
    fn no_new_privs(&self) -> Result<(), SysError> {
        self.rec("no_new_privs".into())
    }
    fn cloexec_from(&self, from: u32) -> Result<(), SysError> {
        self.rec(format!("cloexec_from {from}"))
    }
    fn seccomp(&self, name: &str, prog: &[seccompiler::sock_filter]) -> Result<(), SysError> {
        self.rec(format!("seccomp {name} len={}", prog.len()))
    }
}

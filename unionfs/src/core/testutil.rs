//! Helpers for the core's unit tests: branch trees in temp dirs, no mounting.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Branch, Config, FormatChoice, Mode, Obj, Stack, Union, WhiteoutFormat};

pub(crate) struct Tree {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) names: Vec<String>,
}

/// The formats this user can test: `wh` always, `overlay` where it can be written.
pub(crate) fn formats() -> Vec<FormatChoice> {
    let t = Tree::new(&["probe"]);
    let s = t.stack(FormatChoice::Auto);
    if matches!(s.format, WhiteoutFormat::Overlay { .. }) {
        vec![FormatChoice::Wh, FormatChoice::Overlay]
    } else {
        eprintln!("overlay format not writable by this user here: testing wh only");
        vec![FormatChoice::Wh]
    }
}

impl Tree {
    pub(crate) fn new(names: &[&str]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        Tree {
            dir,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }
    pub(crate) fn path(&self, b: &str) -> PathBuf {
        self.dir.path().join(b)
    }
    pub(crate) fn file(&self, b: &str, rel: &str, content: &str) {
        std::fs::write(self.path(b).join(rel), content).unwrap();
    }
    pub(crate) fn dir(&self, b: &str, rel: &str) {
        std::fs::create_dir_all(self.path(b).join(rel)).unwrap();
    }
    fn fmt(&self, f: FormatChoice) -> WhiteoutFormat {
        self.stack(f).format
    }
    pub(crate) fn whiteout(&self, f: FormatChoice, b: &str, rel: &str) {
        let p = self.path(b).join(rel);
        let parent = Branch::open(p.parent().unwrap(), Mode::Rw).unwrap();
        self.fmt(f)
            .make_whiteout(parent.fd(), p.file_name().unwrap())
            .unwrap();
    }
    pub(crate) fn opaque(&self, f: FormatChoice, b: &str, rel: &str) {
        let p = self.path(b).join(rel);
        let parent = Branch::open(p.parent().unwrap(), Mode::Rw).unwrap();
        self.fmt(f)
            .set_opaque(parent.fd(), p.file_name().unwrap())
            .unwrap();
    }
    /// The first branch rw, the rest ro.
    pub(crate) fn stack(&self, f: FormatChoice) -> Stack {
        let modes: Vec<Mode> = (0..self.names.len())
            .map(|i| if i == 0 { Mode::Rw } else { Mode::Ro })
            .collect();
        self.stack_modes(f, &modes)
    }
    pub(crate) fn stack_modes(&self, f: FormatChoice, modes: &[Mode]) -> Stack {
        let branches = self
            .names
            .iter()
            .zip(modes)
            .map(|(n, m)| {
                let mut b = Branch::open(&self.path(n), *m).unwrap();
                if *m == Mode::Rw {
                    b.attach_work(None, f == FormatChoice::Meta).unwrap();
                }
                b
            })
            .collect();
        Stack::new(branches, f).unwrap()
    }
    pub(crate) fn union(&self, f: FormatChoice) -> Union {
        Union::new(self.stack(f), Config::default())
    }
    pub(crate) fn union_modes(&self, f: FormatChoice, modes: &[Mode]) -> Union {
        Union::new(self.stack_modes(f, modes), Config::default())
    }
    pub(crate) fn union_cfg(&self, f: FormatChoice, modes: &[Mode], cfg: Config) -> Union {
        Union::new(self.stack_modes(f, modes), cfg)
    }
}

pub(crate) fn lookup_path(u: &Union, rel: &str) -> Obj {
    let mut cur = u.root().unwrap();
    for c in Path::new(rel).components() {
        cur = u.lookup(&cur, c.as_os_str()).unwrap();
    }
    cur
}

pub(crate) fn try_lookup(u: &Union, rel: &str) -> Option<Obj> {
    let mut cur = u.root().unwrap();
    for c in Path::new(rel).components() {
        cur = u.lookup(&cur, c.as_os_str()).ok()?;
    }
    Some(cur)
}

pub(crate) fn read(u: &Union, o: &Obj) -> String {
    use std::io::Read;
    let (fd, _) = u.open(o, libc::O_RDONLY).unwrap();
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

pub(crate) fn names(v: &[super::DirEntry]) -> Vec<String> {
    let mut n: Vec<String> = v
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

pub(crate) fn caller() -> super::Caller {
    super::Caller {
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
    }
}

fn c(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub(crate) fn set_xattr(p: &Path, name: &str, v: &[u8]) {
    let n = std::ffi::CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            v.as_ptr() as *const libc::c_void,
            v.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {p:?}: {}", std::io::Error::last_os_error());
}

pub(crate) fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let r = unsafe {
        libc::lgetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

pub(crate) fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(p).as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0);
}

pub(crate) fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Whether the test runs as root; otherwise prints why it skipped (and fails on CI, where
/// a test that cannot run is a failure).
pub(crate) fn require_root(why: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "needs root on CI: {why}"
    );
    eprintln!("skipped: needs root ({why})");
    false
}

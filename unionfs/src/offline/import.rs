//! `unionfs import`: unpack an image layer tar into a branch directory, converting its
//! `.wh.` entries into the chosen whiteout format.
//!
//! Two passes over the file. The first only reads: every path must be relative without
//! `..`, no entry may lie below a non-directory of the archive, a hard link must name an
//! earlier entry of the archive, and every entry type must be one a branch can hold; any
//! violation is bad input and nothing is written. The second unpacks, walking component
//! by component beneath the target fd without ever following a symlink (`core::sys`),
//! building each non-directory under a temporary name and renaming it into place. As in
//! `readdir`, a real entry wins over a whiteout of the same name in the same layer.
//! Directory modes and times are set last, deepest first.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::core::sys::{self, Stat};
use crate::core::whiteout::WhiteoutFormat;

use super::apply::{self, split, Temps};
use super::tree::{self, Meta};
use super::{usage, Ctx, Result, WriteFormat};

/// Arguments of `unionfs import`.
#[derive(clap::Args, Debug)]
#[command(
    about = "Unpack an image layer tar into a branch directory in a chosen whiteout format",
    long_about = "Unpack an OCI/Docker image layer tar (or any tar) into a branch directory: \
        '.wh.NAME' entries become whiteouts and 'DIR/.wh..wh..opq' makes DIR opaque, in \
        the chosen format; mode, owner (when root), mtime and SCHILY.xattr.* records are \
        kept. The archive is checked first: a path that is absolute or contains '..', an \
        entry below a symlink or file of the archive, a hard link to something not in the \
        archive, or an unsupported entry type is refused with nothing written. Unpacking \
        never follows a symlink. Exit code 0 done, 1 failure at run time, 2 bad input."
)]
pub(crate) struct ImportArgs {
    /// The layer tar to unpack (uncompressed).
    #[arg(value_name = "FILE.tar")]
    file: PathBuf,
    /// The branch directory to unpack into (created if missing; its parent must exist).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The whiteout format to write: overlay (0/0 devices, trusted.overlay.opaque, or
    /// user.overlay.opaque when not root) or wh (.wh. files). Default: overlay when run
    /// as root, else wh.
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<WriteFormat>,
}

/// What one archive entry means for the branch.
enum What {
    /// The archive's root (`./`): left alone.
    Root,
    /// `DIR/.wh..wh..opq`: DIR is opaque.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Whiteout(OsString),
    /// Anything else.
    Entry,
}

/// Checks an archive path: relative, no `..`, no empty name; returns its components.
fn clean_path(raw: &[u8]) -> std::result::Result<PathBuf, String> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("is absolute".into()),
            Component::ParentDir => return Err("contains '..'".into()),
        }
    }
    Ok(out)
}

fn what(path: &Path) -> std::result::Result<What, String> {
    let Some(name) = path.file_name() else {
        return Ok(What::Root);
    };
    let b = name.as_bytes();
    if b == b".wh..wh..opq" {
        return Ok(What::Opaque);
    }
    match b.strip_prefix(b".wh.") {
        Some(rest) if rest.is_empty() || rest == b"." || rest == b".." => {
            Err("is a whiteout of nothing".into())
        }
        Some(rest) => Ok(What::Whiteout(OsStr::from_bytes(rest).into())),
        None => Ok(What::Entry),
    }
}

fn supported(t: EntryType) -> bool {
    matches!(
        t,
        EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo
    )
}

/// The first pass: the paths the archive really creates (whiteouts of those lose).
fn validate(file: &Path) -> Result<HashSet<PathBuf>> {
    let bad = |p: &[u8], why: String| {
        usage(format!(
            "{}: entry {} {why}",
            file.display(),
            String::from_utf8_lossy(p)
        ))
    };
    let f = File::open(file).ctx("open", file)?;
    let len = f.metadata().ctx("stat", file)?.len();
    if len % 512 != 0 {
        return Err(usage(format!(
            "{} is not a tar archive (its size is not a multiple of 512 bytes)",
            file.display()
        )));
    }
    let mut ar = tar::Archive::new(f);
    let entries = ar
        .entries()
        .map_err(|e| usage(format!("{} is not a tar archive: {e}", file.display())))?;
    let mut is_dir: HashMap<PathBuf, bool> = HashMap::new();
    let mut real = HashSet::new();
    for e in entries {
        let e = e.map_err(|e| {
            usage(format!(
                "{} is not a readable tar archive: {e}",
                file.display()
            ))
        })?;
        let t = e.header().entry_type();
        if matches!(t, EntryType::XGlobalHeader) {
            continue;
        }
        let raw = e.path_bytes().into_owned();
        if !supported(t) {
            return Err(bad(
                &raw,
                format!("has a type a branch cannot hold ({t:?})"),
            ));
        }
        let p = clean_path(&raw).map_err(|w| bad(&raw, w))?;
        let w = what(&p).map_err(|w| bad(&raw, w))?;
        for anc in p.ancestors().skip(1) {
            if is_dir.get(anc) == Some(&false) {
                return Err(bad(
                    &raw,
                    format!("lies below the non-directory {}", anc.display()),
                ));
            }
        }
        match w {
            What::Root => {}
            What::Opaque | What::Whiteout(_) => {
                if !matches!(t, EntryType::Regular | EntryType::Continuous) {
                    return Err(bad(&raw, "is a whiteout that is not a plain file".into()));
                }
            }
            What::Entry => {
                if t == EntryType::Link {
                    let target = e.link_name_bytes().unwrap_or_default().into_owned();
                    let tp = clean_path(&target)
                        .map_err(|w| bad(&raw, format!("links to a path that {w}")))?;
                    if is_dir.get(&tp) != Some(&false) {
                        return Err(bad(
                            &raw,
                            "is a hard link to nothing earlier in the archive".into(),
                        ));
                    }
                }
                is_dir.insert(p.clone(), t == EntryType::Directory);
                real.insert(p);
            }
        }
    }
    Ok(real)
}

pub(crate) fn run(a: ImportArgs) -> Result<()> {
    match std::fs::metadata(&a.file) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(usage(format!("{} is not a regular file", a.file.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(usage(format!("{} does not exist", a.file.display())))
        }
        Err(e) => return Err(usage(format!("{}: {e}", a.file.display()))),
    }
    let create = matches!(
        std::fs::symlink_metadata(&a.dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound
    );
    if create {
        let parent = a
            .dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(usage(format!(
                "{}: its parent directory does not exist",
                a.dir.display()
            )));
        }
    } else {
        tree::open_dir_arg(&a.dir, "directory")?;
    }
    let real = validate(&a.file)?;
    let format = match a.format {
        Some(WriteFormat::Wh) => WhiteoutFormat::Wh,
        Some(WriteFormat::Overlay) => tree::default_overlay(),
        None if sys::geteuid() == 0 => tree::default_overlay(),
        None => WhiteoutFormat::Wh,
    };
    if create {
        std::fs::create_dir(&a.dir).ctx("create", &a.dir)?;
    }
    let dir = tree::Tree::open(&a.dir, "directory")?;
    if matches!(format, WhiteoutFormat::Overlay { .. }) && !probe(&dir, format)? {
        return Err(usage(format!(
            "this user cannot write overlay whiteouts (0/0 devices, overlay xattrs) in {}; \
             use --format wh",
            dir.path.display()
        )));
    }
    let mut u = Unpacker {
        root: dir.root.as_fd(),
        at: &dir.path,
        format,
        real,
        temps: Temps::new(),
        dirs: Vec::new(),
    };
    u.unpack(&a.file)
}

/// Whether `format` can be written in `dir`, leaving its times as they were.
fn probe(dir: &tree::Tree, format: WhiteoutFormat) -> Result<bool> {
    let fd = dir.open_root()?;
    let st = sys::fstat(fd.as_fd()).ctx("stat", &dir.path)?;
    let ok = format.probe(fd.as_fd());
    let _ = sys::futimens_path(fd.as_fd(), &apply::times_of(&st));
    Ok(ok)
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    at: &'a Path,
    format: WhiteoutFormat,
    real: HashSet<PathBuf>,
    temps: Temps,
    /// Directories unpacked, with the mode and times they get at the end.
    dirs: Vec<(PathBuf, Stat)>,
}

impl Unpacker<'_> {
    fn unpack(&mut self, file: &Path) -> Result<()> {
        let f = File::open(file).ctx("open", file)?;
        let mut ar = tar::Archive::new(f);
        for e in ar.entries().ctx("read", file)? {
            let mut e = e.ctx("read", file)?;
            let t = e.header().entry_type();
            if t == EntryType::XGlobalHeader {
                continue;
            }
            let raw = e.path_bytes().into_owned();
            // Validated in the first pass.
            let Ok(p) = clean_path(&raw) else { continue };
            let Ok(w) = what(&p) else { continue };
            let at = self.at.join(&p);
            match w {
                What::Root => {}
                What::Opaque => {
                    let d = self.parents(split(&p).0)?;
                    self.format
                        .set_opaque(d.as_fd(), OsStr::new(""))
                        .ctx("mark opaque", &at)?;
                }
                What::Whiteout(name) => {
                    let parent = split(&p).0;
                    if self.real.contains(&parent.join(&name)) {
                        continue;
                    }
                    let d = self.parents(parent)?;
                    apply::remove(d.as_fd(), &name, &self.temps).ctx("remove", &at)?;
                    match self.format.make_whiteout(d.as_fd(), &name) {
                        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                            return Err(e).ctx("write whiteout", self.at.join(parent).join(&name))
                        }
                        _ => {}
                    }
                }
                What::Entry => self.entry(&mut e, &p, t).ctx("unpack", &at)?,
            }
        }
        // Deepest first, so setting a directory's times is the last change inside its parent.
        self.dirs
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, st) in &self.dirs {
            let fd = tree::open_read(self.root, p).ctx("open", self.at.join(p))?;
            sys::fchmod(fd.as_fd(), st.st_mode & 0o7777).ctx("chmod", self.at.join(p))?;
            sys::futimens_path(fd.as_fd(), &apply::times_of(st))
                .ctx("set times", self.at.join(p))?;
        }
        Ok(())
    }

    /// Opens the directory `rel` beneath the root, creating missing components (0755);
    /// a component that is not a directory (a symlink included) is an error.
    fn parents(&self, rel: &Path) -> Result<OwnedFd> {
        let mut cur = sys::open_dir_path(self.root, Path::new("")).ctx("open", self.at)?;
        let mut done = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(name) = c else { continue };
            done.push(name);
            match sys::stat_opt(cur.as_fd(), name).ctx("stat", self.at.join(&done))? {
                Some(st) if sys::is_dir(&st) => {}
                Some(_) => {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR)).ctx(
                        "open (a symlink or file is in the way, not followed)",
                        self.at.join(&done),
                    )
                }
                None => sys::mkdirat(cur.as_fd(), name, 0o755).ctx("mkdir", self.at.join(&done))?,
            }
            cur = sys::open_dir_path(cur.as_fd(), Path::new(name))
                .ctx("open", self.at.join(&done))?;
        }
        Ok(cur)
    }

    fn entry<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        p: &Path,
        t: EntryType,
    ) -> io::Result<()> {
        let m = meta_of(e, t)?;
        let (parent, name) = split(p);
        let d = self.parents(parent).map_err(to_io)?;
        let tmp = self.temps.next();
        if t == EntryType::Directory {
            match sys::stat_opt(d.as_fd(), name)? {
                Some(st) if sys::is_dir(&st) => {}
                Some(_) => {
                    sys::mkdirat(d.as_fd(), &tmp, 0o700)?;
                    apply::replace(d.as_fd(), &tmp, name, &self.temps)?;
                }
                None => sys::mkdirat(d.as_fd(), name, 0o700)?,
            }
            let mut writable = Meta {
                st: m.st,
                target: None,
                xattrs: m.xattrs.clone(),
            };
            writable.st.st_mode = libc::S_IFDIR | 0o700;
            apply::set_meta(d.as_fd(), name, &writable, self.format, false)?;
            self.dirs.push((p.to_path_buf(), m.st));
            return Ok(());
        }
        let built = (|| {
            match t {
                EntryType::Symlink => {
                    sys::symlinkat(m.target.as_deref().unwrap_or_default(), d.as_fd(), &tmp)?
                }
                EntryType::Link => {
                    let target = e.link_name_bytes().unwrap_or_default().into_owned();
                    let tp = clean_path(&target)
                        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                    let (tparent, tname) = split(&tp);
                    let td = sys::open_dir_path(self.root, tparent)?;
                    sys::linkat(td.as_fd(), tname, d.as_fd(), &tmp)?;
                    return apply::replace(d.as_fd(), &tmp, name, &self.temps);
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => sys::mknodat(
                    d.as_fd(),
                    &tmp,
                    m.st.st_mode & libc::S_IFMT | 0o600,
                    m.st.st_rdev,
                )?,
                _ => {
                    let fd = sys::openat(
                        d.as_fd(),
                        &tmp,
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                        0o600,
                    )?;
                    let mut f = File::from(fd);
                    io::copy(e, &mut f)?;
                    f.sync_data()?;
                }
            }
            apply::set_meta(d.as_fd(), &tmp, &m, self.format, true)?;
            apply::replace(d.as_fd(), &tmp, name, &self.temps)
        })();
        if built.is_err() {
            let _ = apply::remove(d.as_fd(), &tmp, &self.temps);
        }
        built
    }
}

fn to_io(e: super::OfflineError) -> io::Error {
    match e {
        super::OfflineError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// The metadata an archive entry describes (PAX records win over the header).
fn meta_of<R: Read>(e: &mut tar::Entry<'_, R>, t: EntryType) -> io::Result<Meta> {
    let h = e.header();
    let kind = match t {
        EntryType::Directory => libc::S_IFDIR,
        EntryType::Symlink => libc::S_IFLNK,
        EntryType::Char => libc::S_IFCHR,
        EntryType::Block => libc::S_IFBLK,
        EntryType::Fifo => libc::S_IFIFO,
        _ => libc::S_IFREG,
    };
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    // Some writers leave numeric fields blank; tar(1) reads those as 0 too.
    st.st_mode = kind | (h.mode().unwrap_or(0o644) & 0o7777);
    st.st_uid = h.uid().unwrap_or(0) as u32;
    st.st_gid = h.gid().unwrap_or(0) as u32;
    st.st_mtime = h.mtime().unwrap_or(0) as i64;
    if matches!(t, EntryType::Char | EntryType::Block) {
        let (ma, mi) = (
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        );
        st.st_rdev = libc::makedev(ma, mi);
    }
    let target = (t == EntryType::Symlink)
        .then(|| {
            e.link_name_bytes()
                .map(|l| OsStr::from_bytes(&l).to_os_string())
        })
        .flatten();
    let mut xattrs = std::collections::BTreeMap::new();
    if let Some(pax) = e.pax_extensions()? {
        for r in pax {
            let r = r?;
            let (k, v) = (r.key_bytes(), r.value_bytes());
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                xattrs.insert(OsStr::from_bytes(name).to_os_string(), v.to_vec());
            } else if k == b"mtime" {
                let s = String::from_utf8_lossy(v);
                let (secs, frac) = s.split_once('.').unwrap_or((&s, ""));
                if let Ok(secs) = secs.parse::<i64>() {
                    st.st_mtime = secs;
                    let digits: String = frac.chars().take(9).collect();
                    st.st_mtime_nsec = format!("{digits:0<9}").parse().unwrap_or(0);
                }
            } else if k == b"uid" {
                st.st_uid = String::from_utf8_lossy(v).parse().unwrap_or(st.st_uid);
            } else if k == b"gid" {
                st.st_gid = String::from_utf8_lossy(v).parse().unwrap_or(st.st_gid);
            }
        }
    }
    st.st_atime = st.st_mtime;
    st.st_atime_nsec = st.st_mtime_nsec;
    Ok(Meta { st, target, xattrs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tar_of(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, t, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*t);
            h.set_mode(0o755);
            h.set_size(0);
            // Written raw, so that bad paths get into the archive at all.
            let name = &mut h.as_old_mut().name;
            name[..p.len()].copy_from_slice(p.as_bytes());
            if !link.is_empty() {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn import(d: &Path, bytes: &[u8], fmt: WriteFormat) -> Result<()> {
        let f = d.join("layer.tar");
        fs::write(&f, bytes).unwrap();
        run(ImportArgs {
            file: f,
            dir: d.join("out"),
            format: Some(fmt),
        })
    }

    #[test]
    fn refuses_escapes_and_links_out_with_nothing_written() {
        use EntryType::*;
        let cases: &[&[(&str, EntryType, &str)]] = &[
            &[("../evil", Regular, "")],
            &[("/abs", Regular, "")],
            &[("a/../../x", Regular, "")],
            &[("l", Symlink, "/etc"), ("l/passwd", Regular, "")],
            &[("h", Link, "/etc/passwd")],
            &[("h", Link, "missing")],
            &[(".wh.", Regular, "")],
        ];
        for c in cases {
            let d = tempfile::tempdir().unwrap();
            let e = import(d.path(), &tar_of(c), WriteFormat::Wh).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{c:?}: {e}");
            assert!(!d.path().join("out").exists(), "{c:?}");
        }
    }

    #[test]
    fn whiteouts_convert_and_real_entries_win() {
        use EntryType::*;
        let layer = tar_of(&[
            ("d/", Directory, ""),
            ("d/.wh..wh..opq", Regular, ""),
            ("d/f", Regular, ""),
            (".wh.gone", Regular, ""),
            (".wh.back", Regular, ""),
            ("back", Regular, ""),
            ("ln", Symlink, "d/f"),
        ]);
        for fmt in [WriteFormat::Wh, WriteFormat::Overlay] {
            let d = tempfile::tempdir().unwrap();
            if let Err(e) = import(d.path(), &layer, fmt) {
                assert_eq!(fmt, WriteFormat::Overlay, "{e}");
                continue;
            }
            let out = d.path().join("out");
            let t = tree::Tree::open(&out, "o").unwrap();
            let f = tree::detect(t.root.as_fd(), &t.path).unwrap().unwrap();
            let root = t.open_root().unwrap();
            let l = tree::list(Some(f), &root, true).unwrap();
            let names: Vec<_> = l
                .items
                .keys()
                .map(|k| k.to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["back", "d", "gone", "ln"], "{fmt:?}");
            assert!(matches!(l.items[OsStr::new("gone")], tree::Item::Whiteout));
            assert!(matches!(l.items[OsStr::new("back")], tree::Item::Real(_)));
            assert!(f.is_opaque(root.as_fd(), OsStr::new("d")).unwrap());
            assert_eq!(fs::read_link(out.join("ln")).unwrap(), Path::new("d/f"));
        }
    }
}

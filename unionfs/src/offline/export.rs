//! `unionfs export`: a branch as an OCI image layer tar.
//!
//! The layer format (OCI image-spec `layer.md`): entries in walk order (sorted names, a
//! directory before its contents), paths relative without a leading `./`, directories
//! ending in `/`; a whiteout as an empty regular file `.wh.NAME`, an opaque directory as
//! the directory followed by `DIR/.wh..wh..opq`, whatever format the branch uses.
//! Hard links of the branch become tar hard links to the first name written; xattrs are
//! PAX records `SCHILY.xattr.NAME` (the names the union shows; private ones never), and a
//! PAX `mtime` keeps nanoseconds. Sockets cannot be put in a tar and are skipped with a
//! warning. The file is written under a temporary name and renamed into place.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use crate::core::sys::{self, Stat};

use super::tree::{self, Item, Kind, Tree};
use super::{usage, Ctx, FormatArg, OfflineError, Result};

/// Arguments of `unionfs export`.
#[derive(clap::Args, Debug)]
#[command(
    about = "Write a branch as an OCI image layer tar (.wh.NAME whiteouts, .wh..wh..opq)",
    long_about = "Write a branch directory as an OCI image layer tar, readable by tar(1), \
        container tools and unionfs import: regular files, directories, symlinks, hard \
        links (as tar hard links), fifos and devices with mode, owner and mtime \
        (nanoseconds in a PAX record), xattrs as PAX SCHILY.xattr.* records (the union's \
        private ones left out), whiteouts as empty '.wh.NAME' files and opaque directories \
        as 'DIR/.wh..wh..opq', whatever whiteout format the branch uses. Sockets are \
        skipped with a warning. Exit code 0 done, 1 failure at run time, 2 bad input."
)]
pub(crate) struct ExportArgs {
    /// The branch directory to export (the directory itself, never a mounted view).
    #[arg(value_name = "BRANCH")]
    branch: PathBuf,
    /// The tar file to write ('-': standard output). It is written under a temporary name
    /// beside it and renamed into place when complete.
    #[arg(short = 'o', long = "output", value_name = "FILE.tar", required = true)]
    output: PathBuf,
    /// Whiteout format of the branch (auto: detected).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto, value_name = "FORMAT")]
    format: FormatArg,
}

pub(crate) fn run(a: ExportArgs) -> Result<()> {
    let branch = Tree::open(&a.branch, "branch")?.with_format(a.format, tree::default_overlay())?;
    if a.output.as_os_str() == "-" {
        let out = BufWriter::new(io::stdout().lock());
        return write_layer(&branch, out).map(|_| ());
    }
    let (dir, name) = match (a.output.parent(), a.output.file_name()) {
        (Some(d), Some(n)) => (
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            },
            n,
        ),
        _ => return Err(usage(format!("-o {}: not a file name", a.output.display()))),
    };
    if !dir.is_dir() {
        return Err(usage(format!(
            "-o {}: the directory {} does not exist",
            a.output.display(),
            dir.display()
        )));
    }
    if a.output.is_dir() {
        return Err(usage(format!("-o {} is a directory", a.output.display())));
    }
    let canon = dir.canonicalize().ctx("resolve", dir)?.join(name);
    if canon.starts_with(&branch.path) {
        return Err(usage(format!(
            "-o {} lies inside the branch {}",
            a.output.display(),
            branch.path.display()
        )));
    }
    let mut tmp_name = OsString::from(name);
    tmp_name.push(format!(".{}{}", tree::TEMP_PREFIX, std::process::id()));
    let tmp = dir.join(tmp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .ctx("create", &tmp)?;
    let r = write_layer(&branch, BufWriter::new(file)).and_then(|w| {
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("write", &tmp)?;
        f.sync_all().ctx("write", &tmp)?;
        std::fs::rename(&tmp, &a.output).ctx("rename into place", &a.output)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Writes the layer of `branch` to `out`; returns the writer, flushed.
fn write_layer<W: Write>(branch: &Tree, out: W) -> Result<W> {
    let mut x = Exporter {
        branch,
        tar: Builder::new(out),
        links: HashMap::new(),
    };
    let root = branch.open_root()?;
    let st = sys::fstat(root.as_fd()).ctx("stat", &branch.path)?;
    if tree::is_opaque(branch.format, root.as_fd(), OsStr::new("")).ctx("read", &branch.path)? {
        x.marker(Path::new(".wh..wh..opq"), &st)?;
    }
    x.dir(Path::new(""), &root)?;
    let mut w = x.tar.into_inner().ctx("write", "the archive")?;
    w.flush().ctx("write", "the archive")?;
    Ok(w)
}

struct Exporter<'a, W: Write> {
    branch: &'a Tree,
    tar: Builder<W>,
    /// (dev, ino) of multiply-linked files already written, and their path.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Exporter<'_, W> {
    fn dir(&mut self, rel: &Path, fd: &OwnedFd) -> Result<()> {
        let at = self.branch.path.join(rel);
        let listing = tree::list(self.branch.format, fd, rel.as_os_str().is_empty())
            .ctx("read directory", &at)?;
        let dst = sys::fstat(fd.as_fd()).ctx("stat", &at)?;
        for (name, item) in &listing.items {
            let path = rel.join(name);
            if name.as_bytes().starts_with(b".wh.") {
                return Err(usage(format!(
                    "{} is named like a whiteout: an OCI layer cannot hold it",
                    self.branch.path.join(&path).display()
                )));
            }
            match item {
                Item::Whiteout => {
                    let mut wh = OsString::from(".wh.");
                    wh.push(name);
                    self.marker(&rel.join(wh), &dst)?;
                }
                Item::Real(st) => self.entry(&path, fd, name, *st)?,
            }
        }
        Ok(())
    }

    /// An empty marker file (a whiteout or the opaque marker), owned like its directory.
    fn marker(&mut self, path: &Path, dir_st: &Stat) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(dir_st.st_uid as u64);
        h.set_gid(dir_st.st_gid as u64);
        h.set_mtime(dir_st.st_mtime.max(0) as u64);
        h.set_size(0);
        let e = werr(self.branch.path.join(path));
        self.tar.append_data(&mut h, path, io::empty()).map_err(e)
    }

    fn entry(&mut self, path: &Path, dir: &OwnedFd, name: &OsStr, st: Stat) -> Result<()> {
        let at = self.branch.path.join(path);
        let m = tree::read_meta(dir.as_fd(), name, st, self.branch.xattrs).ctx("read", &at)?;
        let kind = Kind::of(&st);
        if kind == Kind::Socket {
            eprintln!(
                "unionfs: export: skipped the socket {} (a tar cannot hold it)",
                at.display()
            );
            return Ok(());
        }
        let link_of = (kind == Kind::File && st.st_nlink > 1)
            .then(|| self.links.get(&(st.st_dev, st.st_ino)).cloned())
            .flatten();
        let mut pax: Vec<(String, Vec<u8>)> = m
            .xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{}", k.to_string_lossy()), v.clone()))
            .filter(|(k, _)| !k.contains('\u{fffd}'))
            .collect();
        if link_of.is_some() {
            // A hard link carries no metadata of its own: the first name has it.
            pax.clear();
        } else if st.st_mtime_nsec != 0 && st.st_mtime >= 0 {
            pax.push((
                "mtime".into(),
                format!("{}.{:09}", st.st_mtime, st.st_mtime_nsec).into_bytes(),
            ));
        }
        let e = werr(self.branch.path.join(path));
        self.tar
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(&e)?;
        let mut h = Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        match kind {
            Kind::Dir => {
                h.set_entry_type(EntryType::Directory);
                let mut p = path.as_os_str().to_os_string();
                p.push("/");
                self.tar.append_data(&mut h, &p, io::empty()).map_err(&e)?;
                if tree::is_opaque(self.branch.format, dir.as_fd(), name).ctx("read", &at)? {
                    self.marker(&path.join(".wh..wh..opq"), &st)?;
                }
                let sub = tree::open_read(dir.as_fd(), Path::new(name)).ctx("open", &at)?;
                return self.dir(path, &sub);
            }
            Kind::File if link_of.is_some() => {
                h.set_entry_type(EntryType::Link);
                let first = link_of.unwrap_or_default();
                self.tar.append_link(&mut h, path, &first).map_err(&e)?;
            }
            Kind::File => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(st.st_size as u64);
                let f =
                    File::from(sys::openat(dir.as_fd(), name, libc::O_RDONLY, 0).ctx("open", &at)?);
                let mut data = Exact {
                    inner: f.take(st.st_size as u64),
                    left: st.st_size as u64,
                };
                self.tar.append_data(&mut h, path, &mut data).map_err(&e)?;
                if st.st_nlink > 1 {
                    self.links
                        .insert((st.st_dev, st.st_ino), path.to_path_buf());
                }
            }
            Kind::Symlink => {
                h.set_entry_type(EntryType::Symlink);
                let target = m.target.unwrap_or_default();
                self.tar
                    .append_link(&mut h, path, Path::new(&target))
                    .map_err(&e)?;
            }
            Kind::Fifo | Kind::Char | Kind::Block => {
                h.set_entry_type(match kind {
                    Kind::Fifo => EntryType::Fifo,
                    Kind::Char => EntryType::Char,
                    _ => EntryType::Block,
                });
                h.set_device_major(libc::major(st.st_rdev)).map_err(&e)?;
                h.set_device_minor(libc::minor(st.st_rdev)).map_err(&e)?;
                self.tar
                    .append_data(&mut h, path, io::empty())
                    .map_err(&e)?;
            }
            Kind::Socket => {}
        }
        Ok(())
    }
}

fn werr(p: PathBuf) -> impl Fn(io::Error) -> OfflineError {
    move |source| OfflineError::Io {
        op: "archive",
        path: p.clone(),
        source,
    }
}

/// A reader that fails if the file is shorter than its header says (it changed while
/// being archived), instead of leaving a corrupt archive.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn layer_holds_whiteouts_opaque_markers_links_and_xattrs() {
        for f in [crate::core::WhiteoutFormat::Wh, tree::default_overlay()] {
            let d = tempfile::tempdir().unwrap();
            let b = d.path().join("B");
            fs::create_dir_all(b.join("op/sub")).unwrap();
            fs::write(b.join("op/sub/f"), "data").unwrap();
            fs::hard_link(b.join("op/sub/f"), b.join("op/g")).unwrap();
            std::os::unix::fs::symlink("sub/f", b.join("op/l")).unwrap();
            let t = Tree::open(&b, "b").unwrap();
            let fd = t.open_root().unwrap();
            if f != crate::core::WhiteoutFormat::Wh && !f.probe(fd.as_fd()) {
                continue;
            }
            f.make_whiteout(fd.as_fd(), OsStr::new("gone")).unwrap();
            f.set_opaque(fd.as_fd(), OsStr::new("op")).unwrap();
            let xa = sys::setxattr(
                fd.as_fd(),
                OsStr::new("op/sub/f"),
                OsStr::new("user.k"),
                b"v",
                0,
            )
            .is_ok();
            let t = t.with_format(FormatArg::Auto, f).unwrap();
            let bytes = write_layer(&t, Vec::new()).unwrap();
            let mut ar = tar::Archive::new(bytes.as_slice());
            let mut seen = Vec::new();
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let x = e
                    .pax_extensions()
                    .unwrap()
                    .map(|p| {
                        p.filter_map(|r| r.ok())
                            .any(|r| r.key() == Ok("SCHILY.xattr.user.k"))
                    })
                    .unwrap_or(false);
                let kind = e.header().entry_type();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned());
                seen.push(format!("{p} {kind:?} {link:?} {x}"));
            }
            let want = [
                ".wh.gone Regular None false".to_string(),
                "op/ Directory None false".into(),
                "op/.wh..wh..opq Regular None false".into(),
                format!("op/g Regular None {xa}"),
                "op/l Symlink Some(\"sub/f\") false".into(),
                "op/sub/ Directory None false".into(),
                "op/sub/f Link Some(\"op/g\") false".into(),
            ];
            assert_eq!(seen, want, "{f:?}");
        }
    }
}

//! The comparison engine `diff` prints and `merge` plans with.
//!
//! It compares two union views: the branch over the bases, and the bases alone (merged
//! top first, with their own whiteouts and opaque directories, as `lookup` and `readdir`
//! merge them). Every path where they differ is one [`Change`], in walk order (sorted
//! names, a directory before its contents): added, modified (with the fields that
//! differ), deleted (hidden by a whiteout, or by an opaque directory above it) and opaque
//! (an opaque directory of the branch that hides base entries). With no base at all every
//! entry of the branch is added, every whiteout deleted, every opaque directory opaque.
//! Hard links between names of the branch are followed: a later name of a
//! multiply-linked file is unchanged only if the base has it as the same file too.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::core::sys::{self, Stat};

use super::diff::{Change, ChangeKind};
use super::tree::{self, Item, Kind, Listing, Tree};
use super::{Ctx, FormatArg, Result};
/// What the comparison found.
pub(crate) struct Outcome {
    pub(crate) changes: Vec<Change>,
    /// Temp names of an interrupted merge found in plain base directories.
    pub(crate) leftovers: Vec<PathBuf>,
}

/// Compares `branch` over `bases` (highest first) with `bases` alone.
pub(crate) fn compare(branch: &Tree, bases: &[Tree], mtime: bool) -> Result<Outcome> {
    let mut e = Engine {
        branch,
        mtime,
        no_base: bases.is_empty(),
        out: Vec::new(),
        leftovers: Vec::new(),
        links: HashMap::new(),
    };
    let broot = branch.open_root()?;
    let bst = sys::fstat(broot.as_fd()).ctx("stat", &branch.path)?;
    let opaque =
        tree::is_opaque(branch.format, broot.as_fd(), OsStr::new("")).ctx("read", &branch.path)?;
    let base = if bases.is_empty() {
        None
    } else {
        Some(BaseDir::root(bases)?)
    };
    e.out.push(None);
    let hidden = e.walk_dir(Path::new(""), &broot, base.as_ref(), opaque)?;
    if let Some(b) = &base {
        let top = &b.layers[0];
        let bm = tree::read_meta(broot.as_fd(), OsStr::new(""), bst, branch.xattrs)
            .ctx("read", &branch.path)?;
        let st = sys::fstat(top.fd.as_fd()).ctx("stat", &top.tree.path)?;
        let tm = tree::read_meta(top.fd.as_fd(), OsStr::new(""), st, top.tree.xattrs)
            .ctx("read", &top.tree.path)?;
        let fields = tree::differences(
            &bm,
            (broot.as_fd(), OsStr::new("")),
            &tm,
            (top.fd.as_fd(), OsStr::new("")),
            mtime,
        )
        .ctx("compare", &branch.path)?;
        let change = if opaque && hidden > 0 {
            Some(ChangeKind::Opaque)
        } else {
            (!fields.is_empty()).then_some(ChangeKind::Modified)
        };
        e.out[0] = change.map(|c| dir_change(PathBuf::new(), c, fields));
    } else if opaque {
        e.out[0] = Some(dir_change(PathBuf::new(), ChangeKind::Opaque, Vec::new()));
    }
    Ok(Outcome {
        changes: e.out.into_iter().flatten().collect(),
        leftovers: e.leftovers,
    })
}

fn dir_change(path: PathBuf, change: ChangeKind, fields: Vec<&'static str>) -> Change {
    Change {
        path,
        change,
        kind: Some(Kind::Dir),
        fields,
        link_to: None,
    }
}

/// One directory of one base, listed.
struct LayerDir<'a> {
    tree: &'a Tree,
    fd: OwnedFd,
    listing: Listing,
}

/// The same directory across the bases that merge it, highest first.
struct BaseDir<'a> {
    layers: Vec<LayerDir<'a>>,
}

/// Where a name resolves in the bases.
struct Hit {
    /// The layer that shows it.
    pos: usize,
    st: Stat,
    /// The layers whose directories of this name merge (a directory's, top first).
    dirs: Vec<usize>,
}

impl<'a> BaseDir<'a> {
    fn root(bases: &'a [Tree]) -> Result<BaseDir<'a>> {
        let mut layers = Vec::new();
        for (i, t) in bases.iter().enumerate() {
            let fd = t.open_root()?;
            let listing = tree::list(t.format, &fd, true).ctx("read directory", &t.path)?;
            let opaque =
                tree::is_opaque(t.format, fd.as_fd(), OsStr::new("")).ctx("read", &t.path)?;
            layers.push(LayerDir {
                tree: t,
                fd,
                listing,
            });
            if opaque && i + 1 < bases.len() {
                break;
            }
        }
        Ok(BaseDir { layers })
    }

    /// Resolves `name` the way `lookup` does: the first layer that has it decides its
    /// type; a whiteout, a non-directory below a directory, or an opaque directory ends
    /// the merge.
    fn resolve(&self, name: &OsStr) -> Result<Option<Hit>> {
        let mut hit: Option<Hit> = None;
        let n = self.layers.len();
        for (pos, ld) in self.layers.iter().enumerate() {
            let st = match ld.listing.items.get(name) {
                None => continue,
                Some(Item::Whiteout) => break,
                Some(Item::Real(st)) => *st,
            };
            let is_dir = sys::is_dir(&st);
            let h = hit.get_or_insert(Hit {
                pos,
                st,
                dirs: Vec::new(),
            });
            if !is_dir {
                break;
            }
            h.dirs.push(pos);
            if pos + 1 < n
                && tree::is_opaque(ld.tree.format, ld.fd.as_fd(), name)
                    .ctx("read", ld.tree.path.join(name))?
            {
                break;
            }
        }
        Ok(hit.filter(|h| h.dirs.is_empty() || sys::is_dir(&h.st)))
    }

    fn child(&self, hit: &Hit, name: &OsStr, rel: &Path) -> Result<BaseDir<'a>> {
        let mut layers = Vec::new();
        for &pos in &hit.dirs {
            let ld = &self.layers[pos];
            let at = ld.tree.path.join(rel);
            let fd = tree::open_read(ld.fd.as_fd(), Path::new(name)).ctx("open", &at)?;
            let listing = tree::list(ld.tree.format, &fd, false).ctx("read directory", &at)?;
            layers.push(LayerDir {
                tree: ld.tree,
                fd,
                listing,
            });
        }
        Ok(BaseDir { layers })
    }

    /// The names the bases show in this directory.
    fn names(&self) -> BTreeSet<OsString> {
        let mut seen: BTreeSet<OsString> = BTreeSet::new();
        let mut shown = BTreeSet::new();
        for ld in &self.layers {
            let mut hidden_here = Vec::new();
            for (name, item) in &ld.listing.items {
                match item {
                    Item::Whiteout => hidden_here.push(name.clone()),
                    Item::Real(_) => {
                        if seen.insert(name.clone()) {
                            shown.insert(name.clone());
                        }
                    }
                }
            }
            seen.extend(hidden_here);
        }
        shown
    }
}

struct LinkSeen {
    first: PathBuf,
    base_id: Option<(u64, u64)>,
    unchanged: bool,
}

struct Engine<'a> {
    branch: &'a Tree,
    mtime: bool,
    no_base: bool,
    out: Vec<Option<Change>>,
    leftovers: Vec<PathBuf>,
    links: HashMap<(u64, u64), LinkSeen>,
}

impl Engine<'_> {
    /// Compares one directory; returns how many base entries below it are hidden only
    /// by an opaque directory (the caller's, or one further up).
    fn walk_dir(
        &mut self,
        rel: &Path,
        bfd: &OwnedFd,
        base: Option<&BaseDir<'_>>,
        opaque_mode: bool,
    ) -> Result<usize> {
        let at = self.branch.path.join(rel);
        let listing = tree::list(self.branch.format, bfd, rel.as_os_str().is_empty())
            .ctx("read directory", &at)?;
        let mut names: BTreeSet<OsString> = listing.items.keys().cloned().collect();
        if let Some(b) = base {
            for ld in b.layers.iter().filter(|l| l.tree.format.is_none()) {
                self.leftovers
                    .extend(ld.listing.leftovers.iter().map(|n| rel.join(n)));
            }
            if opaque_mode {
                names.extend(b.names());
            }
        }
        let mut hidden = 0;
        for name in &names {
            let path = rel.join(name);
            match listing.items.get(name) {
                Some(Item::Real(st)) => {
                    hidden += self.entry(&path, name, *st, bfd, base, opaque_mode)?
                }
                other => {
                    let whiteout = matches!(other, Some(Item::Whiteout));
                    if self.no_base {
                        if whiteout {
                            self.push(path, ChangeKind::Deleted, None, Vec::new(), None);
                        }
                        continue;
                    }
                    let Some(b) = base else { continue };
                    if let Some(h) = b.resolve(name)? {
                        self.push(
                            path,
                            ChangeKind::Deleted,
                            Some(Kind::of(&h.st)),
                            Vec::new(),
                            None,
                        );
                        if !whiteout {
                            hidden += 1;
                        }
                    }
                }
            }
        }
        Ok(hidden)
    }

    fn push(
        &mut self,
        path: PathBuf,
        change: ChangeKind,
        kind: Option<Kind>,
        fields: Vec<&'static str>,
        link_to: Option<PathBuf>,
    ) {
        self.out.push(Some(Change {
            path,
            change,
            kind,
            fields,
            link_to,
        }));
    }

    fn entry(
        &mut self,
        path: &Path,
        name: &OsStr,
        st: Stat,
        bfd: &OwnedFd,
        base: Option<&BaseDir<'_>>,
        opaque_mode: bool,
    ) -> Result<usize> {
        let at = self.branch.path.join(path);
        let bm = tree::read_meta(bfd.as_fd(), name, st, self.branch.xattrs).ctx("read", &at)?;
        let hit = match base {
            Some(b) => b.resolve(name)?,
            None => None,
        };
        let compare = |h: &Hit, b: &BaseDir<'_>| -> Result<Vec<&'static str>> {
            let ld = &b.layers[h.pos];
            let m = tree::read_meta(ld.fd.as_fd(), name, h.st, ld.tree.xattrs)
                .ctx("read", ld.tree.path.join(path))?;
            tree::differences(
                &bm,
                (bfd.as_fd(), name),
                &m,
                (ld.fd.as_fd(), name),
                self.mtime,
            )
            .ctx("compare", &at)
        };
        if sys::is_dir(&st) {
            let opaque = tree::is_opaque(self.branch.format, bfd.as_fd(), name).ctx("read", &at)?;
            let idx = self.out.len();
            self.out.push(None);
            let child = tree::open_read(bfd.as_fd(), Path::new(name)).ctx("open", &at)?;
            let (base_dir, fields) = match (&hit, base) {
                (Some(h), Some(b)) if sys::is_dir(&h.st) => {
                    (Some(b.child(h, name, path)?), compare(h, b)?)
                }
                _ => (None, Vec::new()),
            };
            let hidden = self.walk_dir(path, &child, base_dir.as_ref(), opaque_mode || opaque)?;
            let (change, fields, up) = match &hit {
                None if self.no_base && opaque => (Some(ChangeKind::Opaque), fields, 0),
                None => (Some(ChangeKind::Added), fields, 0),
                Some(h) if !sys::is_dir(&h.st) => (Some(ChangeKind::Modified), vec!["type"], 0),
                Some(_) if opaque && hidden > 0 => (Some(ChangeKind::Opaque), fields, 0),
                Some(_) => {
                    let c = (!fields.is_empty()).then_some(ChangeKind::Modified);
                    (c, fields, if opaque { 0 } else { hidden })
                }
            };
            self.out[idx] = change.map(|c| dir_change(path.to_path_buf(), c, fields));
            return Ok(up);
        }
        let (mut change, mut fields) = match (&hit, base) {
            (Some(h), Some(b)) => {
                let f = compare(h, b)?;
                ((!f.is_empty()).then_some(ChangeKind::Modified), f)
            }
            _ => (Some(ChangeKind::Added), Vec::new()),
        };
        let mut link_to = None;
        if st.st_nlink > 1 {
            let base_id = hit.as_ref().map(|h| (h.st.st_dev, h.st.st_ino));
            match self.links.get(&(st.st_dev, st.st_ino)) {
                None => {
                    self.links.insert(
                        (st.st_dev, st.st_ino),
                        LinkSeen {
                            first: path.to_path_buf(),
                            base_id,
                            unchanged: change.is_none(),
                        },
                    );
                }
                Some(l) => {
                    let same = l.unchanged && base_id.is_some() && base_id == l.base_id;
                    if !same {
                        link_to = Some(l.first.clone());
                        if change.is_none() {
                            change = Some(ChangeKind::Modified);
                            fields = vec!["link"];
                        }
                    }
                }
            }
        }
        if let Some(c) = change {
            self.push(path.to_path_buf(), c, Some(Kind::of(&st)), fields, link_to);
        }
        Ok(0)
    }
}

/// Opens the branch and the bases of a diff or merge, each with its format.
pub(crate) fn open_trees(
    branch: &Path,
    bases: &[PathBuf],
    arg: FormatArg,
) -> Result<(Tree, Vec<Tree>)> {
    let b = Tree::open(branch, "branch")?.with_format(arg, tree::default_overlay())?;
    let fallback = b.format.unwrap_or_else(tree::default_overlay);
    let mut v = Vec::new();
    for p in bases {
        v.push(Tree::open(p, "base")?.with_format(arg, fallback)?);
    }
    Ok((b, v))
}

#[cfg(test)]
mod tests {
    use super::super::diff::Summary;
    use super::*;
    use crate::core::WhiteoutFormat;
    use std::fs;

    fn lines(o: &Outcome) -> Vec<String> {
        o.changes.iter().map(Change::line).collect()
    }

    /// A base `L` and a branch `B` on it, in `f`.
    fn setup(f: WhiteoutFormat) -> (tempfile::TempDir, Tree, Vec<Tree>) {
        let d = tempfile::tempdir().unwrap();
        let (b, l) = (d.path().join("B"), d.path().join("L"));
        for p in ["L/keep", "L/old/x", "L/op/y", "L/same", "L/dir"] {
            fs::create_dir_all(d.path().join(p)).unwrap();
        }
        fs::write(l.join("keep/a"), "a").unwrap();
        fs::write(l.join("same/s"), "s").unwrap();
        fs::write(l.join("op/y/z"), "z").unwrap();
        fs::write(l.join("op/kept"), "k").unwrap();
        fs::write(l.join("file"), "old").unwrap();
        for p in ["B/keep", "B/op", "B/same"] {
            fs::create_dir_all(d.path().join(p)).unwrap();
        }
        fs::write(b.join("keep/a"), "changed").unwrap();
        fs::write(b.join("keep/new"), "n").unwrap();
        fs::write(b.join("op/kept"), "k").unwrap();
        fs::write(b.join("same/s"), "s").unwrap();
        fs::write(b.join("dir"), "now a file").unwrap();
        fs::hard_link(b.join("keep/new"), b.join("keep/new2")).unwrap();
        let root = Tree::open(&b, "branch").unwrap();
        let fd = root.open_root().unwrap();
        f.make_whiteout(fd.as_fd(), OsStr::new("old")).unwrap();
        f.make_whiteout(fd.as_fd(), OsStr::new("nothing")).unwrap();
        f.set_opaque(fd.as_fd(), OsStr::new("op")).unwrap();
        drop(fd);
        let (t, bases) = open_trees(&b, &[l], FormatArg::Auto).unwrap();
        assert_eq!(t.format, Some(f));
        drop(root);
        (d, t, bases)
    }

    fn formats() -> Vec<WhiteoutFormat> {
        let d = tempfile::tempdir().unwrap();
        let t = Tree::open(d.path(), "x").unwrap();
        let fd = t.open_root().unwrap();
        let o = tree::default_overlay();
        if o.probe(fd.as_fd()) {
            vec![WhiteoutFormat::Wh, o]
        } else {
            vec![WhiteoutFormat::Wh]
        }
    }

    #[test]
    fn reports_every_kind_of_change_in_every_format() {
        for f in formats() {
            let (_d, b, bases) = setup(f);
            let o = compare(&b, &bases, false).unwrap();
            assert_eq!(
                lines(&o),
                [
                    "M  dir  (type)",
                    "M  keep/a  (content)",
                    "A  keep/new",
                    "A  keep/new2  (hard link to keep/new)",
                    "D  old/",
                    "O  op/",
                    "D  op/y/",
                ],
                "{f:?}"
            );
            let s = Summary::of(&o.changes);
            assert_eq!((s.added, s.modified, s.deleted, s.opaque), (2, 2, 2, 1));
        }
    }

    #[test]
    fn without_a_base_everything_is_added() {
        for f in formats() {
            let (_d, b, _) = setup(f);
            let o = compare(&b, &[], false).unwrap();
            let l = lines(&o);
            assert!(l.contains(&"D  nothing".to_string()), "{l:?}");
            assert!(l.contains(&"O  op/".to_string()), "{l:?}");
            assert!(l.contains(&"A  same/s".to_string()), "{l:?}");
            assert!(!l.iter().any(|x| x.contains(".wh.")), "{l:?}");
        }
    }

    #[test]
    fn metadata_and_mtime_fields() {
        use std::os::unix::fs::PermissionsExt;
        let (d, b, bases) = setup(WhiteoutFormat::Wh);
        fs::set_permissions(d.path().join("B/same/s"), fs::Permissions::from_mode(0o600)).unwrap();
        let o = compare(&b, &bases, false).unwrap();
        assert!(lines(&o).contains(&"M  same/s  (mode)".to_string()));
        let old = libc::timespec {
            tv_sec: 1_000_000,
            tv_nsec: 5,
        };
        let c = std::ffi::CString::new(
            d.path()
                .join("B/same")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid C string and two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [old, old].as_ptr(), 0) },
            0
        );
        let o = compare(&b, &bases, true).unwrap();
        assert!(lines(&o).iter().any(|l| l.starts_with("M  same/  (mtime")));
        let v = serde_json::to_value(&o.changes).unwrap();
        assert!(v
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "same/s" && c["change"] == "modified" && c["type"] == "file"));
    }

    #[test]
    fn a_base_stack_honours_its_own_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        for p in ["B", "M", "L"] {
            fs::create_dir(d.path().join(p)).unwrap();
        }
        fs::write(d.path().join("L/gone"), "x").unwrap();
        fs::write(d.path().join("L/kept"), "x").unwrap();
        fs::write(d.path().join("M/.wh.gone"), "").unwrap();
        fs::write(d.path().join("B/gone"), "back").unwrap();
        let (b, bases) = open_trees(
            &d.path().join("B"),
            &[d.path().join("M"), d.path().join("L")],
            FormatArg::Auto,
        )
        .unwrap();
        assert_eq!(bases[0].format, Some(WhiteoutFormat::Wh));
        assert_eq!(lines(&compare(&b, &bases, false).unwrap()), ["A  gone"]);
    }
}

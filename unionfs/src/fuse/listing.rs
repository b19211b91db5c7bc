//! Directory listings in cookie order.
//!
//! A readdir offset is a cookie: a hash of the name it continues after. A continuation
//! offset therefore names a place in the directory whatever changed since, the way
//! ext4's hash order does: a name present for the whole scan is returned exactly once,
//! even if the listing is taken again in the middle. So a listing need not live as long
//! as an open handle, and the kernel can skip OPENDIR and RELEASEDIR altogether.
//!
//! Two names whose 63-bit hashes collide would, if a reply ended between them, lose the
//! second; at a million names the odds are about 1 in 10^7 per directory.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;

use crate::core::DirEntry;

/// The offset that continues after ".".
pub(crate) const AFTER_DOT: u64 = 1;
/// The offset that continues after "..".
pub(crate) const AFTER_DOTDOT: u64 = 2;
/// The offset after the last entry: nothing follows (the kernel's final, empty call).
pub(crate) const END: u64 = i64::MAX as u64;

/// The cookie of `name`, in (AFTER_DOTDOT, END).
fn cookie(name: &OsStr) -> u64 {
    // `DefaultHasher::new()` has fixed keys: the same name gives the same cookie for the
    // daemon's whole life, which is as long as an offset can be handed back to it.
    let mut h = DefaultHasher::new();
    name.as_bytes().hash(&mut h);
    AFTER_DOTDOT + 1 + h.finish() % (END - AFTER_DOTDOT - 1)
}

/// A merged listing, sorted by cookie.
pub(crate) struct Listing {
    entries: Vec<(u64, DirEntry)>,
}

impl Listing {
    /// How many entries it has.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn new(entries: Vec<DirEntry>) -> Listing {
        let mut entries: Vec<(u64, DirEntry)> =
            entries.into_iter().map(|e| (cookie(&e.name), e)).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        Listing { entries }
    }

    /// The entries after offset `off` (past "." and ".."), each with the offset that
    /// continues after it: its own cookie, or END for the last one.
    pub(crate) fn after(&self, off: u64) -> impl Iterator<Item = (u64, &DirEntry)> + '_ {
        let start = if off <= AFTER_DOTDOT {
            0
        } else {
            self.entries.partition_point(|(c, _)| *c <= off)
        };
        let last = self.entries.len().saturating_sub(1);
        self.entries[start.min(self.entries.len())..]
            .iter()
            .enumerate()
            .map(move |(i, (c, e))| (if start + i == last { END } else { *c }, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn listing(names: &[String]) -> Listing {
        Listing::new(
            names
                .iter()
                .map(|n| DirEntry {
                    name: OsString::from(n),
                    d_type: libc::DT_REG,
                    branch: 0,
                    ino: None,
                })
                .collect(),
        )
    }

    fn names(l: &Listing, off: u64, n: usize) -> Vec<(u64, String)> {
        l.after(off)
            .take(n)
            .map(|(o, e)| (o, e.name.to_string_lossy().into_owned()))
            .collect()
    }

    /// Reads the whole listing in chunks of `chunk`, calling `between` after each chunk
    /// with the listing to continue from (it may return a different one).
    fn scan(
        mut l: Listing,
        chunk: usize,
        mut between: impl FnMut(usize) -> Option<Listing>,
    ) -> Vec<String> {
        let mut off = 0;
        let mut out = Vec::new();
        let mut round = 0;
        while off != END {
            let got = names(&l, off, chunk);
            if got.is_empty() {
                break;
            }
            off = got.last().unwrap().0;
            out.extend(got.into_iter().map(|(_, n)| n));
            if let Some(next) = between(round) {
                l = next;
            }
            round += 1;
        }
        out
    }

    #[test]
    fn a_scan_in_chunks_returns_every_name_once_and_ends_with_end() {
        let all: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
        let l = listing(&all);
        let mut seen = scan(l, 7, |_| None);
        assert_eq!(seen.len(), 1000);
        seen.sort();
        let mut want = all.clone();
        want.sort();
        assert_eq!(seen, want);
        let l = listing(&all);
        assert_eq!(l.after(0).last().unwrap().0, END);
        assert_eq!(l.after(END).count(), 0);
    }

    #[test]
    fn offsets_do_not_depend_on_the_order_the_branches_gave() {
        let a: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
        let mut b = a.clone();
        b.reverse();
        assert_eq!(names(&listing(&a), 0, 100), names(&listing(&b), 0, 100));
    }

    #[test]
    fn a_listing_taken_again_mid_scan_keeps_unchanged_names_exactly_once() {
        // Half the names stay; between chunks some names go and new ones come.
        let stay: Vec<String> = (0..300).map(|i| format!("stay{i}")).collect();
        let mut current: Vec<String> = stay.clone();
        current.extend((0..300).map(|i| format!("gone{i}")));
        let first = listing(&current);
        let seen = scan(first, 13, |round| {
            current.retain(|n| !n.starts_with(&format!("gone{round}")));
            current.push(format!("new{round}"));
            Some(listing(&current))
        });
        for n in &stay {
            assert_eq!(seen.iter().filter(|s| *s == n).count(), 1, "{n}");
        }
        let mut dedup = seen.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), seen.len(), "no name twice");
    }

    #[test]
    fn dot_offsets_start_at_the_first_entry_and_an_empty_listing_has_none() {
        let l = listing(&["a".into(), "b".into()]);
        assert_eq!(names(&l, AFTER_DOT, 9), names(&l, 0, 9));
        assert_eq!(names(&l, AFTER_DOTDOT, 9), names(&l, 0, 9));
        assert_eq!(listing(&[]).after(0).count(), 0);
    }
}

//! The node table: what the kernel holds, by node id (which is also `st_ino`).
//!
//! Each node keeps the core's `Obj` for it and the kernel's lookup count; `forget`
//! drops the node when the count reaches zero, so memory follows what the kernel
//! caches. Hard links share one node; the node remembers each name it was found under
//! so that removing one name leaves the others reachable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::core::Obj;

/// One inode the kernel knows.
pub(crate) struct Node {
    pub(crate) state: RwLock<NodeState>,
    lookups: AtomicU64,
    /// A directory whose files get looked up one by one (stat, open): its listings,
    /// and those of directories found through them, carry every entry's attributes.
    /// Otherwise only directories carry them (see `dir.rs`).
    files_looked_up: AtomicBool,
    /// What of the file the daemon last stored in the kernel's page cache at an open (a
    /// digest of its identity, size and times; 0: nothing), so that it is not stored
    /// again while unchanged (see `files.rs`).
    pub(crate) prefilled: AtomicU64,
}

/// What a node remembers of its object: enough to name it to the core, no more (a
/// `find` over a big tree keeps one of these per file). Attributes are always read fresh.
pub(crate) struct NodeState {
    pub(crate) obj: SlimObj,
    /// Other names of the same inode (hard links), besides `obj.path`.
    pub(crate) aliases: Vec<PathBuf>,
}

pub(crate) struct SlimObj {
    pub(crate) path: PathBuf,
    layers: crate::core::Layers,
    mode: u32,
    ino: u64,
    indexed: Option<Box<(u16, String)>>,
    gen: u64,
}

impl SlimObj {
    fn from_obj(o: Obj) -> SlimObj {
        let mode = o.st.st_mode;
        let (path, layers, ino, indexed, gen) = o.into_parts();
        let mut path = path;
        path.shrink_to_fit();
        SlimObj {
            path,
            layers,
            mode,
            ino,
            indexed: indexed.map(Box::new),
            gen,
        }
    }

    fn to_obj(&self) -> Obj {
        Obj::from_parts(
            self.path.clone(),
            self.layers.clone(),
            self.mode,
            self.ino,
            self.indexed.as_deref().cloned(),
            self.gen,
        )
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

impl Node {
    /// See `files_looked_up`.
    pub(crate) fn files_looked_up(&self) -> bool {
        self.files_looked_up.load(Ordering::Relaxed)
    }

    pub(crate) fn set_files_looked_up(&self) {
        if !self.files_looked_up() {
            self.files_looked_up.store(true, Ordering::Relaxed);
        }
    }

    /// The object, with only `st_mode` of its stat filled in (attributes are read fresh).
    pub(crate) fn obj(&self) -> Obj {
        self.state.read().obj.to_obj()
    }

    /// A metadata-only copy (its data still below).
    pub(crate) fn is_metacopy(&self) -> bool {
        let s = self.state.read();
        !s.obj.is_dir() && s.obj.layers.len() > 1
    }

    pub(crate) fn set_obj(&self, obj: Obj) {
        let mut obj = SlimObj::from_obj(obj);
        let mut s = self.state.write();
        // A node's number is its identity for the kernel: it never changes, whatever a
        // later lookup computes (the kernel would otherwise see st_ino change).
        obj.ino = s.obj.ino;
        if s.obj.path != obj.path {
            let old = std::mem::replace(&mut s.obj, obj);
            if !s.aliases.contains(&old.path) && s.aliases.len() < 8 && !old.is_dir() {
                s.aliases.push(old.path);
            }
            let p = s.obj.path.clone();
            s.aliases.retain(|a| *a != p);
        } else {
            s.obj = obj;
        }
    }

    /// The name `path` is gone: switch to another known name if there is one.
    pub(crate) fn drop_name(&self, path: &Path) -> Option<PathBuf> {
        let mut s = self.state.write();
        s.aliases.retain(|a| a != path);
        if s.obj.path == path {
            if let Some(next) = s.aliases.pop() {
                return Some(next);
            }
        }
        None
    }
}

/// All nodes, by id.
pub(crate) struct NodeTable {
    map: DashMap<u64, Arc<Node>>,
}

impl NodeTable {
    pub(crate) fn new(root: Obj) -> NodeTable {
        let map = crate::core::new_map();
        map.insert(
            crate::core::fuser_root_ino(),
            Arc::new(Node {
                state: RwLock::new(NodeState {
                    obj: SlimObj::from_obj(root),
                    aliases: Vec::new(),
                }),
                lookups: AtomicU64::new(1),
                files_looked_up: AtomicBool::new(false),
                prefilled: AtomicU64::new(0),
            }),
        );
        NodeTable { map }
    }

    pub(crate) fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.map.get(&ino).map(|n| n.clone())
    }

    /// Records one more kernel reference to `obj`'s node (creating it if needed).
    pub(crate) fn remember(&self, obj: Obj) -> Arc<Node> {
        let ino = obj.ino;
        // The count goes up under the shard lock, so a racing forget cannot drop it.
        let node = {
            let entry = self.map.entry(ino).or_insert_with(|| {
                Arc::new(Node {
                    state: RwLock::new(NodeState {
                        obj: SlimObj::from_obj(obj.clone()),
                        aliases: Vec::new(),
                    }),
                    lookups: AtomicU64::new(0),
                    files_looked_up: AtomicBool::new(false),
                    prefilled: AtomicU64::new(0),
                })
            });
            entry.lookups.fetch_add(1, Ordering::Relaxed);
            entry.clone()
        };
        node.set_obj(obj);
        node
    }

    /// The kernel dropped `n` references.
    pub(crate) fn forget(&self, ino: u64, n: u64) {
        if ino == crate::core::fuser_root_ino() {
            return;
        }
        self.map.remove_if(&ino, |_, node| {
            let left = node.lookups.load(Ordering::Relaxed).saturating_sub(n);
            node.lookups.store(left, Ordering::Relaxed);
            left == 0
        });
    }

    /// After a rename, every node at or below `from` now lives at or below `to`.
    pub(crate) fn rename_prefix(&self, from: &Path, to: &Path) {
        for item in self.map.iter() {
            let mut s = item.value().state.write();
            if let Ok(rest) = s.obj.path.strip_prefix(from) {
                s.obj.path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    /// (number, path) of every node.
    pub(crate) fn all(&self) -> Vec<(u64, std::path::PathBuf)> {
        self.map
            .iter()
            .map(|i| (*i.key(), i.value().state.read().obj.path.clone()))
            .collect()
    }

    /// How many nodes the kernel holds.
    pub(crate) fn count(&self) -> usize {
        self.map.len()
    }

    /// Every node whose path is `path` or below it (for refreshing after a move).
    pub(crate) fn under(&self, path: &Path) -> Vec<Arc<Node>> {
        self.map
            .iter()
            .filter(|i| i.value().state.read().obj.path.starts_with(path))
            .map(|i| i.value().clone())
            .collect()
    }
}

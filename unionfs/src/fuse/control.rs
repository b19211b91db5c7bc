//! What the control socket needs from the adapter: open-file counts per branch, cache
//! invalidation after a stack change, counters. The stack changes themselves are the
//! core's (`core::stackops`, `Union::change_stack`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use fuser::{INodeNo, Notifier};

use super::handles::HandleTable;
use super::nodes::NodeTable;
use super::UnionFs;
use crate::core::stackops::StackError;
use crate::core::Union;

/// A handle on a served union for out-of-band control.
#[derive(Clone)]
pub struct Control {
    /// The union.
    pub union: Arc<Union>,
    nodes: Arc<NodeTable>,
    handles: Arc<HandleTable>,
    passthrough: Arc<super::passthrough::PassthroughTable<fuser::BackingId>>,
    notifier: Arc<OnceLock<Notifier>>,
    dir_fds: Arc<super::dirfds::DirFdCache>,
    readahead: Arc<super::readahead::ReadAhead>,
}

impl UnionFs {
    /// A control handle; give it the session's notifier once the session exists.
    pub fn control(&self) -> Control {
        Control {
            union: self.union.clone(),
            nodes: self.nodes.clone(),
            handles: self.handles.clone(),
            passthrough: self.passthrough.clone(),
            notifier: self.notifier.clone(),
            dir_fds: self.dir_fds.clone(),
            readahead: self.readahead.clone(),
        }
    }
}

impl Control {
    /// Lets the control handle tell the kernel to drop caches.
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Directory listings read ahead so far, and how many of them served.
    pub fn listings_read_ahead(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.readahead.stats;
        (s.read.load(Relaxed), s.used.load(Relaxed))
    }

    /// Open files (and directories) whose data lives on the branch with this id.
    pub fn open_on(&self, branch_id: u64) -> usize {
        self.handles.open_on(branch_id)
    }

    /// Moves every file that FUSE passthrough handles hold on the branch with id
    /// `from_id` (which just stopped taking writes) to its write target in the stack now
    /// in force, keeping its inode, with a point-in-time copy left behind
    /// (`Union::lift`): the kernel writes such files itself, so this is the only way
    /// their later writes land above. Files with passthrough writers must move (else
    /// the change is refused and every lift undone); files only read through
    /// passthrough move where they can, so that a later write-open finds them final.
    /// Call inside `Union::change_stack_then`, while no operation runs.
    pub fn lift_passthrough_files(&self, from_id: u64) -> Result<(), StackError> {
        let stack = self.union.stack();
        let mut lifted: Vec<(u64, crate::core::Lift)> = Vec::new();
        for (ino, writers) in self.handles.passthrough_on(from_id) {
            let (Some(node), Some(live)) =
                (self.nodes.get(ino), self.passthrough.backing_file(ino))
            else {
                continue;
            };
            // A name that is gone (unlinked while open) shows nothing that could change.
            let Ok(obj) = self.union.relookup(&stack, &node.obj()) else {
                continue;
            };
            if (obj.st.st_dev, obj.st.st_ino) != live {
                continue;
            }
            match self.union.lift(&obj, live) {
                Ok(l) => lifted.push((ino, l)),
                Err(_) if !writers => {}
                Err(e) => {
                    let mut why = crate::core::Lift::why(&e);
                    for (_, l) in lifted.iter_mut().rev() {
                        if !self.union.undo_lift(l) {
                            // Said, never hidden: its writes since are only there.
                            let at = stack.branches[l.to() as usize].path.join(l.path());
                            why.push_str(&format!(
                                "; and {} could not be moved back: its live data is at {}",
                                l.path().display(),
                                at.display()
                            ));
                        }
                    }
                    return Err(StackError::CannotLift {
                        path: obj.path.display().to_string(),
                        why,
                    });
                }
            }
        }
        for (ino, l) in &lifted {
            let id = stack.branches[l.to() as usize].id;
            self.handles.moved(*ino, from_id, id);
        }
        if !lifted.is_empty() {
            tracing::info!(
                "{} open file(s) moved up with their passthrough handles",
                lifted.len()
            );
        }
        Ok(())
    }

    /// Makes the kernel write back what page-cache writers left dirty (shared mmap), so
    /// a stack change about to start finds it in the branch it was written to.
    pub fn write_back_cached_writers(&self) {
        let Some(n) = self.notifier.get() else { return };
        for ino in self.handles.cached_writers() {
            let _ = n.inval_inode(INodeNo(ino), 0, 0);
        }
    }

    /// Inodes with passthrough handles open.
    pub fn passthrough_inodes(&self) -> usize {
        self.passthrough.passthrough_inodes()
    }

    /// Open handles of any kind.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// Inodes the kernel holds.
    pub fn nodes(&self) -> usize {
        self.nodes.count()
    }

    /// Makes the kernel forget every name and attribute it cached, so the next lookup,
    /// readdir or read asks the (new) stack. Call without holding the union's gate:
    /// the kernel may need locks that in-flight requests hold.
    pub fn invalidate_all(&self) {
        self.dir_fds.clear();
        self.readahead.clear();
        let Some(n) = self.notifier.get() else { return };
        let all = self.nodes.all();
        let by_path: HashMap<&Path, u64> = all.iter().map(|(i, p)| (p.as_path(), *i)).collect();
        for (ino, path) in &all {
            let _ = n.inval_inode(INodeNo(*ino), 0, 0);
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let pino = by_path
                .get(parent)
                .copied()
                .unwrap_or(crate::core::fuser_root_ino());
            let _ = n.inval_entry(INodeNo(pino), OsStr::new(name));
        }
    }
}

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
}

impl UnionFs {
    /// A control handle; give it the session's notifier once the session exists.
    pub fn control(&self) -> Control {
        Control {
            union: self.union.clone(),
            nodes: self.nodes.clone(),
            handles: self.handles.clone(),
            passthrough: self.passthrough.clone(),
            notifier: Arc::new(OnceLock::new()),
        }
    }
}

impl Control {
    /// Lets the control handle tell the kernel to drop caches.
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Open files (and directories) whose data lives on the branch with this id.
    pub fn open_on(&self, branch_id: u64) -> usize {
        self.handles.open_on(branch_id)
    }

    /// Files open for writing by FUSE passthrough on the branch with this id: their
    /// writes reach that branch whatever the stack says.
    pub fn passthrough_writers_on(&self, branch_id: u64) -> usize {
        self.handles.passthrough_writers_on(branch_id)
    }

    /// Waits up to `grace` for the passthrough writers on `branch_id` to close, starting
    /// no new passthrough meanwhile; the returned guard keeps it so until dropped (held
    /// across the stack change, whose own check then sees no newcomers).
    pub fn drain_passthrough_writers(
        &self,
        branch_id: u64,
        grace: std::time::Duration,
    ) -> impl Drop {
        let g = self.passthrough.hold();
        let deadline = std::time::Instant::now() + grace;
        while self.passthrough_writers_on(branch_id) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        g
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

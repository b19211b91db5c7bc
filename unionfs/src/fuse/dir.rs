//! Directory listings: `.` and `..`, then the merged entries of the handle's listing
//! (taken once per open directory, so offsets are stable), with `d_ino == st_ino`.

use std::time::Duration;

use fuser::{FileHandle, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::{attr, err, UnionFs};

impl UnionFs {
    pub(super) fn do_readdir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (obj, list) = match self.dir_entries(ino, fh) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let mut i = offset as usize;
        let mut cursor = self.union.dir_cursor(&obj);
        while i < list.len() + 2 {
            let full = match i {
                0 => reply.add(INodeNo(obj.ino), 1, fuser::FileType::Directory, "."),
                1 => reply.add(
                    INodeNo(self.parent_ino(&obj)),
                    2,
                    fuser::FileType::Directory,
                    "..",
                ),
                _ => {
                    let e = &list[i - 2];
                    // d_ino must equal st_ino: ask the union for the entry's number.
                    let (ino, kind) = match cursor.lookup(&e.name) {
                        Ok(c) => (c.ino, attr::file_type(c.st.st_mode)),
                        Err(_) => {
                            i += 1;
                            continue;
                        }
                    };
                    reply.add(INodeNo(ino), (i + 1) as u64, kind, &e.name)
                }
            };
            if full {
                break;
            }
            i += 1;
        }
        reply.ok();
    }

    pub(super) fn do_readdirplus(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (obj, list) = match self.dir_entries(ino, fh) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let mut i = offset as usize;
        let mut cursor = self.union.dir_cursor(&obj);
        // "." and ".." need the directory's own attributes: only the first call has them
        // (the later ones, the final empty one included, save the stat).
        let dot = if i < 2 {
            match self
                .union
                .stat(&obj)
                .map_err(err)
                .and_then(|st| self.attr_of(&obj, &st))
            {
                Ok(a) => Some(a),
                Err(e) => return reply.error(e),
            }
        } else {
            None
        };
        while i < list.len() + 2 {
            let full = match i {
                0 | 1 => {
                    let Some(dot) = &dot else { break };
                    let (ino, name) = if i == 0 {
                        (obj.ino, ".")
                    } else {
                        (self.parent_ino(&obj), "..")
                    };
                    reply.add(
                        INodeNo(ino),
                        i as u64 + 1,
                        name,
                        &Duration::ZERO,
                        dot,
                        Generation(0),
                    )
                }
                _ => {
                    let e = &list[i - 2];
                    let child = match cursor.lookup(&e.name) {
                        Ok(c) => c,
                        Err(_) => {
                            i += 1;
                            continue;
                        }
                    };
                    let a = match self.attr_of(&child, &child.st) {
                        Ok(a) => a,
                        Err(_) => {
                            i += 1;
                            continue;
                        }
                    };
                    let full = reply.add(
                        INodeNo(child.ino),
                        (i + 1) as u64,
                        &e.name,
                        &self.ttls_for(&a).1,
                        &a,
                        Generation(0),
                    );
                    if !full {
                        // The kernel now holds a reference to this entry.
                        self.nodes.remember(child);
                    }
                    full
                }
            };
            if full {
                break;
            }
            i += 1;
        }
        reply.ok();
    }
}

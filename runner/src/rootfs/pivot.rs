//! pivot_root into the new root and detach the old one.
//!
//! The `pivot_root(".", ".")` form (runc's, from the pivot_root(2) man page): with the new
//! root as the working directory, the old root ends up mounted on top of it, and a lazy
//! unmount of "." removes it. No `put_old` directory is needed, so this also works on a
//! read-only rootfs. The old root is rslave (step 1 of the plan), so the detach cannot
//! propagate to the host.

use std::path::Path;

use nix::mount::MntFlags;

use crate::sys::{SysError, Syscall};

/// Switches the root to `new_root` and leaves the working directory at the new "/".
pub fn pivot_root(new_root: &Path, sys: &dyn Syscall) -> Result<(), SysError> {
    sys.chdir(new_root)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))
}

use std::io;

use crate::session::MAX_WRITE_SIZE;

/// Size of the buffer for reading a request from the kernel. Since the kernel may send
/// up to `MAX_WRITE_SIZE` bytes in a write request, we use that value plus some extra space.
const BUFFER_SIZE: usize = MAX_WRITE_SIZE + 4096;

/// The buffer a classic loop reads requests into.
///
/// An anonymous mapping, not a `Vec`: its pages are faulted in only when the kernel
/// writes a request that long, where `vec![0; 16 MiB]` in a new thread's malloc arena
/// clears all of it (glibc serves it from the arena once a freed mapping has raised its
/// mmap threshold), which cost every mount milliseconds of page faults. The mapping is
/// page aligned, so `fuse_in_header` is aligned at its start.
#[derive(Debug)]
pub(crate) struct FuseReadBuf {
    ptr: *mut u8,
}

// SAFETY: the mapping is owned by this value alone.
unsafe impl Send for FuseReadBuf {}

impl FuseReadBuf {
    /// Maps a fresh, zeroed buffer of `BUFFER_SIZE` bytes.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BUFFER_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast() })
    }

    /// The whole buffer.
    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is BUFFER_SIZE bytes, readable and writable, zeroed by the
        // kernel when it was made, and borrowed mutably through `self` only.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, BUFFER_SIZE) }
    }
}

impl Drop for FuseReadBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no slice of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), BUFFER_SIZE);
        }
    }
}


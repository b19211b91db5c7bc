//! Networking inside a new network namespace: only the loopback interface, brought up
//! (bubblewrap's `loopback_setup`, done here with the two classic ioctls instead of
//! netlink: `lo` exists in every new netns, it only needs IFF_UP).

use std::io;

/// Brings `lo` up in the caller's network namespace (needs CAP_NET_ADMIN there).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; the name fits (3 bytes + NUL).
    let r = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let e = io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            Err(e)
        } else {
            Ok(())
        }
    };
    r
}

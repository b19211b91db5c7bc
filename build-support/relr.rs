// Shared by unionfs/build.rs and runner/build.rs (`include!`d, so no inner docs here).
//
// Links the binaries with packed relative relocations (DT_RELR) where the C library
// understands them (glibc 2.36+). A PIE binary this size has about 14,000 relative
// relocations: as RELA entries (24 bytes each, 330 KiB) the dynamic loader reads and
// applies them at every start, about 0.2 ms of a mount command's 2 ms on a VM. RELR
// packs them into a bitmap of a few KiB. Older glibc would ignore DT_RELR and crash, so
// there (and when cross-compiling, where the host's glibc says nothing) the binaries
// stay as they are.

/// glibc 2.36 or later on the build host.
fn glibc_has_relr() -> bool {
    let getconf = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output();
    let Ok(out) = getconf else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}

/// Asks for RELR where `glibc_has_relr` and the target is this host's.
fn link_with_relr() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let native = var("TARGET") == var("HOST");
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if native && gnu_linux && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

//! Build script: packed relative relocations for the binaries (see build-support/relr.rs).

include!("../build-support/relr.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build-support/relr.rs");
    link_with_relr();
}

//! Gives the shared library a SONAME with the ABI version (`libgardenstate.so.1`), so
//! programs linked against one ABI never load another. The number is read from
//! `src/version.rs` (`GDS_ABI_VERSION`), its single source.

fn main() {
    println!("cargo:rerun-if-changed=src/version.rs");
    let source = std::fs::read_to_string("src/version.rs").expect("read src/version.rs");
    let abi: u32 = source
        .lines()
        .find_map(|l| l.strip_prefix("pub const GDS_ABI_VERSION: u32 = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .and_then(|n| n.parse().ok())
        .expect("src/version.rs must define `pub const GDS_ABI_VERSION: u32 = N;`");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libgardenstate.so.{abi}");
    }
}

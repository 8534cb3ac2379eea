//! Versions. The library version is this crate's version; the ABI version is separate and
//! changes only when a compiled binding would break (a function or struct changed meaning,
//! a fixed struct changed layout). Adding functions, status codes, or fields at the end of a
//! `struct_size` struct keeps the ABI version.
//!
//! cbindgen copies literals only, so the macros are literals here and the `const` assertions
//! below tie them to `Cargo.toml` at compile time: a version bump that forgets them fails to
//! build. `GDS_VERSION_STRING` is derived from them in the header itself (cbindgen.toml,
//! `after_includes`), and the C tests compare every macro with `gds_version()`. `build.rs`
//! reads `GDS_ABI_VERSION` from this file for the shared library's SONAME.

use std::ffi::{CStr, c_char};

/// Major version of libgardenstate (the `gardenstate-ffi` crate version).
pub const GDS_VERSION_MAJOR: u32 = 0;
/// Minor version of libgardenstate.
pub const GDS_VERSION_MINOR: u32 = 1;
/// Patch version of libgardenstate.
pub const GDS_VERSION_PATCH: u32 = 0;
/// The version as one comparable number, `MAJOR * 1000000 + MINOR * 1000 + PATCH`;
/// `gds_version_number()` returns the same.
pub const GDS_VERSION_NUMBER: u32 =
    GDS_VERSION_MAJOR * 1000000 + GDS_VERSION_MINOR * 1000 + GDS_VERSION_PATCH;
/// The ABI version this header describes. A binding compares it with `gds_abi_version()`
/// when it loads the library and refuses to run on a mismatch. It is also the number in the
/// shared library's SONAME (`libgardenstate.so.1`).
pub const GDS_ABI_VERSION: u32 = 1;

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "version component is not a number");
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

const _: () = {
    assert!(GDS_VERSION_MAJOR == parse_u32(env!("CARGO_PKG_VERSION_MAJOR")), "update GDS_VERSION_MAJOR");
    assert!(GDS_VERSION_MINOR == parse_u32(env!("CARGO_PKG_VERSION_MINOR")), "update GDS_VERSION_MINOR");
    assert!(GDS_VERSION_PATCH == parse_u32(env!("CARGO_PKG_VERSION_PATCH")), "update GDS_VERSION_PATCH");
};

const VERSION_C: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes())
{
    Ok(s) => s,
    Err(_) => panic!("the crate version contains a NUL byte"),
};

/// The library's version, `"MAJOR.MINOR.PATCH"` (a static string: never NULL, never freed).
/// Compare with `GDS_VERSION_STRING` to see which header a program was built with.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn gds_version() -> *const c_char {
    VERSION_C.as_ptr()
}

/// The library's version as `MAJOR * 1000000 + MINOR * 1000 + PATCH` (see
/// `GDS_VERSION_NUMBER`).
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn gds_version_number() -> u32 {
    GDS_VERSION_NUMBER
}

/// The ABI version of the loaded library. A binding must check, before any other call, that
/// it equals the `GDS_ABI_VERSION` it was written for, and refuse to use the library if not.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn gds_abi_version() -> u32 {
    GDS_ABI_VERSION
}

//! The committed header must be what the pinned cbindgen generates from the current source.
//! CI fails here when they differ; to regenerate after a deliberate change:
//!
//!     GDS_BLESS=1 cargo test -p gardenstate-ffi --test header
//!
//! The header's top comment is the "Conventions" section of ffi/README.md, so the two are
//! the same text.

use std::path::{Path, PathBuf};

fn ffi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    ffi_dir().join("../include/gardenstate.h")
}

/// The text between the conventions markers of ffi/README.md, as a C comment.
fn conventions_comment() -> String {
    let readme = std::fs::read_to_string(ffi_dir().join("README.md")).expect("read ffi/README.md");
    let start = "<!-- conventions:start -->";
    let end = "<!-- conventions:end -->";
    let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
        panic!("ffi/README.md must contain the markers {start} and {end}");
    };
    let body = readme[a + start.len()..b].trim();
    assert!(!body.contains("*/"), "the conventions text must not contain */");
    let mut out = String::from("/*\n * gardenstate.h: the C API of libgardenstate.\n *\n");
    for line in body.lines() {
        if line.is_empty() {
            out.push_str(" *\n");
        } else {
            out.push_str(" * ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(" */");
    out
}

fn generate() -> String {
    let mut config =
        cbindgen::Config::from_file(ffi_dir().join("cbindgen.toml")).expect("read ffi/cbindgen.toml");
    config.header = Some(conventions_comment());
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_crate(ffi_dir())
        .generate()
        .expect("cbindgen failed")
        .write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

/// The first differing lines of two texts, with line numbers.
fn first_difference(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let i = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let show = |v: &[&str]| v.iter().skip(i).take(8).map(|l| format!("    {l}\n")).collect::<String>();
    format!("first difference at line {}:\n  committed:\n{}  generated:\n{}", i + 1, show(&a), show(&b))
}

/// The value of `#define NAME value` in the committed header.
fn define(header: &str, name: &str) -> String {
    let prefix = format!("#define {name} ");
    header
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("include/gardenstate.h has no {name}"))
        .trim()
        .to_string()
}

#[test]
fn version_macros_match_the_crate() {
    let header = std::fs::read_to_string(header_path()).expect("read include/gardenstate.h");
    assert_eq!(define(&header, "GDS_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(define(&header, "GDS_VERSION_MINOR"), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(define(&header, "GDS_VERSION_PATCH"), env!("CARGO_PKG_VERSION_PATCH"));
    // The ABI version is also the SONAME (build.rs reads it from src/version.rs).
    let abi = define(&header, "GDS_ABI_VERSION");
    assert!(abi.parse::<u32>().is_ok_and(|n| n >= 1), "GDS_ABI_VERSION {abi}");
    assert!(header.contains(&format!("libgardenstate.so.{abi}")), "the header names the SONAME");
}

#[test]
fn header_is_up_to_date() {
    let generated = generate();
    let path = header_path();
    if std::env::var_os("GDS_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/gardenstate.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gardenstate.h.generated");
        std::fs::write(&tmp, &generated).expect("write the generated header");
        panic!(
            "include/gardenstate.h is stale: regenerating it changes it.\n{}\n\
             The generated header is in {}. If the change is intended, run\n\
             \n    GDS_BLESS=1 cargo test -p gardenstate-ffi --test header\n\n\
             and commit include/gardenstate.h.",
            first_difference(&committed, &generated),
            tmp.display()
        );
    }
}

//! C programs against include/gardenstate.h, compiled with gcc and run from `cargo test`.
//!
//! - `api.c`: every function, every error path (tests/c/api.c says which it cannot reach);
//! - `fork.c`: 8 forked workers on one segment, checksummed values; the same as 8 threads of
//!   one process sharing a handle (and attaching their own);
//! - `cxx.cpp`: the header as C++ (extern "C" guards), compiled, linked and run;
//! - `examples/minimal.c`: installed with ffi/install.sh into a temporary prefix and built
//!   with `pkg-config --cflags --libs gardenstate`, as the README says.
//!
//! The C tests run under AddressSanitizer and UndefinedBehaviorSanitizer (-fno-sanitize-
//! recover: any report fails the program), linked against the static library. LeakSanitizer
//! is on, with no suppressions.
//!
//! The library is built by this test (`cargo build -p gardenstate-ffi`, same profile and
//! target directory as the test itself): the crate has no rlib, so `cargo test` does not
//! build the cdylib and staticlib by itself. The nested cargo call is cheap when they are
//! fresh. Segments go to a private directory under /dev/shm (GARDENSTATE_SHM_DIR), removed
//! at the end.
//!
//! With the Rust side instrumented too: `GDS_FFI_LIB_DIR` names a directory holding a
//! libgardenstate.a built with a sanitizer (then this test does not build the library), and
//! `GDS_C_SANITIZER=thread` compiles the programs with -fsanitize=thread instead of
//! address,undefined (linked with rustc's TSan runtime named by `GDS_TSAN_RUNTIME`).
//! `.ci/asan.sh` (ASan) and `.ci/tsan.sh` (TSan) run the C programs so.
//!
//! Needs gcc, g++ and pkg-config on the PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

fn ffi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn root_dir() -> PathBuf {
    ffi_dir().parent().expect("ffi/ has a parent").to_path_buf()
}

/// target/<profile>/ of this test binary (it lives in target/<profile>/deps/).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("the test runs from target/<profile>/deps").to_path_buf()
}

/// Builds the cdylib and staticlib for this test's profile; returns the directory holding them
/// (or `GDS_FFI_LIB_DIR`, a library built with a sanitizer by the CI script).
fn library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("GDS_FFI_LIB_DIR") {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("libgardenstate.a").is_file(),
                "GDS_FFI_LIB_DIR: no libgardenstate.a in {}",
                dir.display()
            );
            return dir;
        }
        let dir = profile_dir();
        let profile = dir.file_name().and_then(|n| n.to_str()).expect("profile dir name").to_string();
        let target_dir = dir.parent().expect("target dir").to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "gardenstate-ffi", "--target-dir"]).arg(&target_dir).current_dir(root_dir());
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().expect("run cargo build -p gardenstate-ffi");
        assert!(status.success(), "cargo build -p gardenstate-ffi failed");
        for lib in ["libgardenstate.a", "libgardenstate.so"] {
            assert!(dir.join(lib).is_file(), "{} was not built", dir.join(lib).display());
        }
        dir
    })
}

/// The system libraries a static link needs: the `Libs.private` line of the .pc template, so
/// that the tests link exactly as the installed pkg-config file tells users to.
fn private_libs() -> Vec<String> {
    let pc = std::fs::read_to_string(ffi_dir().join("gardenstate.pc.in")).expect("read gardenstate.pc.in");
    let line = pc.lines().find_map(|l| l.strip_prefix("Libs.private:")).expect("Libs.private in the .pc");
    line.split_whitespace().map(str::to_string).collect()
}

/// A private segment directory under /dev/shm for one test, removed when dropped.
struct ShmDir(PathBuf);

impl ShmDir {
    fn new(tag: &str) -> ShmDir {
        let dir = PathBuf::from(format!("/dev/shm/gds-ffi-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the segment directory");
        ShmDir(dir)
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("could not run {shown}: {e}\n(these tests need gcc, g++ and pkg-config: apt-get install gcc g++ pkg-config)")
    });
    if !out.status.success() {
        panic!(
            "{shown} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

const WARNINGS: [&str; 4] = ["-Wall", "-Wextra", "-Werror", "-pedantic"];
const SANITIZE: [&str; 4] =
    ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"];
const SANITIZE_THREAD: [&str; 3] = ["-fsanitize=thread", "-fno-omit-frame-pointer", "-g"];

/// The sanitizer flags: ASan and UBSan, or TSan with `GDS_C_SANITIZER=thread`.
fn sanitize_flags() -> &'static [&'static str] {
    match std::env::var("GDS_C_SANITIZER").as_deref() {
        Ok("thread") => &SANITIZE_THREAD,
        Ok("address") | Err(_) => &SANITIZE,
        Ok(other) => panic!("GDS_C_SANITIZER={other:?}: expected thread or address"),
    }
}

/// Compiles `sources` with `compiler` against the header and the static library.
/// Under TSan (`GDS_C_SANITIZER=thread`) the sources are compiled with gcc's instrumentation
/// but linked with rustc's TSan runtime (`GDS_TSAN_RUNTIME`, librustc-*_rt.tsan.a): the
/// library's LLVM instrumentation calls entry points (`__tsan_memcpy`, ...) that gcc's
/// libtsan lacks, and one process must have one TSan runtime.
fn compile(compiler: &str, std: &str, sources: &[PathBuf], out: &Path, sanitize: bool) {
    let tsan_runtime = std::env::var_os("GDS_TSAN_RUNTIME").filter(|_| sanitize_flags() == SANITIZE_THREAD);
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(WARNINGS)
        .args(if sanitize { sanitize_flags() } else { &[] })
        .arg("-pthread")
        .arg("-I")
        .arg(root_dir().join("include"))
        .args(sources);
    let object = out.with_extension("o");
    if sanitize && tsan_runtime.is_some() {
        assert_eq!(sources.len(), 1, "one source per program under TSan");
        run(cmd.arg("-c").arg("-o").arg(&object));
        cmd = Command::new(compiler);
        cmd.arg("-pthread").arg(&object);
    }
    cmd.arg("-o").arg(out).arg(library_dir().join("libgardenstate.a"));
    if let (true, Some(rt)) = (sanitize, &tsan_runtime) {
        cmd.arg("-Wl,--whole-archive").arg(rt).arg("-Wl,--no-whole-archive").arg("-lstdc++");
    }
    cmd.args(private_libs());
    run(&mut cmd);
}

/// Runs a compiled test program under the sanitizers and checks it said nothing about them.
fn run_sanitized(exe: &Path, args: &[&str], shm: &ShmDir) -> String {
    let out = run(Command::new(exe)
        .args(args)
        .env("GARDENSTATE_SHM_DIR", &shm.0)
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1",
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .env("TSAN_OPTIONS", "halt_on_error=1:second_deadlock_stack=1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for marker in [
        "AddressSanitizer",
        "LeakSanitizer",
        "runtime error:",
        "UndefinedBehaviorSanitizer",
        "ThreadSanitizer",
    ] {
        assert!(!stderr.contains(marker), "{} reported a sanitizer finding:\n{stderr}", exe.display());
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn api_c_covers_every_function_and_error_path() {
    let shm = ShmDir::new("api");
    let exe = tmp("gds-api");
    compile("gcc", "c11", &[ffi_dir().join("tests/c/api.c")], &exe, true);
    let t = Instant::now();
    let stdout = run_sanitized(&exe, &[], &shm);
    assert!(stdout.contains("api: all checks passed"), "{stdout}");
    eprintln!("api.c ran in {:?}", t.elapsed());
}

#[test]
fn fork_c_eight_workers_share_one_segment() {
    let shm = ShmDir::new("fork");
    let exe = tmp("gds-fork");
    compile("gcc", "c11", &[ffi_dir().join("tests/c/fork.c")], &exe, true);
    let t = Instant::now();
    let stdout = run_sanitized(&exe, &["50000"], &shm);
    assert!(stdout.contains("fork: 8 workers"), "{stdout}");
    eprintln!("{}fork.c ran in {:?}", stdout, t.elapsed());
}

#[test]
fn fork_c_eight_threads_share_one_store() {
    let shm = ShmDir::new("threads");
    let exe = tmp("gds-threads");
    compile("gcc", "c11", &[ffi_dir().join("tests/c/fork.c")], &exe, true);
    let stdout = run_sanitized(&exe, &["20000", "threads"], &shm);
    assert!(stdout.contains("fork: 8 threads"), "{stdout}");
    eprintln!("{stdout}");
}

#[test]
fn header_compiles_and_links_as_cxx() {
    let shm = ShmDir::new("cxx");
    let exe = tmp("gds-cxx");
    compile("g++", "c++11", &[ffi_dir().join("tests/c/cxx.cpp")], &exe, true);
    let stdout = run_sanitized(&exe, &[], &shm);
    assert!(stdout.contains("cxx: ok"), "{stdout}");
}

#[test]
fn install_and_build_the_example_with_pkg_config() {
    let shm = ShmDir::new("install");
    let prefix = tmp(&format!("prefix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    run(Command::new("bash")
        .arg(ffi_dir().join("install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--from")
        .arg(library_dir()));
    let lib = prefix.join("lib");
    for f in ["libgardenstate.a", "libgardenstate.so", "libgardenstate.so.1", "pkgconfig/gardenstate.pc"] {
        assert!(lib.join(f).exists(), "install.sh did not install lib/{f}");
    }
    assert!(prefix.join("include/gardenstate.h").is_file());

    let pc_path = lib.join("pkgconfig");
    let flags = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "gardenstate"])
        .env("PKG_CONFIG_PATH", &pc_path));
    let flags = String::from_utf8(flags.stdout).expect("pkg-config output is UTF-8");
    let version = run(Command::new("pkg-config")
        .args(["--modversion", "gardenstate"])
        .env("PKG_CONFIG_PATH", &pc_path));
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), env!("CARGO_PKG_VERSION"));

    // cc examples/minimal.c $(pkg-config --cflags --libs gardenstate), linking the .so.
    let exe = tmp("gds-minimal");
    run(Command::new("cc")
        .args(WARNINGS)
        .arg("-std=c11")
        .arg(root_dir().join("examples/minimal.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace()));
    let out = run(Command::new(&exe).env("LD_LIBRARY_PATH", &lib).env("GARDENSTATE_SHM_DIR", &shm.0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sid:4f2a = user=alice;cart=3"), "{stdout}");

    // The program was linked against the SONAME, which the loader resolved in the prefix.
    let ldd = run(Command::new("ldd").arg(&exe).env("LD_LIBRARY_PATH", &lib));
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.contains("libgardenstate.so.1 =>") && ldd.contains(&*prefix.to_string_lossy()), "{ldd}");
    let _ = std::fs::remove_dir_all(&prefix);
}

#!/usr/bin/env bash
# AddressSanitizer + LeakSanitizer over the engine's and the replicator's tests (nightly).
#
#   .ci/asan.sh                        # every test of both crates (lib, integration, fuzz replay)
#   .ci/asan.sh -- damage              # extra arguments go to the test binaries (a filter)
#   GDS_BUILD_STD=1 .ci/asan.sh        # also instrument std (-Zbuild-std; needs rust-src)
#
# Builds with RUSTFLAGS=-Zsanitizer=address for the host target (explicit --target, so build
# scripts and proc macros stay uninstrumented) into target/asan, and runs the tests with
# detect_leaks=1. Child processes the tests spawn (the multi-process, crash, fork, damage and
# hostile co-tenant tests re-run the test binary) are instrumented too.
# Then the C ABI: libgardenstate is built with the same flags and the C programs of
# ffi/tests/c_programs.rs (api.c, fork.c as processes and as threads, cxx.cpp; gcc
# -fsanitize=address,undefined) are linked against it (GDS_FFI_LIB_DIR), so the Rust side of
# every C call is instrumented too (not the pkg-config install test: it links a plain cc
# program against the .so, which cannot load an instrumented library).
#
# Covers: out-of-bounds reads and writes of heap, stack and globals, use-after-free and
# double free, in our code and in every crate compiled here (memmap2, libc bindings, the
# hashers); leaks at the exit of each (test or child) process. The replicator
# is safe Rust, so it is mostly the engine's unsafe (the Mem word accessor, the mapping's
# lifetime) that this can catch.
# Cannot cover: accesses inside the shared mapping itself (ASan does not poison an mmap of
# /dev/shm: a wrong index that stays inside the segment is invisible here; Mem::w's bounds
# assert is what guards it), races (see tsan.sh), std internals unless GDS_BUILD_STD=1,
# processes killed by a signal (no leak report), and code the tests do not reach.
#
# Needs the nightly toolchain. Without it this says "skipped: ..." and exits 0
# (GDS_REQUIRE_NIGHTLY=1 makes that a failure).
set -uo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=.ci/nightly.sh
source .ci/nightly.sh
need_sanitizer address AddressSanitizer

build_std=()
if [ "${GDS_BUILD_STD:-0}" = 1 ]; then
    rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' ||
        skip "GDS_BUILD_STD=1 needs the rust-src component: rustup +nightly component add rust-src"
    build_std=(-Zbuild-std)
fi

export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes ${RUSTFLAGS:-}"
export RUSTDOCFLAGS="-Zsanitizer=address"
# halt_on_error: the first report fails the process (and so the test).
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-}"
# Timing-based tests run slower under ASan (2-3x): give the test watchdogs room.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-2}

echo "asan.sh: cargo +nightly test, -Zsanitizer=address, target $host ${build_std[*]}"
cargo +nightly test "${build_std[@]}" --target "$host" --target-dir target/asan \
    --no-fail-fast -p gardenstate -p gardenstate-replicator --lib --tests "$@"
status=$?

echo "asan.sh: the C programs against libgardenstate built with -Zsanitizer=address"
if cargo +nightly build "${build_std[@]}" --target "$host" --target-dir target/asan -p gardenstate-ffi; then
    GDS_FFI_LIB_DIR="$PWD/target/asan/$host/debug" GDS_C_SANITIZER=address \
        cargo +nightly test "${build_std[@]}" --target "$host" --target-dir target/asan \
        -p gardenstate-ffi --test c_programs -- --skip install_and_build_the_example_with_pkg_config || status=$?
else
    status=1
fi
if [ $status -eq 0 ]; then
    echo "asan.sh: passed: no AddressSanitizer or LeakSanitizer report"
else
    echo "asan.sh: FAILED (exit $status): look for 'ERROR: AddressSanitizer' or 'LeakSanitizer' above" >&2
fi
exit $status

#!/usr/bin/env bash
# Miri (the Rust interpreter that detects undefined behaviour) over the engine's unit tests
# that run on an in-process segment (nightly with the miri component).
#
#   .ci/miri.sh                  # the default selection below
#   .ci/miri.sh layout::tests    # other unit tests, by name filter
#
# What runs: engine/src/inprocess_tests.rs (every store operation, damaged words, three
# threads sharing one store) on `Segment::in_process`, a heap buffer standing in for the
# mapping, and the pure layout tests (engine/src/layout.rs). MIRIFLAGS adds
# -Zmiri-disable-isolation (the store reads the monotonic clock and /proc/self/stat for its
# client identity) and runs MIRI_SEEDS seeds of Miri's scheduler (-Zmiri-many-seeds;
# default 1: 4 to 8 minutes on a shared 2-vCPU machine, each further seed as long again).
#
# Covers: the engine's unsafe code as these tests drive it: `Mem::from_raw`/`Mem::w` pointer
# arithmetic and alignment, out-of-bounds and use-after-free of the buffer, the Send/Sync
# claims (data races between the test's threads are reported), and the store's lock-free
# protocols under the weak-memory behaviours Miri emulates (stale loads within the C++11
# model), for the interleavings Miri's seeds happen to pick.
# Cannot cover: the real segment (Miri cannot mmap a /dev/shm file, nor fork or spawn
# processes: the mapping, attach/create, multi-process, crash, fork and damage tests are
# out of reach; ASan and the integration tests cover those), the x86 prefetch hint (compiled
# out under Miri), pthread_atfork (skipped under Miri: fork detection is not exercised), the
# replicator (safe Rust: `#![forbid(unsafe_code)]`; its dependencies' unsafe is better left
# to their own Miri runs), and exhaustive interleavings (that is what the loom models do:
# .ci/loom.sh).
#
# If the nightly toolchain or its miri component is missing and cannot be installed, this
# says "skipped: ..." and exits 0 (GDS_REQUIRE_NIGHTLY=1 makes that a failure).
set -uo pipefail
cd "$(dirname "$0")/.."

skip() {
    echo "miri.sh: skipped: $1"
    [ "${GDS_REQUIRE_NIGHTLY:-0}" = 1 ] && exit 1
    exit 0
}

cargo +nightly --version >/dev/null 2>&1 ||
    skip "no nightly toolchain (Miri ships only with nightly); install it with: rustup toolchain install nightly"
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri.sh: installing the miri and rust-src components"
    rustup +nightly component add miri rust-src >/dev/null 2>&1 ||
        skip "the nightly toolchain has no miri component and it could not be installed (rustup +nightly component add miri rust-src failed: offline, or no miri for this nightly)"
fi

filters=("$@")
[ ${#filters[@]} -eq 0 ] && filters=(inprocess_tests layout::tests)

export MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-many-seeds=0..${MIRI_SEEDS:-1} ${MIRIFLAGS:-}"
echo "miri.sh: cargo +nightly miri test -p gardenstate --lib ${filters[*]} (MIRIFLAGS=$MIRIFLAGS)"
cargo +nightly miri setup >/dev/null 2>&1 || true
status=0
for f in "${filters[@]}"; do
    cargo +nightly miri test --target-dir target/miri -p gardenstate --lib "$f" || status=$?
done
if [ $status -eq 0 ]; then
    echo "miri.sh: passed: no undefined behaviour reported"
else
    echo "miri.sh: FAILED (exit $status): see Miri's report above" >&2
fi
exit $status

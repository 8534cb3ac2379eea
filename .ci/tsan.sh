#!/usr/bin/env bash
# ThreadSanitizer over the engine's multi-threaded tests, the replication daemons and the C
# ABI called from several threads (nightly).
#
#   .ci/tsan.sh                  # the threaded tests listed below
#   GDS_BUILD_STD=0 .ci/tsan.sh  # without rebuilding std (faster; see "false positives")
#   GDS_LONG=1 .ci/tsan.sh       # the replicator's failover tests too (heartbeats, witness)
#
# Tests run (several threads of one process sharing one Store):
#   engine lib   inprocess_tests::threads_share_an_in_process_store
#   semantics    threads_churn_one_store, replica_writes_acks_and_epochs
#   multiprocess threads_share_one_store, touch_racing_delete_reports_absent_not_error
#   replicator   every test of tests/replication.rs and tests/stats_replication.rs: the
#                `gardenstate` binary they start is built with TSan too, so each primary and
#                standby daemon runs instrumented: the accept loop, one stream thread per
#                standby, the parked follower and backlog handed between connections, the
#                status file publisher, the /metrics endpoint, reconnects and resyncs
#                (through the link-cutting proxy), promotion. Reports of these child
#                processes go to files (TSAN_OPTIONS log_path), which this script checks.
#   C ABI        ffi/tests/c/fork.c as 8 threads (4 sharing one gds_store, 4 attaching their
#                own) and api.c, compiled with gcc -fsanitize=thread and linked against
#                libgardenstate built with -Zsanitizer=thread (ffi/tests/c_programs.rs with
#                GDS_FFI_LIB_DIR and GDS_C_SANITIZER=thread)
#
# Covers: data races on the process-local, non-atomic state around the segment: the Store's
# client registry (Mutex), the per-thread client cache (thread-local, released on thread
# exit or handle drop), Arc'd segment lifetime, the identity cache; and any non-atomic
# access to the mapping (there should be none: every segment word is an AtomicU64, see
# mem.rs). Lock-order inversions between the engine's mutexes are reported too.
# Cannot cover:
# - Races between processes. TSan instruments one process; the segment is a shared mapping
#   written by other processes TSan never sees, so cross-process races are invisible (the
#   multi-process, crash and hostile-co-tenant integration tests and the loom models of the
#   algorithms cover those). The tests above are the threaded ones for that reason.
# - The ordering of the lock-free protocols themselves: every segment access is atomic, and
#   TSan reports no race between atomics, whatever their ordering, so a too-weak ordering on
#   the segment is not found here (loom: .ci/loom.sh; Miri's weak-memory emulation:
#   .ci/miri.sh). TSan also does not model standalone fences (the engine has some in
#   feed.rs, heap.rs, record.rs): they only order atomic segment words, so they cannot cause
#   false reports here, but what they guarantee is not checked by TSan either.
#
# False positives and how they are kept out: TSan must see every synchronization, so std is
# rebuilt instrumented (-Zbuild-std, needs the rust-src component; std then also uses its
# TSan-friendly Arc, which replaces a fence TSan cannot see by an acquire load). Without
# rust-src (or with GDS_BUILD_STD=0) the uninstrumented std makes TSan report races inside
# std's own synchronization (Arc drop, thread join, once cells): the run then links with
# -Cunsafe-allow-abi-mismatch=sanitizer and suppresses reports with a frame in std's own
# synchronization (Arc, thread spawn/join, once cells, thread-local destructors:
# .ci/tsan.supp), and says so. That can hide a real race that goes through those frames:
# trust the build-std mode.
#
# Needs the nightly toolchain. Without it this says "skipped: ..." and exits 0
# (GDS_REQUIRE_NIGHTLY=1 makes that a failure).
set -uo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=.ci/nightly.sh
source .ci/nightly.sh
need_sanitizer thread ThreadSanitizer

mode=build-std
if [ "${GDS_BUILD_STD:-1}" = 0 ] || ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    mode=suppressed-std
fi

export RUSTFLAGS="-Zsanitizer=thread -Cforce-frame-pointers=yes ${RUSTFLAGS:-}"
# Every report also goes to a file reports/tsan.<pid> (the daemons' reports have no other way
# out: their stderr is a log file the tests read, and a test may kill them).
reports="$PWD/target/tsan-$mode/reports"
rm -rf "$reports" && mkdir -p "$reports"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 log_path=$reports/tsan ${TSAN_OPTIONS:-}"
args=(--target "$host" --target-dir "target/tsan-$mode")
if [ $mode = build-std ]; then
    args+=(-Zbuild-std)
else
    export RUSTFLAGS="$RUSTFLAGS -Cunsafe-allow-abi-mismatch=sanitizer"
    export TSAN_OPTIONS="$TSAN_OPTIONS suppressions=$PWD/.ci/tsan.supp"
    echo "tsan.sh: std is NOT instrumented (no rust-src, or GDS_BUILD_STD=0): races inside std are suppressed (.ci/tsan.supp)"
fi

echo "tsan.sh: cargo +nightly test, -Zsanitizer=thread, target $host, mode $mode"
status=0
# run TARGET-ARGS FILTERS: one test binary, only the named tests, one test at a time.
run() {
    echo "---- $1: $2 ----"
    # shellcheck disable=SC2086
    cargo +nightly test "${args[@]}" $1 -- --test-threads=1 $2 || status=$?
}
run "-p gardenstate --lib" "inprocess_tests::threads_share_an_in_process_store"
run "-p gardenstate --test semantics" "threads_churn_one_store replica_writes_acks_and_epochs"
run "-p gardenstate --test multiprocess" "threads_share_one_store touch_racing_delete_reports_absent_not_error"
run "-p gardenstate-replicator --test replication --test stats_replication" ""
[ "${GDS_LONG:-0}" != 0 ] && [ -n "${GDS_LONG:-}" ] && run "-p gardenstate-replicator --test failover" ""

echo "---- C ABI: libgardenstate built with -Zsanitizer=thread, C programs with gcc -fsanitize=thread ----"
if cargo +nightly build "${args[@]}" -p gardenstate-ffi; then
    GDS_FFI_LIB_DIR="$PWD/target/tsan-$mode/$host/debug" GDS_C_SANITIZER=thread \
        GDS_TSAN_RUNTIME="$(ls "$(rustc +nightly --print sysroot)/lib/rustlib/$host/lib/"librustc-*_rt.tsan.a)" \
        cargo +nightly test "${args[@]}" -p gardenstate-ffi --test c_programs -- \
        fork_c_eight_threads_share_one_store api_c_covers_every_function_and_error_path || status=$?
else
    status=1
fi

# Reports of processes that did not fail their test by themselves (the daemons).
if compgen -G "$reports/tsan*" >/dev/null; then
    for f in "$reports"/tsan*; do
        echo "---- $f ----"
        cat "$f"
    done
    echo "tsan.sh: ThreadSanitizer reports above (files in $reports)" >&2
    status=1
fi

if [ $status -eq 0 ]; then
    echo "tsan.sh: passed ($mode): no ThreadSanitizer report"
else
    echo "tsan.sh: FAILED (exit $status, $mode): look for 'WARNING: ThreadSanitizer' above" >&2
fi
exit $status

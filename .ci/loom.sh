#!/usr/bin/env bash
# Loom models of the engine's lock-free algorithms (engine/src/loom_tests.rs).
#
#   .ci/loom.sh                              # every model, at its default preemption bound
#   .ci/loom.sh loom_feed                    # the models whose name contains "loom_feed"
#   LOOM_MAX_PREEMPTIONS=3 .ci/loom.sh       # a deeper search, for every model (slower)
#
# Builds with --cfg loom into its own target directory (a --cfg change rebuilds every crate,
# so sharing the normal one would throw away its cache on each switch).
set -euo pipefail
cd "$(dirname "$0")/.."

cat <<'EOF'
Loom models (engine/src/loom_tests.rs), on the smallest segment geometry, threads as clients:
  (a)  loom_publish_validate            a writer replaces a record (alloc, write, CAS the slot,
                                        free the old block) while a reader finds it: the
                                        reader returns a whole record, never a torn mix
  (a') loom_publish_validate_reuse      the same across block reuse (the freed block is
                                        rewritten under a reader holding the old slot word)
  (b)  loom_allocator                   concurrent alloc/free on a page of two blocks: never
                                        owned twice, stale free refused (H1), journal (H3),
                                        bitmap exact at quiescence (H2), freed blocks reusable
  (b') loom_allocator_no_spurious_full  alloc never reports Full while a block is free
  (b'') loom_guard_or_recheck           a writer journals and re-checks the block it viewed
                                        while another client frees it and takes it at a
                                        guarded generation: never both (heap.rs H5)
  (c)  loom_insert_same_key             two inserts of one new key: one MEMBER (T1), one
                                        insert and one update
  (c') loom_insert_same_key_after_delete  the same with a slot of the window freed under them
  (d)  loom_feed                        a follower reading entries being overwritten: never a
                                        torn entry
  (e)  loom_lock_wait_no_lost_wakeup    a lock_wait waiter arms its futex word, finds the lock
                                        held and sleeps while the holder releases and wakes:
                                        never asleep after the release (lockwait.rs L1; the
                                        model's futex has no timeout, so a lost wakeup is a
                                        reported deadlock)
Loom explores every interleaving up to a preemption bound (default 2; 1 for (a'), whose
size comes from the values a relaxed load may return, not from the schedules) and every value
the C11 memory model lets each load return. It does not see: processes (only threads of one
process), a client killed mid-operation (no kill -9: journals and reclaim are not modelled),
clocks and expiry, the Store layer (thread-local clients, locks), interleavings beyond the
preemption bound, or larger tables and values than the models use.
EOF

if [ -n "${LOOM_MAX_PREEMPTIONS:-}" ]; then
    echo "LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS (overrides every model's default bound)"
fi
echo

export RUSTFLAGS="--cfg loom${RUSTFLAGS:+ $RUSTFLAGS}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
filter="${1:-loom}"
start=$SECONDS
cargo test -p gardenstate --release --lib "$filter" -- --nocapture --test-threads=1
echo "loom models: done in $((SECONDS - start)) s"

#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders and of attach (cargo-fuzz / libFuzzer, nightly).
#
#   .ci/fuzz.sh                          # every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=300 .ci/fuzz.sh frame   # one target for 5 minutes
#
# Targets (bodies in gardenstate_replicator::fuzzing and gardenstate::fuzzing):
#   frame      wire frames: decode vs read_frame (trickled, interrupted), re-encode identity
#   snapshot   dump files: decode vs the streaming Reader, re-encode identity
#   handshake  both sides of the auth handshake against a peer sending the input
#   units      size/count/duration/TTL parsers, escape/unescape round trip
#   config     the daemons' TOML config files (primary, standby, witness)
#   attach     a segment file (raw bytes, or a valid one with word edits, optionally with a
#              forged header checksum or another length) in /dev/shm, attached, then every
#              operation run on it: errors only, never a panic, crash or hang (-timeout=10)
# The list is `cargo fuzz list` (the [[bin]]s of fuzz/Cargo.toml): a new target is fuzzed as
# soon as it is declared there, and must come with a non-empty seed corpus fuzz/corpus/<t>/
# (this fails otherwise; `cargo test ... fuzz_regressions -- --ignored write_seed_corpus`
# writes it from `fuzzing::seeds`).
#
# Covers: panics, overflow (cargo-fuzz builds optimized, with debug assertions and overflow
# checks, and with AddressSanitizer: out-of-bounds and use-after-free too), aborts, hangs and
# memory blowups (-rss_limit_mb) of single-threaded, single-process use of these functions.
# Cannot cover: races (everything runs on one thread in one process; see tsan.sh and the
# multi-process tests), nor undefined behaviour that does not crash (see asan.sh, miri.sh).
# The handshake's nonces come from /dev/urandom, so its runs are not exactly reproducible.
#
# Each run starts from fuzz/corpus/<t> and fuzz/regressions/<t> (copied into fuzz/work/<t>,
# which keeps growing between runs and is not committed). A crash leaves its input in
# fuzz/artifacts/<t>/: copy it into fuzz/regressions/<t>/, fix the bug, and `cargo test`
# replays it on stable from then on (replicator/tests/fuzz_regressions.rs,
# engine/tests/fuzz_regressions.rs).
#
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io if missing). Without
# nightly it says "skipped: ..." and exits 0 (GDS_REQUIRE_NIGHTLY=1 makes that a failure).
# Exit status: 0 if every target ran clean, 1 if any found a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}

skip() {
    echo "fuzz.sh: skipped: $1"
    [ "${GDS_REQUIRE_NIGHTLY:-0}" = 1 ] && exit 1
    exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
    skip "no nightly toolchain (cargo-fuzz needs -Zsanitizer and libFuzzer instrumentation); install it with: rustup toolchain install nightly"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || skip "cargo-fuzz could not be installed"
fi

mapfile -t all_targets < <(cd fuzz && cargo +nightly fuzz list)
[ ${#all_targets[@]} -gt 0 ] || { echo "fuzz.sh: cargo fuzz list found no target in fuzz/" >&2; exit 1; }
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    if [ -z "$(ls -A "fuzz/corpus/$t" 2>/dev/null)" ]; then
        echo "fuzz.sh: fuzz target $t has no seed corpus in fuzz/corpus/$t/ (write it from fuzzing::seeds: see fuzz/README.md)" >&2
        exit 1
    fi
done
echo "fuzz.sh: targets: ${targets[*]}"

echo "fuzz.sh: building the targets (cargo +nightly fuzz build)"
(cd fuzz && cargo +nightly fuzz build) || { echo "fuzz.sh: the fuzz targets do not build" >&2; exit 1; }

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    for d in "fuzz/corpus/$t" "fuzz/regressions/$t"; do
        [ -d "$d" ] && cp -n "$d"/* "fuzz/work/$t/" 2>/dev/null
    done
    log="fuzz/artifacts/$t/last-run.log"
    printf '\n==== fuzz %s for %ss ====\n' "$t" "$FUZZ_SECONDS"
    (cd fuzz && cargo +nightly fuzz run "$t" "work/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/") >"$log" 2>&1
    status=$?
    # Segment files of attach runs that died before their cleanup.
    for f in /dev/shm/gds-fuzz-*; do
        [ -e "$f" ] || continue
        pid=$(basename "$f" | sed -E 's/^gds-fuzz-[a-z]+-([0-9]+)-.*/\1/')
        [ -d "/proc/$pid" ] || rm -f "$f"
    done
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    tail -n 15 "$log"
    if [ $status -eq 0 ]; then
        summary+=("$t: ok, ${execs:-?} executions in ${FUZZ_SECONDS}s")
    else
        crash=$(grep -o 'artifacts/[^ ]*' "$log" | grep -v last-run | tail -1)
        summary+=("$t: FAILED (exit $status) after ${execs:-?} executions; input: fuzz/${crash:-?}; log: $log")
        failed+=("$t")
    fi
done

printf '\n==== fuzz summary ====\n'
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failures in: ${failed[*]} (copy the inputs into fuzz/regressions/<target>/)"
    exit 1
fi
echo "fuzz.sh: all targets ran clean"

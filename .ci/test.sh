#!/usr/bin/env bash
# The README's test command: every check CI runs, in order. Works on a fresh Debian machine
# with rustup's stable toolchain (cargo, rustc) and gcc installed; it installs what else it
# needs itself: the rustfmt and clippy components, the nightly toolchain with its miri and
# rust-src components, and cargo-fuzz.
#
#   .ci/test.sh              # the CI form (bounded to stay under 45 minutes on 2 cores)
#   GDS_LONG=1 .ci/test.sh   # the long form of every section (hours)
#
# Sections: system packages, toolchains, format, lint, tests, loom models, the bindings,
# README quick start, then the nightly checks: ASan (.ci/asan.sh), TSan (.ci/tsan.sh), Miri
# (.ci/miri.sh) and a bounded fuzz pass over every target (.ci/fuzz.sh). A per-section time
# table is printed at the end, also when a section fails.
#
# The nightly checks never "skip" here: GDS_REQUIRE_NIGHTLY=1 makes a missing toolchain or
# sanitizer a failure. Their bounds, and the long form GDS_LONG=1 sets (each variable can
# also be set on its own):
#   FUZZ_SECONDS  seconds per fuzz target          CI 30    long 900
#   MIRI_SEEDS    Miri scheduler seeds             CI 1     long 16
#   GDS_BUILD_STD ASan also instruments std        CI 0     long 1 (TSan always does)
#   GDS_LONG      the tests' own long forms (crash rounds, failpoints, linearizability,
#                 failover rounds: see README "Reliability")
set -euo pipefail
cd "$(dirname "$0")/.."

export GDS_REQUIRE_NIGHTLY=1
if [ "${GDS_LONG:-0}" != 0 ] && [ -n "${GDS_LONG:-}" ]; then
    export FUZZ_SECONDS=${FUZZ_SECONDS:-900} MIRI_SEEDS=${MIRI_SEEDS:-16} GDS_BUILD_STD=${GDS_BUILD_STD:-1}
else
    unset GDS_LONG
    export FUZZ_SECONDS=${FUZZ_SECONDS:-30} MIRI_SEEDS=${MIRI_SEEDS:-1}
fi

section_name="setup"
section_start=$SECONDS
timings=()
end_section() {
    [ "$section_name" = setup ] || timings+=("$(printf '%-50s %4dm%02ds' "$section_name" $(((SECONDS - section_start) / 60)) $(((SECONDS - section_start) % 60)))")
}
section() {
    end_section
    section_name="$1"
    section_start=$SECONDS
    printf '\n==== %s ====\n' "$1"
}
finish() {
    local status=$?
    end_section
    printf '\n==== time per section ====\n'
    printf '%s\n' "${timings[@]}"
    printf '%-50s %4dm%02ds\n' "total" $((SECONDS / 60)) $((SECONDS % 60))
    if [ "$status" -eq 0 ]; then
        printf '\ntest.sh: all checks passed (fmt, clippy, tests, loom, bindings, README quick start, ASan, TSan, Miri, fuzz)\n'
    else
        printf '\ntest.sh: FAILED in section %s(exit status %s)\n' "${failed_in:-\"$section_name\" }" "$status"
    fi
}
trap finish EXIT

# Installs a rustup component if the cargo subcommand it provides is missing.
need_component() {
    local subcommand=$1 component=$2
    if cargo "$subcommand" --version >/dev/null 2>&1; then
        return
    fi
    if command -v rustup >/dev/null 2>&1; then
        rustup component add "$component"
    elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        # A distribution toolchain (apt install cargo): Debian packages the tools too.
        apt-get update -qq && apt-get install -y -qq "$3"
    else
        echo "cargo $subcommand is missing: install the $component component" >&2
        exit 1
    fi
}

section "system packages"
# The C ABI tests compile C and C++ against the header and build with pkg-config.
missing=()
for tool in gcc:gcc g++:g++ pkg-config:pkg-config; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "missing: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi
echo "gcc, g++ and pkg-config present"

section "toolchain"
need_component fmt rustfmt rustfmt
need_component clippy clippy rust-clippy
cargo --version
rustc --version
cargo fmt --version
cargo clippy --version
# The nightly checks: the toolchain (sanitizers, Miri) with its components, and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal -c miri,rust-src
fi
for component in miri rust-src; do
    rustup +nightly component list --installed | grep -q "^$component" ||
        rustup +nightly component add "$component"
done
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly --version
cargo +nightly miri --version
cargo +nightly fuzz --version

section "format (cargo fmt --check)"
cargo fmt --all -- --check

section "lint (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

section "tests (cargo test --workspace)"
# The three-host tests run in their own section below (root, their figures printed).
cargo test --workspace -- --skip three_hosts
# The suites that stall, kill or panic writers at named failpoints (engine feature failpoints):
# the engine's, and the follower's and daemons' tests of a writer stopped mid-write.
cargo test -p gardenstate --features failpoints --test failpoints --test faults --test stale_view --test size_mix
cargo test -p gardenstate-replicator --features failpoints --lib --test replication
# The TLS test whose primary's certificate clock runs ahead (GDS_TEST_CERT_CLOCK_AHEAD_S).
cargo test -p gardenstate-replicator --features failpoints --test tls a_link_whose_peer_certificate_expires_is_closed

section "three hosts: failover over network namespaces (replicator/tests/three_hosts.rs)"
# hA, hB, hW as network namespaces on a bridge, partitions with tc, a TAP delay line: kill -9,
# partition, heal, flapping, switchover, CPU saturation, a slow lossy link, HAProxy following the
# primary (the test installs Debian's haproxy when missing), each printing its
# figures (failover time, window with no writable host, writes lost, split-brain writes).
# Needs ip and tc (iproute2) and root; under CI (CI=true) a refusal fails the section, only a
# kernel without namespaces skips. About 1 minute; GDS_LONG=1: 24 kill rounds, 60 s phases.
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2
    else
        echo "ip and tc are missing: install iproute2" >&2
        exit 1
    fi
fi
cargo test -p gardenstate-replicator --test three_hosts -- --nocapture --test-threads=1

section "benchmark curves, bounded form (harness --curves --smoke, about 2.5 min)"
# How the cost grows with sessions, value size, fill, workers and 2 minutes of churn (issue 18):
# checks that every curve is measured and written (table, JSON, SVG), never a timing.
cargo test -p gardenstate-benches --test curves -- --ignored

section "loom models (.ci/loom.sh)"
.ci/loom.sh # a missing script fails the run: no section passes by skipping

section "python binding (bindings/python/test.sh)"
# Builds libgardenstate, makes target/python-venv with Flask and gunicorn, runs the unittest
# suite (every call of the binding, multi-process, and the Flask provider under gunicorn).
bindings/python/test.sh

section "nginx Lua binding (bindings/lua/test.sh)"
# Checks the module's ffi.cdef against the header, then runs a real nginx (4 workers) whose
# locations use the binding: every call over HTTP, sessions, a worker killed with SIGKILL.
bindings/lua/test.sh

section ".NET binding (bindings/dotnet/test.sh)"
# Installs Mono from Debian when missing, builds Gardenstate.dll and Gardenstate.Web.dll with
# mcs, runs the test programs (every call, locks, kill -9 multi-process, CLI interop, System.Web).
bindings/dotnet/test.sh

section "PHP binding (bindings/php/test.sh)"
# Installs php8.2 (cli, fpm), nginx and redis when missing, checks the FFI declarations against
# the header, and runs the session handler under php-fpm (4 children) behind nginx.
bindings/php/test.sh

section "one session across runtimes (bindings/session-test.sh)"
# bindings/SESSION-FORMAT.md end to end: nginx answers /lua/ itself and routes /flask/ and
# /django/ to gunicorn and /php/ to php-fpm over one segment; one cookie jar, one counter that
# every runtime increments in turn (packages installed when missing; about 10 s after the above).
bindings/session-test.sh

section "README quick start (.ci/readme.sh)"
.ci/readme.sh

# The nightly checks run to the end even if one fails (each finds different bugs); the
# script then fails naming them.
nightly_failed=()
nightly() {
    section "$1"
    shift
    "$@" || nightly_failed+=("$section_name")
}
nightly "AddressSanitizer (.ci/asan.sh)" .ci/asan.sh
nightly "ThreadSanitizer (.ci/tsan.sh)" .ci/tsan.sh
nightly "Miri (.ci/miri.sh, MIRI_SEEDS=$MIRI_SEEDS)" .ci/miri.sh
nightly "fuzz (.ci/fuzz.sh, every target, FUZZ_SECONDS=$FUZZ_SECONDS)" .ci/fuzz.sh
if [ ${#nightly_failed[@]} -gt 0 ]; then
    failed_in="$(printf '"%s" ' "${nightly_failed[@]}")"
    exit 1
fi

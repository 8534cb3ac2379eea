#!/usr/bin/env bash
# The README's test command: every check CI runs, in order. Works on a fresh Debian machine
# with the Rust toolchain (cargo, rustc, gcc) installed; it installs what else it needs
# (the rustfmt and clippy components) itself.
#
#   .ci/test.sh
#
# Sections: format, lint, tests, loom models (.ci/loom.sh, if present), README quick start.
set -euo pipefail
cd "$(dirname "$0")/.."

section_name="setup"
section() {
    section_name="$1"
    printf '\n==== %s ====\n' "$1"
}
finish() {
    local status=$?
    if [ "$status" -eq 0 ]; then
        printf '\ntest.sh: all checks passed (fmt, clippy, tests, loom, README quick start)\n'
    else
        printf '\ntest.sh: FAILED in section "%s" (exit status %s)\n' "$section_name" "$status"
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

section "format (cargo fmt --check)"
cargo fmt --all -- --check

section "lint (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

section "tests (cargo test --workspace)"
cargo test --workspace
cargo test -p gardenstate --features failpoints --test failpoints
cargo test -p gardenstate --features failpoints --test faults

section "loom models (.ci/loom.sh)"
if [ -x .ci/loom.sh ]; then
    .ci/loom.sh
else
    echo "skipped: .ci/loom.sh is not present (or not executable)"
fi

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

section "README quick start (.ci/readme.sh)"
.ci/readme.sh

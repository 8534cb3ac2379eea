#!/usr/bin/env bash
# Tests the PHP binding: builds libgardenstate and the gardenstate CLI, checks the generated
# FFI declarations against include/gardenstate.h, runs the unit tests (tests/unit.php, PHP
# CLI), then starts a real php-fpm (4 static children, the binding preloaded with
# ffi.preload + opcache.preload, PHP's default ffi.enable=preload) behind a real nginx and
# drives it over HTTP (tests/e2e.php), reading the sessions back with the CLI and the Python
# binding. Ends with "N passed, N failed"; exits non-zero on any failure.
#
#   bindings/php/test.sh            # from anywhere; as root it installs what is missing:
#                                   # php8.2-cli php8.2-fpm nginx python3 (apt-get)
#
# php-fpm and nginx run from a prefix under the target dir ($target/php-e2e/$$) on a free
# port; both are stopped and the test segments destroyed on exit, whatever happens.
set -euo pipefail
# The whole run, build included, is bounded: a hang fails it instead of holding CI.
if [ -z "${GDS_PHP_TEST_BOUNDED:-}" ]; then
    export GDS_PHP_TEST_BOUNDED=1
    exec timeout -k 30 "${GDS_PHP_TEST_TIMEOUT:-1800}" "$0" "$@"
fi
cd "$(dirname "$0")/../.."
repo=$(pwd)

need=()
command -v php8.2 >/dev/null 2>&1 || need+=(php8.2-cli)
command -v php-fpm8.2 >/dev/null 2>&1 || need+=(php8.2-fpm)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== install ${need[*]} (apt-get)"
        apt-get update -qq
        # Installing php8.2-fpm or nginx may start the distribution's services: they are not
        # ours and are left alone; the test runs its own on a free port.
        DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq "${need[@]}"
    else
        echo "test.sh: missing ${need[*]}: install them (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi
php=php8.2

echo "== build libgardenstate and the gardenstate CLI"
cargo build --release -p gardenstate-ffi -p gardenstate-replicator

# Where cargo put them: target/, or $CARGO_TARGET_DIR (CI may build elsewhere).
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export GARDENSTATE_LIB="$target_dir/release/libgardenstate.so"
export GDS_CLI="$target_dir/release/gardenstate"
export GDS_PHP_REPO="$repo"
export GDS_PHP_SEGMENT="gds-phpe2e-$$"
prefix="$target_dir/php-e2e/$$"
export GDS_PHP_PIDFILE="$prefix/app.pid"

passed=0
failed=0
# Runs one suite; adds its "N passed, N failed" closing line to the totals.
suite() {
    local log="$prefix/suite.log" rc=0
    "$@" | tee "$log" || rc=$?
    local line
    line=$(grep -E '[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
    if [ -n "$line" ]; then
        passed=$((passed + $(sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed$/\1/' <<<"$line")))
        failed=$((failed + $(sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed$/\2/' <<<"$line")))
    fi
    if [ "$rc" -ne 0 ] && [ -z "$line" ]; then
        echo "test.sh: '$*' failed (exit $rc) before reporting its tests" >&2
        failed=$((failed + 1))
    fi
}

# shellcheck source=tests/serve.sh
. bindings/php/tests/serve.sh
cleanup() {
    unserve "$prefix"
    for s in "$GDS_PHP_SEGMENT" "$GDS_PHP_SEGMENT-tiny"; do
        "$GDS_CLI" destroy --yes --force "$s" >/dev/null 2>&1 || true
        if [ -e "${GARDENSTATE_SHM_DIR:-/dev/shm}/$s" ]; then echo "test.sh: could not destroy segment $s" >&2; fi
    done
    rm -rf "$prefix"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$prefix"

echo "== $($php -v | head -1)"
echo "== FFI declarations against include/gardenstate.h (bin/generate-cdef.php --check)"
if $php bindings/php/bin/generate-cdef.php --check; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "== unit tests (tests/unit.php, PHP CLI, FFI::cdef)"
suite timeout -k 10 300 $php -d ffi.enable=1 bindings/php/tests/unit.php

echo "== php-fpm (4 static children, preloaded) behind nginx $(nginx -v 2>&1 | sed 's/^nginx version: nginx\///')"
port=$(free_port)
export GDS_PHP_URL="http://127.0.0.1:$port/"
serve "$prefix" "$port" <<EOF
env[GDS_PHP_SEGMENT] = $GDS_PHP_SEGMENT
env[GDS_PHP_PIDFILE] = $GDS_PHP_PIDFILE
php_value[session.use_strict_mode] = 1
EOF
if [ "$served" -ne 1 ]; then
    failed=$((failed + 1))
else
    suite timeout -k 10 600 $php bindings/php/tests/e2e.php
    # Any fatal error but the one tests/app provokes on purpose (op=fatal) fails the run.
    if [ -s "$prefix/php.log" ] && grep 'Fatal' "$prefix/php.log" | grep -qv 'Allowed memory size'; then
        echo "test.sh: PHP fatal errors in the workers' log:" >&2
        grep 'Fatal' "$prefix/php.log" | grep -v 'Allowed memory size' >&2
        failed=$((failed + 1))
    fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# One session across runtimes (bindings/SESSION-FORMAT.md), end to end over real servers:
# nginx (2 workers) answers /lua/count with the Lua session helper, proxies /flask/count to a
# Flask app and /django/count to a Django site, each under gunicorn (2 workers), and
# /php/count to php-fpm (2 children); all keep their sessions in one segment. session-test/test_shared.py visits them in turn with one
# cookie jar: one counter, incremented by exactly one by every runtime.
#
#   bindings/session-test.sh       # from anywhere; as root it installs what is missing:
#                                  # nginx libnginx-mod-http-lua lua-cjson php8.2-cli
#                                  # php8.2-fpm python3-venv (apt-get); Flask, Django,
#                                  # gunicorn and cffi go into target/python-venv (pip), as
#                                  # bindings/python/test.sh does (and reuses it)
#
# Everything runs from a prefix under the target dir on a free port, and is stopped (and the
# segment destroyed) on exit, whatever happens. The whole run is bounded by timeout.
set -euo pipefail
if [ -z "${GDS_SESSION_TEST_BOUNDED:-}" ]; then
    export GDS_SESSION_TEST_BOUNDED=1
    exec timeout -k 30 "${GDS_SESSION_TEST_TIMEOUT:-1200}" "$0" "$@"
fi
cd "$(dirname "$0")/.."
repo=$(pwd)

# shellcheck source=testlib.sh
. bindings/testlib.sh
need=($(lua_packages))
command -v php8.2 >/dev/null 2>&1 || need+=(php8.2-cli)
command -v php-fpm8.2 >/dev/null 2>&1 || need+=(php8.2-fpm)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
install_missing "${need[@]}"

build_lib_and_cli
export GDS_SEGMENT="gds-sessiontest-$$"
prefix="$target_dir/session-test/$$"

venv="$target_dir/python-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import cffi, flask, gunicorn, django' >/dev/null 2>&1; then
    echo "== pip install cffi flask gunicorn django (into $venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "cffi>=1.15" "flask>=2.2" \
        "gunicorn>=21" "django>=4.2,<6"
fi

pids=()
cleanup() {
    local pid f
    for f in "$prefix/nginx.pid"; do
        [ -f "$f" ] && pids+=("$(cat "$f")")
    done
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    "$GDS_CLI" destroy --yes --force "$GDS_SEGMENT" >/dev/null 2>&1 || true
    if [ -e "${GARDENSTATE_SHM_DIR:-/dev/shm}/$GDS_SEGMENT" ]; then echo "session-test.sh: could not destroy segment $GDS_SEGMENT" >&2; fi
    rm -rf "$prefix"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$prefix"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fill() {
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@REPO@|$repo|g" -e "s|@PORT@|$port|g" \
        -e "s|@SEGMENT@|$GDS_SEGMENT|g" -e "s|@GARDENSTATE_LIB@|$GARDENSTATE_LIB|g" \
        -e "s|@MODDIR@|${GDS_NGINX_MODULES:-/usr/lib/nginx/modules}|g" \
        -e "s|@USER@|$(id -un)|g" -e "s|@GROUP@|$(id -gn)|g" "$1"
}
fill bindings/session-test/nginx.conf.in >"$prefix/nginx.conf"
fill bindings/session-test/fpm.conf.in >"$prefix/fpm.conf"

"$GDS_CLI" create "$GDS_SEGMENT" --max-entries 10000 --capacity 16MiB >/dev/null

echo "== nginx $(nginx -v 2>&1 | sed 's/^nginx version: nginx\///') (Lua), gunicorn (Flask, Django), php-fpm (PHP) over segment $GDS_SEGMENT"
root_flag=()
[ "$(id -u)" -eq 0 ] && root_flag=(-R) # the pool runs as the invoking user, root in CI
php-fpm8.2 "${root_flag[@]}" -F -y "$prefix/fpm.conf" -d ffi.enable=1 >"$prefix/fpm.out" 2>&1 &
pids+=($!)
for spec in flask:flask_app:app django:django_app:application; do
    sock="gunicorn-${spec%%:*}"
    PYTHONPATH="$repo/bindings/python:$repo/bindings/session-test" "$venv/bin/python" -m gunicorn \
        --workers 2 --bind "unix:$prefix/$sock.sock" --error-logfile "$prefix/$sock.log" \
        --preload "${spec#*:}" >"$prefix/$sock.out" 2>&1 &
    pids+=($!)
done
nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/nginx-error.log"
ready=0
for _ in $(seq 300); do # bounded: 30 s
    if [ -S "$prefix/fpm.sock" ] && [ -S "$prefix/gunicorn-flask.sock" ] && [ -S "$prefix/gunicorn-django.sock" ] \
        && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    echo "session-test.sh: the servers did not start" >&2
    tail -n 20 "$prefix"/*.log "$prefix"/*.out >&2 || true
    exit 1
fi

rc=0
GDS_URL="http://127.0.0.1:$port" timeout -k 10 300 python3 bindings/session-test/test_shared.py || rc=$?
# Any error in a server's log fails the run (a Lua error, a PHP warning, a Flask traceback).
if grep -E '\[(error|alert|crit)\]' "$prefix/nginx-error.log" >&2 \
    || grep -E 'PHP (Fatal|Warning)' "$prefix/php.log" >&2 2>/dev/null \
    || grep -E 'Traceback|ERROR' "$prefix"/gunicorn*.log >&2; then
    echo "session-test.sh: errors in the servers' logs (above)" >&2
    rc=1
fi
exit $rc

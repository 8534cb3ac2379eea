#!/usr/bin/env bash
# Tests the nginx Lua binding: builds libgardenstate and the gardenstate CLI, checks the
# module's ffi.cdef against include/gardenstate.h, then starts a real nginx (master process,
# 4 workers, lua-nginx-module as Debian packages it) whose locations use the binding, and
# drives it over HTTP with tests/test_nginx.py (Python standard library + the Python binding).
#
#   bindings/lua/test.sh            # from anywhere; as root it installs what is missing:
#                                   # nginx libnginx-mod-http-lua lua-cjson (apt-get), and
#                                   # runs the README's recipe (tests/test_recipe.py): it
#                                   # creates the group gardenstate and a throwaway user
#
# nginx runs from its own prefix under the target dir (target/lua-nginx, or
# $CARGO_TARGET_DIR/lua-nginx) on a free port; it is stopped and the test segment destroyed
# on exit, whatever happens. The whole run is bounded by timeout.
set -euo pipefail
# The whole run, build included, is bounded: a hang fails it instead of holding CI.
if [ -z "${GDS_LUA_TEST_BOUNDED:-}" ]; then
    export GDS_LUA_TEST_BOUNDED=1
    exec timeout -k 30 "${GDS_LUA_TEST_TIMEOUT:-1800}" "$0" "$@"
fi
cd "$(dirname "$0")/../.."

# shellcheck source=../testlib.sh
. bindings/testlib.sh
need=($(lua_packages))
command -v python3 >/dev/null 2>&1 || need+=(python3)
install_missing "${need[@]}"

# The interop checks use the Python binding from the checkout: it compiles its cffi module on
# first use, so the interpreter needs cffi (and a C compiler, which cargo's build needs too).
if ! python3 -c 'import cffi' >/dev/null 2>&1; then
    echo "== install cffi for $(command -v python3) (pip)"
    python3 -m pip install -q 'cffi>=1.15' || apt-get install -y -qq python3-cffi
fi

build_lib_and_cli
export GDS_LUA_SEGMENT="gds-luatest-$$"
export GDS_LUA_PREFIX="$target_dir/lua-nginx/$$"

cleanup() {
    local pidfile pid seg
    for pidfile in "$GDS_LUA_PREFIX/nginx.pid" "$GDS_LUA_PREFIX/recipe/nginx.pid"; do
        if [ -f "$pidfile" ] && pid=$(cat "$pidfile") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for seg in "$GDS_LUA_SEGMENT" "$GDS_LUA_SEGMENT-recipe"; do
        "$GDS_CLI" destroy --yes --force "$seg" >/dev/null 2>&1 || true
        if [ -e "${GARDENSTATE_SHM_DIR:-/dev/shm}/$seg" ]; then echo "test.sh: could not destroy segment $seg" >&2; fi
    done
    rm -rf "$GDS_LUA_PREFIX"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== ffi.cdef and constants against include/gardenstate.h"
python3 bindings/lua/tests/check_cdef.py

echo "== nginx $(nginx -v 2>&1 | sed 's/^nginx version: //'), 4 workers, over HTTP (tests/test_nginx.py)"
# A hung test must fail the run, not hold CI: it takes well under a minute here.
timeout -k 10 600 python3 bindings/lua/tests/test_nginx.py

# The README's recipe as written: workers as nobody, the segment made by root and by an
# operator with --group, the tools as both. Needs root (groupadd, useradd, nginx's user).
if [ "$(id -u)" -eq 0 ]; then
    echo "== the README's recipe: workers as nobody, segment and tools as root and as an operator (tests/test_recipe.py)"
    timeout -k 10 300 python3 bindings/lua/tests/test_recipe.py
else
    echo "== SKIPPED the README's recipe (tests/test_recipe.py): needs root"
fi

# Shell set-up shared by bindings/lua/test.sh and bindings/session-test.sh (sourced, from the
# repository's root).

# install_missing PACKAGE...: installs the Debian packages with apt-get when run as root (a
# fresh CI machine), else fails naming them. Nothing to do without arguments. Installing nginx
# or php-fpm may start the distribution's services: they are not ours and are left alone (the
# tests run their own, on free ports).
install_missing() {
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== install $* (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq "$@"
    else
        echo "$(basename "$0"): missing $*: install them (apt-get install $*)" >&2
        exit 1
    fi
}

# lua_packages: the packages nginx's Lua binding needs that are missing, one a line (nginx,
# lua-nginx-module as Debian packages it, and cjson for the session helper: OpenResty bundles
# it, Debian's module does not).
lua_packages() {
    command -v nginx >/dev/null 2>&1 || echo nginx
    [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || echo libnginx-mod-http-lua
    ls /usr/lib/*/lua/5.1/cjson.so >/dev/null 2>&1 || echo lua-cjson
}

# build_lib_and_cli: builds libgardenstate and the gardenstate CLI (release) and sets
# target_dir (target/, or $CARGO_TARGET_DIR: CI may build elsewhere), GARDENSTATE_LIB and
# GDS_CLI.
build_lib_and_cli() {
    echo "== build libgardenstate and the gardenstate CLI"
    cargo build --release -p gardenstate-ffi -p gardenstate-replicator
    target_dir=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    export GARDENSTATE_LIB="$target_dir/release/libgardenstate.so"
    export GDS_CLI="$target_dir/release/gardenstate"
}

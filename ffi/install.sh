#!/usr/bin/env bash
# Installs libgardenstate: the shared and static libraries, include/gardenstate.h, and a
# pkg-config file, so that a C program builds with
#
#   cc app.c $(pkg-config --cflags --libs gardenstate)
#
# Usage: ffi/install.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--from DIR]
#   --prefix DIR   where to install (default /usr/local)
#   --libdir DIR   where the libraries and pkgconfig/ go (default PREFIX/lib)
#   --destdir DIR  stage under DIR (packaging): files go to DIR/PREFIX/..., while the .pc
#                  file still names PREFIX
#   --from DIR     install the libraries already built in DIR (e.g. target/release)
#                  instead of running `cargo build --release -p gardenstate-ffi`
#
# Installed: LIBDIR/libgardenstate.so.VERSION, the SONAME link libgardenstate.so.ABI, the
# development link libgardenstate.so, LIBDIR/libgardenstate.a, PREFIX/include/gardenstate.h
# and LIBDIR/pkgconfig/gardenstate.pc.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

prefix=/usr/local
libdir=""
destdir=""
from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --libdir) libdir=${2:?--libdir needs a directory}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --from) from=${2:?--from needs a directory}; shift 2 ;;
        -h | --help) usage 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
libdir=${libdir:-$prefix/lib}
case "$prefix$libdir" in
    *@*) echo "install.sh: '@' is not allowed in --prefix or --libdir" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

if [ -z "$from" ]; then
    (cd "$root" && cargo build --release -p gardenstate-ffi)
    from=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
fi
for f in libgardenstate.so libgardenstate.a; do
    [ -f "$from/$f" ] || { echo "install.sh: $from/$f not found (build first, or fix --from)" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/Cargo.toml" | head -n1)
abi=$(sed -n 's/^#define GDS_ABI_VERSION \([0-9]*\)$/\1/p' "$root/include/gardenstate.h")
[ -n "$version" ] && [ -n "$abi" ] || { echo "install.sh: cannot read the version or ABI version" >&2; exit 1; }

lib="$destdir$libdir"
inc="$destdir$prefix/include"
install -d "$lib/pkgconfig" "$inc"
install -m 0755 "$from/libgardenstate.so" "$lib/libgardenstate.so.$version"
ln -sfn "libgardenstate.so.$version" "$lib/libgardenstate.so.$abi"
ln -sfn "libgardenstate.so.$abi" "$lib/libgardenstate.so"
install -m 0644 "$from/libgardenstate.a" "$lib/libgardenstate.a"
install -m 0644 "$root/include/gardenstate.h" "$inc/gardenstate.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@VERSION@|$version|g" \
    "$here/gardenstate.pc.in" >"$lib/pkgconfig/gardenstate.pc"
chmod 0644 "$lib/pkgconfig/gardenstate.pc"
echo "installed libgardenstate $version (ABI $abi) into $destdir$prefix"

#!/usr/bin/env bash
# Builds libgardenstate and the gardenstate CLI, compiles the .NET binding (Gardenstate.dll)
# and its test program with Mono's mcs, and runs the tests under mono.
#
#   bindings/dotnet/test.sh            # from anywhere
#
# Needs mono-mcs and mono-runtime (Debian), libmono-system-web4.0-cil for the System.Web
# provider (Gardenstate.Web.dll), and nginx and mono-fastcgi-server4 for the real-host suite
# (tests/host/run.sh: a web garden of two fastcgi-mono-server4 processes behind nginx);
# installed with apt-get when missing and run as root. Nothing else: no NuGet, no network
# beyond apt. Outputs go to $target_dir/dotnet/.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

system_web=/usr/lib/mono/4.5/System.Web.dll
packages="mono-mcs mono-runtime libmono-system-web4.0-cil nginx mono-fastcgi-server4"
if ! command -v mcs >/dev/null 2>&1 || ! command -v mono >/dev/null 2>&1 || [ ! -f "$system_web" ] \
    || ! command -v nginx >/dev/null 2>&1 || ! command -v fastcgi-mono-server4 >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== install $packages (apt-get)"
        start=$(date +%s)
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
        echo "   apt-get took $(( $(date +%s) - start )) s"
    else
        echo "test.sh: install $packages" >&2
        exit 1
    fi
fi
echo "mono: $(mono --version | head -1)"

echo "== build libgardenstate and the gardenstate CLI (cargo build --release)"
cargo build --release -p gardenstate-ffi -p gardenstate-replicator

# Where cargo put them: target/, or $CARGO_TARGET_DIR (CI may build elsewhere).
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -f "$target_dir/release/libgardenstate.so" ] || {
    echo "test.sh: no libgardenstate.so in $target_dir/release" >&2
    exit 1
}
out="$target_dir/dotnet"
mkdir -p "$out"

echo "== compile Gardenstate.dll, Gardenstate.Web.dll and the test programs (mcs)"
mcs -target:library -unsafe -optimize+ -warnaserror+ -nologo \
    -out:"$out/Gardenstate.dll" bindings/dotnet/src/*.cs
mcs -target:library -optimize+ -warnaserror+ -nologo -r:System.Web.dll -r:System.Configuration.dll \
    -r:"$out/Gardenstate.dll" -out:"$out/Gardenstate.Web.dll" bindings/dotnet/src/web/*.cs
mcs -debug -warnaserror+ -nologo -r:"$out/Gardenstate.dll" \
    -out:"$out/GardenstateTests.exe" bindings/dotnet/tests/Tests.cs
mcs -debug -warnaserror+ -nologo -r:System.Web.dll -r:System.Configuration.dll -r:"$out/Gardenstate.dll" \
    -r:"$out/Gardenstate.Web.dll" -out:"$out/GardenstateWebTests.exe" bindings/dotnet/tests/WebTests.cs

echo "== run the tests (mono)"
# DllImport("gardenstate") resolves libgardenstate.so through the loader path.
export LD_LIBRARY_PATH="$target_dir/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GARDENSTATE_CLI="$target_dir/release/gardenstate"
# A hung test must fail the run, not hold CI: the suite takes about 15 s here.
export GDS_NET_TEST_PREFIX="nettest-$$-"
shm_dir=${GARDENSTATE_SHM_DIR:-/dev/shm}
trap 'rm -f "$shm_dir/$GDS_NET_TEST_PREFIX"*' EXIT
cd "$out"
timeout -k 30 600 mono --debug GardenstateTests.exe
timeout -k 30 120 mono --debug GardenstateWebTests.exe

echo "== real host: nginx + two fastcgi-mono-server4 over one segment (tests/host/run.sh)"
cd "$repo"
timeout -k 30 600 bindings/dotnet/tests/host/run.sh "$out"

#!/usr/bin/env bash
# Builds libgardenstate, makes a virtualenv with Flask and gunicorn, and runs the Python
# binding's tests (unittest) with it.
#
#   bindings/python/test.sh            # from anywhere
#
# The venv lives in target/python-venv (or $CARGO_TARGET_DIR/python-venv) (reused by later runs; delete it for a cold start).
# Flask and gunicorn come from pip, into the venv only: nothing on the machine is relied on
# beyond python3 (with its venv module; installed with apt-get when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

echo "== build libgardenstate (cargo build --release -p gardenstate-ffi)"
cargo build --release -p gardenstate-ffi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
    echo "test.sh: $python not found (set PYTHON=...)" >&2
    exit 1
fi
"$python" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' || {
    echo "test.sh: Python 3.9 or newer is needed" >&2
    exit 1
}

# Where cargo put the library: target/, or $CARGO_TARGET_DIR (CI may build elsewhere).
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv="$target_dir/python-venv"
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== install python3-venv (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "test.sh: the venv module is missing: install python3-venv" >&2
        exit 1
    fi
fi

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "== create the venv ($venv)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import flask, gunicorn' >/dev/null 2>&1; then
    echo "== pip install flask gunicorn (into the venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "flask>=2.2" "gunicorn>=21"
fi
"$venv/bin/python" -c 'import flask, gunicorn, sys; print("python", sys.version.split()[0], "flask", flask.__version__ if hasattr(flask, "__version__") else "?", "gunicorn", gunicorn.__version__)' 2>/dev/null \
    || "$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(flask|gunicorn) '

echo "== unittest (bindings/python/tests)"
export GDS_PY_REQUIRE_FLASK=1
export GARDENSTATE_LIB="$target_dir/release/libgardenstate.so"
# A hung test must fail the run, not hold CI: the suite takes well under a minute here.
timeout -k 30 1200 "$venv/bin/python" -m unittest discover -s bindings/python/tests -v

#!/usr/bin/env bash
# Installs the Python binding with pip into a virtualenv with Flask, Django and gunicorn (pip
# builds libgardenstate with cargo and bundles it in the package, and compiles the cffi
# binding gardenstate._gds from include/gardenstate.h), runs the binding's tests
# (unittest) against the installed package, then builds a wheel with `pip wheel`, installs it
# into a fresh venv with cargo off PATH, and runs the tests again against that install.
#
#   bindings/python/test.sh            # from anywhere
#
# The venv lives in target/python-venv (or $CARGO_TARGET_DIR/python-venv) (reused by later runs; delete it for a cold start).
# cffi, Flask, Django, gunicorn and Django's sdist (for its session tests) come from pip, into the venv only: nothing on the machine is relied on
# beyond python3 (with its venv module; installed with apt-get when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

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
deps=("cffi>=1.15" "flask>=2.2" "gunicorn>=21" "django>=4.2,<6")
if ! "$venv/bin/python" -c 'import cffi, flask, gunicorn, django' >/dev/null 2>&1; then
    echo "== pip install ${deps[*]} (into the venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${deps[@]}"
fi
"$venv/bin/python" -c 'import flask, gunicorn, sys; print("python", sys.version.split()[0], "flask", flask.__version__ if hasattr(flask, "__version__") else "?", "gunicorn", gunicorn.__version__)' 2>/dev/null \
    || "$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(flask|gunicorn) '

# Django's own session-backend tests (SessionTestsMixin), from the sdist of the installed
# version: tests/sessions_tests, unmodified.
django_version=$("$venv/bin/python" -c 'import django; print(django.__version__)')
django_tests="$target_dir/django-$django_version-tests"
if [ ! -f "$django_tests/sessions_tests/tests.py" ]; then
    echo "== Django $django_version sdist: tests/sessions_tests"
    sdist_dir=$(mktemp -d)
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-binary :all: \
        --no-deps "django==$django_version" -d "$sdist_dir"
    rm -rf "$django_tests" && mkdir -p "$django_tests"
    tar -xzf "$sdist_dir"/[dD]jango-"$django_version".tar.gz -C "$django_tests" \
        --strip-components=2 "$(basename "$sdist_dir"/[dD]jango-"$django_version".tar.gz .tar.gz)/tests/sessions_tests"
    rm -rf "$sdist_dir"
fi
export GDS_DJANGO_TESTS="$django_tests"

# The gardenstate CLI: a test opens a segment it created with non-default options.
echo "== build the gardenstate CLI"
cargo build --release -p gardenstate-replicator
export GDS_CLI="$target_dir/release/gardenstate"

echo "== pip install ./bindings/python (builds libgardenstate with cargo, bundles it)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    --no-deps ./bindings/python

# The suite runs against the installed package: GDS_PY_INSTALLED keeps the checkout's
# bindings/python off sys.path, and the run starts in a directory without a gardenstate/.
run_suite() { # python, label
    local py=$1 log
    log=$(mktemp)
    echo "== unittest ($2)"
    (cd "$target_dir" && env -u GARDENSTATE_LIB GDS_PY_INSTALLED=1 GDS_PY_REQUIRE_FLASK=1 GDS_PY_REQUIRE_DJANGO=1 \
        timeout -k 30 1200 "$py" -m unittest discover -s "$repo/bindings/python/tests" -v) 2>&1 | tee "$log"
    # Everything a skip waits for is installed above: here a skipped test is a failure, not a pass.
    if grep -q 'skipped=' "$log"; then
        echo "test.sh: tests were skipped, which this script treats as a failure:" >&2
        grep -E ' \.\.\. skipped ' "$log" >&2 || true
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
}
# A hung test must fail the run, not hold CI: the suite takes well under a minute here.
run_suite "$venv/bin/python" "the package pip installed from the checkout"

echo "== pip wheel ./bindings/python, installed into a fresh venv without cargo"
wheel_dir="$target_dir/python-wheel"
rm -rf "$wheel_dir"
"$venv/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    -w "$wheel_dir" ./bindings/python
wheel=$(ls "$wheel_dir"/gardenstate-*.whl)
case "$wheel" in
*-none-any.whl) echo "test.sh: $wheel is not a platform wheel" >&2; exit 1 ;;
esac
grep -qx 'gardenstate/libgardenstate.so' < <(unzip -Z1 "$wheel") \
    || { echo "test.sh: $wheel does not bundle libgardenstate.so" >&2; exit 1; }
fresh="$target_dir/python-venv-wheel"
rm -rf "$fresh"
"$python" -m venv "$fresh"
"$fresh/bin/python" -m pip install --quiet --disable-pip-version-check "${deps[@]}"
# PATH without any directory that holds cargo (or rustc): the wheel must not need them.
nocargo_path=$(printf '%s' "$PATH" | tr ':' '\n' \
    | while read -r d; do [ -x "$d/cargo" ] || [ -x "$d/rustc" ] || printf '%s:' "$d"; done)
nocargo_path=${nocargo_path%:}
PATH=$nocargo_path "$fresh/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-index --no-deps "$wheel"
PATH=$nocargo_path bash -c '! command -v cargo >/dev/null' \
    || { echo "test.sh: cargo is still on PATH" >&2; exit 1; }
PATH=$nocargo_path run_suite "$fresh/bin/python" "the wheel in a fresh venv, cargo off PATH"

"""Build step of the gardenstate package: builds libgardenstate and bundles it, and compiles
the binding gardenstate._gds (cffi, gardenstate_build.py).

`pip install ./bindings/python` and `pip wheel ./bindings/python` run this (setuptools is the
build backend, pyproject.toml). build_py runs `cargo build --release -p gardenstate-ffi` at
the root of the repository this directory sits in and copies libgardenstate.so into the
package, beside its modules, where gardenstate._native looks first.
wheel (it carries compiled code), installable without cargo or a C compiler.

Set GARDENSTATE_PREBUILT_LIB to an existing libgardenstate.so to bundle it instead of running
cargo (a packager who built it already).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def build_library() -> Path:
    prebuilt = os.environ.get("GARDENSTATE_PREBUILT_LIB")
    if prebuilt:
        return Path(prebuilt)
    if not (REPO / "ffi" / "Cargo.toml").exists():
        raise SystemExit(
            f"gardenstate: {REPO} is not the gardenstate repository (no ffi/Cargo.toml): build "
            "this package from a checkout (pip install ./bindings/python), or set "
            "GARDENSTATE_PREBUILT_LIB to a libgardenstate.so")
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SystemExit(
            "gardenstate: cargo was not found on PATH: building the package compiles "
            "libgardenstate (install Rust from https://rustup.rs), or install a wheel built "
            "elsewhere with `pip wheel ./bindings/python`")
    subprocess.run([cargo, "build", "--release", "-p", "gardenstate-ffi"], cwd=REPO, check=True)
    meta = subprocess.run([cargo, "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
                          check=True, capture_output=True, text=True).stdout
    return Path(json.loads(meta)["target_directory"]) / "release" / "libgardenstate.so"


class BuildWithLibrary(build_py):
    """build_py, then the library into the built package."""

    def run(self):
        super().run()
        lib = build_library()
        dest = Path(self.build_lib) / "gardenstate" / "libgardenstate.so"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)


# gardenstate._gds, the compiled binding (cffi API mode, from include/gardenstate.h): it makes
# the wheel a platform wheel.
setup(cmdclass={"build_py": BuildWithLibrary}, cffi_modules=["gardenstate_build.py:ffibuilder"])

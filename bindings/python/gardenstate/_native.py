"""Loading libgardenstate and its compiled binding, gardenstate._gds.

gardenstate._gds is a cffi (API mode) extension built from include/gardenstate.h by
gardenstate_build.py: the header's own declarations (functions, structs, constants, checked
by the C compiler) plus a gate wrapper per store function (see gardenstate_build.py). It does
not link libgardenstate: `lib()` loads the library chosen below with RTLD_GLOBAL, checks its
ABI version, and only then imports _gds, whose gds_ symbols resolve against that library.
The constants below are the header's too, kept here so that `import gardenstate` needs no
library; tests/test_abi.py checks them against the header.

Loading order (the first that exists wins; a named file that fails to load is an error, never
a silent fallback to another copy):

1. the bundled copy: libgardenstate.so inside this package (pip install / a wheel puts the
   library it built there, so an installed package uses the library it was built with);
2. the file named by the environment variable GARDENSTATE_LIB (a package without a bundled
   copy: a checkout on PYTHONPATH, or a distribution that ships the library separately);
3. target/release/libgardenstate.so of the repository this package sits in (a checkout;
   $CARGO_TARGET_DIR/release if that is set);
4. the system loader: libgardenstate.so.<GDS_ABI_VERSION> (the SONAME), then libgardenstate.so.

Before any other symbol is used, gds_abi_version() must equal GDS_ABI_VERSION below (the
header's); otherwise AbiMismatchError is raised and the library is not used. The prototypes
of the other functions are declared only after that check.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any

from .errors import AbiMismatchError, LibraryNotFoundError

# --- constants of include/gardenstate.h (checked against the header by the tests) ---------

GDS_ABI_VERSION = 1
GDSPY_CLOSED = -1  # gardenstate_build.GDSPY_CLOSED: a gate wrapper's "the handle is closed"
GDS_OPTION_EVICT = 1
GDS_OPTION_EVICT_GIVEN = 2
GDS_TTL_NEVER = 2**64 - 1

GDS_WRITE_MODE_WRITABLE = 0
GDS_WRITE_MODE_REPLICA = 1
GDS_WRITE_MODE_FENCED = 2

GDS_ROLE_PRIMARY = 0
GDS_ROLE_STANDBY = 1
GDS_ROLE_FENCED = 2
GDS_ROLE_LEASE_LAPSED = 3

GDS_EXPIRY_NEVER = 0
GDS_EXPIRY_AFTER = 1
GDS_EXPIRY_SLIDING = 2

GDS_CHANGE_NOP = 0
GDS_CHANGE_SET = 1
GDS_CHANGE_DELETE = 2
GDS_CHANGE_TOUCH = 3
GDS_CHANGE_LOCK = 4
GDS_CHANGE_UNLOCK = 5
GDS_CHANGE_EXPIRE = 6
GDS_CHANGE_EVICT = 7

# enum gds_status
GDS_OK = 0
GDS_NOT_FOUND = 1
GDS_FEED_EMPTY = 2
GDS_FEED_PENDING = 3
GDS_ERR_EXISTS = 10
GDS_ERR_VERSION_MISMATCH = 11
GDS_ERR_LOCKED = 12
GDS_ERR_LOCK_MISMATCH = 13
GDS_ERR_READ_ONLY = 14
GDS_ERR_FULL_INDEX = 20
GDS_ERR_FULL_HEAP = 21
GDS_ERR_FULL_CLIENTS = 22
GDS_ERR_KEY_LENGTH = 23
GDS_ERR_VALUE_LENGTH = 24
GDS_ERR_BUFFER_TOO_SMALL = 25
GDS_ERR_FEED_OVERFLOW = 26
GDS_ERR_IO = 30
GDS_ERR_SEGMENT_EXISTS = 31
GDS_ERR_NO_SEGMENT = 32
GDS_ERR_PERMISSION = 33
GDS_ERR_INCOMPATIBLE = 34
GDS_ERR_CORRUPT = 35
GDS_ERR_NOT_READY = 36
GDS_ERR_INVALID_OPTIONS = 37
GDS_ERR_REFUSED = 38
GDS_ERR_DESTROYED = 39
GDS_ERR_NULL_ARGUMENT = 40
GDS_ERR_INVALID_ARGUMENT = 41
GDS_ERR_PANIC = 42
GDS_ERR_OUT_OF_MEMORY = 43
GDS_ERR_UNKNOWN = 49


_lock = threading.Lock()
_lib: Any = None  # gardenstate._gds.lib, once loaded
_ffi: Any = None
_lib_path: str | None = None


def _candidates() -> list[tuple[str, bool]]:
    """(path or soname, explicit): explicit candidates must load or it is an error."""
    here = Path(__file__).resolve().parent
    bundled = here / "libgardenstate.so"
    if bundled.exists():
        return [(str(bundled), True)]
    env = os.environ.get("GARDENSTATE_LIB")
    if env:
        return [(env, True)]
    out = []
    # bindings/python/gardenstate -> repository root; cargo's target directory is target/
    # there unless CARGO_TARGET_DIR moved it.
    if len(here.parents) > 2:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or here.parents[2] / "target")
        if not target.is_absolute():
            target = here.parents[2] / target
        repo_lib = target / "release" / "libgardenstate.so"
        if repo_lib.exists():
            out.append((str(repo_lib), True))
    out.append((f"libgardenstate.so.{GDS_ABI_VERSION}", False))
    out.append(("libgardenstate.so", False))
    return out


def _load() -> tuple[ctypes.CDLL, str]:
    tried = []
    for name, explicit in _candidates():
        try:
            # RTLD_GLOBAL: the symbols of gardenstate._gds resolve against this copy.
            cdll = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            if explicit:
                raise LibraryNotFoundError(
                    f"cannot load libgardenstate from {name!r}: {e}. "
                    "Build it with `cargo build --release -p gardenstate-ffi`, or point "
                    "GARDENSTATE_LIB at a libgardenstate.so."
                ) from e
            tried.append(f"{name} ({e})")
            continue
        return cdll, name
    raise LibraryNotFoundError(
        "libgardenstate was not found: the package has no bundled copy (it was not installed "
        "with pip), GARDENSTATE_LIB is not set, the repository's target/release has none, and "
        "the system loader found none (tried: " + "; ".join(tried) + "). Build it with "
        "`pip install ./bindings/python` (which builds and bundles it), or build it with "
        "`cargo build --release -p gardenstate-ffi` and set GARDENSTATE_LIB to its path, or "
        "install it system-wide (ffi/install.sh)."
    )


def _import_gds() -> Any:
    """gardenstate._gds: the installed module, or in a checkout (PYTHONPATH=bindings/python,
    nothing installed) one compiled from the checkout's header on first use, once, into
    $XDG_CACHE_HOME/gardenstate/<hash of the header, builder and Python>/ (as cffi's verify()
    did): tools and other bindings' tests can use a checkout as before, given cffi and a C
    compiler."""
    try:
        from . import _gds

        return _gds
    except ImportError as e:
        missing = e
    builder = Path(__file__).resolve().parent.parent / "gardenstate_build.py"
    header = builder.parent.parent.parent / "include" / "gardenstate.h"
    how = ("install the package with pip (pip install ./bindings/python), or build it in place "
           "with `python bindings/python/gardenstate_build.py`")
    if not (builder.exists() and header.exists()):
        raise LibraryNotFoundError(
            f"the compiled module gardenstate._gds cannot be imported ({missing}): {how}"
        ) from missing
    try:
        import cffi  # noqa: F401  (the builder's and the module's runtime)
    except ImportError as e:
        raise LibraryNotFoundError(
            "gardenstate runs from a checkout without its compiled module, and cffi is not "
            "installed to build it (pip install cffi, or apt-get install python3-cffi): " + how
        ) from e
    import hashlib
    import importlib.util
    import shutil
    import sys
    import tempfile

    digest = hashlib.sha256(builder.read_bytes() + header.read_bytes()
                            + sys.version.encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gardenstate"
    cache = root / digest
    if not cache.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".build-", dir=root)
        try:
            spec = importlib.util.spec_from_file_location("gardenstate_build", builder)
            build = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(build)
            build.ffibuilder.compile(tmpdir=tmp, verbose=False)
            try:
                os.rename(tmp, cache)  # atomic: concurrent builders, one wins
            except OSError:
                if not cache.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    so = next((cache / "gardenstate").glob("_gds*.so"))
    spec = importlib.util.spec_from_file_location("gardenstate._gds", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["gardenstate._gds"] = module
    return module


def lib() -> Any:
    """The compiled binding's lib (gardenstate._gds.lib), over the loaded, ABI-checked
    library (loaded on first use)."""
    global _lib, _ffi, _lib_path
    gds = _lib
    if gds is not None:
        return gds
    with _lock:
        if _lib is not None:
            return _lib
        cdll, path = _load()
        # The ABI check comes before any other symbol is looked up or called.
        abi = cdll.gds_abi_version
        abi.restype = ctypes.c_uint32
        abi.argtypes = []
        found = abi()
        if found != GDS_ABI_VERSION:
            raise AbiMismatchError(
                f"{path} has ABI version {found}, but this gardenstate package was written "
                f"for ABI version {GDS_ABI_VERSION} (include/gardenstate.h GDS_ABI_VERSION). "
                "Install the package and the library from the same release, or point "
                "GARDENSTATE_LIB at a matching libgardenstate.so."
            )
        _gds = _import_gds()
        # fork() must not happen while a thread is inside a gds_ call (ffi/README.md): the
        # gate holds new calls and waits for those in flight (gardenstate_build.py).
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_gds.lib.gdspy_before_fork,
                                after_in_parent=_gds.lib.gdspy_after_fork,
                                after_in_child=_gds.lib.gdspy_after_fork_child)
        _ffi, _lib, _lib_path = _gds.ffi, _gds.lib, path
        return _lib


def ffi() -> Any:
    """The compiled binding's ffi (gardenstate._gds.ffi)."""
    lib()
    return _ffi


def lib_path() -> str:
    """The path or soname the library was loaded from."""
    lib()
    assert _lib_path is not None
    return _lib_path

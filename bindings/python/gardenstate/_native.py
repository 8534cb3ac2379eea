"""Loading libgardenstate and declaring its C ABI for ctypes.

This module is the only place that knows the header (include/gardenstate.h): the constants,
the struct layouts and the prototypes. Everything else in the package goes through `lib()`.

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
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int32,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

from .errors import AbiMismatchError, LibraryNotFoundError

# --- constants of include/gardenstate.h (checked against the header by the tests) ---------

GDS_ABI_VERSION = 1
GDS_OPTION_EVICT = 1
GDS_TTL_NEVER = 2**64 - 1

GDS_WRITE_MODE_WRITABLE = 0
GDS_WRITE_MODE_REPLICA = 1
GDS_WRITE_MODE_FENCED = 2

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
GDS_ERR_NULL_ARGUMENT = 40
GDS_ERR_INVALID_ARGUMENT = 41
GDS_ERR_PANIC = 42
GDS_ERR_OUT_OF_MEMORY = 43
GDS_ERR_UNKNOWN = 49


# --- structs (field order and types exactly as in the header) ------------------------------


class gds_options(Structure):
    _fields_ = [
        ("struct_size", c_uint64),
        ("capacity_bytes", c_uint64),
        ("max_entries", c_uint64),
        ("max_value", c_uint64),
        ("feed_len", c_uint64),
        ("max_key", c_uint32),
        ("max_clients", c_uint32),
        ("mode", c_uint32),
        ("flags", c_uint32),
    ]


class gds_info(Structure):
    _fields_ = [
        ("struct_size", c_uint64),
        ("segment_bytes", c_uint64),
        ("heap_bytes", c_uint64),
        ("page_size", c_uint64),
        ("max_entries", c_uint64),
        ("index_slots", c_uint64),
        ("max_key", c_uint64),
        ("max_value", c_uint64),
        ("max_clients", c_uint64),
        ("feed_len", c_uint64),
        ("dataset_id", c_uint64),
        ("flags", c_uint64),
    ]


class gds_meta(Structure):
    _fields_ = [
        ("version", c_uint64),
        ("value_len", c_uint64),
        ("ttl_left_ms", c_uint64),
        ("lock_id", c_uint64),
        ("lock_age_ms", c_uint64),
    ]


class gds_lock_info(Structure):
    _fields_ = [
        ("lock_id", c_uint64),
        ("age_ms", c_uint64),
        ("took_over", c_uint32),
        ("reserved", c_uint32),
    ]


class gds_stats(Structure):
    _fields_ = [
        ("struct_size", c_uint64),
        ("live_entries", c_uint64),
        ("bytes_used", c_uint64),
        ("bytes_free", c_uint64),
        ("hits", c_uint64),
        ("misses", c_uint64),
        ("sets", c_uint64),
        ("deletes", c_uint64),
        ("expirations", c_uint64),
        ("evictions", c_uint64),
        ("touches", c_uint64),
        ("locks", c_uint64),
        ("lock_contentions", c_uint64),
        ("lock_takeovers", c_uint64),
        ("dead_reclaims", c_uint64),
        ("sweeps", c_uint64),
        ("clients", c_uint64),
        ("feed_head", c_uint64),
    ]


class gds_sweep_report(Structure):
    _fields_ = [
        ("struct_size", c_uint64),
        ("ran", c_uint64),
        ("examined", c_uint64),
        ("expired", c_uint64),
        ("dead_clients_reclaimed", c_uint64),
    ]


class gds_check_report(Structure):
    _fields_ = [
        ("struct_size", c_uint64),
        ("entries", c_uint64),
        ("blocks_in_use", c_uint64),
        ("leaked_blocks", c_uint64),
        ("hidden_free_blocks", c_uint64),
        ("stale_free_bits", c_uint64),
        ("dead_clients", c_uint64),
        ("problem_count", c_uint64),
    ]


class gds_entry(Structure):
    _fields_ = [
        ("key", c_void_p),
        ("key_len", c_size_t),
        ("value", c_void_p),
        ("value_len", c_size_t),
        ("meta", gds_meta),
        ("slot", c_uint32),
        ("reserved", c_uint32),
    ]


class gds_change(Structure):
    _fields_ = [
        ("seq", c_uint64),
        ("version", c_uint64),
        ("key_hash", c_uint64),
        ("slot", c_uint32),
        ("kind", c_uint32),
    ]


gds_scan_fn = CFUNCTYPE(c_int, c_void_p, POINTER(gds_entry))

# Every struct this module declares, by its C name (the tests compare each with the header).
STRUCTS = {
    cls.__name__: cls
    for cls in (
        gds_options,
        gds_info,
        gds_meta,
        gds_lock_info,
        gds_stats,
        gds_sweep_report,
        gds_check_report,
        gds_entry,
        gds_change,
    )
}

_store_p = c_void_p
_bytes = c_char_p  # (pointer, length) byte strings: bytes objects are passed without a copy
_u64p = POINTER(c_uint64)
_sizep = POINTER(c_size_t)

# name: (restype, argtypes)
_PROTOTYPES = {
    "gds_version": (c_char_p, []),
    "gds_version_number": (c_uint32, []),
    "gds_strerror": (c_char_p, [c_int32]),
    "gds_last_error_message": (c_char_p, []),
    "gds_options_default": (c_int32, [POINTER(gds_options)]),
    "gds_create": (c_int32, [c_char_p, POINTER(gds_options), POINTER(_store_p)]),
    "gds_open": (c_int32, [c_char_p, POINTER(gds_options), POINTER(_store_p)]),
    "gds_attach": (c_int32, [c_char_p, POINTER(_store_p)]),
    "gds_attach_group": (c_int32, [c_char_p, POINTER(_store_p)]),
    "gds_close": (None, [_store_p]),
    "gds_destroy": (c_int32, [c_char_p]),
    "gds_get_info": (c_int32, [_store_p, POINTER(gds_info)]),
    "gds_set_write_mode": (c_int32, [_store_p, c_uint32]),
    "gds_get_write_mode": (c_int32, [_store_p, POINTER(c_uint32)]),
    "gds_shm_dir": (c_int32, [POINTER(c_void_p)]),
    "gds_get": (
        c_int32,
        [_store_p, _bytes, c_size_t, c_void_p, c_size_t, _sizep, POINTER(gds_meta)],
    ),
    "gds_get_alloc": (
        c_int32,
        [_store_p, _bytes, c_size_t, POINTER(c_void_p), _sizep, POINTER(gds_meta)],
    ),
    "gds_get_meta": (c_int32, [_store_p, _bytes, c_size_t, POINTER(gds_meta)]),
    "gds_set": (
        c_int32,
        [_store_p, _bytes, c_size_t, _bytes, c_size_t, c_uint32, c_uint64, _u64p],
    ),
    "gds_add": (
        c_int32,
        [_store_p, _bytes, c_size_t, _bytes, c_size_t, c_uint32, c_uint64, _u64p],
    ),
    "gds_compare_and_set": (
        c_int32,
        [_store_p, _bytes, c_size_t, c_uint64, _bytes, c_size_t, c_uint32, c_uint64, _u64p],
    ),
    "gds_delete": (c_int32, [_store_p, _bytes, c_size_t]),
    "gds_touch": (c_int32, [_store_p, _bytes, c_size_t, c_uint32, c_uint64]),
    "gds_lock": (
        c_int32,
        [
            _store_p,
            _bytes,
            c_size_t,
            c_uint64,
            POINTER(c_void_p),
            _sizep,
            POINTER(gds_meta),
            POINTER(gds_lock_info),
        ],
    ),
    "gds_unlock": (c_int32, [_store_p, _bytes, c_size_t, c_uint64]),
    "gds_set_and_unlock": (
        c_int32,
        [_store_p, _bytes, c_size_t, c_uint64, _bytes, c_size_t, c_uint32, c_uint64, _u64p],
    ),
    "gds_get_stats": (c_int32, [_store_p, POINTER(gds_stats)]),
    "gds_sweep": (c_int32, [_store_p, c_uint64, POINTER(gds_sweep_report)]),
    "gds_check": (c_int32, [_store_p, POINTER(gds_check_report), POINTER(c_void_p)]),
    "gds_scan": (c_int32, [_store_p, gds_scan_fn, c_void_p]),
    "gds_feed_head": (c_int32, [_store_p, _u64p]),
    "gds_wait_replicated": (c_int32, [_store_p, c_uint64, c_uint64, POINTER(c_uint32)]),
    "gds_buffer_free": (None, [c_void_p]),
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
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
            cdll = ctypes.CDLL(name)
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


def lib() -> ctypes.CDLL:
    """The loaded, ABI-checked library (loaded on first use)."""
    global _lib, _lib_path
    cdll = _lib
    if cdll is not None:
        return cdll
    with _lock:
        if _lib is not None:
            return _lib
        cdll, path = _load()
        # The ABI check comes before any other symbol is looked up or called.
        abi = cdll.gds_abi_version
        abi.restype = c_uint32
        abi.argtypes = []
        found = abi()
        if found != GDS_ABI_VERSION:
            raise AbiMismatchError(
                f"{path} has ABI version {found}, but this gardenstate package was written "
                f"for ABI version {GDS_ABI_VERSION} (include/gardenstate.h GDS_ABI_VERSION). "
                "Install the package and the library from the same release, or point "
                "GARDENSTATE_LIB at a matching libgardenstate.so."
            )
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(cdll, name)
            fn.restype = restype
            fn.argtypes = argtypes
        _lib, _lib_path = cdll, path
        return cdll


def lib_path() -> str:
    """The path or soname the library was loaded from."""
    lib()
    assert _lib_path is not None
    return _lib_path

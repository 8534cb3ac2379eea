"""Store: one open gardenstate segment, over the C ABI through the compiled binding.

Design notes (the invariants this module keeps):

- Every call goes through a gate wrapper of gardenstate._gds (gdspy_X(handle, ...), generated
  from the header by gardenstate_build.py), which counts the calls in flight in C with atomic
  counters. It serves two rules of ffi/README.md: gds_close must not overlap any other use of
  the handle (close() marks the handle closing, waits for its calls in flight, then closes;
  a later call returns GDSPY_CLOSED: StoreClosedError), and fork() must happen while no
  thread is inside a gds_ call (an os.register_at_fork hook, installed when the library is
  loaded, holds new calls and waits for those in flight, so os.fork, multiprocessing and
  gunicorn fork at a safe point). Calls are counted, never serialized, and cffi releases the
  GIL around each one, so threads call concurrently and a blocking call (wait_replicated, a
  lock wait) never holds the GIL.
- The handle's C struct lives as long as the Store object (freed by __del__, which cannot
  run while a thread is inside a method of the object), so a call racing close() reads a
  valid struct and is refused, never a freed one.
- Arguments are converted and checked in Python before the call, so wrong types raise
  TypeError/ValueError and change nothing; sizes (key, value) are checked by the library,
  which knows the segment's limits, and come back as KeyLengthError / ValueTooLargeError,
  also before anything is written.
- get() reads into a per-thread reusable buffer with gds_get, growing it to the size the
  library reports on GDS_ERR_BUFFER_TOO_SMALL (and retrying: the value may grow again
  between the two calls). Buffers and out-parameters are per thread because calls run
  without the GIL.
- The error message is read with gds_last_error_message() right after the failing call, on
  the same thread, as the C ABI requires (it is thread-local and valid until the next call).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from enum import IntEnum
from typing import Callable, Iterator, Optional, Union

from . import _native as N
from .errors import (
    BY_CODE,
    GardenstateError,
    LockedError,
    LockMismatchError,
    StoreClosedError,
    UnknownError,
)

Key = Union[bytes, bytearray, memoryview, str]
Value = Union[bytes, bytearray, memoryview]
Duration = Union[int, float, timedelta]

_U64_MAX = 2**64 - 1
_INITIAL_BUFFER = 4096


class WriteMode(IntEnum):
    """Whether a segment accepts writes (GDS_WRITE_MODE_*)."""

    WRITABLE = N.GDS_WRITE_MODE_WRITABLE
    REPLICA = N.GDS_WRITE_MODE_REPLICA
    FENCED = N.GDS_WRITE_MODE_FENCED


class Role(IntEnum):
    """What a segment is for its workers now (GDS_ROLE_*): only PRIMARY takes writes; the
    others raise ReadOnlyError on every write (answer 503 with Retry-After, README)."""

    PRIMARY = N.GDS_ROLE_PRIMARY
    STANDBY = N.GDS_ROLE_STANDBY
    FENCED = N.GDS_ROLE_FENCED
    #: writable, but the replication daemon stopped renewing its write lease
    LEASE_LAPSED = N.GDS_ROLE_LEASE_LAPSED


@dataclass(frozen=True)
class ReplicationState:
    """Where a segment stands in its replication history (gds_replication_state)."""

    epoch: int  # raised by every promotion, never lowered
    role: Role
    changes: int  # grows on every role change and epoch raise: compare with a cached value

    @property
    def writable(self) -> bool:
        """Whether workers' writes are accepted now (role PRIMARY)."""
        return self.role == Role.PRIMARY


@dataclass(frozen=True)
class Meta:
    """Metadata of an entry (gds_meta)."""

    version: int
    value_len: int
    ttl_left_ms: Optional[int]  # None: never expires
    lock_id: int  # 0: not locked
    lock_age_ms: int

    @classmethod
    def _from(cls, m) -> "Meta":
        ttl = None if m.ttl_left_ms == N.GDS_TTL_NEVER else int(m.ttl_left_ms)
        return cls(int(m.version), int(m.value_len), ttl, int(m.lock_id), int(m.lock_age_ms))


@dataclass(frozen=True)
class Locked:
    """A session lock taken by Store.lock(): the value, its metadata, the id that unlocks it.

    Also a context manager: leaving the `with` block releases the lock if it is still
    held by this lock id (after a set_and_unlock, or a takeover, there is nothing to do)."""

    value: bytes
    lock_id: int
    meta: Meta
    took_over: bool
    _store: Optional["Store"] = field(default=None, repr=False, compare=False)
    _key: bytes = field(default=b"", repr=False, compare=False)

    def __enter__(self) -> "Locked":
        return self

    def __exit__(self, *exc) -> bool:
        if self._store is not None:
            try:
                self._store.unlock(self._key, self.lock_id)
            except LockMismatchError:
                pass  # released by set_and_unlock, or taken over: not ours any more
        return False


@dataclass(frozen=True)
class Entry:
    """One entry as seen by Store.scan()."""

    key: bytes
    value: bytes
    meta: Meta
    slot: int


def _struct_dict(s) -> dict:
    """The fields of a gds_ struct (a cdata pointer) but struct_size, as ints."""
    return {name: int(getattr(s, name)) for name, _ in N._ffi.typeof(s).item.fields
            if name != "struct_size"}


@dataclass(frozen=True)
class Info:
    """The fixed shape of a segment (gds_info)."""

    segment_bytes: int
    heap_bytes: int
    page_size: int
    max_entries: int
    index_slots: int
    max_key: int
    max_value: int
    max_clients: int
    feed_len: int
    dataset_id: int
    flags: int


@dataclass(frozen=True)
class Stats:
    """Counters and occupancy, summed over every client of every process (gds_stats)."""

    live_entries: int
    bytes_used: int
    bytes_free: int
    hits: int
    misses: int
    sets: int
    deletes: int
    expirations: int
    evictions: int
    touches: int
    locks: int
    lock_contentions: int
    lock_takeovers: int
    dead_reclaims: int
    sweeps: int
    clients: int
    feed_head: int


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did (gds_sweep_report)."""

    ran: bool
    examined: int
    expired: int
    dead_clients_reclaimed: int


@dataclass(frozen=True)
class CheckReport:
    """What check() found (gds_check_report); `ok` is True for a healthy segment."""

    entries: int
    blocks_in_use: int
    leaked_blocks: int
    hidden_free_blocks: int
    stale_free_bits: int
    dead_clients: int
    problem_count: int
    problems: tuple

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


# --- errors ------------------------------------------------------------------------------


def _status_name(code: int) -> str:
    for name, value in vars(N).items():
        if name.startswith("GDS_") and value == code and (
            name.startswith("GDS_ERR_") or name in ("GDS_OK", "GDS_NOT_FOUND")
        ):
            return name
    return f"status {code}"


def _error(code: int, what: str, store_name: str = "") -> GardenstateError:
    if code == N.GDSPY_CLOSED:
        return StoreClosedError(f"store {store_name!r} is closed")
    lib, ffi = N.lib(), N.ffi()
    detail = ffi.string(lib.gds_last_error_message()).decode("utf-8", "replace")
    summary = ffi.string(lib.gds_strerror(code)).decode("utf-8", "replace")
    name = _status_name(code)
    cls = BY_CODE.get(code, UnknownError)
    msg = f"{what}: {name} ({code}): {detail or summary}"
    return cls(msg, code=code, name=name, detail=detail)


# --- argument conversion -----------------------------------------------------------------


def _key(key: Key) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"key must be bytes or str, not {type(key).__name__}")


def _value(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        raise TypeError("value must be bytes, not str: encode it first (e.g. value.encode())")
    raise TypeError(f"value must be bytes, not {type(value).__name__}")


# The longest single gds_lock_wait call of Store.lock(timeout=...): close() and fork() wait
# for calls in flight.
_WAIT_SLICE_MS = 100


def _ms(d: Duration, what: str) -> int:
    """A positive duration (seconds as int/float, or a timedelta) in whole milliseconds."""
    if isinstance(d, bool) or not isinstance(d, (int, float, timedelta)):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, not {type(d).__name__}")
    seconds = d.total_seconds() if isinstance(d, timedelta) else d
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"{what} must be a finite duration, not {seconds}")
    if seconds <= 0:
        raise ValueError(f"{what} must be positive, not {seconds}")
    # Round up, so a positive duration never becomes 0 (which the C ABI refuses); the
    # library cuts TTLs over 2^32 - 1 ms itself.
    return min(math.ceil(seconds * 1000), _U64_MAX)


def _expiry(ttl: Optional[Duration], sliding: Optional[Duration]) -> tuple[int, int]:
    if ttl is not None and sliding is not None:
        raise TypeError("give ttl= (expires after a write) or sliding= (after the last access), not both")
    if ttl is not None:
        return N.GDS_EXPIRY_AFTER, _ms(ttl, "ttl")
    if sliding is not None:
        return N.GDS_EXPIRY_SLIDING, _ms(sliding, "sliding")
    return N.GDS_EXPIRY_NEVER, 0


def _u64(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, not {type(n).__name__}")
    if not 0 <= n <= _U64_MAX:
        raise ValueError(f"{what} must be between 0 and 2**64-1, not {n}")
    return n


def _name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"segment name must be a str, not {type(name).__name__}")
    if "\0" in name:
        raise ValueError("segment name must not contain NUL")
    return name.encode("utf-8")


# --- per-thread scratch: out-parameters and the get() buffer ------------------------------

_tls = threading.local()


class _Scratch:
    __slots__ = ("buf", "cap", "n", "meta", "u64")

    def __init__(self) -> None:
        ffi = N._ffi
        self.cap = _INITIAL_BUFFER
        self.buf = ffi.new("char[]", self.cap)
        self.n = ffi.new("size_t *")
        self.meta = ffi.new("gds_meta *")
        self.u64 = ffi.new("uint64_t *")

    def grow(self, size: int) -> None:
        self.cap = max(size, 2 * self.cap)
        self.buf = N._ffi.new("char[]", self.cap)


def _scratch() -> _Scratch:
    try:
        return _tls.scratch
    except AttributeError:
        _tls.scratch = s = _Scratch()
        return s


def shm_dir() -> str:
    """The directory where segments live (/dev/shm, or $GARDENSTATE_SHM_DIR)."""
    lib, ffi = N.lib(), N.ffi()
    p = ffi.new("char **")
    st = lib.gds_shm_dir(p)
    if st != N.GDS_OK:
        raise _error(st, "shm_dir")
    try:
        return ffi.string(p[0]).decode("utf-8", "surrogateescape")
    finally:
        lib.gds_buffer_free(p[0])


def version() -> str:
    """The loaded library's version, "MAJOR.MINOR.PATCH"."""
    return N.ffi().string(N.lib().gds_version()).decode()


def destroy(name: str) -> bool:
    """Removes the segment `name`; False if there was none. Open handles keep working."""
    lib = N.lib()
    st = lib.gds_destroy(_name(name))
    if st == N.GDS_OK:
        return True
    if st == N.GDS_NOT_FOUND:
        return False
    raise _error(st, f"destroy {name!r}")


class Store:
    """An open segment. Share one per process between threads; open it before forking.

    Create one with Store.create (new segment), Store.open (create or attach: what every
    worker of a pool calls) or Store.attach (existing). Use it as a context manager or call
    close(). Keys are bytes (str is encoded UTF-8), values are bytes.
    """

    __slots__ = ("_h", "_name", "_closed", "__weakref__")

    def __init__(self, _handle, _name: str) -> None:
        # Use the classmethods; this takes ownership of a gdspy_handle (gardenstate._gds).
        self._h = _handle
        self._name = _name
        self._closed = False

    # --- opening and closing ---

    @staticmethod
    def _options(capacity_bytes, max_entries, max_key, max_value, max_clients, feed_len,
                 group, evict):
        o = N.ffi().new("gds_options *")
        o.struct_size = N._ffi.sizeof("gds_options")
        o.capacity_bytes = _u64(capacity_bytes, "capacity_bytes")
        o.max_entries = _u64(max_entries, "max_entries")
        o.max_value = _u64(max_value, "max_value")
        o.feed_len = _u64(feed_len, "feed_len")
        for what, v in (("max_key", max_key), ("max_clients", max_clients)):
            if _u64(v, what) > 0xFFFFFFFF:
                raise ValueError(f"{what} must be below 2**32, not {v}")
        o.max_key = max_key
        o.max_clients = max_clients
        o.mode = 0o660 if group else 0
        o.flags = N.GDS_OPTION_EVICT if evict else 0
        return o

    @classmethod
    def _make(cls, fn_name: str, name: str, opts) -> "Store":
        lib, ffi = N.lib(), N.ffi()
        raw = _name(name)
        out = ffi.new("struct gds_store **")
        if opts is None:
            st = getattr(lib, fn_name)(raw, out)
        else:
            st = getattr(lib, fn_name)(raw, opts, out)
        if st != N.GDS_OK:
            raise _error(st, f"{fn_name[4:]} {name!r}")
        h = lib.gdspy_wrap(out[0])  # closes the store itself if it cannot allocate
        if h == ffi.NULL:
            raise MemoryError(f"{fn_name[4:]} {name!r}: no memory for the handle")
        return cls(h, name)

    @classmethod
    def create(cls, name: str, *, capacity_bytes: int = 0, max_entries: int = 0,
               max_key: int = 0, max_value: int = 0, max_clients: int = 0, feed_len: int = 0,
               group: bool = False, evict: bool = False) -> "Store":
        """Creates the segment `name` (SegmentExistsError if it exists) and opens it.

        An option left 0 takes the library's default (64 MiB, 65536 entries, 256 B keys,
        1 MiB values, 512 clients, 65536 feed entries). group=True makes it mode 0660 (other
        users of the group attach with attach(group=True)); evict=True evicts the entry
        closest to expiry when full instead of raising FullError.
        """
        opts = cls._options(capacity_bytes, max_entries, max_key, max_value, max_clients,
                            feed_len, group, evict)
        return cls._make("gds_create", name, opts)

    @classmethod
    def open(cls, name: str, *, capacity_bytes: Optional[int] = None,
             max_entries: Optional[int] = None, max_key: Optional[int] = None,
             max_value: Optional[int] = None, max_clients: Optional[int] = None,
             feed_len: Optional[int] = None, group: bool = False,
             evict: Optional[bool] = None) -> "Store":
        """Opens `name`, creating it with these options if it does not exist (race-free:
        exactly one of many concurrent openers creates it; an option not given takes the
        library's default on creation).

        An existing segment is checked against the options given explicitly only (the C
        library's rule, gds_open): open(name) accepts a segment created by the CLI or another
        program with any shape; an option given as None or 0 is not given. An option given
        with another value than the segment's raises IncompatibleError naming the option,
        both values and how to proceed without losing sessions."""
        # gds_open checks only what is given: a 0 is "not given", and eviction is given by
        # GDS_OPTION_EVICT (True) or GDS_OPTION_EVICT_GIVEN (False, "no eviction").
        opts = cls._options(capacity_bytes or 0, max_entries or 0, max_key or 0,
                            max_value or 0, max_clients or 0, feed_len or 0, group,
                            bool(evict))
        if evict is False:
            opts.flags |= N.GDS_OPTION_EVICT_GIVEN
        return cls._make("gds_open", name, opts)

    @classmethod
    def attach(cls, name: str, *, group: bool = False) -> "Store":
        """Attaches to the existing segment `name` (NoSegmentError if there is none).
        group=True also accepts a 0660 segment of another user of this group."""
        return cls._make("gds_attach_group" if group else "gds_attach", name, None)

    destroy = staticmethod(destroy)

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Closes the handle (the segment and its entries stay). Waits for calls of other
        threads on this store to finish; later calls raise StoreClosedError. Idempotent."""
        if not self._closed:
            self._closed = True
            N._lib.gdspy_close(self._h)  # idempotent in C too, for racing close() calls

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        h = getattr(self, "_h", None)
        if h is not None:
            self._h = None
            N._lib.gdspy_close(h)
            N._lib.gdspy_free(h)

    # A Store owns a handle of this process: a copy would close it twice (the copy's __del__
    # closes the original's handle), and a pickle would carry a pointer into another
    # process. Both are refused before anything is copied.
    def __reduce_ex__(self, protocol):
        raise TypeError(
            f"a gardenstate.Store cannot be pickled or copied (it owns this process's handle "
            f"of segment {self._name!r}): open the store in the child process: pass "
            f"the segment name and call Store.open({self._name!r}) or Store.attach({self._name!r}) there "
            "(a fork()ed child may keep using the parent's Store)")

    def __copy__(self):
        self.__reduce_ex__(0)

    def __deepcopy__(self, memo):
        self.__reduce_ex__(0)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<gardenstate.Store {self._name!r} {state}>"

    # --- calls ---

    def _call(self, fn: str, *args) -> int:
        """gdspy_<fn>(handle, *args) (gds_<fn> through the gate); its status."""
        return getattr(N._lib, "gdspy_" + fn)(self._h, *args)

    def _call_ok(self, fn: str, *args) -> None:
        """`_call`, raising the error of any status but GDS_OK."""
        st = self._call(fn, *args)
        if st != N.GDS_OK:
            raise _error(st, fn, self._name)

    def _call_found(self, fn: str, *args) -> bool:
        """`_call` of a call on a key: True for GDS_OK, False for GDS_NOT_FOUND."""
        st = self._call(fn, *args)
        if st == N.GDS_OK:
            return True
        if st == N.GDS_NOT_FOUND:
            return False
        raise _error(st, fn, self._name)

    # --- reads ---

    def get(self, key: Key) -> Optional[bytes]:
        """The value of `key`, or None if it is absent or expired. Extends a sliding TTL.
        A locked entry is returned too (reads never wait for session locks)."""
        k = key if type(key) is bytes else _key(key)
        t = _scratch()
        st = N._lib.gdspy_get(self._h, k, len(k), t.buf, t.cap, t.n, t.meta)
        if st == 0:  # GDS_OK
            return N._ffi.unpack(t.buf, t.n[0])
        got = self._get_slow(k, st, t)
        return None if got is None else got[0]

    def get_with_meta(self, key: Key) -> Optional[tuple[bytes, Meta]]:
        """(value, Meta) of `key`, or None; as get()."""
        k = _key(key)
        t = _scratch()
        st = N._lib.gdspy_get(self._h, k, len(k), t.buf, t.cap, t.n, t.meta)
        if st == N.GDS_OK:
            return N._ffi.unpack(t.buf, t.n[0]), Meta._from(t.meta)
        return self._get_slow(k, st, t)

    def _get_slow(self, k: bytes, st: int, t: _Scratch):
        """get's outcomes other than a value that fit: absent, too big (grow and retry:
        the value may grow again meanwhile), errors."""
        while True:
            if st == N.GDS_OK:
                return N._ffi.unpack(t.buf, t.n[0]), Meta._from(t.meta)
            if st == N.GDS_NOT_FOUND:
                return None
            if st != N.GDS_ERR_BUFFER_TOO_SMALL:
                raise _error(st, "get", self._name)
            t.grow(t.n[0])  # the size needed
            st = N._lib.gdspy_get(self._h, k, len(k), t.buf, t.cap, t.n, t.meta)

    def get_meta(self, key: Key) -> Optional[Meta]:
        """Metadata of `key` without its value, or None. Extends a sliding TTL, as a read."""
        k = _key(key)
        t = _scratch()
        st = N._lib.gdspy_get_meta(self._h, k, len(k), t.meta)
        if st == N.GDS_OK:
            return Meta._from(t.meta)
        if st == N.GDS_NOT_FOUND:
            return None
        raise _error(st, "get_meta", self._name)

    def __contains__(self, key: Key) -> bool:
        return self.get_meta(key) is not None

    # --- writes ---

    def _write(self, fn: str, key: Key, value: Value, ttl, sliding, *extra_before_value) -> int:
        k = _key(key)
        v = _value(value)
        kind, ms = _expiry(ttl, sliding)
        out = _scratch().u64
        st = getattr(N._lib, fn)(self._h, k, len(k), *extra_before_value, v, len(v), kind, ms,
                                 out)
        if st == N.GDS_OK:
            return out[0]
        if st == N.GDS_NOT_FOUND and fn in ("gdspy_compare_and_set", "gdspy_set_and_unlock"):
            return None
        raise _error(st, fn[6:], self._name)

    def set(self, key: Key, value: Value, *, ttl: Optional[Duration] = None,
            sliding: Optional[Duration] = None) -> int:
        """Stores `value` under `key` (replacing it and dropping any session lock). ttl=
        expires that long after this write, sliding= that long after the last access, neither
        never. Durations are seconds or a timedelta. Returns the entry's new version."""
        if ttl is None and sliding is None and type(key) is bytes and type(value) is bytes:
            out = _scratch().u64  # the common case, without the conversions
            st = N._lib.gdspy_set(self._h, key, len(key), value, len(value), 0, 0, out)
            if st == 0:  # GDS_OK
                return out[0]
            raise _error(st, "set", self._name)
        return self._write("gdspy_set", key, value, ttl, sliding)

    def add(self, key: Key, value: Value, *, ttl: Optional[Duration] = None,
            sliding: Optional[Duration] = None) -> int:
        """As set(), only if `key` is absent (or expired); ExistsError otherwise."""
        return self._write("gdspy_add", key, value, ttl, sliding)

    def compare_and_set(self, key: Key, expected_version: int, value: Value, *,
                        ttl: Optional[Duration] = None,
                        sliding: Optional[Duration] = None) -> Optional[int]:
        """As set(), only if the entry is at `expected_version`. Returns the new version;
        None if the key is absent or expired; VersionMismatchError if it moved on."""
        ev = _u64(expected_version, "expected_version")
        return self._write("gdspy_compare_and_set", key, value, ttl, sliding, ev)

    def delete(self, key: Key) -> bool:
        """Removes `key`; True if a live entry was removed, False if there was none."""
        k = _key(key)
        return self._call_found("delete", k, len(k))

    def touch(self, key: Key, *, ttl: Optional[Duration] = None,
              sliding: Optional[Duration] = None) -> bool:
        """Resets the expiry of `key` from now (neither ttl nor sliding: never expires),
        keeping value, version and lock. False if the key is absent or expired."""
        k = _key(key)
        kind, ms = _expiry(ttl, sliding)
        return self._call_found("touch", k, len(k), kind, ms)

    # --- session locks (ASP.NET semantics) ---

    def lock(self, key: Key, takeover_after: Duration = 110.0, *,
             timeout: Optional[Duration] = None) -> Optional[Locked]:
        """Takes the session lock of `key` and reads it (ASP.NET GetItemExclusive). Returns
        Locked(value, lock_id, meta, took_over), or None if the key is absent (or goes away
        while waited for). A lock older than `takeover_after` (seconds or timedelta; default
        110 s, ASP.NET's executionTimeout) or whose process died is taken over
        (took_over=True).

        Without `timeout`, never waits: raises LockedError (with .lock_id and .age_ms of the
        holder) if another lock holds it. With `timeout` (seconds or timedelta), waits up to
        that long (gds_lock_wait): returns as soon as the holder releases the lock, woken by
        the release itself (no polling), and raises LockedError only once `timeout` passed.
        The GIL is released while waiting. The wait is made of calls of at most 100 ms
        (each starts by trying the lock, so no release is missed between them), so that
        close() and os.fork(), which wait for calls in flight, are never held longer.

        The result is a context manager that releases the lock on leaving the block:

            with store.lock(b"sid", timeout=5) as held:
                store.set_and_unlock(b"sid", held.lock_id, new_value)
        """
        k = _key(key)
        after = _ms(takeover_after, "takeover_after")
        ffi = N._ffi
        p = ffi.new("uint8_t **")
        n = ffi.new("size_t *")
        meta = ffi.new("gds_meta *")
        info = ffi.new("gds_lock_info *")
        if timeout is None:
            st = N._lib.gdspy_lock(self._h, k, len(k), after, p, n, meta, info)
        else:
            deadline = time.monotonic() + _ms(timeout, "timeout") / 1000
            while True:
                left = max(0, math.ceil((deadline - time.monotonic()) * 1000))
                st = N._lib.gdspy_lock_wait(self._h, k, len(k), after, min(left, _WAIT_SLICE_MS),
                                            p, n, meta, info)
                if st != N.GDS_ERR_LOCKED or left <= _WAIT_SLICE_MS:
                    break
        if st == N.GDS_OK:
            try:
                value = ffi.unpack(ffi.cast("char *", p[0]), n[0]) if n[0] else b""
            finally:
                N._lib.gds_buffer_free(p[0])
            return Locked(value, int(info.lock_id), Meta._from(meta), bool(info.took_over), self, k)
        if st == N.GDS_NOT_FOUND:
            return None
        err = _error(st, "lock", self._name)
        if isinstance(err, LockedError):
            err.lock_id = int(info.lock_id)
            err.age_ms = int(info.age_ms)
        raise err

    def unlock(self, key: Key, lock_id: int) -> bool:
        """Releases the lock `lock_id` on `key`, keeping the value (ReleaseItemExclusive).
        False if the entry expired or was deleted; LockMismatchError if `lock_id` no longer
        holds it (taken over, or not locked)."""
        k = _key(key)
        lid = _u64(lock_id, "lock_id")
        return self._call_found("unlock", k, len(k), lid)

    def set_and_unlock(self, key: Key, lock_id: int, value: Value, *,
                       ttl: Optional[Duration] = None,
                       sliding: Optional[Duration] = None) -> Optional[int]:
        """Stores `value` and releases `lock_id` in one step (SetAndReleaseItemExclusive).
        Returns the new version; None if the entry expired or was deleted meanwhile (nothing
        was written); LockMismatchError if the lock was taken over (the write lost)."""
        lid = _u64(lock_id, "lock_id")
        return self._write("gdspy_set_and_unlock", key, value, ttl, sliding, lid)

    # --- maintenance and observability ---

    def _struct_call(self, fn: str, ctype: str, *args):
        s = N._ffi.new(ctype + " *")
        s.struct_size = N._ffi.sizeof(ctype)
        self._call_ok(fn, *args, s)
        return s

    def info(self) -> Info:
        """The segment's fixed shape: sizes, limits, dataset id."""
        return Info(**_struct_dict(self._struct_call("get_info", "gds_info")))

    def stats(self) -> Stats:
        """Counters and occupancy (reads the index: about 2 ms per million entries; call it
        from a monitor, not per request)."""
        return Stats(**_struct_dict(self._struct_call("get_stats", "gds_stats")))

    def sweep(self, budget: int = 1 << 20) -> SweepReport:
        """Removes expired entries (up to `budget` index slots) and reclaims the client
        slots of dead processes."""
        r = self._struct_call("sweep", "gds_sweep_report", _u64(budget, "budget"))
        return SweepReport(bool(r.ran), int(r.examined), int(r.expired),
                           int(r.dead_clients_reclaimed))

    def check(self) -> CheckReport:
        """Checks every invariant of the segment (an fsck; meant for a quiescent segment)."""
        ffi = N._ffi
        r = ffi.new("gds_check_report *")
        r.struct_size = ffi.sizeof("gds_check_report")
        p = ffi.new("char **")
        self._call_ok("check", r, p)
        problems: tuple = ()
        if p[0] != ffi.NULL:
            try:
                text = ffi.string(p[0]).decode("utf-8", "replace")
            finally:
                N._lib.gds_buffer_free(p[0])
            problems = tuple(line for line in text.splitlines() if line)
        return CheckReport(problems=problems, **_struct_dict(r))

    def scan(self) -> list[Entry]:
        """A consistent copy of every live entry (no lock taken; entries changed during the
        scan may be seen before or after the change). For tools, not for the request path."""
        out: list[Entry] = []
        _register_scan_callback()
        user = N._ffi.new_handle(out)
        self._call_ok("scan", N._lib.gdspy_scan_entry, user)
        return out

    def keys(self) -> Iterator[bytes]:
        """The keys of scan()."""
        return (e.key for e in self.scan())

    def feed_head(self) -> int:
        """The change-feed position the next mutation will take."""
        out = N._ffi.new("uint64_t *")
        self._call_ok("feed_head", out)
        return out[0]

    @property
    def write_mode(self) -> WriteMode:
        """WRITABLE, or REPLICA / FENCED (every write raises ReadOnlyError)."""
        out = N._ffi.new("gds_write_mode *")
        self._call_ok("get_write_mode", out)
        return WriteMode(out[0])

    @write_mode.setter
    def write_mode(self, mode: WriteMode) -> None:
        self.set_write_mode(mode)

    def set_write_mode(self, mode: WriteMode) -> None:
        """Sets the write mode for every process of the segment (the replicator's call)."""
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise TypeError(f"mode must be a WriteMode, not {type(mode).__name__}")
        m = WriteMode(mode)  # ValueError for an unknown mode
        self._call_ok("set_write_mode", int(m))

    def replication_state(self) -> ReplicationState:
        """The epoch, the role and the change counter, in a few atomic loads: cheap enough
        for every request (a worker learns that a failover happened when `changes` differs
        from the value it saw before)."""
        s = self._struct_call("get_replication_state", "gds_replication_state")
        return ReplicationState(int(s.epoch), Role(s.role), int(s.changes))

    def wait_replicated(self, version: int, timeout: Duration) -> bool:
        """Waits until the standby has applied the write that returned `version` (like Redis
        WAIT), at most `timeout`; False if the time ran out (no standby, or it lags)."""
        v = _u64(version, "version")
        ms = _ms(timeout, "timeout")
        out = N._ffi.new("uint32_t *")
        self._call_ok("wait_replicated", v, ms, out)  # the GIL is released while it waits
        return bool(out[0])


_scan_registered = False


def _register_scan_callback() -> None:
    """Binds gardenstate._gds's extern "Python" gdspy_scan_entry to _scan_entry (once)."""
    global _scan_registered
    if not _scan_registered:
        N._ffi.def_extern(name="gdspy_scan_entry")(_scan_entry)
        _scan_registered = True


def _scan_entry(user, e) -> int:
    ffi = N._ffi
    out = ffi.from_handle(user)
    out.append(Entry(ffi.unpack(ffi.cast("char *", e.key), e.key_len),
                     ffi.unpack(ffi.cast("char *", e.value), e.value_len) if e.value_len
                     else b"",
                     Meta._from(e.meta), int(e.slot)))
    return 0

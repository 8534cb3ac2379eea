"""Store: one open gardenstate segment, over the C ABI.

Design notes (the invariants this module keeps):

- Every call into the library goes through `Store._call_enter()` / `_call_exit()`, a count
  of calls in flight per store, under one module lock (`_GATE`). It serves two rules of
  ffi/README.md: gds_close must not overlap any other use of the handle (close() marks the
  store closed, waits for the calls in flight, then closes), and fork() must happen while no
  thread is inside a gds_ call (an os.register_at_fork hook takes the gate and waits until no
  call of any store is in flight, so os.fork, multiprocessing and gunicorn fork at a safe
  point). Calls in flight are counted, never serialized: threads still call concurrently
  (ctypes releases the GIL during the call).
- Arguments are converted and checked in Python before the call, so wrong types raise
  TypeError/ValueError and change nothing; sizes (key, value) are checked by the library,
  which knows the segment's limits, and come back as KeyLengthError / ValueTooLargeError,
  also before anything is written.
- get() reads into a per-thread reusable buffer with gds_get, growing it to the size the
  library reports on GDS_ERR_BUFFER_TOO_SMALL (and retrying: the value may grow again
  between the two calls). A buffer is per thread because calls run without the GIL.
- The error message is read with gds_last_error_message() right after the failing call, on
  the same thread, as the C ABI requires (it is thread-local and valid until the next call).
"""

from __future__ import annotations

import math
import os
import threading
from ctypes import byref, c_size_t, c_uint32, c_uint64, c_void_p, sizeof, string_at
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum
from typing import Callable, Iterator, Optional, Union

from . import _native as N
from .errors import (
    BY_CODE,
    GardenstateError,
    IncompatibleError,
    LockedError,
    NoSegmentError,
    NotReadyError,
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


@dataclass(frozen=True)
class Meta:
    """Metadata of an entry (gds_meta)."""

    version: int
    value_len: int
    ttl_left_ms: Optional[int]  # None: never expires
    lock_id: int  # 0: not locked
    lock_age_ms: int

    @classmethod
    def _from(cls, m: N.gds_meta) -> "Meta":
        ttl = None if m.ttl_left_ms == N.GDS_TTL_NEVER else int(m.ttl_left_ms)
        return cls(int(m.version), int(m.value_len), ttl, int(m.lock_id), int(m.lock_age_ms))


@dataclass(frozen=True)
class Locked:
    """A session lock taken by Store.lock(): the value, its metadata, the id that unlocks it."""

    value: bytes
    lock_id: int
    meta: Meta
    took_over: bool


@dataclass(frozen=True)
class Entry:
    """One entry as seen by Store.scan()."""

    key: bytes
    value: bytes
    meta: Meta
    slot: int


def _struct_dict(s) -> dict:
    return {name: int(getattr(s, name)) for name, _ in s._fields_ if name != "struct_size"}


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


def _error(code: int, what: str) -> GardenstateError:
    lib = N.lib()
    detail = (lib.gds_last_error_message() or b"").decode("utf-8", "replace")
    summary = (lib.gds_strerror(code) or b"").decode("utf-8", "replace")
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


# --- the fork/close gate -----------------------------------------------------------------


class _Gate:
    """Counts calls in flight; lets close() and fork() wait until there are none."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.in_flight = 0
        self.forking = False

    def before_fork(self) -> None:
        self.cond.acquire()
        # New calls wait while a fork is pending (see Store._enter), so busy threads cannot
        # keep the count above zero and starve the fork.
        self.forking = True
        while self.in_flight:
            self.cond.wait()
        # Held across fork(): no call can start until after_fork releases it.

    def after_fork_parent(self) -> None:
        self.forking = False
        self.cond.notify_all()
        self.cond.release()

    def after_fork_child(self) -> None:
        # The child has only the forking thread, and no call in flight: start afresh.
        self.cond = threading.Condition(threading.Lock())
        self.in_flight = 0
        self.forking = False


_GATE = _Gate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_GATE.before_fork,
        after_in_parent=_GATE.after_fork_parent,
        after_in_child=_GATE.after_fork_child,
    )

_tls = threading.local()


def _buffer(min_size: int):
    buf = getattr(_tls, "buf", None)
    if buf is None or len(buf) < min_size:
        from ctypes import create_string_buffer

        size = max(min_size, _INITIAL_BUFFER)
        if buf is not None:
            size = max(size, 2 * len(buf))
        buf = create_string_buffer(size)
        _tls.buf = buf
    return buf


def shm_dir() -> str:
    """The directory where segments live (/dev/shm, or $GARDENSTATE_SHM_DIR)."""
    lib = N.lib()
    p = c_void_p()
    st = lib.gds_shm_dir(byref(p))
    if st != N.GDS_OK:
        raise _error(st, "shm_dir")
    try:
        return string_at(p.value).decode("utf-8", "surrogateescape")
    finally:
        lib.gds_buffer_free(p)


def version() -> str:
    """The loaded library's version, "MAJOR.MINOR.PATCH"."""
    return N.lib().gds_version().decode()


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

    __slots__ = ("_h", "_name", "_in_flight", "_closing", "__weakref__")

    def __init__(self, _handle: int, _name: str) -> None:
        # Use the classmethods; this takes ownership of a gds_store pointer.
        self._h = _handle
        self._name = _name
        self._in_flight = 0
        self._closing = False

    # --- opening and closing ---

    @staticmethod
    def _options(capacity_bytes, max_entries, max_key, max_value, max_clients, feed_len,
                 group, evict) -> N.gds_options:
        o = N.gds_options()
        o.struct_size = sizeof(N.gds_options)
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
        lib = N.lib()
        raw = _name(name)
        h = c_void_p()
        if opts is None:
            st = getattr(lib, fn_name)(raw, byref(h))
        else:
            st = getattr(lib, fn_name)(raw, byref(opts), byref(h))
        if st != N.GDS_OK:
            raise _error(st, f"{fn_name[4:]} {name!r}")
        return cls(h.value, name)

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

        An existing segment is checked against the options given explicitly only: open(name)
        accepts a segment created by the CLI or another program with any shape. An option
        given with another value than the segment's raises IncompatibleError naming the
        option, both values and how to proceed without losing sessions."""
        given = {k: v for k, v in (("capacity_bytes", capacity_bytes),
                                   ("max_entries", max_entries), ("max_key", max_key),
                                   ("max_value", max_value), ("max_clients", max_clients),
                                   ("feed_len", feed_len), ("evict", evict)) if v is not None}
        opts = cls._options(capacity_bytes or 0, max_entries or 0, max_key or 0,
                            max_value or 0, max_clients or 0, feed_len or 0, group,
                            bool(evict))
        # Attach first, and create only when there is none: gds_open compares every option
        # (a 0 meaning the default), which would refuse a segment made with other options
        # that this caller did not ask for. A creator racing us makes gds_open attach and
        # compare all options: then attach again and compare only the given ones.
        for _ in range(100):
            try:
                store = cls.attach(name, group=group)
            except NoSegmentError:
                try:
                    return cls._make("gds_open", name, opts)
                except IncompatibleError:
                    continue  # created meanwhile with other options: check what was given
            try:
                store._check_options(given)
            except BaseException:
                store.close()
                raise
            return store
        raise NotReadyError(f"open {name!r}: the segment kept appearing and disappearing")

    def _check_options(self, given: dict) -> None:
        """IncompatibleError if an explicitly given option differs from the segment's."""
        if not given:
            return
        info = self.info()
        default = N.gds_options()
        default.struct_size = sizeof(N.gds_options)
        st = N.lib().gds_options_default(byref(default))
        if st != N.GDS_OK:
            raise _error(st, "options_default")
        found = {
            "max_entries": info.max_entries, "max_key": info.max_key,
            "max_value": info.max_value, "max_clients": info.max_clients,
            "feed_len": info.feed_len, "evict": bool(info.flags & N.GDS_OPTION_EVICT),
        }
        for opt, want in given.items():
            if opt == "evict":
                have = found["evict"]
                same = bool(want) == have
            elif opt == "capacity_bytes":
                # The heap is whole pages: capacity_bytes rounds up to the segment's page size.
                want = want or default.capacity_bytes
                have = info.heap_bytes
                same = -(-want // info.page_size) * info.page_size == have
            else:
                want = want or getattr(default, opt)
                have = found[opt]
                same = want == have
            if not same:
                if opt == "evict":
                    shape = "--evict" if want else "(without --evict)"
                elif opt == "capacity_bytes":
                    shape = f"--capacity {want}"
                else:
                    shape = f"--{opt.replace('_', '-')} {want}"
                raise IncompatibleError(
                    f"open {self._name!r}: the segment exists with {opt}={have!r}, but "
                    f"{opt}={want!r} was given. To keep its sessions, either open it without "
                    f"{opt}= (or with {opt}={have!r}), or move them to a segment of the new "
                    f"shape: `gardenstate dump {self._name} FILE`, then `gardenstate restore "
                    f"--create NEW_NAME FILE {shape}`, and open NEW_NAME (destroying a "
                    "segment in use would lose its sessions).",
                    code=N.GDS_ERR_INCOMPATIBLE, name="GDS_ERR_INCOMPATIBLE", detail=opt)

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
        return self._h is None or self._closing

    def close(self) -> None:
        """Closes the handle (the segment and its entries stay). Waits for calls of other
        threads on this store to finish; later calls raise StoreClosedError. Idempotent."""
        gate = _GATE
        with gate.cond:
            if self._h is None or self._closing:
                return
            self._closing = True
            while self._in_flight:
                gate.cond.wait()
            h, self._h = self._h, None
        N.lib().gds_close(h)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "_h", None) is not None and not self._closing:
                self.close()
        except Exception:
            pass

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

    # --- the call gate ---

    def _enter(self) -> int:
        gate = _GATE
        with gate.cond:
            while gate.forking:
                gate.cond.wait()
            if self._h is None or self._closing:
                raise StoreClosedError(f"store {self._name!r} is closed")
            self._in_flight += 1
            gate.in_flight += 1
            return self._h

    def _exit(self) -> None:
        gate = _GATE
        with gate.cond:
            self._in_flight -= 1
            gate.in_flight -= 1
            if gate.in_flight == 0 or (self._closing and self._in_flight == 0):
                gate.cond.notify_all()

    def _call(self, fn: str, *args) -> int:
        """gds_<fn>(handle, *args) through the gate; its status."""
        h = self._enter()
        try:
            return getattr(N.lib(), "gds_" + fn)(h, *args)
        finally:
            self._exit()

    def _call_ok(self, fn: str, *args) -> None:
        """`_call`, raising the error of any status but GDS_OK."""
        st = self._call(fn, *args)
        if st != N.GDS_OK:
            raise _error(st, fn)

    def _call_found(self, fn: str, *args) -> bool:
        """`_call` of a call on a key: True for GDS_OK, False for GDS_NOT_FOUND."""
        st = self._call(fn, *args)
        if st == N.GDS_OK:
            return True
        if st == N.GDS_NOT_FOUND:
            return False
        raise _error(st, fn)

    # --- reads ---

    def get(self, key: Key) -> Optional[bytes]:
        """The value of `key`, or None if it is absent or expired. Extends a sliding TTL.
        A locked entry is returned too (reads never wait for session locks)."""
        got = self._get(key, want_meta=False)
        return None if got is None else got[0]

    def get_with_meta(self, key: Key) -> Optional[tuple[bytes, Meta]]:
        """(value, Meta) of `key`, or None; as get()."""
        return self._get(key, want_meta=True)

    def _get(self, key: Key, want_meta: bool):
        k = _key(key)
        lib = N.lib()
        n = c_size_t()
        meta = N.gds_meta()
        buf = _buffer(_INITIAL_BUFFER)
        h = self._enter()
        try:
            while True:
                st = lib.gds_get(h, k, len(k), buf, len(buf), byref(n), byref(meta))
                if st == N.GDS_OK:
                    value = string_at(buf, n.value)
                    return (value, Meta._from(meta)) if want_meta else (value, None)
                if st == N.GDS_NOT_FOUND:
                    return None
                if st == N.GDS_ERR_BUFFER_TOO_SMALL:
                    buf = _buffer(n.value)  # the size needed; loop: it may grow meanwhile
                    continue
                raise _error(st, "get")
        finally:
            self._exit()

    def get_meta(self, key: Key) -> Optional[Meta]:
        """Metadata of `key` without its value, or None. Extends a sliding TTL, as a read."""
        k = _key(key)
        meta = N.gds_meta()
        h = self._enter()
        try:
            st = N.lib().gds_get_meta(h, k, len(k), byref(meta))
            if st == N.GDS_OK:
                return Meta._from(meta)
            if st == N.GDS_NOT_FOUND:
                return None
            raise _error(st, "get_meta")
        finally:
            self._exit()

    def __contains__(self, key: Key) -> bool:
        return self.get_meta(key) is not None

    # --- writes ---

    def _write(self, fn: str, key: Key, value: Value, ttl, sliding, *extra_before_value) -> int:
        k = _key(key)
        v = _value(value)
        kind, ms = _expiry(ttl, sliding)
        out = c_uint64()
        lib = N.lib()
        h = self._enter()
        try:
            st = getattr(lib, fn)(h, k, len(k), *extra_before_value, v, len(v), kind, ms, byref(out))
        finally:
            self._exit()
        if st == N.GDS_OK:
            return out.value
        if st == N.GDS_NOT_FOUND and fn in ("gds_compare_and_set", "gds_set_and_unlock"):
            return None
        raise _error(st, fn[4:])

    def set(self, key: Key, value: Value, *, ttl: Optional[Duration] = None,
            sliding: Optional[Duration] = None) -> int:
        """Stores `value` under `key` (replacing it and dropping any session lock). ttl=
        expires that long after this write, sliding= that long after the last access, neither
        never. Durations are seconds or a timedelta. Returns the entry's new version."""
        return self._write("gds_set", key, value, ttl, sliding)

    def add(self, key: Key, value: Value, *, ttl: Optional[Duration] = None,
            sliding: Optional[Duration] = None) -> int:
        """As set(), only if `key` is absent (or expired); ExistsError otherwise."""
        return self._write("gds_add", key, value, ttl, sliding)

    def compare_and_set(self, key: Key, expected_version: int, value: Value, *,
                        ttl: Optional[Duration] = None,
                        sliding: Optional[Duration] = None) -> Optional[int]:
        """As set(), only if the entry is at `expected_version`. Returns the new version;
        None if the key is absent or expired; VersionMismatchError if it moved on."""
        ev = _u64(expected_version, "expected_version")
        return self._write("gds_compare_and_set", key, value, ttl, sliding, ev)

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

    def lock(self, key: Key, takeover_after: Duration = 110.0) -> Optional[Locked]:
        """Takes the session lock of `key` and reads it (ASP.NET GetItemExclusive); never
        waits. Returns Locked(value, lock_id, meta, took_over), or None if the key is absent.
        Raises LockedError (with .lock_id and .age_ms of the holder) if another lock holds
        it; a lock older than `takeover_after` (seconds or timedelta; default 110 s, ASP.NET's
        executionTimeout) or whose process died is taken over (took_over=True)."""
        k = _key(key)
        after = _ms(takeover_after, "takeover_after")
        lib = N.lib()
        p = c_void_p()
        n = c_size_t()
        meta = N.gds_meta()
        info = N.gds_lock_info()
        h = self._enter()
        try:
            st = lib.gds_lock(h, k, len(k), after, byref(p), byref(n), byref(meta), byref(info))
            if st == N.GDS_OK:
                try:
                    value = string_at(p.value, n.value) if n.value else b""
                finally:
                    lib.gds_buffer_free(p)
                return Locked(value, int(info.lock_id), Meta._from(meta), bool(info.took_over))
            if st == N.GDS_NOT_FOUND:
                return None
            err = _error(st, "lock")
        finally:
            self._exit()
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
        return self._write("gds_set_and_unlock", key, value, ttl, sliding, lid)

    # --- maintenance and observability ---

    def _struct_call(self, fn: str, cls, *args):
        s = cls()
        s.struct_size = sizeof(cls)
        self._call_ok(fn[4:], *args, byref(s))
        return s

    def info(self) -> Info:
        """The segment's fixed shape: sizes, limits, dataset id."""
        return Info(**_struct_dict(self._struct_call("gds_get_info", N.gds_info)))

    def stats(self) -> Stats:
        """Counters and occupancy (reads the index: about 2 ms per million entries; call it
        from a monitor, not per request)."""
        return Stats(**_struct_dict(self._struct_call("gds_get_stats", N.gds_stats)))

    def sweep(self, budget: int = 1 << 20) -> SweepReport:
        """Removes expired entries (up to `budget` index slots) and reclaims the client
        slots of dead processes."""
        r = self._struct_call("gds_sweep", N.gds_sweep_report, _u64(budget, "budget"))
        return SweepReport(bool(r.ran), int(r.examined), int(r.expired),
                           int(r.dead_clients_reclaimed))

    def check(self) -> CheckReport:
        """Checks every invariant of the segment (an fsck; meant for a quiescent segment)."""
        r = N.gds_check_report()
        r.struct_size = sizeof(N.gds_check_report)
        p = c_void_p()
        lib = N.lib()
        self._call_ok("check", byref(r), byref(p))
        problems: tuple = ()
        if p.value:
            try:
                text = string_at(p.value).decode("utf-8", "replace")
            finally:
                lib.gds_buffer_free(p)
            problems = tuple(line for line in text.splitlines() if line)
        return CheckReport(problems=problems, **_struct_dict(r))

    def scan(self) -> list[Entry]:
        """A consistent copy of every live entry (no lock taken; entries changed during the
        scan may be seen before or after the change). For tools, not for the request path."""
        out: list[Entry] = []

        def cb(_user, ep):
            e = ep.contents
            out.append(Entry(string_at(e.key, e.key_len),
                             string_at(e.value, e.value_len) if e.value_len else b"",
                             Meta._from(e.meta), int(e.slot)))
            return 0

        self._call_ok("scan", N.gds_scan_fn(cb), None)
        return out

    def keys(self) -> Iterator[bytes]:
        """The keys of scan()."""
        return (e.key for e in self.scan())

    def feed_head(self) -> int:
        """The change-feed position the next mutation will take."""
        out = c_uint64()
        self._call_ok("feed_head", byref(out))
        return out.value

    @property
    def write_mode(self) -> WriteMode:
        """WRITABLE, or REPLICA / FENCED (every write raises ReadOnlyError)."""
        out = c_uint32()
        self._call_ok("get_write_mode", byref(out))
        return WriteMode(out.value)

    @write_mode.setter
    def write_mode(self, mode: WriteMode) -> None:
        self.set_write_mode(mode)

    def set_write_mode(self, mode: WriteMode) -> None:
        """Sets the write mode for every process of the segment (the replicator's call)."""
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise TypeError(f"mode must be a WriteMode, not {type(mode).__name__}")
        m = WriteMode(mode)  # ValueError for an unknown mode
        self._call_ok("set_write_mode", int(m))

    def wait_replicated(self, version: int, timeout: Duration) -> bool:
        """Waits until the standby has applied the write that returned `version` (like Redis
        WAIT), at most `timeout`; False if the time ran out (no standby, or it lags)."""
        v = _u64(version, "version")
        ms = _ms(timeout, "timeout")
        out = c_uint32()
        self._call_ok("wait_replicated", v, ms, byref(out))
        return bool(out.value)

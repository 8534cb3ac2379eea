"""Worker processes for the multi-process tests (a module, so spawn can import them).

Every value a worker writes verifies itself: it carries its own key, the writer and a
sequence number, a payload of varying length, and a BLAKE2b digest of all of that. A read
that returns anything else (torn, stale bytes of another key, garbage) is a wrong read.
"""

import hashlib
import os
import random
import struct

import _support  # noqa: F401  (sys.path)
import gardenstate
from gardenstate import LockedError, LockMismatchError, VersionMismatchError, ExistsError

_HDR = struct.Struct("<HII")  # key length, writer, sequence


def make_value(key: bytes, writer: int, seq: int, rng: random.Random) -> bytes:
    payload_len = rng.choice((0, 1, 7, 100, 1000, 3000))
    body = _HDR.pack(len(key), writer, seq) + key + rng.randbytes(payload_len)
    return body + hashlib.blake2b(body, digest_size=16).digest()


def verify(key: bytes, value: bytes) -> bool:
    if len(value) < _HDR.size + 16:
        return False
    body, digest = value[:-16], value[-16:]
    if hashlib.blake2b(body, digest_size=16).digest() != digest:
        return False
    (klen, _w, _s) = _HDR.unpack_from(body)
    return body[_HDR.size:_HDR.size + klen] == key


def hammer(store_or_name, writer, n_ops, nkeys, results, progress=None, stop=None, seed=None):
    """Mixed operations on shared keys; puts (writer, ops, wrong_reads, errors) on results.

    progress and stop are lock-free shared integers (multiprocessing RawValue), not a Value
    with a lock or an Event: a worker SIGKILLed while holding such a lock would block every
    other process that touches it (the Python side of the test, not the store).
    """
    if isinstance(store_or_name, str):
        store = gardenstate.Store.attach(store_or_name)
    else:
        store = store_or_name  # inherited through fork
    rng = random.Random(seed if seed is not None else (os.getpid() << 8) ^ writer)
    keys = [b"k%03d" % i for i in range(nkeys)]
    wrong = 0
    errors = []
    ops = 0
    seq = 0
    try:
        while ops < n_ops and not (stop is not None and stop.value):
            key = rng.choice(keys)
            op = rng.random()
            seq += 1
            try:
                if op < 0.40:
                    v = store.get(key)
                    if v is not None and not verify(key, v):
                        wrong += 1
                elif op < 0.65:
                    store.set(key, make_value(key, writer, seq, rng), sliding=600)
                elif op < 0.75:
                    got = store.get_with_meta(key)
                    if got is not None:
                        if not verify(key, got[0]):
                            wrong += 1
                        try:
                            store.compare_and_set(key, got[1].version,
                                                  make_value(key, writer, seq, rng), ttl=600)
                        except VersionMismatchError:
                            pass
                elif op < 0.82:
                    try:
                        store.add(key, make_value(key, writer, seq, rng))
                    except ExistsError:
                        pass
                elif op < 0.90:
                    try:
                        locked = store.lock(key, takeover_after=30)
                    except LockedError:
                        locked = None
                    if locked is not None:
                        if not verify(key, locked.value):
                            wrong += 1
                        try:
                            store.set_and_unlock(key, locked.lock_id,
                                                 make_value(key, writer, seq, rng), sliding=600)
                        except LockMismatchError:
                            pass  # a set() by another worker dropped our lock
                elif op < 0.95:
                    store.delete(key)
                else:
                    m = store.get_meta(key)
                    if m is not None and m.value_len < _HDR.size + 16:
                        wrong += 1
            except Exception as e:  # noqa: BLE001 - every unexpected error is reported
                errors.append(f"{type(e).__name__}: {e}")
                if len(errors) > 20:
                    break
            ops += 1
            if progress is not None and ops % 50 == 0:
                progress.value = ops
    finally:
        results.put((writer, ops, wrong, errors))


def get_one(store_or_name, key):
    """A pool task: the value of `key`, attaching by name (a Store itself cannot be sent)."""
    with gardenstate.Store.attach(store_or_name) as store:
        return store.get(key)

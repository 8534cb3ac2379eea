"""Every Store call, its outcomes and its error paths, in one process."""

import os
import subprocess
import threading
import time
import unittest
from datetime import timedelta

from _support import unique_name
import gardenstate
from gardenstate import (
    CorruptError,  # noqa: F401  (part of the public hierarchy)
    ExistsError,
    FullError,
    FullHeapError,
    FullIndexError,
    GardenstateError,
    IncompatibleError,
    InvalidOptionsError,
    KeyLengthError,
    LockedError,
    LockMismatchError,
    NoSegmentError,
    ReadOnlyError,
    SegmentExistsError,
    Store,
    StoreClosedError,
    ValueTooLargeError,
    VersionMismatchError,
    WriteMode,
)


class StoreCase(unittest.TestCase):
    options = dict(capacity_bytes=16 << 20, max_entries=1024, max_key=64, max_value=256 << 10)

    def setUp(self):
        self.name = unique_name()
        self.store = Store.create(self.name, **self.options)

    def tearDown(self):
        self.store.close()
        gardenstate.destroy(self.name)


class Lifecycle(StoreCase):
    def test_create_open_attach_destroy(self):
        self.assertFalse(self.store.closed)
        self.assertEqual(self.store.name, self.name)
        with self.assertRaises(SegmentExistsError) as cm:
            Store.create(self.name, **self.options)
        self.assertEqual(cm.exception.code, 31)
        self.assertIsInstance(cm.exception, FileExistsError)
        self.assertIn(self.name, str(cm.exception))
        with Store.open(self.name, **self.options) as other:  # same options: attaches
            self.store.set(b"k", b"v")
            self.assertEqual(other.get(b"k"), b"v")
        self.assertTrue(other.closed)
        with Store.attach(self.name) as third:
            self.assertEqual(third.get(b"k"), b"v")
            self.assertEqual(third.info(), self.store.info())
        with self.assertRaises(IncompatibleError):
            Store.open(self.name, capacity_bytes=32 << 20, max_entries=1024)

    def test_open_without_options_accepts_any_shape(self):
        # The segment was made with other options than the defaults (as by the CLI with
        # --max-entries 1024 ...): open(name) with no options attaches to it as it is.
        with Store.open(self.name) as s:
            self.assertEqual(s.info(), self.store.info())
        # Options given with the segment's values are accepted too, one or several.
        with Store.open(self.name, max_entries=1024, max_value=256 << 10, evict=False) as s:
            self.assertEqual(s.info().max_entries, 1024)
        with Store.open(self.name, capacity_bytes=16 << 20, max_key=64) as s:
            self.assertEqual(s.info().max_key, 64)

    def test_open_without_options_accepts_a_segment_the_cli_made(self):
        cli = os.environ.get("GDS_CLI")
        if not cli:
            self.skipTest("GDS_CLI (the gardenstate CLI) is not set: test.sh sets it")
        name = unique_name()
        subprocess.run([cli, "create", name, "--max-entries", "3000", "--max-value", "8192",
                        "--evict"], check=True, capture_output=True)
        self.addCleanup(gardenstate.destroy, name)
        with Store.open(name) as s:
            self.assertEqual((s.info().max_entries, s.info().max_value), (3000, 8192))
        with self.assertRaises(IncompatibleError) as cm:
            Store.open(name, max_entries=65536)
        msg = str(cm.exception)
        for part in ("max_entries=3000", "max_entries=65536 was given", "without giving",
                     "gardenstate restore"):
            self.assertIn(part, msg)
        self.assertNotIn("destroy it", msg)

    def test_incompatible_option_is_named_with_both_values_and_a_fix(self):
        cases = [
            (dict(max_entries=2048), "max_entries=1024", "max_entries=2048", "--max-entries 2048"),
            (dict(capacity_bytes=32 << 20), f"capacity_bytes={16 << 20}",
             f"capacity_bytes={32 << 20}", f"--capacity {32 << 20}"),
            (dict(max_clients=512), "max_clients=", "max_clients=512", "--max-clients 512"),
            (dict(evict=True), "evict=false", "evict=true", "--evict"),
        ]
        for opts, have, want, flag in cases:
            with self.subTest(**opts):
                if "max_clients" in opts:
                    # The default count, given explicitly: checked like any other value
                    # (this segment has 512 too, so use one with another count).
                    name = unique_name()
                    Store.create(name, max_clients=16).close()
                    self.addCleanup(gardenstate.destroy, name)
                    have = "max_clients=16"
                else:
                    name = self.name
                with self.assertRaises(IncompatibleError) as cm:
                    Store.open(name, **opts)
                msg = str(cm.exception)
                self.assertIn(have, msg)
                self.assertIn(want, msg)
                self.assertIn(flag, msg)
                self.assertIn("gardenstate dump", msg)
                self.assertNotIn("Geometry", msg)
        self.store.set(b"k", b"v")  # the refusal changed nothing
        self.assertEqual(self.store.get(b"k"), b"v")

    def test_a_store_cannot_be_pickled_or_copied(self):
        import copy
        import pickle

        for how in (pickle.dumps, copy.copy, copy.deepcopy):
            with self.subTest(how=how.__name__):
                with self.assertRaises(TypeError) as cm:
                    how(self.store)
                self.assertIn("open the store in the child", str(cm.exception))
        # The original still works (no copy closed its handle).
        self.store.set(b"k", b"v")
        self.assertEqual(self.store.get(b"k"), b"v")

    def test_open_creates_when_absent(self):
        name = unique_name()
        try:
            with Store.open(name, max_entries=100) as s:
                self.assertEqual(s.info().max_entries, 100)
        finally:
            self.assertTrue(gardenstate.destroy(name))
        self.assertFalse(gardenstate.destroy(name))

    def test_attach_to_a_missing_segment(self):
        with self.assertRaises(NoSegmentError) as cm:
            Store.attach(unique_name())
        self.assertIsInstance(cm.exception, FileNotFoundError)
        self.assertEqual(cm.exception.name, "GDS_ERR_NO_SEGMENT")
        self.assertTrue(cm.exception.detail)

    def test_bad_names_and_options(self):
        for bad in ("", "a/b", "x" * 201, "sp ace"):
            with self.assertRaises(InvalidOptionsError, msg=bad):
                Store.create(bad)
        with self.assertRaises(TypeError):
            Store.create(None)
        with self.assertRaises(TypeError):
            Store.create(b"bytes-name")
        with self.assertRaises(ValueError):
            Store.create("nul\0name")
        with self.assertRaises(ValueError):
            Store.create(unique_name(), capacity_bytes=-1)
        with self.assertRaises(TypeError):
            Store.create(unique_name(), max_entries="10")
        with self.assertRaises(ValueError):
            Store.create(unique_name(), max_key=2**32)
        with self.assertRaises(InvalidOptionsError):
            Store.create(unique_name(), max_key=70000)
        self.assertEqual(os.listdir(gardenstate.shm_dir()).count("sp ace"), 0)

    def test_close_is_idempotent_and_later_calls_raise(self):
        s = Store.attach(self.name)
        s.close()
        s.close()
        self.assertTrue(s.closed)
        for call in (lambda: s.get(b"k"), lambda: s.set(b"k", b"v"), s.stats, s.info, s.check,
                     lambda: s.delete(b"k"), lambda: s.lock(b"k"), lambda: s.write_mode):
            with self.assertRaises(StoreClosedError):
                call()
        self.assertIn("closed", repr(s))

    def test_info_and_shm_dir(self):
        info = self.store.info()
        self.assertEqual(info.max_entries, 1024)
        self.assertEqual(info.max_key, 64)
        self.assertEqual(info.max_value, 256 << 10)
        self.assertGreaterEqual(info.heap_bytes, 16 << 20)
        self.assertEqual(info.flags, 0)
        self.assertTrue(os.path.exists(os.path.join(gardenstate.shm_dir(), self.name)))
        self.assertEqual(gardenstate.shm_dir(), os.environ["GARDENSTATE_SHM_DIR"])

    def test_group_and_evict_options(self):
        name = unique_name()
        try:
            with Store.create(name, max_entries=8, capacity_bytes=1 << 20, group=True,
                              evict=True) as s:
                self.assertEqual(os.stat(os.path.join(gardenstate.shm_dir(), name)).st_mode & 0o777,
                                 0o660)
                self.assertEqual(s.info().flags, 1)
                for i in range(200):  # far more than fit: evicts instead of failing
                    s.set(b"k%d" % i, b"v" * 100)
                self.assertGreater(s.stats().evictions, 0)
                self.assertEqual(s.get(b"k199"), b"v" * 100)
            with Store.attach(name, group=True) as s:
                self.assertEqual(s.get(b"k199"), b"v" * 100)
        finally:
            gardenstate.destroy(name)


class ReadsAndWrites(StoreCase):
    def test_set_get_sizes(self):
        for n in (0, 1, 2, 4095, 4096, 4097, 64 << 10, 256 << 10):
            value = os.urandom(n)
            version = self.store.set(b"size", value)
            self.assertIsInstance(version, int)
            self.assertEqual(self.store.get(b"size"), value, n)
            got = self.store.get_with_meta(b"size")
            self.assertEqual(got[0], value)
            self.assertEqual(got[1].value_len, n)
            self.assertEqual(got[1].version, version)

    def test_buffer_grows_and_is_per_thread(self):
        big, small = b"b" * (200 << 10), b"s" * 10
        self.store.set(b"big", big)
        self.store.set(b"small", small)
        results = []

        def reader():
            for _ in range(50):
                results.append(self.store.get(b"small") == small and self.store.get(b"big") == big)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [True] * 200)

    def test_keys_as_str_bytes_bytearray_memoryview(self):
        self.store.set("clé", b"1")
        self.assertEqual(self.store.get("clé".encode()), b"1")
        self.assertEqual(self.store.get(bytearray("clé".encode())), b"1")
        self.assertEqual(self.store.get(memoryview("clé".encode())), b"1")
        self.store.set(b"\x00\xff", bytearray(b"\x00binary\x00"))
        self.assertEqual(self.store.get(b"\x00\xff"), b"\x00binary\x00")
        self.assertIn(b"\x00\xff", self.store)
        self.assertNotIn(b"absent", self.store)

    def test_missing_keys(self):
        self.assertIsNone(self.store.get(b"nope"))
        self.assertIsNone(self.store.get_with_meta(b"nope"))
        self.assertIsNone(self.store.get_meta(b"nope"))
        self.assertFalse(self.store.delete(b"nope"))
        self.assertFalse(self.store.touch(b"nope", ttl=10))
        self.assertIsNone(self.store.compare_and_set(b"nope", 1, b"v"))
        self.assertIsNone(self.store.lock(b"nope"))
        self.assertFalse(self.store.unlock(b"nope", 1))
        self.assertIsNone(self.store.set_and_unlock(b"nope", 1, b"v"))
        self.assertIsNone(self.store.get(b"nope"))  # set_and_unlock wrote nothing

    def test_add_delete(self):
        v = self.store.add(b"a", b"1")
        with self.assertRaises(ExistsError) as cm:
            self.store.add(b"a", b"2")
        self.assertEqual(cm.exception.code, 10)
        self.assertEqual(self.store.get(b"a"), b"1")
        self.assertEqual(self.store.get_meta(b"a").version, v)
        self.assertTrue(self.store.delete(b"a"))
        self.assertIsNone(self.store.get(b"a"))
        self.store.add(b"a", b"3")
        self.assertEqual(self.store.get(b"a"), b"3")

    def test_compare_and_set(self):
        v1 = self.store.set(b"c", b"1")
        v2 = self.store.compare_and_set(b"c", v1, b"2")
        self.assertNotEqual(v1, v2)
        with self.assertRaises(VersionMismatchError):
            self.store.compare_and_set(b"c", v1, b"3")
        self.assertEqual(self.store.get(b"c"), b"2")
        self.assertEqual(self.store.compare_and_set(b"c", v2, b"4", sliding=60),
                         self.store.get_meta(b"c").version)

    def test_bad_input_raises_and_changes_nothing(self):
        self.store.set(b"keep", b"original")
        before = self.store.stats()
        cases = [
            (TypeError, lambda: self.store.set(None, b"v")),
            (TypeError, lambda: self.store.set(b"keep", None)),
            (TypeError, lambda: self.store.set(b"keep", "a str value")),
            (TypeError, lambda: self.store.set(b"keep", 42)),
            (TypeError, lambda: self.store.get(None)),
            (TypeError, lambda: self.store.get(123)),
            (TypeError, lambda: self.store.delete(None)),
            (TypeError, lambda: self.store.set(b"keep", b"x", ttl="10")),
            (TypeError, lambda: self.store.set(b"keep", b"x", ttl=True)),
            (TypeError, lambda: self.store.set(b"keep", b"x", ttl=1, sliding=1)),
            (ValueError, lambda: self.store.set(b"keep", b"x", ttl=0)),
            (ValueError, lambda: self.store.set(b"keep", b"x", ttl=-1)),
            (ValueError, lambda: self.store.set(b"keep", b"x", sliding=float("nan"))),
            (ValueError, lambda: self.store.set(b"keep", b"x", ttl=timedelta(0))),
            (TypeError, lambda: self.store.compare_and_set(b"keep", None, b"x")),
            (ValueError, lambda: self.store.compare_and_set(b"keep", -1, b"x")),
            (ValueError, lambda: self.store.unlock(b"keep", 2**64)),
            (TypeError, lambda: self.store.lock(b"keep", takeover_after=None)),
            (KeyLengthError, lambda: self.store.set(b"", b"x")),
            (KeyLengthError, lambda: self.store.set(b"k" * 65, b"x")),
            (KeyLengthError, lambda: self.store.get(b"k" * 65)),
            (KeyLengthError, lambda: self.store.delete(b"")),
            (ValueTooLargeError, lambda: self.store.set(b"keep", b"v" * ((256 << 10) + 1))),
            (ValueTooLargeError, lambda: self.store.add(b"new", b"v" * ((256 << 10) + 1))),
            (TypeError, lambda: self.store.set_write_mode("replica")),
            (ValueError, lambda: self.store.set_write_mode(7)),
        ]
        for exc, call in cases:
            with self.assertRaises(exc):
                call()
        self.assertEqual(self.store.get(b"keep"), b"original")
        self.assertIsNone(self.store.get(b"new"))
        after = self.store.stats()
        self.assertEqual(after.sets, before.sets)
        self.assertEqual(after.live_entries, before.live_entries)
        self.assertEqual(after.feed_head, before.feed_head)

    def test_errors_carry_code_name_and_message(self):
        with self.assertRaises(KeyLengthError) as cm:
            self.store.set(b"k" * 65, b"x")
        e = cm.exception
        self.assertEqual((e.code, e.name), (23, "GDS_ERR_KEY_LENGTH"))
        self.assertIn("65", e.detail)  # the library's message says what it found
        self.assertIn("GDS_ERR_KEY_LENGTH (23)", str(e))
        self.assertIsInstance(e, ValueError)
        self.assertIsInstance(e, GardenstateError)

    def test_full(self):
        name = unique_name()
        try:
            with Store.create(name, max_entries=16, capacity_bytes=1 << 20) as s:
                with self.assertRaises(FullError) as cm:
                    for i in range(10_000):
                        s.set(b"k%d" % i, b"v" * 200)
                self.assertIsInstance(cm.exception, (FullIndexError, FullHeapError))
                self.assertTrue(s.check().ok)
            with Store.create(unique_name("heap"), max_entries=1000,
                              capacity_bytes=1 << 20) as s2:
                try:
                    with self.assertRaises(FullHeapError):
                        for i in range(1000):
                            s2.set(b"k%d" % i, b"v" * 60_000)
                finally:
                    gardenstate.destroy(s2.name)
        finally:
            gardenstate.destroy(name)


class Expiry(StoreCase):
    def test_ttl_expires(self):
        self.store.set(b"t", b"v", ttl=0.2)
        self.store.set(b"forever", b"v")
        self.store.set(b"long", b"v", ttl=timedelta(hours=1))
        m = self.store.get_meta(b"long")
        self.assertTrue(0 < m.ttl_left_ms <= 3_600_000)
        self.assertIsNone(self.store.get_meta(b"forever").ttl_left_ms)
        time.sleep(0.5)  # only a lower bound matters: expiry can only be later than now
        self.assertIsNone(self.store.get(b"t"))
        self.assertIsNone(self.store.get_meta(b"t"))
        self.assertFalse(self.store.touch(b"t", ttl=10))
        self.assertEqual(self.store.get(b"forever"), b"v")
        # expired entries are reclaimed by a sweep
        report = self.store.sweep()
        self.assertTrue(report.ran)
        self.assertGreaterEqual(report.examined, 1)
        self.assertEqual(self.store.stats().live_entries, 2)

    def test_sliding_is_extended_by_reads(self):
        self.store.set(b"s", b"v", sliding=timedelta(minutes=20))
        m = self.store.get_meta(b"s")
        self.assertTrue(0 < m.ttl_left_ms <= 1_200_000)
        self.store.set(b"gone", b"v", sliding=0.2)
        time.sleep(0.5)
        self.assertIsNone(self.store.get(b"gone"))

    def test_touch(self):
        self.store.set(b"t", b"v", ttl=0.3)
        self.assertTrue(self.store.touch(b"t", ttl=3600))
        self.assertTrue(self.store.touch(b"t"))  # no expiry: never expires
        self.assertIsNone(self.store.get_meta(b"t").ttl_left_ms)
        self.assertTrue(self.store.touch(b"t", ttl=0.2))
        time.sleep(0.5)
        self.assertIsNone(self.store.get(b"t"))


class SessionLocks(StoreCase):
    def test_lock_semantics(self):
        self.store.set(b"s", b"cart=1", sliding=1200)
        locked = self.store.lock(b"s")
        self.assertEqual(locked.value, b"cart=1")
        self.assertFalse(locked.took_over)
        self.assertEqual(locked.meta.lock_id, locked.lock_id)
        # reads never wait and show the lock
        self.assertEqual(self.store.get(b"s"), b"cart=1")
        self.assertEqual(self.store.get_meta(b"s").lock_id, locked.lock_id)
        # a second lock is refused with the holder's id and age
        with self.assertRaises(LockedError) as cm:
            self.store.lock(b"s")
        self.assertEqual(cm.exception.lock_id, locked.lock_id)
        self.assertGreaterEqual(cm.exception.age_ms, 0)
        # the wrong id does not unlock nor write
        with self.assertRaises(LockMismatchError):
            self.store.unlock(b"s", locked.lock_id + 1000)
        with self.assertRaises(LockMismatchError):
            self.store.set_and_unlock(b"s", locked.lock_id + 1000, b"lost")
        self.assertEqual(self.store.get(b"s"), b"cart=1")
        # set_and_unlock writes and releases
        v = self.store.set_and_unlock(b"s", locked.lock_id, b"cart=2", sliding=1200)
        self.assertEqual(self.store.get_meta(b"s").version, v)
        self.assertEqual(self.store.get_meta(b"s").lock_id, 0)
        # lock + unlock keeps the value
        again = self.store.lock(b"s")
        self.assertTrue(self.store.unlock(b"s", again.lock_id))
        self.assertEqual(self.store.get(b"s"), b"cart=2")
        with self.assertRaises(LockMismatchError):
            self.store.unlock(b"s", again.lock_id)  # not locked any more
        stats = self.store.stats()
        self.assertEqual(stats.locks, 2)
        self.assertEqual(stats.lock_contentions, 1)

    def test_takeover_after_timeout(self):
        self.store.set(b"s", b"v")
        first = self.store.lock(b"s")
        time.sleep(0.3)
        second = self.store.lock(b"s", takeover_after=0.1)  # held longer than that
        self.assertTrue(second.took_over)
        self.assertNotEqual(first.lock_id, second.lock_id)
        with self.assertRaises(LockMismatchError):
            self.store.set_and_unlock(b"s", first.lock_id, b"late write")
        self.assertEqual(self.store.get(b"s"), b"v")
        self.assertIsNotNone(self.store.set_and_unlock(b"s", second.lock_id, b"w"))
        self.assertEqual(self.store.stats().lock_takeovers, 1)

    def test_set_drops_the_lock_and_delete_removes_it(self):
        self.store.set(b"s", b"v")
        held = self.store.lock(b"s")
        self.store.set(b"s", b"other")
        self.assertEqual(self.store.get_meta(b"s").lock_id, 0)
        with self.assertRaises(LockMismatchError):
            self.store.unlock(b"s", held.lock_id)
        held = self.store.lock(b"s")
        self.store.delete(b"s")
        self.assertFalse(self.store.unlock(b"s", held.lock_id))
        self.assertIsNone(self.store.set_and_unlock(b"s", held.lock_id, b"x"))

    def test_lock_waits_for_the_release_and_releases_on_exit(self):
        self.store.set(b"s", b"v")
        held = self.store.lock(b"s")
        # a wait that runs out names the holder
        with self.assertRaises(LockedError) as cm:
            self.store.lock(b"s", timeout=0.01)
        self.assertEqual(cm.exception.lock_id, held.lock_id)
        contended = self.store.stats().lock_contentions
        got = []

        def waiter():
            # patience 600 s: only the release (or a takeover, asserted against) ends it
            with self.store.lock(b"s", timeout=600) as mine:
                got.append(mine)
                got.append(self.store.get_meta(b"s").lock_id)

        t = threading.Thread(target=waiter)
        t.start()
        # The waiter found the lock held (counted), so it is waiting: this thread runs
        # Python meanwhile (the GIL is released), then releases the lock.
        while self.store.stats().lock_contentions == contended:
            time.sleep(0.001)
        self.assertTrue(self.store.unlock(b"s", held.lock_id))
        t.join(120)
        self.assertFalse(t.is_alive(), "the waiter slept through the release")
        mine, seen = got
        self.assertFalse(mine.took_over)
        self.assertEqual(seen, mine.lock_id)
        self.assertEqual(mine.value, b"v")
        # leaving the block released it
        self.assertEqual(self.store.get_meta(b"s").lock_id, 0)
        # after set_and_unlock inside the block, leaving it does nothing more
        with self.store.lock(b"s", timeout=1) as mine:
            self.store.set_and_unlock(b"s", mine.lock_id, b"w")
        self.assertEqual(self.store.get(b"s"), b"w")
        # an absent key: None, as without a timeout
        self.assertIsNone(self.store.lock(b"absent", timeout=1))

    def test_lock_of_an_empty_value(self):
        self.store.set(b"e", b"")
        held = self.store.lock(b"e")
        self.assertEqual(held.value, b"")
        self.assertTrue(self.store.unlock(b"e", held.lock_id))


class Maintenance(StoreCase):
    def test_stats_count_operations(self):
        s0 = self.store.stats()
        self.store.set(b"a", b"1")
        self.store.set(b"b", b"22")
        self.store.get(b"a")
        self.store.get(b"zz")
        self.store.delete(b"b")
        self.store.touch(b"a", ttl=100)
        s = self.store.stats()
        self.assertEqual(s.sets - s0.sets, 2)
        self.assertEqual(s.hits - s0.hits, 1)
        self.assertEqual(s.misses - s0.misses, 1)
        self.assertEqual(s.deletes - s0.deletes, 1)
        self.assertEqual(s.touches - s0.touches, 1)
        self.assertEqual(s.live_entries, 1)
        self.assertGreater(s.bytes_used, 0)
        self.assertGreater(s.bytes_free, 0)
        self.assertEqual(s.clients, 0)  # a slot is held only during a call
        self.assertEqual(s.feed_head, self.store.feed_head())

    def test_check_scan_keys(self):
        for i in range(50):
            self.store.set(b"k%d" % i, b"v%d" % i, ttl=3600 if i % 2 else None)
        report = self.store.check()
        self.assertTrue(report.ok, report.problems)
        self.assertEqual(report.problems, ())
        self.assertEqual(report.entries, 50)
        self.assertEqual(report.leaked_blocks, 0)
        entries = {e.key: e for e in self.store.scan()}
        self.assertEqual(len(entries), 50)
        self.assertEqual(entries[b"k7"].value, b"v7")
        self.assertIsNotNone(entries[b"k7"].meta.ttl_left_ms)
        self.assertIsNone(entries[b"k8"].meta.ttl_left_ms)
        self.assertEqual(sorted(self.store.keys()), sorted(entries))

    def test_replication_state_tells_workers_of_every_role_change(self):
        from gardenstate import ReplicationState, Role
        with Store.attach(self.name) as worker:
            first = worker.replication_state()
            self.assertEqual((first.role, first.epoch, first.writable), (Role.PRIMARY, 0, True))
            seen = first.changes
            for mode, role in ((WriteMode.REPLICA, Role.STANDBY), (WriteMode.FENCED, Role.FENCED),
                               (WriteMode.WRITABLE, Role.PRIMARY)):
                self.store.set_write_mode(mode)
                now = worker.replication_state()
                self.assertIsInstance(now, ReplicationState)
                self.assertEqual(now.role, role)
                self.assertGreater(now.changes, seen)
                seen = now.changes
            self.store.set_write_mode(WriteMode.WRITABLE)  # no change
            self.assertEqual(worker.replication_state().changes, seen)

    def test_write_mode(self):
        self.store.set(b"k", b"v", sliding=60)
        self.assertEqual(self.store.write_mode, WriteMode.WRITABLE)
        with Store.attach(self.name) as other:
            self.store.write_mode = WriteMode.REPLICA
            self.assertEqual(other.write_mode, WriteMode.REPLICA)  # for every process
            for write in (lambda: other.set(b"k", b"x"), lambda: other.add(b"n", b"x"),
                          lambda: other.delete(b"k"), lambda: other.touch(b"k", ttl=5),
                          lambda: other.lock(b"k"),
                          lambda: other.compare_and_set(b"k", 1, b"x")):
                with self.assertRaises(ReadOnlyError):
                    write()
            self.assertEqual(other.get(b"k"), b"v")  # reads still work
            other.set_write_mode(WriteMode.FENCED)
            self.assertEqual(self.store.write_mode, WriteMode.FENCED)
            with self.assertRaises(ReadOnlyError):
                self.store.set(b"k", b"x")
            self.store.set_write_mode(WriteMode.WRITABLE)
            other.set(b"k", b"x")
        self.assertEqual(self.store.get(b"k"), b"x")

    def test_wait_replicated_without_a_standby_times_out(self):
        v = self.store.set(b"k", b"v")
        self.assertFalse(self.store.wait_replicated(v, 0.05))

    def test_threads_share_one_store(self):
        errors = []

        def worker(t):
            try:
                for i in range(300):
                    key = b"t%d-%d" % (t, i % 10)
                    self.store.set(key, key * 3)
                    if self.store.get(key) != key * 3:
                        errors.append(key)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertTrue(self.store.check().ok)

    def test_close_waits_for_calls_in_flight(self):
        other = Store.attach(self.name)
        other.set(b"k", b"v")
        stop = threading.Event()
        seen = []

        def reader():
            while not stop.is_set():
                try:
                    seen.append(other.get(b"k"))
                except StoreClosedError:
                    return

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        while len(seen) < 100:
            time.sleep(0.001)
        other.close()  # must not overlap a call: each reader ends with StoreClosedError
        for t in threads:
            t.join(timeout=60)
        stop.set()
        self.assertTrue(all(v == b"v" for v in seen))
        self.assertTrue(all(not t.is_alive() for t in threads))


if __name__ == "__main__":
    unittest.main()

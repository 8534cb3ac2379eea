"""Several processes on one segment: fork (inherited handle) and spawn (fresh attach),
self-verifying values, and a worker killed with SIGKILL in the middle of its run.

Every loop is bounded by a count of operations, never by time; waits on other processes
poll their progress with generous deadlines, so a slow shared machine only makes them slower.
"""

import multiprocessing as mp
import os
import signal
import time
import unittest

from _support import unique_name
import _workers
import gardenstate
from gardenstate import Store

NKEYS = 16
OPTIONS = dict(capacity_bytes=32 << 20, max_entries=1024, max_value=64 << 10)


def collect(results, n, procs):
    out = []
    deadline = time.monotonic() + 600
    while len(out) < n:
        try:
            out.append(results.get(timeout=1))
        except Exception:  # queue.Empty
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(out)} of {n} workers reported in 600 s")
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise AssertionError(f"a worker died: exit codes {[p.exitcode for p in dead]}")
    return out


def wait_progress(counters, at_least, what):
    deadline = time.monotonic() + 300
    while any(c.value < at_least for c in counters):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: no progress to {at_least} ops in 300 s: "
                                 f"{[c.value for c in counters]}")
        time.sleep(0.01)


class MultiProcess(unittest.TestCase):
    def setUp(self):
        self.name = unique_name("mp")
        self.store = Store.create(self.name, **OPTIONS)

    def tearDown(self):
        self.store.close()
        gardenstate.destroy(self.name)

    def assert_all_values_verify(self):
        for e in self.store.scan():
            self.assertTrue(_workers.verify(e.key, e.value), e.key)

    def assert_healthy(self):
        # The sweep reclaims the client slots of exited processes. A worker killed while it
        # held the sweep lease (its own periodic sweep) keeps other sweeps out until the
        # lease runs out (SWEEP_LEASE_MS): poll until one runs, as wait_progress does.
        deadline = time.monotonic() + 300
        while not self.store.sweep().ran:
            if time.monotonic() > deadline:
                raise AssertionError("no sweep could run in 300 s")
            time.sleep(0.01)
        report = self.store.check()
        self.assertTrue(report.ok, report.problems)
        self.assertEqual(report.leaked_blocks, 0)
        self.assertEqual(report.dead_clients, 0)

    def hammer(self, method, nworkers=4, nops=3000):
        ctx = mp.get_context(method)
        results = ctx.Queue()
        # fork: the child uses the handle it inherited; spawn: it attaches by name
        target = self.store if method == "fork" else self.name
        procs = [ctx.Process(target=_workers.hammer, args=(target, w, nops, NKEYS, results))
                 for w in range(nworkers)]
        for p in procs:
            p.start()
        out = collect(results, nworkers, procs)
        for p in procs:
            p.join(timeout=120)
            self.assertEqual(p.exitcode, 0)
        for writer, ops, wrong, errors in out:
            self.assertEqual(errors, [], f"worker {writer}")
            self.assertEqual(wrong, 0, f"worker {writer}: {wrong} wrong reads")
            self.assertEqual(ops, nops)
        self.assert_all_values_verify()
        self.assert_healthy()
        stats = self.store.stats()
        self.assertGreaterEqual(stats.sets, nworkers * nops // 10)

    def test_fork_workers_share_the_inherited_handle(self):
        self.hammer("fork")

    def test_spawn_workers_attach_by_name(self):
        self.hammer("spawn")

    def test_a_store_given_to_a_spawn_or_forkserver_pool_is_refused(self):
        # A pickled Store used to carry the raw handle: the child crashed and the pool hung.
        # Now pickling it raises a TypeError in the parent, which the pool returns.
        self.store.set(b"k", b"v")
        for method in ("spawn", "forkserver"):
            with self.subTest(method=method):
                with mp.get_context(method).Pool(1) as pool:
                    with self.assertRaises(TypeError) as cm:
                        pool.apply_async(_workers.get_one, (self.store, b"k")).get(timeout=300)
                    self.assertIn("open the store in the child", str(cm.exception))
                    # The pool still works, and a child that opens the store by name reads it.
                    got = pool.apply_async(_workers.get_one, (self.name, b"k")).get(timeout=300)
                    self.assertEqual(got, b"v")
        self.assertEqual(self.store.get(b"k"), b"v")

    def test_parent_keeps_working_after_forking(self):
        self.store.set(b"p", b"parent")
        ctx = mp.get_context("fork")
        results = ctx.Queue()
        p = ctx.Process(target=_workers.hammer, args=(self.store, 9, 500, NKEYS, results))
        p.start()
        for i in range(500):  # the parent uses the same handle meanwhile
            self.store.set(b"p", b"parent%d" % i)
            self.assertEqual(self.store.get(b"p"), b"parent%d" % i)
        _, ops, wrong, errors = collect(results, 1, [p])[0]
        p.join(timeout=120)
        self.assertEqual((ops, wrong, errors), (500, 0, []))
        self.assert_healthy()

    def test_sigkill_mid_run_leaves_the_segment_usable_and_clean(self):
        ctx = mp.get_context("fork")
        results = ctx.Queue()
        # lock-free shared integers: a worker killed holding a lock would hang the others
        stop = ctx.RawValue("q", 0)
        counters = [ctx.RawValue("q", 0) for _ in range(4)]
        procs = [ctx.Process(target=_workers.hammer,
                             args=(self.store, w, 10**9, NKEYS, results, counters[w], stop))
                 for w in range(4)]
        for p in procs:
            p.start()
        try:
            wait_progress(counters, 300, "before the kills")
            victims = procs[:2]
            for victim in victims:  # killed one after the other, mid-run
                os.kill(victim.pid, signal.SIGKILL)
                victim.join(timeout=60)
                self.assertEqual(victim.exitcode, -signal.SIGKILL)
                marks = [c.value for c in counters[2:]]
                # the survivors go on working after the kill
                wait_progress(counters[2:], max(marks) + 300, "after a kill")
            # a new process can use the segment too, including the keys the victims touched
            fresh = ctx.Process(target=_workers.hammer,
                                args=(self.name, 7, 1000, NKEYS, results))
            fresh.start()
            stop_after = collect(results, 1, [fresh])
            self.assertEqual(stop_after[0][0], 7)
            self.assertEqual(stop_after[0][1:], (1000, 0, []))
            fresh.join(timeout=60)
        finally:
            stop.value = 1
        out = collect(results, 2, procs[2:])
        for p in procs[2:]:
            p.join(timeout=120)
        for writer, ops, wrong, errors in out:
            self.assertEqual(errors, [], f"worker {writer}")
            self.assertEqual(wrong, 0, f"worker {writer}")
            self.assertGreater(ops, 0)
        # the parent's handle still works on every key, and the segment checks clean
        for i in range(NKEYS):
            key = b"k%03d" % i
            self.store.set(key, b"after")
            self.assertEqual(self.store.get(key), b"after")
            held = self.store.lock(key, takeover_after=30)  # no lock left by a victim blocks
            self.assertTrue(self.store.unlock(key, held.lock_id))
        self.assert_healthy()


class ForkWhileThreadsCall(unittest.TestCase):
    """ffi/README.md: fork while no other thread is inside a gds_ call. The package's
    at-fork hook waits for calls in flight, so forking from a busy process is safe."""

    def test_fork_while_other_threads_use_the_store(self):
        import threading
        name = unique_name("fk")
        store = Store.create(name, capacity_bytes=8 << 20, max_entries=256)
        try:
            store.set(b"shared", b"v" * 3000)
            stop = threading.Event()
            bad = []

            def busy():
                while not stop.is_set():
                    if store.get(b"shared") != b"v" * 3000:
                        bad.append(1)
                    store.set(b"t", b"x")

            threads = [threading.Thread(target=busy) for _ in range(3)]
            for t in threads:
                t.start()
            try:
                for _ in range(20):
                    pid = os.fork()
                    if pid == 0:  # the child: only this thread exists; the handle works
                        ok = store.get(b"shared") == b"v" * 3000 and store.set(b"c", b"1") > 0
                        os._exit(0 if ok else 1)
                    _, status = os.waitpid(pid, 0)
                    self.assertEqual(os.waitstatus_to_exitcode(status), 0)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=60)
            self.assertEqual(bad, [])
            store.sweep()
            self.assertTrue(store.check().ok)
        finally:
            store.close()
            gardenstate.destroy(name)


class SelfVerifyingValues(unittest.TestCase):
    def test_verify_rejects_every_kind_of_wrong_value(self):
        import random
        rng = random.Random(1)
        v = _workers.make_value(b"k001", 3, 9, rng)
        self.assertTrue(_workers.verify(b"k001", v))
        self.assertFalse(_workers.verify(b"k002", v))  # another key's value
        self.assertFalse(_workers.verify(b"k001", v[:-1]))  # truncated
        self.assertFalse(_workers.verify(b"k001", b""))
        for i in range(len(v)):  # any flipped bit
            torn = bytearray(v)
            torn[i] ^= 0x10
            self.assertFalse(_workers.verify(b"k001", bytes(torn)), i)


if __name__ == "__main__":
    unittest.main()

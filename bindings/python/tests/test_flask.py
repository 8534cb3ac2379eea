"""The Flask session provider: in-process (Flask's test client) and through a real
multi-process server (gunicorn, 4 sync workers), where a session must follow its user from
worker to worker."""

import http.cookiejar
import json
import os
import time
import unittest
import urllib.request
from datetime import timedelta

from _support import REQUIRE_FLASK, unique_name
from _gunicorn import GunicornServer
import gardenstate
from gardenstate import Store

try:
    import flask  # noqa: F401
    HAVE_FLASK = True
except ImportError:
    HAVE_FLASK = False
try:
    import gunicorn  # noqa: F401
    HAVE_GUNICORN = True
except ImportError:
    HAVE_GUNICORN = False



def need(flag, what):
    if flag:
        return lambda cls: cls
    if REQUIRE_FLASK:  # test.sh installed it: its absence is a failure
        raise ImportError(f"{what} is required (GDS_PY_REQUIRE_FLASK=1) but not importable")
    return unittest.skip(f"{what} is not installed (bindings/python/test.sh installs it)")


def session_keys(store, prefix=b"session:"):
    return [e for e in store.scan() if e.key.startswith(prefix)]


@need(HAVE_FLASK, "flask")
class InProcess(unittest.TestCase):
    def setUp(self):
        from flask_app import create_app
        self.create_app = create_app
        self.name = unique_name("fl")
        self.store = Store.create(self.name, capacity_bytes=8 << 20, max_entries=1024)
        self.app = create_app(self.store)
        self.client = self.app.test_client()

    def tearDown(self):
        self.store.close()
        gardenstate.destroy(self.name)

    def cookie(self, client=None):
        c = (client or self.client).get_cookie("session")
        return None if c is None else c.value

    def test_session_lives_in_the_segment_under_a_random_id(self):
        self.assertEqual(self.client.post("/incr").json["n"], 1)
        self.assertEqual(self.client.post("/incr").json["n"], 2)
        sid = self.cookie()
        self.assertGreaterEqual(len(sid), 40)  # 32 random bytes, URL-safe base64
        entries = session_keys(self.store)
        self.assertEqual([e.key for e in entries], [b"session:" + sid.encode()])
        data = json.loads(entries[0].value)
        self.assertEqual(data["n"], 2)
        # sliding expiry = permanent_session_lifetime (10 minutes in the app)
        self.assertTrue(0 < entries[0].meta.ttl_left_ms <= 600_000)
        # the cookie is the id alone: none of the data travels to the client
        self.assertRegex(sid, r"^[A-Za-z0-9_-]{43}$")

    def test_another_client_gets_another_session(self):
        self.client.post("/incr")
        other = self.app.test_client()
        self.assertEqual(other.post("/incr").json["n"], 1)
        self.assertNotEqual(self.cookie(), self.cookie(other))
        self.assertEqual(len(session_keys(self.store)), 2)

    def test_clear_deletes_the_entry_and_the_cookie(self):
        self.client.post("/incr")
        self.assertEqual(len(session_keys(self.store)), 1)
        r = self.client.post("/clear")
        self.assertIn("session=;", r.headers.get("Set-Cookie", ""))
        self.assertIsNone(self.cookie())
        self.assertEqual(session_keys(self.store), [])
        self.assertEqual(self.client.post("/incr").json["n"], 1)

    def test_reading_does_not_write_or_set_a_cookie_for_an_empty_session(self):
        r = self.client.get("/show")
        self.assertEqual(r.json["n"], None)
        self.assertNotIn("Set-Cookie", r.headers)
        self.assertEqual(session_keys(self.store), [])
        self.client.post("/incr")
        sets = self.store.stats().sets
        self.assertEqual(self.client.get("/show").json["n"], 1)
        self.assertEqual(self.store.stats().sets, sets)  # a read is not a write

    def test_unknown_and_malformed_ids_start_a_new_session(self):
        for bad in ("A" * 43, "../../etc", "x", "é" * 20, "A" * 500):
            client = self.app.test_client()
            client.set_cookie("session", bad)
            self.assertEqual(client.post("/incr").json["n"], 1)
            self.assertNotEqual(self.cookie(client), bad)  # the sent id is never adopted

    def test_undecodable_data_starts_a_new_session(self):
        self.client.post("/incr")
        sid = self.cookie()
        self.store.set(b"session:" + sid.encode(), b"\xffnot json")
        self.assertEqual(self.client.post("/incr").json["n"], 1)
        self.assertNotEqual(self.cookie(), sid)

    def test_sliding_expiry_follows_the_lifetime(self):
        app = self.create_app(self.store, lifetime=timedelta(milliseconds=200))
        client = app.test_client()
        self.assertEqual(client.post("/incr").json["n"], 1)
        time.sleep(0.6)  # a lower bound: the entry can only be older than its lifetime
        self.assertEqual(client.post("/incr").json["n"], 1)  # expired: a new session

    def test_pluggable_serializer(self):
        class Reversed:
            def dumps(self, d):
                return json.dumps(d)[::-1]

            def loads(self, raw):
                return json.loads(raw.decode()[::-1])

        app = self.create_app(self.store, serializer=Reversed(), key_prefix="rev:")
        client = app.test_client()
        client.post("/incr")
        self.assertEqual(client.post("/incr").json["n"], 2)
        (entry,) = session_keys(self.store, b"rev:")
        self.assertTrue(entry.value.startswith(b"}"))

    def test_init_app_installs_the_interface(self):
        from flask import Flask, session
        from gardenstate.flask import GardenstateSessionInterface, init_app
        app = Flask("init_app_test")
        interface = init_app(app, self.store, key_prefix="ia:")
        self.assertIs(app.session_interface, interface)
        self.assertIsInstance(interface, GardenstateSessionInterface)

        @app.post("/")
        def put():
            session["who"] = "ada"
            return "ok"

        app.test_client().post("/")
        (entry,) = session_keys(self.store, b"ia:")
        self.assertEqual(json.loads(entry.value), {"who": "ada"})

    def test_a_refused_write_answers_503_with_retry_after_and_reads_still_work(self):
        self.assertEqual(self.client.post("/incr").json["n"], 1)
        self.store.set_write_mode(gardenstate.WriteMode.REPLICA)  # a standby, a failover
        with self.assertLogs(self.app.logger, "WARNING") as logs:
            r = self.client.post("/incr")
        self.assertIn("STANDBY", logs.output[0])
        self.assertEqual((r.status_code, r.headers.get("Retry-After")), (503, "1"))
        self.assertEqual(self.client.get("/show").json["n"], 1)
        self.store.set_write_mode(gardenstate.WriteMode.WRITABLE)
        self.assertEqual(self.client.post("/incr").json["n"], 2)

    def test_the_interface_wants_a_store(self):
        from gardenstate.flask import GardenstateSessionInterface
        with self.assertRaises(TypeError):
            GardenstateSessionInterface("sessions")


@need(HAVE_FLASK, "flask")
class Locking(unittest.TestCase):
    """locking=True: a request holds its session's lock from open to save."""

    def setUp(self):
        from flask_app import create_app
        self.name = unique_name("fk")
        self.store = Store.create(self.name, capacity_bytes=8 << 20, max_entries=1024)
        self.app = create_app(self.store, locking=True, lock_takeover_after=0.05)
        self.client = self.app.test_client()
        self.client.post("/incr")
        self.sid = self.client.get_cookie("session").value
        self.key = b"session:" + self.sid.encode()

    def tearDown(self):
        self.store.close()
        gardenstate.destroy(self.name)

    def test_a_request_holds_the_lock_until_its_session_is_saved(self):
        iface = self.app.session_interface
        with self.app.test_request_context("/incr", method="POST",
                                           headers={"Cookie": f"session={self.sid}"}) as ctx:
            first = ctx.session  # opened (and locked) by open_session when ctx was pushed
            self.assertEqual(first["n"], 1)
            self.assertNotEqual(self.store.get_meta(self.key).lock_id, 0)
            first["n"] += 1
            iface.save_session(self.app, first, self.app.response_class())
        self.assertEqual(self.store.get_meta(self.key).lock_id, 0)  # released by the save
        self.assertEqual(self.client.post("/incr").json["n"], 3)  # it saw the first's write
        self.assertEqual(self.store.get_meta(self.key).lock_id, 0)

    def test_a_stuck_holder_is_taken_over_and_its_write_is_lost(self):
        iface = self.app.session_interface
        with self.app.test_request_context("/incr", method="POST",
                                           headers={"Cookie": f"session={self.sid}"}) as ctx:
            stuck = ctx.session
            stuck["n"] = 100
            # Another request waits for the lock, then takes it over (held over
            # lock_takeover_after), and saw the value from before the stuck one's change.
            self.assertEqual(self.client.post("/incr").json["n"], 2)
            with self.assertLogs(self.app.logger, "WARNING") as logs:
                iface.save_session(self.app, stuck, self.app.response_class())
            self.assertIn("lock was taken over", logs.output[0])
        self.assertEqual(self.client.get("/show").json["n"], 2)

    def test_a_read_only_request_releases_the_lock(self):
        self.assertEqual(self.client.get("/show").json["n"], 1)
        self.assertEqual(self.store.get_meta(self.key).lock_id, 0)
        self.client.post("/clear")
        self.assertIsNone(self.store.get_meta(self.key))

    def test_a_read_only_segment_serves_reads_unlocked_and_answers_writes_503(self):
        self.store.set_write_mode(gardenstate.WriteMode.FENCED)
        self.assertEqual(self.client.get("/show").json["n"], 1)
        with self.assertLogs(self.app.logger, "WARNING"):
            r = self.client.post("/incr")
        self.assertEqual((r.status_code, r.headers.get("Retry-After")), (503, "1"))
        self.store.set_write_mode(gardenstate.WriteMode.WRITABLE)
        self.assertEqual(self.client.post("/incr").json["n"], 2)

    def test_the_lock_of_a_dead_holder_is_taken_over(self):
        # A forked child takes the lock and dies (as a killed worker would); the lock is
        # young, so only its dead holder lets the next request take it over.
        self.app.session_interface.lock_takeover_after = 3600
        pid = os.fork()
        if pid == 0:
            try:
                self.store.lock(self.key)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        self.assertNotEqual(self.store.get_meta(self.key).lock_id, 0)
        self.assertEqual(self.client.post("/incr").json["n"], 2)


@need(HAVE_FLASK and HAVE_GUNICORN, "flask and gunicorn")
class Gunicorn(GunicornServer, unittest.TestCase):
    """gunicorn with 4 sync workers; a client with a cookie jar and a new connection per
    request, so the requests of one session are served by different worker processes."""

    app = "flask_app:app"

    def run_counter(self, requests):
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def post(path):
            req = urllib.request.Request(self.url(path), data=b"", method="POST")
            with opener.open(req, timeout=60) as r:  # urllib: one connection per request
                return json.loads(r.read())

        pids = []
        n = 0
        # Go on past `requests` (bounded) until at least two workers served: with sync
        # workers the kernel picks who accepts, and that must not decide the test.
        while n < requests or (len(set(pids)) < 2 and n < requests * 10):
            got = post("/incr")
            n += 1
            self.assertEqual(got["n"], n, f"request {n}: session lost or stale:\n{self.read_log()}")
            pids.append(got["pid"])
        switches = sum(1 for a, b in zip(pids, pids[1:]) if a != b)
        self.assertGreaterEqual(len(set(pids)), 2, "every request went to one worker")
        self.assertGreater(switches, 0)
        (sid,) = [c.value for c in jar if c.name == "session"]
        return post, n, pids, sid

    def test_a_session_follows_its_user_across_workers_preloaded(self):
        # --preload: the master opens the store at import, the workers inherit it by fork
        self.start(preload=True)
        post, n, pids, sid = self.run_counter(200)
        self.assertGreaterEqual(n, 200)
        with Store.attach(self.name) as store:
            entries = session_keys(store)
            self.assertEqual([e.key for e in entries], [b"session:" + sid.encode()])
            data = json.loads(entries[0].value)
            self.assertEqual(data["n"], n)
            self.assertEqual(set(data["pids"]), set(pids))
            self.assertTrue(0 < entries[0].meta.ttl_left_ms <= 600_000)
            post("/clear")
            self.assertEqual(session_keys(store), [])
        self.assertEqual(post("/incr")["n"], 1)  # a fresh session after clearing

    def test_locking_serializes_concurrent_requests_of_one_session(self):
        # 4 clients share one session cookie and increment it 100 times each, at once, over
        # 4 workers: with locking no increment is lost (without it, last writer wins).
        self.start(preload=True, GDS_TEST_LOCKING="1")
        post, n, _, sid = self.run_counter(40)  # a session at least two workers served
        import threading
        import urllib.request as ur

        def client(results):
            for _ in range(100):
                req = ur.Request(self.url("/incr"), data=b"", method="POST",
                                 headers={"Cookie": f"session={sid}"})
                with ur.urlopen(req, timeout=120) as r:
                    results.append(json.loads(r.read())["n"])

        results = []
        threads = [threading.Thread(target=client, args=(results,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 400)
        # Each request saw every earlier one: the counts answered are exactly n+1 .. n+400.
        self.assertEqual(sorted(results), list(range(n + 1, n + 401)))
        self.assertEqual(post("/incr")["n"], n + 401)

    def test_a_session_follows_its_user_across_workers_each_opening(self):
        # without --preload: the four workers import the app and open the segment at once
        self.start(preload=False)
        _, n, _, _ = self.run_counter(60)
        with Store.attach(self.name) as store:
            (entry,) = session_keys(store)
            self.assertEqual(json.loads(entry.value)["n"], n)
            self.assertTrue(store.check().ok)


if __name__ == "__main__":
    unittest.main()

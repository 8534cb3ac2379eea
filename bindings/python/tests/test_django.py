"""The Django session engine (gardenstate.django): Django's own session-backend tests
(SessionTestsMixin from tests/sessions_tests/tests.py of the Django sdist, unmodified; test.sh
extracts it and names its directory in $GDS_DJANGO_TESTS), the cache/db backends' semantics
under races, and a gunicorn end-to-end run with workers killed by SIGKILL."""

import http.client
import http.cookiejar
import json
import os
import signal
import sys
import threading
import unittest
import urllib.error
import urllib.request

from _support import unique_name
from _gunicorn import GunicornServer
import gardenstate
from gardenstate import Store

REQUIRE = os.environ.get("GDS_PY_REQUIRE_DJANGO") == "1"
SEGMENT = unique_name("dj")
DJANGO_TESTS = os.environ.get("GDS_DJANGO_TESTS")

try:
    import django
    from django.conf import settings
except ImportError:
    if REQUIRE:
        raise
    django = None

if django is not None and not settings.configured:
    if DJANGO_TESTS:
        sys.path.insert(0, DJANGO_TESTS)
    settings.configure(
        SECRET_KEY="gardenstate-test-" + "x" * 40,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "django.contrib.sessions"] + (["sessions_tests"] if DJANGO_TESTS else []),
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        SESSION_ENGINE="gardenstate.django",
        GARDENSTATE={"name": SEGMENT, "options": {"capacity_bytes": 8 << 20,
                                                  "max_entries": 4096}},
        USE_TZ=True,
    )
    django.setup()
    from django.test.utils import setup_test_environment
    setup_test_environment()

if django is not None:
    from django.contrib.sessions.backends.base import CreateError, UpdateError
    from django.test import SimpleTestCase
    from gardenstate.django import SessionStore
    import gardenstate.django as gdjango
else:
    SimpleTestCase = unittest.TestCase

if django is not None and DJANGO_TESTS:
    from sessions_tests.tests import SessionTestsMixin
elif REQUIRE:
    raise ImportError("GDS_DJANGO_TESTS must name the directory holding Django's sessions_tests")
else:
    SessionTestsMixin = None


def tearDownModule():
    if django is not None and gdjango._store is not None:
        gdjango._store.close()
    gardenstate.destroy(SEGMENT)


if SessionTestsMixin is not None:
    class DjangoSessionTests(SessionTestsMixin, SimpleTestCase):
        """Django's own tests of a session backend, run against this one."""

        backend = SessionStore


@unittest.skipIf(django is None, "Django is not installed")
class Semantics(SimpleTestCase):
    def test_must_create_refuses_an_existing_key_so_concurrent_creators_never_share(self):
        a = SessionStore()
        a["who"] = "a"
        a.create()
        self.addCleanup(a.delete)
        b = SessionStore(a.session_key)
        b["who"] = "b"
        with self.assertRaises(CreateError):
            b.save(must_create=True)
        self.assertEqual(SessionStore(a.session_key).load(), {"who": "a"})

    def test_concurrent_creations_get_distinct_keys(self):
        keys = []
        barrier = threading.Barrier(8)

        def make():
            s = SessionStore()
            s["n"] = 1
            barrier.wait()
            for _ in range(50):
                s.create()
                keys.append(s.session_key)

        threads = [threading.Thread(target=make) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(set(keys)), 400)
        for k in keys:
            self.assertTrue(SessionStore().exists(k))
            SessionStore().delete(k)

    def test_a_save_after_a_delete_elsewhere_is_an_update_error(self):
        s = SessionStore()
        s["x"] = 1
        s.create()
        SessionStore(s.session_key).delete()
        s["x"] = 2
        with self.assertRaises(UpdateError):
            s.save()
        self.assertFalse(s.exists(s.session_key))

    def test_a_refused_session_write_answers_503_with_retry_after(self):
        from django.contrib.sessions.middleware import SessionMiddleware as Django
        from django.http import HttpResponse
        from django.test import RequestFactory

        def view(request):
            request.session["n"] = 1
            return HttpResponse("ok")
        st = gdjango.store()
        st.set_write_mode(gardenstate.WriteMode.REPLICA)  # a standby, a failover
        self.addCleanup(st.set_write_mode, gardenstate.WriteMode.WRITABLE)
        r = gdjango.SessionMiddleware(view)(RequestFactory().get("/"))
        self.assertEqual((r.status_code, r["Retry-After"]), (503, "1"))
        with self.assertRaises(gardenstate.ReadOnlyError):  # Django's own: a 500
            Django(view)(RequestFactory().get("/"))

    def test_the_entry_expires_with_the_session(self):
        s = SessionStore()
        s.set_expiry(300)
        s["x"] = 1
        s.create()
        self.addCleanup(s.delete)
        meta = gdjango.store().get_meta(b"session:" + s.session_key.encode())
        self.assertTrue(0 < meta.ttl_left_ms <= 300_000)
        self.assertEqual(json.loads(gdjango.store().get(b"session:" + s.session_key.encode())),
                         {"x": 1, "_session_expiry": 300})

    def test_the_session_format_is_read_and_written(self):
        """bindings/SESSION-FORMAT.md: new keys are 43 base64url characters; a session another
        runtime wrote (UTF-8 JSON, non-ASCII text as is) reads back as written, and is written
        back in UTF-8; an id outside the format is never loaded."""
        s = SessionStore()
        s["x"] = 1
        s.create()
        self.addCleanup(s.delete)
        self.assertRegex(s.session_key, r"^[A-Za-z0-9_-]{43}$")
        other = "AbC-_" + "x" * 38  # a Lua- or Flask-made id
        key = b"session:" + other.encode()
        gdjango.store().set(key, '{"name":"Zoë","n":1}'.encode("utf-8"))
        self.addCleanup(gdjango.store().delete, key)
        t = SessionStore(other)
        self.assertEqual(t["name"], "Zoë")
        t["n"] += 1
        t.save()
        self.assertEqual(gdjango.store().get(key).decode("utf-8"), '{"name":"Zoë","n":2}')
        bad = "not,an" + "x" * 20
        gdjango.store().set(b"session:" + bad.encode(), b'{"n":1}')
        self.addCleanup(gdjango.store().delete, b"session:" + bad.encode())
        self.assertEqual(SessionStore(bad).load(), {})

    def test_clear_expired_sweeps_the_segment(self):
        sweeps = gdjango.store().stats().sweeps
        SessionStore.clear_expired()
        self.assertGreater(gdjango.store().stats().sweeps, sweeps)

    def test_a_segment_made_with_other_options_is_accepted(self):
        # The CLI made it; settings give no options: the existing shape is taken.
        name = unique_name("djcli")
        Store.create(name, max_entries=100, max_value=4096).close()
        self.addCleanup(gardenstate.destroy, name)
        with self.settings(GARDENSTATE={"name": name}):
            old = gdjango._store
            gdjango._store = None
            try:
                s = SessionStore()
                s["a"] = 1
                s.create()
                self.assertEqual(gdjango.store().info().max_entries, 100)
                gdjango.store().close()
            finally:
                gdjango._store = old

    def test_bad_settings_are_improperly_configured(self):
        from django.core.exceptions import ImproperlyConfigured
        for bad in (None, {}, {"name": 3}, {"name": "x", "bogus": 1},
                    {"name": "x", "options": {"max_entries": 1, "nope": 2}}):
            with self.subTest(bad=bad), self.settings(GARDENSTATE=bad):
                old = gdjango._store
                gdjango._store = None
                try:
                    with self.assertRaises(ImproperlyConfigured):
                        SessionStore().exists("abc")
                finally:
                    gdjango._store = old


@unittest.skipIf(django is None, "Django is not installed")
class Gunicorn(GunicornServer, unittest.TestCase):
    """4 sync workers; a logged-in user's counter over 1,000 requests, one connection each
    (so they spread over the workers), with workers SIGKILLed before and after saving and
    an idle one killed from outside: every answered increment is kept, exactly once."""

    app = "django_app:application"

    def test_a_logged_in_counter_survives_killed_workers(self):
        self.start(preload=False)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def post(path):
            req = urllib.request.Request(self.url(path), data=b"", method="POST")
            with opener.open(req, timeout=60) as r:
                return json.loads(r.read())

        post("/login")
        expected = 0  # increments that were saved (answered or not)
        answered = 0
        pids = set()
        last_pid = None
        for i in range(1000):
            die = {300: "before", 600: "after"}.get(i)
            if die:
                with self.assertRaises((OSError, http.client.HTTPException)):
                    post("/incr?die=" + die)
                expected += die == "after"
                continue
            if i == 450:  # an idle worker killed from outside
                os.kill(last_pid, signal.SIGKILL)
            got = post("/incr")
            expected += 1
            answered += 1
            self.assertEqual(got["n"], expected, f"request {i}:\n{self.read_log()}")
            pids.add(got["pid"])
            last_pid = got["pid"]
        self.assertEqual(answered, 998)
        self.assertEqual(post("/show"), {"n": 999, "user": "ada"})
        self.assertGreaterEqual(len(pids), 2, "every request went to one worker")
        with Store.attach(self.name) as store:
            self.assertEqual(len([e for e in store.scan() if e.key.startswith(b"session:")]), 1)
            store.sweep()
            self.assertTrue(store.check().ok)


if __name__ == "__main__":
    unittest.main()

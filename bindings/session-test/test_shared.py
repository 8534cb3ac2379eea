#!/usr/bin/env python3
"""One visitor, four runtimes, one session (bindings/SESSION-FORMAT.md), over real servers.

bindings/session-test.sh starts nginx (which answers /lua/count itself), gunicorn with a
Flask app (/flask/count) and with a Django site (/django/count), and php-fpm (/php/count)
over one segment, and runs this with:
  GDS_URL      the nginx base URL
  GDS_CLI      the gardenstate CLI
  GDS_SEGMENT  the segment
Only the standard library: one http.cookiejar jar per visitor, as a browser keeps it.
"""
import http.cookiejar
import json
import os
import re
import subprocess
import unittest
import urllib.request

URL = os.environ["GDS_URL"].rstrip("/")
CLI = os.environ["GDS_CLI"]
SEGMENT = os.environ["GDS_SEGMENT"]
RUNTIMES = ("lua", "flask", "php", "django")
NEW_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 random bytes, base64url without padding


class Visitor:
    """A browser: one cookie jar, kept across every request."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def hit(self, runtime: str):
        with self.opener.open(f"{URL}/{runtime}/count", timeout=30) as r:
            n, who = r.read().decode().split()
            return int(n), who, r.headers.get_all("Set-Cookie") or []

    def cookies(self) -> dict:
        return {c.name: c.value for c in self.jar}


def stored(sid: str):
    r = subprocess.run([CLI, "get", SEGMENT, "session:" + sid], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


class SharedSession(unittest.TestCase):
    def round_robin(self, first: str, rounds: int = 10):
        v = Visitor()
        order = RUNTIMES[RUNTIMES.index(first):] + RUNTIMES[:RUNTIMES.index(first)]
        n, who, set_cookie = v.hit(order[0])
        self.assertEqual((n, who), (1, first))
        self.assertEqual(len(set_cookie), 1, set_cookie)
        self.assertTrue(set_cookie[0].startswith("gds_session="), set_cookie)
        self.assertRegex(set_cookie[0].lower(), r"path=/(;|$)")
        self.assertIn("httponly", set_cookie[0].lower())
        sid = v.cookies()["gds_session"]
        self.assertRegex(sid, NEW_ID, f"{first} made the id")
        expected = 1
        for i in range(1, rounds * len(order)):
            runtime = order[i % len(order)]
            n, who, _ = v.hit(runtime)
            expected += 1
            self.assertEqual((n, who), (expected, runtime), f"request {i + 1}, served by {runtime}")
            self.assertEqual(v.cookies(), {"gds_session": sid}, "one cookie, one id, all along")
        self.assertEqual(stored(sid), {"n": expected})

    def test_counter_started_by_lua(self):
        self.round_robin("lua")

    def test_counter_started_by_flask(self):
        self.round_robin("flask")

    def test_counter_started_by_php(self):
        self.round_robin("php")

    def test_counter_started_by_django(self):
        self.round_robin("django")

    def test_ids_made_before_the_format_are_kept(self):
        """The Lua helper made 64-hex-digit ids: a session under one lives on everywhere."""
        sid = os.urandom(32).hex()
        subprocess.run([CLI, "set", SEGMENT, "session:" + sid, '{"n":41}'], check=True, capture_output=True)
        v = Visitor()
        v.jar.set_cookie(http.cookiejar.Cookie(
            0, "gds_session", sid, None, False, URL.split("//")[1].split(":")[0], False, False, "/", True,
            False, None, False, None, None, {}))
        expected = 41
        for runtime in RUNTIMES * 2:
            n, who, _ = v.hit(runtime)
            expected += 1
            self.assertEqual((n, who), (expected, runtime))
            # Flask sends the cookie again for a modified session, with the same id.
            self.assertEqual(v.cookies(), {"gds_session": sid}, f"{runtime} kept the old id")
        self.assertEqual(stored(sid), {"n": expected})

    def test_unknown_or_malformed_id_is_never_adopted(self):
        for sid in ("A" * 43, "bad,id" * 4, "short"):
            for runtime in RUNTIMES:
                v = Visitor()
                v.jar.set_cookie(http.cookiejar.Cookie(
                    0, "gds_session", sid, None, False, URL.split("//")[1].split(":")[0], False, False, "/",
                    True, False, None, False, None, None, {}))
                n, who, set_cookie = v.hit(runtime)
                self.assertEqual(n, 1, f"{runtime} with id {sid!r}")
                new = v.cookies()["gds_session"]
                self.assertNotEqual(new, sid, f"{runtime} adopted the client's id {sid!r}")
                self.assertRegex(new, NEW_ID)
                self.assertIsNone(stored(sid))


if __name__ == "__main__":
    unittest.main(verbosity=2)

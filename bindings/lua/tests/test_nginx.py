#!/usr/bin/env python3
"""Drives a real nginx (4 workers, master process) whose locations use the Lua binding.

Run by bindings/lua/test.sh, which builds the library and the CLI and sets:
  GARDENSTATE_LIB   the libgardenstate.so to test
  GDS_CLI           the gardenstate CLI
  GDS_LUA_SEGMENT   the segment name to create (test.sh destroys it on exit)
  GDS_LUA_PREFIX    nginx's prefix directory (test.sh stops the nginx whose pid is there)
Only the standard library and the Python binding (bindings/python, which compiles its cffi
module on first use) are used.
No assertion depends on timing: waits poll with generous deadlines.
"""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "bindings/python"))
import gardenstate  # noqa: E402  (the Python binding: the other side of the cross checks)

SEGMENT = os.environ["GDS_LUA_SEGMENT"]
PREFIX = Path(os.environ["GDS_LUA_PREFIX"])
CLI = os.environ["GDS_CLI"]
MODDIR = os.environ.get("GDS_NGINX_MODULES", "/usr/lib/nginx/modules")
NGINX = os.environ.get("NGINX", "nginx")
MAX_VALUE = 256 * 1024
PORT = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, path, body=None, headers=None):
    """One request on a new connection: (status, json body, response headers)."""
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data), r
    finally:
        c.close()


def api(op, key=None, body=None, **q):
    from urllib.parse import quote
    qs = "op=" + op
    if key is not None:
        qs += "&key=" + quote(key, safe="")
    for k, v in q.items():
        qs += f"&{k}={v}"
    return request("POST" if body is not None else "GET", "/api?" + qs, body=body)[:2]


def master_pid() -> int:
    return int((PREFIX / "nginx.pid").read_text())


def worker_pids() -> set:
    mp = master_pid()
    kids = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == mp and fields[0] != "Z":
            kids.add(int(p.name))
    return kids


def wait_for(pred, what, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def cli(*args, check=True):
    return subprocess.run([CLI, *args], capture_output=True, text=True, check=check)


class NginxLua(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        global PORT
        cls.py = gardenstate.Store.create(SEGMENT, max_value=MAX_VALUE)
        PORT = free_port()
        if PREFIX.exists():
            shutil.rmtree(PREFIX)
        (PREFIX / "logs").mkdir(parents=True)
        conf = (HERE / "nginx.conf.in").read_text()
        for k, v in {"@MODDIR@": MODDIR, "@PREFIX@": str(PREFIX), "@PORT@": str(PORT),
                     "@LUALIB@": str(ROOT / "bindings/lua/lib"), "@TESTS@": str(HERE),
                     "@SEGMENT@": SEGMENT}.items():
            conf = conf.replace(k, v)
        (PREFIX / "nginx.conf").write_text(conf)
        argv = [NGINX, "-p", str(PREFIX), "-c", str(PREFIX / "nginx.conf"),
                "-e", str(PREFIX / "error.log")]
        subprocess.run(argv + ["-t", "-q"], check=True)
        subprocess.run(argv, check=True)
        wait_for(lambda: (PREFIX / "nginx.pid").exists() and len(worker_pids()) == 4,
                 "4 nginx workers")

        def up():
            try:
                return api("pid")[0] == 200
            except OSError:
                return False
        wait_for(up, "nginx to answer")

    @classmethod
    def tearDownClass(cls):
        cls.py.close()
        try:
            mp = master_pid()
            os.kill(mp, signal.SIGQUIT)
            wait_for(lambda: not Path(f"/proc/{mp}").exists(), "nginx to stop")
        except (OSError, ValueError):
            pass
        log = PREFIX / "error.log"
        if log.exists():
            errs = [l for l in log.read_text().splitlines() if "[error]" in l or "[alert]" in l]
            # The SIGKILLed worker is reported by the master as an alert; nothing else may be.
            errs = [l for l in errs if "exited on signal 9" not in l]
            # test_session_without_store provokes these, at most one per worker.
            nil_store = [l for l in errs if "gardenstate.session: no store (nil)" in l]
            errs = [l for l in errs if l not in nil_store]
            if len(nil_store) > 4:
                raise AssertionError("logged per request, not once per worker:\n" + "\n".join(nil_store))
            # A Lua error in a handler (a 500 the test may not look at) fails the run.
            if errs:
                raise AssertionError("nginx error.log:\n" + "\n".join(errs[-20:]))

    # --- every API call, through HTTP --------------------------------------------------

    def test_version_info_stats(self):
        st, b = api("version")
        self.assertEqual(st, 200)
        self.assertEqual(b["result"], gardenstate.version())
        st, b = api("info")
        self.assertEqual(st, 200)
        self.assertEqual(b["result"]["max_value"], MAX_VALUE)
        self.assertEqual(b["result"]["max_key"], 256)
        self.assertEqual(b["result"]["dataset_id"], str(self.py.info().dataset_id))
        api("set", "stats-k", body=b"v")
        api("get", "stats-k")
        st, b = api("stats")
        self.assertEqual(st, 200)
        self.assertGreaterEqual(b["result"]["live_entries"], 1)
        self.assertGreaterEqual(b["result"]["sets"], 1)
        self.assertGreaterEqual(b["result"]["hits"], 1)
        self.assertIn("clients", b["result"])  # calls in flight: a worker holds none when idle

    def test_set_get_delete(self):
        st, b = api("set", "k1", body=b"hello")
        self.assertEqual(st, 200)
        v1 = b["result"]
        st, b = api("get", "k1")
        self.assertEqual((st, b["result"]), (200, "hello"))
        self.assertEqual(b["meta"]["version"], v1)
        self.assertNotIn("ttl_left_ms", b["meta"])  # never expires
        st, b = api("delete", "k1")
        self.assertEqual((st, b["result"]), (200, True))
        st, b = api("get", "k1")
        self.assertEqual((st, b["code"]), (404, 1))
        st, b = api("delete", "k1")
        self.assertEqual((st, b["code"]), (404, 1))

    def test_add(self):
        st, _ = api("add", "add-k", body=b"first")
        self.assertEqual(st, 200)
        st, b = api("add", "add-k", body=b"second")
        self.assertEqual((st, b["code"]), (409, 10))
        self.assertTrue(b["err"])
        self.assertEqual(self.py.get(b"add-k"), b"first")

    def test_ttl_sliding_touch(self):
        st, _ = api("set", "ttl-k", body=b"x", ttl=60000, sliding=1)
        self.assertEqual(st, 200)
        st, b = api("get", "ttl-k")
        self.assertTrue(0 < b["meta"]["ttl_left_ms"] <= 60000)
        st, b = api("touch", "ttl-k", ttl=600000)
        self.assertEqual(st, 200)
        st, b = api("get", "ttl-k")
        self.assertGreater(b["meta"]["ttl_left_ms"], 60000)
        st, b = api("touch", "no-such-key", ttl=1000)
        self.assertEqual((st, b["code"]), (404, 1))
        # A 1 ms TTL is over after any wait: it must then read as absent.
        api("set", "short-k", body=b"x", ttl=1)
        time.sleep(0.05)
        st, b = api("get", "short-k")
        self.assertEqual((st, b["code"]), (404, 1))

    def test_lock(self):
        api("set", "lock-k", body=b"v0")
        st, b = api("lock", "lock-k")
        self.assertEqual(st, 200)
        self.assertEqual(b["result"], "v0")
        lid = b["lock_id"]
        self.assertRegex(lid, r"^\d+$")
        st, b = api("lock", "lock-k")
        self.assertEqual((st, b["code"]), (409, 12))
        self.assertEqual(b["holder"]["lock_id"], int(lid))
        st, b = api("unlock", "lock-k", lock_id=int(lid) + 1)
        self.assertEqual((st, b["code"]), (409, 13))
        st, b = api("set_and_unlock", "lock-k", body=b"v1", lock_id=lid)
        self.assertEqual(st, 200)
        self.assertEqual(self.py.get(b"lock-k"), b"v1")
        st, b = api("unlock", "lock-k", lock_id=lid)
        self.assertEqual((st, b["code"]), (409, 13))
        st, b = api("lock", "lock-k")
        st, b2 = api("unlock", "lock-k", lock_id=b["lock_id"])
        self.assertEqual((st, b2["result"]), (200, True))
        st, b = api("lock", "absent-lock-k")
        self.assertEqual((st, b["code"]), (404, 1))

    def test_lock_wait_polls_with_ngx_sleep_until_the_release(self):
        self.py.set(b"lw-k", b"v0")
        held = self.py.lock(b"lw-k")
        st, b = api("lock_wait", "lw-k", timeout=30)
        self.assertEqual((st, b["code"]), (409, 12))
        self.assertEqual(b["holder"]["lock_id"], held.lock_id)
        out = {}
        waiter = threading.Thread(target=lambda: out.update(r=api("lock_wait", "lw-k", timeout=60000)))
        waiter.start()
        # While it waits (ngx.sleep yields), the workers go on serving other requests.
        for _ in range(20):
            st, b = api("get", "lw-k")
            self.assertEqual((st, b["result"]), (200, "v0"))
        self.assertTrue(self.py.unlock(b"lw-k", held.lock_id))
        waiter.join(120)
        self.assertFalse(waiter.is_alive(), "the waiting request never returned")
        st, b = out["r"]
        self.assertEqual((st, b["result"], b["took_over"]), (200, "v0", False))
        self.assertNotEqual(int(b["lock_id"]), held.lock_id)
        st, _ = api("unlock", "lw-k", lock_id=b["lock_id"])
        self.assertEqual(st, 200)

    def test_large_value_grows_the_buffer(self):
        # Larger than the module's first 4 KiB buffer: gds_get answers BUFFER_TOO_SMALL first.
        for size in (4096, 4097, 100_000, MAX_VALUE):
            v = os.urandom(size).hex().encode()[:size]
            st, _ = api("set", f"big-{size}", body=v)
            self.assertEqual(st, 200, size)
            st, b = api("get", f"big-{size}")
            self.assertEqual((st, b["len"], b["md5"]), (200, size, hashlib.md5(v).hexdigest()))

    # --- error paths ---------------------------------------------------------------------

    def test_oversized_key_and_value(self):
        st, b = api("set", "k" * 257, body=b"v")
        self.assertEqual((st, b["code"]), (409, 23))
        self.assertIn("key", b["err"].lower())
        st, b = api("get", "k" * 257)
        self.assertEqual((st, b["code"]), (409, 23))
        st, b = api("set", "big-over", body=b"x" * (MAX_VALUE + 1))
        self.assertEqual((st, b["code"]), (409, 24))
        self.assertIn("value", b["err"].lower())

    def test_missing_segment(self):
        st, b = request("GET", f"/missing?name={SEGMENT}-absent")[:2]
        self.assertEqual((st, b["code"]), (409, 32))
        self.assertIn(f"{SEGMENT}-absent", b["err"])

    def test_lifecycle(self):
        name = SEGMENT + "-life"
        try:
            st, b = request("GET", f"/lifecycle?name={name}")[:2]
        finally:
            gardenstate.destroy(name)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["create"], True)
        self.assertEqual(b["create_again"], 31)
        self.assertEqual(b["bad_option"], 41)
        self.assertEqual(b["bad_name"], 37)
        self.assertEqual(b["open_max_value"], 1024)
        self.assertEqual(b["close_twice"], True)
        self.assertEqual(b["attach_get"], "v")
        self.assertEqual(b["attach_group_get"], "v")
        self.assertEqual(b["lazy_max_value"], 2048)
        self.assertIs(b["lazy_same"], True)
        self.assertIs(b["lazy_bad_option"], False)
        self.assertEqual(b["used_after_close"], False)
        self.assertEqual(b["not_a_string"], False)
        self.assertEqual(b["destroy"], True)
        self.assertEqual(b["destroy_again"], 1)
        self.assertEqual(b["attach_destroyed"], 32)

    def test_abi_mismatch_refused(self):
        st, b = request("GET", "/abi")[:2]
        self.assertEqual(st, 200)
        self.assertIs(b["ok"], False)
        self.assertIn("ABI version 1", b["err"])
        self.assertIn("ABI version 1", b["attach_err"])

    # --- other bindings see the same entries ---------------------------------------------

    def test_cross_binding(self):
        api("set", "from-nginx", body="nginx wrote this é".encode())
        self.assertEqual(self.py.get(b"from-nginx"), "nginx wrote this é".encode())
        self.assertEqual(cli("get", SEGMENT, "from-nginx").stdout.rstrip("\n"), "nginx wrote this é")
        self.py.set(b"from-python", b"python wrote this")
        st, b = api("get", "from-python")
        self.assertEqual((st, b["result"]), (200, "python wrote this"))
        cli("set", SEGMENT, "from-cli", "cli wrote this")
        st, b = api("get", "from-cli")
        self.assertEqual((st, b["result"]), (200, "cli wrote this"))

    # --- sessions ------------------------------------------------------------------------

    def session_hit(self, cookie=None):
        st, b, r = request("GET", "/session", headers={"Cookie": cookie} if cookie else {})
        return st, b, r

    def test_session_counter(self):
        st, b, r = self.session_hit()
        self.assertEqual((st, b["n"]), (200, 1))
        set_cookie = r.getheader("Set-Cookie")
        self.assertTrue(set_cookie.startswith("gds_session="), set_cookie)
        self.assertIn("HttpOnly", set_cookie)
        cookie = set_cookie.split(";")[0]
        sid = cookie.split("=", 1)[1]
        self.assertRegex(sid, r"^[A-Za-z0-9_-]{43}$")  # bindings/SESSION-FORMAT.md
        pids = {b["pid"]}
        for i in range(2, 201):
            st, b, r = self.session_hit(cookie)
            self.assertEqual((st, b["n"]), (200, i))
            self.assertIsNone(r.getheader("Set-Cookie"))  # known session: no new cookie
            pids.add(b["pid"])
        self.assertEqual(json.loads(self.py.get(("session:" + sid).encode())), {"n": 200})
        self.assertGreaterEqual(len(pids), 2, f"all 200 requests served by {pids}")
        # Sliding TTL: the entry expires (60 s default of the test app) unless used.
        meta = self.py.get_meta(("session:" + sid).encode())
        self.assertTrue(0 < meta.ttl_left_ms <= 60000)
        # An id of the Lua helper's earlier form (64 hex digits) is still accepted.
        old = os.urandom(32).hex()
        self.py.set(("session:" + old).encode(), b'{"n":41}')
        st, b, r = self.session_hit("gds_session=" + old)
        self.assertEqual((st, b["n"], b["id"]), (200, 42, old))
        self.assertIsNone(r.getheader("Set-Cookie"))
        # A forged or unknown id starts a new session; clearing deletes it.
        st, b, r = self.session_hit("gds_session=" + "0" * 64)
        self.assertEqual(b["n"], 1)
        self.assertNotEqual(r.getheader("Set-Cookie").split(";")[0], "gds_session=" + "0" * 64)
        st, b, r = request("GET", "/session/clear", headers={"Cookie": cookie})
        self.assertEqual(st, 200)
        self.assertIn("Max-Age=0", r.getheader("Set-Cookie"))
        self.assertIsNone(self.py.get(("session:" + sid).encode()))

    def test_a_read_only_segment_answers_session_writes_503_with_retry_after(self):
        """A standby (or a fenced primary): the worker sees the role change, and the session
        helper answers a refused save with 503 + Retry-After, not the app's 500."""
        st, b, r = self.session_hit()
        self.assertEqual((st, b["n"]), (200, 1))
        cookie = r.getheader("Set-Cookie").split(";")[0]
        st, before = api("replication_state")
        self.assertEqual((st, before["result"]["role_name"], before["result"]["writable"]),
                         (200, "primary", True))
        self.py.set_write_mode(gardenstate.WriteMode.REPLICA)
        try:
            st, now = api("replication_state")
            self.assertEqual((now["result"]["role_name"], now["result"]["role"]), ("standby", 1))
            self.assertFalse(now["result"]["writable"])
            self.assertGreater(now["result"]["changes"], before["result"]["changes"])
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
            try:
                c.request("GET", "/session", headers={"Cookie": cookie})
                r = c.getresponse()
                r.read()
                self.assertEqual((r.status, r.getheader("Retry-After")), (503, "1"))
            finally:
                c.close()
        finally:
            self.py.set_write_mode(gardenstate.WriteMode.WRITABLE)
        st, b, r = self.session_hit(cookie)
        self.assertEqual((st, b["n"]), (200, 2))

    def test_session_without_store(self):
        """session.start(nil) (an attach that failed in init_worker, old style): 503, not a Lua
        error per request ("attempt to index ... a nil value")."""
        for _ in range(20):
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
            try:
                c.request("GET", "/session/nil")
                self.assertEqual(c.getresponse().status, 503)
            finally:
                c.close()

    def test_z_worker_killed_mid_load(self):
        """Runs last (name order): SIGKILL a worker under load; nginx respawns it, the
        segment stays consistent and the survivors reclaim the dead worker's client slot."""
        before = worker_pids()
        self.assertEqual(len(before), 4)
        stop = threading.Event()
        # One session per load thread: concurrent saves of one session would lose updates
        # (last save wins, by design), and each thread's count must be exact.
        sessions = []
        for _ in range(4):
            st, b, r = self.session_hit()
            cookie = r.getheader("Set-Cookie").split(";")[0]
            sessions.append({"cookie": cookie, "sid": cookie.split("=", 1)[1],
                             "ok": 1, "attempts": 1})
        lock = threading.Lock()
        counts = {"ok": 0}

        def load(tag):
            sess = sessions[tag]
            i = 0
            while not stop.is_set():
                i += 1
                sess["attempts"] += 1
                try:
                    s, _b, _r = self.session_hit(sess["cookie"])
                    if s == 200:
                        sess["ok"] += 1
                        with lock:
                            counts["ok"] += 1
                    api("set", f"load-{tag}-{i % 50}", body=os.urandom(64 + i % 2000))
                except (OSError, http.client.HTTPException, ValueError):
                    pass

        threads = [threading.Thread(target=load, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: counts["ok"] >= 50, "load to start")
            victim = sorted(before)[0]
            os.kill(victim, signal.SIGKILL)
            after = wait_for(lambda: (lambda p: p if len(p) == 4 and victim not in p else None)(worker_pids()),
                             "nginx to respawn the killed worker")
            new = after - before
            self.assertEqual(len(new), 1, (before, after))
            base = counts["ok"]
            wait_for(lambda: counts["ok"] >= base + 100, "load to go on after the respawn")
        finally:
            stop.set()
            for t in threads:
                t.join()
        # The respawned worker attached in init_worker and serves requests.
        (newpid,) = new
        wait_for(lambda: api("pid")[1]["pid"] == newpid, "the new worker to serve a request")
        # Every session hit that got an answer counted; one cut off by the kill may have too.
        for sess in sessions:
            n = json.loads(self.py.get(("session:" + sess["sid"]).encode()))["n"]
            self.assertGreaterEqual(n, sess["ok"])
            self.assertLessEqual(n, sess["attempts"])
        # The dead worker's client slot is reclaimed by a sweep; then the check is clean.
        self.py.sweep()
        res = cli("check", SEGMENT, check=False)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)

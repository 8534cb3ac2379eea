#!/usr/bin/env python3
"""Runs the README's recipe as written: nginx workers as nobody, the segment made by root or
by an operator with `--group`, the tools run as root or as the operator.

The nginx.conf block of bindings/lua/README.md ("## nginx.conf") and the three sh blocks of
"## Running the workers as nobody" are taken from the README itself; only the names a test
must own are replaced: the segment `sessions`, the operator `alice`, the library path
/opt/gardenstate/bindings/lua/lib and the port 8080. Run by bindings/lua/test.sh as root
(it creates the group and the operator user; an operator user it created is removed after).
Environment: as tests/test_nginx.py (GARDENSTATE_LIB, GDS_CLI, GDS_LUA_SEGMENT, GDS_LUA_PREFIX).
No assertion depends on timing: waits poll with generous deadlines.
"""
import grp
import http.client
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import unittest
from pathlib import Path

from test_nginx import free_port, wait_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
README = (ROOT / "bindings/lua/README.md").read_text()
SEGMENT = os.environ["GDS_LUA_SEGMENT"] + "-recipe"
PREFIX = Path(os.environ["GDS_LUA_PREFIX"]) / "recipe"
CLI = Path(os.environ["GDS_CLI"])
MODDIR = os.environ.get("GDS_NGINX_MODULES", "/usr/lib/nginx/modules")
NGINX = os.environ.get("NGINX", "nginx")
OPERATOR = "gds-recipe-op"
SHM = Path(os.environ.get("GARDENSTATE_SHM_DIR", "/dev/shm"))
# The CLI is found on PATH, as the README's commands expect.
PATH = f"{CLI.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
SID = re.compile(r"^[A-Za-z0-9_-]{43}$")


def section(title: str) -> str:
    start = README.index("\n## " + title + "\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else len(README)]


def blocks(text: str, lang: str) -> list:
    return re.findall(r"```" + lang + r"\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list:
    """The command lines of an sh block (comments after # dropped), names replaced."""
    out = []
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(re.sub(r"\bsessions\b", SEGMENT, re.sub(r"\balice\b", OPERATOR, line)))
    return out


SETUP, CREATE, TOOLS = (commands(b) for b in blocks(section("Running the workers as nobody"), "sh"))
CONF = blocks(section("nginx.conf"), "nginx")[0]


def run(line: str, user: str = "root", check: bool = True) -> subprocess.CompletedProcess:
    """One README command line through sh, as root or (runuser) as `user`."""
    argv = ["sh", "-c", line]
    if user != "root":
        argv = ["runuser", "-u", user, "--", "env", f"PATH={PATH}"] + argv
    r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PATH": PATH})
    if check and r.returncode != 0:
        raise AssertionError(f"as {user}: {line}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


class Recipe(unittest.TestCase):
    port = 0
    created_user = False

    @classmethod
    def setUpClass(cls):
        try:
            pwd.getpwnam(OPERATOR)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            OPERATOR], check=True)
            cls.created_user = True
        for line in SETUP:
            run(line)
        cls.port = free_port()
        if PREFIX.exists():
            shutil.rmtree(PREFIX)
        PREFIX.mkdir(parents=True)
        (PREFIX / "logs").mkdir()
        (PREFIX / "modules").symlink_to(MODDIR)
        conf = (CONF.replace("/opt/gardenstate/bindings/lua/lib", str(ROOT / "bindings/lua/lib"))
                .replace("listen 8080;", f"listen 127.0.0.1:{cls.port};")
                .replace('"sessions"', f'"{SEGMENT}"'))
        (PREFIX / "nginx.conf").write_text(conf)
        cls.nginx = [NGINX, "-p", str(PREFIX), "-c", str(PREFIX / "nginx.conf"), "-e", str(PREFIX / "error.log"),
                     "-g", f"pid {PREFIX}/nginx.pid; error_log {PREFIX}/error.log notice;"]

    @classmethod
    def tearDownClass(cls):
        try:
            mp = int((PREFIX / "nginx.pid").read_text())
            os.kill(mp, signal.SIGQUIT)
            wait_for(lambda: not Path(f"/proc/{mp}").exists(), "nginx to stop")
        except (OSError, ValueError):
            pass
        subprocess.run([str(CLI), "destroy", "--yes", "--force", SEGMENT], capture_output=True)
        if cls.created_user:
            subprocess.run(["userdel", OPERATOR], capture_output=True)

    def hit(self, cookie=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("GET", "/count", headers={"Cookie": cookie} if cookie else {})
            r = c.getresponse()
            return r.status, r.read().decode().strip(), r.getheader("Set-Cookie")
        finally:
            c.close()

    def workers(self):
        mp = int((PREFIX / "nginx.pid").read_text())
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    st = (p / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(st[1]) == mp and st[0] != "Z":
                        out.append(int(p.name))
                except OSError:
                    pass
        return out

    def log_lines(self, needle):
        return [l for l in (PREFIX / "error.log").read_text().splitlines() if needle in l]

    def count_to(self, cookie, upto):
        for i in range(2, upto + 1):
            self.assertEqual(self.hit(cookie)[:2], (200, str(i)))

    def test_recipe(self):
        nworkers = len(os.sched_getaffinity(0))  # worker_processes auto
        subprocess.run(self.nginx + ["-t", "-q"], check=True)
        subprocess.run(self.nginx, check=True)
        # A worker is forked as root and then drops to nobody: wait for all of them to have
        # (one that never does fails the wait).
        nobody = pwd.getpwnam("nobody").pw_uid

        def workers_as_nobody():
            try:
                return [Path(f"/proc/{p}").stat().st_uid for p in self.workers()] == [nobody] * nworkers
            except OSError:
                return False

        wait_for(lambda: (PREFIX / "nginx.pid").exists() and workers_as_nobody(),
                 f"{nworkers} nginx workers running as nobody")

        # 1. Workers started before the segment exists: 503, one log line per worker at most
        # (init_worker's attempt and a retry at most once a second), never a Lua error.
        for _ in range(20):
            self.assertEqual(self.hit()[0], 503)
        unavailable = self.log_lines(f'segment "{SEGMENT}" unavailable')
        self.assertTrue(1 <= len(unavailable) <= nworkers, unavailable)
        self.assertIn("code 32", unavailable[0])

        # 2. root creates it as the README says; the workers pick it up on a later request.
        for line in CREATE:
            run(line)
        st = (SHM / SEGMENT).stat()
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (0, 0o660))
        self.assertEqual(st.st_gid, grp.getgrnam("gardenstate").gr_gid)
        status, body, set_cookie = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(self.hit()),
                                            "a worker to attach the new segment")
        self.assertEqual(body, "1")
        cookie = set_cookie.split(";")[0]
        name, sid = cookie.split("=", 1)
        self.assertEqual(name, "gds_session")
        self.assertRegex(sid, SID)
        self.count_to(cookie, 5)
        self.assertTrue(self.log_lines(f'segment "{SEGMENT}" attached after'))

        # 3. The tools, as root and as the operator, exactly as written.
        for user in ("root", OPERATOR):
            for line in TOOLS:
                run(line, user)
        got = run(f"sg gardenstate -c 'gardenstate get {SEGMENT} session:{sid}'").stdout.strip()
        self.assertEqual(got, '{"n":5}')

        # 4. Made again by the operator, picked up by new workers after a reload; root's
        # tools need sg for the operator's segment (and are refused without it).
        run(f"sg gardenstate -c 'gardenstate destroy --yes --force {SEGMENT}'")
        for line in CREATE:
            run(line, OPERATOR)
        st = (SHM / SEGMENT).stat()
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (pwd.getpwnam(OPERATOR).pw_uid, 0o660))
        before = set(self.workers())
        subprocess.run(self.nginx + ["-s", "reload"], check=True)
        wait_for(lambda: (lambda w: len(w) == nworkers and not (w & before))(set(self.workers())),
                 "new workers after the reload")
        status, body, set_cookie = self.hit(cookie)
        self.assertEqual((status, body), (200, "1"))  # the old session went with the old segment
        cookie = set_cookie.split(";")[0]
        self.count_to(cookie, 3)
        for user in ("root", OPERATOR):
            for line in TOOLS:
                run(line, user)
        refused = run(f"gardenstate stats {SEGMENT}", check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("owned by uid", refused.stderr + refused.stdout)

        errors = [l for l in (PREFIX / "error.log").read_text().splitlines()
                  if ("[error]" in l or "[alert]" in l or "[crit]" in l)
                  and f'segment "{SEGMENT}" unavailable' not in l]
        self.assertEqual(errors, [])
        self.assertEqual(self.log_lines("attempt to index"), [])


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("test_recipe.py: needs root (groupadd, useradd, nginx's user directive)", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)

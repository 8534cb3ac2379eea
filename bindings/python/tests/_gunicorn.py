"""A gunicorn server for the end-to-end tests (a mixin of unittest.TestCase): 4 sync workers
on a free loopback port, serving a test application with the segment $GDS_TEST_SEGMENT."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from _support import subprocess_env, unique_name
import gardenstate

TESTS = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornServer:
    app = None  # "module:callable" in tests/, set by the test class

    def start(self, preload, workers=4, **env):
        self.name = unique_name("gu")
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.addCleanup(self.cleanup_server)
        for attempt in range(5):
            self.port = free_port()
            args = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "sync",
                    "-b", f"127.0.0.1:{self.port}", "--chdir", TESTS,
                    "--timeout", "120", "--graceful-timeout", "10", "--log-level", "warning"]
            if preload:
                args.append("--preload")
            self.server = subprocess.Popen(
                args + [self.app], stdout=self.log, stderr=subprocess.STDOUT,
                env=subprocess_env(GDS_TEST_SEGMENT=self.name, **env), start_new_session=True)
            if self.wait_ready():
                return
            self.stop()  # the port was taken meanwhile, say: try another
        self.fail("gunicorn did not start:\n" + self.read_log())

    def wait_ready(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=30) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.1)
        return False

    def read_log(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        if self.server.poll() is None:
            self.server.terminate()  # gunicorn's master stops its workers on SIGTERM
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=60)

    def cleanup_server(self):
        self.stop()
        gardenstate.destroy(self.name)
        self.log.close()
        os.unlink(self.log.name)

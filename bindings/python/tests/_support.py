"""Shared by the tests: puts the package on sys.path, keeps segments in a private directory.

Segments of the tests live in a fresh directory under /dev/shm (GARDENSTATE_SHM_DIR), created
by the first test process and inherited by its children (forked, spawned, gunicorn), and
removed when that first process exits, so a failed run leaves nothing in /dev/shm itself.
"""

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

PY_ROOT = Path(__file__).resolve().parents[1]  # bindings/python
REPO = PY_ROOT.parents[1]
HEADER = REPO / "include" / "gardenstate.h"

# test.sh runs the suite against the package pip installed (GDS_PY_INSTALLED=1), never the
# checkout's sources; run by hand from a checkout, the tests use bindings/python/gardenstate.
INSTALLED = os.environ.get("GDS_PY_INSTALLED") == "1"
if not INSTALLED and str(PY_ROOT) not in sys.path:
    sys.path.insert(0, str(PY_ROOT))

if "GARDENSTATE_SHM_DIR" not in os.environ:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    _dir = tempfile.mkdtemp(prefix="gds-pytest-", dir=base)
    os.environ["GARDENSTATE_SHM_DIR"] = _dir
    _owner = os.getpid()

    def _cleanup(d=_dir, owner=_owner):
        if os.getpid() == owner:
            shutil.rmtree(d, ignore_errors=True)

    atexit.register(_cleanup)

# test.sh sets this: there, Flask and gunicorn were installed on purpose, so their absence
# is a failure, not a reason to skip.
REQUIRE_FLASK = os.environ.get("GDS_PY_REQUIRE_FLASK") == "1"


def unique_name(prefix="t"):
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def subprocess_env(**extra):
    env = dict(os.environ)
    if not INSTALLED:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PY_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
    env.update(extra)
    return env

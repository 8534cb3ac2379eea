"""The tiny application of the Flask tests (imported by gunicorn's workers, or in-process).

It changes nothing in how it uses `session`: only the session interface is gardenstate's.
The segment is named by $GDS_TEST_SEGMENT and opened at import time, so with gunicorn
--preload the master opens it and the workers inherit the handle through fork().
"""

import os
from datetime import timedelta

import _support  # noqa: F401  (sys.path)
from flask import Flask, jsonify, session

from gardenstate import Store
from gardenstate.flask import GardenstateSessionInterface


def create_app(store, lifetime=timedelta(minutes=10), **kwargs):
    app = Flask(__name__)
    app.permanent_session_lifetime = lifetime
    app.session_interface = GardenstateSessionInterface(store, **kwargs)

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/incr")
    def incr():
        session["n"] = session.get("n", 0) + 1
        session.setdefault("pids", [])
        if os.getpid() not in session["pids"]:
            session["pids"] = session["pids"] + [os.getpid()]
        return jsonify(n=session["n"], pid=os.getpid())

    @app.get("/show")
    def show():
        return jsonify(n=session.get("n"), pids=session.get("pids", []), pid=os.getpid())

    @app.post("/clear")
    def clear():
        session.clear()
        return jsonify(pid=os.getpid())

    return app


if os.environ.get("GDS_TEST_SEGMENT"):
    app = create_app(Store.open(os.environ["GDS_TEST_SEGMENT"], capacity_bytes=8 << 20,
                                max_entries=1024),
                     locking=os.environ.get("GDS_TEST_LOCKING") == "1")

"""The Flask side of bindings/session-test.sh: one counter in the shared session.

Served by gunicorn behind the test's nginx at /flask/; GDS_SEGMENT names the segment (made by
the script). The cookie name is the session format's (SESSION-FORMAT.md, section 2).
"""
import os

from flask import Flask, session

from gardenstate import Store
from gardenstate.flask import init_app

app = Flask(__name__)
app.config["SESSION_COOKIE_NAME"] = "gds_session"
init_app(app, Store.attach(os.environ["GDS_SEGMENT"]))


@app.route("/flask/count")
def count():
    session["n"] = session.get("n", 0) + 1
    return f"{session['n']} flask\n"

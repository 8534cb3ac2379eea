"""A Flask session provider storing sessions in a gardenstate segment.

    from flask import Flask
    from gardenstate import Store
    from gardenstate.flask import GardenstateSessionInterface

    app = Flask(__name__)
    app.session_interface = GardenstateSessionInterface(Store.open("sessions"))

Nothing else in the application changes: `session` behaves as with Flask's default cookie
sessions, but the cookie holds only a random session id (256 bits, secrets.token_urlsafe)
and the data lives in shared memory, so every worker process of the host sees it.

Sessions follow bindings/SESSION-FORMAT.md, as the Lua, Django and PHP helpers do: to serve a
visitor from several runtimes, set app.config["SESSION_COOKIE_NAME"] = "gds_session" (Flask's
default name is "session", kept so existing sessions survive an upgrade).

- The entry expires `app.permanent_session_lifetime` after the last access (sliding: every
  read of the session pushes the deadline out, in the segment, without a write).
- A session emptied (session.clear()) is deleted from the segment and its cookie removed.
- An unknown, expired or malformed session id starts a new session with a new id (the id a
  client sends is never adopted, so an attacker cannot fix a victim's id).
- Values are serialized with json by default; pass serializer= any object with
  dumps(dict) -> bytes|str and loads(bytes) -> dict (pickle is possible but then anyone who
  can write the segment can run code in your workers).
- Concurrent requests of the same session: by default the last one to save wins, as with
  Flask's cookie sessions. With locking=True, a request holds its session's lock (Store.lock)
  from open_session to save_session, so concurrent requests of one session run one after
  the other, each seeing the previous one's writes (PHP's and ASP.NET's semantics). A
  waiting request polls the lock (sleeping, so it holds neither the GIL nor a core) until
  it gets it: a lock whose holder died (a killed worker) is taken over at once, one held
  longer than `lock_takeover_after` seconds (a stuck request; default 30, keep it below the
  server's worker timeout) is taken over then, and the stuck request's changes are lost
  (logged), as with ASP.NET's executionTimeout.
- A session write the segment refuses (ReadOnlyError: the host is a standby, its primary is
  fenced, a failover is in progress) answers 503 with `Retry-After: 1` instead of the
  view's response (never a 500); requests that only read their session are served as usual
  (with locking=True they read it without the lock, which a read-only segment cannot take).

Flask is imported here only: `import gardenstate` works without it.
"""

from __future__ import annotations

from typing import Any, Optional

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from ._session import (KEY_PREFIX, READ_ONLY_BODY, READ_ONLY_HEADERS, READ_ONLY_STATUS,
                       JSONSerializer, new_sid, valid_sid)
from .errors import LockedError, LockMismatchError, ReadOnlyError
from .store import Store


class GardenstateSession(CallbackDict, SessionMixin):
    """The session object: a dict that knows its id and whether it changed."""

    def __init__(self, initial: Optional[dict] = None, sid: str = "", new: bool = False):
        def on_update(self):
            self.modified = True
            self.accessed = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.new = new
        self.modified = False
        self.accessed = False
        self.lock_id = 0  # locking mode: the lock this request holds, 0 if none


class GardenstateSessionInterface(SessionInterface):
    """Stores Flask sessions in a gardenstate Store under `key_prefix + session id`.

    store: an open gardenstate.Store (open it at import time: with gunicorn --preload the
    master opens it and the forked workers inherit it, which the C ABI supports).
    """

    session_class = GardenstateSession

    def __init__(self, store: Store, *, key_prefix: str = KEY_PREFIX, serializer: Any = None,
                 sid_bytes: int = 32, locking: bool = False,
                 lock_takeover_after: float = 30.0) -> None:
        if not isinstance(store, Store):
            raise TypeError(f"store must be a gardenstate.Store, not {type(store).__name__}")
        self.store = store
        self.key_prefix = key_prefix
        self.serializer = serializer if serializer is not None else JSONSerializer()
        self.sid_bytes = sid_bytes
        self.locking = locking
        self.lock_takeover_after = lock_takeover_after

    def _key(self, sid: str) -> bytes:
        return (self.key_prefix + sid).encode("utf-8")

    def _new_sid(self) -> str:
        return new_sid(self.sid_bytes)

    def open_session(self, app, request) -> GardenstateSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if valid_sid(sid):
            lock_id = 0
            if self.locking:
                try:
                    locked = self._lock(self._key(sid))
                    raw, lock_id = (None, 0) if locked is None else (locked.value, locked.lock_id)
                except ReadOnlyError:  # no lock on a read-only segment: read; a write gets 503
                    raw = self.store.get(self._key(sid))
            else:
                raw = self.store.get(self._key(sid))  # a sliding read extends the deadline
            if raw is not None:
                try:
                    data = self.serializer.loads(raw)
                except Exception:
                    app.logger.warning("gardenstate: session %s... does not deserialize; "
                                       "starting a new one", sid[:8])
                    data = None
                if isinstance(data, dict):
                    session = self.session_class(data, sid=sid)
                    session.lock_id = lock_id
                    return session
                if lock_id:
                    self.store.unlock(self._key(sid), lock_id)
        return self.session_class(sid=self._new_sid(), new=True)

    def _lock(self, key: bytes):
        """Takes the session lock of `key`, waiting for its holder; None if `key` is absent.
        The wait ends: the holder saves (the release wakes this request at once: no
        polling), dies, or outlives lock_takeover_after (taken over at that age)."""
        while True:
            try:
                return self.store.lock(key, takeover_after=self.lock_takeover_after,
                                       timeout=self.lock_takeover_after)
            except LockedError:
                pass  # another request took it first and holds it now: wait for that one

    def save_session(self, app, session: GardenstateSession, response) -> None:
        try:
            self._save(app, session, response)
        except ReadOnlyError:
            app.logger.warning("gardenstate: session %s...: the segment takes no writes "
                               "(%s): answering 503", session.sid[:8],
                               self.store.replication_state().role.name)
            response.status_code = READ_ONLY_STATUS
            response.headers.update(READ_ONLY_HEADERS)
            response.set_data(READ_ONLY_BODY)
            response.mimetype = "text/plain"

    def _save(self, app, session: GardenstateSession, response) -> None:
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        secure = self.get_cookie_secure(app)
        samesite = self.get_cookie_samesite(app)
        httponly = self.get_cookie_httponly(app)

        if session.accessed:
            response.vary.add("Cookie")

        if not session:
            if session.modified:  # cleared: forget it everywhere
                if not session.new:
                    self.store.delete(self._key(session.sid))  # drops any lock too
                response.delete_cookie(name, domain=domain, path=path, secure=secure,
                                       samesite=samesite, httponly=httponly)
                response.vary.add("Cookie")
            elif session.lock_id:
                self._unlock(app, session)
            return

        if session.modified or session.new:
            raw = self.serializer.dumps(dict(session))
            if isinstance(raw, str):
                raw = raw.encode("utf-8")
            lifetime = app.permanent_session_lifetime
            key = self._key(session.sid)
            if session.lock_id:
                try:
                    # None: deleted (or expired) meanwhile, by a request that did not take
                    # the lock: nothing is written, the session is not resurrected.
                    self.store.set_and_unlock(key, session.lock_id, raw, sliding=lifetime)
                except LockMismatchError:
                    app.logger.warning("gardenstate: session %s...: the lock was taken over "
                                       "(held over %s s): this request's changes are lost",
                                       session.sid[:8], self.lock_takeover_after)
            else:
                self.store.set(key, raw, sliding=lifetime)
        elif session.lock_id:
            self._unlock(app, session)

        if session.new or self.should_set_cookie(app, session):
            response.set_cookie(name, session.sid, expires=self.get_expiration_time(app, session),
                                httponly=httponly, domain=domain, path=path, secure=secure,
                                samesite=samesite)
            response.vary.add("Cookie")

    def _unlock(self, app, session: GardenstateSession) -> None:
        try:
            self.store.unlock(self._key(session.sid), session.lock_id)
        except LockMismatchError:
            app.logger.warning("gardenstate: session %s...: the lock was taken over (held over "
                               "%s s)", session.sid[:8], self.lock_takeover_after)


def init_app(app, store: Store, **kwargs: Any) -> GardenstateSessionInterface:
    """Installs a GardenstateSessionInterface on `app` and returns it."""
    interface = GardenstateSessionInterface(store, **kwargs)
    app.session_interface = interface
    return interface

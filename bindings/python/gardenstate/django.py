"""A Django session engine storing sessions in a gardenstate segment.

    # settings.py
    SESSION_ENGINE = "gardenstate.django"
    GARDENSTATE = {
        "name": "sessions",                 # the segment (required)
        "options": {"capacity_bytes": 256 << 20, "max_entries": 100_000},  # optional
        "group": False,                     # optional: attach/create a 0660 segment
        "key_prefix": "session:",           # optional
    }

Every worker process opens the segment once, on its first session (Store.open: created with
"options" if it does not exist; an existing segment is checked only against the options
given, see Store.open), and keeps it; a Store opened before a fork is inherited.

Semantics, as Django's cache and db backends:

- save(must_create=True) creates the entry only if the key is absent (Store.add): a
  concurrent creator of the same key gets CreateError, so create() picks another key; two
  requests never share a new session.
- save() of an existing session replaces its value, and raises UpdateError if the session
  was deleted meanwhile (a logout in another request is never undone: compare_and_set on
  the version read just before, retried if another save came in between, last writer wins).
- Each save sets the entry to expire get_expiry_age() seconds later (SESSION_COOKIE_AGE or
  set_expiry()), so expired sessions vanish from the segment by themselves; clear_expired()
  (the clearsessions command) sweeps the segment to reclaim their memory at once.
- cycle_key(), flush() and the async methods (aload, asave, ...) are those of SessionBase
  over these; the async ones call the store directly (each call takes microseconds and
  never waits for a lock).
- Values are JSON, unsigned: the segment is readable only by the site's own user (mode
  0600, or its group). With Django's default SESSION_SERIALIZER (JSONSerializer) the value
  is the session format's JSON (UTF-8; Django's own reads bytes as Latin-1, which garbled the
  non-ASCII text other runtimes wrote); another SESSION_SERIALIZER is used as configured.
- Sessions follow bindings/SESSION-FORMAT.md, as the Lua, Flask and PHP helpers do: new
  keys are 32 random bytes in base64url (43 characters), and a key outside the format (16 to
  128 characters of [A-Za-z0-9_-]) is never loaded. Keys Django made before (32 characters
  of [a-z0-9]) are inside it. To serve a visitor from several runtimes, set
  SESSION_COOKIE_NAME = "gds_session" (Django's default, "sessionid", is kept so existing
  sessions survive an upgrade).
- A session write the segment refuses (ReadOnlyError: the host is a standby, its primary is
  fenced, a failover is in progress) answers 503 with `Retry-After: 1` (never a 500) when
  MIDDLEWARE lists "gardenstate.django.SessionMiddleware" in place of Django's
  "django.contrib.sessions.middleware.SessionMiddleware" (a subclass: nothing else changes).
"""

from __future__ import annotations

import threading
from typing import Optional

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.core.signing import JSONSerializer as DjangoJSONSerializer
from django.http import HttpResponse

from ._session import (KEY_PREFIX, READ_ONLY_BODY, READ_ONLY_HEADERS, READ_ONLY_STATUS,
                       JSONSerializer, new_sid, valid_sid)
from .errors import ExistsError, ReadOnlyError, VersionMismatchError
from .store import Store

_lock = threading.Lock()
_store: Optional[Store] = None
_config: Optional[dict] = None

_KNOWN = {"name", "options", "group", "key_prefix"}


def _settings() -> dict:
    conf = getattr(settings, "GARDENSTATE", None)
    if not isinstance(conf, dict) or not isinstance(conf.get("name"), str):
        raise ImproperlyConfigured(
            'SESSION_ENGINE "gardenstate.django" needs settings.GARDENSTATE = {"name": '
            '"<segment name>", "options": {...creation options of Store.open...}}')
    unknown = set(conf) - _KNOWN
    if unknown:
        raise ImproperlyConfigured(
            f"settings.GARDENSTATE has unknown keys {sorted(unknown)}; known: {sorted(_KNOWN)}")
    options = conf.get("options") or {}
    if not isinstance(options, dict):
        raise ImproperlyConfigured('settings.GARDENSTATE["options"] must be a dict of '
                                   "Store.open options (capacity_bytes=, max_entries=, ...)")
    return conf


def store() -> Store:
    """This process's Store of settings.GARDENSTATE, opened on first use."""
    global _store, _config
    s = _store
    if s is not None and not s.closed:
        return s
    with _lock:
        if _store is None or _store.closed:
            conf = _settings()
            try:
                _store = Store.open(conf["name"], group=bool(conf.get("group", False)),
                                    **(conf.get("options") or {}))
            except TypeError as e:  # an unknown option name
                raise ImproperlyConfigured(f'settings.GARDENSTATE["options"]: {e}') from e
            _config = conf
        return _store


def _prefix() -> str:
    store()
    assert _config is not None
    return _config.get("key_prefix", KEY_PREFIX)


class SessionStore(SessionBase):
    """Django's session store over a gardenstate segment (SESSION_ENGINE =
    "gardenstate.django")."""

    def _key(self, session_key: str) -> bytes:
        return (_prefix() + session_key).encode("utf-8")

    def _codec(self):
        """The value's codec: the format's UTF-8 JSON for Django's default serializer."""
        if self.serializer is DjangoJSONSerializer:
            return JSONSerializer()
        return self.serializer()

    def _get_new_session_key(self) -> str:
        while True:
            key = new_sid()
            if not self.exists(key):
                return key

    # --- the backend interface ---

    def load(self) -> dict:
        raw = None
        # A key outside the format is not looked up: a new session (Django keeps the attribute
        # rule of its own, 8 characters or more, which its tests check).
        if valid_sid(self.session_key):
            raw = store().get(self._key(self.session_key))
        if raw is not None:
            try:
                data = self._codec().loads(raw)
            except Exception:
                data = None  # unreadable: a new session, as the cache backend does
            if isinstance(data, dict):
                return data
        self._session_key = None
        return {}

    def exists(self, session_key: Optional[str]) -> bool:
        return bool(session_key) and self._key(session_key) in store()

    def create(self) -> None:
        for _ in range(10000):
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue  # a concurrent request created this key first
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key.")

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        s = store()
        key = self._key(self.session_key)
        data = self._get_session(no_load=must_create)
        raw = self._codec().dumps(data)
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        age = self.get_expiry_age()
        if age <= 0:
            # Already expired (set_expiry in the past): the session is gone, as in the
            # cache backends; the outcomes of must_create and of an update stay the same.
            existed = s.delete(key)
            if must_create and existed:
                raise CreateError
            if not must_create and not existed:
                raise UpdateError
            return
        if must_create:
            try:
                s.add(key, raw, ttl=age)
            except ExistsError:
                raise CreateError from None
            return
        while True:
            meta = s.get_meta(key)
            if meta is None:
                raise UpdateError  # deleted (logged out) meanwhile: never resurrected
            try:
                if s.compare_and_set(key, meta.version, raw, ttl=age) is None:
                    raise UpdateError
                return
            except VersionMismatchError:
                continue  # another request saved in between: the last save wins

    def delete(self, session_key: Optional[str] = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        store().delete(self._key(session_key))

    @classmethod
    def clear_expired(cls) -> None:
        """Expired sessions are already invisible; this reclaims their memory now."""
        store().sweep()

    # --- async: the same calls (microseconds, never waiting), without a thread hop ---

    async def aload(self) -> dict:
        return self.load()

    async def aexists(self, session_key: Optional[str]) -> bool:
        return self.exists(session_key)

    async def acreate(self) -> None:
        self.create()

    async def asave(self, must_create: bool = False) -> None:
        self.save(must_create)

    async def adelete(self, session_key: Optional[str] = None) -> None:
        self.delete(session_key)

    @classmethod
    async def aclear_expired(cls) -> None:
        cls.clear_expired()


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's SessionMiddleware, except that a session write the segment refuses
    (ReadOnlyError) answers 503 with `Retry-After: 1` instead of a 500."""

    def process_response(self, request, response):
        try:
            return super().process_response(request, response)
        except ReadOnlyError:
            return HttpResponse(READ_ONLY_BODY, status=READ_ONLY_STATUS, headers=READ_ONLY_HEADERS,
                                content_type="text/plain")


__all__ = ["SessionMiddleware", "SessionStore", "store"]


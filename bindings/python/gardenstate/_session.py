"""The session format every gardenstate session helper shares (bindings/SESSION-FORMAT.md):
the id rule, how a new id is made, and the JSON encoding of the value. Used by the Flask
interface and the Django engine, so both read and write what the Lua and PHP helpers do."""

from __future__ import annotations

import json
import re
import secrets

#: Ids a client may present: 16 to 128 characters of base64url (section 1 of the format).
SID_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{16,128}\Z")
#: The format's cookie name (section 2); each framework keeps its own default unless told.
COOKIE_NAME = "gds_session"
#: The key of session ID is KEY_PREFIX + ID (section 3).
KEY_PREFIX = "session:"


def valid_sid(sid: object) -> bool:
    """Whether `sid` is an id of the format (a str of 16..128 base64url characters)."""
    return isinstance(sid, str) and SID_PATTERN.match(sid) is not None


def new_sid(nbytes: int = 32) -> str:
    """A new id: `nbytes` (default 32) from the OS CSPRNG, base64url without padding."""
    return secrets.token_urlsafe(nbytes)


class JSONSerializer:
    """The format's value (section 4): one JSON object, compact, UTF-8 (not \\u-escaped)."""

    def dumps(self, data: dict) -> bytes:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def loads(self, raw: bytes) -> dict:
        return json.loads(raw.decode("utf-8"))


#: The answer to a request whose session write the segment refused (ReadOnlyError: a standby,
#: a fenced primary, a failover in progress): 503 with Retry-After, not a 500. Writes usually
#: come back within a second (a failover, a renewed lease); a load balancer retries or moves
#: the client to the new primary.
READ_ONLY_STATUS = 503
READ_ONLY_HEADERS = {"Retry-After": "1"}
READ_ONLY_BODY = b"session store is read-only (failover in progress): retry\n"

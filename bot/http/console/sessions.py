"""Console sessions: a key signs in once, the browser keeps a cookie, the server keeps its hash.

A session id is 256 random bits sent only as an HttpOnly, SameSite=Strict cookie (Secure when
the public URL is https); the store keeps its SHA-256 with the key's name, the key's hash and an
expiry, in the settings table under the scope `console-session`. A session ends when it expires,
when it signs out, and at once when its key is revoked (or revoked and made again under the same
name: the key's hash no longer matches).

Every form and every state-changing request of a session carries its CSRF token, an HMAC of the
session id (so it is never stored and reveals nothing of the id). Before signing in, the sign-in
form is protected the same way by a short-lived cookie of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from bot.http.keys import SESSION_SCOPE, ApiKey, KeyStore, hash_key

SESSION_COOKIE = "comfycord_session"
SIGN_IN_COOKIE = "comfycord_sign_in"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session (or of a sign-in form), derived from its secret id."""
    return hmac.new(session_id.encode(), b"comfycord csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_id: str, given: str | None) -> bool:
    """Whether `given` is the CSRF token of `session_id` (compared in constant time)."""
    return bool(given) and hmac.compare_digest(csrf_token(session_id), str(given))


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its key and when it ends."""

    key: ApiKey
    csrf: str
    expires_at: float


class Sessions:
    """Start, check and end console sessions, kept hashed in the store."""

    def __init__(self, keys: KeyStore, *, lifetime: float = SESSION_SECONDS) -> None:
        self.keys = keys
        self.store = keys.store
        self.lifetime = lifetime

    def start(self, key: ApiKey, now: float | None = None) -> str:
        """A new session for `key`; returns its id (only the cookie ever holds it)."""
        now = time.time() if now is None else now
        self.forget_expired(now)
        session_id = secrets.token_urlsafe(32)
        record = {"key": key.name, "key_hash": key.key_hash, "expires_at": now + self.lifetime}
        self.store.set_setting(SESSION_SCOPE, hash_key(session_id), record)
        return session_id

    def check(self, session_id: str | None, now: float | None = None) -> Session | None:
        """The session of this id while it is valid and its key is not revoked, else None."""
        if not session_id or len(session_id) > 100:
            return None
        now = time.time() if now is None else now
        digest = hash_key(session_id)
        record = self.store.get_setting(SESSION_SCOPE, digest)
        if not isinstance(record, dict):
            return None
        key = self.keys.get(str(record.get("key", "")))
        expires_at = float(record.get("expires_at") or 0)
        same_key = key is not None and hmac.compare_digest(
            key.key_hash, str(record.get("key_hash", ""))
        )
        if key is None or not same_key or expires_at <= now:
            self.store.set_setting(SESSION_SCOPE, digest, None)
            return None
        return Session(key=key, csrf=csrf_token(session_id), expires_at=expires_at)

    def end(self, session_id: str | None) -> None:
        """Sign a session out (nothing happens for an unknown id)."""
        if session_id and len(session_id) <= 100:
            self.store.set_setting(SESSION_SCOPE, hash_key(session_id), None)

    def forget_expired(self, now: float | None = None) -> int:
        """Delete every expired session; how many were deleted."""
        now = time.time() if now is None else now
        gone = 0
        for (_, digest), record in self.store.settings_in(SESSION_SCOPE).items():
            if not isinstance(record, dict) or float(record.get("expires_at") or 0) <= now:
                self.store.set_setting(SESSION_SCOPE, digest, None)
                gone += 1
        return gone


SESSIONS = web.AppKey("sessions", Sessions)


def session_of(request: web.Request) -> tuple[str, Session] | None:
    """The request's session cookie and its session, when it has a valid one."""
    if SESSIONS not in request.app:
        return None
    session_id = request.cookies.get(SESSION_COOKIE)
    session = request.app[SESSIONS].check(session_id)
    if session is None or session_id is None:
        return None
    return session_id, session


def set_cookie(
    response: web.StreamResponse, name: str, value: str, *, secure: bool, max_age: float
) -> None:
    """Set one of the console's cookies: HttpOnly, SameSite=Strict, on every path."""
    response.set_cookie(
        name,
        value,
        max_age=int(max_age),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )

"""Admin sessions (in memory: a restart means logging in again) and their CSRF tokens.

A session id is 256 random bits, sent only in an HttpOnly, SameSite=Strict cookie. Each
session has its own CSRF token, which state-changing requests must echo (header or form
field); the request's Origin (or Referer) must also be the daemon's own.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "hall_admin"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
IDLE_S = 30 * 60.0
ABSOLUTE_S = 12 * 3600.0
MAX_SESSIONS = 100
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    created: float
    last_seen: float
    password_version: int
    client: str


class Sessions:
    def __init__(self, *, idle_s: float = IDLE_S, absolute_s: float = ABSOLUTE_S) -> None:
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._by_id: dict[str, Session] = {}

    def create(self, now: float, password_version: int, client: str) -> Session:
        self._expire(now)
        while len(self._by_id) >= MAX_SESSIONS:  # the oldest login goes first
            self._by_id.pop(next(iter(self._by_id)))
        s = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
            password_version=password_version,
            client=client,
        )
        self._by_id[s.id] = s
        return s

    def get(self, session_id: str | None, now: float, password_version: int) -> Session | None:
        """The live session with that id, touched; None if unknown, idle too long, too old or
        from before the password changed."""
        if not session_id:
            return None
        s = self._by_id.get(session_id)
        if s is None:
            return None
        if (
            now - s.last_seen > self.idle_s
            or now - s.created > self.absolute_s
            or s.password_version != password_version
        ):
            self._by_id.pop(session_id, None)
            return None
        s.last_seen = now
        return s

    def alive(self, session_id: str, now: float, password_version: int) -> bool:
        """Still valid, without counting as activity (an open status page is not a user)."""
        s = self._by_id.get(session_id)
        return (
            s is not None
            and now - s.last_seen <= self.idle_s
            and now - s.created <= self.absolute_s
            and s.password_version == password_version
        )

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _expire(self, now: float) -> None:
        for sid in [
            sid
            for sid, s in self._by_id.items()
            if now - s.last_seen > self.idle_s or now - s.created > self.absolute_s
        ]:
            del self._by_id[sid]


def csrf_ok(session: Session, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(session.csrf.encode(), (offered or "").encode())


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_origins(request: web.Request, public_url: str | None) -> set[str]:
    """The daemon's own origin as the browser addressed it, and the configured public one."""
    origins = {f"{request.scheme}://{request.host}".lower()}
    if public_url:
        own = _origin_of(public_url)
        if own:
            origins.add(own)
    return origins


def same_origin(request: web.Request, public_url: str | None) -> bool:
    """A state-changing request (or a WebSocket) must say where it comes from, and that
    must be here. Browsers send Origin on POST and WebSocket; Referer is the fallback."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        origin = _origin_of(referer) if referer else None
    if not origin or origin == "null":
        return False
    return origin.lower() in allowed_origins(request, public_url)

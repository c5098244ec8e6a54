"""The gate in front of the daemon's web server: login, logout, and the middleware that lets
through only the public pages (display, kiosk, applicant, /healthz, /api/queues) without a
session, and only same-origin, CSRF-checked requests that change anything with one.

What is public is decided by the matched route, never by string tests on the raw path, so
`/screen/../admin` or an encoded slash cannot slip past; a route nobody declared public is
protected, including ones other parts add later.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from aiohttp import hdrs, web

from .auth import PasswordFile
from .pages import bi, esc, render, template
from .ratelimit import LoginAttempt, LoginThrottle, client_key
from .sessions import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    UNSAFE_METHODS,
    Session,
    Sessions,
    csrf_ok,
    same_origin,
)

log = logging.getLogger(__name__)

SESSION_KEY = web.RequestKey("admin_session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_EXACT = frozenset({"/healthz", "/api/queues", "/kiosk", "/screen/", "/admin/login"})
PUBLIC_PREFIXES = ("/screen/", "/kiosk/", "/t/", "/ws/screen/", "/ws/kiosk", "/ws/t/", "/static/")
METRICS_PATH = "/metrics"
MAX_VERIFYING = 2  # scrypt checks at once: each holds 32 MiB for ~0.1 s


def route_pattern(request: web.Request) -> str | None:
    """The matched route's pattern (`/screen/{id}`), or None when no route matched."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def is_public(request: web.Request) -> bool:
    pattern = route_pattern(request)
    if pattern is None:
        return False
    return pattern in PUBLIC_EXACT or pattern.startswith(PUBLIC_PREFIXES)


def _wants_html(request: web.Request) -> bool:
    return (
        request.method in ("GET", "HEAD")
        and "text/html" in request.headers.get(hdrs.ACCEPT, "")
        and request.headers.get(hdrs.UPGRADE, "").lower() != "websocket"
    )


def _refuse(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


def _safe_next(target: str | None) -> str:
    """Only back into the admin pages: never an open redirect to another site."""
    if (
        target
        and target.startswith("/admin")
        and not target.startswith("//")
        and not any(ch in target for ch in "\\\r\n")
    ):
        return target
    return "/admin/"


class Guard:
    def __init__(
        self,
        state_dir: Path,
        *,
        public_url: str | None,
        hall_name: str,
        metrics_token_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.passwords = PasswordFile(state_dir)
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.public_url = public_url
        self.secure_cookie = bool(public_url and public_url.lower().startswith("https://"))
        self.hall_name = hall_name
        self.metrics_token_file = metrics_token_file
        self.clock = clock
        self.logins = 0
        self.failed_logins = 0
        self.login_checks = 0  # passwords actually hashed: what a burst of tries costs
        self._worker = ThreadPoolExecutor(MAX_VERIFYING, thread_name_prefix="admin-auth")
        self._verifying = asyncio.Semaphore(MAX_VERIFYING)
        self._metrics_token: tuple[float, str | None] | None = None

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """The first start makes the admin password and leaves it in a private file."""
        loop = asyncio.get_running_loop()
        try:
            initial = await loop.run_in_executor(self._worker, self.passwords.ensure)
        except OSError as exc:
            # The hall runs on without its admin page rather than not at all.
            log.error(
                "cannot store the admin password in %s (%s); every admin login is refused "
                "until `hall-daemon set-password` succeeds",
                self.passwords.path,
                exc,
            )
            return
        if initial is not None:
            log.warning(
                "admin password generated: it is in %s (readable only by the daemon's user; "
                "e.g. `sudo cat %s`); `hall-daemon set-password` sets your own and removes "
                "that file",
                initial,
                initial,
            )

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._worker.shutdown, True)

    # -- the middleware ------------------------------------------------------------------
    def session(self, request: web.Request) -> Session | None:
        return self.sessions.get(
            request.cookies.get(COOKIE), self.clock(), self.passwords.version()
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request):
            return await handler(request)
        session = self.session(request)
        if session is None:
            if route_pattern(request) == METRICS_PATH and self._bearer_ok(request):
                return await handler(request)
            if _wants_html(request):
                raise web.HTTPSeeOther(f"/admin/login?next={quote(request.path_qs)}")
            return _refuse(401, "login-required", "log in at /admin/login first")
        websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if (request.method in UNSAFE_METHODS or websocket) and not same_origin(
            request, self.public_url
        ):
            return _refuse(403, "bad-origin", "request from another site refused")
        if request.method in UNSAFE_METHODS:
            offered = request.headers.get(CSRF_HEADER)
            if offered is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                field = (await request.post()).get(CSRF_FIELD)
                offered = field if isinstance(field, str) else None
            if not csrf_ok(session, offered):
                return _refuse(403, "bad-csrf", "missing or wrong CSRF token; reload the page")
        request[SESSION_KEY] = session
        return await handler(request)

    def _bearer_ok(self, request: web.Request) -> bool:
        auth = request.headers.get(hdrs.AUTHORIZATION, "")
        if not auth.startswith("Bearer "):
            return False
        token = self._read_metrics_token()
        offered = auth[len("Bearer ") :].strip()
        return token is not None and hmac.compare_digest(token.encode(), offered.encode())

    def _read_metrics_token(self) -> str | None:
        """The scrape token, re-read when its file changes; None if none is configured."""
        path = self.metrics_token_file
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        if self._metrics_token is None or self._metrics_token[0] != mtime:
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError:
                return None
            # A short token is as good as none: refuse rather than be guessed.
            self._metrics_token = (mtime, token if len(token) >= 16 else None)
        return self._metrics_token[1]

    # -- login and logout ----------------------------------------------------------------
    def login_page(
        self, next_url: str, message: str = "", status: int = 200, *, retry_after: float = 0
    ) -> web.Response:
        content = template("login.html").substitute(next=esc(next_url), message=message)
        response = render(
            title="管理登录 Admin login", content=content, hall_name=self.hall_name, status=status
        )
        if retry_after > 0:
            response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(retry_after)))
        return response

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self.session(request) is not None:
            raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
        return self.login_page(_safe_next(request.query.get("next")))

    async def login(self, request: web.Request) -> web.StreamResponse:
        # No session yet, so no CSRF token: the Origin check keeps other sites from logging
        # a browser into this daemon (login CSRF).
        if not same_origin(request, self.public_url):
            return _refuse(403, "bad-origin", "request from another site refused")
        client = client_key(request.remote)
        attempt = self.throttle.reserve(client, self.clock())
        if not isinstance(attempt, LoginAttempt):
            text = bi("尝试次数过多，请稍后再试。", "Too many tries; wait a little.")
            message = f'<p class="flash bad">{text}</p>'
            return self.login_page("/admin/", message, 429, retry_after=attempt)
        form = await request.post()
        password = form.get("password")
        next_url = _safe_next(str(form.get("next") or ""))
        ok = isinstance(password, str) and await self._check(password)
        if not ok:
            self.failed_logins += 1
            log.warning(
                "admin login failed from %s (%d in a row)",
                client,
                self.throttle.failures(client),
            )
            message = f'<p class="flash bad">{bi("密码错误。", "Wrong password.")}</p>'
            return self.login_page(next_url, message, 401)
        self.throttle.succeeded(attempt)
        self.logins += 1
        session = self.sessions.create(self.clock(), self.passwords.version(), client)
        log.info("admin logged in from %s", client)
        response = web.HTTPSeeOther(next_url)
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookie,
            path="/",
        )
        raise response

    async def _check(self, password: str) -> bool:
        """scrypt on a worker thread, at most MAX_VERIFYING at once."""
        async with self._verifying:
            self.login_checks += 1
            return await asyncio.get_running_loop().run_in_executor(
                self._worker, self.passwords.verify, password
            )

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session: Session | None = request.get(SESSION_KEY)
        if session is not None:
            self.sessions.drop(session.id)
        response = web.HTTPSeeOther("/admin/login")
        response.del_cookie(COOKIE, path="/")
        raise response

"""The admin side of the daemon's web server: login, the live status page, the admin's
actions (engine commands), /metrics, and the gate that protects all of it.

The composition root calls `setup_admin(app, hall, config, handles)` after the display has
added its public pages and before the runner is set up. From then on every route of the app
needs an admin session except the public ones (guard.py: /healthz, /api/queues, the screens,
kiosk and applicant pages with their WebSockets, /static/). Other admin pages (statistics,
receipts) add their routes under /admin/ on the same app and render through
`AdminHandle.page` to share the layout; they are protected without doing anything.

    GET  /admin/                 the status page (live over /admin/ws)
    GET  /admin/login            the login form;  POST /admin/login, POST /admin/logout
    GET  /admin/ws               the status feed (WebSocket, same origin, session)
    GET  /admin/api/status       the status as JSON
    POST /admin/api/actions/<n>  an admin action (actions.py); CSRF token required
    GET  /metrics                Prometheus text; a session or `Authorization: Bearer`
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ..config import HallConfig
from ..hall import Hall
from ..web import LOOP_KEY
from .actions import Actions
from .guard import SESSION_KEY, Guard
from .metrics import CONTENT_TYPE, EventCounter, render_metrics
from .outlook_routes import add_outlook_routes
from .pages import STATIC, STATIC_PREFIX, NavLink, bi, esc, render, template
from .sessions import Session
from .stats_routes import add_stats_routes
from .status import AdminHandles, StatsSource, StatusFeed

__all__ = [
    "ADMIN_KEY",
    "AdminHandle",
    "AdminHandles",
    "NavLink",
    "StatsSource",
    "bi",
    "esc",
    "setup_admin",
]

log = logging.getLogger(__name__)

DEFAULT_NAV = (
    NavLink("/admin/", "状态", "Status"),
    NavLink("/admin/stats", "效率统计", "Statistics"),
    NavLink("/admin/outlook", "错峰", "Outlook"),
    NavLink("/admin/receipts/sample.png", "小票样张", "Receipt sample"),
)


@dataclass
class AdminHandle:
    """What the composition root and the other admin pages hold of the admin side.

    `handles` may be filled in after setup (e.g. `handle.handles.printer = printer`): the
    status page and /metrics read it on every view.
    """

    app: web.Application
    hall: Hall
    config: HallConfig
    handles: AdminHandles
    guard: Guard
    feed: StatusFeed
    actions: Actions
    events: EventCounter
    nav: list[NavLink] = field(default_factory=lambda: list(DEFAULT_NAV))

    def add_nav(self, href: str, zh: str, en: str) -> None:
        """Add a link to the admin bar (once per href)."""
        if all(n.href != href for n in self.nav):
            self.nav.append(NavLink(href, zh, en))

    @staticmethod
    def session(request: web.Request) -> Session | None:
        """The request's admin session (set by the gate on every protected route)."""
        return request.get(SESSION_KEY)

    def csrf_token(self, request: web.Request) -> str:
        s = self.session(request)
        return s.csrf if s is not None else ""

    def page(
        self,
        request: web.Request,
        *,
        title: str,
        content: str,
        active: str = "",
        scripts: tuple[str, ...] = (),
        styles: tuple[str, ...] = (),
        status: int = 200,
    ) -> web.Response:
        """An admin page in the shared layout. `scripts`/`styles`: file names in
        hall_daemon/admin/static, or absolute /static/... URLs of your own files."""
        return render(
            title=title,
            content=content,
            nav=self.nav,
            active=active or request.path,
            csrf=self.csrf_token(request),
            hall_name=self.config.hall.name,
            scripts=scripts,
            styles=styles,
            status=status,
        )


ADMIN_KEY = web.AppKey("admin", AdminHandle)


def setup_admin(
    app: web.Application,
    hall: Hall,
    config: HallConfig,
    handles: AdminHandles | None = None,
) -> AdminHandle:
    """Protect `app` and add the admin routes. Call before the app's runner is set up."""
    handles = handles if handles is not None else AdminHandles()
    token_file = config.web.metrics_token_file
    guard = Guard(
        config.state_dir,
        public_url=config.web.public_url,
        hall_name=config.hall.name,
        metrics_token_file=Path(token_file) if token_file else None,
    )
    monitor = app[LOOP_KEY]
    feed = StatusFeed(
        hall,
        handles,
        state_dir=config.state_dir,
        notice_default=config.hall.notice,
        loop_lag=lambda: monitor.lag_s,
        session_alive=lambda sid: guard.sessions.alive(
            sid, guard.clock(), guard.passwords.version()
        ),
    )
    handle = AdminHandle(app, hall, config, handles, guard, feed, Actions(hall), EventCounter())
    if config.web.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "the admin page listens on %s, not only on this PC: keep the hall LAN behind a "
            "firewall, and serve it through https (web.public_url) if it leaves the LAN",
            config.web.host,
        )
    app[ADMIN_KEY] = handle
    app.middlewares.append(guard.middleware)
    _Routes(handle).add(app)
    add_stats_routes(app, hall)
    add_outlook_routes(app, hall)

    async def start(_app: web.Application) -> None:
        await guard.start()
        hall.bus.subscribe("admin-metrics", handle.events.on_event, maxsize=10_000)
        await feed.start()

    async def shutdown(_app: web.Application) -> None:
        await feed.close()

    async def cleanup(_app: web.Application) -> None:
        await guard.close()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return handle


class _Routes:
    def __init__(self, handle: AdminHandle) -> None:
        self.h = handle

    def add(self, app: web.Application) -> None:
        r = app.router
        g = self.h.guard
        r.add_get("/admin", self.to_status)
        r.add_get("/admin/", self.status_page)
        r.add_get("/admin/login", g.login_form)
        r.add_post("/admin/login", g.login)
        r.add_post("/admin/logout", g.logout)
        r.add_get("/admin/ws", self.status_ws)
        r.add_get("/admin/api/status", self.status_json)
        r.add_post("/admin/api/actions/{action}", self.h.actions.handle)
        r.add_get("/metrics", self.metrics)
        r.add_static(STATIC_PREFIX, STATIC, name="admin_static")

    async def to_status(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/admin/")

    async def status_page(self, request: web.Request) -> web.StreamResponse:
        s = self.h.hall.state
        services = "".join(
            f'<option value="{esc(code)}">{esc(code)} {esc(spec.name)}</option>'
            for code, spec in s.services.items()
        )
        content = template("status.html").substitute(services=services)
        return self.h.page(
            request,
            title=f"状态 Status · {self.h.config.hall.name}",
            content=content,
            active="/admin/",
            scripts=("status.js",),
        )

    async def status_ws(self, request: web.Request) -> web.StreamResponse:
        session = self.h.session(request)
        assert session is not None  # the gate let it through
        return await self.h.feed.serve(request, session.id)

    async def status_json(self, request: web.Request) -> web.Response:
        await self.h.feed.refresh_disk()
        return web.json_response(self.h.feed.view(), headers={"Cache-Control": "no-store"})

    async def metrics(self, request: web.Request) -> web.Response:
        h = self.h
        monitor = request.app[LOOP_KEY]
        await h.feed.refresh_disk()
        body = render_metrics(
            h.hall,
            h.handles,
            h.events,
            loop_lag_s=monitor.lag_s,
            loop_lag_max_s=monitor.max_lag_s,
            disk=h.feed.disk,
            login_failures=h.guard.failed_logins,
            login_checks=h.guard.login_checks,
            login_refused=h.guard.throttle.refused,
        )
        return web.Response(
            body=body.encode("utf-8"),
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
        )

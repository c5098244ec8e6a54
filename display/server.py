"""The display's routes on the daemon's aiohttp app: screens, kiosk, applicant page, feeds.

    GET  /screen/                 the configured screens, for whoever sets up the TVs
    GET  /screen/<id>             one big screen (a kiosk-mode browser on the TV opens it)
    GET  /kiosk                   the touch kiosk (?kiosk=<id> names its printer; ?idle=<s>)
    POST /kiosk/ticket            {"service", "priority", "kiosk"} -> TakeTicket
    POST /kiosk/code              {"code", "kiosk"}: an appointment code -> CheckIn, or a
                                  remote ticket's QR (its /t/<token> URL) -> that ticket
    GET  /t/<token>               one ticket's page (the receipt's QR code)
    GET  /ws/screen/<id>, /ws/kiosk, /ws/t/<token>     the pages' WebSocket feeds
    GET  /static/display/...      CSS and JS; fonts are the system's Noto Sans CJK

Every page is public (admin auth is elsewhere): screen and kiosk data are what a hall's TV
shows anyway, and a ticket's data goes only to whoever presents its 128-bit token. Issuing
and checking in are for the hall's kiosks only, at a kiosk's pace (kiosk_gate.py).
Pages load nothing from outside the daemon; the Content-Security-Policy makes sure of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
import re
import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from hall_daemon import commands as c
from hall_daemon.checkin_brake import NO_APPOINTMENT_NOW, NOT_CHECKABLE_NOW, CheckInBrake
from hall_daemon.config import HallConfig
from hall_daemon.hall import Hall
from hall_daemon.model import DomainError
from hall_daemon.receipts import Receipt, ReceiptPrinter
from hall_daemon.tokens import looks_like_token, new_token
from hall_daemon.webedge import BodyError, read_json_object

from .feed import Hub, dumps
from .kiosk_gate import KioskGate, Refusal
from .views import JSON, ticket_view

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"

STATIC_ROUTE = "display_static"
KIOSK_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_CODE = 256
MAX_BODY = 4096  # a service code, a flag, a kiosk id, a 256-character code: far less
PRINT_TIMEOUT_S = 30.0

# No external resource can load, and nothing can frame the pages or post them elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

HUB_KEY = web.AppKey("display_hub", Hub)


@cache
def build_id() -> str:
    """A hash of the pages' files: a page whose files changed under it (an upgrade) reloads."""
    h = hashlib.sha256()
    for path in sorted([*STATIC.rglob("*"), *TEMPLATES.rglob("*")]):
        if path.is_file():
            h.update(path.relative_to(HERE).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


@cache
def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


@dataclass
class DisplayHandle:
    """What the composition root (and later the admin page) holds of the display."""

    hub: Hub
    config: HallConfig
    gate: KioskGate
    receipts: ReceiptPrinter | None = None  # set by the printer's wiring; None: no printing
    _printing: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def notice(self) -> str:
        return self.hub.notice

    def reload(self, config: HallConfig) -> None:
        """Screens, hall names and notice from a re-read config.yaml (SIGHUP)."""
        self.config = config
        self.hub.reload(config)

    def set_notice(self, text: str) -> None:
        """Show `text` as the notice now, in memory only, until a restart or a SetNotice.

        The admin page submits `SetNotice` to the hall instead: that one is logged, reaches
        the screens through the bus, and is still shown after a restart."""
        self.hub.set_notice(text)

    def stats(self) -> dict[str, Any]:
        s = self.hub.stats
        return {
            "connected": self.hub.connected(),
            "events": s.events,
            "refreshes": s.refreshes,
            "messages": s.messages,
            "resyncs": s.resyncs,
            "kiosk_refused": self.gate.stats(),
        }


def setup_display(
    app: web.Application,
    hall: Hall,
    config: HallConfig,
    *,
    receipts: ReceiptPrinter | None = None,
    checkin_brake: CheckInBrake | None = None,
) -> DisplayHandle:
    """Add the display's routes to `app`; its feed starts and stops with the app.

    Call before the app's runner is set up, after `hall.start()` has recovered the state.
    `checkin_brake`: the hall's one brake on wrong check-in codes, shared with the dispensers.
    """
    hub = Hub(hall, config, build_id())
    gate = KioskGate(config, codes=checkin_brake)
    handle = DisplayHandle(hub, config, gate, receipts)
    app[HUB_KEY] = hub
    pages = _Pages(hall, config, hub, handle)
    r = app.router
    r.add_get("/screen/", pages.screen_index)
    r.add_get("/screen/{id}", pages.screen)
    r.add_get("/kiosk", pages.kiosk)
    r.add_post("/kiosk/ticket", pages.kiosk_ticket)
    r.add_post("/kiosk/code", pages.kiosk_code)
    r.add_get("/t/{token}", pages.ticket)
    r.add_get("/ws/screen/{id}", pages.screen_ws)
    r.add_get("/ws/kiosk", pages.kiosk_ws)
    r.add_get("/ws/t/{token}", pages.ticket_ws)
    r.add_static("/static/display/", STATIC, name=STATIC_ROUTE, append_version=True)

    async def start(_app: web.Application) -> None:
        await hub.start()

    async def shutdown(_app: web.Application) -> None:
        # on_shutdown, not on_cleanup: open WebSockets would otherwise hold the server's
        # shutdown until its timeout. Pages see the close and start reconnecting.
        await hub.close()

    async def cleanup(_app: web.Application) -> None:
        tasks = list(handle._printing)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return handle


# --- pages --------------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _bi(zh: str, en: str) -> str:
    """A bilingual label: the page's language setting shows one, the other or both."""
    return f'<span class="zh">{_esc(zh)}</span><span class="en">{_esc(en or zh)}</span>'


class _Pages:
    def __init__(self, hall: Hall, config: HallConfig, hub: Hub, handle: DisplayHandle) -> None:
        self.hall = hall
        self.hub = hub
        self.handle = handle
        self.gate = handle.gate

    @property
    def config(self) -> HallConfig:
        return self.hub.config  # follows a SIGHUP reload

    def _render(
        self,
        request: web.Request,
        content: str,
        *,
        title: str,
        kind: str,
        body_class: str,
        data: dict[str, str],
        status: int = 200,
    ) -> web.Response:
        static = request.app.router[STATIC_ROUTE]
        attrs = " ".join(f'data-{k}="{_esc(v)}"' for k, v in data.items())
        page = _template("page.html").substitute(
            title=_esc(title),
            base_css=_esc(str(static.url_for(filename="base.css"))),
            css=_esc(str(static.url_for(filename=f"{kind}.css"))),
            common_js=_esc(str(static.url_for(filename="feed.js"))),
            js=_esc(str(static.url_for(filename=f"{kind}.js"))),
            body_class=_esc(body_class),
            body_data=attrs,
            build=_esc(self.hub.build),
            content=content,
        )
        return web.Response(
            text=page,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",  # /t/<token> must not leak in a Referer
                "Cache-Control": "no-store",
            },
        )

    # -- screens ------------------------------------------------------------------------------
    async def screen_index(self, request: web.Request) -> web.Response:
        items = "".join(
            f'<li><a href="/screen/{_esc(s.id)}">{_esc(s.id)}</a> '
            f"{_esc(s.title)} · {_esc(s.orientation)} · {_esc(s.language)}</li>"
            for s in self.config.screens
        )
        hall = _bi(self.config.hall.name, self.config.hall.name_en)
        content = (
            f"<header class='top'><div class='hall'>{hall}</div></header>"
            f"<main class='index'><h1>{_bi('大屏', 'Screens')}</h1><ul>{items}</ul>"
            f"<p><a href='/kiosk'>{_bi('取号机', 'Kiosk')}</a></p></main>"
        )
        return self._render(
            request, content, title="Screens", kind="ticket", body_class="index lang-dual", data={}
        )

    async def screen(self, request: web.Request) -> web.Response:
        feed = self.hub.screens.get(request.match_info["id"])
        if feed is None:
            return self._not_found(request, "screen")
        s = feed.screen
        content = _template("screen.html").substitute(
            hall=_bi(self.config.hall.name, self.config.hall.name_en),
            title=_esc(s.title),
        )
        return self._render(
            request,
            content,
            title=f"{s.title or s.id} · {self.config.hall.name}",
            kind="screen",
            body_class=f"screen {s.orientation} lang-{s.language}",
            data={"feed": f"/ws/screen/{s.id}", "build": self.hub.build, "conn": "connecting"},
        )

    async def screen_ws(self, request: web.Request) -> web.StreamResponse:
        feed = self.hub.screens.get(request.match_info["id"])
        if feed is None:
            raise web.HTTPNotFound()
        return await self.hub.serve(request, feed)

    # -- kiosk ----------------------------------------------------------------------------------
    async def kiosk(self, request: web.Request) -> web.Response:
        kiosk_id = request.query.get("kiosk", "kiosk")
        if not KIOSK_ID.fullmatch(kiosk_id):
            kiosk_id = "kiosk"
        try:
            idle = min(max(float(request.query.get("idle", "15")), 1.0), 600.0)
        except ValueError:
            idle = 15.0
        content = _template("kiosk.html").substitute(
            hall=_bi(self.config.hall.name, self.config.hall.name_en)
        )
        return self._render(
            request,
            content,
            title=f"取号 · {self.config.hall.name}",
            kind="kiosk",
            body_class="kiosk lang-dual",
            data={
                "feed": "/ws/kiosk",
                "build": self.hub.build,
                "conn": "connecting",
                "kiosk": kiosk_id,
                "idle": f"{idle:g}",
            },
        )

    async def kiosk_ws(self, request: web.Request) -> web.StreamResponse:
        return await self.hub.serve(request, self.hub.kiosk)

    async def kiosk_ticket(self, request: web.Request) -> web.Response:
        client = self.gate.client(request)
        if isinstance(client, Refusal):
            return _refused(client)
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        service, priority = body.get("service"), body.get("priority", False)
        if not isinstance(service, str) or not isinstance(priority, bool):
            return _error(400, "invalid", "service (string) and priority (bool) expected")
        refusal = self.gate.take_ticket(client)
        if refusal is not None:
            return _refused(refusal)
        token = new_token()
        command = c.TakeTicket(self.hall.now(), service, token, "dispenser", priority)
        return await self._issue(command, token, _kiosk_id(body))

    async def kiosk_code(self, request: web.Request) -> web.Response:
        client = self.gate.client(request)
        if isinstance(client, Refusal):
            return _refused(client)
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        code = body.get("code")
        if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE:
            return _error(400, "invalid", "code expected")
        refusal = self.gate.take_code(client)
        if refusal is not None:
            return _refused(refusal)
        answer = await self._check_in(code.strip(), _kiosk_id(body))
        if answer.status == 200 or answer.status >= 500:  # right, or never looked up
            self.gate.code_accepted(client)
        return answer

    def _no_appointment_now(self) -> web.Response:
        minutes = self.config.queue.checkin_early_minutes
        return _error(
            404,
            NO_APPOINTMENT_NOW,
            f"no appointment to check in with this code now; check-in opens {minutes} "
            "minutes before the appointment's time",
        )

    async def _check_in(self, code: str, kiosk: str) -> web.Response:
        token = _token_in(code)
        if token is not None and token in self.hall.state.by_token:
            # A remote ticket's QR code (taken in the app): it is in the queue already; show
            # it and print it, like a ticket taken here.
            return self._ticket_response(token, kiosk, existing=True)
        token = new_token()
        command = c.CheckIn(self.hall.now(), code, token)
        return await self._issue(command, token, kiosk, hidden=NOT_CHECKABLE_NOW)

    async def _issue(
        self, command: c.Command, token: str, kiosk: str, hidden: frozenset[str] = frozenset()
    ) -> web.Response:
        """`hidden`: refusals answered as one, so that the answer tells nothing more."""
        try:
            await self.hall.submit(command)
        except DomainError as exc:
            if exc.slug in hidden:
                return self._no_appointment_now()
            status = 503 if exc.code >= 500 else exc.code
            return _error(status, exc.slug, exc.message)
        return self._ticket_response(token, kiosk, existing=False)

    def _ticket_response(self, token: str, kiosk: str, *, existing: bool) -> web.Response:
        h = self.hall
        view = ticket_view(h.state, self.config, h.forecaster, token, h.now())
        if view is None:  # cancelled by a new hall day between issue and answer
            return _error(409, "gone", "the ticket is no longer valid")
        printing = self.handle.receipts is not None and view["state"] not in (
            "done",
            "no_show",
            "cancelled",
        )
        if printing:
            self._print(token, view, kiosk)
        # The token stays off the kiosk's screen: it is on the receipt only.
        return web.json_response(
            {"ticket": view, "existing": existing, "receipt": "printing" if printing else "none"},
            dumps=dumps,
        )

    def _print(self, token: str, view: JSON, kiosk: str) -> None:
        printer = self.handle.receipts
        assert printer is not None
        t = self.hall.state.by_token[token]
        f = view["forecast"] or {"wait_s": 0, "p10_s": 0, "p90_s": 0}
        receipt = Receipt(
            number=t.number,
            service=t.service,
            service_name=view["service_name"],
            service_name_en=view["service_name_en"],
            priority=t.priority,
            appointment=t.appointment,
            ahead=view["ahead"] or 0,
            wait_s=f["wait_s"],
            p10_s=f["p10_s"],
            p90_s=f["p90_s"],
            issued_at=t.issued_at,
            qr_url=self.config.receipt_qr_url().replace("{token}", token),
            hall_name=self.config.hall.name,
            hall_name_en=self.config.hall.name_en,
            kiosk=kiosk,
        )

        async def run() -> None:
            ok = False
            try:
                async with asyncio.timeout(PRINT_TIMEOUT_S):
                    await printer.print_receipt(receipt)
                ok = True
            except Exception:
                log.exception("receipt for %s at kiosk %s did not print", t.number, kiosk)
            # Every kiosk hears it; only the one showing this number (and kiosk id) reacts.
            self.hub.kiosk.broadcast({"t": "printed", "number": t.number, "kiosk": kiosk, "ok": ok})

        task = asyncio.get_running_loop().create_task(run(), name=f"receipt-{t.number}")
        self.handle._printing.add(task)
        task.add_done_callback(self.handle._printing.discard)

    # -- the applicant's page ---------------------------------------------------------------------
    async def ticket(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not looks_like_token(token) or token not in self.hall.state.by_token:
            return self._not_found(request, "ticket")
        content = _template("ticket.html").substitute(
            hall=_bi(self.config.hall.name, self.config.hall.name_en)
        )
        return self._render(
            request,
            content,
            title=f"我的号票 My ticket · {self.config.hall.name}",
            kind="ticket",
            body_class="ticket lang-dual",
            data={"feed": f"/ws/t/{token}", "build": self.hub.build, "conn": "connecting"},
        )

    async def ticket_ws(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not looks_like_token(token):
            raise web.HTTPNotFound()
        # An unknown token gets a feed too; its first and only message is {"t": "gone"}.
        return await self.hub.serve(request, self.hub.ticket_feed(token))

    def _not_found(self, request: web.Request, what: str) -> web.Response:
        content = _template("notfound.html").substitute(
            hall=_bi(self.config.hall.name, self.config.hall.name_en)
        )
        return self._render(
            request,
            content,
            title="未找到 Not found",
            kind="ticket",
            body_class=f"ticket lang-dual notfound {what}",
            data={},
            status=404,
        )


# --- helpers ----------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The body, or the answer refusing it.

    Requiring JSON also keeps other web sites out: a cross-site form cannot send it, and a
    cross-site script would need a CORS preflight, which this server never grants."""
    try:
        return await read_json_object(request, max_bytes=MAX_BODY)
    except BodyError as exc:
        return _error(exc.status, exc.slug, exc.message)


def _error(status: int, slug: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "slug": slug, "message": message}}, status=status
    )


def _refused(refusal: Refusal) -> web.Response:
    return web.json_response(
        {"error": {"code": refusal.status, "slug": refusal.slug, "message": refusal.message}},
        status=refusal.status,
        headers=refusal.headers(),
    )


def _kiosk_id(body: dict[str, Any]) -> str:
    kiosk = body.get("kiosk")
    return kiosk if isinstance(kiosk, str) and KIOSK_ID.fullmatch(kiosk) else "kiosk"


def _token_in(code: str) -> str | None:
    """The token of a scanned ticket QR: a .../t/<token> URL, or the bare token."""
    path = urlsplit(code).path if "/" in code else code
    last = unquote(path.rstrip("/").rsplit("/", 1)[-1])
    return last if looks_like_token(last) else None

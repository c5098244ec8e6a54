"""The hall at a glance for the admin page, pushed over a WebSocket like the screens.

`status_view` gathers everything into one JSON-able dict: queues, counters, the day's open
tickets (what the actions act on), devices, the MQTT link, voice, printer, disk, the writer
and the loop. `StatusFeed` recomputes it after committed events (coalesced) and every few
seconds (device counters change without events), and sends it to the open admin pages only
when it changed. Each page keeps only the latest view: a slow page skips views, never
queues them, and can never hold up the hall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from ..events import StoredEvent
from ..hall import Hall
from ..state import WAITING, HallState

log = logging.getLogger(__name__)

JSON = dict[str, Any]
REFRESH_S = 2.0  # device counters, link state and waits change without events
COALESCE_S = 0.2  # events of a burst make one view (~5-15 ms of loop time on a busy hall)
MAX_CLIENTS = 50
HEARTBEAT_S = 20.0


class StatsSource(Protocol):
    """Anything with a `stats()` for the status page: ports, sync, voice, printer, display."""

    def stats(self) -> Any: ...


@dataclass
class AdminHandles:
    """The running outputs and inputs the status page reports on; any may be missing."""

    ports: StatsSource | None = None  # drivers.ports.PortManager: stats() -> list per port
    sync: StatsSource | None = None  # sync.SyncHandle
    voice: StatsSource | None = None  # broadcast.VoiceHandle
    printer: StatsSource | None = None  # the receipt printer's handle, when configured
    display: StatsSource | None = None  # display.DisplayHandle
    web: StatsSource | None = None  # connections.FrontDoor: the web server's connections


def read_stats(source: StatsSource | None, name: str) -> Any:
    if source is None:
        return None
    try:
        return source.stats()
    except Exception as exc:  # a broken output must not break the page that reports on it
        log.warning("status: %s stats failed: %s", name, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _hms(at: datetime | None, tz: Any) -> str | None:
    return at.astimezone(tz).strftime("%H:%M:%S") if at is not None else None


def _seconds(now: datetime, at: datetime | None) -> int | None:
    return max(int((now - at).total_seconds()), 0) if at is not None else None


def services_view(hall: Hall, now: datetime) -> list[JSON]:
    s = hall.state
    out = []
    for code, spec in s.services.items():
        waiting = s.waiting_tickets(code)
        oldest = min((t.issued_at for t in waiting), default=None)
        forecast = hall.forecaster(s, code, len(waiting), now)
        out.append(
            {
                "service": code,
                "name": spec.name,
                "name_en": spec.name_en,
                "waiting": len(waiting),
                "longest_wait_s": _seconds(now, oldest),
                "forecast": forecast,
                "issued": s.issued.get(code, 0),
                "open_counters": [c.id for c in s.open_counters(code)],
            }
        )
    return out


def counters_view(state: HallState, now: datetime, tz: Any) -> list[JSON]:
    names = {c.id: c for c in state.spec.counters}
    out = []
    for c in state.counters.values():
        spec = names.get(c.id)
        ticket = state.tickets.get(c.current) if c.current else None
        out.append(
            {
                "counter": c.id,
                "name": spec.name if spec else str(c.id),
                "name_en": spec.name_en if spec else "",
                "state": c.state,
                "ticket": c.current,
                "ticket_state": ticket.state if ticket else None,
                "since": _hms(c.since, tz),
                "for_s": _seconds(now, c.since),
                "services": list(c.services),
                "suspended": list(c.suspended),
            }
        )
    return out


def tickets_view(state: HallState, now: datetime, tz: Any) -> list[JSON]:
    """The day's unfinished tickets, in calling order per service, then those at counters."""
    out = []
    for t in state.tickets.values():
        if t.finished:
            continue
        out.append(
            {
                "number": t.number,
                "service": t.service,
                "state": t.state,
                "priority": t.priority,
                "channel": t.channel,
                "appointment": t.appointment,
                "counter": t.counter,
                "issued": _hms(t.issued_at, tz),
                "waited_s": _seconds(now, t.issued_at),
                "ahead": state.ahead_of(t) if t.state == WAITING else None,
            }
        )
    out.sort(key=lambda d: (d["state"] != WAITING, d["ahead"] or 0, d["number"]))
    return out


def devices_view(hall: Hall, ports: Any) -> list[JSON]:
    """Each serial device as its port reports it, and the hall's logged device states
    (voice, printer and anything else that reported a fault) for the rest."""
    out: list[JSON] = []
    seen: set[str] = set()
    for port in ports or []:
        if not isinstance(port, dict):
            continue
        link = port.get("link") or {}
        for d in port.get("devices") or []:
            seen.add(str(d.get("id")))
            out.append(
                {
                    "device": d.get("id"),
                    "kind": d.get("kind"),
                    "port": port.get("port") or link.get("name"),
                    "link": link.get("state"),
                    "state": d.get("state"),
                    "online": bool(d.get("online")),
                    "last_seen_s_ago": d.get("last_seen_s_ago"),
                    "frames_good": d.get("frames_good", 0),
                    "frames_bad": d.get("frames_bad", 0),
                    "unresponsive": d.get("unresponsive", 0),
                    "detail": d.get("detail", ""),
                }
            )
    for name, (state, detail) in sorted(hall.state.devices.items()):
        if name in seen:
            continue
        out.append(
            {
                "device": name,
                "kind": None,
                "port": None,
                "link": None,
                "state": state,
                "online": state == "online",
                "last_seen_s_ago": None,
                "frames_good": None,
                "frames_bad": None,
                "unresponsive": None,
                "detail": detail,
            }
        )
    return out


def disk_view(path: Path) -> JSON:
    """Blocking (statvfs): call on a worker thread."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"path": str(path), "error": str(exc)}
    return {
        "path": str(path),
        "total_bytes": usage.total,
        "free_bytes": usage.free,
        "free_percent": round(100.0 * usage.free / usage.total, 1) if usage.total else None,
    }


def status_view(
    hall: Hall,
    handles: AdminHandles,
    *,
    notice_default: str,
    disk: JSON,
    loop_lag_s: float,
) -> JSON:
    now = hall.now()
    tz = hall.spec.tz()
    s = hall.state
    w = hall.stats
    ports = read_stats(handles.ports, "ports")
    return {
        "day": s.day.isoformat() if s.day else None,
        "seq": hall.store.last_seq(),
        "notice": s.notice,
        "notice_default": notice_default,
        "services": services_view(hall, now),
        "counters": counters_view(s, now, tz),
        "tickets": tickets_view(s, now, tz),
        "devices": devices_view(hall, ports),
        "ports": ports,
        "mqtt": read_stats(handles.sync, "sync"),
        "voice": read_stats(handles.voice, "voice"),
        "printer": read_stats(handles.printer, "printer"),
        "display": read_stats(handles.display, "display"),
        "disk": disk,
        "writer": {
            "healthy": hall.healthy,
            "problem": hall.problem(),
            "engine_failures": w.engine_failures,
            "commands": w.commands,
            "refused": w.refused,
            "events": w.events,
            "commits": w.commits,
            "commit_failures": w.commit_failures,
            "last_commit_ms": round(1000 * w.last_commit_s, 2),
        },
        "bus": {
            name: {"dropped": st.dropped, "failures": st.failures}
            for name, st in hall.bus.stats().items()
        },
        "loop_lag_ms": round(1000 * loop_lag_s, 1),
    }


class _Page:
    __slots__ = ("latest", "session", "wake", "ws")

    def __init__(self, ws: web.WebSocketResponse, session: str) -> None:
        self.ws = ws
        self.session = session
        self.latest: str | None = None
        self.wake = asyncio.Event()


class StatusFeed:
    def __init__(
        self,
        hall: Hall,
        handles: AdminHandles,
        *,
        state_dir: Path,
        notice_default: str,
        loop_lag: Callable[[], float],
        session_alive: Callable[[str], bool],
    ) -> None:
        self.hall = hall
        self.handles = handles
        self.state_dir = state_dir
        self.notice_default = notice_default
        self.loop_lag = loop_lag
        self.session_alive = session_alive
        self.disk: JSON = {"path": str(state_dir)}
        self.last: str | None = None
        self.views = 0
        self._pages: set[_Page] = set()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.hall.bus.subscribe("admin-status", self._on_event, resync=self._resync, maxsize=500)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="admin-status")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for page in list(self._pages):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await page.ws.close()

    async def _on_event(self, _event: StoredEvent) -> None:
        self._dirty.set()

    async def _resync(self) -> None:
        self._dirty.set()

    async def refresh_disk(self) -> None:
        self.disk = await asyncio.get_running_loop().run_in_executor(
            None, disk_view, self.state_dir
        )

    def view(self) -> JSON:
        return status_view(
            self.hall,
            self.handles,
            notice_default=self.notice_default,
            disk=self.disk,
            loop_lag_s=self.loop_lag(),
        )

    def text(self) -> str:
        self.views += 1
        return json.dumps({"t": "status", **self.view()}, ensure_ascii=False)

    async def _run(self) -> None:
        ticks = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await self._dirty.wait()
                await asyncio.sleep(COALESCE_S)
            self._dirty.clear()
            if not self._pages:
                continue
            if ticks % 15 == 0:
                await self.refresh_disk()
            ticks += 1
            try:
                text = self.text()
            except Exception:
                log.exception("status: could not compute the view")
                continue
            for page in list(self._pages):
                if not self.session_alive(page.session):
                    page.latest = None
                    page.wake.set()  # its writer closes it
                elif text != self.last:
                    page.latest = text
                    page.wake.set()
            self.last = text

    async def serve(self, request: web.Request, session_id: str) -> web.StreamResponse:
        if len(self._pages) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text="too many admin pages open")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=4096)
        await ws.prepare(request)
        page = _Page(ws, session_id)
        if not self.disk.get("total_bytes"):
            await self.refresh_disk()
        page.latest = self.text()
        page.wake.set()
        self._pages.add(page)
        writer = asyncio.get_running_loop().create_task(self._write(page))
        try:
            async for msg in ws:  # the page only listens; this notices it going away
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._pages.discard(page)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        return ws

    async def _write(self, page: _Page) -> None:
        while not page.ws.closed:
            await page.wake.wait()
            page.wake.clear()
            if not self.session_alive(page.session):
                await page.ws.close(code=4401, message=b"session ended")
                return
            text, page.latest = page.latest, None
            if text is not None:
                try:
                    await page.ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    return

"""The pages' live feeds: the bus's events in, one small WebSocket message per change out.

One `Feed` per thing a page follows (a configured screen, the kiosk, one ticket's token).
A page that connects gets the feed's full state at once; after each committed event the
hub recomputes the view of every feed that has pages connected, compares it with what
those pages were last sent, and sends only the changed entries. A view is computed and
serialised once per feed, not once per page, so fifty TVs on one screen id cost one view.

Nothing here can hold up the hall: the bus hands events over through its own bounded queue,
and each page has its own small outbox and writer task. A page that cannot keep up (a
stalled network) loses its outbox and is sent a fresh full state once it drains; one whose
TCP connection died is closed by the WebSocket heartbeat.

Nobody can take every page's place: one address holds at most `web.limits.feeds_per_client`
screen and kiosk pages, and one ticket at most `web.limits.feeds_per_ticket` applicant
pages (counted per ticket, not per address: phones behind the city's gateway share one);
the next gets 429 before the upgrade. MAX_CLIENTS stays the limit for everything together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, web

from hall_daemon.bus import Subscription
from hall_daemon.config import HallConfig, ScreenConfig
from hall_daemon.engine import DAY_STARTED
from hall_daemon.events import NOTICE_SET, TICKET_CALLED, TICKET_RECALLED, StoredEvent
from hall_daemon.hall import Hall
from hall_daemon.quietlog import Reporter

from .views import (
    JSON,
    CallLog,
    diff_view,
    kiosk_meta,
    kiosk_view,
    matches_scope,
    screen_calls,
    screen_meta,
    screen_scope,
    screen_view,
    ticket_view,
)

log = logging.getLogger(__name__)

MAX_PENDING = 64  # messages a page may have queued before it is resynchronised instead
MAX_CLIENTS = 5000  # pages at once: far above a hall's TVs and phones, far below trouble
RETRY_AFTER_S = 30  # told to a page refused for its address's or ticket's limit
TICK_S = 15.0  # heartbeat to the pages, and a refresh of what changes with time alone
WS_HEARTBEAT_S = 20.0  # protocol pings; a page that does not answer is closed
BUS_QUEUE = 2000


def dumps(message: JSON) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


class Client:
    """One connected page: its socket and the messages waiting to be written to it."""

    __slots__ = ("address", "pending", "resync", "wake", "ws")

    def __init__(self, ws: web.WebSocketResponse, address: str = "") -> None:
        self.ws = ws
        self.address = address
        self.pending: deque[str] = deque()
        self.resync = False
        self.wake = asyncio.Event()

    def push(self, text: str) -> None:
        if len(self.pending) >= MAX_PENDING:
            # Patches hold absolute values, so dropping them all and sending the full state
            # later is exact; keeping them would only grow memory for a page that is gone.
            self.pending.clear()
            self.resync = True
        else:
            self.pending.append(text)
        self.wake.set()


class Feed:
    """What a kind of page follows. Subclasses say how to compute and announce it."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.clients: set[Client] = set()
        self.last: JSON | None = None  # the view the connected pages were last brought to

    def view(self) -> JSON | None:
        raise NotImplementedError

    def full(self, view: JSON | None) -> JSON:
        raise NotImplementedError

    def message(self, old: JSON | None, new: JSON | None, flashes: list[JSON]) -> JSON | None:
        raise NotImplementedError

    def update(self, flashes: list[JSON]) -> JSON | None:
        new = self.view()
        old, self.last = self.last, new
        return self.message(old, new, flashes)

    def broadcast(self, message: JSON) -> None:
        if self.clients:
            text = dumps(message)
            for c in self.clients:
                c.push(text)


class ScreenFeed(Feed):
    def __init__(self, hub: Hub, screen: ScreenConfig) -> None:
        super().__init__(hub)
        self.screen = screen
        self.scope = screen_scope(hub.config, screen)
        self.meta = screen_meta(hub.config, screen, self.scope)

    def view(self) -> JSON:
        h = self.hub.hall
        return screen_view(h.state, self.scope, h.forecaster, self.hub.calls, h.now())

    def calls_first(self, flashes: list[JSON]) -> JSON | None:
        """The call alone, before the forecasts are worked out: the page shows it at once
        and gets the waiting figures in the next message."""
        quick = screen_calls(self.hub.hall.state, self.scope, self.hub.calls)
        old = self.last
        self.last = {**(old or {}), **quick}
        return self.message(old, self.last, flashes)

    def full(self, view: JSON | None) -> JSON:
        return {
            "t": "full",
            "seq": self.hub.seq,
            "build": self.hub.build,
            "screen": self.meta,
            "notice": self.hub.notice,
            **self.hub.clock(),
            **(view or {}),
        }

    def message(self, old: JSON | None, new: JSON | None, flashes: list[JSON]) -> JSON | None:
        patch = diff_view(old or {}, new or {})
        mine = [f for f in flashes if matches_scope(self.scope, f["service"], f["counter"])]
        if mine:
            patch["flash"] = mine
        return {"t": "patch", "seq": self.hub.seq, **patch} if patch else None


class KioskFeed(Feed):
    def view(self) -> JSON:
        h = self.hub.hall
        return kiosk_view(h.state, h.forecaster, h.now())

    def full(self, view: JSON | None) -> JSON:
        return {
            "t": "full",
            "seq": self.hub.seq,
            "build": self.hub.build,
            "kiosk": kiosk_meta(self.hub.config),
            "notice": self.hub.notice,
            **self.hub.clock(),
            **(view or {}),
        }

    def message(self, old: JSON | None, new: JSON | None, flashes: list[JSON]) -> JSON | None:
        patch = diff_view(old or {}, new or {})
        return {"t": "patch", "seq": self.hub.seq, **patch} if patch else None


class TicketFeed(Feed):
    def __init__(self, hub: Hub, token: str) -> None:
        super().__init__(hub)
        self.token = token

    def view(self) -> JSON | None:
        h = self.hub.hall
        return ticket_view(h.state, self.hub.config, h.forecaster, self.token, h.now())

    def full(self, view: JSON | None) -> JSON:
        if view is None:
            return {"t": "gone"}
        return {"t": "full", "build": self.hub.build, "ticket": view, **self.hub.clock()}

    def message(self, old: JSON | None, new: JSON | None, flashes: list[JSON]) -> JSON | None:
        if new is None:
            # Gone with its hall day: say so once, and nothing of whatever reuses the number.
            return {"t": "gone"} if old is not None else None
        return {"t": "ticket", "ticket": new} if new != old else None


@dataclass
class HubStats:
    events: int = 0
    refreshes: int = 0
    messages: int = 0  # written to sockets
    resyncs: int = 0  # pages sent a full state again because they fell behind
    refused: int = 0  # pages over their address's or ticket's limit


class Hub:
    """Every feed, the recent-calls log and the notice; fed by one bus subscription."""

    def __init__(self, hall: Hall, config: HallConfig, build: str) -> None:
        self.hall = hall
        self.config = config
        self.build = build
        self.notice = config.hall.notice
        self.calls = CallLog()
        self.seq = 0
        self.stats = HubStats()
        self.screens = {s.id: ScreenFeed(self, s) for s in config.screens}
        self.kiosk = KioskFeed(self)
        self.tickets: dict[str, TicketFeed] = {}
        self._flashes: list[JSON] = []
        self._sub: Subscription | None = None
        self._tick: asyncio.Task[None] | None = None
        self._clients: set[Client] = set()
        self._per_address: Counter[str] = Counter()  # screen and kiosk pages
        self._refusals = Reporter(log, "web: display pages refused")
        self._closing = False

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.calls.rebuild(self.hall.state)
        self.seq = self.hall.store.last_seq()
        self.notice = self.hall_notice()
        self._sub = self.hall.bus.subscribe(
            "display", self._on_event, resync=self._resync, maxsize=BUS_QUEUE
        )
        self._tick = asyncio.get_running_loop().create_task(self._ticker(), name="display-tick")

    async def close(self) -> None:
        """Tell every page the daemon is going (they reconnect by themselves) and stop."""
        self._closing = True
        if self._tick is not None:
            self._tick.cancel()
            await asyncio.gather(self._tick, return_exceptions=True)
        closing = [
            c.ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"daemon stopping")
            for c in list(self._clients)
        ]
        if closing:
            # A page that does not answer the close (a dead network) must not hold the
            # daemon's shutdown; its socket goes with the server.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*closing, return_exceptions=True)

    def reload(self, config: HallConfig) -> None:
        """Swap in a re-read config.yaml (SIGHUP): screen titles and scopes, hall names and
        the notice; every connected page gets a fresh full state."""
        self.config = config
        screens: dict[str, ScreenFeed] = {}
        for s in config.screens:
            feed = self.screens.get(s.id) or ScreenFeed(self, s)
            feed.screen = s
            feed.scope = screen_scope(config, s)
            feed.meta = screen_meta(config, s, feed.scope)
            screens[s.id] = feed
        self.screens = screens
        self.notice = self.hall_notice()
        for c in self._clients:
            c.resync = True
            c.wake.set()

    # -- events -----------------------------------------------------------------------------
    async def _on_event(self, e: StoredEvent) -> None:
        self.stats.events += 1
        self.seq = e.seq
        d = e.data
        if e.type in (TICKET_CALLED, TICKET_RECALLED):
            recall = e.type == TICKET_RECALLED
            if recall:
                self.calls.recalled(d["number"])
            else:
                self.calls.called(d["number"], d["service"], d["counter"], e.at)
            self._flashes.append(
                {
                    "number": d["number"],
                    "service": d["service"],
                    "counter": d["counter"],
                    "recall": recall,
                }
            )
        elif e.type == DAY_STARTED:
            self.calls.rebuild(self.hall.state)
        elif e.type == NOTICE_SET:
            self.set_notice(self.hall_notice(d["text"]))
        # A group commit delivers its events together: compute the views once, after the
        # last of them, rather than once per event (the state is already past them all).
        if self._sub is not None and not self._sub.queue.empty():
            return
        if self._flashes:
            # The call first, on its own: the forecasts below cost the simulation and the
            # trees (milliseconds with hundreds waiting); the pages need not wait for them.
            self.refresh_calls()
            await asyncio.sleep(0)  # the pages' writers send it now
        self.refresh()

    async def _resync(self) -> None:
        """The bus dropped events for us: rebuild from the state and resend full states."""
        self.calls.rebuild(self.hall.state)
        self.seq = self.hall.store.last_seq()
        self.notice = self.hall_notice()  # the full states below carry it
        for c in self._clients:
            c.resync = True
            c.wake.set()

    def refresh_calls(self) -> None:
        """Send the screens the pending calls (flash, newest call, counters) and nothing that
        needs a forecast."""
        flashes, self._flashes = self._flashes, []
        for feed in self.screens.values():
            if feed.clients:
                message = feed.calls_first(flashes)
                if message is not None:
                    feed.broadcast(message)

    def refresh(self) -> None:
        """Recompute every followed view and send what changed (with any pending flashes)."""
        self.stats.refreshes += 1
        flashes, self._flashes = self._flashes, []
        feeds: list[Feed] = [*self.screens.values(), self.kiosk, *self.tickets.values()]
        for feed in feeds:
            if feed.clients:
                message = feed.update(flashes)
                if message is not None:
                    feed.broadcast(message)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                # Opening hours and forecasts move with the clock even when nobody acts.
                self.refresh()
                beat = dumps({"t": "hb", **self.clock()})
                for c in self._clients:
                    c.push(beat)
            except Exception:
                log.exception("display refresh failed; will try again")

    def clock(self) -> JSON:
        """The hall's time, so pages show the hall's clock even if their PC's is wrong."""
        now = self.hall.now()
        offset = now.utcoffset()
        return {
            "now": round(now.timestamp() * 1000),
            "utc_offset_min": int(offset.total_seconds() // 60) if offset is not None else 0,
        }

    # -- notice -----------------------------------------------------------------------------
    def hall_notice(self, text: str | None = None) -> str:
        """The notice to show: the admin's (SetNotice, kept in the hall's state and log, so
        it survives a restart), or config.yaml's when the admin's is empty."""
        if text is None:
            text = self.hall.state.notice
        return text or self.config.hall.notice

    def set_notice(self, text: str) -> None:
        if text == self.notice:
            return
        self.notice = text
        message = {"t": "notice", "text": text}
        for feed in [*self.screens.values(), self.kiosk]:
            feed.broadcast(message)

    # -- pages --------------------------------------------------------------------------------
    def ticket_feed(self, token: str) -> TicketFeed:
        feed = self.tickets.get(token)
        if feed is None:
            feed = self.tickets[token] = TicketFeed(self, token)
        return feed

    async def serve(self, request: web.Request, feed: Feed) -> web.StreamResponse:
        """A page's WebSocket for `feed`: the full state now, then patches until it goes."""
        if self._closing:
            raise web.HTTPServiceUnavailable(text="daemon stopping")
        if len(self._clients) >= MAX_CLIENTS:
            log.warning("display: %d pages connected; refusing more", len(self._clients))
            raise web.HTTPServiceUnavailable(text="too many pages connected")
        address = request.remote or ""
        self._refuse_over_limits(feed, address)
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, compress=False, max_msg_size=4096)
        await ws.prepare(request)
        client = Client(ws, address)
        # No await between computing the full state and joining: no patch can slip between.
        view = feed.view()
        if view is None:
            # An unknown token: say so and hang up; nothing to follow, nothing to keep.
            await ws.send_str(dumps(feed.full(None)))
            await ws.close()
            if isinstance(feed, TicketFeed) and not feed.clients:
                self.tickets.pop(feed.token, None)
            return ws
        if not feed.clients:
            feed.last = view
        client.push(dumps(feed.full(view)))
        feed.clients.add(client)
        self._clients.add(client)
        if not isinstance(feed, TicketFeed):
            self._per_address[address] += 1
        writer = asyncio.get_running_loop().create_task(self._write(client, feed))
        try:
            async for _ in ws:
                pass  # pages send nothing; reading answers pings and sees the close
        finally:
            feed.clients.discard(client)
            self._clients.discard(client)
            if not isinstance(feed, TicketFeed):
                self._per_address[address] -= 1
                if self._per_address[address] <= 0:
                    del self._per_address[address]
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if isinstance(feed, TicketFeed) and not feed.clients:
                self.tickets.pop(feed.token, None)
        return ws

    def _refuse_over_limits(self, feed: Feed, address: str) -> None:
        """429 before the upgrade: a screen or kiosk beyond its address's share, a ticket's
        page beyond its ticket's. Phones behind one gateway share an address but not a
        ticket, so their pages are counted per ticket."""
        limits = self.config.web.limits
        if isinstance(feed, TicketFeed):
            if len(feed.clients) < limits.feeds_per_ticket:
                return
            why = f"at most {limits.feeds_per_ticket} pages per ticket"
        elif self._per_address[address] < limits.feeds_per_client:
            return
        else:
            why = f"at most {limits.feeds_per_client} screens and kiosks per address"
        self.stats.refused += 1
        self._refusals.count(why)
        raise web.HTTPTooManyRequests(text=why, headers={"Retry-After": str(RETRY_AFTER_S)})

    async def _write(self, client: Client, feed: Feed) -> None:
        ws = client.ws
        try:
            while not ws.closed:
                await client.wake.wait()
                client.wake.clear()
                if client.resync:
                    client.resync = False
                    self.stats.resyncs += 1
                    await ws.send_str(dumps(feed.full(feed.view())))
                while client.pending:
                    await ws.send_str(client.pending.popleft())
                    self.stats.messages += 1
        except ConnectionError:
            pass  # the page went away; the reader sees the close and cleans up
        except Exception:
            log.exception("display: writing to a page failed; closing it")
            with contextlib.suppress(Exception):
                await ws.close()

    def connected(self) -> dict[str, Any]:
        return {
            "screens": {sid: len(f.clients) for sid, f in self.screens.items()},
            "kiosk": len(self.kiosk.clients),
            "tickets": sum(len(f.clients) for f in self.tickets.values()),
        }

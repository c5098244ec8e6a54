"""Retained live state: queues, counters, tickets and the outlook, coalesced.

Events only say *what* changed (a service, a counter, a ticket); payloads are computed
from the hall's current state when they are sent, so whatever is sent is the latest value.
Each topic goes out at most once per `min_interval_s` (500 ms): the first change goes at
once, changes within the interval wait for its end and then go as one message, so the last
value is always published. An unchanged payload is not sent again. After every reconnect
everything is republished before `online` (the broker or the bridge may have lost it).

A ticket's topic is cleared (an empty retained message) an hour after the ticket finishes.
Tickets leave the hall's memory at the next hall day, and the daemon may restart meanwhile,
so the tokens whose topics are retained on the broker are kept in a small table of this
package in the hall's database: a token is recorded before its topic is first published
and forgotten only after the broker acknowledged its clearing. A recorded token that the
hall no longer knows belongs to a past hall day and is cleared straight away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, bindparam, delete, insert, select

from hall_daemon.engine import DAY_STARTED
from hall_daemon.events import StoredEvent
from hall_daemon.hall import Hall
from hall_daemon.state import CANCELLED, TERMINAL
from hall_daemon.waits import wait_first

from . import payloads
from .connection import Connection, ConnectionLost, PublishRefused, Session

log = logging.getLogger(__name__)

metadata = MetaData()

ticket_topics = Table(
    "sync_ticket_topics",
    metadata,
    Column("token", String(64), primary_key=True),
)

Key = tuple[str, Any]  # ("queue", code) | ("counter", id) | ("ticket", token)
OutlookFn = Callable[..., dict[str, Any]]


class TicketTopics:
    """The table of tokens with a retained topic. Blocking: run through `hall.io`."""

    def __init__(self, hall: Hall) -> None:
        self._hall = hall

    def create(self) -> None:
        metadata.create_all(self._hall.store.engine)

    def load(self) -> list[str]:
        with self._hall.store.engine.connect() as conn:
            return [row.token for row in conn.execute(select(ticket_topics.c.token))]

    # A token at a time, with one statement text each: an `IN (...)` list is a new prepared
    # statement, kept in SQLite's cache, for every list length (see Store.outbox_mark_sent).
    _FIND = select(ticket_topics.c.token).where(ticket_topics.c.token == bindparam("t"))
    _DELETE = delete(ticket_topics).where(ticket_topics.c.token == bindparam("t"))

    def add(self, tokens: list[str]) -> None:
        with self._hall.store.engine.begin() as conn:
            # Idempotent: a row may already be there (a retry after a failed publish).
            rows = [
                {"token": t}
                for t in dict.fromkeys(tokens)
                if conn.execute(self._FIND, {"t": t}).first() is None
            ]
            if rows:
                conn.execute(insert(ticket_topics), rows)

    def remove(self, tokens: list[str]) -> None:
        if tokens:
            with self._hall.store.engine.begin() as conn:
                conn.execute(self._DELETE, [{"t": t} for t in tokens])


@dataclass(slots=True)
class _Seen:
    """What a ticket's topic last said, for when the ticket has left the hall's memory."""

    number: str
    service: str
    state: str
    counter: int | None
    finished_at: datetime | None


def _ignore_result(fut: asyncio.Future[None]) -> None:
    # Fire-and-forget publishes: a lost one is covered by the republish after a reconnect.
    if not fut.cancelled():
        fut.exception()


class LiveState:
    def __init__(
        self,
        hall: Hall,
        conn: Connection,
        topics: payloads.Topics,
        *,
        min_interval_s: float = 0.5,
        ticket_ttl_s: float = 3600.0,
        sweep_every_s: float = 30.0,
        outlook_every_s: float = 60.0,
        ack_timeout_s: float = 10.0,
        settle_s: float = 0.02,
    ) -> None:
        self.hall = hall
        self.conn = conn
        self.topics = topics
        self.min_interval_s = min_interval_s
        self.ticket_ttl = timedelta(seconds=ticket_ttl_s)
        self.sweep_every_s = sweep_every_s
        self.outlook_every_s = outlook_every_s
        self.ack_timeout_s = ack_timeout_s
        self.settle_s = settle_s
        self.table = TicketTopics(hall)
        self.published = 0
        self._sent: dict[str, tuple[bytes, float]] = {}  # topic -> (payload, monotonic time)
        self._due: dict[Key, float] = {}  # held back by the interval: when they may go
        self._dirty: set[Key] = set()
        self._dirty_services: set[str] = set()
        self._all = True
        self._updated: dict[str, datetime] = {}
        self._started_at = hall.now()
        self._tracked: set[str] = set()  # tokens whose topic is (or may be) retained
        self._seen: dict[str, _Seen] = {}  # token -> what its topic last said
        self._cleared: set[str] = set()
        self._outlook: dict[str, Any] | None = None
        self._next_sweep = 0.0
        self._next_outlook = 0.0
        self._wake = asyncio.Event()

    async def load(self) -> None:
        await self.hall.io(self.table.create)
        self._tracked = set(await self.hall.io(self.table.load))
        last = self.hall.store.last_seq()
        latest = await self.hall.io(self.hall.store.events_after, last - 1) if last else []
        if latest:
            self._started_at = latest[-1].at  # queues last changed then, not at our start

    # -- fed by the bus -----------------------------------------------------------------
    def offer(self, ev: StoredEvent) -> None:
        d = ev.data
        services: set[str] = set()
        counter: object = None
        if ev.type == DAY_STARTED:
            self.mark_all()
            return
        if ev.type.startswith("ticket."):
            services = {s for s in (d.get("service"), d.get("from"), d.get("to")) if s}
            t = self.hall.state.tickets.get(d.get("number", ""))
            if t is not None:
                self._dirty.add(("ticket", t.token))
            counter = d.get("counter")
        elif ev.type.startswith("counter."):
            counter = d.get("counter")
        else:
            return  # appointments and devices change no live topic
        if isinstance(counter, int) and counter in self.hall.state.counters:
            self._dirty.add(("counter", counter))
            # Its state and whether it is busy move the forecasts of what it serves.
            services.update(self.hall.state.counters[counter].services)
        for code in services:
            if code in self.hall.state.services:
                self._dirty_services.add(code)
                self._updated[code] = ev.at
        self._wake.set()

    def mark_all(self) -> None:
        self._all = True
        self._wake.set()

    # -- the payloads -------------------------------------------------------------------
    def _keys(self) -> set[Key]:
        s = self.hall.state
        keys = set(self._dirty)
        services = set(self._dirty_services)
        if self._all:
            services = set(s.services)
            keys.update(("counter", c) for c in s.counters)
            keys.update(("ticket", t.token) for t in s.tickets.values())
            # Tickets that left the hall's memory (a new hall day) since we last spoke.
            keys.update(("ticket", tok) for tok in self._seen if tok not in s.by_token)
        for code in services:
            keys.add(("queue", code))
            # Every waiting ticket of the service may now be nearer the front.
            keys.update(("ticket", t.token) for t in s.waiting_tickets(code))
        self._dirty.clear()
        self._dirty_services.clear()
        self._all = False
        now = time.monotonic()
        keys.update(k for k, when in self._due.items() if when <= now)
        return keys

    def _payload(self, key: Key, now: datetime) -> tuple[str, bytes, str | None] | None:
        """(topic, payload, token if a ticket's), or None if the key has no topic now."""
        s = self.hall.state
        kind, ident = key
        if kind == "queue":
            updated = self._updated.get(ident, self._started_at)
            body = payloads.queue_state(s, self.hall.forecaster, ident, now, updated)
            return self.topics.queue(ident), body, None
        if kind == "counter":
            return self.topics.counter(ident), payloads.counter_state(s, ident), None
        token: str = ident
        if token in self._cleared:
            return None
        t = s.by_token.get(token)
        if t is None:
            return self._gone(token, now)
        if t.finished_at is not None and t.finished_at + self.ticket_ttl <= now:
            return None  # the sweep clears it
        self._seen[token] = _Seen(t.number, t.service, t.state, t.counter, t.finished_at)
        body = payloads.ticket_state(s, self.hall.forecaster, t, now)
        return self.topics.ticket(token), body, token

    def _gone(self, token: str, now: datetime) -> tuple[str, bytes, str | None] | None:
        """A ticket no longer in the hall's memory. Only finished tickets leave it, at the
        start of a hall day, and one that was not finished yet was cancelled at the day's
        end: say so (the event log has the `day_end` cancellation), and clear it an hour on."""
        seen = self._seen.get(token)
        if seen is None:
            return None
        if seen.state not in TERMINAL:
            seen.state, seen.finished_at = CANCELLED, now
        if seen.finished_at is not None and seen.finished_at + self.ticket_ttl <= now:
            return None  # the sweep clears it
        body = payloads.ticket_finished(seen.number, seen.service, seen.state, seen.counter)
        return self.topics.ticket(token), body, token

    async def _publish(self, sess: Session, keys: Iterable[Key], *, force: bool) -> list[Any]:
        """Publish what changed; return the futures of what was sent."""
        now = self.hall.now()
        mono = time.monotonic()
        out: list[tuple[str, bytes]] = []
        new_tokens: list[str] = []
        for key in keys:
            found = self._payload(key, now)
            if found is None:
                self._due.pop(key, None)
                continue
            topic, body, token = found
            last = self._sent.get(topic)
            if not force and last is not None:
                if last[0] == body:
                    self._due.pop(key, None)
                    continue
                if mono - last[1] < self.min_interval_s:
                    self._due[key] = last[1] + self.min_interval_s
                    continue
            self._due.pop(key, None)
            if token is not None and token not in self._tracked:
                new_tokens.append(token)
            out.append((topic, body))
        if new_tokens:
            # Recorded first: a topic we forget about would stay retained for ever.
            await self.hall.io(self.table.add, new_tokens)
            self._tracked.update(new_tokens)
        futures = []
        for topic, body in out:
            fut = sess.publish(topic, body, retain=True)
            fut.add_done_callback(_ignore_result)
            futures.append(fut)
            self._sent[topic] = (body, mono)
        self.published += len(futures)
        return futures

    def _outlook_body(self, now: datetime) -> dict[str, Any]:
        provided: OutlookFn | None = getattr(self.hall.forecaster, "outlook", None)
        if callable(provided):
            # A forecaster that knows daily patterns: {"method": ..., "days": [...]}.
            return provided(self.hall.state, now)
        return payloads.outlook_placeholder(self.hall.state, self.hall.forecaster, now)

    def _publish_outlook(self, sess: Session, *, force: bool) -> list[Any]:
        self._next_outlook = time.monotonic() + self.outlook_every_s
        now = self.hall.now()
        body = self._outlook_body(now)
        if not force and body == self._outlook:
            return []
        self._outlook = body
        fut = sess.publish(self.topics.outlook, payloads.outlook(body, now), retain=True)
        fut.add_done_callback(_ignore_result)
        self.published += 1
        return [fut]

    async def _clear_finished(self, sess: Session) -> int:
        """Clear the topics of tickets finished over an hour ago; return how many."""
        self._next_sweep = time.monotonic() + self.sweep_every_s
        now = self.hall.now()
        # Cleared topics stay cleared while their tickets are in memory (today's).
        self._cleared &= set(self.hall.state.by_token)
        due: list[str] = []
        for token in self._tracked:
            t = self.hall.state.by_token.get(token)
            seen = self._seen.get(token)
            if t is not None:
                finished = t.finished_at
            elif seen is not None and seen.state not in TERMINAL:
                continue  # its final state goes out first (see _gone)
            else:
                # Left memory finished; if we never saw it (a past run), its day is over.
                finished = seen.finished_at if seen is not None else None
                finished = finished or now - self.ticket_ttl
            if finished is not None and finished + self.ticket_ttl <= now:
                due.append(token)
        if not due:
            return 0
        futures = [sess.publish(self.topics.ticket(t), b"", retain=True) for t in due]
        async with asyncio.timeout(self.ack_timeout_s):
            results = await asyncio.gather(*futures, return_exceptions=True)
        done = [t for t, r in zip(due, results, strict=True) if r is None]
        if done:
            await self.hall.io(self.table.remove, done)
            for token in done:
                self._tracked.discard(token)
                self._seen.pop(token, None)
                self._cleared.add(token)
                self._sent.pop(self.topics.ticket(token), None)
            log.info("cleared %d finished tickets' topics", len(done))
        self.published += len(done)
        return len(done)

    # -- on a new connection, before `online` --------------------------------------------
    async def republish(self, sess: Session) -> None:
        """Everything, now, and wait for the broker's acknowledgements."""
        self._all = True
        self._due.clear()
        futures = await self._publish(sess, self._keys(), force=True)
        futures += self._publish_outlook(sess, force=True)
        if futures:
            async with asyncio.timeout(self.ack_timeout_s):
                await asyncio.gather(*futures)
        await self._clear_finished(sess)
        log.info("republished %d retained topics", len(futures))

    # -- the coalescing loop ------------------------------------------------------------
    async def run(self) -> None:
        while True:
            sess = await self.conn.wait_ready()
            try:
                while sess.alive:
                    await self._step(sess)
                    await self._sleep(sess)
            except (ConnectionLost, PublishRefused, TimeoutError) as exc:
                log.info("live state paused: %s", exc or type(exc).__name__)

    async def _step(self, sess: Session) -> None:
        if self._wake.is_set():
            # Let the events that woke us go out first: computing hundreds of ticket payloads
            # holds the GIL, and paho's thread needs it to send the event the pump just
            # handed over. The pause also gathers a keypad press's two or three events.
            await asyncio.sleep(self.settle_s)
        self._wake.clear()
        mono = time.monotonic()
        if mono >= self._next_sweep:
            # Now and then everything is looked at again: a forecast may move with the
            # clock alone. Only what changed goes out.
            self._all = True
            await self._clear_finished(sess)
        await self._publish(sess, self._keys(), force=False)
        if mono >= self._next_outlook:
            self._publish_outlook(sess, force=False)

    async def _sleep(self, sess: Session) -> None:
        mono = time.monotonic()
        until = min([self._next_sweep, self._next_outlook, *self._due.values()])
        if self._wake.is_set() or until <= mono:
            return
        await wait_first(self._wake, sess.closed, timeout=until - mono)

    async def flush(self, timeout: float) -> None:
        """At shutdown: send what is held back (once its interval is over) and wait for it."""
        sess = self.conn.session if self.conn.ready.is_set() else None
        if sess is None or not sess.alive:
            return
        deadline = time.monotonic() + timeout
        pending = list(self._due.values())
        if pending:
            await asyncio.sleep(max(0.0, min(max(pending), deadline) - time.monotonic()))
        self._due = dict.fromkeys(self._due, 0.0)
        futures = await self._publish(sess, self._keys(), force=False)
        if futures:
            with contextlib.suppress(ConnectionLost, PublishRefused, TimeoutError):
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                    await asyncio.gather(*futures)

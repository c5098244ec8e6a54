"""The outbox pump: the store's outbox to `<base>/events`, in seq order, at least once.

The outbox in the hall's database is the source of truth; the bus is only a wake-up and a
cache of its newest rows (so that a live event goes out without a database read). Per
connection the pump keeps a window of publishes in flight (QoS 1) and, as PUBACKs come
back, advances `acked`: the highest seq below which everything is acknowledged. Only that
contiguous prefix is marked sent, a batch at a time on the store's thread, so the outbox's
pending rows are always one unbroken tail of the log.

When the connection drops, whatever was in flight is sent again on the next one, from
`acked + 1`: a subscriber may see an event twice across a reconnect (it deduplicates on
`id`), never out of order and never a gap. After a restart the pump starts from the first
pending row, so acknowledged-but-not-yet-marked events (at most one marking interval's
worth) go out once more, too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from hall_daemon.events import StoredEvent
from hall_daemon.hall import Hall
from hall_daemon.store import StoreError
from hall_daemon.waits import wait_first

from . import payloads
from .connection import Connection, ConnectionLost, PublishRefused, Session

log = logging.getLogger(__name__)

_Window = deque[tuple[int, float, asyncio.Future[None]]]  # (seq, when sent, its PUBACK)


class OutboxPump:
    def __init__(
        self,
        hall: Hall,
        conn: Connection,
        topic: str,
        *,
        window: int = 1000,
        batch: int = 500,
        ack_timeout_s: float = 30.0,
        mark_every_s: float = 0.2,
        poll_s: float = 5.0,
    ) -> None:
        self.hall = hall
        self.conn = conn
        self.topic = topic
        self.window = window
        self.batch = batch
        self.ack_timeout_s = ack_timeout_s
        self.mark_every_s = mark_every_s
        self.poll_s = poll_s
        self.acked = 0  # every seq up to this one has been acknowledged by the broker
        self.marked = 0  # ... and marked sent in the outbox up to this one
        self.published = 0
        self.in_flight = 0
        # The newest committed events, as the bus delivered them. Bounded: after a long
        # outage the oldest fall off and the pump reads those from the outbox instead.
        self._tail: deque[StoredEvent] = deque(maxlen=5_000)
        self._wake = asyncio.Event()
        self._to_mark: list[int] = []
        self._mark_wake = asyncio.Event()
        self._started = asyncio.Event()

    # -- fed by the bus -----------------------------------------------------------------
    def offer(self, event: StoredEvent) -> None:
        """A committed event: a hint that there is more to send, and its content."""
        self._tail.append(event)
        self._wake.set()

    def resync(self) -> None:
        """The bus dropped events for us: the outbox still has them; read it."""
        self._tail.clear()
        self._wake.set()

    @property
    def depth(self) -> int:
        """Events not yet acknowledged by the broker."""
        if not self._started.is_set():
            return 0
        return max(self.hall.store.last_seq() - self.acked, 0)

    # -- the tasks ----------------------------------------------------------------------
    async def run(self) -> None:
        if not self._started.is_set():  # once: a restart of this task keeps its place
            first = await self.hall.io(self.hall.store.outbox_pending, 1, 0)
            self.acked = first[0].seq - 1 if first else self.hall.store.last_seq()
            self.marked = self.acked
            self._started.set()
            log.info("outbox: %d events wait for the broker", self.depth)
        while True:
            sess = await self.conn.wait_ready()
            try:
                await self._send(sess)
            except (ConnectionLost, PublishRefused) as exc:
                log.info("outbox paused at seq %d: %s", self.acked, exc)
            finally:
                self.in_flight = 0

    async def mark_loop(self) -> None:
        while True:
            await self._mark_wake.wait()
            self._mark_wake.clear()
            await asyncio.sleep(self.mark_every_s)  # let a batch gather: one commit each
            await self.mark_now()

    async def mark_now(self) -> None:
        seqs, self._to_mark = self._to_mark, []
        if not seqs:
            return
        try:
            await self.hall.io(self.hall.store.outbox_mark_sent, seqs, self.hall.now())
        except (StoreError, RuntimeError) as exc:
            # Unmarked rows are only sent again after a restart; try again with the next.
            log.warning("could not mark %d outbox rows sent: %s", len(seqs), exc)
            self._to_mark = seqs + self._to_mark
            self._mark_wake.set()
            return
        self.marked = max(self.marked, seqs[-1])

    async def flush(self, timeout: float) -> bool:
        """Wait until every committed event is acknowledged and marked (or the time is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._started.is_set() and self.acked >= self.hall.store.last_seq():
                break
            if not self.conn.ready.is_set():
                break  # nothing will be acknowledged; the outbox keeps the rest
            await asyncio.sleep(0.02)
        await self.mark_now()
        return self.acked >= self.hall.store.last_seq()

    # -- one connection's worth ---------------------------------------------------------
    async def _send(self, sess: Session) -> None:
        window: _Window = deque()
        cursor = self.acked
        try:
            while sess.alive:
                self._harvest(window, sess)
                room = min(self.window - len(window), self.batch)
                events = await self._fetch(cursor, room) if room > 0 else []
                for ev in events:
                    fut = sess.publish(self.topic, payloads.event(ev))
                    window.append((ev.seq, time.monotonic(), fut))
                    cursor = ev.seq
                self.published += len(events)
                self.in_flight = len(window)
                if events and len(window) < self.window:
                    continue  # more may be ready: read on before waiting
                await self._wait(window, sess)
        finally:
            for _seq, _t, fut in window:
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    fut.exception()  # retrieved: a dropped connection fails them all

    def _harvest(self, window: _Window, sess: Session) -> None:
        acked = self.acked
        while window and window[0][2].done():
            seq, _t, fut = window.popleft()
            exc = fut.exception()
            if exc is not None:
                if isinstance(exc, PublishRefused):
                    # Whatever came after it may have gone through: only a new connection
                    # can resend from here without breaking the order for subscribers.
                    log.warning("the broker refused event %d: %s", seq, exc)
                    sess.abort(f"the broker refused event {seq}: {exc}")
                raise exc
            acked = seq
            self._to_mark.append(seq)
        if acked != self.acked:
            self.acked = acked
            self._mark_wake.set()
        if window and time.monotonic() - window[0][1] > self.ack_timeout_s:
            log.warning("no PUBACK for event %d in %.0f s", window[0][0], self.ack_timeout_s)
            sess.abort(f"no PUBACK for event {window[0][0]} in {self.ack_timeout_s:.0f} s")
            raise ConnectionLost("PUBACK timeout")

    async def _fetch(self, cursor: int, limit: int) -> list[StoredEvent]:
        tail = self._tail
        while tail and tail[0].seq <= cursor:
            tail.popleft()
        if tail and tail[0].seq == cursor + 1:
            out: list[StoredEvent] = []
            while tail and len(out) < limit and tail[0].seq == cursor + 1 + len(out):
                out.append(tail.popleft())
            return out
        if not tail and cursor >= self.hall.store.last_seq():
            return []  # caught up: nothing committed that we have not sent
        # A gap (a restart, an outage longer than the tail, a lagging bus): read the outbox.
        return await self.hall.io(self.hall.store.outbox_pending, limit, cursor)

    async def _wait(self, window: _Window, sess: Session) -> None:
        """Until an ack, a new event, the connection's end, or a timeout to check again."""
        self._wake.clear()
        if self._tail and (not window or len(window) < self.window):
            return
        waits: list[asyncio.Future[Any]] = [sess.closed]
        if window:
            waits.append(window[0][2])
            timeout = max(self.ack_timeout_s - (time.monotonic() - window[0][1]), 0.0) + 0.01
        else:
            timeout = self.poll_s  # belt and braces: a wake-up lost somewhere costs seconds
        await wait_first(self._wake, *waits, timeout=timeout)

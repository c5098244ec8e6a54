"""The in-process event bus: committed events to outputs, each through its own bounded queue.

Publishing never waits: a subscriber that falls behind loses events from its queue (counted)
and is asked to resynchronise from the hall's current view once it has caught up; one that
raises is logged and carries on with the next event after a short, growing pause. Neither
can block the engine or the other subscribers. Outputs that must see every event (the MQTT
sync) read the store's outbox and use the bus only as a wake-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from .backoff import Backoff
from .events import StoredEvent

log = logging.getLogger(__name__)

Handler = Callable[[StoredEvent], Awaitable[None]]
Resync = Callable[[], Awaitable[None]]


@dataclass
class SubscriberStats:
    delivered: int = 0
    dropped: int = 0
    failures: int = 0
    resyncs: int = 0
    last_error: str = ""


@dataclass
class Subscription:
    name: str
    handler: Handler
    resync: Resync | None
    queue: asyncio.Queue[StoredEvent]
    stats: SubscriberStats = field(default_factory=SubscriberStats)
    lagged: bool = False
    task: asyncio.Task[None] | None = None

    def offer(self, event: StoredEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            if not self.lagged:
                log.warning(
                    "subscriber %s is falling behind; dropping events until it resyncs", self.name
                )
            self.lagged = True
            self.stats.dropped += 1

    async def run(self) -> None:
        pauses = Backoff(first=0.1, cap=5.0)  # grows only while events keep failing in a row
        while True:
            event = await self.queue.get()
            try:
                await self.handler(event)
                self.stats.delivered += 1
                pauses.reset()
                if self.lagged and self.queue.empty():
                    self.lagged = False
                    self.stats.resyncs += 1
                    if self.resync is not None:
                        await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("subscriber %s failed on event %d; going on", self.name, event.seq)
                await asyncio.sleep(pauses.next_delay())


class Bus:
    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}

    def subscribe(
        self, name: str, handler: Handler, *, resync: Resync | None = None, maxsize: int = 1000
    ) -> Subscription:
        if name in self._subs:
            raise ValueError(f"subscriber {name!r} already exists")
        sub = Subscription(name, handler, resync, asyncio.Queue(maxsize))
        sub.task = asyncio.get_running_loop().create_task(self._supervise(sub), name=f"bus:{name}")
        self._subs[name] = sub
        return sub

    async def _supervise(self, sub: Subscription) -> None:
        # run() only ends by cancellation; anything else escaping it is a bug worth surviving.
        while True:
            try:
                await sub.run()
            except asyncio.CancelledError:
                raise
            except BaseException:
                log.exception("subscriber %s crashed; restarting it", sub.name)
                await asyncio.sleep(1.0)

    async def unsubscribe(self, name: str) -> None:
        sub = self._subs.pop(name, None)
        if sub is not None and sub.task is not None:
            sub.task.cancel()
            await asyncio.gather(sub.task, return_exceptions=True)

    def publish(self, events: Sequence[StoredEvent]) -> None:
        for sub in self._subs.values():
            for e in events:
                sub.offer(e)

    def stats(self) -> dict[str, SubscriberStats]:
        return {name: sub.stats for name, sub in self._subs.items()}

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queue is empty (shutdown, tests); gives up after `timeout`."""

        async def empty() -> None:
            while any(not s.queue.empty() for s in self._subs.values()):
                await asyncio.sleep(0.01)

        try:
            async with asyncio.timeout(timeout):
                await empty()
        except TimeoutError:
            log.warning("bus subscribers did not drain within %.1f s", timeout)

    async def close(self) -> None:
        tasks = [s.task for s in self._subs.values() if s.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._subs.clear()

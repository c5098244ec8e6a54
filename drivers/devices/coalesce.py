"""At most one message per key per interval, and the last value always gets through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """`offer(key, value)` sends at once if `key` was quiet for `interval`, else later.

    A value offered while the key is held back replaces the one waiting, so a burst of
    changes costs one message per interval and the last one is never lost. A value equal to
    the last one sent is not sent again.
    """

    def __init__(self, send: Callable[[K, V], None], interval: float = 1.0) -> None:
        self.interval = interval
        self._send = send
        self._sent: dict[K, V] = {}
        self._last: dict[K, float] = {}
        self._pending: dict[K, V] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}

    def offer(self, key: K, value: V) -> None:
        if key not in self._pending and key in self._sent and self._sent[key] == value:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._last.get(key)
        if last is None or now - last >= self.interval:
            self._emit(key, value, now)
            return
        self._pending[key] = value
        if key not in self._timers:
            self._timers[key] = loop.call_at(last + self.interval, self._flush, key)

    def forget(self) -> None:
        """Send every key's next value even if it equals the last (a device that restarted)."""
        self._sent.clear()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()

    def _flush(self, key: K) -> None:
        self._timers.pop(key, None)
        if key not in self._pending:
            return
        value = self._pending.pop(key)
        if key in self._sent and self._sent[key] == value:
            return
        self._emit(key, value, asyncio.get_running_loop().time())

    def _emit(self, key: K, value: V, now: float) -> None:
        self._sent[key] = value
        self._last[key] = now
        self._send(key, value)

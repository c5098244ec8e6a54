"""Login throttling: a growing wait per client address after a few wrong passwords, and a
hall-wide brake when wrong passwords pour in from everywhere.

Pure bookkeeping with the caller's monotonic clock, so the tests need no sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FREE_FAILURES = 5  # wrong passwords a client may type before it has to wait
FIRST_WAIT_S = 1.0  # then 1, 2, 4, ... seconds between tries
MAX_WAIT_S = 900.0
FORGET_S = 3600.0  # a client quiet this long starts afresh
GLOBAL_WINDOW_S = 600.0
GLOBAL_FAILURES = 50  # wrong passwords in the window, from all clients, before everyone waits
GLOBAL_WAIT_S = 60.0
MAX_CLIENTS = 10_000  # addresses remembered; the oldest are forgotten first


@dataclass(slots=True)
class _Client:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class LoginThrottle:
    def __init__(self) -> None:
        self._clients: dict[str, _Client] = {}
        self._recent: deque[float] = deque()
        self._global_until = 0.0
        self.refused = 0

    def retry_after(self, client: str, now: float) -> float:
        """Seconds the client must wait before its next try; 0 when it may try now."""
        self._expire(now)
        wait = self._global_until - now
        c = self._clients.get(client)
        if c is not None:
            wait = max(wait, c.blocked_until - now)
        if wait > 0:
            self.refused += 1
        return max(wait, 0.0)

    def failed(self, client: str, now: float) -> None:
        c = self._clients.pop(client, None) or _Client()
        c.failures += 1
        c.last = now
        if c.failures >= FREE_FAILURES:
            wait = min(FIRST_WAIT_S * 2 ** (c.failures - FREE_FAILURES), MAX_WAIT_S)
            c.blocked_until = now + wait
        self._clients[client] = c  # re-inserted: dict order is least recently failed first
        while len(self._clients) > MAX_CLIENTS:
            self._clients.pop(next(iter(self._clients)))
        self._recent.append(now)
        self._expire(now)
        if len(self._recent) >= GLOBAL_FAILURES:
            self._global_until = now + GLOBAL_WAIT_S

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def failures(self, client: str) -> int:
        c = self._clients.get(client)
        return c.failures if c else 0

    def _expire(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - GLOBAL_WINDOW_S:
            self._recent.popleft()
        while self._clients:
            first = next(iter(self._clients.values()))
            if first.last > now - FORGET_S:
                break
            self._clients.pop(next(iter(self._clients)))

"""Throttles for what strangers can try over HTTP: admin logins, kiosk tickets, check-in codes.

Pure bookkeeping with the caller's monotonic clock, so the tests need no sleeping. Every
attempt is taken (reserved) *before* the expensive or revealing work and given back only if
it succeeded, so a thousand requests sent at once gain nothing over one at a time. What is
kept per client is bounded: the least recently seen clients are forgotten first.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass

FREE_FAILURES = 3  # wrong passwords a client may type before it has to wait
FIRST_WAIT_S = 5.0  # then 5, 10, 20, ... seconds between tries: 6 checks in the first minute
MAX_WAIT_S = 900.0
FORGET_S = 3600.0  # a client quiet this long starts afresh
GLOBAL_WINDOW_S = 600.0
GLOBAL_FAILURES = 50  # wrong passwords in the window, from all clients, before the brake
GLOBAL_WAIT_S = 60.0
MAX_CLIENTS = 10_000  # addresses remembered; the oldest are forgotten first
# The hall PC itself: its browser reaches the daemon from here. No stranger can, so the
# hall-wide brake, which any stranger can pull, never keeps it out.
THIS_PC = frozenset({"127.0.0.1", "::1"})


def client_key(remote: str | None) -> str:
    """Who a request counts as: its IPv4 address, or its IPv6 /64 (one household's or one
    machine's whole range, which an attacker could otherwise walk address by address)."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if str(address) not in THIS_PC:
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass(slots=True)
class _Client:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A try that has been counted as a failure in advance; `succeeded` takes it back."""

    client: str
    at: float


class LoginThrottle:
    """A growing wait per client after a few wrong passwords, and a hall-wide brake (for
    everyone but this PC) when wrong passwords pour in from many addresses."""

    def __init__(self) -> None:
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._recent: deque[float] = deque()
        self._global_until = 0.0
        self.refused = 0

    def reserve(self, client: str, now: float) -> LoginAttempt | float:
        """Count a try as failed before its password is checked: the attempt, or the
        seconds to wait (refused, nothing counted) when the client may not try now."""
        self._expire(now)
        wait = self._wait(client, now)
        if wait > 0:
            self.refused += 1
            return wait
        self._fail(client, now)
        return LoginAttempt(client, now)

    def succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: the client starts afresh, the brake forgets this try."""
        self._clients.pop(attempt.client, None)
        with contextlib.suppress(ValueError):  # already out of the window
            self._recent.remove(attempt.at)

    def failures(self, client: str) -> int:
        c = self._clients.get(client)
        return c.failures if c else 0

    def _wait(self, client: str, now: float) -> float:
        wait = 0.0 if client in THIS_PC else self._global_until - now
        c = self._clients.get(client)
        if c is not None:
            wait = max(wait, c.blocked_until - now)
        return max(wait, 0.0)

    def _fail(self, client: str, now: float) -> None:
        c = self._clients.pop(client, None) or _Client()
        c.failures += 1
        c.last = now
        if c.failures >= FREE_FAILURES:
            wait = min(FIRST_WAIT_S * 2 ** (c.failures - FREE_FAILURES), MAX_WAIT_S)
            c.blocked_until = now + wait
        self._clients[client] = c  # re-inserted: least recently failed first
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        self._recent.append(now)
        if len(self._recent) >= GLOBAL_FAILURES:
            self._global_until = now + GLOBAL_WAIT_S

    def _expire(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - GLOBAL_WINDOW_S:
            self._recent.popleft()
        while self._clients:
            first = next(iter(self._clients.values()))
            if first.last > now - FORGET_S:
                break
            self._clients.popitem(last=False)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Per-client token buckets: `burst` tries at once, then one more every `every_s`.

    At most `max_clients` buckets are kept; the least recently used go first (a forgotten
    client comes back with a full bucket, so a hall-wide bucket must bound the total)."""

    def __init__(self, burst: int, every_s: float, max_clients: int = MAX_CLIENTS) -> None:
        self.burst = burst
        self.every_s = every_s
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0

    def take(self, client: str, now: float) -> float:
        """Take one token: 0.0 if taken, else the seconds until one is there (refused)."""
        b = self._refilled(client, now)
        if b.tokens < 1.0:
            self.refused += 1
            return (1.0 - b.tokens) * self.every_s
        b.tokens -= 1.0
        return 0.0

    def give_back(self, client: str, now: float) -> None:
        b = self._refilled(client, now)
        b.tokens = min(b.tokens + 1.0, float(self.burst))

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, client: str, now: float) -> _Bucket:
        b = self._buckets.pop(client, None)
        if b is None:
            b = _Bucket(float(self.burst), now)
        else:
            b.tokens = min(b.tokens + (now - b.at) / self.every_s, float(self.burst))
            b.at = now
        self._buckets[client] = b
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return b

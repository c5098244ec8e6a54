"""Log lines that a flood could repeat thousands of times a second, at most once per interval.

Whoever floods a port, a topic or the web server must not be able to fill the journal. Two
shapes: `OncePer` writes the first line of a kind at once and counts the others within the
interval, saying in the next line of that kind how many were left out; `Reporter` counts
kinds of one event and writes them together, at most once per interval, and always writes
what it counted once the interval is over (it runs on the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

REPORT_EVERY_S = 60.0


class OncePer:
    """At most one line per `key` every `interval_s` seconds."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        key: str,
        message: str,
        *args: object,
        exc_info: bool = False,
    ) -> bool:
        """Write the line, or count it if one of its kind was written recently. True if written."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            message += " (%d more like it since the last such line were not logged)"
            args = (*args, held)
        logger.log(level, message, *args, exc_info=exc_info)
        return True


class Reporter:
    """A warning at most once per `every` seconds, carrying what was counted meanwhile.

    The first event after a quiet spell is reported at once; the next ones are gathered
    and reported together when the interval is over. Runs on the event loop.
    """

    def __init__(self, logger: logging.Logger, what: str, every: float = REPORT_EVERY_S) -> None:
        self.logger = logger
        self.what = what
        self.every = every
        self.counts: Counter[str] = Counter()
        self._last = -every
        self._pending = False

    def count(self, kind: str) -> None:
        self.counts[kind] += 1
        if self._pending:
            return
        wait = self._last + self.every - time.monotonic()
        if wait <= 0:
            self._report()
        else:
            self._pending = True
            asyncio.get_running_loop().call_later(wait, self._report)

    def _report(self) -> None:
        self._pending = False
        self._last = time.monotonic()
        detail = ", ".join(f"{n} {k}" for k, n in self.counts.most_common())
        self.logger.warning("%s: %s (reported at most every %g s)", self.what, detail, self.every)
        self.counts.clear()

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
from collections.abc import Callable, Hashable

REPORT_EVERY_S = 60.0


class OncePer:
    """At most one line per kind every `interval` seconds, for one logger.

    Kinds must come from a bounded set (fixed words, config's device ids, a codec's reasons),
    never from the input itself, or the table of kinds would grow with the flood.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def log(
        self, level: int, kind: Hashable, msg: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log now, or count it for the next line of this kind; True if logged."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        if held and last is not None:
            msg += " (and %d more like it in the last %.0f s)"
            args = (*args, held, now - last)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def info(self, kind: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, kind, msg, *args)

    def warning(self, kind: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def exception(self, kind: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, kind, msg, *args, exc_info=True)


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

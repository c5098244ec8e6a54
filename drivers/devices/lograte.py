"""At most one log line per kind per interval, however fast a device repeats itself.

A broken or hostile device can send thousands of bad frames a second; a line per frame would
fill the journal and the disk. Kinds must come from a bounded set (fixed words, config's
device ids, a codec's reasons), never from the wire, or the table itself would grow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

LOG_INTERVAL_S = 60.0


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL_S,
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

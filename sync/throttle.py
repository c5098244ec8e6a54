"""Log lines that a flood could repeat thousands of times a second, at most once per interval.

Whoever sends the backend's topics a stream of junk must not be able to fill the journal:
the first line of a kind is written at once, the others of that kind within the interval are
only counted, and the next line written says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


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

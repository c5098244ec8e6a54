"""The pause before trying again after a failure: one rule for every part of the daemon."""

from __future__ import annotations

import random
from collections.abc import Callable

MAX_DOUBLINGS = 60  # past this the ceiling is the cap anyway; keeps 2**n a small float


class Backoff:
    """Capped exponential backoff with equal jitter.

    The n-th failure in a row waits a random time between half and all of
    `min(cap, first * 2**(n-1))`. Never less than half, so a dead device or broker is not
    hammered; spread over the other half, so the ports of a hall, or the halls of a city,
    that lost the same thing in the same second do not all try again together.

    With `healthy_s`, a failure after a run at least that long starts again from `first`:
    a failure now and then is not something that cannot work.
    """

    def __init__(
        self,
        first: float = 0.5,
        cap: float = 30.0,
        *,
        healthy_s: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"a backoff needs 0 < first <= cap, got {first} and {cap}")
        self.first = first
        self.cap = cap
        self.healthy_s = healthy_s
        self.failures = 0  # in a row, since the last reset
        self._rng = rng  # in [0, 1]

    def ceiling(self) -> float:
        """The longest the next delay can be."""
        return min(self.cap, self.first * 2.0 ** min(self.failures, MAX_DOUBLINGS))

    def next_delay(self, ran_s: float | None = None) -> float:
        """The pause after one more failure; `ran_s`: how long the failed run had lasted."""
        if ran_s is not None and self.healthy_s is not None and ran_s >= self.healthy_s:
            self.reset()
        ceiling = self.ceiling()
        self.failures += 1
        return ceiling * (1.0 - self._rng() / 2.0)

    def reset(self) -> None:
        """After a success: the next failure waits at most `first` again."""
        self.failures = 0

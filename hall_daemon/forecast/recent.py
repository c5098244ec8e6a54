"""Small running figures for the feature book: timed windows and moving averages.

A hall's waits drift within a day (a queue builds, callers give up, staff come back from
lunch), so besides long-run means the features need what the last minutes said.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from itertools import islice


class Window:
    """Values of the last `span_s` seconds, oldest first. Times come in order (events are
    learned in order), so "since" is a binary search, not a scan: the features ask a
    window several times per service and snapshot."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.times: deque[float] = deque()
        self.values: deque[float] = deque()

    def add(self, t: float, value: float = 0.0) -> None:
        self.times.append(t)
        self.values.append(value)
        while self.times[0] < t - self.span_s:
            self.times.popleft()
            self.values.popleft()

    def count(self, since: float) -> int:
        return len(self.times) - bisect_left(self.times, since)

    def mean(self, since: float) -> float:
        first = bisect_left(self.times, since)
        n = len(self.values) - first
        return sum(islice(self.values, first, None)) / n if n else math.nan


class Average:
    """An exponentially weighted mean: each new value counts `1 - decay` of the mean once
    there are many; NaN before the first."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.weight = 0.0
        self.total = 0.0

    def add(self, value: float) -> None:
        self.weight = self.weight * self.decay + 1.0
        self.total = self.total * self.decay + value

    @property
    def value(self) -> float:
        return self.total / self.weight if self.weight else math.nan


def share(part: int, other: int) -> float:
    """part / (part + other), NaN when both are 0."""
    return part / (part + other) if part + other else math.nan

"""Small running figures for the feature book: timed windows and moving averages.

A hall's waits drift within a day (a queue builds, callers give up, staff come back from
lunch), so besides long-run means the features need what the last minutes said.
"""

from __future__ import annotations

import math
from collections import deque


class Window:
    """(time, value) pairs of the last `span_s` seconds, oldest first."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.items: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float = 0.0) -> None:
        self.items.append((t, value))
        while self.items and self.items[0][0] < t - self.span_s:
            self.items.popleft()

    def count(self, since: float) -> int:
        return sum(1 for at, _ in self.items if at >= since)

    def mean(self, since: float) -> float:
        values = [v for at, v in self.items if at >= since]
        return sum(values) / len(values) if values else math.nan


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

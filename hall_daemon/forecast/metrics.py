"""Error figures of wait predictions against the waits that happened.

Point errors (MAE, RMSE, bias) count every ticket that was called. The 80 % interval's
coverage counts only the tickets that had to wait: a ticket called at once by an idle
counter has a zero-width truth, and how often such tickets were predicted as 0 is reported
on its own (`zero_hit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scored:
    """One called ticket: what was predicted and what happened (seconds)."""

    predicted: float
    actual: float
    p10: float | None = None
    p90: float | None = None


@dataclass(frozen=True, slots=True)
class Figures:
    n: int
    mean_wait: float
    mae: float
    rmse: float
    bias: float  # mean of predicted - actual: positive promises longer waits than happen
    coverage: float | None  # share of waiting tickets inside [p10, p90]
    n_waited: int
    zero_hit: float | None  # share of tickets called at once that were predicted as 0
    n_at_once: int

    @property
    def relative_rmse(self) -> float:
        return self.rmse / self.mean_wait if self.mean_wait > 0 else math.nan


AT_ONCE_S = 0.5  # called within this long of issue: called at once


def figures(rows: Sequence[Scored]) -> Figures:
    """The figures of a non-empty set of called tickets."""
    if not rows:
        raise ValueError("no called tickets to score")
    n = len(rows)
    errors = [r.predicted - r.actual for r in rows]
    waited = [r for r in rows if r.actual > AT_ONCE_S]
    intervals = [r for r in waited if r.p10 is not None and r.p90 is not None]
    at_once = [r for r in rows if r.actual <= AT_ONCE_S]
    covered = sum(1 for r in intervals if (r.p10 or 0.0) <= r.actual <= (r.p90 or 0.0))
    return Figures(
        n=n,
        mean_wait=sum(r.actual for r in rows) / n,
        mae=sum(abs(x) for x in errors) / n,
        rmse=math.sqrt(sum(x * x for x in errors) / n),
        bias=sum(errors) / n,
        coverage=covered / len(intervals) if intervals else None,
        n_waited=len(waited),
        zero_hit=sum(1 for r in at_once if r.predicted < AT_ONCE_S) / len(at_once)
        if at_once
        else None,
        n_at_once=len(at_once),
    )


def bias_ok(f: Figures) -> bool:
    """The issue's target: |bias| ≤ max(1 min, 5 % of the mean wait)."""
    return abs(f.bias) <= max(60.0, 0.05 * f.mean_wait)


def coverage_ok(f: Figures) -> bool:
    return f.coverage is not None and 0.77 <= f.coverage <= 0.83

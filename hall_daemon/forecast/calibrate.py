"""Calibration learned online from the hall's own recent history.

The simulation's mean is corrected by a linear fit of the actual waits on the simulated
mean (recursive least squares with forgetting, started at the identity), so a hall whose
clerks are slower to call than the model thinks, or whose staffing changes in ways the
snapshot cannot see, still gets unbiased figures. The 80 % interval is split-conformal:
the 10th and 90th percentiles of recent residuals, each divided by the simulated spread,
scale the current spread. Only tickets that had to wait are used.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

import numpy as np

FORGET = 0.998  # the fit remembers roughly the last 500 waits
WINDOW = 600  # residuals kept for the interval
SCALE_FLOOR_S = 30.0  # the spread never counts as less than this in the residual scale


class LinearCalibration:
    """wait ≈ a + b·simulated, least squares over exponentially weighted recent waits, with a
    ridge prior at a = 0, b = 1 worth a few tickets (so day one is the simulation itself).

    Sufficient statistics rather than recursive least squares: they cannot wind up when the
    simulated values hardly vary (a quiet hall), and a fit is a 2x2 solve.
    """

    def __init__(self, prior_weight: float = 10.0) -> None:
        self.prior_weight = prior_weight
        self.n = self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.theta = np.array([0.0, 1.0])

    def predict(self, simulated: float) -> float:
        return float(self.theta[0] + self.theta[1] * simulated)

    def add(self, simulated: float, actual: float) -> None:
        x = min(simulated, 4 * 3600.0)  # one absurd simulation must not steer the fit
        k = FORGET
        self.n = self.n * k + 1
        self.sx = self.sx * k + x
        self.sy = self.sy * k + actual
        self.sxx = self.sxx * k + x * x
        self.sxy = self.sxy * k + x * actual
        self._fit()

    def _fit(self) -> None:
        # Ridge towards (0, 1): the prior acts as prior_weight tickets at the mean simulated
        # value that were forecast exactly, and a weak pull of the intercept to 0.
        w = self.prior_weight
        mx = self.sx / self.n if self.n else 0.0
        scale = max(self.sxx / self.n - mx * mx, 1.0) if self.n else 1.0
        a = np.array(
            [[self.n + w, self.sx + w * mx], [self.sx + w * mx, self.sxx + w * (mx * mx + scale)]]
        )
        b = np.array([self.sy + w * mx, self.sxy + w * (mx * mx + scale)])
        try:
            theta = np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            return
        if np.all(np.isfinite(theta)):
            theta[1] = min(max(theta[1], 0.3), 3.0)
            self.theta = theta


class ConformalInterval:
    """Quantiles of recent normalised residuals (actual − predicted) / spread."""

    # A little wider than 10/90: the hall drifts through the day, and residuals learned
    # under the morning's conditions under-cover the afternoon's (measured on replays).
    def __init__(self, lo: float = 0.09, hi: float = 0.91) -> None:
        self.lo, self.hi = lo, hi
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def add(self, residual: float, spread: float) -> None:
        z = residual / max(spread, SCALE_FLOOR_S)
        self._order.append(z)
        insort(self._sorted, z)
        if len(self._order) > WINDOW:
            old = self._order.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def quantiles(self) -> tuple[float, float] | None:
        n = len(self._sorted)
        if n < 30:
            return None
        return self._sorted[int(self.lo * (n - 1))], self._sorted[int(self.hi * (n - 1) + 0.5)]

"""The learned stage: boosted trees from what the hall looked like to what the wait was.

Trees cannot predict beyond the waits they were trained on, and a hall's worst day is
worse than any before it; the snapshot simulation can (it plays out a queue it has never
seen). So the trees may start from the simulation's answer and learn only its errors.
Where the simulation describes the hall badly (a call centre whose agents take calls the
log does not show), starting from it does harm, so a fit that chooses checks both ways on
the most recent fifth of the history (time-ordered: the past predicts the future, as in
use), and how many trees each way wants, keeps the better, then fits it on everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import boost
from .features import NAMES

SIM, QUEUE_LENGTH = NAMES.index("sim"), NAMES.index("queue_length")
HOLDOUT = 0.2
# How many trees: as many as the holdout's error keeps falling for, within these bounds.
# A noisy hall (a call centre) wants more small steps than a regular one.
TREES, MIN_TREES, MAX_TREES = 100, 50, 300


def simulation_start(x: np.ndarray) -> np.ndarray:
    """The simulation's answer, or the queue-length one where it has none, kept within
    reach of the queue length (a simulation that ran out of horizon says "hours")."""
    sim, ql = x[:, SIM], x[:, QUEUE_LENGTH]
    return np.where(np.isnan(sim), ql, np.minimum(sim, 3 * ql + 900.0))


@dataclass(frozen=True, slots=True)
class Choice:
    """What the holdout chose: start from the simulation or not, and how many trees."""

    from_simulation: bool
    trees: int = TREES


@dataclass(frozen=True, slots=True)
class WaitModel:
    trees: boost.Trees
    choice: Choice

    @property
    def from_simulation(self) -> bool:
        return self.choice.from_simulation

    def predict(self, x: np.ndarray) -> np.ndarray:
        # Rounded as the training rows were stored (float32), so a value on a bin edge
        # falls on the same side as in training.
        x = np.asarray(x, dtype=np.float32).astype(float)
        start = simulation_start(x) if self.from_simulation else None
        out: np.ndarray = np.maximum(self.trees.predict(x, start), 0.0)
        return out


def _trees(x: np.ndarray, y: np.ndarray, from_simulation: bool, trees: int) -> boost.Trees:
    start = simulation_start(x) if from_simulation else None
    return boost.fit(x, y, init=start, trees=trees, depth=4, rate=0.06, l2=100.0, min_leaf=30)


def choose(x: np.ndarray, y: np.ndarray) -> Choice:
    """The way and the number of trees that predict the latest waits best: fitted on the
    older 80 %, scored after each tree on the latest 20 %."""
    cut = int(len(y) * (1 - HOLDOUT))
    x = np.asarray(x, dtype=np.float32).astype(float)  # as `predict` sees rows
    best: tuple[float, Choice] | None = None
    for way in (False, True):
        trees = _trees(x[:cut], y[:cut], way, MAX_TREES)
        start = simulation_start(x[cut:]) if way else None
        staged = np.maximum(trees.staged(x[cut:], start), 0.0)
        errors = np.mean((staged - y[cut:]) ** 2, axis=1)[MIN_TREES - 1 :]
        k = int(np.argmin(errors))
        if best is None or errors[k] < best[0]:
            best = (float(errors[k]), Choice(way, MIN_TREES + k))
    assert best is not None
    return best[1]


def train(x: np.ndarray, y: np.ndarray, choice: Choice | None = None) -> WaitModel:
    """Fit on rows in time order; choose the way and the size unless told."""
    if choice is None:
        choice = choose(x, y)
    return WaitModel(_trees(x, y, choice.from_simulation, choice.trees), choice)

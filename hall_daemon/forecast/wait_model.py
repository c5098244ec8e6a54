"""The learned stage: boosted trees from what the hall looked like to what the wait was.

Trees cannot predict beyond the waits they were trained on, and a hall's worst day is
worse than any before it; the snapshot simulation can (it plays out a queue it has never
seen). So the trees may start from the simulation's answer and learn only its errors.
Where the simulation describes the hall badly (a call centre whose agents take calls the
log does not show), starting from it does harm, so each fit checks both ways on the most
recent fifth of the history (time-ordered: the past predicts the future, as in use) and
keeps the better, then fits the chosen way on everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import boost
from .features import NAMES

SIM, QUEUE_LENGTH = NAMES.index("sim"), NAMES.index("queue_length")
HOLDOUT = 0.2


def simulation_start(x: np.ndarray) -> np.ndarray:
    """The simulation's answer, or the queue-length one where it has none, kept within
    reach of the queue length (a simulation that ran out of horizon says "hours")."""
    sim, ql = x[:, SIM], x[:, QUEUE_LENGTH]
    return np.where(np.isnan(sim), ql, np.minimum(sim, 3 * ql + 900.0))


@dataclass(frozen=True, slots=True)
class WaitModel:
    trees: boost.Trees
    from_simulation: bool

    def predict(self, x: np.ndarray) -> np.ndarray:
        # Rounded as the training rows were stored (float32), so a value on a bin edge
        # falls on the same side as in training.
        x = np.asarray(x, dtype=np.float32).astype(float)
        start = simulation_start(x) if self.from_simulation else None
        out: np.ndarray = np.maximum(self.trees.predict(x, start), 0.0)
        return out


def _fit(x: np.ndarray, y: np.ndarray, from_simulation: bool) -> WaitModel:
    start = simulation_start(x) if from_simulation else None
    trees = boost.fit(x, y, init=start, trees=100, depth=4, rate=0.06, l2=100.0, min_leaf=30)
    return WaitModel(trees, from_simulation)


def choose(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether starting from the simulation predicts the latest waits better."""
    cut = int(len(y) * (1 - HOLDOUT))
    errors = []
    for way in (False, True):
        m = _fit(x[:cut], y[:cut], way)
        errors.append(float(np.mean((m.predict(x[cut:]) - y[cut:]) ** 2)))
    return errors[1] < errors[0]


def train(x: np.ndarray, y: np.ndarray, from_simulation: bool | None = None) -> WaitModel:
    """Fit on rows in time order; choose the way unless told."""
    if from_simulation is None:
        from_simulation = choose(x, y)
    return _fit(x, y, from_simulation)

"""Gradient-boosted regression trees on binned features, in numpy: small, fast, exact.

The forecaster's last stage learns how the hall's real waits relate to what it can see
when a ticket is issued (the simulation's answer, the queue ahead, the counters, the hour,
recent waits). Trees find the interactions and thresholds a linear calibration cannot
(a paused counter matters only when few are open), and a boosted sum of a few hundred
shallow ones is the literature's strongest plain predictor of queue waits.

Histogram boosting, as LightGBM and scikit-learn's HistGradientBoosting do it: every
feature is cut into at most `bins` quantile bins once, and a split search is one
`bincount` per node across all features. Missing values (NaN) get a bin of their own
beyond the last, so they always go right. Squared loss, shrinkage, an L2 penalty on leaf
values and a minimum leaf size keep it from chasing single tickets.

Deterministic: the same data give the same model (no sampling), so a replayed evaluation
is reproducible and matches what the daemon would have computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Trees:
    """A fitted ensemble: per tree, a complete binary tree in heap order (children of node
    i are 2i+1 and 2i+2). Every path runs the full depth: a leaf above the last level is
    stored as a split that always goes left, its value carried down (see `_complete`), so
    prediction is the same few array operations at every level."""

    edges: list[np.ndarray]  # per feature, the upper edges of its bins
    feature: np.ndarray  # trees x nodes, int
    threshold: np.ndarray  # trees x nodes: bin numbers ≤ this go left
    value: np.ndarray  # trees x nodes: a leaf's contribution (shrinkage applied)
    base: float  # the mean the trees correct
    depth: int

    def bin(self, x: np.ndarray) -> np.ndarray:
        return _bin(np.atleast_2d(np.asarray(x, dtype=float)), self.edges)

    def predict(self, x: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Predictions for the rows of `x` (same columns as the training data), starting
        from `init` if the model was fitted from one."""
        n = np.atleast_2d(x).shape[0]
        start = self.base + (0.0 if init is None else np.asarray(init, dtype=float))
        out: np.ndarray = start + self._leaves(x).sum(axis=0)
        return np.broadcast_to(out, (n,)).astype(float)

    def staged(self, x: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Row k: the predictions of the first k + 1 trees (to choose how many to keep)."""
        start = self.base + (0.0 if init is None else np.asarray(init, dtype=float))
        out: np.ndarray = start + np.cumsum(self._leaves(x), axis=0)
        return out

    def _leaves(self, x: np.ndarray) -> np.ndarray:
        """Trees x rows: the value of the leaf each row reaches in each tree."""
        xb = self.bin(x)
        (t, nodes), (n, nf) = self.feature.shape, xb.shape
        # Flat indices and `take` throughout: several times faster than 2-D fancy indexing
        # for the few hundred trees and rows of one snapshot.
        first = (np.arange(t, dtype=np.int32) * nodes)[:, None]  # each tree's node 0, flat
        row = (np.arange(n, dtype=np.int32) * nf)[None, :]  # each row's feature 0, flat
        feature, threshold, bins = self.feature.ravel(), self.threshold.ravel(), xb.ravel()
        at = np.broadcast_to(first, (t, n))  # flat node of each (tree, row)
        for _ in range(self.depth):
            right = bins.take(row + feature.take(at)) > threshold.take(at)
            at = 2 * at - first + 1 + right
        leaves: np.ndarray = self.value.ravel().take(at)
        return leaves


def _bin(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.int32)  # bin numbers: half the memory of int64
    for j, e in enumerate(edges):
        col = x[:, j]
        b = np.searchsorted(e, col, side="left")
        out[:, j] = np.where(np.isnan(col), len(e) + 1, b)
    return out


def _edges(col: np.ndarray, bins: int) -> np.ndarray:
    col = col[~np.isnan(col)]
    if col.size == 0:
        return np.empty(0)
    cuts = np.unique(np.quantile(col, np.linspace(0, 1, bins + 1)[1:-1], method="lower"))
    return cuts.astype(float)


def fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    trees: int = 200,
    depth: int = 4,
    rate: float = 0.06,
    bins: int = 48,
    min_leaf: int = 30,
    l2: float = 5.0,
    weight: np.ndarray | None = None,
    init: np.ndarray | None = None,
) -> Trees:
    """Fit `trees` rounds of depth-`depth` trees to `y` by squared loss, starting from
    `init` (a prediction per row that the trees then correct) if given."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n, nf = x.shape
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    edges = [_edges(x[:, j], bins) for j in range(nf)]
    xb = _bin(x, edges)
    width = max(len(e) for e in edges) + 2 if edges else 2  # bins incl. the NaN bin
    offset = np.arange(nf) * width
    flat = xb + offset[None, :]
    start = np.zeros(n) if init is None else np.asarray(init, dtype=float)
    base = float(np.average(y - start, weights=w)) if n else 0.0
    nodes = 2 ** (depth + 1) - 1
    # int32 like the bins: prediction walks these arrays for every tree and row
    feature = np.full((trees, nodes), -1, dtype=np.int32)
    threshold = np.zeros((trees, nodes), dtype=np.int32)
    value = np.zeros((trees, nodes))
    pred = start + base
    for k in range(trees):
        g = (y - pred) * w  # the negative gradient of the squared loss, weighted
        node = np.zeros(n, dtype=np.int64)
        for level in range(depth):
            first = 2**level - 1
            for i in range(first, 2 * first + 1):
                sel = np.nonzero(node == i)[0]
                if sel.size < 2 * min_leaf:
                    continue
                split = _best_split(flat[sel], g[sel], w[sel], nf, width, min_leaf, l2)
                if split is None:
                    continue
                f, b = split
                feature[k, i], threshold[k, i] = f, b
                node[sel] = 2 * i + 1 + (xb[sel, f] > b)
        # Leaves: every node no split went through (including ones left unsplit early).
        sums = np.bincount(node, weights=g, minlength=nodes)
        counts = np.bincount(node, weights=w, minlength=nodes)
        leaf = rate * np.divide(sums, counts + l2, out=np.zeros(nodes), where=counts + l2 > 0)
        value[k] = np.where(feature[k] < 0, leaf, 0.0)
        pred += leaf[node]
    _complete(feature, threshold, value, depth)
    return Trees(edges, feature, threshold, value, base, depth)


def _complete(feature: np.ndarray, threshold: np.ndarray, value: np.ndarray, depth: int) -> None:
    """Turn every leaf above the last level into a split that always goes left (no bin
    number exceeds the largest int32), carrying its value down to the last level."""
    for level in range(depth):
        at = np.arange(2**level - 1, 2 ** (level + 1) - 1)
        leaf = feature[:, at] < 0
        value[:, 2 * at + 1] = np.where(leaf, value[:, at], value[:, 2 * at + 1])
        feature[:, at] = np.where(leaf, 0, feature[:, at])
        threshold[:, at] = np.where(leaf, np.iinfo(np.int32).max, threshold[:, at])


def _best_split(
    flat: np.ndarray, g: np.ndarray, w: np.ndarray, nf: int, width: int, min_leaf: int, l2: float
) -> tuple[int, int] | None:
    m = flat.shape[0]
    size = nf * width
    gs = np.bincount(flat.ravel(), weights=np.repeat(g, nf), minlength=size).reshape(nf, width)
    hs = np.bincount(flat.ravel(), weights=np.repeat(w, nf), minlength=size).reshape(nf, width)
    cs = np.bincount(flat.ravel(), minlength=size).reshape(nf, width)
    gl, hl, cl = np.cumsum(gs, axis=1), np.cumsum(hs, axis=1), np.cumsum(cs, axis=1)
    gt, ht = gl[:, -1:], hl[:, -1:]
    gr, hr, cr = gt - gl, ht - hl, m - cl
    with np.errstate(divide="ignore", invalid="ignore"):  # empty sides; masked just below
        gain = gl**2 / (hl + l2) + gr**2 / (hr + l2) - gt**2 / (ht + l2)
    gain = np.where((cl >= min_leaf) & (cr >= min_leaf) & np.isfinite(gain), gain, -np.inf)
    best = int(np.argmax(gain))
    f, b = divmod(best, width)
    if not np.isfinite(gain[f, b]) or gain[f, b] <= 1e-9:
        return None
    return f, b

"""The learned ranking of candidates: gradient-boosted regression trees, in numpy.

Consumes feature vectors of measured candidates (``space.features``: knob values, padded share,
working sets per task in log2 bytes, tasks per thread) and their log seconds; produces a model
whose :meth:`BoostedTrees.predict` ranks unmeasured candidates, so that the trials go to the
ones likely to be fast.

Why boosted shallow trees (as Ansor's XGBoost): the effects are thresholds and interactions —
a working set falls out of L1 or L2, an accumulator tile exceeds the registers, a task count
stops dividing by the threads — which trees express directly and linear models do not; they
need no feature scaling and no tuning, and fit the few dozen samples a kernel gets in well
under a millisecond. Depth 2 keeps pairwise interactions; shrinkage (``rate``) and a minimum
leaf size keep a handful of noisy measurements from being memorized. The model is refit from
scratch each round (cheap at this size) on the kernel's own measurements: kernels of other
shapes behave differently enough that sharing would need shape features the space lacks.
"""

from __future__ import annotations

import numpy as np

ROUNDS = 40
DEPTH = 2
RATE = 0.3
MIN_LEAF = 2
THRESHOLDS = 16  # candidate split points per feature (quantiles)


def _fit_tree(x: np.ndarray, r: np.ndarray, depth: int):
    """A regression tree on residuals ``r``: nested (feature, threshold, left, right) tuples,
    leaves are floats."""
    if depth == 0 or len(r) < 2 * MIN_LEAF:
        return float(r.mean())
    best = None
    base = ((r - r.mean()) ** 2).sum()
    for j in range(x.shape[1]):
        col = x[:, j]
        values = np.unique(col)
        if len(values) < 2:
            continue
        mids = (values[:-1] + values[1:]) / 2
        if len(mids) > THRESHOLDS:
            mids = np.quantile(mids, np.linspace(0, 1, THRESHOLDS))
        for t in mids:
            left = col <= t
            nl = int(left.sum())
            if nl < MIN_LEAF or len(r) - nl < MIN_LEAF:
                continue
            rl, rr = r[left], r[~left]
            sse = ((rl - rl.mean()) ** 2).sum() + ((rr - rr.mean()) ** 2).sum()
            if sse < base - 1e-12 and (best is None or sse < best[0]):
                best = (sse, j, t, left)
    if best is None:
        return float(r.mean())
    _, j, t, left = best
    return (j, float(t), _fit_tree(x[left], r[left], depth - 1),
            _fit_tree(x[~left], r[~left], depth - 1))  # fmt: skip


def _predict_tree(tree, x: np.ndarray) -> np.ndarray:
    if not isinstance(tree, tuple):
        return np.full(len(x), tree)
    j, t, lo, hi = tree
    left = x[:, j] <= t
    out = np.empty(len(x))
    out[left] = _predict_tree(lo, x[left])
    out[~left] = _predict_tree(hi, x[~left])
    return out


class BoostedTrees:
    """``fit(X, y)`` then ``predict(X)``: a constant plus ``ROUNDS`` shrunk depth-2 trees."""

    def __init__(self, rounds: int = ROUNDS, depth: int = DEPTH, rate: float = RATE):
        self.rounds, self.depth, self.rate = rounds, depth, rate
        self.base = 0.0
        self.trees: list = []

    def fit(self, x: np.ndarray, y: np.ndarray) -> BoostedTrees:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        self.base = float(y.mean())
        pred = np.full(len(y), self.base)
        self.trees = []
        for _ in range(self.rounds):
            tree = _fit_tree(x, y - pred, self.depth)
            if not isinstance(tree, tuple):
                break  # nothing left to explain
            self.trees.append(tree)
            pred += self.rate * _predict_tree(tree, x)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        out = np.full(len(x), self.base)
        for tree in self.trees:
            out += self.rate * _predict_tree(tree, x)
        return out

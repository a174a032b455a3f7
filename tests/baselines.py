"""Baselines measured in the test's own run, and the margins its data size justifies (issue 19).

A quality test compares a figure with a baseline computed on the same faces in the same run
(the class-prior rate, the bare model, the knowledge-only prior), never with a fixed floor. The
margin over a class-prior baseline is what the test's ``n`` supports: :func:`chance_bound` is the
accuracy that a guesser right with the baseline's probability on every face would exceed with
probability below ``alpha`` (exact binomial tail). With ``ALPHA`` = 1e-6 a test passes by luck
less than once in a million runs; the bound tightens toward the baseline as ``n`` grows.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Iterable

import numpy as np
from scipy.stats import binom

#: Chance that a model no better than the baseline passes a :func:`chance_bound` assertion.
ALPHA = 1e-6


def majority_rate(labels: Iterable[Hashable]) -> float:
    """Share of the commonest label: the accuracy of always answering it (the class prior)."""
    counts = Counter(labels)
    return max(counts.values()) / sum(counts.values())


def chance_bound(base_rate: float, n: int, alpha: float = ALPHA) -> float:
    """Accuracy on ``n`` faces that a guesser at ``base_rate`` exceeds with probability <= alpha.

    ``binom.isf`` gives the smallest k with P(X > k) <= alpha, so "accuracy > k / n" is the test.
    """
    return float(binom.isf(alpha, n, base_rate)) / n


def f1_columns(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Binary F1 per column of (faces, labels) boolean arrays (0 where a column has no positive
    and no prediction)."""
    tp = (pred & gold).sum(0)
    fp = (pred & ~gold).sum(0)
    fn = (~pred & gold).sum(0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def bootstrap_gain_bounds(a: np.ndarray, b: np.ndarray, gold: np.ndarray, groups: list[str],
                          draws: int = 2000, seed: int = 0) -> np.ndarray:
    """Mean-F1 gain of predictions ``a`` over ``b`` (both (faces, labels) booleans) on resamples
    of whole ``groups`` (subjects): returns the ``draws`` resampled gains, for a one-sided bound."""
    names = np.array(sorted(set(groups)))
    rows = {g: np.flatnonzero(np.asarray(groups) == g) for g in names}
    rng = np.random.default_rng(seed)
    gains = np.empty(draws)
    for i in range(draws):
        idx = np.concatenate([rows[g] for g in rng.choice(names, len(names))])
        gains[i] = f1_columns(a[idx], gold[idx]).mean() - f1_columns(b[idx], gold[idx]).mean()
    return gains

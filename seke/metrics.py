"""Evaluation metrics for the three granularities and for confidence (DESIGN.md §9).

Plain numpy, no scikit-learn: the definitions are short and we want them exact and auditable.

* Expression: accuracy, macro-F1 (mean over the classes present in gold *or* prediction; a
  class never predicted and never true does not count), confusion matrix.
* Valence–arousal: RMSE, Lin's concordance correlation coefficient (CCC), sign agreement.
* AUs: per-AU F1 and their mean (over AUs with at least one positive in gold or prediction).
* Confidence: expected calibration error (equal-width bins, default 15) and the Brier score.

Inputs with missing values (``None``/NaN) are dropped pairwise, so a model that failed on some
items is scored on the rest; the evaluator reports the coverage separately.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _pairs(y_true: Sequence, y_pred: Sequence) -> tuple[list, list]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"length mismatch: {len(y_true)} gold vs {len(y_pred)} predicted")
    keep = [(t, p) for t, p in zip(y_true, y_pred) if t is not None and p is not None
            and not (isinstance(t, float) and t != t) and not (isinstance(p, float) and p != p)]
    return [t for t, _ in keep], [p for _, p in keep]


# ---- expression ---------------------------------------------------------------------------

def accuracy(y_true: Sequence[str | None], y_pred: Sequence[str | None]) -> float:
    """Share of exact matches among pairs where both are present (NaN if none)."""
    t, p = _pairs(y_true, y_pred)
    return float(np.mean([a == b for a, b in zip(t, p)])) if t else float("nan")


def confusion_matrix(y_true: Sequence[str | None], y_pred: Sequence[str | None],
                     labels: Sequence[str]) -> np.ndarray:
    """Counts ``m[i, j]`` of gold ``labels[i]`` predicted as ``labels[j]`` (unknown labels dropped)."""
    index = {l: i for i, l in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for a, b in zip(*_pairs(y_true, y_pred)):
        if a in index and b in index:
            m[index[a], index[b]] += 1
    return m


def per_class_f1(y_true: Sequence[str | None], y_pred: Sequence[str | None],
                 labels: Sequence[str] | None = None) -> dict[str, float]:
    """F1 per class; classes absent from both gold and prediction are left out."""
    t, p = _pairs(y_true, y_pred)
    classes = list(labels) if labels is not None else sorted(set(t) | set(p))
    out = {}
    for c in classes:
        tp = sum(1 for a, b in zip(t, p) if a == c and b == c)
        fp = sum(1 for a, b in zip(t, p) if a != c and b == c)
        fn = sum(1 for a, b in zip(t, p) if a == c and b != c)
        if tp + fp + fn == 0:
            continue
        out[c] = 2 * tp / (2 * tp + fp + fn)
    return out


def macro_f1(y_true: Sequence[str | None], y_pred: Sequence[str | None],
             labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-class F1 (see :func:`per_class_f1`)."""
    f = per_class_f1(y_true, y_pred, labels)
    return float(np.mean(list(f.values()))) if f else float("nan")


# ---- valence / arousal --------------------------------------------------------------------

def _arrays(y_true: Sequence[float | None], y_pred: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    t, p = _pairs(y_true, y_pred)
    return np.asarray(t, dtype=float), np.asarray(p, dtype=float)


def rmse(y_true: Sequence[float | None], y_pred: Sequence[float | None]) -> float:
    t, p = _arrays(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2))) if t.size else float("nan")


def ccc(y_true: Sequence[float | None], y_pred: Sequence[float | None]) -> float:
    """Lin's concordance correlation coefficient (population moments), in [-1, 1].

    ``2 cov / (var_t + var_p + (mean_t - mean_p)^2)``; NaN when the denominator is 0
    (both constant and equal), where agreement is undefined rather than perfect.
    """
    t, p = _arrays(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    mt, mp = t.mean(), p.mean()
    cov = np.mean((t - mt) * (p - mp))
    den = t.var() + p.var() + (mt - mp) ** 2
    return float(2 * cov / den) if den > 0 else float("nan")


def sign_agreement(y_true: Sequence[float | None], y_pred: Sequence[float | None],
                   tolerance: float = 0.0) -> float:
    """Share of pairs whose signs agree; values with ``|x| <= tolerance`` count as sign 0."""
    t, p = _arrays(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    st = np.where(np.abs(t) <= tolerance, 0, np.sign(t))
    sp = np.where(np.abs(p) <= tolerance, 0, np.sign(p))
    return float(np.mean(st == sp))


# ---- action units -------------------------------------------------------------------------

def per_au_f1(true_sets: Sequence[Iterable[int] | None], pred_sets: Sequence[Iterable[int] | None],
              aus: Sequence[int]) -> dict[int, float]:
    """F1 per AU over items where both the gold and the predicted AU sets are known.

    AUs with no positive in gold and prediction are left out (F1 undefined).
    """
    t, p = _pairs(true_sets, pred_sets)
    ts, ps = [set(x) for x in t], [set(x) for x in p]
    out = {}
    for au in aus:
        tp = sum(1 for a, b in zip(ts, ps) if au in a and au in b)
        fp = sum(1 for a, b in zip(ts, ps) if au not in a and au in b)
        fn = sum(1 for a, b in zip(ts, ps) if au in a and au not in b)
        if tp + fp + fn:
            out[au] = 2 * tp / (2 * tp + fp + fn)
    return out


def mean_au_f1(true_sets: Sequence[Iterable[int] | None], pred_sets: Sequence[Iterable[int] | None],
               aus: Sequence[int]) -> float:
    f = per_au_f1(true_sets, pred_sets, aus)
    return float(np.mean(list(f.values()))) if f else float("nan")


# ---- confidence ---------------------------------------------------------------------------

def ece(confidence: Sequence[float | None], correct: Sequence[bool | None], n_bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width bins of ``|acc - conf| * n_bin / n``.

    Bins are ``(k/n_bins, (k+1)/n_bins]``, with 0 falling in the first bin.
    """
    c, y = _arrays(confidence, [None if v is None else float(v) for v in correct])
    if c.size == 0:
        return float("nan")
    if np.any((c < 0) | (c > 1)):
        raise ValueError("confidences must lie in [0, 1]")
    idx = np.clip(np.ceil(c * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            total += abs(y[mask].mean() - c[mask].mean()) * mask.sum()
    return float(total / c.size)


def brier(confidence: Sequence[float | None], correct: Sequence[bool | None]) -> float:
    """Binary Brier score of the confidence that the prediction is correct: mean (c - y)^2."""
    c, y = _arrays(confidence, [None if v is None else float(v) for v in correct])
    return float(np.mean((c - y) ** 2)) if c.size else float("nan")


def multiclass_brier(probs: Sequence[Sequence[float] | None], y_true: Sequence[str | None],
                     labels: Sequence[str]) -> float:
    """Multi-class Brier score: mean over items of the squared distance to the one-hot gold."""
    index = {l: i for i, l in enumerate(labels)}
    rows = [(np.asarray(p, float), index[t]) for p, t in zip(probs, y_true)
            if p is not None and t in index]
    if not rows:
        return float("nan")
    total = 0.0
    for p, i in rows:
        onehot = np.zeros(len(labels))
        onehot[i] = 1.0
        total += float(np.sum((p - onehot) ** 2))
    return total / len(rows)

"""The platform's one set of evaluation metrics (DESIGN.md §9), on top of scikit-learn.

Why one module: FEAB evaluation (:mod:`seke.evaluate`), training (:mod:`seke.train.evaluate`),
the quality benches (:mod:`seke.vision.quality`, ``bench/``) and audit mode (:mod:`seke.audit`)
once had three macro-F1 definitions that disagreed on the same predictions (0.556 vs 0.833).
Every caller now goes through these functions, and each delegates to scikit-learn where it has
the metric (accuracy, F1 with an explicit label set, confusion matrix, RMSE, Brier, ROC AUC,
calibration curve), so the definitions are the field's standard ones. Only Lin's CCC and the
expected calibration error, which scikit-learn lacks, are written here.

**Label set of macro-F1 (the decision):** the taxonomy's classes that occur in gold ∪
predictions (:func:`f1_labels`), passed explicitly to scikit-learn. Why not gold only: a
model's false positives into a class that the benchmark lacks would cost it nothing (the
four-prediction example gold ``a a b b``, predicted ``a a b c`` scores 0.833 that way, 0.556
here). Why not the fixed taxonomy: a class absent from both gold and predictions has no F1 at
all (0/0); counting it as 0 or 1 would move the score with the benchmark's composition (FER2013
has no contempt). Per-AU F1 follows the same rule (AUs with a positive in gold or prediction);
a caller that needs one fixed AU or class list for several methods passes it as ``labels`` /
``aus``, and classes of that list absent from both sides are still left out.

Inputs with missing values (``None``/NaN) are dropped pairwise, so a model that failed on some
items is scored on the rest; the evaluator reports the coverage separately.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

#: Bins of the expected calibration error (DESIGN.md §9).
ECE_BINS = 15


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and x != x)


def _pairs(y_true: Sequence, y_pred: Sequence) -> tuple[list, list]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"length mismatch: {len(y_true)} gold vs {len(y_pred)} predicted")
    keep = [(t, p) for t, p in zip(y_true, y_pred) if not _missing(t) and not _missing(p)]
    return [t for t, _ in keep], [p for _, p in keep]


# ---- expression ---------------------------------------------------------------------------

def f1_labels(y_true: Sequence, y_pred: Sequence, labels: Sequence[str] | None = None) -> list[str]:
    """Classes macro-F1 averages over: those of ``labels`` (the taxonomy; default every class
    seen) that occur in gold or in the predictions, in ``labels`` order."""
    t, p = _pairs(y_true, y_pred)
    seen = set(t) | set(p)
    universe = list(labels) if labels is not None else sorted(seen)
    return [c for c in universe if c in seen]


def accuracy(y_true: Sequence[str | None], y_pred: Sequence[str | None]) -> float:
    """Share of exact matches among pairs where both are present (NaN if none)."""
    t, p = _pairs(y_true, y_pred)
    return float(skm.accuracy_score(t, p)) if t else float("nan")


def confusion_matrix(y_true: Sequence[str | None], y_pred: Sequence[str | None],
                     labels: Sequence[str]) -> np.ndarray:
    """Counts ``m[i, j]`` of gold ``labels[i]`` predicted as ``labels[j]`` (pairs with a label
    outside ``labels`` are left out, as scikit-learn does)."""
    t, p = _pairs(y_true, y_pred)
    inside = [(a, b) for a, b in zip(t, p) if a in labels and b in labels]
    if not inside:
        return np.zeros((len(labels), len(labels)), dtype=np.int64)
    return skm.confusion_matrix([a for a, _ in inside], [b for _, b in inside],
                                labels=list(labels)).astype(np.int64)


def per_class_f1(y_true: Sequence[str | None], y_pred: Sequence[str | None],
                 labels: Sequence[str] | None = None) -> dict[str, float]:
    """F1 per class of :func:`f1_labels` (a prediction outside the set is an error for its gold
    class, never a class of its own)."""
    t, p = _pairs(y_true, y_pred)
    classes = f1_labels(t, p, labels)
    if not classes:
        return {}
    f = skm.f1_score(t, p, labels=classes, average=None, zero_division=0.0)
    return {c: float(v) for c, v in zip(classes, f)}


def macro_f1(y_true: Sequence[str | None], y_pred: Sequence[str | None],
             labels: Sequence[str] | None = None) -> float:
    """Unweighted mean F1 over :func:`f1_labels` (scikit-learn ``average="macro"``)."""
    t, p = _pairs(y_true, y_pred)
    classes = f1_labels(t, p, labels)
    if not classes:
        return float("nan")
    return float(skm.f1_score(t, p, labels=classes, average="macro", zero_division=0.0))


# ---- valence / arousal --------------------------------------------------------------------

def _arrays(y_true: Sequence[float | None], y_pred: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    t, p = _pairs(y_true, y_pred)
    return np.asarray(t, dtype=float), np.asarray(p, dtype=float)


def rmse(y_true: Sequence[float | None], y_pred: Sequence[float | None]) -> float:
    t, p = _arrays(y_true, y_pred)
    return float(skm.root_mean_squared_error(t, p)) if t.size else float("nan")


def ccc(y_true: Sequence[float | None], y_pred: Sequence[float | None]) -> float:
    """Lin's concordance correlation coefficient (Lin 1989; population moments), in [-1, 1].

    ``2 cov / (var_t + var_p + (mean_t - mean_p)^2)``; NaN when the denominator is 0 (both
    constant and equal) or with fewer than 2 pairs, where agreement is undefined, not perfect.
    scikit-learn has no CCC.
    """
    t, p = _arrays(y_true, y_pred)
    if t.size < 2:
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
    return float(skm.accuracy_score(st, sp))


# ---- action units -------------------------------------------------------------------------

def binary_f1(pred: Sequence[bool] | np.ndarray, y: Sequence[int] | np.ndarray) -> float:
    """F1 of one binary detector; NaN when neither gold nor prediction has a positive."""
    pred_, y_ = np.asarray(pred, dtype=bool), np.asarray(y).astype(int) == 1
    return float(skm.f1_score(y_, pred_, zero_division=np.nan))


def f1_at_thresholds(scores: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray,
                     thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """F1 of ``scores >= t`` for every ``t`` at once (NaN where F1 is undefined).

    Equal to :func:`binary_f1` at each threshold (tests pin it to scikit-learn's ``f1_score``);
    vectorised because a threshold search calls it for hundreds of cut points per AU.
    """
    s, y_ = np.asarray(scores, float), np.asarray(y).astype(int) == 1
    t = np.asarray(thresholds, float)
    order = np.argsort(s)
    s_sorted, pos_sorted = s[order], y_[order]
    # items with score >= t are those from searchsorted(left) onwards
    start = np.searchsorted(s_sorted, t, side="left")
    pos_above = np.concatenate([np.cumsum(pos_sorted[::-1])[::-1], [0]])
    tp = pos_above[start].astype(float)
    pred_pos = (len(s) - start).astype(float)
    fp, fn = pred_pos - tp, y_.sum() - tp
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def per_au_f1(true_sets: Sequence[Iterable[int] | None], pred_sets: Sequence[Iterable[int] | None],
              aus: Sequence[int]) -> dict[int, float]:
    """F1 per AU of ``aus`` over items where both the gold and the predicted AU sets are known.

    AUs with no positive in gold or prediction are left out (F1 undefined): the same rule as
    the expression classes of :func:`f1_labels`.
    """
    t, p = _pairs(true_sets, pred_sets)
    if not t or not aus:
        return {}
    ts, ps = [set(x) for x in t], [set(x) for x in p]
    yt = np.array([[a in s for a in aus] for s in ts], dtype=bool)
    yp = np.array([[a in s for a in aus] for s in ps], dtype=bool)
    f = skm.f1_score(yt, yp, average=None, zero_division=np.nan)
    return {au: float(v) for au, v, used in zip(aus, f, yt.any(0) | yp.any(0)) if used}


def mean_au_f1(true_sets: Sequence[Iterable[int] | None], pred_sets: Sequence[Iterable[int] | None],
               aus: Sequence[int]) -> float:
    """Mean of :func:`per_au_f1` (NaN when no AU has a positive)."""
    f = per_au_f1(true_sets, pred_sets, aus)
    return float(np.mean(list(f.values()))) if f else float("nan")


def roc_auc(scores: Sequence[float], y: Sequence[int]) -> float:
    """Area under the ROC curve; NaN when gold has one class only."""
    y_ = np.asarray(y).astype(int)
    if y_.min(initial=0) == y_.max(initial=0):
        return float("nan")
    return float(skm.roc_auc_score(y_, np.asarray(scores, float)))


# ---- confidence ---------------------------------------------------------------------------

def _confidence_pairs(confidence: Sequence[float | None], correct: Sequence[bool | None]
                      ) -> tuple[np.ndarray, np.ndarray]:
    c, y = _arrays(confidence, [None if v is None else float(v) for v in correct])
    if np.any((c < 0) | (c > 1)):
        raise ValueError("confidences must lie in [0, 1]")
    return c, y


def reliability_curve(confidence: Sequence[float | None], correct: Sequence[bool | None],
                      n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(accuracy, mean confidence, count)`` per non-empty equal-width bin: scikit-learn's
    ``calibration_curve`` plus the bin counts it does not return (same bins)."""
    c, y = _confidence_pairs(confidence, correct)
    if c.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    prob_true, prob_pred = calibration_curve(y.astype(int), c, n_bins=n_bins, strategy="uniform", pos_label=1)
    counts = np.bincount(_bin_ids(c, n_bins), minlength=n_bins)
    return prob_true, prob_pred, counts[counts > 0]


def _bin_ids(c: np.ndarray, n_bins: int) -> np.ndarray:
    """scikit-learn's uniform binning: bins ``(k/n, (k+1)/n]``, 0 in the first bin."""
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], c)


def ece(confidence: Sequence[float | None], correct: Sequence[bool | None], n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (Guo et al. 2017): ``Σ_bins n_b/n · |acc_b − conf_b|`` over
    ``n_bins`` equal-width bins, binned exactly as :func:`reliability_curve` (scikit-learn has
    the curve but no ECE)."""
    c, y = _confidence_pairs(confidence, correct)
    if c.size == 0:
        return float("nan")
    ids = _bin_ids(c, n_bins)
    gap = np.abs(np.bincount(ids, weights=y, minlength=n_bins) - np.bincount(ids, weights=c, minlength=n_bins))
    return float(gap.sum() / c.size)


def brier(confidence: Sequence[float | None], correct: Sequence[bool | None]) -> float:
    """Binary Brier score of the confidence that the prediction is correct: mean (c - y)^2."""
    c, y = _confidence_pairs(confidence, correct)
    if c.size == 0:
        return float("nan")
    return float(skm.brier_score_loss(y.astype(int), c, labels=[0, 1]))


def multiclass_brier(probs: Sequence[Sequence[float] | None], y_true: Sequence[str | None],
                     labels: Sequence[str]) -> float:
    """Multi-class Brier score: mean over items of the squared distance to the one-hot gold
    (scikit-learn's, unscaled)."""
    index = set(labels)
    rows = [(np.asarray(p, float), t) for p, t in zip(probs, y_true) if p is not None and t in index]
    if not rows:
        return float("nan")
    order = np.argsort(np.asarray(labels, dtype=object))  # scikit-learn wants sorted columns
    proba = np.vstack([p for p, _ in rows])[:, order]
    return float(skm.brier_score_loss([t for _, t in rows], proba, labels=[labels[i] for i in order],
                                      scale_by_half=False))


def most_confident(confidence: Sequence[float], values: Sequence[float], coverage: float) -> list[float]:
    """``values`` of the ``round(coverage · n)`` items with the highest confidence.

    The baseline a selective labeller is compared with at equal coverage: what a confidence
    threshold accepting that share would keep (ties keep input order; NaN coverage keeps none).
    """
    if len(confidence) != len(values):
        raise ValueError(f"{len(confidence)} confidences for {len(values)} values")
    if coverage != coverage:
        return []
    order = sorted(range(len(values)), key=lambda i: -confidence[i])
    return [values[i] for i in order[:round(coverage * len(values))]]

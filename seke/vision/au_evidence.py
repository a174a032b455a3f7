"""Blendshapes -> FACS action units: the documented mapping and the calibrated per-AU models.

Mapping (which ARKit blendshapes carry evidence for which AU). Left/right pairs are averaged, so
the evidence is symmetric and unchanged by a mirror flip. The choices follow the FACS
definitions of each AU (Ekman, Friesen & Hager 2002) matched to ARKit's blendshape definitions
(Apple ARFaceAnchor.BlendShapeLocation documentation):

=====  ==================================================  ====================================
AU     blendshape groups                                    why
=====  ==================================================  ====================================
1      browInnerUp                                          inner brow raised
2      browOuterUp, browInnerUp                             outer brow raised (frontalis pars lateralis pulls both)
4      browDown                                             brows lowered and drawn together
5      eyeWide                                              upper lid raised
6      cheekSquint, eyeSquint, mouthSmile                   cheek raised; co-occurs with AU12 (Duchenne)
7      eyeSquint, eyeBlink                                  lids tightened / narrowed
9      noseSneer, eyeSquint, browDown                       nose wrinkled; it also lowers brows and narrows eyes
10     mouthUpperUp, noseSneer                              upper lip raised
11     mouthUpperUp, mouthStretch                           nasolabial furrow deepened (weak on 2-D landmarks)
12     mouthSmile                                           lip corners pulled up/out
14     mouthDimple, mouthPress                              lip corners tightened inwards
15     mouthFrown, mouthShrugLower                          lip corners pulled down
16     mouthLowerDown                                       lower lip pulled down
17     mouthShrugLower                                      chin boss pushed up
18     mouthPucker                                          lips puckered
20     mouthStretch, mouthFrown                             lips stretched sideways
22     mouthFunnel                                          lips funnelled
23     mouthRollLower, mouthRollUpper, mouthPress           lips tightened / narrowed
24     mouthPress, mouthClose                               lips pressed together
25     mouthLowerDown, jawOpen                              lips parted
26     jawOpen                                              jaw dropped
27     jawOpen                                              mouth stretched open (large jawOpen)
21     (none)                                               neck tightener: not visible to a face mesh
=====  ==================================================  ====================================

Calibration (``python -m seke.vision.calibrate_au``): for each AU a small L2-regularised logistic
model on the AU's blendshape groups plus one knowledge feature, the log-odds of an AU prior:

* ``known`` mode: logit P(AU | known expression) from the knowledge table, plus (as a second
  term) the image-side prior below, which carries the expression's intensity;
* ``blind`` mode: logit sum_e P(e | image) P(AU | e), the prior under the expression model's
  own probabilities.

Each model has a decision threshold chosen for F1 on the training folds. Coefficients, thresholds
and cross-validated figures are stored as a versioned CSV knowledge table
(``seke/knowledge_data/au_calibration_v*.csv``); nothing here is a fitted constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from seke.metrics import f1_at_thresholds
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS
from seke.vision.expression import FER_CLASSES, FER_TO_TAXONOMY
from seke.vision.landmarks import BLENDSHAPE_NAMES

#: AU -> blendshape groups (a group name without Left/Right means the mean of both sides).
AU_BLENDSHAPES: dict[int, tuple[str, ...]] = {
    1: ("browInnerUp",), 2: ("browOuterUp", "browInnerUp"), 4: ("browDown",), 5: ("eyeWide",),
    6: ("cheekSquint", "eyeSquint", "mouthSmile"), 7: ("eyeSquint", "eyeBlink"),
    9: ("noseSneer", "eyeSquint", "browDown"), 10: ("mouthUpperUp", "noseSneer"),
    11: ("mouthUpperUp", "mouthStretch"), 12: ("mouthSmile",), 14: ("mouthDimple", "mouthPress"),
    15: ("mouthFrown", "mouthShrugLower"), 16: ("mouthLowerDown",), 17: ("mouthShrugLower",),
    18: ("mouthPucker",), 20: ("mouthStretch", "mouthFrown"), 21: (), 22: ("mouthFunnel",),
    23: ("mouthRollLower", "mouthRollUpper", "mouthPress"), 24: ("mouthPress", "mouthClose"),
    25: ("mouthLowerDown", "jawOpen"), 26: ("jawOpen",), 27: ("jawOpen",),
}
assert set(AU_BLENDSHAPES) == set(AU_CATALOGUE)

DEFAULT_TABLE = "au_calibration_v2.csv"
MODES = ("known", "blind")
_EPS = 1e-4


def group_value(bs: np.ndarray, group: str) -> float:
    """Value of one blendshape group: the named blendshape, or the mean of its Left/Right pair."""
    if group in BLENDSHAPE_NAMES:
        return float(bs[BLENDSHAPE_NAMES.index(group)])
    return 0.5 * float(bs[BLENDSHAPE_NAMES.index(group + "Left")] + bs[BLENDSHAPE_NAMES.index(group + "Right")])


def logit(p: float | np.ndarray) -> float | np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def expected_au_prior(expr_probs: dict[str, float], expression_au: dict[str, dict[int, float]], au: int) -> float:
    """sum_e P(e | image) P(AU | e): the knowledge prior under uncertain expression."""
    tot = sum(expr_probs.get(e, 0.0) for e in EXPRESSIONS)
    if tot <= 0:
        return float(np.mean([expression_au[e][au] for e in EXPRESSIONS]))
    return sum(expr_probs.get(e, 0.0) * expression_au[e][au] for e in EXPRESSIONS) / tot


def fer_to_taxonomy_dict(p_fer: np.ndarray) -> dict[str, float]:
    out = {e: 0.0 for e in EXPRESSIONS}
    for n, p in zip(FER_CLASSES, p_fer):
        out[FER_TO_TAXONOMY[n]] = float(p)
    return out


@dataclass(frozen=True)
class AUModel:
    """One calibrated AU detector.

    logistic(intercept + coefs . groups + prior_coef * logit(prior) + expr_coef * logit(expected_prior))
    """

    au: int
    mode: str
    groups: tuple[str, ...]
    coefs: tuple[float, ...]
    intercept: float
    prior_coef: float
    expr_coef: float
    threshold: float

    def probability(self, bs: np.ndarray | None, prior: float, expected_prior: float) -> float:
        """Raw calibrated P(AU present | evidence). Without blendshapes, only the prior terms count."""
        z = (self.intercept + self.prior_coef * float(logit(prior))
             + self.expr_coef * float(logit(expected_prior)))
        if bs is not None:  # no blendshapes (no face mesh): the knowledge term alone
            z += sum(c * group_value(bs, g) for c, g in zip(self.coefs, self.groups))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def decision_probability(self, bs: np.ndarray | None, prior: float, expected_prior: float) -> float:
        """Presence probability rescaled so that 0.5 is this AU's F1-optimal threshold.

        Piecewise-linear and monotone: p < t maps to [0, 0.5), p >= t to [0.5, 1]. Downstream
        stages (SV-UAMC vote frequencies, consistency checks) threshold AUs at 0.5.
        """
        p, t = self.probability(bs, prior, expected_prior), min(max(self.threshold, 1e-3), 1 - 1e-3)
        return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1 - t)


def table_path(name: str = DEFAULT_TABLE) -> Path:
    return Path(str(resources.files("seke") / "knowledge_data" / name))


def load_table(path: Path | None = None) -> pl.DataFrame:
    """The AU calibration knowledge table (CSV), default: the packaged current version."""
    return pl.read_csv(path or table_path(), schema_overrides={"groups": pl.String, "coefs": pl.String})


def models_from_table(table: pl.DataFrame) -> dict[tuple[str, int], AUModel]:
    out = {}
    for r in table.iter_rows(named=True):
        groups = tuple(g for g in (r["groups"] or "").split(";") if g)
        coefs = tuple(float(c) for c in (r["coefs"] or "").split(";") if c)
        out[(r["mode"], int(r["au"]))] = AUModel(int(r["au"]), r["mode"], groups, coefs, float(r["intercept"]),
                                                 float(r["prior_coef"]), float(r["expr_coef"]),
                                                 float(r["threshold"]))
    return out


# ---- fitting (used by calibrate_au) ----------------------------------------------------------

def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """L2-regularised logistic regression (scikit-learn, lbfgs); returns [intercept, w...].

    Objective ``Σ log-loss + l2/2 · ||w||²`` with the intercept unpenalised, i.e.
    scikit-learn's ``C = 1 / l2``; the tolerance is tight so refits reproduce the shipped table.
    """
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():  # one class: no slope to fit; the intercept carries the base rate
        rate = float(np.clip(y.mean(), _EPS, 1 - _EPS))
        return np.concatenate([[math.log(rate / (1 - rate))], np.zeros(x.shape[1])])
    lr = LogisticRegression(C=1.0 / l2, tol=1e-8, max_iter=5000).fit(x, y.astype(int))
    return np.concatenate([lr.intercept_, lr.coef_[0]])


def best_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """Threshold maximising F1 (:func:`seke.metrics.f1_at_thresholds`; ties: closest to 0.5); 0.5 when
    there are no positives."""
    if y.sum() == 0:
        return 0.5
    best, best_t = -1.0, 0.5
    cuts = np.unique(np.round(np.concatenate([p, [0.5]]), 4))
    for t, f in zip(cuts, f1_at_thresholds(p, y, cuts)):
        if f > best + 1e-9 or (abs(f - best) <= 1e-9 and abs(t - 0.5) < abs(best_t - 0.5)):
            best, best_t = f, float(t)
    return best_t


def with_au_calibration(knowledge, table: pl.DataFrame | None = None):
    """``knowledge`` with the AU calibration table in ``extra['au_calibration']`` (for the lake)."""
    from dataclasses import replace

    return replace(knowledge, extra={**knowledge.extra, "au_calibration": table if table is not None else load_table()})

"""Expression fusion: the fer model's probabilities re-weighted with blendshape evidence.

Facial geometry is independent evidence the bare mini-Xception does not use explicitly (a smile,
raised brows, an open jaw), so a small multinomial logistic layer on ``[log P_fer(7),
blendshapes(52)]`` is fitted on the FER2013 *train* split and evaluated on its validation split
(no overlap): scikit-learn's multinomial ``LogisticRegression`` (lbfgs, L2 with
``C = 1 / (l2 · n)``, i.e. mean log-loss + ``l2/2 · ||W||²``). The fit starts from the identity on the log-probabilities (``warm_start``),
but the penalty pulls toward zero, as scikit-learn's does: tables fitted before issue 15 shrank
toward the identity with a hand-written Adam loop instead.

The weights are a versioned knowledge table (``seke/knowledge_data/expression_fusion_v2.csv``,
one row per FER class, one column per feature), regenerated with
``python -m seke.vision.calibrate_expression --data ../shared/data/fer2013``. On all 3,589
FER2013 validation faces the shipped v2 table scores 0.6038 against the bare (mirror-averaged)
model's 0.5949 — 137 faces only the fused layer gets right, 105 only the bare model, one-sided
sign test p = 0.023 — as printed by
``python -m seke.vision.evaluate_tables --data ../shared/data/fer2013``
(``tests/seke/test_shipped_tables.py`` asserts the gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seke.vision.au_evidence import table_path
from seke.vision.expression import FER_CLASSES
from seke.vision.landmarks import BLENDSHAPE_NAMES

DEFAULT_TABLE = "expression_fusion_v2.csv"
FEATURES: tuple[str, ...] = tuple(f"logp_{c}" for c in FER_CLASSES) + tuple(f"bs_{n}" for n in BLENDSHAPE_NAMES)


def features(fer_probs: np.ndarray, bs: np.ndarray | None) -> np.ndarray:
    """Feature vector(s): log FER probabilities then blendshapes (zeros when there is no mesh)."""
    fer_probs = np.atleast_2d(fer_probs)
    bs = np.zeros((len(fer_probs), len(BLENDSHAPE_NAMES))) if bs is None else np.atleast_2d(bs)
    return np.hstack([np.log(np.clip(fer_probs, 1e-4, 1.0)), bs])


@dataclass(frozen=True)
class ExpressionFusion:
    """Softmax(W x + b) over FER_CLASSES."""

    weights: np.ndarray  # (7, n_features)
    bias: np.ndarray     # (7,)
    version: str

    def probs(self, fer_probs: np.ndarray, bs: np.ndarray | None) -> np.ndarray:
        z = features(fer_probs, bs) @ self.weights.T + self.bias
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        out = p / p.sum(axis=1, keepdims=True)
        return out[0] if np.ndim(fer_probs) == 1 else out

    def to_table(self, **meta) -> pl.DataFrame:
        rows = []
        for i, c in enumerate(FER_CLASSES):
            row = {"version": self.version, "fer_class": c, "bias": float(self.bias[i])}
            row.update({f: float(w) for f, w in zip(FEATURES, self.weights[i])})
            row.update(meta)
            rows.append(row)
        return pl.DataFrame(rows)

    @staticmethod
    def from_table(table: pl.DataFrame) -> "ExpressionFusion":
        table = table.sort(pl.col("fer_class").replace_strict({c: i for i, c in enumerate(FER_CLASSES)}))
        return ExpressionFusion(table.select(list(FEATURES)).to_numpy().astype(np.float64),
                                table["bias"].to_numpy().astype(np.float64), str(table["version"][0]))


def load(path: Path | None = None) -> ExpressionFusion | None:
    """The packaged fusion table, or None when it has not been generated."""
    path = path or table_path(DEFAULT_TABLE)
    return ExpressionFusion.from_table(pl.read_csv(path)) if path.exists() else None


def fit(fer_probs: np.ndarray, bs: np.ndarray, y: np.ndarray, l2: float = 1e-2,
        version: str = "expression_fusion_v2") -> ExpressionFusion:
    """Multinomial logistic regression (scikit-learn) on :func:`features`; ``y`` are FER class
    indices and every FER class must occur (the table has one row per class, in FER order)."""
    from sklearn.linear_model import LogisticRegression

    x = features(fer_probs, bs)
    n, d = x.shape
    k = len(FER_CLASSES)
    if set(np.unique(y)) != set(range(k)):
        raise ValueError(f"fusion needs examples of all {k} FER classes, got {sorted(set(np.unique(y)))}")
    lr = LogisticRegression(C=1.0 / (l2 * n), tol=1e-6, max_iter=5000, warm_start=True)
    lr.coef_ = np.hstack([np.eye(k), np.zeros((k, d - k))])  # start from the bare model
    lr.intercept_ = np.zeros(k)
    lr.fit(x, y)
    return ExpressionFusion(lr.coef_.astype(np.float64), lr.intercept_.astype(np.float64), version)

"""Expression from face *geometry*: independent evidence for offline verification (issue 15).

The fer mini-Xception reads pixels; this classifier reads only the FaceMesh shape — 136
landmarks normalised for position, roll and inter-ocular distance
(:func:`seke.vision.features.geometry_features`) plus the 52 blendshapes — so it errs
differently: on FER2013 validation it is wrong on 33 % of the faces the fer model gets right
and on 74 % of those the fer model gets wrong (accuracy 0.504 against the fer model's 0.595;
``python -m seke.vision.evaluate_tables --data ../shared/data/fer2013`` prints
these for the shipped table), and its disagreement with a candidate label is what lets
verification reject or correct.

Model: scikit-learn ``StandardScaler`` + multinomial ``LogisticRegression`` (C = 0.05), fitted
on FER2013 *train* and reported on its validation split. Stored as a versioned knowledge table
(``seke/knowledge_data/expression_geometry_v1.csv``: one row per FER class with the weights,
plus ``mean``/``scale`` rows), regenerated with
``python -m seke.vision.calibrate_geometry --data ../shared/data/fer2013``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seke.vision.au_evidence import table_path
from seke.vision.expression import FER_CLASSES

DEFAULT_TABLE = "expression_geometry_v1.csv"


def features(geometry: np.ndarray, bs: np.ndarray) -> np.ndarray:
    return np.hstack([np.atleast_2d(geometry), np.atleast_2d(bs)])


@dataclass(frozen=True)
class GeometryClassifier:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray   # (7, d)
    bias: np.ndarray      # (7,)
    version: str

    def probs(self, geometry: np.ndarray, bs: np.ndarray) -> np.ndarray:
        x = (features(geometry, bs) - self.mean) / self.scale
        z = x @ self.weights.T + self.bias
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p[0] if np.ndim(geometry) == 1 else p

    def to_table(self, **meta) -> pl.DataFrame:
        d = self.weights.shape[1]
        rows = [{"version": self.version, "row": "mean", "bias": 0.0, **{f"w{j}": float(v) for j, v in enumerate(self.mean)}},
                {"version": self.version, "row": "scale", "bias": 0.0, **{f"w{j}": float(v) for j, v in enumerate(self.scale)}}]
        rows += [{"version": self.version, "row": c, "bias": float(self.bias[i]),
                  **{f"w{j}": float(self.weights[i, j]) for j in range(d)}} for i, c in enumerate(FER_CLASSES)]
        return pl.DataFrame(rows).with_columns(**{k: pl.lit(v) for k, v in meta.items()})

    @staticmethod
    def from_table(t: pl.DataFrame) -> "GeometryClassifier":
        cols = sorted((c for c in t.columns if c.startswith("w") and c[1:].isdigit()), key=lambda c: int(c[1:]))
        get = lambda name: t.filter(pl.col("row") == name).select(cols).to_numpy()[0].astype(np.float64)  # noqa: E731
        w = np.stack([get(c) for c in FER_CLASSES])
        b = np.array([t.filter(pl.col("row") == c)["bias"][0] for c in FER_CLASSES], np.float64)
        return GeometryClassifier(get("mean"), get("scale"), w, b, str(t["version"][0]))


def load(path: Path | None = None) -> GeometryClassifier | None:
    path = path or table_path(DEFAULT_TABLE)
    return GeometryClassifier.from_table(pl.read_csv(path)) if path.exists() else None


def fit(geometry: np.ndarray, bs: np.ndarray, y: np.ndarray, c: float = 0.05,
        version: str = "expression_geometry_v1") -> GeometryClassifier:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = features(geometry, bs)
    sc = StandardScaler().fit(x)
    scale = np.where(sc.scale_ > 0, sc.scale_, 1.0)
    lr = LogisticRegression(C=c, max_iter=3000).fit((x - sc.mean_) / scale, y)
    return GeometryClassifier(sc.mean_.astype(np.float64), scale.astype(np.float64), lr.coef_.astype(np.float64),
                              lr.intercept_.astype(np.float64), version)

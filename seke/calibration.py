"""Confidence calibration fitted on audit data, stored as a versioned JSON artefact.

Why: raw confidences (verbalised probabilities, vote shares) are over- or under-confident; a
user who filters labels by confidence needs the number to mean "this share is right". Audit
mode (:mod:`seke.audit`) provides (confidence, correct) pairs on faces whose human label was
hidden; this module fits one monotone map per granularity on them and applies it to new labels.

Methods:
* ``temperature`` — ``c' = σ(logit(c) / T)``, one parameter per granularity, fitted by
  minimising the negative log-likelihood (Guo et al. 2017, "On Calibration of Modern Neural
  Networks", adapted to a binary correct/incorrect target). That is a logistic regression of
  correctness on ``logit(c)`` without intercept and without penalty, coefficient ``1/T``:
  scikit-learn's ``LogisticRegression`` fits it (T kept in [e^-4, e^4]);
* ``isotonic`` — scikit-learn's ``IsotonicRegression`` of correctness on confidence
  (pool-adjacent-violators, Zadrozny & Elkan 2002). The artefact stores its thresholds
  (``X_thresholds_``, ``y_thresholds_``) and applies them by linear interpolation, which is
  exactly what ``IsotonicRegression.predict`` does, so the JSON needs no pickle.

Per source: posed (CK+) and in-the-wild faces are miscalibrated differently, so a source with
at least ``min_source_pairs`` audit pairs of a granularity gets its own map, fitted on its own
pairs only; other sources (and rows that name none) use the pooled map. Measured on the dev
faces (``bench/selective.py``, maps fitted on one half, ECE of accepted labels on the other):
with a map for every source of at least 200 pairs, ECE 0.028 against 0.030 for one pooled map
(FER2013 0.019 against 0.031, wild 0.052 against 0.061), but CK+'s own map, fitted on 331 pairs,
did worse than the pooled one (0.066 against 0.054): an isotonic map needs several hundred
pairs, hence the default of 400 (CK+ then takes the pooled map: ECE 0.023 overall).

The artefact's ``version`` is a content hash of method and parameters, so labels can record
which calibration produced their confidences and a refit with equal parameters keeps its name.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from seke.audit import AuditPair

if TYPE_CHECKING:
    from seke.lake import Lake

SCHEMA_VERSION = 1
METHODS = ("temperature", "isotonic")
#: Row columns holding each granularity's confidence in ``verified_labels``.
CONFIDENCE_COLUMNS = {"expression": "expression_confidence", "va": "va_confidence", "aus": "au_confidence"}
_EPS = 1e-4


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, _EPS, 1 - _EPS)
    return np.log(c / (1 - c))


#: Temperatures outside [e^-4, e^4] are clipped (a coefficient <= 0, i.e. confidence that
#: anti-correlates with correctness, maps to the flattest allowed map).
_LOG_T_RANGE = 4.0


def fit_temperature(conf: Sequence[float], correct: Sequence[bool]) -> float:
    """Temperature minimising the binary NLL: unpenalised logistic regression on ``logit(c)``."""
    from sklearn.linear_model import LogisticRegression

    z = _logit(np.asarray(conf, float))[:, None]
    y = np.asarray(correct, bool)
    if y.all() or not y.any():  # one class only: the NLL falls as T -> 0 (all right) or grows
        return float(math.exp(-_LOG_T_RANGE) if y.all() else math.exp(_LOG_T_RANGE))
    lr = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-10, max_iter=1000).fit(z, y)
    a = float(lr.coef_[0, 0])
    lo, hi = math.exp(-_LOG_T_RANGE), math.exp(_LOG_T_RANGE)
    return float(hi if a <= 1 / hi else min(hi, max(lo, 1.0 / a)))


def fit_isotonic(conf: Sequence[float], correct: Sequence[bool]) -> tuple[list[float], list[float]]:
    """scikit-learn isotonic regression; returns its thresholds (x increasing, y non-decreasing)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(np.asarray(conf, float), np.asarray(correct, float))
    return [float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]


@dataclass(frozen=True)
class Calibration:
    """Per-granularity confidence maps, pooled and per source; a granularity without a map
    passes through unchanged."""

    method: str
    params: dict[str, dict[str, Any]]          # granularity -> {"temperature": T} | {"x": [...], "y": [...]}
    fitted_on: dict[str, int] = field(default_factory=dict)   # granularity (or granularity@source) -> pairs used
    created_at: str = ""
    notes: str = ""
    per_source: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # source -> like params

    @property
    def version(self) -> str:
        content: dict[str, Any] = {"m": self.method, "p": self.params}
        if self.per_source:  # absent from pooled-only artefacts, whose versions stay what they were
            content["s"] = self.per_source
        payload = json.dumps(content, sort_keys=True)
        return f"cal-{self.method}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"

    def apply(self, confidence: float, granularity: str, source: str | None = None) -> float:
        """Calibrated confidence (``au`` and ``aus`` name the same map): the source's own map
        where it has one, else the pooled map."""
        g = "au" if granularity == "aus" else granularity
        p = self.per_source.get(source or "", {}).get(g) or self.params.get(g)
        if p is None or confidence is None:
            return confidence
        if self.method == "temperature":
            z = float(_logit(np.asarray([confidence]))[0])
            return float(1 / (1 + math.exp(-z / p["temperature"])))
        return float(np.clip(np.interp(confidence, p["x"], p["y"]), 0.0, 1.0))

    def apply_to_rows(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Copies of ``verified_labels`` rows with generated confidences calibrated (human ones untouched)."""
        out = []
        for r in rows:
            r = dict(r)
            for g, colname in CONFIDENCE_COLUMNS.items():
                origin = r.get(f"{'au' if g == 'aus' else g}_origin")
                if r.get(colname) is not None and origin not in (None, "human"):
                    r[colname] = self.apply(r[colname], g, r.get("source"))
            out.append(r)
        return out

    # ---- artefact ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "version": self.version, "method": self.method,
                "params": self.params, "per_source": self.per_source, "fitted_on": self.fitted_on,
                "created_at": self.created_at, "notes": self.notes}

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))
        tmp.replace(path)
        return path

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Calibration":
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported calibration schema_version {d.get('schema_version')!r}")
        if d.get("method") not in METHODS:
            raise ValueError(f"unknown calibration method {d.get('method')!r}")
        cal = Calibration(d["method"], dict(d["params"]), dict(d.get("fitted_on", {})),
                          d.get("created_at", ""), d.get("notes", ""), dict(d.get("per_source", {})))
        if d.get("version") and d["version"] != cal.version:
            raise ValueError(f"calibration artefact altered: stored version {d['version']} != {cal.version}")
        return cal

    @staticmethod
    def load(path: str | Path) -> "Calibration":
        return Calibration.from_json(json.loads(Path(path).read_text()))


def fit_calibration(pairs: Sequence[AuditPair], method: str = "temperature", min_pairs: int = 20,
                    accepted_only: bool = True, notes: str = "", min_source_pairs: int = 400) -> Calibration:
    """Fit one pooled map per granularity with at least ``min_pairs`` audit pairs (others pass
    through) and, where the pairs come from more than one source, one map per source with at
    least ``min_source_pairs`` pairs of that granularity (fewer: the source uses the pooled map)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    params: dict[str, dict[str, Any]] = {}
    per_source: dict[str, dict[str, dict[str, Any]]] = {}
    used: dict[str, int] = {}
    for g in ("expression", "va", "au"):
        ps = [p for p in pairs if p.granularity == g and (p.accepted or not accepted_only)]
        if len(ps) < min_pairs:
            continue
        params[g] = _fit_map(method, ps)
        used[g] = len(ps)
        sources = sorted({p.source for p in ps if p.source})
        for src in sources if len(sources) > 1 else ():
            own = [p for p in ps if p.source == src]
            if len(own) >= min_source_pairs:
                per_source.setdefault(src, {})[g] = _fit_map(method, own)
                used[f"{g}@{src}"] = len(own)
    return Calibration(method, params, used, datetime.now(timezone.utc).isoformat(timespec="seconds"), notes,
                       per_source)


def _fit_map(method: str, pairs: Sequence[AuditPair]) -> dict[str, Any]:
    conf = [p.confidence for p in pairs]
    ok = [p.correct for p in pairs]
    if method == "temperature":
        return {"temperature": round(fit_temperature(conf, ok), 6)}
    x, y = fit_isotonic(conf, ok)
    return {"x": x, "y": y}  # unrounded: a steep step moves with the 6th decimal


def read_current_calibration(lake: "Lake") -> Calibration | None:
    """The calibration the last materialization made current, or None (raw confidences)."""
    if not lake.exists("calibration_current"):
        return None
    row = lake.read_table("calibration_current").row(0, named=True)
    return Calibration.from_json(json.loads(row["artefact_json"]))

"""Selective acceptance with a certified error rate (Learn then Test).

Why: a confidence threshold picked by eye ("accept above 0.7") promises nothing about the
labels a user receives. Here the threshold is *certified* on audit faces (human label hidden,
:mod:`seke.audit`): with probability at least ``1 − delta`` over the draw of those faces, the
error rate among accepted labels of the same source is at most ``target``.

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan & Lei, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052, 2021). Each
threshold ``t`` of a grid fixed in advance (:data:`GRID`) is a hypothesis "selective error at
``t`` > target", tested with the exact binomial p-value ``P(Binom(n_acc, target) <= errors)``
(given the accepted count, errors among them are binomial with the selective error rate).
Multiplicity: Bonferroni over the grid (reject where ``p <= delta / len(grid)``), which needs
no monotonicity. We did not use LTT's fixed-sequence testing from the most confident threshold
down: its first hypotheses accept a handful of labels, their p-values cannot be small, and the
sequence stops before it reaches a useful threshold. The lowest rejected threshold (highest
coverage) is certified; when none is rejected, nothing is accepted (``threshold`` is None).

A certificate is tied to what produced the confidences (annotator, knowledge and prompt
versions) and to one source: :meth:`Certificate.matches` refuses it for anything else, and
its ``version`` is a content hash. Labels below the threshold are abstained with reason
:data:`ABSTAIN_REASON`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import binom

ABSTAIN_REASON = "below_certified_threshold"
#: Candidate thresholds, fixed before any data is seen (Bonferroni is valid only then).
GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20)) + (0.975, 0.99)
SCHEMA_VERSION = 1


def binomial_p_value(errors: int, n: int, target: float) -> float:
    """p-value of H0 "error rate > target" after ``errors`` errors in ``n`` accepted labels."""
    if n == 0:
        return 1.0
    return float(binom.cdf(errors, n, target))


@dataclass(frozen=True)
class Certificate:
    """A certified confidence threshold for one (source, granularity) and its provenance."""

    source: str
    granularity: str
    target: float
    delta: float
    threshold: float | None              # None: nothing certified, accept nothing
    n_calibration: int
    calibration_error: float | None      # error among calibration labels at the threshold
    calibration_coverage: float          # accepted share of calibration labels
    versions: dict[str, str] = field(default_factory=dict)  # annotator / knowledge / prompt

    @property
    def version(self) -> str:
        payload = json.dumps({k: v for k, v in asdict(self).items()}, sort_keys=True)
        return f"sel-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"

    def accepts(self, confidence: float | None) -> bool:
        return self.threshold is not None and confidence is not None and confidence >= self.threshold

    def matches(self, source: str, versions: Mapping[str, str]) -> bool:
        """Whether the certificate applies: same source and the same producing versions."""
        return source == self.source and all(versions.get(k) == v for k, v in self.versions.items())

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "version": self.version, **asdict(self)}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Certificate":
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported certificate schema_version {d.get('schema_version')!r}")
        fields = {k: d[k] for k in ("source", "granularity", "target", "delta", "threshold", "n_calibration",
                                    "calibration_error", "calibration_coverage")}
        cert = Certificate(**fields, versions=dict(d.get("versions", {})))
        if d.get("version") and d["version"] != cert.version:
            raise ValueError(f"certificate altered: stored version {d['version']} != {cert.version}")
        return cert


def certify(confidence: Sequence[float], correct: Sequence[bool], target: float, delta: float = 0.1,
            *, source: str = "", granularity: str = "expression",
            versions: Mapping[str, str] | None = None, grid: Sequence[float] | None = None) -> Certificate:
    """Learn-then-Test threshold on calibration pairs (see the module docstring)."""
    if not 0 < target < 1 or not 0 < delta < 1:
        raise ValueError("target and delta must lie in (0, 1)")
    c = np.asarray(confidence, float)
    wrong = ~np.asarray(correct, bool)
    if c.shape != wrong.shape:
        raise ValueError("confidence and correct differ in length")
    grid_ = np.asarray(GRID if grid is None else grid, float)
    n_acc = (c[None, :] >= grid_[:, None]).sum(1)
    errors = (wrong[None, :] & (c[None, :] >= grid_[:, None])).sum(1)
    p_values = np.where(n_acc > 0, binom.cdf(errors, np.maximum(n_acc, 1), target), 1.0)
    rejected = grid_[p_values <= delta / len(grid_)]
    best = float(rejected.min()) if rejected.size else None
    n = len(c)
    acc = c >= best if best is not None else np.zeros(n, bool)
    return Certificate(source, granularity, float(target), float(delta), best, n,
                       float(wrong[acc].mean()) if acc.any() else None,
                       float(acc.mean()) if n else 0.0, dict(versions or {}))


def save(certificates: Iterable[Certificate], path: str | Path) -> Path:
    """Write certificates as one JSON artefact (atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([c.to_json() for c in certificates], indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def load(path: str | Path) -> list[Certificate]:
    return [Certificate.from_json(d) for d in json.loads(Path(path).read_text())]


def apply(rows: Iterable[Mapping[str, Any]], certificates: Sequence[Certificate],
          versions: Mapping[str, str], granularity: str = "expression",
          confidence_column: str = "expression_confidence",
          origin_column: str = "expression_origin") -> list[dict[str, Any]]:
    """Copies of label rows where an accepted, generated label below its source's certified
    threshold becomes abstained with :data:`ABSTAIN_REASON`. Human labels and sources without
    a matching certificate are left as they are."""
    out = []
    for r in rows:
        r = dict(r)
        cert = next((c for c in certificates if c.granularity == granularity
                     and c.matches(r.get("source", ""), versions)), None)
        if (cert is not None and r.get("status") == "accepted" and r.get(origin_column) not in (None, "human")
                and not cert.accepts(r.get(confidence_column))):
            r["status"], r["abstain_reason"] = "abstained", ABSTAIN_REASON
        out.append(r)
    return out

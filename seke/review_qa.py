"""QA sample of accepted labels, and the live estimate of accepted-label error it gives.

Why: abstained faces go to review anyway, but nothing measured how often an *accepted* label is
wrong. A seeded random share of each partition's accepted labels (:class:`ReviewPolicy.qa_rate`,
2 % by default) is sent to review blind (no pre-annotation to anchor on), and every import of
reviewers' answers re-estimates the error rate of accepted labels per granularity.

* **Sample** (:func:`draw_qa_sample`). Eligible: status ``accepted`` with at least one
  *generated* granularity (origin ``generated`` or ``verified``; human-origin labels are the
  source's, not the annotator's). The target is ``ceil(qa_rate × N)`` faces, N = eligible faces
  plus those already sampled, so each partition with accepted labels gets at least one QA face.
  Faces are ranked by ``sha256(seed:face_id)``: the choice is random but reproducible and does not
  depend on the other faces. A drawn face stays drawn, with the labels *as accepted then*
  (reviewed QA faces become human knowledge, so their current label no longer says what the
  annotator produced); re-drawing only tops the sample up when the target grows.
* **Outcome** (:func:`qa_outcomes`). Per QA face with a review consensus, each generated
  granularity of the snapshot whose consensus is decided is compared: expression by equality, VA
  wrong when either axis is further than ``va_tolerance`` from the consensus, AUs wrong when the
  sets differ. A face the reviewers call unusable counts as an error at every generated
  granularity (no label should have been accepted for it). ``any``: the face has at least one error.
* **Estimate** (:func:`error_estimates`). errors / reviewed per granularity with a Wilson score
  interval (Wilson 1927, JASA 22:209; recommended over the Wald interval for small n and rates
  near 0 by Brown, Cai & DasGupta 2001, Stat. Sci. 16:101), from ``scipy.stats.binomtest``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
from scipy.stats import binomtest

from seke.review_agreement import VA_TOLERANCE, Agreement

#: Origins of labels the annotator produced (``human`` = the source's label, never QA'd).
GENERATED = ("generated", "verified")
QA_REASON = "qa_sample"
SENT_BACK_REASON = "sent_back"
#: (granularity, value columns, origin column) of the snapshot.
_GRANULARITIES = (("expression", ("expression",), "expression_origin"),
                  ("va", ("valence", "arousal"), "va_origin"),
                  ("aus", ("aus",), "au_origin"))


@dataclass(frozen=True)
class ReviewPolicy:
    """How review estimates quality: the QA sample and the tolerances and interval it uses."""

    qa_rate: float = field(default=0.02, metadata={"help": "share of each batch's accepted labels sent "
                                                           "to review blind as a QA sample (env SEKE_REVIEW_QA_RATE)"})
    qa_seed: int = field(default=0, metadata={"help": "seed of the QA sample (sha256 rank of seed:face_id)"})
    va_tolerance: float = field(default=VA_TOLERANCE, metadata={
        "help": "VA: reviewers agree, and an accepted VA label is right, within this distance per axis"})
    confidence: float = field(default=0.95, metadata={"help": "level of the Wilson interval of the error estimate"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.qa_rate <= 1.0:
            raise ValueError(f"qa_rate {self.qa_rate} outside [0, 1]")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence {self.confidence} outside (0, 1)")
        if self.va_tolerance < 0:
            raise ValueError(f"va_tolerance {self.va_tolerance} is negative")


#: The ``review_qa_sample`` lake table: the accepted labels drawn for QA, as they were when drawn.
QA_SAMPLE = pa.schema([
    ("face_id", pa.string()),
    ("expression", pa.string()),
    ("expression_origin", pa.string()),
    ("valence", pa.float64()),
    ("arousal", pa.float64()),
    ("va_origin", pa.string()),
    ("aus", pa.list_(pa.int32())),
    ("au_origin", pa.string()),
    ("qa_rate", pa.float64()),
    ("qa_seed", pa.int64()),
    ("sampled_at", pa.string()),
])

#: The ``review_quality`` lake table (long format, one row per metric and granularity).
REVIEW_QUALITY = pa.schema([
    ("metric", pa.string()),       # krippendorff_alpha | qa_error
    ("granularity", pa.string()),
    ("value", pa.float64()),       # alpha, or the error rate (null: undefined / nothing reviewed)
    ("n", pa.int64()),             # alpha: units with two voters; qa_error: QA faces compared
    ("errors", pa.int64()),
    ("ci_low", pa.float64()),
    ("ci_high", pa.float64()),
    ("method", pa.string()),
    ("computed_at", pa.string()),
])


def _frame(rows: list[dict[str, Any]], schema: pa.Schema) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_pylist(rows, schema=schema))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _rank(seed: int, face_id: str) -> str:
    return hashlib.sha256(f"{seed}:{face_id}".encode()).hexdigest()


def eligible(labels: pl.DataFrame) -> pl.DataFrame:
    """Accepted faces with at least one generated granularity."""
    if labels.height == 0:
        return labels
    generated = pl.any_horizontal(*(pl.col(o).is_in(list(GENERATED)).fill_null(False) for _, _, o in _GRANULARITIES))
    return labels.filter((pl.col("status") == "accepted") & generated)


def draw_qa_sample(labels: pl.DataFrame, policy: ReviewPolicy, sampled_at: str,
                   previous: pl.DataFrame | None = None) -> pl.DataFrame:
    """The partition's QA sample (:data:`QA_SAMPLE`): ``previous`` rows kept as they are, topped
    up from the eligible faces of ``labels`` (a verified_labels partition) to the target share."""
    empty = _frame([], QA_SAMPLE)
    kept = (previous.select(QA_SAMPLE.names).cast(empty.schema)  # type: ignore[arg-type]
            if previous is not None and previous.height else empty)
    have = set(kept["face_id"].to_list())
    pool = eligible(labels).filter(~pl.col("face_id").is_in(list(have)))
    # rounded first: 0.07 * 100 is 7.000000000000001 in binary, and must not become 8
    target = math.ceil(round(policy.qa_rate * (pool.height + len(have)), 9))
    need = max(0, target - len(have))
    if need == 0 or pool.height == 0:
        return kept.sort("face_id")
    picked = sorted(pool.iter_rows(named=True), key=lambda r: _rank(policy.qa_seed, r["face_id"]))[:need]
    new = [{**{c: r.get(c) for c in QA_SAMPLE.names if c in r}, "qa_rate": policy.qa_rate,
            "qa_seed": policy.qa_seed, "sampled_at": sampled_at} for r in picked]
    return pl.concat([kept, _frame(new, QA_SAMPLE)]).sort("face_id")


def queue_reasons(sample: pl.DataFrame | None, reviewed: pl.DataFrame | None) -> dict[str, str]:
    """Faces ``review_queue`` must (re-)export and why: QA faces nobody has reviewed yet, and
    reviewed faces with undecided granularities (``sent_back:<granularities>``)."""
    done = set(reviewed["face_id"].to_list()) if reviewed is not None and reviewed.height else set()
    out: dict[str, str] = {}
    if sample is not None:
        out.update({f: QA_REASON for f in sample["face_id"].to_list() if f not in done})
    if reviewed is not None and reviewed.height and "sent_back" in reviewed.columns:
        for r in reviewed.filter(pl.col("sent_back").list.len().fill_null(0) > 0).iter_rows(named=True):
            out[r["face_id"]] = f"{SENT_BACK_REASON}:{','.join(r['sent_back'])}"
    return out


def _wrong(granularity: str, snap: dict[str, Any], cons: dict[str, Any], tol: float) -> bool | None:
    """Whether the snapshot's label is wrong at ``granularity``; ``None`` = not comparable."""
    if granularity == "expression":
        if snap["expression"] is None or cons["expression"] is None:
            return None
        return snap["expression"] != cons["expression"]
    if granularity == "va":
        if None in (snap["valence"], snap["arousal"], cons["valence"], cons["arousal"]):
            return None
        return (abs(snap["valence"] - cons["valence"]) > tol + 1e-9
                or abs(snap["arousal"] - cons["arousal"]) > tol + 1e-9)
    if snap["aus"] is None or cons["aus"] is None:
        return None
    return set(snap["aus"]) != set(cons["aus"])


def qa_outcomes(sample: pl.DataFrame | None, consensus: pl.DataFrame,
                va_tolerance: float = VA_TOLERANCE) -> pl.DataFrame:
    """Per reviewed QA face: the granularities ``compared`` and those found ``wrong``."""
    cons = {r["face_id"]: r for r in consensus.iter_rows(named=True)} if consensus.height else {}
    rows = []
    for snap in sample.iter_rows(named=True) if sample is not None and sample.height else []:
        c = cons.get(snap["face_id"])
        if c is None:
            continue
        compared, wrong = [], []
        for g, _, origin in _GRANULARITIES:
            if snap[origin] not in GENERATED:
                continue
            verdict = True if c.get("unusable") is True else _wrong(g, snap, c, va_tolerance)
            if verdict is None:
                continue  # not answered or undecided (sent back): not yet evidence
            compared.append(g)
            if verdict:
                wrong.append(g)
        rows.append({"face_id": snap["face_id"], "compared": compared, "wrong": wrong,
                     "unusable": bool(c.get("unusable"))})
    return pl.DataFrame(rows, schema={"face_id": pl.String, "compared": pl.List(pl.String),
                                      "wrong": pl.List(pl.String), "unusable": pl.Boolean})


@dataclass(frozen=True)
class ErrorEstimate:
    """Accepted-label error at one granularity: errors / reviewed with a Wilson interval."""

    granularity: str
    reviewed: int
    errors: int
    confidence: float

    @property
    def rate(self) -> float | None:
        return self.errors / self.reviewed if self.reviewed else None

    @property
    def interval(self) -> tuple[float, float] | None:
        if not self.reviewed:
            return None
        ci = binomtest(self.errors, self.reviewed).proportion_ci(confidence_level=self.confidence, method="wilson")
        return float(ci.low), float(ci.high)

    def as_dict(self) -> dict[str, Any]:
        lo_hi = self.interval
        return {"reviewed": self.reviewed, "errors": self.errors,
                "rate": None if self.rate is None else round(self.rate, 4),
                "ci": None if lo_hi is None else [round(lo_hi[0], 4), round(lo_hi[1], 4)],
                "confidence": self.confidence, "method": "wilson"}


def error_estimates(outcomes: pl.DataFrame, confidence: float = 0.95) -> dict[str, ErrorEstimate]:
    """Per granularity (``expression``, ``va``, ``aus``) and ``any`` (a face with some error)."""
    rows = list(outcomes.iter_rows(named=True)) if outcomes.height else []
    out = {}
    for g, _, _ in _GRANULARITIES:
        n = sum(g in r["compared"] for r in rows)
        out[g] = ErrorEstimate(g, n, sum(g in r["wrong"] for r in rows), confidence)
    compared = [r for r in rows if r["compared"]]
    out["any"] = ErrorEstimate("any", len(compared), sum(bool(r["wrong"]) for r in compared), confidence)
    return out


def quality_rows(alphas: dict[str, Agreement], errors: dict[str, ErrorEstimate],
                 computed_at: str) -> pl.DataFrame:
    """The ``review_quality`` partition (:data:`REVIEW_QUALITY`) from alphas and error estimates."""
    rows: list[dict[str, Any]] = [
        {"metric": "krippendorff_alpha", "granularity": g, "value": a.alpha, "n": a.units,
         "errors": None, "ci_low": None, "ci_high": None, "method": a.level, "computed_at": computed_at}
        for g, a in alphas.items()]
    for g, e in errors.items():
        lo_hi = e.interval
        rows.append({"metric": "qa_error", "granularity": g, "value": e.rate, "n": e.reviewed,
                     "errors": e.errors, "ci_low": None if lo_hi is None else lo_hi[0],
                     "ci_high": None if lo_hi is None else lo_hi[1],
                     "method": f"wilson {e.confidence:g}", "computed_at": computed_at})
    return _frame(rows, REVIEW_QUALITY)


def qa_summary(sample: pl.DataFrame | None, outcomes: pl.DataFrame) -> dict[str, int]:
    """Counts for metadata: QA faces drawn, reviewed (with a consensus), still pending."""
    drawn = 0 if sample is None else sample.height
    return {"drawn": drawn, "reviewed": outcomes.height, "pending": drawn - outcomes.height}

"""Several reviewers per face: votes, contradictions, consensus by majority, Krippendorff's alpha.

Why several reviewers: one reviewer's answer is a label of unknown quality. Two or more give a
consensus that does not hinge on one person and an agreement estimate per granularity
(Krippendorff's alpha: any number of reviewers, missing answers allowed, a distance per level of
measurement). A human answer is never silently dropped or replaced; every exclusion is returned.

**Votes.** A reviewer (Label Studio ``completed_by``) gives one vote per face and granularity.
The caller passes each Label Studio annotation once (the same annotation id seen in an older and
a newer export is one annotation, edited in place). Two *different* annotations of one reviewer
on one face that give the same answer are one vote; ones that give different answers are
*contradictory* (:class:`Contradiction`): that reviewer's answers at that granularity leave the
consensus and are reported, the reviewer's other granularities still count. An annotation that
leaves a granularity blank casts no vote there.

**Consensus** per face and granularity (:data:`GRANULARITIES`):

* ``expression``: the answer with the most votes; a tie for the most is not decided.
* ``va``: the per-axis median, when a strict majority of the voters lie within ``va_tolerance``
  of it on both axes (a continuous scale has no exact majority; "most reviewers agree within a
  tolerance" is its analogue); otherwise not decided.
* ``aus``: per catalogue AU, present when more than half of the reviewers who coded AUs marked
  it, absent when fewer; exactly half for any AU leaves the AU set undecided.
* ``quality``: unusable when more than half of the reviewers marked it. Exactly half leaves the
  whole face undecided: no label of it is merged until another reviewer breaks the tie.

An undecided granularity stays null (``raw_faces`` keeps the source's label) and is listed in
``sent_back``; ``review_queue`` exports the face again so one more reviewer decides it.

**Alpha** (:func:`agreement`) over one partition's faces, from the counted votes: expression
*nominal*; valence and arousal *interval*, each on its own (two scales, two reliabilities); AUs
*nominal* on the binary present/absent decisions pooled over (face, AU) units. Why pooled: on a
batch most AUs never vary, so per-AU alphas are mostly undefined; the pooled value is defined as
soon as any AU decision varies. Per-AU alphas are reported where defined. ``quality`` is nominal
(usable/unusable). Alpha is ``None`` when no face has two voters or the answers never vary.
Computed with the ``krippendorff`` package (Castro, https://github.com/pln-fing-udelar/fast-krippendorff).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping

import krippendorff
import numpy as np

from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

GRANULARITIES: tuple[str, ...] = ("expression", "va", "aus", "quality")
#: Default VA tolerance on the [-1, 1] scales: an eighth of the range, five Label Studio steps.
VA_TOLERANCE = 0.25


@dataclass(frozen=True)
class Annotation:
    """One reviewer's validated answer for one face (``labels``: :func:`seke.review.parse_annotation`)."""

    face_id: str
    reviewer: str
    labels: Mapping[str, Any]
    annotation_id: int | None = None
    task_id: int | None = None
    reviewed_at: str = ""
    lead_time_s: float | None = None

    def answer(self, granularity: str) -> Hashable | None:
        """The hashable answer at ``granularity``; ``None`` = no answer (no vote)."""
        lab = self.labels
        if granularity == "expression":
            return lab.get("expression")
        if granularity == "va":
            if lab.get("valence") is None or lab.get("arousal") is None:
                return None
            return (round(float(lab["valence"]), 6), round(float(lab["arousal"]), 6))
        if granularity == "aus":
            return None if lab.get("aus") is None else tuple(sorted(int(a) for a in lab["aus"]))
        if granularity == "quality":
            return bool(lab.get("unusable"))
        raise KeyError(granularity)


@dataclass(frozen=True)
class Contradiction:
    """One reviewer gave different answers to one face at one granularity (excluded, reported)."""

    face_id: str
    reviewer: str
    granularity: str
    answers: tuple[Any, ...]
    annotation_ids: tuple[int | None, ...]

    def detail(self) -> str:
        return (f"reviewer {self.reviewer or '?'} answered {self.granularity} differently in annotations "
                f"{list(self.annotation_ids)}: {list(self.answers)}; that reviewer's {self.granularity} "
                "is not counted")


@dataclass
class FaceConsensus:
    """The decided labels of one face, what is sent back, and the votes behind them."""

    face_id: str
    expression: str | None = None
    valence: float | None = None
    arousal: float | None = None
    aus: list[int] | None = None
    unusable: bool | None = False
    sent_back: list[str] = field(default_factory=list)
    #: granularity -> reviewer -> counted answer (contradictory answers are not here)
    votes: dict[str, dict[str, Hashable]] = field(default_factory=dict)
    reviewers: list[str] = field(default_factory=list)


def reviewer_votes(annotations: Iterable[Annotation]) -> tuple[dict[str, dict[str, Hashable]], list[Contradiction]]:
    """Per granularity one vote per reviewer; a reviewer with two different answers casts none there."""
    by_reviewer: dict[str, list[Annotation]] = {}
    for ann in annotations:
        by_reviewer.setdefault(ann.reviewer, []).append(ann)
    votes: dict[str, dict[str, Hashable]] = {g: {} for g in GRANULARITIES}
    contradictions: list[Contradiction] = []
    for reviewer, anns in sorted(by_reviewer.items()):
        face_id = anns[0].face_id
        for g in GRANULARITIES:
            answered = [(a.answer(g), a.annotation_id) for a in anns if a.answer(g) is not None]
            distinct = sorted({ans for ans, _ in answered}, key=repr)
            if len(distinct) == 1:
                votes[g][reviewer] = distinct[0]
            elif len(distinct) > 1:
                contradictions.append(Contradiction(face_id, reviewer, g, tuple(distinct),
                                                    tuple(i for _, i in answered)))
    return votes, contradictions


def _plurality(values: list[Hashable]) -> tuple[Hashable | None, bool]:
    """(winner, tied): the unique most frequent value, or ``(None, True)`` on a tie for the most."""
    if not values:
        return None, False
    ranked = Counter(values).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, True
    return ranked[0][0], False


def _va(points: list[tuple[float, float]], tol: float) -> tuple[tuple[float, float] | None, bool]:
    if not points:
        return None, False
    mv = statistics.median(p[0] for p in points)
    ma = statistics.median(p[1] for p in points)
    close = sum(abs(v - mv) <= tol + 1e-9 and abs(a - ma) <= tol + 1e-9 for v, a in points)
    return ((float(mv), float(ma)), False) if 2 * close > len(points) else (None, True)


def _aus(sets: list[tuple[int, ...]]) -> tuple[list[int] | None, bool]:
    if not sets:
        return None, False
    n, counts = len(sets), Counter(a for s in sets for a in set(s))
    if any(2 * c == n for c in counts.values()):
        return None, True
    return sorted(a for a, c in counts.items() if 2 * c > n), False


def consensus(face_id: str, annotations: Iterable[Annotation],
              va_tolerance: float = VA_TOLERANCE) -> tuple[FaceConsensus, list[Contradiction]]:
    """Majority consensus of one face's annotations (see the module doc); ties are sent back."""
    anns = list(annotations)
    votes, contradictions = reviewer_votes(anns)
    out = FaceConsensus(face_id, votes=votes, reviewers=sorted({a.reviewer for a in anns}))
    quality = list(votes["quality"].values())
    n_unusable = sum(bool(q) for q in quality)
    if quality and 2 * n_unusable == len(quality):
        out.unusable, out.sent_back = None, ["quality"]
        return out, contradictions  # undecided whether the face is usable: merge nothing yet
    out.unusable = 2 * n_unusable > len(quality)
    expression, tied = _plurality(list(votes["expression"].values()))
    out.expression = None if expression is None else str(expression)
    if tied:
        out.sent_back.append("expression")
    va, tied = _va([p for p in votes["va"].values()], va_tolerance)  # type: ignore[misc]
    if va is not None:
        out.valence, out.arousal = va
    if tied:
        out.sent_back.append("va")
    aus, tied = _aus([s for s in votes["aus"].values()])  # type: ignore[misc]
    out.aus = aus
    if tied:
        out.sent_back.append("aus")
    return out, contradictions


# ---- agreement -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Agreement:
    """Krippendorff's alpha of one granularity over a set of faces."""

    granularity: str
    level: str
    alpha: float | None
    units: int                 # faces (or face×AU units) with at least two voters
    voters: int                # distinct reviewers who voted at this granularity
    note: str = ""
    per_au: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"alpha": None if self.alpha is None else round(self.alpha, 4),
                             "level": self.level, "units": self.units, "voters": self.voters}
        if self.note:
            d["note"] = self.note
        if self.per_au:
            d["per_au"] = {f"AU{a}": round(v, 4) for a, v in sorted(self.per_au.items())}
        return d


def _alpha(level: str, *, value_counts: np.ndarray | None = None,
           reliability_data: np.ndarray | None = None) -> tuple[float | None, str]:
    """``krippendorff.alpha`` with the undefined cases turned into ``(None, why)``."""
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            if value_counts is not None:
                a = krippendorff.alpha(value_counts=value_counts, level_of_measurement=level)
            else:
                a = krippendorff.alpha(reliability_data=reliability_data, level_of_measurement=level)
    except ValueError as exc:  # fewer than two values in the domain, or no unit with two voters
        return None, str(exc)
    if not np.isfinite(a):
        return None, "no variation in the answers (expected disagreement is 0)"
    return float(a), ""


def _nominal(granularity: str, faces: list[dict[str, Hashable]], domain: list[Hashable]) -> Agreement:
    index = {v: i for i, v in enumerate(domain)}
    counts = np.zeros((len(faces), len(domain)))
    for u, votes in enumerate(faces):
        for ans in votes.values():
            counts[u, index[ans]] += 1
    units = int((counts.sum(axis=1) >= 2).sum())
    voters = len({r for votes in faces for r in votes})
    alpha, note = _alpha("nominal", value_counts=counts) if len(faces) else (None, "no faces")
    return Agreement(granularity, "nominal", alpha, units, voters, note)


def _interval(granularity: str, faces: list[dict[str, float]]) -> Agreement:
    reviewers = sorted({r for votes in faces for r in votes})
    data = np.full((len(reviewers), len(faces)), np.nan)
    row = {r: i for i, r in enumerate(reviewers)}
    for u, votes in enumerate(faces):
        for r, v in votes.items():
            data[row[r], u] = v
    units = sum(len(v) >= 2 for v in faces)
    if not reviewers or not faces:
        return Agreement(granularity, "interval", None, units, len(reviewers), "no answers")
    alpha, note = _alpha("interval", reliability_data=data)
    return Agreement(granularity, "interval", alpha, units, len(reviewers), note)


def _au_agreement(faces: list[dict[str, tuple[int, ...]]]) -> Agreement:
    voters = len({r for votes in faces for r in votes})
    pooled = np.zeros((len(faces) * len(AU_CATALOGUE), 2))
    per_au: dict[int, float] = {}
    for j, au in enumerate(AU_CATALOGUE):
        counts = np.zeros((len(faces), 2))
        for u, votes in enumerate(faces):
            for s in votes.values():
                counts[u, int(au in s)] += 1
        pooled[j * len(faces):(j + 1) * len(faces)] = counts
        a, _ = _alpha("nominal", value_counts=counts) if len(faces) else (None, "")
        if a is not None:
            per_au[au] = a
    units = int((pooled.sum(axis=1) >= 2).sum())
    alpha, note = _alpha("nominal", value_counts=pooled) if len(faces) else (None, "no faces")
    return Agreement("aus", "nominal (pooled face x AU present/absent)", alpha, units, voters, note, per_au)


def agreement(faces: Iterable[FaceConsensus]) -> dict[str, Agreement]:
    """Krippendorff's alpha per granularity (``expression``, ``valence``, ``arousal``, ``aus``,
    ``quality``) from the counted votes of ``faces`` (units = faces, coders = reviewers)."""
    faces = list(faces)
    expr = [f.votes.get("expression", {}) for f in faces]
    va = [f.votes.get("va", {}) for f in faces]
    return {
        "expression": _nominal("expression", expr, list(EXPRESSIONS)),
        "valence": _interval("valence", [{r: p[0] for r, p in v.items()} for v in va]),  # type: ignore[index]
        "arousal": _interval("arousal", [{r: p[1] for r, p in v.items()} for v in va]),  # type: ignore[index]
        "aus": _au_agreement([f.votes.get("aus", {}) for f in faces]),  # type: ignore[misc]
        "quality": _nominal("quality", [f.votes.get("quality", {}) for f in faces], [False, True]),
    }

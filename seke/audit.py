"""Audit mode: hide some known human labels from the annotator, then score what it generated.

Why: a user with partly labelled sources can measure label quality with no extra annotation —
the hidden human labels are the gold — and the same (confidence, correct) pairs fit the
confidence calibration (:mod:`seke.calibration`). Which faces are audited is decided by a hash
of (seed, face_id) (:func:`choose_hidden`), so re-runs and backfills hide the same labels.

Flow: :func:`hide_for_audit` → build prompts and run SV-UAMC on the returned faces →
:func:`audit_report` (metrics for asset metadata / checks) and :func:`audit_pairs` (for
calibration fitting).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from seke import metrics
from seke.annotation import FaceItem, Labels
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS


# ---- which labels audit mode hides ----------------------------------------------------------
# Hashing (seed, face_id) instead of random sampling keeps the choice stable across re-runs and
# backfills, so a re-materialized partition hides the same labels and hits the same cache entries.


def audit_draw(face_id: str, seed: int = 0) -> float:
    """A stable pseudo-random number in [0, 1) for a face."""
    h = hashlib.sha256(f"audit:{seed}:{face_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def choose_hidden(face_id: str, known: Labels, fraction: float, seed: int = 0) -> list[str]:
    """All known granularities of the face when it falls in the audit share, else none."""
    if fraction <= 0 or not known.known_granularities():
        return []
    return known.known_granularities() if audit_draw(face_id, seed) < fraction else []


@dataclass(frozen=True)
class AuditSplit:
    """Faces as the annotator sees them, and the human labels held back for scoring."""

    faces: list[FaceItem]
    gold: dict[str, Labels]                 # face_id -> hidden human labels (only hidden granularities set)
    hidden: dict[str, list[str]]            # face_id -> hidden granularities


def hide_for_audit(faces: Sequence[FaceItem], fraction: float, seed: int = 0,
                   granularities: Iterable[str] | None = None) -> AuditSplit:
    """Hide the known labels of a deterministic ``fraction`` of faces (optionally only some granularities)."""
    allowed = set(granularities) if granularities is not None else None
    out, gold, hidden = [], {}, {}
    for f in faces:
        hide = [g for g in choose_hidden(f.face_id, f.known, fraction, seed) if allowed is None or g in allowed]
        if not hide:
            out.append(f)
            continue
        k = f.known
        gold[f.face_id] = Labels(k.expression if "expression" in hide else None,
                                 k.valence if "va" in hide else None, k.arousal if "va" in hide else None,
                                 k.aus if "aus" in hide else None)
        kept = replace(k, expression=None if "expression" in hide else k.expression,
                       valence=None if "va" in hide else k.valence, arousal=None if "va" in hide else k.arousal,
                       aus=None if "aus" in hide else k.aus)
        out.append(replace(f, known=kept))
        hidden[f.face_id] = hide
    return AuditSplit(out, gold, hidden)


@dataclass(frozen=True)
class AuditPair:
    """One generated decision against its hidden gold: what calibration is fitted on."""

    face_id: str
    granularity: str          # expression | va | au
    confidence: float
    correct: bool
    accepted: bool
    source: str = ""          # the row's source ("" when the row names none): per-source calibration


def _present(aus: Mapping[int, float] | None) -> set[int] | None:
    return None if aus is None else {a for a, p in aus.items() if p >= 0.5}


def audit_pairs(rows: Sequence[Mapping[str, Any]], gold: Mapping[str, Labels]) -> list[AuditPair]:
    """(confidence, correct) per generated decision on audited faces.

    Expression: the label's confidence vs exact match. VA: the VA confidence vs "valence sign
    and arousal sign both right". AUs: one pair per catalogue AU, confidence ``max(p, 1 − p)``
    of its frequency vs the gold presence.
    """
    out = []
    for r in rows:
        g = gold.get(r["face_id"])
        if g is None:
            continue
        acc = r["status"] == "accepted"
        src = r.get("source") or ""
        if g.expression is not None and r.get("expression") is not None and r.get("expression_confidence") is not None:
            out.append(AuditPair(r["face_id"], "expression", float(r["expression_confidence"]),
                                 r["expression"] == g.expression, acc, src))
        if g.valence is not None and r.get("valence") is not None and r.get("va_confidence") is not None:
            ok = (r["valence"] >= 0) == (g.valence >= 0) and (r["arousal"] >= 0) == (g.arousal >= 0)
            out.append(AuditPair(r["face_id"], "va", float(r["va_confidence"]), ok, acc, src))
        if g.aus is not None and r.get("au_probs") is not None:
            truth = _present(g.aus)
            for au, p in zip(AU_CATALOGUE, r["au_probs"]):
                if p is None:
                    continue
                out.append(AuditPair(r["face_id"], "au", max(p, 1 - p), (p >= 0.5) == (au in truth), acc, src))
    return out


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def audit_report(rows: Sequence[Mapping[str, Any]], gold: Mapping[str, Labels], n_bins: int = 15) -> dict[str, Any]:
    """Generated vs hidden human labels on the audited faces, as flat JSON-able metadata.

    Label metrics are on *accepted* rows (what a user receives); ``*_all`` variants include the
    candidates of abstained faces, and ``coverage`` is the accepted share. NaN becomes None.
    """
    audited = [r for r in rows if r["face_id"] in gold]
    accepted = [r for r in audited if r["status"] == "accepted"]
    rep: dict[str, Any] = {"audit_faces": len(audited),
                           "audit_coverage": len(accepted) / len(audited) if audited else None}

    def col(rs, key):
        return [r.get(key) for r in rs]

    def gold_of(rs, attr):
        return [getattr(gold[r["face_id"]], attr) for r in rs]

    ex = [r for r in accepted if gold[r["face_id"]].expression is not None]
    ex_all = [r for r in audited if gold[r["face_id"]].expression is not None]
    if ex_all:
        rep["expression_n"] = len(ex)
        rep["expression_accuracy"] = metrics.accuracy(gold_of(ex, "expression"), col(ex, "expression")) if ex else None
        rep["expression_accuracy_all"] = metrics.accuracy(gold_of(ex_all, "expression"), col(ex_all, "expression"))
        rep["expression_macro_f1"] = (metrics.macro_f1(gold_of(ex, "expression"), col(ex, "expression"), EXPRESSIONS)
                                      if ex else None)
    va = [r for r in accepted if gold[r["face_id"]].valence is not None]
    if va:
        rep["va_n"] = len(va)
        rep["valence_sign_agreement"] = metrics.sign_agreement(gold_of(va, "valence"), col(va, "valence"))
        rep["arousal_sign_agreement"] = metrics.sign_agreement(gold_of(va, "arousal"), col(va, "arousal"))
        rep["valence_ccc"] = metrics.ccc(gold_of(va, "valence"), col(va, "valence"))
        rep["arousal_ccc"] = metrics.ccc(gold_of(va, "arousal"), col(va, "arousal"))
        rep["valence_rmse"] = metrics.rmse(gold_of(va, "valence"), col(va, "valence"))
    au = [r for r in accepted if gold[r["face_id"]].aus is not None]
    if au:
        rep["au_n"] = len(au)
        rep["au_mean_f1"] = metrics.mean_au_f1([sorted(_present(gold[r["face_id"]].aus)) for r in au],
                                               [r.get("aus") for r in au], AU_CATALOGUE)
    pairs = [p for p in audit_pairs(audited, gold) if p.accepted]
    for g in ("expression", "va", "au"):
        ps = [p for p in pairs if p.granularity == g]
        if ps:
            rep[f"{g}_ece"] = metrics.ece([p.confidence for p in ps], [p.correct for p in ps], n_bins)
            rep[f"{g}_brier"] = metrics.brier([p.confidence for p in ps], [p.correct for p in ps])
    return {k: (_clean(v) if isinstance(v, float) else v) for k, v in rep.items()}



def gold_for_hidden(known: Mapping[str, Labels], hidden: Mapping[str, Sequence[str]]) -> dict[str, Labels]:
    """Gold for :func:`audit_report` from the human labels of ``raw_faces`` and the hidden lists.

    ``known`` maps face_id to the face's full human labels (before hiding), ``hidden`` to the
    granularities that were hidden from the annotator (the ``audit_hidden`` column).
    """
    out = {}
    for fid, gs in hidden.items():
        k = known.get(fid)
        if k is None or not gs:
            continue
        out[fid] = Labels(k.expression if "expression" in gs else None,
                          k.valence if "va" in gs else None, k.arousal if "va" in gs else None,
                          k.aus if "aus" in gs else None)
    return out


#: Audit figures below these floors make the audit asset check warn (a weak annotator or a
#: drifted source; the floors sit well above chance for 8 classes / sparse AUs / VA signs).
AUDIT_FLOORS: dict[str, float] = {"expression_accuracy": 0.5, "au_mean_f1": 0.4,
                                  "valence_sign_agreement": 0.6}


def audit_check(report: Mapping[str, Any], floors: Mapping[str, float] = AUDIT_FLOORS,
                min_faces: int = 1) -> tuple[bool, dict[str, float]]:
    """``(passed, failing)``: which measured figures fall below their floor.

    Metrics that were not measured (no audited face had that granularity) do not fail; with
    fewer than ``min_faces`` audited faces nothing fails (too little evidence to warn).
    """
    if (report.get("audit_faces") or 0) < min_faces:
        return True, {}
    failing = {k: float(report[k]) for k, floor in floors.items()
               if report.get(k) is not None and report[k] < floor}
    return not failing, failing

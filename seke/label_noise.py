"""Label-noise audit of *human* expression labels (confident learning, ``cleanlab``).

Why: human labels are injected into prompts as facts and become FEAB gold, but crowd-labelled
sources are noisy (FER2013's labels are wrong often enough that a bare model trained on it
tops out near 0.6–0.7). A suspected error is marked — ``verified_labels.label_issue`` with its
evidence — sent to review and left out of FEAB gold by default; the human label is never
overwritten (the reviewer decides).

What "out-of-sample" means here. ``cleanlab.filter.find_label_issues`` needs, per face, class
probabilities from a model that did not see that face's label. In the pipeline:

* when the human expression is given to the annotator as a fact, its recorded
  ``expression_probs`` are a one-hot of that label (the answer echoes the fact): useless and
  in-sample. Only faces whose expression was **hidden in audit mode** (``audit_hidden``
  contains ``expression``) carry the annotator's blind image probabilities; only they are
  audited here (the others get ``label_issue`` null = not checked). Run audit mode with a
  larger ``audit_fraction`` to check more faces.
* the offline annotator's expression model (fer's mini-Xception) was *trained on FER2013
  train*: on those faces its probabilities have seen the labels (in-sample, issues are
  under-found). FER2013 validation/test and every other source are out-of-sample for it. The
  bench (``bench/label_noise.py``) therefore measures on FER2013 validation.

The share flagged is capped (``max_share``, default 0.10): cleanlab's own estimate of the noise
rate on a source like FER2013 is far above what a review team can check, so the most confident
issues (lowest self-confidence in the given label) are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import polars as pl

from seke.taxonomy import EXPRESSIONS, normalise_expression

DEFAULT_MAX_SHARE = 0.10
#: Fewest audited faces (and faces per class present) before the audit says anything.
MIN_FACES = 30


@dataclass
class NoiseResult:
    issue: np.ndarray                 # bool per face
    evidence: list[str | None]        # JSON per flagged face
    classes: list[str]


def find_issues(labels: Sequence[str], probs: np.ndarray, max_share: float = DEFAULT_MAX_SHARE,
                classes: Sequence[str] = EXPRESSIONS) -> NoiseResult:
    """Suspected label errors among ``labels`` given out-of-sample ``probs`` (rows aligned to
    ``classes``). Classes nobody is labelled with are dropped and rows renormalised (cleanlab
    needs every column to be a class present in the labels)."""
    from cleanlab.filter import find_label_issues

    n = len(labels)
    if n < MIN_FACES:
        return NoiseResult(np.zeros(n, bool), [None] * n, [])
    present = [c for c in classes if c in set(labels)]
    cols = [list(classes).index(c) for c in present]
    p = np.asarray(probs, dtype=float)[:, cols]
    p = np.clip(p, 1e-6, None)
    p = p / p.sum(axis=1, keepdims=True)
    y = np.array([present.index(lab) for lab in labels])
    # n_jobs=1: cleanlab otherwise forks a multiprocessing pool, and a fork of a process that
    # already runs torch/OpenMP threads can deadlock (seen: a CI run hung here on a futex)
    ranked = find_label_issues(labels=y, pred_probs=p, filter_by="prune_by_noise_rate",
                               return_indices_ranked_by="self_confidence", n_jobs=1)
    keep = ranked[: int(np.floor(max_share * n))]
    issue = np.zeros(n, bool)
    issue[keep] = True
    evidence: list[str | None] = [None] * n
    for i in keep:
        best = int(np.argmax(p[i]))
        evidence[i] = json.dumps({"given": present[y[i]], "p_given": round(float(p[i, y[i]]), 4),
                                  "suggested": present[best], "p_suggested": round(float(p[i, best]), 4),
                                  "method": "cleanlab.find_label_issues(prune_by_noise_rate)",
                                  "rank": int(np.nonzero(ranked == i)[0][0])})
    return NoiseResult(issue, evidence, present)


def audit_human_labels(labels: pl.DataFrame, raw_faces: pl.DataFrame,
                       max_share: float = DEFAULT_MAX_SHARE) -> pl.DataFrame:
    """``labels`` (a verified_labels frame) plus ``label_issue`` (bool; null = not checked) and
    ``label_issue_evidence`` (JSON), from audit-mode faces with a human expression."""
    known = dict(raw_faces.select("face_id", "known_expression").iter_rows()) if raw_faces.height else {}
    rows = []
    for i, r in enumerate(labels.select("face_id", "audit_hidden", "expression_probs").iter_rows(named=True)):
        human = normalise_expression(known.get(r["face_id"]))
        if human and "expression" in (r["audit_hidden"] or []) and r["expression_probs"]:
            rows.append((i, human, r["expression_probs"]))
    flag: list[bool | None] = [None] * labels.height
    evidence: list[str | None] = [None] * labels.height
    if rows:
        res = find_issues([h for _, h, _ in rows], np.array([p for _, _, p in rows]), max_share)
        if res.classes:
            for k, (i, _, _) in enumerate(rows):
                flag[i], evidence[i] = bool(res.issue[k]), res.evidence[k]
    return labels.with_columns(pl.Series("label_issue", flag, dtype=pl.Boolean),
                               pl.Series("label_issue_evidence", evidence, dtype=pl.String))

"""What each independent signal adds to the offline annotator's verification (issue 15, item 2).

    .venv/bin/python bench/verifier_signals.py [--data DIR] [--split S] [--per-set N] [--subject-patterns P]
        [--expression-checkpoint CKPT [--expression-checkpoint-weights W]]

On the dev faces of ``--data`` (audit mode: every label hidden; the faces and the subject-wise
evaluation half of ``bench/selective.py``) the identity view of each face is scored once. Its
single-shot label (the *candidate*) is the pooled top class, ranked by the pooled probability.
The verification rule the annotator applies (:func:`seke.annotators.offline.independent_vote`)
is then replayed on every face: with all the voters the annotator has (geometry classifier,
aligned crop, and the checkpoint when one is given) and with each voter left out. In the
pipeline, verification runs only on the faces SV-UAMC leaves uncertain; here it runs on all of
them, as a jury would, so that each signal is measured on as many faces as possible.

Printed per voter: its accuracy alone, how often it disagrees with the candidate, and the
candidate's error where it agrees and where it disagrees (the evidence the disagreement
carries). Per rule (all voters; each left out): the share rejected and the error among them,
the share corrected and how many of those corrections were right, the error of the accepted
labels, and the baseline — single-shot's error at the same coverage (its most confident
candidates) — with the ratio of the two. ``<voter>_adds`` is the ratio without that voter minus
the ratio with all (positive: the voter lowers accepted error beyond what confidence ranking
does).

Votes are hard; a softer use would be a better ranking. So per source a logistic model (scikit-learn)
stacking the pooled confidence with each voter's probability of the candidate and its agreement
is fitted on the calibration half and ranks the evaluation half: its error among the most
confident 35 % and 55 % beside the pooled confidence's (the baseline).

Last line: ``RESULT source=offline|offline+checkpoint data=… faces=… ss_error=… accepted_error=…
coverage=… ss_error_equal_coverage=… ratio=… reject_share=… reject_error=… corrected=…
corrected_right=… <voter>_acc=… <voter>_adds=… fer_error_at_0.55=… fer_stacked_error_at_0.55=…`` (voter
names with ``_`` for spaces; ``fer_*``: the FER2013 set's evaluation half, picked as
``bench/selective.py`` picks it, NaN without one). Without real faces it exits 2.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke import metrics  # noqa: E402
from seke.annotators.offline import OfflineAnnotator, build_offline_annotator, decode_crop, independent_vote  # noqa: E402
from seke.bench_data import add_checkpoint_arguments, add_dev_face_arguments, data_field  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.taxonomy import EXPRESSIONS  # noqa: E402


#: The annotator's voters, in the order printed (see ``OfflineAnnotator.verification_voters``).
VOTER_ORDER = ("geometry", "aligned crop", "second model")
#: Coverages at which the stacked ranking is compared with the pooled confidence.
STACK_COVERAGES = (0.35, 0.55)


@dataclass(frozen=True)
class ScoredFace:
    """One face's identity view: the candidate, its pooled support, the bare model's top class,
    the voters' distributions and the hidden human label."""

    source: str
    gold: str
    candidate: str
    support: float
    bare_top: str
    voters: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class RuleOutcome:
    """The verification rule replayed with some voters: what it did to the candidates."""

    coverage: float
    accepted_error: float
    baseline_error: float     # single-shot's error at the same coverage
    reject_share: float
    reject_error: float       # candidates' error among the rejected (how often a reject was right)
    corrected: int
    corrected_right: int

    @property
    def ratio(self) -> float:
        return self.accepted_error / self.baseline_error if self.baseline_error > 0 else float("nan")


def top(p: Mapping[str, float]) -> str:
    return max(p, key=p.get)


def candidate_error(faces: Sequence[ScoredFace]) -> float:
    """Share of ``faces`` whose single-shot label is wrong (NaN for none)."""
    return sum(f.candidate != f.gold for f in faces) / len(faces) if faces else float("nan")


def replay(faces: Sequence[ScoredFace], keep: Sequence[str]) -> RuleOutcome:
    """Verification with only the voters in ``keep`` on every face (a face without voters is
    accepted as it is, as the annotator does)."""
    labels: list[str | None] = []
    corrected = corrected_right = 0
    for f in faces:
        voters = {n: p for n, p in f.voters.items() if n in keep}
        verdict = independent_vote(voters, f.candidate, f.support, f.bare_top)[0] if voters else None
        if verdict == "reject":
            labels.append(None)
            continue
        if verdict is not None:
            corrected += 1
            corrected_right += verdict == f.gold
        labels.append(verdict or f.candidate)
    kept = [(lab, f.gold) for lab, f in zip(labels, faces) if lab is not None]
    rejected = [f for lab, f in zip(labels, faces) if lab is None]
    coverage = len(kept) / len(faces)
    base = metrics.most_confident([f.support for f in faces], [float(f.candidate != f.gold) for f in faces], coverage)
    nan = float("nan")
    return RuleOutcome(coverage=coverage,
                       accepted_error=sum(lab != g for lab, g in kept) / len(kept) if kept else nan,
                       baseline_error=sum(base) / len(base) if base else nan,
                       reject_share=len(rejected) / len(faces),
                       reject_error=candidate_error(rejected),
                       corrected=corrected, corrected_right=corrected_right)


def voter_evidence(faces: Sequence[ScoredFace], name: str) -> dict[str, float]:
    """A voter alone: accuracy, disagreement with the candidate, candidate error when it agrees / disagrees."""
    with_it = [f for f in faces if name in f.voters]
    agree = [f for f in with_it if top(f.voters[name]) == f.candidate]
    disagree = [f for f in with_it if top(f.voters[name]) != f.candidate]
    return {"faces": len(with_it),
            "acc": metrics.accuracy([f.gold for f in with_it], [top(f.voters[name]) for f in with_it]) if with_it else float("nan"),
            "disagree": len(disagree) / len(with_it) if with_it else float("nan"),
            "error_if_agree": candidate_error(agree), "error_if_disagree": candidate_error(disagree)}


def stacking_features(faces: Sequence[ScoredFace]) -> np.ndarray:
    """Per face: logit of the pooled support, then per voter (:data:`VOTER_ORDER`) the log of its
    probability of the candidate (the pooled support where the voter is absent) and whether it
    agrees, then whether the bare model agrees."""
    rows = []
    for f in faces:
        row = [math.log(max(f.support, 1e-6) / max(1.0 - f.support, 1e-6))]
        for name in VOTER_ORDER:
            p = f.voters.get(name)
            row += [math.log((p[f.candidate] if p else f.support) + 1e-4), float(p is not None and top(p) == f.candidate)]
        rows.append(row + [float(f.bare_top == f.candidate)])
    return np.array(rows, float).reshape(len(faces), 2 + 2 * len(VOTER_ORDER))


def stacked_errors(fit_on: Sequence[ScoredFace], score_on: Sequence[ScoredFace],
                   coverages: Sequence[float] = STACK_COVERAGES) -> dict[str, list[float]]:
    """Error among the most confident ``coverages`` of ``score_on`` ranked by the pooled support
    and by a logistic model stacked on :func:`stacking_features`, fitted on ``fit_on`` (NaN for
    the stacked ranking when ``fit_on`` holds one class only)."""
    wrong = [float(f.candidate != f.gold) for f in score_on]

    def at(score: Sequence[float]) -> list[float]:
        out = []
        for c in coverages:
            kept = metrics.most_confident(list(score), wrong, c)
            out.append(sum(kept) / len(kept) if kept else float("nan"))
        return out

    y = [f.candidate == f.gold for f in fit_on]
    stacked = [float("nan")] * len(coverages)
    if len(set(y)) == 2:
        model = LogisticRegression(max_iter=2000).fit(stacking_features(fit_on), y)
        stacked = at(model.decision_function(stacking_features(score_on)).tolist())
    return {"pooled": at([f.support for f in score_on]), "stacked": stacked}


def score_faces(annotator: OfflineAnnotator, faces: Sequence[Any], gold: Mapping[str, Any],
                wanted: Callable[[Any], bool]) -> list[ScoredFace]:
    """The identity view of every ``wanted`` face with a known expression (a face that cannot be
    decoded is left out, as ingestion would quarantine it)."""
    out = []
    for face in faces:
        g = gold[face.face_id].expression
        if g not in EXPRESSIONS or not wanted(face):
            continue
        try:
            ev, _ = annotator._evidence(face.face_id, decode_crop(face.image_png), 0)  # the identity view, as sampled
        except ValueError:
            continue
        pooled = annotator._expr_probs(ev, face.source)
        c = top(pooled)
        out.append(ScoredFace(face.source, g, c, pooled[c], top(annotator._raw_probs(ev)),
                              annotator.verification_voters(ev, face.source) or {}))
    return out


def print_report(faces: Sequence[ScoredFace], title: str) -> tuple[RuleOutcome, dict[str, RuleOutcome], dict[str, dict]]:
    present = {n for f in faces for n in f.voters}
    names = [n for n in VOTER_ORDER if n in present] + sorted(present - set(VOTER_ORDER))
    print(f"\n{title}: {len(faces)} faces, single-shot error {candidate_error(faces):.3f}, "
          f"{sum(bool(f.voters) for f in faces)} with voters")
    evidence = {n: voter_evidence(faces, n) for n in names}
    print(f"  {'voter':13s} {'acc':>6s} {'disagrees':>9s}  candidate error if it agrees / disagrees")
    for n, e in evidence.items():
        print(f"  {n:13s} {e['acc']:6.3f} {e['disagree']:9.3f}  {e['error_if_agree']:.3f} / {e['error_if_disagree']:.3f}")
    full = replay(faces, names)
    left_out = {n: replay(faces, [m for m in names if m != n]) for n in names}
    print(f"  {'rule':22s} {'coverage':>8s} {'accepted err':>12s} {'single-shot@cov':>15s} {'ratio':>6s} "
          f"{'rejected':>8s} {'err of rej':>10s} {'corrected (right)':>17s}")
    for label, o in [("all voters", full)] + [(f"without {n}", o) for n, o in left_out.items()]:
        print(f"  {label:22s} {o.coverage:8.3f} {o.accepted_error:12.3f} {o.baseline_error:15.3f} {o.ratio:6.3f} "
              f"{o.reject_share:8.3f} {o.reject_error:10.3f} {o.corrected:9d} ({o.corrected_right})")
    return full, left_out, evidence


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dev_face_arguments(ap, Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data")))
    add_checkpoint_arguments(ap)
    args = ap.parse_args(argv)
    from bench.selective import _sv_bench, dev_faces, fer_source, half  # the selective bench's faces and halves

    loaded = dev_faces(_sv_bench(), args.data, args.per_set, args.split, args.subject_patterns)
    if loaded is None:
        return 2
    faces, gold, used = loaded
    annotator = build_offline_annotator(knowledge_v1(), 0, args.expression_checkpoint, args.expression_checkpoint_weights)
    print(f"annotator: {annotator.model}")
    scored = score_faces(annotator, faces, gold, lambda f: half(f) == 1)
    if not scored:
        print("no real data: no dev face could be scored", file=sys.stderr)
        return 2
    calibration = score_faces(annotator, faces, gold, lambda f: half(f) == 0)
    stacked: dict[str, dict[str, list[float]]] = {}
    for source in sorted({f.source for f in scored}):
        here = [f for f in scored if f.source == source]
        print_report(here, source)
        stacked[source] = stacked_errors([f for f in calibration if f.source == source], here)
        print("  ranking (fitted on the calibration half)  " + "   ".join(
            f"error at {c:.0%} coverage: pooled {p:.3f}, stacked {s:.3f}"
            for c, p, s in zip(STACK_COVERAGES, stacked[source]["pooled"], stacked[source]["stacked"])))
    full, left_out, evidence = print_report(scored, "all sources (evaluation half)")
    counts = Counter(f.source for f in scored)
    kv = {"faces": len(scored), "ss_error": candidate_error(scored), "accepted_error": full.accepted_error,
          "coverage": full.coverage, "ss_error_equal_coverage": full.baseline_error, "ratio": full.ratio,
          "reject_share": full.reject_share, "reject_error": full.reject_error,
          "corrected": full.corrected, "corrected_right": full.corrected_right}
    for n, o in left_out.items():
        key = n.replace(" ", "_")
        kv[f"{key}_acc"] = evidence[n]["acc"]
        kv[f"{key}_adds"] = o.ratio - full.ratio
    no_fer = [float("nan")] * len(STACK_COVERAGES)
    fer = stacked.get(fer_source(sorted(stacked)) or "", {"pooled": no_fer, "stacked": no_fer})
    kv["fer_error_at_0.55"] = fer["pooled"][STACK_COVERAGES.index(0.55)]
    kv["fer_stacked_error_at_0.55"] = fer["stacked"][STACK_COVERAGES.index(0.55)]
    print(f"RESULT source={annotator.source} data={data_field(counts, used)} "
          + " ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.3f}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

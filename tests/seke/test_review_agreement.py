"""Several reviewers per Label Studio task: Krippendorff's alpha per granularity, majority
consensus with ties sent back, unknown faces and one reviewer's contradictions reported."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from seke import review
from seke.review_agreement import Annotation, agreement, consensus
from seke.taxonomy import EXPRESSIONS

PART = ("ckplus", "b1")


def ls_result(expression: str | None = None, va: tuple[float, float] | None = None,
              aus: list[int] | None = None, unusable: bool = False) -> list[dict[str, Any]]:
    """A Label Studio annotation ``result`` with the given answers (blank = not answered)."""
    out: list[dict[str, Any]] = []
    if expression is not None:
        out.append({"from_name": "expression", "to_name": "image", "type": "choices",
                    "value": {"choices": [expression]}})
    if va is not None:
        for name, v in zip(("valence", "arousal"), va):
            out.append({"from_name": name, "to_name": "image", "type": "number", "value": {"number": v}})
    if aus is not None:
        out.append({"from_name": "aus", "to_name": "image", "type": "choices",
                    "value": {"choices": [f"AU{a}" for a in aus] or ["none"]}})
    if unusable:
        out.append({"from_name": "quality", "to_name": "image", "type": "choices",
                    "value": {"choices": ["unusable"]}})
    return out


def ls_annotation(ann_id: int, reviewer: str, at: str = "2026-11-22T05:00:00Z", **answers: Any) -> dict[str, Any]:
    return {"id": ann_id, "completed_by": {"id": len(reviewer), "email": reviewer},
            "result": ls_result(**answers), "was_cancelled": False, "created_at": at, "updated_at": at,
            "lead_time": 4.0}


def ls_task(task_id: int, face_id: str, annotations: list[dict[str, Any]], part: tuple[str, str] = PART) -> dict[str, Any]:
    return {"id": task_id, "data": {"image": "data:,", "face_id": face_id, "source": part[0], "batch": part[1]},
            "annotations": annotations, "predictions": []}


def fid(i: int) -> str:
    return f"{i:064x}"


# Krippendorff's own example, as in the krippendorff package's docstring (3 coders, 15 units,
# values 1..4): nominal alpha 0.691358, interval alpha 0.810845.
DOCS = [[np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
        [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
        [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4]]


def test_alpha_matches_krippendorffs_example_through_a_label_studio_export() -> None:
    """Coder c's value v on unit u becomes reviewer c's annotation of face u: expression
    ``EXPRESSIONS[v]`` (nominal) and valence/arousal affine in v (interval alpha is invariant
    under affine maps, so the example's interval value must come out for both)."""
    tasks, ann_id = [], 0
    for u in range(15):
        anns = []
        for c, coder in enumerate(DOCS):
            v = coder[u]
            if not math.isnan(v):
                ann_id += 1
                anns.append(ls_annotation(ann_id, f"coder{c}@x.org", expression=EXPRESSIONS[int(v)],
                                          va=((v - 2.5) / 2, -(v - 2.5) / 2.5)))
        tasks.append(ls_task(u + 1, fid(u), anns))
    got = review.import_export(tasks)
    assert not got.errors
    a = got.agreement[PART]
    assert a["expression"].alpha == pytest.approx(0.691358, abs=1e-6)
    assert a["valence"].alpha == pytest.approx(0.810845, abs=1e-6)
    assert a["arousal"].alpha == pytest.approx(0.810845, abs=1e-6)
    assert a["expression"].units == 12 and a["expression"].voters == 3   # units with >= 2 coders
    assert a["aus"].alpha is None and a["aus"].units == 0                 # nobody coded AUs
    frame = got.partitions[PART]
    assert frame.height == 13                                             # units 2 and 14: no coder
    row = frame.filter(frame["face_id"] == fid(6)).row(0, named=True)     # 4, 4, 4
    assert (row["expression"], row["n_reviewers"], row["sent_back"]) == (EXPRESSIONS[4], 3, [])


def _ann(face: str, reviewer: str, ann_id: int, **labels: Any) -> Annotation:
    base = {"expression": None, "valence": None, "arousal": None, "aus": None, "unusable": False}
    return Annotation(face, reviewer, {**base, **labels}, annotation_id=ann_id)


def test_alpha_hand_checked_nominal_and_pooled_aus() -> None:
    """Three faces, two reviewers: (a, a), (a, b), (b, b). Coincidences o_ab = o_ba = 1,
    n_a = n_b = 3, n = 6: alpha = 1 - (n - 1)(o_ab + o_ba) / (2 n_a n_b) = 1 - 10/18 = 4/9.
    The same pattern on AU12 (present, present / present, absent / absent, absent) gives 4/9
    for AU12; pooled over all 23 catalogue AUs (69 units, n = 138, 3 present, 135 absent):
    1 - 137 * 2 / (2 * 3 * 135)."""
    pattern = [("happiness", "happiness", [12], [12]), ("happiness", "sadness", [12], []),
               ("sadness", "sadness", [], [])]
    faces = []
    for i, (e1, e2, a1, a2) in enumerate(pattern):
        face, _ = consensus(fid(i), [_ann(fid(i), "r1", 2 * i, expression=e1, aus=a1),
                                     _ann(fid(i), "r2", 2 * i + 1, expression=e2, aus=a2)])
        faces.append(face)
    a = agreement(faces)
    assert a["expression"].alpha == pytest.approx(4 / 9)
    assert a["aus"].per_au == {12: pytest.approx(4 / 9)}
    assert a["aus"].alpha == pytest.approx(1 - 137 * 2 / (2 * 3 * 135))
    assert a["valence"].alpha is None and "no answers" in a["valence"].note
    # perfect agreement with variation is 1; no variation at all is undefined, not 1
    same = [consensus(fid(i), [_ann(fid(i), "r1", 1, expression=e), _ann(fid(i), "r2", 2, expression=e)])[0]
            for i, e in enumerate(("fear", "anger"))]
    assert agreement(same)["expression"].alpha == pytest.approx(1.0)
    assert agreement(same[:1])["expression"].alpha is None


def test_ties_are_sent_back_and_a_third_reviewer_decides() -> None:
    r1 = ls_annotation(1, "r1", expression="happiness", va=(0.0, 0.0), aus=[12])
    r2 = ls_annotation(2, "r2", expression="sadness", va=(0.8, 0.8), aus=[6, 12])
    got = review.import_export([ls_task(1, fid(1), [r1, r2])])
    row = got.partitions[PART].row(0, named=True)
    assert row["sent_back"] == ["expression", "va", "aus"]
    assert (row["expression"], row["valence"], row["arousal"], row["aus"]) == (None, None, None, None)
    assert row["n_reviewers"] == 2 and row["reviewer"] == "r1,r2" and not got.errors
    assert row["lead_time_s"] == 8.0                                   # both reviewers' time

    # one more reviewer, in a new task (the face was re-queued): the majority decides
    r3 = ls_annotation(3, "r3", expression="sadness", va=(0.7, 0.9), aus=[12])
    got = review.import_export([ls_task(1, fid(1), [r1, r2]), ls_task(7, fid(1), [r3])])
    row = got.partitions[PART].row(0, named=True)
    assert row["sent_back"] == [] and row["expression"] == "sadness"
    assert (row["valence"], row["arousal"]) == (pytest.approx(0.7), pytest.approx(0.8))  # medians
    assert row["aus"] == [12]                                          # AU6: 1 of 3, AU12: 3 of 3
    assert row["task_id"] == 7 and row["annotation_id"] == 3


def test_va_majority_within_tolerance_and_quality_tie_merges_nothing() -> None:
    ok, _ = consensus(fid(1), [_ann(fid(1), "a", 1, valence=0.1, arousal=0.1),
                               _ann(fid(1), "b", 2, valence=0.2, arousal=0.0),
                               _ann(fid(1), "c", 3, valence=-0.9, arousal=0.9)])
    assert (ok.valence, ok.arousal, ok.sent_back) == (0.1, 0.1, [])    # 2 of 3 within 0.25 of the median
    tie, _ = consensus(fid(2), [_ann(fid(2), "a", 1, expression="fear", unusable=True),
                                _ann(fid(2), "b", 2, expression="fear")])
    assert (tie.unusable, tie.expression, tie.sent_back) == (None, None, ["quality"])
    bad, _ = consensus(fid(3), [_ann(fid(3), r, i, unusable=r != "c") for i, r in enumerate("abc")])
    assert bad.unusable is True and bad.sent_back == []


def test_contradictory_answers_of_one_reviewer_are_reported_not_merged() -> None:
    # r1 answers the face twice (two annotations) with different expressions but the same VA;
    # r2 answers once. Were either of r1's answers counted, the expression would tie.
    r1a = ls_annotation(11, "r1", expression="anger", va=(-0.5, 0.5), aus=[4])
    r1b = ls_annotation(12, "r1", at="2026-11-22T06:00:00Z", expression="surprise", va=(-0.5, 0.5), aus=[4])
    r2 = ls_annotation(13, "r2", expression="happiness", va=(-0.4, 0.4), aus=[4])
    # the same reviewer twice with the *same* answer is one vote, not a contradiction
    r3a = ls_annotation(21, "r3", expression="fear")
    r3b = ls_annotation(22, "r3", at="2026-11-22T06:00:00Z", expression="fear")
    got = review.import_export([ls_task(1, fid(1), [r1a, r1b, r2]), ls_task(2, fid(2), [r3a, r3b])])
    rows = {r["face_id"]: r for r in got.partitions[PART].iter_rows(named=True)}
    assert rows[fid(1)]["expression"] == "happiness" and rows[fid(1)]["sent_back"] == []
    assert rows[fid(1)]["valence"] == pytest.approx(-0.45)            # r1's VA still counts
    assert rows[fid(1)]["n_reviewers"] == 2
    assert rows[fid(2)]["expression"] == "fear" and rows[fid(2)]["n_reviewers"] == 1
    assert [(e.face_id, e.reason, e.reviewer) for e in got.errors] == [(fid(1), "review_contradictory", "r1")]
    detail = got.errors[0].detail()
    assert "anger" in detail and "surprise" in detail and "[11, 12]" in detail
    assert got.agreement[PART]["expression"].units == 0               # r1 excluded: one voter left


def test_unknown_face_ids_are_reported_not_merged() -> None:
    known = {PART: {fid(1)}}
    tasks = [ls_task(1, fid(1), [ls_annotation(1, "r1", expression="fear")]),
             ls_task(2, fid(99), [ls_annotation(2, "r1", expression="anger"),
                                  ls_annotation(3, "r2", expression="anger")]),
             # a partition the caller does not vouch for is not checked here
             ls_task(3, fid(98), [ls_annotation(4, "r1", expression="anger")], part=("ckplus", "b2"))]
    got = review.import_export(tasks, known_faces=known)
    assert got.partitions[PART]["face_id"].to_list() == [fid(1)]
    assert got.partitions[("ckplus", "b2")]["face_id"].to_list() == [fid(98)]
    assert [(e.task_id, e.face_id, e.reason) for e in got.errors] == [(2, fid(99), "review_unknown_face")]
    assert "2 annotation(s)" in got.errors[0].error and "['r1', 'r2']" in got.errors[0].error


def test_an_invalid_annotation_does_not_sink_the_other_reviewers() -> None:
    bad = ls_annotation(2, "r2", expression="fear")
    bad["result"].append({"from_name": "valence", "value": {"number": 0.3}})  # arousal missing
    got = review.import_export([ls_task(1, fid(1), [ls_annotation(1, "r1", expression="fear"), bad])])
    assert got.partitions[PART].row(0, named=True)["expression"] == "fear"
    assert [(e.reason, e.annotation_id, e.reviewer) for e in got.errors] == [("review_invalid", 2, "r2")]
    assert got.errors[0].detail().startswith("annotation 2 by r2: valence and arousal")

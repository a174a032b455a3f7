"""A granularity whose human label was invalid is withheld: neither stated as a fact nor
generated, and the verified_labels gates accept the gap (only there)."""

from __future__ import annotations

import polars as pl

from expectations.gates import evaluate
from seke.annotation import Labels
from seke.annotators.simulated import ScriptedAnnotator, tiny_png
from seke.knowledge import knowledge_v1
from seke.prompts import build_annotation_prompt
from seke.records import face_items, withheld
from seke.sv_uamc import SamplingConfig, run_sampling
from tests.expectations import frames as F

KN = knowledge_v1()


def _raw(invalid: list[str], expression: str | None = None) -> pl.DataFrame:
    return pl.DataFrame({"face_id": ["f1"], "crop_png": [tiny_png(3)], "subject_id": ["s1"],
                         "known_expression": [expression], "known_valence": [None], "known_arousal": [None],
                         "known_aus": [None], "invalid_labels": [invalid]},
                        schema_overrides={"known_valence": pl.Float64, "known_arousal": pl.Float64,
                                          "known_aus": pl.List(pl.Int32), "known_expression": pl.String})


def test_withheld_excludes_granularities_a_valid_label_replaced():
    row = _raw(["expression", "aus"]).row(0, named=True)
    assert withheld(row) == ("expression", "aus")
    reviewed = _raw(["expression", "aus"], expression="anger").row(0, named=True)
    assert withheld(reviewed) == ("aus",)
    assert withheld({"invalid_labels": None}) == ()  # partitions written before the column


def test_prompt_neither_states_nor_asks_a_withheld_granularity():
    plain = build_annotation_prompt(Labels(), KN)
    spec = build_annotation_prompt(Labels(), KN, withheld=("expression",))
    assert spec.missing == ("va", "aus") and plain.missing == ("expression", "va", "aus")
    assert spec.prompt_hash != plain.prompt_hash
    assert build_annotation_prompt(Labels(), KN, withheld=()).prompt_hash == plain.prompt_hash


def test_sampling_never_fills_a_withheld_granularity_and_the_gates_pass():
    (face,) = face_items(_raw(["expression"]), "test")
    assert face.withheld == ("expression",)
    # Even a prompt that (wrongly) asks for the expression gets no generated expression.
    spec = build_annotation_prompt(Labels(), KN)
    ann = ScriptedAnnotator({"f1": [Labels("happiness", 0.75, 0.45, {6: 1.0, 12: 1.0, 25: 1.0})]})
    res = run_sampling([face], {"f1": spec}, ann, KN, SamplingConfig())
    (row,) = res.labels
    assert row["expression"] is None and row["expression_origin"] is None
    assert row["valence"] == 0.75 and row["aus"] == [6, 12, 25] and row["withheld"] == ["expression"]
    assert row["status"] == "accepted"
    frame = F.verified_labels([row], score=False)
    gates = {g.check: g for g in evaluate("verified_labels", frame, input_rows=1, knowledge=KN)}
    assert gates["label_ranges"].passed, gates["label_ranges"].metadata
    # Without the withheld mark the same gap is a blocking failure.
    gap = F.verified_labels([{**row, "withheld": []}], score=False)
    gates = {g.check: g for g in evaluate("verified_labels", gap, input_rows=1, knowledge=KN)}
    assert not gates["label_ranges"].passed

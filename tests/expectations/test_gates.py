"""Deliberately broken partitions trip the right gate with the right severity (real GX runs)."""

from __future__ import annotations

import polars as pl
import pytest

from expectations.gates import GateConfig, GateResult, any_blocking_failed, evaluate
from seke.knowledge import knowledge_v1
from tests.expectations import frames as F


def _by_name(gates: list[GateResult]) -> dict[str, GateResult]:
    return {g.check: g for g in gates}


def _failed(gates: list[GateResult]) -> set[str]:
    return {g.check for g in gates if not g.passed}


CLEAN = {
    "raw_faces": (F.raw_faces, 10),
    "mc_samples": (F.mc_samples, 5),
    "verified_labels": (F.verified_labels, 10),
    "feid": (F.feid, 4),
    "feab": (F.feab, 4),
}


@pytest.mark.parametrize("table", list(CLEAN))
def test_clean_partition_passes_every_gate(table: str) -> None:
    make, input_rows = CLEAN[table]
    gates = evaluate(table, make(), input_rows=input_rows)
    assert gates and _failed(gates) == set(), [g.metadata for g in gates if not g.passed]
    assert not any_blocking_failed(gates)


def test_out_of_range_va_fails_label_ranges_blocking() -> None:
    rows = F.label_rows()
    rows[3]["valence"] = 1.7
    rows[6]["arousal"] = -1.2
    gates = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10))
    g = gates["label_ranges"]
    assert not g.passed and g.blocking
    assert set(g.metadata["unexpected_ids"]) == {F.face_id(3), F.face_id(6)}
    assert {s["column"] for s in g.metadata["sample"]} == {"valence", "arousal"}
    assert gates["gx_verified_labels"].passed


def test_unknown_au_fails_label_ranges_blocking() -> None:
    rows = F.label_rows()
    rows[2]["aus"] = [1, 2, 99]
    gates = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10))
    g = gates["label_ranges"]
    assert not g.passed and g.blocking
    assert g.metadata["unexpected_ids"] == [F.face_id(2)]
    assert g.metadata["sample"][0]["aus"] == 99


def test_unknown_au_in_human_labels_of_raw_faces() -> None:
    frame = F.raw_faces().with_columns(
        pl.when(pl.col("face_id") == F.face_id(0)).then(pl.lit([12, 42], dtype=pl.List(pl.Int32)))
        .otherwise(pl.col("known_aus")).alias("known_aus"))
    gates = _by_name(evaluate("raw_faces", frame, input_rows=10))
    assert not gates["label_ranges"].passed and gates["label_ranges"].blocking
    assert gates["label_ranges"].metadata["unexpected_ids"] == [F.face_id(0)]


def test_one_happy_face_with_negative_valence_warns_only() -> None:
    rows = F.label_rows()
    assert rows[0]["expression"] == "happiness"
    rows[0]["valence"] = -0.8
    gates = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10))
    va = gates["consistency_expression_va"]
    assert not va.passed and not va.blocking
    assert va.metadata["rate"] == pytest.approx(0.1)
    assert va.metadata["unexpected_ids"] == [F.face_id(0)]
    # the smile (AU12) with valence -0.8 also contradicts the AUs
    assert not gates["consistency_aus_va"].passed
    assert gates["consistency_expression_aus"].passed
    # 9 of 10 accepted faces are still consistent: above the 0.8 floor
    assert gates["consistency_rate"].passed and gates["consistency_rate"].metadata["rate"] == pytest.approx(0.9)
    assert gates["label_ranges"].passed  # -0.8 is a valid valence, just an inconsistent one
    assert not any_blocking_failed(list(gates.values()))


def test_many_inconsistent_faces_block() -> None:
    rows = F.label_rows()
    happy = [i for i, r in enumerate(rows) if r["expression"] == "happiness"]
    sad = [i for i, r in enumerate(rows) if r["expression"] == "sadness"]
    for i in happy:
        rows[i]["valence"] = -0.8
    for i in sad:
        rows[i]["valence"], rows[i]["arousal"] = 0.7, 0.6
    gates = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10))
    g = gates["consistency_rate"]
    assert not g.passed and g.blocking
    assert g.metadata["rate"] == pytest.approx(0.6)
    assert set(g.metadata["unexpected_ids"]) == {F.face_id(i) for i in happy + sad}
    # the floor is configuration: a lower floor lets the same partition through
    loose = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10,
                              config=GateConfig(consistency_floor=0.5)))
    assert loose["consistency_rate"].passed


def test_abstained_faces_do_not_count_against_consistency() -> None:
    rows = F.label_rows()
    rows[0]["valence"] = -0.8
    rows[0]["status"], rows[0]["abstain_reason"] = "abstained", "inconsistent"
    gates = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10))
    assert gates["consistency_expression_va"].passed
    assert gates["consistency_rate"].metadata["accepted_faces"] == 9


def test_unscored_faces_are_scored_with_knowledge_or_count_as_inconsistent() -> None:
    rows = F.label_rows()
    rows[0]["valence"] = -0.8
    frame = F.verified_labels(rows, score=False)
    unscored = _by_name(evaluate("verified_labels", frame, input_rows=10))
    assert not unscored["consistency_rate"].passed
    assert unscored["consistency_rate"].metadata["unscored_faces"] == 10
    rescored = _by_name(evaluate("verified_labels", frame, input_rows=10, knowledge=knowledge_v1()))
    assert rescored["consistency_rate"].passed
    assert rescored["consistency_rate"].metadata["rescored_faces"] == 10
    assert rescored["consistency_expression_va"].metadata["unexpected_ids"] == [F.face_id(0)]


def test_duplicate_face_ids_fail_the_table_gate_blocking() -> None:
    rows = F.label_rows()
    rows[5]["face_id"] = rows[4]["face_id"]
    gates = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10))
    g = gates["gx_verified_labels"]
    assert not g.passed and g.blocking
    assert g.metadata["unexpected_ids"] == [F.face_id(4)]
    assert [f["expectation"] for f in g.metadata["failed_expectations"]] == [
        "expect_column_values_to_be_unique"]


def test_duplicate_samples_fail_mc_samples_gate() -> None:
    frame = F.mc_samples()
    frame = pl.concat([frame, frame.head(1)])
    gates = _by_name(evaluate("mc_samples", frame, input_rows=5))
    assert not gates["gx_mc_samples"].passed and gates["gx_mc_samples"].blocking
    assert gates["gx_mc_samples"].metadata["unexpected_ids"] == [F.face_id(0)]


def test_forty_percent_parse_failures_warn() -> None:
    frame = F.mc_samples(n_faces=5, per_face=6, failed_share=0.4)
    gates = _by_name(evaluate("mc_samples", frame, input_rows=5))
    g = gates["parse_failure_rate"]
    assert not g.passed and not g.blocking
    assert g.metadata["rate"] == pytest.approx(0.4)
    assert g.metadata["ceiling"] == pytest.approx(0.2)
    assert gates["gx_mc_samples"].passed and gates["label_ranges"].passed
    # 10% stays under the ceiling
    ok = _by_name(evaluate("mc_samples", F.mc_samples(failed_share=0.1), input_rows=5))
    assert ok["parse_failure_rate"].passed
    # the ceiling is a run-time parameter
    loose = _by_name(evaluate("mc_samples", frame, input_rows=5,
                              parameters={"parse_failure_ceiling": 0.5}))
    assert loose["parse_failure_rate"].passed


def test_row_count_relative_to_input_warns() -> None:
    gates = _by_name(evaluate("verified_labels", F.verified_labels(), input_rows=12))
    g = gates["row_count"]
    assert not g.passed and not g.blocking
    assert (g.metadata["observed_rows"], g.metadata["min_rows"], g.metadata["max_rows"]) == (10, 12, 12)


def test_missing_column_fails_without_crashing() -> None:
    frame = F.verified_labels().drop("valence")
    gates = _by_name(evaluate("verified_labels", frame, input_rows=10))
    g = gates["gx_verified_labels"]
    assert not g.passed and g.blocking
    failed = {(f["expectation"], f["column"]) for f in g.metadata["failed_expectations"]}
    assert ("expect_column_to_exist", "valence") in failed
    assert not gates["label_ranges"].passed  # range checks on the absent column error out


def test_accepted_face_without_expression_fails() -> None:
    rows = F.label_rows()
    rows[1]["expression"] = None
    rows[2]["status"], rows[2]["expression"], rows[2]["abstain_reason"] = "abstained", None, "uncertain"
    gates = _by_name(evaluate("verified_labels", F.verified_labels(rows), input_rows=10))
    g = gates["label_ranges"]
    assert not g.passed
    assert g.metadata["unexpected_ids"] == [F.face_id(1)]


def test_blocking_failures_become_quarantine_rows() -> None:
    from expectations.gates import quarantine_rows

    rows = F.label_rows()
    rows[3]["valence"] = 1.7
    rows[0]["valence"] = -0.8  # warn-only: not quarantined by the gate
    gates = evaluate("verified_labels", F.verified_labels(rows), input_rows=10)
    q = quarantine_rows(gates, "verified_labels")
    assert q.rows() == [(F.face_id(3), "verified_labels", "gate:label_ranges",
                         "expect_column_values_to_be_between(valence)")]


@pytest.mark.parametrize("table", list(CLEAN))
def test_empty_partition_passes(table: str) -> None:
    """A batch may legitimately produce nothing (e.g. no sample when every label is known):
    rates over no rows are undefined, not failed."""
    from seke import schemas

    frame = pl.from_arrow(schemas.TABLES[table].empty_table())
    gates = evaluate(table, frame, input_rows=0)
    assert _failed(gates) == set(), [g.metadata for g in gates if not g.passed]

"""Quarantine rows from each stage, written to the lake and queried back with DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from seke import quarantine
from seke.lake import Lake
from seke.schemas import QUARANTINE
from tests.expectations import frames as F


def test_parse_failures_and_abstentions_land_in_quarantine(tmp_path: Path) -> None:
    samples = F.mc_samples(n_faces=5, per_face=6, failed_share=0.4)
    q_samples = quarantine.from_samples(samples)
    assert q_samples.height == 12
    assert set(q_samples["reason"]) == {"parse_failed"}
    assert (q_samples["item_id"][0], q_samples["detail"][0]) == (f"{F.face_id(0)}#0",
                                                                 "round 0: invalid JSON")

    rows = F.label_rows()
    rows[0]["valence"] = -0.8
    rows[0]["status"], rows[0]["abstain_reason"] = "abstained", "still inconsistent after verification"
    rows[1]["status"], rows[1]["abstain_reason"] = "abstained", "uncertain at N_max"
    q_labels = quarantine.from_labels(F.verified_labels(rows))
    got = {r["item_id"]: (r["reason"], r["detail"]) for r in q_labels.iter_rows(named=True)}
    assert got[F.face_id(0)][0] == "inconsistent"
    assert "expr_va_outside_region" in got[F.face_id(0)][1]
    assert got[F.face_id(1)] == ("abstained", "uncertain at N_max")

    both = quarantine.concat(q_samples, q_labels)
    assert both.columns == QUARANTINE.names
    lake = Lake(str(tmp_path / "lake"))
    lake.write_partition("quarantine", {"source": "ckplus", "batch": "b1"}, both)
    ds = lake.dataset("quarantine")
    counts = duckdb.connect().execute(
        "SELECT stage, reason, count(*) FROM ds WHERE source = 'ckplus' "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    assert counts == [("mc_samples", "parse_failed", 12), ("verified_labels", "abstained", 1),
                      ("verified_labels", "inconsistent", 1)]


def test_empty_inputs_give_empty_quarantine() -> None:
    assert quarantine.concat().height == 0
    assert quarantine.from_samples(F.mc_samples()).height == 0
    assert quarantine.rows([], "raw_faces").schema == pl.from_arrow(QUARANTINE.empty_table()).schema

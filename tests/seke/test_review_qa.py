"""QA sample of accepted labels and the accepted-label error estimate from reviewers' answers."""

from __future__ import annotations

import math

import polars as pl
import pytest

from seke import review
from seke.review_qa import (QA_SAMPLE, ReviewPolicy, draw_qa_sample, eligible, error_estimates,
                            qa_outcomes, queue_reasons, quality_rows)
from seke.review_agreement import agreement
from tests.expectations import frames as F

NOW = "2026-11-22T05:00:00+00:00"


def _labels(n: int) -> pl.DataFrame:
    """n faces: every 4th abstained, every 5th accepted but all-human (nothing generated)."""
    rows = F.label_rows(n)
    for i, r in enumerate(rows):
        r["expression_origin"] = "generated" if i % 2 else "human"
        if i % 4 == 0:
            r["status"], r["abstain_reason"] = "abstained", "uncertain at N_max"
        elif i % 5 == 0:
            r["expression_origin"] = r["va_origin"] = r["au_origin"] = "human"
    return F.verified_labels(rows, score=False)


def test_qa_sample_share_matches_the_setting_and_takes_only_accepted_generated_labels() -> None:
    labels = _labels(1000)
    ok = eligible(labels)
    assert ok.height == 1000 - 250 - 150      # 250 abstained; 150 of the rest accepted all-human
    for rate, want in ((0.02, 12), (0.05, 30), (0.07, 42), (0.2, 120), (0.001, 1)):
        sample = draw_qa_sample(labels, ReviewPolicy(qa_rate=rate), NOW)
        assert sample.height == want                                  # ceil(rate * 600)
        assert sample.schema == pl.from_arrow(QA_SAMPLE.empty_table()).schema
        picked = labels.filter(pl.col("face_id").is_in(sample["face_id"].to_list()))
        assert set(picked["status"]) == {"accepted"}
        assert set(sample["face_id"]) <= set(ok["face_id"])
    # seeded: same seed same sample, another seed another; not simply the first face ids
    a = draw_qa_sample(labels, ReviewPolicy(qa_rate=0.05, qa_seed=1), NOW)["face_id"].to_list()
    assert a == draw_qa_sample(labels, ReviewPolicy(qa_rate=0.05, qa_seed=1), NOW)["face_id"].to_list()
    assert a != draw_qa_sample(labels, ReviewPolicy(qa_rate=0.05, qa_seed=2), NOW)["face_id"].to_list()
    assert a != sorted(ok["face_id"].to_list())[:len(a)]
    # the snapshot keeps the labels as accepted
    snap = draw_qa_sample(labels, ReviewPolicy(qa_rate=0.05), NOW).row(0, named=True)
    src = labels.filter(pl.col("face_id") == snap["face_id"]).row(0, named=True)
    assert (snap["expression"], snap["aus"], snap["va_origin"]) == (src["expression"], src["aus"], src["va_origin"])
    assert ReviewPolicy().qa_rate == 0.02
    assert draw_qa_sample(labels, ReviewPolicy(qa_rate=0.0), NOW).height == 0
    with pytest.raises(ValueError):
        ReviewPolicy(qa_rate=1.5)


def test_a_drawn_face_stays_drawn_and_redraws_only_top_up() -> None:
    labels = _labels(400)
    first = draw_qa_sample(labels, ReviewPolicy(qa_rate=0.05), "t1")
    # the QA faces were reviewed and came back as human labels: no longer eligible
    reviewed = labels.with_columns(
        pl.when(pl.col("face_id").is_in(first["face_id"].to_list())).then(pl.lit("human"))
        .otherwise(pl.col(c)).alias(c) for c in ("expression_origin", "va_origin", "au_origin"))
    again = draw_qa_sample(reviewed, ReviewPolicy(qa_rate=0.05), "t2", previous=first)
    assert again.equals(first)                                        # idempotent, snapshot untouched
    more = draw_qa_sample(reviewed, ReviewPolicy(qa_rate=0.1), "t3", previous=first)
    assert set(first["face_id"]) < set(more["face_id"])
    assert more.height == math.ceil(0.1 * eligible(labels).height)
    kept = more.filter(pl.col("face_id").is_in(first["face_id"].to_list()))
    assert set(kept["sampled_at"]) == {"t1"} and set(more["sampled_at"]) == {"t1", "t3"}


def test_queue_reasons_pending_qa_and_sent_back() -> None:
    sample = pl.DataFrame({"face_id": ["a", "b", "c"]})
    reviewed = pl.DataFrame({"face_id": ["b", "c", "x"], "sent_back": [[], ["expression", "va"], ["aus"]]})
    assert queue_reasons(sample, reviewed) == {"a": "qa_sample", "c": "sent_back:expression,va",
                                               "x": "sent_back:aus"}
    assert queue_reasons(None, None) == {}


def _consensus(rows: list[dict]) -> pl.DataFrame:
    import pyarrow as pa

    base = {"unusable": False, "sent_back": [], "n_reviewers": 2}
    return pl.from_arrow(pa.Table.from_pylist([{**base, **r} for r in rows], schema=review.REVIEW_LABELS))


def test_error_estimate_from_simulated_reviewers() -> None:
    """40 QA faces; reviewers disagree with 10 accepted expressions, move 4 VA labels by more
    than the tolerance (and 5 by less), add an AU to 3; one face is unusable; one face's
    expression was a human label (not QA'd); one tied expression is not yet evidence."""
    labels = _labels(200)
    sample = draw_qa_sample(labels, ReviewPolicy(qa_rate=1 / 3), NOW)
    assert sample.height == 40                                        # 120 eligible
    rows = []
    for i, s in enumerate(sample.iter_rows(named=True)):
        other = next(e for e in ("anger", "fear") if e != s["expression"])
        rows.append({"face_id": s["face_id"],
                     "expression": other if i < 10 else (None if i == 39 else s["expression"]),
                     "valence": s["valence"] + (0.5 if 10 <= i < 14 else 0.1 if 14 <= i < 19 else 0.0),
                     "arousal": s["arousal"],
                     "aus": sorted(set(s["aus"]) | {27}) if 20 <= i < 23 else s["aus"],
                     "unusable": i == 30, "sent_back": ["expression"] if i == 39 else []})
    outcomes = qa_outcomes(sample, _consensus(rows), va_tolerance=0.25)
    assert outcomes.height == 40
    est = error_estimates(outcomes, confidence=0.95)
    human_expr = sum(o != "generated" for o in sample["expression_origin"])
    # expression: faces 0-9 wrong if generated, 30 (unusable) wrong, 39 tied: not compared
    gen = [r["expression_origin"] == "generated" for r in sample.iter_rows(named=True)]
    exp_wrong = sum(gen[i] for i in range(10)) + gen[30]
    assert est["expression"].reviewed == 40 - human_expr - (1 if gen[39] else 0)
    assert est["expression"].errors == exp_wrong
    assert (est["va"].reviewed, est["va"].errors) == (40, 4 + 1)      # + the unusable face
    assert (est["aus"].reviewed, est["aus"].errors) == (40, 3 + 1)
    assert est["any"].errors == len({*(i for i in range(10) if gen[i]), 10, 11, 12, 13, 20, 21, 22, 30})
    # Wilson score interval, by the formula (Wilson 1927)
    k, n, z = est["va"].errors, est["va"].reviewed, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = est["va"].interval
    assert est["va"].rate == pytest.approx(5 / 40)
    assert (lo, hi) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert est["va"].as_dict()["ci"] == [round(lo, 4), round(hi, 4)]

    table = quality_rows(agreement([]), est, NOW)
    qa = table.filter(pl.col("metric") == "qa_error")
    assert set(qa["granularity"]) == {"expression", "va", "aus", "any"}
    assert qa.filter(pl.col("granularity") == "va").row(0, named=True)["ci_low"] == pytest.approx(lo)
    assert set(table.filter(pl.col("metric") == "krippendorff_alpha")["granularity"]) == {
        "expression", "valence", "arousal", "aus", "quality"}


def test_nothing_reviewed_yet_gives_no_rate() -> None:
    sample = draw_qa_sample(_labels(50), ReviewPolicy(), NOW)
    est = error_estimates(qa_outcomes(sample, _consensus([])))
    assert est["any"].reviewed == 0 and est["any"].rate is None and est["any"].interval is None


def test_a_sample_read_back_from_the_lake_tops_up(tmp_path) -> None:
    from seke.lake import Lake

    labels = _labels(400)
    lake = Lake(str(tmp_path / "lake"))
    part = {"source": "ckplus", "batch": "b1"}
    lake.write_partition("review_qa_sample", part, draw_qa_sample(labels, ReviewPolicy(qa_rate=0.02), "t1"))
    back = lake.read_partition("review_qa_sample", part).drop("source", "batch")
    more = draw_qa_sample(labels, ReviewPolicy(qa_rate=0.05), "t2", previous=back)
    assert more.height == math.ceil(0.05 * eligible(labels).height)
    assert set(back["face_id"]) < set(more["face_id"])

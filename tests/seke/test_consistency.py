"""Consistency scoring against the v1 knowledge tables."""

import polars as pl
import pytest

from seke.annotation import Labels
from seke.consistency import score_consistency
from seke.knowledge import knowledge_v1

K = knowledge_v1()


def test_prototypical_happiness_is_consistent():
    r = score_consistency(Labels("happiness", 0.8, 0.5, {6: 1.0, 12: 1.0}), K)
    assert r.consistent and r.score > 0.9


def test_happiness_with_negative_valence_is_flagged():
    r = score_consistency(Labels("happiness", -0.8, 0.4, {6: 1.0, 12: 1.0}), K)
    assert "expr_va_outside_region" in r.flags
    assert "aus_va_conflict" in r.flags
    assert r.score < 0.7


def test_sadness_aus_under_happiness_label_are_unlikely():
    r = score_consistency(Labels("happiness", None, None, {1: 1.0, 4: 1.0, 15: 1.0}), K)
    assert r.flags == ["expr_aus_unlikely"]


def test_sadness_must_have_low_arousal():
    assert score_consistency(Labels("sadness", -0.6, -0.3), K).consistent
    assert not score_consistency(Labels("sadness", -0.6, 0.8), K).consistent


def test_nothing_to_compare_scores_one():
    r = score_consistency(Labels("anger"), K)
    assert r.score == 1.0 and r.consistent and r.components == {}


def test_ckplus_human_labels_are_mostly_consistent_with_estimated_knowledge(shared_data):
    from seke.knowledge import knowledge_with_estimate
    from seke.taxonomy import AU_CATALOGUE, au_column

    df = pl.read_csv(shared_data / "ckplus" / "manifest.csv")
    k = knowledge_with_estimate(df, "ckplus")
    ok = 0
    for row in df.iter_rows(named=True):
        aus = {a: float(row[au_column(a)]) for a in AU_CATALOGUE if au_column(a) in row}
        ok += score_consistency(Labels(row["expression"], aus=aus), k).consistent
    # FACS-coded human AUs should agree with their own expression in the large majority.
    assert ok / df.height > 0.9

"""Training scores FEAB against human gold only, as the FEAB evaluator does (issue 15, item 4)."""

import numpy as np
import polars as pl
import pytest

pytest.importorskip("torch")

from seke.feab import build_feab  # noqa: E402
from seke.train.evaluate import feab_arrays  # noqa: E402
from tests.seke.products_fixtures import make_faces  # noqa: E402


def test_feab_arrays_drop_generated_gold_unless_asked():
    raw, labels = make_faces(n_subjects=6, per_subject=2, n_loose=20)
    feab = build_feab(labels, raw, fraction=0.5)
    assert feab["gold_flagged"].any() and (~feab["gold_flagged"]).any()
    human, _ = feab_arrays(feab)
    every, _ = feab_arrays(feab, human_only=False)
    flagged_va = feab.filter((pl.col("task") == "va") & pl.col("gold_flagged")).height
    assert flagged_va and (every.va_w > 0).sum() == flagged_va
    assert (human.va_w > 0).sum() == 0  # the fixture's VA gold is all generated
    n_human_expr = feab.filter((pl.col("task") == "expression") & ~pl.col("gold_flagged")).height
    assert int(np.sum(human.expression_w > 0)) == n_human_expr

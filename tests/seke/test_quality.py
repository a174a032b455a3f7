"""The annotator quality evaluation on a small real CK+ sample."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from seke import weights

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def test_evaluate_set_measures_what_ckplus_labels_allow():
    data = SHARED / "ckplus"
    if not (data / "manifest.csv").exists():
        pytest.skip(f"shared data missing: {data}")
    try:
        weights.path_of("face_landmarker.task")
    except weights.WeightsMissing as exc:
        pytest.skip(f"offline weights not fetched: {exc}")
    from seke.annotators.offline import OfflineAnnotator
    from seke.knowledge import knowledge_with_estimate
    from seke.vision.quality import evaluate_set

    k = knowledge_with_estimate(pl.read_csv(data / "manifest.csv"), "ckplus")
    r = evaluate_set("ckplus", data, OfflineAnnotator(k), k, k=1, limit=40, verbose=False)
    assert r["n"] == 40 and r["failed"] == 0
    for key in ("expr_acc", "expr_acc_bare", "expr_macro_f1", "ece", "au_f1_known", "au_f1_blind",
                "au_f1_prior_only", "valence_sign_acc"):
        assert 0.0 <= r[key] <= 1.0, key
    # the image must add something over chance on these posed faces
    assert r["expr_acc"] > 0.4 and r["valence_sign_acc"] > 0.7 and r["au_f1_blind"] > 0.5
